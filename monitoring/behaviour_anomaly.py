"""Customer behaviour anomaly scores: Isolation Forests over the latest behaviour snapshot.

Input: the latest ``customer_behaviour`` row per customer (within the view's TTL) under
``<data_dir>/features/``, with the customer's type and segment at that time. From it, 14
features of how the customer uses the bank (:data:`BEHAVIOUR_FEATURES`): money (transactions,
credits and debits over 30 and 90 days, mean credit and debit per transaction), activity
(logins, events in any app over 7 and 30 days, active days) and offers (clicks, product
interactions, dismissals). The 42 per-category interaction counts are summed into one: product
interest is what the ranker models, not what this monitor looks for, and many sparse columns
would drown the few that carry money (Isolation Forest picks split features at random).

Peer groups: retail and corporate customers are scored by separate forests (corporate money
flows are routinely a hundred times retail ones); a customer type with fewer than
``min_peer_group`` customers, or none, is scored by a forest over everyone.

Compression: each feature is divided by its peer group's median of the non-zero values, then
``log1p``: a typical customer sits near log 2, no activity at 0, fifty times the typical value
at log 51. Plain ``log1p`` would put a customer without a salary credit this month as far from
the crowd as one moving fifty times the usual money.

Score: scikit-learn's :class:`~sklearn.ensemble.IsolationForest` (seeded) fitted on and applied to
the snapshot; ``anomaly_score = -score_samples(x)``, the anomaly score of Liu et al. (2008),
``2 ** (-mean path length / c(n))``, in (0, 1]: about 0.5 and below is ordinary, near 1 means
isolated in very few splits. Rank 1 = the most anomalous customer. ``unusual`` lists, per
customer, the features furthest from the peer median in robust z units (median absolute
deviation), to say why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.progress import Progress
from scipy.stats import median_abs_deviation
from sklearn.ensemble import IsolationForest

from monitoring.alerts import Alert, as_utc
from persona import domain
from persona.features.catalog import (
    CUSTOMER_BEHAVIOUR,
    CUSTOMER_PROFILE,
    CUSTOMER_SEGMENT,
    WINDOWS_DAYS,
)

#: What the forest sees, in this order (derived from the ``customer_behaviour`` columns).
BEHAVIOUR_FEATURES: Final[tuple[str, ...]] = (
    "txn_count_30d",
    "txn_amount_in_30d",
    "txn_amount_out_30d",
    "txn_amount_in_90d",
    "txn_amount_out_90d",
    "mean_credit_per_txn_30d",
    "mean_debit_per_txn_30d",
    "logins_30d",
    "app_events_7d",
    "app_events_30d",
    "active_days_30d",
    "clicks_30d",
    "product_interactions_30d",
    "dismissals_30d",
)
#: Everyone is one peer group when a customer's type is unknown or too rare.
ALL_CUSTOMERS: Final = "all"


class AnomalyConfig(BaseModel):
    """How the forests are grown and which scores raise alerts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_estimators: int = Field(default=200, ge=10, description="trees per forest")
    max_samples: int = Field(default=256, ge=16, description="customers per tree (subsample)")
    seed: int = Field(default=0, description="seed of every forest's subsampling and splits")
    min_peer_group: int = Field(
        default=20, ge=2, description="smallest customer type scored by a forest of its own"
    )
    watch_score: float = Field(default=0.6, gt=0, lt=1, description="score that is watched")
    alert_score: float = Field(default=0.7, gt=0, lt=1, description="score that is alerted")
    unusual_features: int = Field(default=3, ge=1, description="features listed per customer")

    @model_validator(mode="after")
    def _ordered(self) -> AnomalyConfig:
        if self.alert_score < self.watch_score:
            raise ValueError(
                f"alert_score {self.alert_score} is below watch_score {self.watch_score}"
            )
        return self


@dataclass(frozen=True)
class BehaviourScores:
    """One row per customer, most anomalous first."""

    as_of: datetime  # naive UTC: the newest snapshot among the rows
    #: customer_id, customer_type, peer_group, segment_id, snapshot_at, anomaly_score, rank
    table: pa.Table
    unusual: list[list[dict[str, float | str]]]  # per row, the features furthest from the median

    def top(self, n: int) -> list[dict[str, object]]:
        """The ``n`` most anomalous customers with their score and unusual features."""
        rows = self.table.slice(0, n).to_pylist()
        return [
            {**row, "snapshot_at": _iso(row["snapshot_at"]), "unusual": self.unusual[i]}
            for i, row in enumerate(rows)
        ]


def latest_behaviour(data_dir: Path, as_of: datetime | None = None) -> pa.Table:
    """The latest ``customer_behaviour`` row per customer at or before ``as_of`` (naive UTC;
    default: the newest snapshot), within the view's TTL, with the customer's type and segment
    at that time (null when the profile or segment table has no row)."""
    from persona.features.build import feature_table_path
    from training.sets.point_in_time import connect

    paths = {
        view.name: feature_table_path(Path(data_dir), view.name)
        for view in (CUSTOMER_BEHAVIOUR, CUSTOMER_PROFILE, CUSTOMER_SEGMENT)
    }
    for path in paths.values():
        if not path.exists():
            raise FileNotFoundError(
                f"features: {path} is missing; run `persona features build` first"
            )
    con = connect()
    try:
        if as_of is None:
            ((as_of,),) = con.execute(
                "SELECT max(CAST(event_timestamp AS TIMESTAMP)) "
                f"FROM read_parquet('{paths[CUSTOMER_BEHAVIOUR.name]}')"
            ).fetchall()
            if as_of is None:
                raise ValueError(f"features: {paths[CUSTOMER_BEHAVIOUR.name]} has no rows")

        def latest(view: str, columns: str, ttl_days: int | None = None) -> str:
            fresh = (
                f"AND CAST(event_timestamp AS TIMESTAMP) >= $as_of - INTERVAL {ttl_days} DAY"
                if ttl_days is not None
                else ""
            )
            return f"""(SELECT customer_id, {columns} FROM read_parquet('{paths[view]}')
                        WHERE CAST(event_timestamp AS TIMESTAMP) <= $as_of {fresh}
                        QUALIFY row_number() OVER (
                            PARTITION BY customer_id ORDER BY event_timestamp DESC) = 1)"""

        behaviour_columns = ", ".join(f'"{c}"' for c in CUSTOMER_BEHAVIOUR.column_names)
        behaviour = latest(
            CUSTOMER_BEHAVIOUR.name,
            f"CAST(event_timestamp AS TIMESTAMP) AS snapshot_at, {behaviour_columns}",
            CUSTOMER_BEHAVIOUR.ttl_days,
        )
        return con.sql(
            f"""
            SELECT b.customer_id, p.customer_type, s.segment_id, b.* EXCLUDE (customer_id)
            FROM {behaviour} b
            LEFT JOIN {latest(CUSTOMER_PROFILE.name, "customer_type")} p USING (customer_id)
            LEFT JOIN {latest(CUSTOMER_SEGMENT.name, "segment_id")} s USING (customer_id)
            ORDER BY b.customer_id
            """,
            params={"as_of": as_of},
        ).to_arrow_table()
    finally:
        con.close()


def behaviour_features(rows: pa.Table) -> np.ndarray:
    """(customers, :data:`BEHAVIOUR_FEATURES`) float64, raw units (counts, currency), >= 0."""
    missing = [c for c in CUSTOMER_BEHAVIOUR.column_names if c not in rows.column_names]
    if missing:
        raise ValueError(f"behaviour: missing column(s) {', '.join(missing)}")

    def column(name: str) -> np.ndarray:
        values = rows.column(name).cast(pa.float64()).fill_null(0.0).to_numpy()
        return np.maximum(values, 0.0)

    transactions = np.maximum(column("txn_count_30d"), 1.0)
    derived = {
        "mean_credit_per_txn_30d": column("txn_amount_in_30d") / transactions,
        "mean_debit_per_txn_30d": column("txn_amount_out_30d") / transactions,
        "app_events_7d": sum(column(f"{app}_events_7d") for app in domain.APPS),
        "app_events_30d": sum(column(f"{app}_events_30d") for app in domain.APPS),
        "product_interactions_30d": sum(
            column(f"{category}_interactions_30d") for category in domain.CATEGORIES
        ),
    }
    return np.stack(
        [derived[name] if name in derived else column(name) for name in BEHAVIOUR_FEATURES],
        axis=1,
    )


def relative_log(features: np.ndarray) -> np.ndarray:
    """``log1p(x / median of the column's non-zero values)``; an all-zero column stays 0."""
    positive = np.where(features > 0, features, np.nan)
    typical = np.ones(features.shape[1])
    for j in range(features.shape[1]):
        if np.isfinite(positive[:, j]).any():
            typical[j] = np.nanmedian(positive[:, j])
    return np.log1p(features / typical)


def peer_groups(customer_type: list[str | None], min_size: int) -> np.ndarray:
    """Per customer, its peer group: its customer type, or ``all`` for rare or unknown types."""
    kinds = np.asarray([t if t is not None else ALL_CUSTOMERS for t in customer_type], object)
    names, counts = np.unique(kinds, return_counts=True)
    rare = {str(n) for n, c in zip(names, counts, strict=True) if c < min_size}
    return np.asarray([ALL_CUSTOMERS if k in rare else k for k in kinds], dtype=object)


def score_behaviour(
    rows: pa.Table, config: AnomalyConfig | None = None, *, progress: bool = False
) -> BehaviourScores:
    """Fit one forest per peer group on ``rows`` (from :func:`latest_behaviour`) and score every
    customer; the result is ordered by score, highest first."""
    config = config or AnomalyConfig()
    for column in ("customer_id", "snapshot_at"):
        if column not in rows.column_names:
            raise ValueError(f"behaviour: missing column {column!r}")
    n = rows.num_rows
    if n < 2:
        raise ValueError(f"behaviour: need at least 2 customers to score, got {n}")
    types = (
        rows.column("customer_type").to_pylist()
        if "customer_type" in rows.column_names
        else [None] * n
    )
    groups = peer_groups(types, config.min_peer_group)
    raw = behaviour_features(rows)
    compressed = np.zeros_like(raw)
    score = np.zeros(n)
    names = sorted(set(groups.tolist()))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("behaviour anomaly: fitting forests", total=len(names))
        for name in names:
            members = groups == name
            # The pooled group ("all") is judged against everyone, not only its own members.
            fit_on = np.ones(n, dtype=bool) if name == ALL_CUSTOMERS else members
            reference = relative_log(raw[fit_on])  # scaled by the fit population's medians
            forest = IsolationForest(
                n_estimators=config.n_estimators,
                max_samples=min(config.max_samples, int(fit_on.sum())),
                random_state=config.seed,
            ).fit(reference)
            compressed[members] = reference[members[fit_on]]
            score[members] = -forest.score_samples(compressed[members])
            bar.advance(task)
    order = np.lexsort((rows.column("customer_id").to_numpy(), -score))
    table = pa.table(
        {
            "customer_id": rows.column("customer_id").take(order),
            "customer_type": pa.array(types, pa.string()).take(order),
            "peer_group": pa.array(groups.tolist(), pa.string()).take(order),
            "segment_id": (
                rows.column("segment_id")
                if "segment_id" in rows.column_names
                else pa.nulls(n, pa.string())
            ).take(order),
            "snapshot_at": rows.column("snapshot_at").take(order),
            "anomaly_score": pa.array(score[order], pa.float64()),
            "rank": pa.array(np.arange(1, n + 1), pa.int64()),
        }
    )
    unusual = _unusual(raw, compressed, groups, order, config.unusual_features)
    return BehaviourScores(
        as_of=max(rows.column("snapshot_at").to_pylist()), table=table, unusual=unusual
    )


def _unusual(
    raw: np.ndarray, compressed: np.ndarray, groups: np.ndarray, order: np.ndarray, keep: int
) -> list[list[dict[str, float | str]]]:
    robust_z = np.zeros_like(compressed)
    peer_median = np.zeros_like(raw)
    for name in set(groups.tolist()):
        members = groups == name
        values = compressed[members]
        scale = median_abs_deviation(values, axis=0, scale="normal")
        spread = values.std(axis=0)
        # Mostly-zero counts have a MAD of 0: fall back to the standard deviation, then to 1.
        scale = np.where(scale > 0, scale, np.where(spread > 0, spread, 1.0))
        robust_z[members] = (values - np.median(values, axis=0)) / scale
        peer_median[members] = np.median(raw[members], axis=0)
    out = []
    for row in order:
        top = np.argsort(-np.abs(robust_z[row]), kind="stable")[:keep]
        out.append(
            [
                {
                    "feature": BEHAVIOUR_FEATURES[j],
                    "value": round(float(raw[row, j]), 2),
                    "peer_median": round(float(peer_median[row, j]), 2),
                    "robust_z": round(float(robust_z[row, j]), 2),
                }
                for j in top
            ]
        )
    return out


def behaviour_alerts(
    scores: BehaviourScores,
    config: AnomalyConfig | None = None,
    *,
    pseudonym: Callable[[int], str],
    top: int = 20,
    detected_at: datetime | None = None,
) -> list[Alert]:
    """``behaviour_anomaly`` alerts for the ``top`` highest-scoring customers whose score reaches
    ``watch_score`` (severity ``alert`` from ``alert_score``); the window is the longest
    behaviour window (90 days) up to the snapshot.

    Alerts travel further than the scores (chat, tickets, the on-call's terminal): the customer
    is named by ``pseudonym`` (``persona.pseudonym``) and the unusual features by how far they
    are from the peer group, never by the customer's own values. The scores table keeps both
    for whoever may see them."""
    config = config or AnomalyConfig()
    median = float(np.median(scores.table.column("anomaly_score").to_numpy()))
    window_end = as_utc(scores.as_of)
    window_start = window_end - timedelta(days=max(WINDOWS_DAYS))
    alerts = []
    for row in scores.top(top):
        value = float(row["anomaly_score"])  # type: ignore[arg-type]
        if value < config.watch_score:
            break
        alerts.append(
            Alert.create(
                kind="behaviour_anomaly",
                subject=f"customer:{pseudonym(int(row['customer_id']))}",  # type: ignore[call-overload]
                segment=row["segment_id"],  # type: ignore[arg-type]
                window_start=window_start,
                window_end=window_end,
                observed=value,
                expected=median,
                score=value,
                severity="alert" if value >= config.alert_score else "watch",
                detected_at=detected_at,
                details={
                    "customer_type": row["customer_type"],
                    "peer_group": row["peer_group"],
                    "rank": row["rank"],
                    "unusual": [
                        {"feature": u["feature"], "robust_z": u["robust_z"]}
                        for u in row["unusual"]  # type: ignore[union-attr]
                    ],
                    "watch_score": config.watch_score,
                    "alert_score": config.alert_score,
                },
            )
        )
    return alerts


@dataclass(frozen=True)
class BehaviourPaths:
    scores: Path
    top: Path
    png: Path


def write_behaviour_report(
    scores: BehaviourScores, out_dir: Path, *, top: int = 20, config: AnomalyConfig | None = None
) -> BehaviourPaths:
    """``behaviour_scores.parquet`` (every customer), ``behaviour_top.json`` (the ``top`` most
    anomalous, with why) and ``behaviour.png`` (the score distribution)."""
    config = config or AnomalyConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = BehaviourPaths(
        scores=out_dir / "behaviour_scores.parquet",
        top=out_dir / "behaviour_top.json",
        png=out_dir / "behaviour.png",
    )
    pq.write_table(scores.table, paths.scores)
    values = scores.table.column("anomaly_score").to_numpy()
    summary = {
        "as_of": _iso(scores.as_of),
        "customers": scores.table.num_rows,
        "features": list(BEHAVIOUR_FEATURES),
        "config": config.model_dump(),
        "score_quantiles": {f"p{q}": float(np.quantile(values, q / 100)) for q in (50, 90, 99)},
        "at_or_above_watch": int((values >= config.watch_score).sum()),
        "at_or_above_alert": int((values >= config.alert_score).sum()),
        "top": scores.top(top),
    }
    paths.top.write_text(json.dumps(summary, indent=2, default=str))
    _plot(values, config, paths.png, scores.as_of)
    return paths


def _plot(values: np.ndarray, config: AnomalyConfig, path: Path, as_of: datetime) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.hist(values, bins=50, color="#4c72b0")
    axes.axvline(config.watch_score, color="#e0a030", linestyle="--", label="watch")
    axes.axvline(config.alert_score, color="#c8403a", linestyle="--", label="alert")
    axes.set_yscale("log")
    axes.set_xlabel("anomaly score (Isolation Forest, 0..1)")
    axes.set_ylabel("customers")
    axes.set_title(
        f"behaviour anomaly scores, snapshot {as_of:%Y-%m-%d} ({len(values):,} customers)",
        fontsize=10,
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _iso(moment: object) -> str:
    return as_utc(moment).isoformat() if isinstance(moment, datetime) else str(moment)
