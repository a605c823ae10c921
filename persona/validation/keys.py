"""The pre-pass: one streaming scan of a table that reads only its key columns and one flag.

It collects a 64-bit hash of every primary key (to find duplicates), the distinct values of
every foreign-key column (to find dangling references) and how many rows break any row-level
rule. When all three come back empty, no row can be refused and the row-by-row problem query is
skipped; otherwise the duplicates and dangling references become small temp tables that the
problem query joins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from persona.schemas import TABLES, ForeignKey, TableSchema
from persona.validation.sql import ident, scalar, string_literal

#: Rows per Arrow batch of the pre-pass stream.
BATCH_ROWS = 1 << 20


@dataclass(frozen=True)
class KeyScan:
    """What the pre-pass found for one table."""

    #: Rows breaking at least one row-level rule (not counting key rules).
    rows_failing: int
    #: Temp table of duplicated keys (``_k0..``, ``_n``), or None if every key is unique.
    duplicates: str | None
    #: Per foreign key, a temp table of dangling values (``_key``, ``_quarantined``), or None.
    dangling: dict[ForeignKey, str | None]

    @property
    def anything_refused(self) -> bool:
        return (
            self.rows_failing > 0
            or self.duplicates is not None
            or any(t is not None for t in self.dangling.values())
        )

    def temp_tables(self) -> list[str]:
        return [t for t in (self.duplicates, *self.dangling.values()) if t is not None]


def referenced_columns(table: str) -> list[str]:
    """Columns of ``table`` that foreign keys of the canonical tables point at."""
    columns = {
        fk.ref_column
        for schema in TABLES.values()
        for fk in schema.foreign_keys
        if fk.table == table
    }
    return sorted(columns)


def clean_keys_table(table: str, column: str) -> str:
    return f"keys_{table}__{column}"


def quarantined_keys_table(table: str, column: str) -> str:
    return f"quarantined_keys_{table}__{column}"


class _Numbers:
    """The non-null values of a numeric column over all batches, in one preallocated array
    (8 bytes a row): NumPy sorts it far faster than hashing millions of distinct values."""

    def __init__(self, rows: int, dtype: type[np.integer]) -> None:
        self._values = np.empty(rows, dtype=dtype)
        self._filled = 0

    def add(self, array: pa.Array) -> None:
        if array.null_count:
            array = pc.drop_null(array)
        values = array.to_numpy(zero_copy_only=False)
        self._values[self._filled : self._filled + len(values)] = values
        self._filled += len(values)

    def values(self) -> np.ndarray:
        return self._values[: self._filled]


class _Distinct:
    """The distinct non-null values of a column of any type (hashed batch by batch)."""

    def __init__(self) -> None:
        self._parts: list[pa.Array] = []

    def add(self, array: pa.Array) -> None:
        self._parts.append(pc.unique(pc.drop_null(array)))

    def values(self) -> pa.Array | None:
        return pc.unique(pa.chunked_array(self._parts)) if self._parts else None


def scan_keys(
    con: duckdb.DuckDBPyConnection, view: str, schema: TableSchema, failing: str, rows: int
) -> KeyScan:
    """Run the pre-pass over ``view``. ``failing`` is a SQL predicate TRUE for a row breaking a
    row-level rule; ``rows`` is the table's row count (from the footers), to size the arrays
    (8 bytes a row for the key hashes and for each integer foreign key). The referenced
    tables' clean key tables must exist (see :func:`register_reference_keys`)."""
    keys = [ident(c) for c in schema.primary_key]
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    items = [
        f"CASE WHEN {not_null} THEN hash({', '.join(keys)}) END AS _h",
        f"({failing}) AS _failing",
        *(f"{ident(fk.column)} AS _fk{i}" for i, fk in enumerate(schema.foreign_keys)),
    ]
    reader = con.sql(f"SELECT {', '.join(items)} FROM {view}").to_arrow_reader(BATCH_ROWS)
    hashes = _Numbers(rows, np.uint64)
    failing_rows = 0
    used: list[_Numbers | _Distinct] = [
        _Numbers(rows, np.int64)
        if pa.types.is_integer(schema.column(fk.column).type)
        else _Distinct()
        for fk in schema.foreign_keys
    ]
    with reader:  # closing it releases the connection for the next statement
        for batch in reader:
            hashes.add(batch.column("_h"))
            failing_rows += int(pc.sum(batch.column("_failing")).as_py() or 0)
            for i, values in enumerate(used):
                values.add(batch.column(f"_fk{i}"))
    duplicates = _duplicates(con, view, schema, hashes.values())
    dangling = {
        fk: _dangling(con, schema.name, fk, _unique(values))
        for fk, values in zip(schema.foreign_keys, used, strict=True)
    }
    return KeyScan(failing_rows, duplicates, dangling)


def _unique(values: _Numbers | _Distinct) -> pa.Array | None:
    if isinstance(values, _Numbers):
        numbers = values.values()
        return pa.array(_sorted_unique(numbers)) if numbers.size else None
    return values.values()


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Distinct values by sorting in place (``np.unique`` hashes in NumPy 2, which measured
    about ten times slower on tens of millions of ids)."""
    values.sort()
    first = np.empty(values.size, dtype=bool)
    first[:1] = True
    np.not_equal(values[1:], values[:-1], out=first[1:])
    return values[first]


def _duplicates(
    con: duckdb.DuckDBPyConnection, view: str, schema: TableSchema, hashes: np.ndarray
) -> str | None:
    """The duplicated keys, from ``hashes`` (every non-null key's hash; sorted here in place).
    Keys whose hash repeats are grouped exactly, so a hash collision is never reported as a
    duplicate. Sorting 64-bit hashes in NumPy is far cheaper than a hash aggregate over
    millions of distinct string keys."""
    hashes.sort()
    repeated = _sorted_unique(hashes[1:][hashes[1:] == hashes[:-1]])
    if repeated.size == 0:
        return None
    keys = [ident(c) for c in schema.primary_key]
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    candidates = f"duplicate_hashes_{schema.name}"
    con.register(candidates, pa.table({"_h": pa.array(repeated, pa.uint64())}))
    table = f"duplicates_{schema.name}"
    selected = ", ".join(f"{k} AS _k{i}" for i, k in enumerate(keys))
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {selected}, count(*) AS _n "
            f"FROM {view} WHERE {not_null} AND hash({', '.join(keys)}) IN "
            f"(SELECT _h FROM {candidates}) GROUP BY ALL HAVING count(*) > 1"
        )
    finally:
        con.unregister(candidates)
    if _count(con, table) == 0:
        con.execute(f"DROP TABLE {table}")
        return None
    return table


def _dangling(
    con: duckdb.DuckDBPyConnection, table: str, fk: ForeignKey, values: pa.Array | None
) -> str | None:
    """The ``values`` (distinct, of ``fk.column``) absent from the referenced clean table, with
    ``_quarantined`` saying whether the referenced row was refused; None if there are none."""
    if values is None or len(values) == 0:
        return None
    used = f"used_{table}__{fk.column}"
    con.register(used, pa.table({"_key": values}))
    dangling = f"dangling_{table}__{fk.column}"
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {dangling} AS "
            "SELECT used._key, refused._key IS NOT NULL AS _quarantined "
            f"FROM {used} used "
            f"ANTI JOIN {clean_keys_table(fk.table, fk.ref_column)} clean "
            "ON used._key = clean._key "
            f"LEFT JOIN {quarantined_keys_table(fk.table, fk.ref_column)} refused "
            "ON used._key = refused._key"
        )
    finally:
        con.unregister(used)
    if _count(con, dangling) == 0:
        con.execute(f"DROP TABLE {dangling}")
        return None
    return dangling


def register_reference_keys(
    con: duckdb.DuckDBPyConnection, table: str, clean_dir: Path, refused: str
) -> None:
    """Key tables for the foreign keys pointing at ``table``: the values in its clean output
    (``_key``), and the values of its refused rows (to explain a cascade). ``refused`` is the
    temp table of refused rows, holding ``ref__<column>`` for every referenced column."""
    glob = string_literal(str(clean_dir / "**" / "*.parquet"))
    for column in referenced_columns(table):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {clean_keys_table(table, column)} AS "
            f"SELECT DISTINCT {ident(column)} AS _key FROM read_parquet({glob})"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {quarantined_keys_table(table, column)} AS "
            f"SELECT DISTINCT {ident('ref__' + column)} AS _key FROM {refused} "
            f"WHERE {ident('ref__' + column)} IS NOT NULL"
        )


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return scalar(con, f"SELECT count(*) FROM {table}")
