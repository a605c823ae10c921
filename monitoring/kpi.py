"""Hourly KPI time series per app (and per customer segment) from the canonical event log.

Four KPIs are monitored:

* ``volume``: impressions per hour (count);
* ``ctr``: clicks / impressions in the hour (share, 0..1);
* ``latency_p95_ms``: 95th percentile of the recommendation latency in the hour (ms);
* ``fallback_share``: degraded responses / requests in the hour (share, 0..1).

Volume and CTR come from the event log (``events`` schema: the simulator's
``<data_dir>/clean/events`` or serving's ``<data_dir>/serving/events``). The event log carries no
latency or degradation, so the last two come from a request table with columns
``(timestamp, app, latency_ms, degraded)`` when one is given. Every series is laid on a complete
hourly grid: an hour without impressions is a volume of 0, not a missing point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import duckdb
import numpy as np
import pandas as pd

from persona.layout import parquet_glob

KPIS: Final[tuple[str, ...]] = ("volume", "ctr", "latency_p95_ms", "fallback_share")
#: The segment value of series that cover every segment of an app.
ALL_SEGMENTS: Final = "all"
#: Columns of an hourly KPI frame, whatever its source.
FRAME_COLUMNS: Final[tuple[str, ...]] = (
    "hour",
    "app",
    "segment",
    "impressions",
    "clicks",
    "requests",
    "fallbacks",
    "latency_p95_ms",
)
REQUEST_COLUMNS: Final[tuple[str, ...]] = ("timestamp", "app", "latency_ms", "degraded")

Grouping = Literal["app", "segment"]


@dataclass(frozen=True)
class KpiSeries:
    """One KPI of one app (and segment) on an hourly grid.

    ``value`` is the KPI in its own unit (count, share or ms; NaN where it is undefined, e.g.
    CTR in an hour without impressions). ``trials`` is the denominator of a share (impressions
    for CTR, requests for the fallback share) and ``None`` for counts and latencies.
    """

    kpi: str
    app: str
    segment: str
    hours: pd.DatetimeIndex
    value: np.ndarray
    trials: np.ndarray | None = None

    @property
    def name(self) -> str:
        """``kpi:<name>`` as alerts name their subject."""
        return f"kpi:{self.kpi}"

    def __len__(self) -> int:
        return len(self.hours)


def hourly_event_kpis(
    events_dir: Path,
    *,
    by: Grouping = "app",
    segments: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Impressions and clicks per hour and app (``by="app"``) or app × segment from an event log.

    ``events_dir`` is a folder of ``events`` Parquet files (partitioned or not). For
    ``by="segment"`` pass ``segments`` (columns ``customer_id``, ``segment``) or let
    :func:`customer_segments` find them next to the log. Returns a frame with
    :data:`FRAME_COLUMNS` on a complete hourly grid (UTC) from the first to the last day.
    """
    events_dir = Path(events_dir)
    if not any(events_dir.rglob("*.parquet")):
        raise FileNotFoundError(f"events: no Parquet files under {events_dir}")
    if by not in ("app", "segment"):
        raise ValueError(f"by: must be 'app' or 'segment', got {by!r}")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            "CREATE VIEW events AS SELECT * FROM "
            f"read_parquet('{parquet_glob(events_dir)}', hive_partitioning = false)"
        )
        missing = {"customer_id", "app", "event_type", "event_timestamp"} - set(
            con.execute("SELECT * FROM events LIMIT 0").fetchdf().columns
        )
        if missing:
            raise ValueError(f"events: missing column(s) {', '.join(sorted(missing))}")
        if by == "segment":
            if segments is None:
                segments = customer_segments(events_dir.parent.parent)
            _require_columns(segments, ("customer_id", "segment"), "segments")
            con.register("segment_rows", segments[["customer_id", "segment"]])
            segment_sql = "COALESCE(s.segment, 'unknown')"
            join = "LEFT JOIN segment_rows s USING (customer_id)"
        else:
            segment_sql, join = f"'{ALL_SEGMENTS}'", ""
        counts = con.execute(
            f"""
            SELECT date_trunc('hour', e.event_timestamp) AS hour, e.app, {segment_sql} AS segment,
                   count(*) FILTER (WHERE e.event_type = 'impression') AS impressions,
                   count(*) FILTER (WHERE e.event_type = 'click') AS clicks
            FROM events e {join}
            WHERE e.event_type IN ('impression', 'click')
            GROUP BY ALL
            """
        ).fetchdf()
    finally:
        con.close()
    if counts.empty:
        raise ValueError(f"events: no impressions or clicks under {events_dir}")
    return complete_hourly_grid(counts)


def hourly_request_kpis(requests: pd.DataFrame) -> pd.DataFrame:
    """Requests, fallbacks and p95 latency per hour and app from a request table.

    ``requests`` has :data:`REQUEST_COLUMNS`: ``timestamp`` (UTC), ``app``, ``latency_ms``
    (end-to-end, ms) and ``degraded`` (bool: the response came from a fallback). Returns
    :data:`FRAME_COLUMNS` with segment ``all`` on a complete hourly grid.
    """
    _require_columns(requests, REQUEST_COLUMNS, "requests")
    if requests.empty:
        raise ValueError("requests: the table has no rows")
    if requests["latency_ms"].isna().any() or (requests["latency_ms"] < 0).any():
        raise ValueError("requests: latency_ms must be a non-negative number in every row")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("request_rows", requests[list(REQUEST_COLUMNS)])
        frame = con.execute(
            f"""
            SELECT date_trunc('hour', CAST(timestamp AS TIMESTAMPTZ)) AS hour, app,
                   '{ALL_SEGMENTS}' AS segment,
                   count(*) AS requests,
                   count(*) FILTER (WHERE degraded) AS fallbacks,
                   quantile_cont(latency_ms, 0.95) AS latency_p95_ms
            FROM request_rows GROUP BY ALL
            """
        ).fetchdf()
    finally:
        con.close()
    return complete_hourly_grid(frame)


def read_requests(path: Path) -> pd.DataFrame:
    """A request table (:data:`REQUEST_COLUMNS`) from a Parquet file or folder of Parquet files."""
    path = Path(path)
    if path.is_dir():
        if not any(path.rglob("*.parquet")):
            raise FileNotFoundError(f"requests: no Parquet files under {path}")
        source = parquet_glob(path)
    elif path.exists():
        source = str(path)
    else:
        raise FileNotFoundError(f"requests: no file or folder at {path}")
    with duckdb.connect() as con:  # private: the default connection is shared by the process
        frame = con.sql(f"SELECT * FROM read_parquet('{source}')").fetchdf()
    _require_columns(frame, REQUEST_COLUMNS, "requests")
    return frame


def customer_segments(data_dir: Path) -> pd.DataFrame:
    """Each customer's segment (columns ``customer_id``, ``segment``).

    Prefers the published ``customer_segment`` feature table (latest row per customer); without
    it, applies the feature build's placeholder rule (customer type × life stage) to the clean
    ``customers`` table of ``data_dir``.
    """
    data_dir = Path(data_dir)
    published = data_dir / "features" / "customer_segment"
    customers = data_dir / "clean" / "customers"
    if any(published.rglob("*.parquet")):
        query = f"""
            SELECT customer_id, arg_max(segment_id, event_timestamp) AS segment
            FROM read_parquet('{parquet_glob(published)}') GROUP BY customer_id
        """
        with duckdb.connect() as con:
            return con.sql(query).fetchdf()
    if any(customers.rglob("*.parquet")):
        return segments_from_customers(customers)
    raise FileNotFoundError(f"segments: neither {published} nor {customers} holds Parquet files")


def segments_from_customers(customers_dir: Path) -> pd.DataFrame:
    """Segments by the feature build's placeholder rule (customer type × life stage) from a
    folder of ``customers`` Parquet files; columns ``customer_id``, ``segment``."""
    customers_dir = Path(customers_dir)
    if not any(customers_dir.rglob("*.parquet")):
        raise FileNotFoundError(f"customers: no Parquet files under {customers_dir}")
    # One place for the rule: the feature build's own SQL.
    from persona.features.build import customer_segment_sql

    query = f"""
        WITH customers AS (SELECT * FROM read_parquet('{parquet_glob(customers_dir)}'))
        SELECT customer_id, segment_id AS segment FROM ({customer_segment_sql()})
    """
    with duckdb.connect() as con:
        return con.sql(query).fetchdf()


def complete_hourly_grid(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (some of :data:`FRAME_COLUMNS`) on every hour of every day it spans, per unit.

    Counts missing from an hour become 0; the p95 latency of an hour without requests is NaN.
    The grid runs from 00:00 of the first day to 23:00 of the last (UTC).
    """
    _require_columns(frame, ("hour", "app", "segment"), "frame")
    frame = frame.copy()
    frame["hour"] = pd.to_datetime(frame["hour"], utc=True).dt.floor("h")
    first = frame["hour"].min().floor("D")
    last = frame["hour"].max().floor("D") + pd.Timedelta(hours=23)
    hours = pd.date_range(first, last, freq="h", tz="UTC", name="hour")
    units = frame[["app", "segment"]].drop_duplicates().sort_values(["app", "segment"])
    grid = pd.MultiIndex.from_tuples(
        [(h, a, s) for a, s in units.itertuples(index=False) for h in hours],
        names=["hour", "app", "segment"],
    )
    for column in FRAME_COLUMNS[3:]:
        if column not in frame:
            frame[column] = np.nan if column == "latency_p95_ms" else 0
    full = frame.groupby(["hour", "app", "segment"])[list(FRAME_COLUMNS[3:])].sum(min_count=1)
    full = full.reindex(grid)
    counts = ["impressions", "clicks", "requests", "fallbacks"]
    full[counts] = full[counts].fillna(0).astype(np.int64)
    return full.reset_index()[list(FRAME_COLUMNS)]


def merge_frames(events: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """One KPI frame from event counts and app-level request KPIs (requests join on hour × app)."""
    request_part = requests[["hour", "app", "requests", "fallbacks", "latency_p95_ms"]]
    merged = events.drop(columns=["requests", "fallbacks", "latency_p95_ms"]).merge(
        request_part, on=["hour", "app"], how="left"
    )
    merged[["requests", "fallbacks"]] = merged[["requests", "fallbacks"]].fillna(0).astype(np.int64)
    return merged[list(FRAME_COLUMNS)]


def kpi_series(frame: pd.DataFrame, kpis: tuple[str, ...] = KPIS) -> list[KpiSeries]:
    """Split an hourly KPI frame into one :class:`KpiSeries` per app × segment × KPI.

    KPIs whose source is absent are skipped: CTR and volume need impressions; latency and
    fallbacks need requests (units without any request in the frame get neither).
    """
    unknown = sorted(set(kpis) - set(KPIS))
    if unknown:
        raise ValueError(f"kpis: unknown {unknown}; known: {', '.join(KPIS)}")
    _require_columns(frame, FRAME_COLUMNS, "frame")
    series: list[KpiSeries] = []
    for (app, segment), unit in frame.groupby(["app", "segment"], sort=True):
        unit = unit.sort_values("hour")
        hours = pd.DatetimeIndex(unit["hour"])
        impressions = unit["impressions"].to_numpy(np.float64)
        requests = unit["requests"].to_numpy(np.float64)
        has_events = impressions.sum() > 0
        has_requests = requests.sum() > 0
        for kpi in kpis:
            common = {"kpi": kpi, "app": str(app), "segment": str(segment), "hours": hours}
            if kpi == "volume" and has_events:
                series.append(KpiSeries(value=impressions, **common))
            elif kpi == "ctr" and has_events:
                clicks = unit["clicks"].to_numpy(np.float64)
                series.append(
                    KpiSeries(value=_share(clicks, impressions), trials=impressions, **common)
                )
            elif kpi == "latency_p95_ms" and has_requests:
                series.append(
                    KpiSeries(value=unit["latency_p95_ms"].to_numpy(np.float64), **common)
                )
            elif kpi == "fallback_share" and has_requests:
                fallbacks = unit["fallbacks"].to_numpy(np.float64)
                series.append(
                    KpiSeries(value=_share(fallbacks, requests), trials=requests, **common)
                )
    return series


def _share(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")
