"""Point-in-time joins of the feature service's views onto decision points, in DuckDB.

Feast's offline store answers ``get_historical_features`` for a feature service by taking, per
entity row and feature view, the latest feature row with ``feature.event_timestamp <=
entity.event_timestamp`` that is no older than the view's TTL. This module does the same with a
DuckDB ``ASOF LEFT JOIN`` straight over the feature Parquet files, because Feast's path
materialises pandas frames per view and is too slow for millions of rows; a test
(``tests/training/test_point_in_time.py``) proves both give identical rows for ``ranker_v1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from persona.features.build import feature_table_path
from persona.features.catalog import FeatureTable


def connect(memory_limit: str = "4GB") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def join_point_in_time(
    con: duckdb.DuckDBPyConnection,
    entities: pa.Table,
    data_dir: Path,
    views: Sequence[FeatureTable],
) -> pa.Table:
    """``entities`` (row_id, customer_id, event_timestamp) + every column of ``views``.

    Rows come back in ``row_id`` order. A view whose latest row is older than its TTL, or that has
    no row at or before the entity's time, gives nulls (as Feast does).
    """
    for name in ("row_id", "customer_id", "event_timestamp"):
        if name not in entities.column_names:
            raise ValueError(f"entities: missing column {name!r}")
    con.register("pit_entities", entities)
    selects = ["e.row_id", "e.customer_id", "e.event_timestamp"]
    joins = []
    for i, view in enumerate(views):
        if view.entity != "customer":
            raise ValueError(f"views: {view.name} is keyed by {view.entity}, not customer")
        path = feature_table_path(data_dir, view.name)
        if not path.exists():
            raise FileNotFoundError(
                f"features: {path} is missing; run `persona features build` first"
            )
        alias = f"v{i}"
        columns = ", ".join(f'"{c}"' for c in view.column_names)
        joins.append(
            f"""ASOF LEFT JOIN (
                    SELECT customer_id, CAST(event_timestamp AS TIMESTAMP) AS ts, {columns}
                    FROM read_parquet('{path}')
                ) {alias}
                ON e.customer_id = {alias}.customer_id AND e.ts >= {alias}.ts"""
        )
        fresh = f"{alias}.ts >= e.ts - INTERVAL {view.ttl_days} DAY"
        selects += [f'CASE WHEN {fresh} THEN {alias}."{c}" END AS "{c}"' for c in view.column_names]
    sql = f"""
        SELECT {", ".join(selects)}
        FROM (SELECT *, CAST(event_timestamp AS TIMESTAMP) AS ts FROM pit_entities) e
        {" ".join(joins)}
        ORDER BY e.row_id
    """
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister("pit_entities")
