"""Feature and score drift as the population stability index (PSI), with a report and alerts.

PSI compares how a reference sample and a current sample fall into the same bins::

    PSI = sum_i (c_i - r_i) * ln(c_i / r_i)      (r_i, c_i: shares of each sample in bin i)

Bins come from the **reference** alone: for numeric columns the reference's deciles (right-closed
intervals; ties merge bins, so a count feature that is 0 for most customers gets fewer, wider
bins), for categorical columns its categories (a category seen only now gets a bin of its own);
missing values are a bin of their own. Shares are floored at ``epsilon`` and renormalised so an
empty bin gives a large but finite PSI. Usual reading: < 0.1 stable, 0.1-0.25 watch, > 0.25
alert (:class:`DriftThresholds`).

**Which samples are compared** (:func:`drift_report`). Reference = the ``ranker_v1`` customer
views (profile, behaviour, holdings) joined point-in-time at the end of the example set's
training window (the last train request), one row per customer who existed then. Current = the
same views at the latest feature snapshot, i.e. the latest row per customer within each view's
TTL: what the online store serves after materialisation. Both are encoded by the training code's
:class:`~training.sets.dense.DenseEncoder` and standardised with the manifest's ``dense_mean`` /
``dense_std``, so every column is one of the model's ``context_dense`` inputs, named as in the
manifest. Why not the train split's ``context_dense`` rows themselves: they hold one row per
served request, so active customers count many times, while a live snapshot holds one row per
customer; the two differ in their unit, and every activity feature would "drift" with no change
in behaviour at all. Same unit, same encoder and same TTL rules on both sides leave only time.
Measured on a simulated bank of 600 customers × 45 days: the train split's rows against the
per-customer snapshot *at the same moment* put 14 of 139 features over 0.25 (``active_days_30d``
PSI 1.71); the pairing used here puts 1 over 0.25 ten days later (``txn_count_90d``, 0.37: the
90-day window is still filling in a 45-day log).

Score drift (:func:`score_drift`) compares model scores on the train split
(:func:`shown_item_scores`: the click probability of every logged shown item) with the scores of
served items (any array, e.g. a Parquet column of served audit records: :func:`read_scores`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Final, Literal, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import rel_entr
from tqdm import tqdm

from monitoring.alerts import Alert, Severity, as_utc
from persona.features.build import feature_table_path
from training.examples import ExampleSet
from training.ranker import ProbabilisticRanker
from training.sets.dense import CUSTOMER_VIEWS, DenseEncoder
from training.sets.point_in_time import connect, join_point_in_time

#: Shares below this are raised to it before the logarithm (an empty bin would be infinite).
DEFAULT_EPSILON: Final = 1e-4
#: Quantile bins per numeric feature (fewer where the reference has ties).
DEFAULT_BINS: Final = 10
MISSING: Final = "<missing>"
DriftStatus = Literal["ok", "watch", "alert"]
PAIRING: Final = (
    "reference: ranker_v1 customer views joined point-in-time at the end of the training window, "
    "one row per customer; current: the same views at the latest feature snapshot (latest row "
    "per customer within TTL); both encoded with DenseEncoder and the manifest's mean/std"
)


class DriftThresholds(BaseModel):
    """PSI levels at which a column is watched or alerted on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    watch: float = Field(default=0.1, gt=0, description="PSI from which a column is watched")
    alert: float = Field(default=0.25, gt=0, description="PSI from which an alert is raised")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.alert < self.watch:
            raise ValueError(f"alert threshold {self.alert} is below watch threshold {self.watch}")
        return self

    def status(self, psi: float) -> DriftStatus:
        """``ok`` below ``watch``, ``watch`` below ``alert``, else ``alert``."""
        if psi >= self.alert:
            return "alert"
        if psi >= self.watch:
            return "watch"
        return "ok"


class DriftBin(BaseModel):
    """One bin: its label and the share of each sample in it (unsmoothed, 0..1)."""

    model_config = ConfigDict(frozen=True)

    label: str
    reference_share: float
    current_share: float


class DriftResult(BaseModel):
    """PSI of one column (or of the model score) between a reference and a current sample."""

    model_config = ConfigDict(frozen=True)

    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float = Field(ge=0)
    status: DriftStatus
    n_reference: int
    n_current: int
    reference_mean: float | None = Field(description="numeric columns: mean of the reference")
    current_mean: float | None = Field(description="numeric columns: mean of the current sample")
    bins: list[DriftBin]

    def largest_shift(self) -> DriftBin:
        """The bin whose share changed most (absolute difference)."""
        return max(self.bins, key=lambda b: abs(b.current_share - b.reference_share))


# --- PSI ------------------------------------------------------------------------------------


def population_stability_index(
    reference_shares: np.ndarray,
    current_shares: np.ndarray,
    *,
    epsilon: float = DEFAULT_EPSILON,
) -> float:
    """PSI of two distributions over the same bins (shares or counts; each is normalised)."""
    reference = _smoothed(np.asarray(reference_shares, dtype=np.float64), epsilon)
    current = _smoothed(np.asarray(current_shares, dtype=np.float64), epsilon)
    if reference.shape != current.shape:
        raise ValueError(f"shares: {reference.shape} bins vs {current.shape} bins")
    # (c - r) ln(c / r) = c ln(c / r) + r ln(r / c): PSI is the symmetrised KL divergence.
    psi = float(np.sum(rel_entr(current, reference) + rel_entr(reference, current)))
    return max(psi, 0.0)  # every term is >= 0; rounding may leave -1e-18


def _smoothed(shares: np.ndarray, epsilon: float) -> np.ndarray:
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon: must be in (0, 1), got {epsilon}")
    total = shares.sum()
    if total <= 0 or np.any(shares < 0):
        raise ValueError("shares: need non-negative values with a positive sum")
    floored = np.maximum(shares / total, epsilon)
    return floored / floored.sum()


def _numeric_bins(
    reference: np.ndarray, current: np.ndarray, n_bins: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    present = reference[~np.isnan(reference)]
    quantiles = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    # inverted_cdf keeps edges on observed values, so discrete counts get exact bins like "<= 0".
    edges = np.unique(np.quantile(present, quantiles, method="inverted_cdf"))
    labels = [f"<= {edges[0]:.4g}"] if len(edges) else ["all"]
    labels += [f"({lo:.4g}, {hi:.4g}]" for lo, hi in pairwise(edges)]
    if len(edges):
        labels.append(f"> {edges[-1]:.4g}")

    def counts(values: np.ndarray) -> np.ndarray:
        missing = np.isnan(values)
        index = np.searchsorted(edges, values[~missing], side="left")
        return np.append(np.bincount(index, minlength=len(labels)), missing.sum())

    reference_counts, current_counts = counts(reference), counts(current)
    if reference_counts[-1] == 0 and current_counts[-1] == 0:
        return labels, reference_counts[:-1], current_counts[:-1]
    return [*labels, MISSING], reference_counts, current_counts


def _categorical_bins(
    reference: pd.Series, current: pd.Series
) -> tuple[list[str], np.ndarray, np.ndarray]:
    def as_labels(values: pd.Series) -> pd.Series:
        text = values.astype(object).map(str)
        return text.where(values.notna(), MISSING)

    reference_counts = as_labels(reference).value_counts()
    current_counts = as_labels(current).value_counts()
    known = sorted(reference_counts.index, key=lambda c: (-reference_counts[c], c))
    new = sorted(set(current_counts.index) - set(known))
    labels = [*known, *new]
    return (
        labels,
        reference_counts.reindex(labels, fill_value=0).to_numpy(),
        current_counts.reindex(labels, fill_value=0).to_numpy(),
    )


def column_drift(
    feature: str,
    reference: pd.Series,
    current: pd.Series,
    *,
    thresholds: DriftThresholds | None = None,
    n_bins: int = DEFAULT_BINS,
    epsilon: float = DEFAULT_EPSILON,
) -> DriftResult:
    """PSI of one column; numeric unless its dtype is text, categorical or boolean."""
    thresholds = thresholds or DriftThresholds()
    if n_bins < 2:
        raise ValueError(f"n_bins: must be at least 2, got {n_bins}")
    if len(reference) == 0 or len(current) == 0:
        raise ValueError(
            f"{feature}: empty sample (reference {len(reference)} rows, current {len(current)})"
        )
    numeric = pd.api.types.is_numeric_dtype(reference) and not pd.api.types.is_bool_dtype(reference)
    reference_mean = current_mean = None
    if numeric:
        if not pd.api.types.is_numeric_dtype(current) or pd.api.types.is_bool_dtype(current):
            raise ValueError(f"{feature}: numeric in the reference but {current.dtype} now")
        ref = reference.to_numpy(dtype=np.float64, na_value=np.nan)
        cur = current.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isnan(ref).all():
            raise ValueError(f"{feature}: the reference has no non-missing value")
        labels, reference_counts, current_counts = _numeric_bins(ref, cur, n_bins)
        reference_mean = float(np.nanmean(ref))
        current_mean = float(np.nanmean(cur)) if not np.isnan(cur).all() else None
    else:
        labels, reference_counts, current_counts = _categorical_bins(reference, current)
    psi = population_stability_index(reference_counts, current_counts, epsilon=epsilon)
    reference_shares = reference_counts / reference_counts.sum()
    current_shares = current_counts / current_counts.sum()
    return DriftResult(
        feature=feature,
        kind="numeric" if numeric else "categorical",
        psi=psi,
        status=thresholds.status(psi),
        n_reference=len(reference),
        n_current=len(current),
        reference_mean=reference_mean,
        current_mean=current_mean,
        bins=[
            DriftBin(label=label, reference_share=float(r), current_share=float(c))
            for label, r, c in zip(labels, reference_shares, current_shares, strict=True)
        ],
    )


def feature_drift(
    reference: pa.Table | pd.DataFrame,
    current: pa.Table | pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    thresholds: DriftThresholds | None = None,
    n_bins: int = DEFAULT_BINS,
    epsilon: float = DEFAULT_EPSILON,
    progress: bool = False,
) -> list[DriftResult]:
    """PSI per column (default: every column of ``reference``), in the order of ``columns``."""
    names = list(columns) if columns is not None else list(_column_names(reference))
    for side, table in (("reference", reference), ("current", current)):
        missing = [c for c in names if c not in _column_names(table)]
        if missing:
            raise ValueError(f"{side}: missing column(s) {', '.join(missing)}")
    reference_frame, current_frame = _frame(reference, names), _frame(current, names)
    return [
        column_drift(
            name,
            reference_frame[name],
            current_frame[name],
            thresholds=thresholds,
            n_bins=n_bins,
            epsilon=epsilon,
        )
        for name in tqdm(names, desc="feature drift", disable=not progress, leave=False)
    ]


def score_drift(
    reference_scores: np.ndarray | Sequence[float],
    current_scores: np.ndarray | Sequence[float],
    *,
    thresholds: DriftThresholds | None = None,
    n_bins: int = DEFAULT_BINS,
    epsilon: float = DEFAULT_EPSILON,
) -> DriftResult:
    """PSI of model scores (e.g. click probabilities) between training and serving."""
    samples = {}
    for side, scores in (
        ("reference_scores", reference_scores),
        ("current_scores", current_scores),
    ):
        values = np.asarray(scores, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{side}: expected one score per item, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError(f"{side}: contains NaN or infinite scores")
        samples[side] = pd.Series(values)
    return column_drift(
        "score",
        samples["reference_scores"],
        samples["current_scores"],
        thresholds=thresholds,
        n_bins=n_bins,
        epsilon=epsilon,
    )


def _column_names(table: pa.Table | pd.DataFrame) -> list[str]:
    if isinstance(table, pa.Table):
        return table.column_names
    if isinstance(table, pd.DataFrame):
        return [str(c) for c in table.columns]
    raise ValueError(f"expected a pyarrow Table or pandas DataFrame, got {type(table).__name__}")


def _frame(table: pa.Table | pd.DataFrame, names: list[str]) -> pd.DataFrame:
    if isinstance(table, pa.Table):
        return table.select(names).to_pandas()
    return table[names]


# --- scores ---------------------------------------------------------------------------------


def read_scores(path: Path, column: str = "score") -> np.ndarray:
    """One score per row from column ``column`` of a Parquet file (e.g. served audit records)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scores: no file at {path}")
    names = pq.read_schema(path).names
    if column not in names:
        raise ValueError(f"{path.name}: no column {column!r} (columns: {', '.join(names)})")
    return pq.read_table(path, columns=[column]).column(column).to_numpy().astype(np.float64)


def shown_item_scores(
    ranker: ProbabilisticRanker,
    example_set: ExampleSet,
    split: Literal["train", "valid", "test"] = "train",
    *,
    batch_size: int = 1024,
) -> np.ndarray:
    """The ranker's click probability of every item shown in ``split``'s logged slates."""
    scores = []
    for batch in example_set.batches(split, batch_size):
        width = max((len(s) for s in batch.shown), default=0)
        if width == 0:
            continue
        items = np.zeros((len(batch), width), dtype=np.int64)
        for row, shown in enumerate(batch.shown):
            items[row, : len(shown)] = shown
        probability = np.asarray(ranker.click_probability(batch, items), dtype=np.float64)
        scores.append(probability[items > 0])
    if not scores:
        raise ValueError(f"examples: the {split} split of {example_set.root} has no shown items")
    return np.concatenate(scores)


# --- training snapshot vs live snapshot -----------------------------------------------------


@dataclass(frozen=True)
class FeatureSnapshot:
    """Encoded, standardised customer features as of one moment (one row per customer)."""

    as_of: datetime  # naive UTC
    customer_ids: np.ndarray  # (n,) int64, ascending
    features: pd.DataFrame  # (n, D), columns = the manifest's dense_features


def training_window_end(example_set: ExampleSet) -> datetime:
    """The time of the last request in the example set's train split (naive UTC)."""
    times = pq.read_table(example_set.split_path("train"), columns=["event_timestamp"])
    if times.num_rows == 0:
        raise ValueError(f"examples: the train split of {example_set.root} is empty")
    return pd.Timestamp(pc.max(times.column(0)).as_py()).to_pydatetime()


def latest_snapshot_time(data_dir: Path) -> datetime:
    """The newest row of the ``ranker_v1`` customer views under ``data_dir/features`` (naive UTC)."""
    latest = []
    con = connect()
    try:
        for view in CUSTOMER_VIEWS:
            path = _view_path(data_dir, view.name)
            ((value,),) = con.execute(
                f"SELECT max(CAST(event_timestamp AS TIMESTAMP)) FROM read_parquet('{path}')"
            ).fetchall()
            if value is not None:
                latest.append(value)
    finally:
        con.close()
    if not latest:
        raise ValueError(f"features: the customer views under {data_dir} are empty")
    return max(latest)


def customer_snapshot(example_set: ExampleSet, data_dir: Path, as_of: datetime) -> FeatureSnapshot:
    """Every customer known at ``as_of``, with the ``ranker_v1`` views joined point-in-time at
    ``as_of`` and encoded exactly as the example set's ``context_dense`` (manifest mean/std)."""
    as_of = as_utc(as_of).replace(tzinfo=None)  # the point-in-time join works in naive UTC
    manifest = example_set.manifest()
    if not manifest.dense_features:
        raise ValueError(f"examples: {example_set.root} has no dense features (sequence-only set)")
    encoder = DenseEncoder(tuple(example_set.vocabulary().product_ids()[1:]))
    if encoder.feature_names() != manifest.dense_features:
        raise ValueError(
            "examples: the manifest's dense_features differ from the encoder's layout; "
            "rebuild the example set with this code"
        )
    profile = _view_path(data_dir, "customer_profile")
    con = connect()
    try:
        customers = con.sql(
            f"""SELECT DISTINCT customer_id FROM read_parquet('{profile}')
                WHERE CAST(event_timestamp AS TIMESTAMP) <= ? ORDER BY customer_id""",
            params=[as_of],
        ).to_arrow_table()
        n = customers.num_rows
        if n == 0:
            raise ValueError(f"features: no customer profile at or before {as_of.isoformat()}")
        entities = pa.table(
            {
                "row_id": np.arange(n, dtype=np.int64),
                "customer_id": customers.column("customer_id").cast(pa.int64()),
                "event_timestamp": pa.array([as_of] * n, pa.timestamp("us")),
            }
        )
        rows = join_point_in_time(con, entities, data_dir, CUSTOMER_VIEWS)
    finally:
        con.close()
    mean = np.asarray(manifest.dense_mean, dtype=np.float32)
    std = np.asarray(manifest.dense_std, dtype=np.float32)
    encoded = (encoder.raw(rows) - mean) / std
    return FeatureSnapshot(
        as_of=as_of,
        customer_ids=rows.column("customer_id").to_numpy(),
        features=pd.DataFrame(encoded, columns=encoder.feature_names()),
    )


def _view_path(data_dir: Path, view: str) -> Path:
    path = feature_table_path(Path(data_dir), view)
    if not path.exists():
        raise FileNotFoundError(f"features: {path} is missing; run `persona features build` first")
    return path


# --- report ---------------------------------------------------------------------------------


class DriftReport(BaseModel):
    """Drift of every model input (and optionally the score) between training and now."""

    dataset: str
    pairing: str = PAIRING
    reference_as_of: datetime = Field(description="end of the training window (UTC)")
    current_as_of: datetime = Field(description="the latest feature snapshot (UTC)")
    reference_customers: int
    current_customers: int
    thresholds: DriftThresholds
    n_bins: int
    epsilon: float
    features: list[DriftResult]
    score: DriftResult | None = None

    def counts(self) -> dict[str, int]:
        """How many features are ok / watch / alert."""
        out = {"ok": 0, "watch": 0, "alert": 0}
        for result in self.features:
            out[result.status] += 1
        return out

    def ranked(self) -> list[DriftResult]:
        """Features, highest PSI first."""
        return sorted(self.features, key=lambda r: (-r.psi, r.feature))


def drift_report(
    example_set: ExampleSet,
    data_dir: Path,
    *,
    reference_scores: np.ndarray | None = None,
    current_scores: np.ndarray | None = None,
    thresholds: DriftThresholds | None = None,
    n_bins: int = DEFAULT_BINS,
    epsilon: float = DEFAULT_EPSILON,
    progress: bool = False,
) -> DriftReport:
    """Feature drift of the training snapshot vs the latest snapshot (see the module docstring);
    score drift too when both score samples are given."""
    if (reference_scores is None) != (current_scores is None):
        raise ValueError("scores: give both reference_scores and current_scores, or neither")
    thresholds = thresholds or DriftThresholds()
    reference = customer_snapshot(example_set, data_dir, training_window_end(example_set))
    current = customer_snapshot(example_set, data_dir, latest_snapshot_time(data_dir))
    features = feature_drift(
        reference.features,
        current.features,
        thresholds=thresholds,
        n_bins=n_bins,
        epsilon=epsilon,
        progress=progress,
    )
    score = None
    if reference_scores is not None and current_scores is not None:
        score = score_drift(
            reference_scores, current_scores, thresholds=thresholds, n_bins=n_bins, epsilon=epsilon
        )
    return DriftReport(
        dataset=example_set.manifest().dataset,
        reference_as_of=as_utc(reference.as_of),
        current_as_of=as_utc(current.as_of),
        reference_customers=len(reference.features),
        current_customers=len(current.features),
        thresholds=thresholds,
        n_bins=n_bins,
        epsilon=epsilon,
        features=features,
        score=score,
    )


def drift_alerts(
    report: DriftReport, *, min_severity: Severity = "alert", detected_at: datetime | None = None
) -> list[Alert]:
    """One ``drift`` alert per column (and the score) at or above ``min_severity``."""
    wanted = ("watch", "alert") if min_severity == "watch" else ("alert",)
    results = [*report.features, *([report.score] if report.score else [])]
    alerts = []
    for result in sorted(results, key=lambda r: -r.psi):
        if result.status not in wanted:
            continue
        shift = result.largest_shift()
        numeric = result.reference_mean is not None and result.current_mean is not None
        alerts.append(
            Alert.create(
                kind="drift",
                subject="score" if result is report.score else f"feature:{result.feature}",
                window_start=report.reference_as_of,
                window_end=report.current_as_of,
                observed=result.current_mean if numeric else shift.current_share,  # type: ignore[arg-type]
                expected=result.reference_mean if numeric else shift.reference_share,
                score=result.psi,
                severity=result.status,  # type: ignore[arg-type]
                detected_at=detected_at,
                details={
                    "dataset": report.dataset,
                    "psi": result.psi,
                    "thresholds": report.thresholds.model_dump(),
                    "largest_shift": shift.model_dump(),
                    "n_reference": result.n_reference,
                    "n_current": result.n_current,
                    "pairing": report.pairing,
                },
            )
        )
    return alerts


@dataclass(frozen=True)
class DriftPaths:
    json: Path
    png: Path


def write_drift_report(report: DriftReport, out_dir: Path, *, top: int = 30) -> DriftPaths:
    """``drift.json`` (the whole report, features by PSI) and ``drift.png`` (top PSI bars)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = report.model_copy(update={"features": report.ranked()})
    paths = DriftPaths(json=out_dir / "drift.json", png=out_dir / "drift.png")
    body = payload.model_dump(mode="json")
    body["counts"] = report.counts()
    paths.json.write_text(json.dumps(body, indent=2))
    plot_drift(report, paths.png, top=top)
    return paths


_STATUS_COLOURS: Final = {"ok": "#4c9f70", "watch": "#e0a030", "alert": "#c8403a"}


def plot_drift(report: DriftReport, path: Path, *, top: int = 30) -> Path:
    """Horizontal PSI bars of the ``top`` most drifted features (and the score), thresholds
    drawn as lines, bars coloured by status."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = report.ranked()[:top]
    if report.score is not None:
        shown = [report.score, *shown]
    shown = shown[::-1]  # highest at the top
    figure = Figure(figsize=(9.0, max(3.0, 0.28 * len(shown) + 1.6)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.barh(
        [("score (model)" if r is report.score else r.feature) for r in shown],
        [r.psi for r in shown],
        color=[_STATUS_COLOURS[r.status] for r in shown],
    )
    for level, name in ((report.thresholds.watch, "watch"), (report.thresholds.alert, "alert")):
        axes.axvline(level, color=_STATUS_COLOURS[name], linestyle="--", label=f"{name} {level:g}")
    axes.set_xlabel("PSI")
    counts = report.counts()
    axes.set_title(
        f"{report.dataset}: drift {report.reference_as_of:%Y-%m-%d} → "
        f"{report.current_as_of:%Y-%m-%d} ({counts['alert']} alert, {counts['watch']} watch, "
        f"{counts['ok']} ok)",
        fontsize=10,
    )
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
