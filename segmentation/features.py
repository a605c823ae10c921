"""The segmentation matrix: one row per customer, read point-in-time from the offline features.

Four groups of behaviour, each a few columns a banker can read back:

- ``rfm``: recency (days since the last event), frequency (transactions in 90 days, active
  days in 30), monetary (credits and debits over 90 days);
- ``category_interactions``: clicks, applies and purchases per bank category over 90 days;
- ``app_mix``: the share of the customer's 90-day events in each app;
- ``holdings``: products held per category.

Every customer of ``customer_profile`` known at the snapshot gets a row, including customers
with no behaviour yet (cold start: zero counts, recency at the behaviour view's TTL), so each
one receives a segment and serving's segment priors instead of the global ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import duckdb
import numpy as np
import pandas as pd

from persona import domain
from persona.features import catalog
from persona.features.build import feature_table_path

Group = Literal["rfm", "category_interactions", "app_mix", "holdings"]

#: Recency is capped at the behaviour view's TTL: beyond it every window is empty anyway.
RECENCY_CAP_DAYS: Final[int] = catalog.CUSTOMER_BEHAVIOUR.ttl_days

#: App labels used in segment names.
_APP_TRAITS: Final[dict[str, str]] = {
    "rib": "web",
    "cib": "corporate-web",
    "nli": "insurance-app",
    "imobile": "mobile",
}


@dataclass(frozen=True)
class SegmentFeature:
    """One column of the segmentation matrix and the words a segment name uses for it."""

    name: str
    group: Group
    description: str
    #: Trait label when a segment's mean lies above its population's (None: never named).
    high: str | None
    #: Trait label when it lies below.
    low: str | None


def _features() -> tuple[SegmentFeature, ...]:
    rfm = (
        SegmentFeature(
            "recency_days", "rfm", "days since the last event (any app)", "dormant", "recent"
        ),
        SegmentFeature(
            "txn_count_90d", "rfm", "transactions in the last 90 days", "high-txn", "low-txn"
        ),
        SegmentFeature(
            "active_days_30d", "rfm", "days with any event, last 30", "frequent", "occasional"
        ),
        SegmentFeature(
            "txn_amount_in_90d", "rfm", "sum of credits, last 90 days", "high-inflow", "low-inflow"
        ),
        SegmentFeature(
            "txn_amount_out_90d", "rfm", "sum of debits, last 90 days", "high-spend", "low-spend"
        ),
    )
    interactions = tuple(
        SegmentFeature(
            f"{c}_interactions_90d",
            "category_interactions",
            f"clicks, applies and purchases on {c} products, last 90 days",
            f"{c}-engaged",
            None,
        )
        for c in domain.BANK_CATEGORIES
    )
    apps = tuple(
        SegmentFeature(
            f"{a}_share_90d", "app_mix", f"share of 90-day events in the {a} app", t, None
        )
        for a, t in _APP_TRAITS.items()
    )
    holdings = tuple(
        SegmentFeature(f"held_{c}", "holdings", f"{c} products held", f"{c}-heavy", f"{c}-light")
        for c in domain.BANK_CATEGORIES
    )
    return (*rfm, *interactions, *apps, *holdings)


SEGMENT_FEATURES: Final[tuple[SegmentFeature, ...]] = _features()
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in SEGMENT_FEATURES)
GROUPS: Final[tuple[Group, ...]] = ("rfm", "category_interactions", "app_mix", "holdings")
#: Groups whose counts and amounts are log-compressed before standardising (shares are not).
LOG_COMPRESSED_GROUPS: Final[frozenset[str]] = frozenset(
    {"rfm", "category_interactions", "holdings"}
)


def features_of(group: Group) -> list[str]:
    """The matrix columns of one feature group."""
    return [f.name for f in SEGMENT_FEATURES if f.group == group]


def feature_spec(name: str) -> SegmentFeature:
    """The :class:`SegmentFeature` called ``name``."""
    for spec in SEGMENT_FEATURES:
        if spec.name == name:
            return spec
    raise KeyError(f"feature: no segmentation feature {name!r}")


@dataclass(frozen=True)
class SegmentationMatrix:
    """Customers × features at one snapshot time, plus what profiles need beside them."""

    snapshot_at: datetime
    #: Index customer_id; columns customer_type, consent_marketing.
    customers: pd.DataFrame
    #: Index customer_id; columns :data:`FEATURE_NAMES`, raw (counts, days, amounts, shares).
    features: pd.DataFrame
    #: Index customer_id; events per app over 90 days (the app mix's raw counts).
    app_events: pd.DataFrame

    @property
    def n_customers(self) -> int:
        return len(self.features)

    def customer_types(self) -> list[str]:
        """Customer types present, sorted."""
        return sorted(self.customers["customer_type"].unique().tolist())

    def of_type(self, customer_type: str) -> pd.DataFrame:
        """The feature rows of one customer type."""
        return self.features[self.customers["customer_type"] == customer_type]

    def fingerprint(self) -> str:
        """sha256 of the snapshot time, customers, types and feature values (the data version)."""
        digest = hashlib.sha256(self.snapshot_at.isoformat().encode())
        digest.update(pd.util.hash_pandas_object(self.features, index=True).to_numpy().tobytes())
        digest.update(
            pd.util.hash_pandas_object(self.customers["customer_type"], index=True)
            .to_numpy()
            .tobytes()
        )
        return digest.hexdigest()


def _require_tables(data_dir: Path) -> dict[str, Path]:
    paths = {
        name: feature_table_path(data_dir, name)
        for name in ("customer_profile", "customer_behaviour", "customer_holdings")
    }
    for name, path in paths.items():
        if not path.exists():
            raise FileNotFoundError(
                f"data_dir: offline feature table {name!r} missing at {path}; "
                "run `persona features build` first"
            )
    return paths


def latest_snapshot(data_dir: Path) -> datetime:
    """The newest behaviour snapshot time (UTC): the day after the last event day."""
    path = _require_tables(data_dir)["customer_behaviour"]
    row = duckdb.execute(f"SELECT max(event_timestamp) FROM read_parquet('{path}')").fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"data_dir: {path} holds no behaviour rows; nothing to segment")
    return pd.Timestamp(row[0]).tz_convert("UTC").to_pydatetime()


def read_segmentation_matrix(data_dir: Path, as_of: datetime | None = None) -> SegmentationMatrix:
    """Every customer's latest behaviour, holdings and profile rows at or before ``as_of``.

    ``as_of`` defaults to the latest behaviour snapshot. A behaviour row older than the
    snapshot by a day or more means nothing happened since it was written beyond the view's
    90-day windows (the builder stops a customer's snapshots 90 days after the last event), so
    its counts are read as zero and the gap is added to recency.
    """
    paths = _require_tables(data_dir)
    snapshot = as_of or latest_snapshot(data_dir)
    if snapshot.tzinfo is None:
        raise ValueError("as_of: give a timezone-aware time (UTC)")
    categories = domain.BANK_CATEGORIES
    apps = tuple(_APP_TRAITS)
    behaviour_cols = [
        "days_since_last_event",
        "txn_count_90d",
        "active_days_30d",
        "txn_amount_in_90d",
        "txn_amount_out_90d",
        *(f"{c}_interactions_90d" for c in categories),
        *(f"{a}_events_90d" for a in apps),
    ]
    held_cols = [f"held_{c}" for c in categories]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    frame = con.execute(
        f"""
        WITH profile AS (
            SELECT customer_id, customer_type, consent_marketing
            FROM read_parquet('{paths["customer_profile"]}')
            WHERE event_timestamp <= $at
            QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY event_timestamp DESC) = 1
        ),
        behaviour AS (
            SELECT customer_id, event_timestamp AS behaviour_at, {", ".join(behaviour_cols)}
            FROM read_parquet('{paths["customer_behaviour"]}')
            WHERE event_timestamp <= $at
            QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY event_timestamp DESC) = 1
        ),
        holdings AS (
            SELECT customer_id, {", ".join(held_cols)}
            FROM read_parquet('{paths["customer_holdings"]}')
            WHERE event_timestamp <= $at
            QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY event_timestamp DESC) = 1
        )
        SELECT p.customer_id, p.customer_type, COALESCE(p.consent_marketing, false)
                   AS consent_marketing,
               CAST(floor(epoch($at - b.behaviour_at) / 86400) AS BIGINT) AS stale_days,
               b.* EXCLUDE (customer_id, behaviour_at),
               h.* EXCLUDE (customer_id)
        FROM profile p
        LEFT JOIN behaviour b USING (customer_id)
        LEFT JOIN holdings h USING (customer_id)
        ORDER BY p.customer_id
        """,
        {"at": snapshot},
    ).df()
    con.close()
    if frame.empty:
        raise ValueError(f"data_dir: no customers in customer_profile at or before {snapshot}")
    frame = frame.set_index("customer_id")
    missing_type = frame["customer_type"].isna()
    if missing_type.any():
        raise ValueError(
            f"customer_type: {int(missing_type.sum())} customer(s) without a type, "
            f"e.g. {frame.index[missing_type][0]}"
        )
    stale_days = frame.pop("stale_days")
    has_behaviour = stale_days.notna()
    stale = has_behaviour & (stale_days >= 1)
    counts = [c for c in behaviour_cols if c != "days_since_last_event"]
    frame.loc[stale, counts] = 0
    recency = frame["days_since_last_event"].where(
        ~stale, frame["days_since_last_event"] + stale_days
    )
    recency = recency.where(has_behaviour, RECENCY_CAP_DAYS)
    frame["recency_days"] = recency.clip(lower=0, upper=RECENCY_CAP_DAYS)
    frame[counts + held_cols] = frame[counts + held_cols].fillna(0)
    app_events = frame[[f"{a}_events_90d" for a in apps]].astype(float)
    app_total = app_events.sum(axis=1)
    for a in apps:
        frame[f"{a}_share_90d"] = np.where(
            app_total > 0, frame[f"{a}_events_90d"] / app_total.where(app_total > 0, 1.0), 0.0
        )
    features = frame[list(FEATURE_NAMES)].astype(float).clip(lower=0.0)
    app_events.columns = list(apps)
    return SegmentationMatrix(
        snapshot_at=snapshot,
        customers=frame[["customer_type", "consent_marketing"]].astype(
            {"customer_type": str, "consent_marketing": bool}
        ),
        features=features,
        app_events=app_events,
    )
