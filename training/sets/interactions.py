"""Customers' product interactions from the canonical event log, and histories cut at any time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from persona.layout import DataLayout, parquet_glob
from training.examples import INTERACTION_TYPES, Vocabulary


@dataclass(frozen=True)
class Interactions:
    """Every product interaction (click, apply, purchase, dismiss), sorted by customer, time, id.

    ``starts[i]:starts[i+1]`` is the slice of ``customers[i]``.
    """

    customers: np.ndarray  # (U,) int64, sorted
    starts: np.ndarray  # (U+1,) int64
    item: np.ndarray  # (N,) int32 vocabulary index
    type_code: np.ndarray  # (N,) int8 (1-based code of INTERACTION_TYPES)
    timestamp: np.ndarray  # (N,) datetime64[us]
    app: np.ndarray  # (N,) object
    device: np.ndarray  # (N,) object (None when unknown)

    def slice_of(self, customer_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) per customer id; customers without interactions get an empty slice."""
        pos = np.searchsorted(self.customers, customer_ids)
        pos_c = np.minimum(pos, max(len(self.customers) - 1, 0))
        found = (
            (self.customers[pos_c] == customer_ids)
            if len(self.customers)
            else np.zeros(len(customer_ids), bool)
        )
        start = np.where(found, self.starts[pos_c], 0)
        end = np.where(found, self.starts[np.minimum(pos_c + 1, len(self.starts) - 1)], 0)
        return start.astype(np.int64), end.astype(np.int64)

    def histories(
        self, customer_ids: np.ndarray, ends: np.ndarray, max_len: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded (n, max_len) items and types of interactions ``[.., ends)`` per row.

        ``ends`` are absolute positions into the interaction arrays (exclusive).
        """
        start, _ = self.slice_of(customer_ids)
        offsets = np.arange(-max_len, 0)[None, :]
        index = ends[:, None] + offsets
        valid = index >= start[:, None]
        safe = np.where(valid, index, 0)
        items = np.where(valid, self.item[safe] if len(self.item) else 0, 0).astype(np.int32)
        types = np.where(valid, self.type_code[safe] if len(self.item) else 0, 0).astype(np.int8)
        return items, types

    def position_before(self, customer_ids: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Absolute end position of the interactions strictly before ``times`` per row."""
        start, end = self.slice_of(customer_ids)
        out = np.empty(len(customer_ids), dtype=np.int64)
        for i, (s, e, t) in enumerate(zip(start, end, times, strict=True)):
            out[i] = s + np.searchsorted(self.timestamp[s:e], t, side="left")
        return out


def load_interactions(
    con: duckdb.DuckDBPyConnection, data_dir: Path, vocabulary: Vocabulary
) -> Interactions:
    """Read every product interaction from ``DIR/clean/events`` in customer/time order."""
    layout = DataLayout(data_dir)
    kinds = ", ".join(f"'{k}'" for k in INTERACTION_TYPES)
    table = con.sql(
        f"""
        SELECT customer_id, product_id, event_type,
               CAST(event_timestamp AS TIMESTAMP) AS ts, app, device
        FROM read_parquet('{parquet_glob(layout.clean_table("events"))}', hive_partitioning = false)
        WHERE event_type IN ({kinds}) AND product_id IS NOT NULL
        ORDER BY customer_id, ts, event_id
        """
    ).to_arrow_table()
    index = vocabulary.index_of()
    products = table.column("product_id").to_pylist()
    unknown = sorted({p for p in products if p not in index})
    if unknown:
        raise ValueError(f"events: product_id {unknown[:5]} not in the products table")
    customers = table.column("customer_id").to_numpy()
    boundaries = np.flatnonzero(np.diff(customers)) + 1 if len(customers) else np.array([], int)
    starts = np.concatenate([[0], boundaries, [len(customers)]]).astype(np.int64)
    type_code = {k: i + 1 for i, k in enumerate(INTERACTION_TYPES)}
    return Interactions(
        customers=customers[starts[:-1]] if len(customers) else np.array([], np.int64),
        starts=starts if len(customers) else np.array([0], np.int64),
        item=np.array([index[p] for p in products], dtype=np.int32),
        type_code=np.array(
            [type_code[t] for t in table.column("event_type").to_pylist()], dtype=np.int8
        ),
        timestamp=table.column("ts").to_numpy(),
        app=np.asarray(table.column("app").to_pylist(), dtype=object),
        device=np.asarray(table.column("device").to_pylist(), dtype=object),
    )


def read_vocabulary(con: duckdb.DuckDBPyConnection, data_dir: Path) -> Vocabulary:
    products = con.sql(
        f"SELECT product_id, category FROM read_parquet('{parquet_glob(DataLayout(data_dir).clean_table('products'))}')"
    ).to_arrow_table()
    return Vocabulary.from_products(
        products.column("product_id").to_pylist(), products.column("category").to_pylist()
    )
