"""Daily KPIs from the canonical event logs: impressions, clicks and CTR by app, segment,
experiment variant and model version (DuckDB over the Parquet logs, read in place)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from persona.features.build import feature_table_path
from persona.layout import DataLayout, parquet_glob

#: Dimensions a KPI can be cut by (columns of :func:`daily_kpis`' frame).
DIMENSIONS = ("app", "segment", "variant", "model_version")


def event_log_globs(data_dir: Path) -> list[str]:
    """The history (``clean/events``) and live serving (``serving/events``) logs that exist."""
    layout = DataLayout(Path(data_dir))
    folders = [layout.clean_table("events"), layout.root / "serving" / "events"]
    return [parquet_glob(f) for f in folders if any(f.rglob("*.parquet"))]


def daily_kpis(data_dir: Path) -> pd.DataFrame:
    """One row per (day, app, segment, variant, model_version): impressions, clicks, ctr.

    Segment is the customer's latest ``customer_segment`` id (``unknown`` if none); variant and
    model are ``none`` for traffic that was not served by an experiment.
    """
    globs = event_log_globs(data_dir)
    if not globs:
        raise FileNotFoundError(
            f"dashboard: no event log under {data_dir} (clean/events or serving/events)"
        )
    sources = " UNION ALL ".join(
        f"SELECT customer_id, app, event_type, event_timestamp, variant, model_version "
        f"FROM read_parquet('{g}', hive_partitioning = false, union_by_name = true)"
        for g in globs
    )
    segments = feature_table_path(Path(data_dir), "customer_segment")
    segment_join = (
        f"LEFT JOIN (SELECT customer_id, arg_max(segment_id, event_timestamp) AS segment "
        f"FROM read_parquet('{segments}') GROUP BY customer_id) s USING (customer_id)"
        if segments.exists()
        else "LEFT JOIN (SELECT NULL::BIGINT AS customer_id, NULL::VARCHAR AS segment) s USING (customer_id)"
    )
    query = f"""
        SELECT CAST(date_trunc('day', e.event_timestamp) AS DATE) AS day, e.app,
               COALESCE(s.segment, 'unknown') AS segment,
               COALESCE(e.variant, 'none') AS variant,
               COALESCE(e.model_version, 'none') AS model_version,
               count(*) FILTER (WHERE e.event_type = 'impression') AS impressions,
               count(*) FILTER (WHERE e.event_type = 'click') AS clicks
        FROM ({sources}) e {segment_join}
        WHERE e.event_type IN ('impression', 'click')
        GROUP BY ALL
        ORDER BY day
    """
    with duckdb.connect() as con:
        frame = con.sql(query).df()
    frame["ctr"] = frame["clicks"] / frame["impressions"].where(frame["impressions"] > 0)
    return frame


def by_dimension(kpis: pd.DataFrame, dimension: str, top: int = 8) -> pd.DataFrame:
    """Daily impressions, clicks and CTR per value of ``dimension`` (the ``top`` values by
    volume; the rest summed as ``other``)."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension: {dimension!r} is not one of {DIMENSIONS}")
    volume = kpis.groupby(dimension)["impressions"].sum().sort_values(ascending=False)
    keep = set(volume.index[:top])
    frame = kpis.assign(**{dimension: kpis[dimension].where(kpis[dimension].isin(keep), "other")})
    out = frame.groupby(["day", dimension], as_index=False)[["impressions", "clicks"]].sum()
    out["ctr"] = out["clicks"] / out["impressions"].where(out["impressions"] > 0)
    return out
