"""Tiny raw datasets for the validation tests: a valid one, and helpers to break it.

Rows are plain dicts, so a test changes one value and writes the table either as a source would
(:func:`persona.layout.write_table`: canonical schema, events partitioned by day) or directly as
a broken Parquet file (any Arrow schema, e.g. a NULL where the schema forbids it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from persona.layout import DataLayout, write_table
from persona.schemas import TABLES

#: Validation time of every test: all valid timestamps lie before it.
NOW = datetime(2025, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

Rows = dict[str, list[dict[str, Any]]]


def valid_rows() -> Rows:
    """A small dataset that breaks no rule: 4 customers, 3 products, 3 holdings, 8 events on
    two days."""
    customers = [
        {
            "customer_id": i,
            "created_at": T0 - timedelta(days=400 + i),
            "customer_type": "retail" if i < 4 else "corporate",
            "age_band": ["18-24", "25-34", "35-44", None][i - 1],
            "income_band": "middle",
            "city_tier": "metro",
            "occupation": "salaried",
            "life_stage": "family",
            "risk_profile": "balanced",
            "kyc_level": 2,
            "consent_marketing": True,
            "consent_data_sharing": i % 2 == 0,
            "apps_enrolled": ["rib", "imobile"] if i < 4 else ["cib"],
            "relationship_start": T0 - timedelta(days=500 + i),
        }
        for i in range(1, 5)
    ]
    products = [
        {
            "product_id": pid,
            "category": category,
            "name": f"{category} {pid}",
            "apps": ["rib", "imobile"],
            "customer_types": ["retail"],
            "min_age": 18,
            "min_income_band": "low",
            "min_kyc_level": 1,
            "risk_class": risk,
            "margin_weight": 1.5,
            "is_marketing_offer": True,
        }
        for pid, category, risk in (("P1", "card", 2), ("P2", "loan", 3), ("P3", "insurance", 1))
    ]
    holdings = [
        {
            "customer_id": 1,
            "product_id": "P1",
            "opened_at": T0 - timedelta(days=90),
            "closed_at": None,
        },
        {
            "customer_id": 2,
            "product_id": "P2",
            "opened_at": T0 - timedelta(days=60),
            "closed_at": T0,
        },
        {
            "customer_id": 3,
            "product_id": "P1",
            "opened_at": T0 - timedelta(days=30),
            "closed_at": None,
        },
    ]

    def event(n: int, customer: int, kind: str, product: str | None, hours: int) -> dict[str, Any]:
        impression = kind == "impression"
        return {
            "event_id": f"e{n}",
            "customer_id": customer,
            "product_id": product,
            "app": "rib",
            "event_type": kind,
            "event_timestamp": T0 + timedelta(hours=hours),
            "request_id": "r1" if impression else None,
            "position": 1 if impression else None,
            "amount": 25.0 if kind == "txn" else None,
            "propensity": 0.4 if impression else None,
            "model_version": "m1" if impression else None,
            "variant": "A" if impression else None,
            "device": "web",
        }

    events = [
        event(1, 1, "impression", "P1", 0),
        event(2, 1, "click", "P1", 1),
        event(3, 2, "impression", "P2", 2),
        event(4, 2, "login", None, 3),
        event(5, 3, "txn", None, 4),
        event(6, 3, "impression", "P3", 26),
        event(7, 4, "purchase", "P3", 27),
        event(8, 1, "dismiss", "P2", 28),
    ]
    return {"customers": customers, "products": products, "holdings": holdings, "events": events}


def to_arrow(table: str, rows: list[dict[str, Any]], *, strict: bool = True) -> pa.Table:
    """Rows as an Arrow table of the canonical types; with ``strict=False`` every column is
    nullable, so a NULL can be written where the canonical schema forbids it."""
    schema = TABLES[table].arrow_schema()
    if not strict:
        schema = pa.schema([f.with_nullable(True) for f in schema])
    return pa.Table.from_pylist(rows, schema=schema)


def write_like_source(root: Path, rows: Rows) -> None:
    """Write every table as a source does (canonical schema, events partitioned by day)."""
    layout = DataLayout(root)
    for table, table_rows in rows.items():
        write_table(layout.raw_table(table), to_arrow(table, table_rows), TABLES[table])


def write_file(root: Path, table: str, data: pa.Table, name: str = "part-0.parquet") -> Path:
    """Write one raw Parquet file as given (no conforming), replacing the table's folder."""
    folder = DataLayout(root).raw_table(table)
    if folder.exists():
        for old in folder.rglob("*.parquet"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, folder / name)
    return folder / name


def read_clean(root: Path, table: str) -> pa.Table:
    """The clean table read with its canonical schema (events: hive partitions), sorted by key."""
    schema = TABLES[table]
    partitioning = None
    if schema.partition_by is not None:
        partitioning = ds.partitioning(
            pa.schema([pa.field(schema.partition_by, pa.string())]), flavor="hive"
        )
    data = ds.dataset(
        DataLayout(root).clean_table(table), format="parquet", partitioning=partitioning
    ).to_table()
    data = data.select(schema.column_names)
    return data.sort_by([(c, "ascending") for c in schema.primary_key])


def read_quarantine(root: Path, table: str) -> list[dict[str, Any]]:
    return pq.read_table(DataLayout(root).quarantine / f"{table}.parquet").to_pylist()
