"""Shared fixtures of the loader tests: where the real data is, and a canonical-table checker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from persona.layout import DataLayout
from persona.schemas import TABLES

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets (read in place); tests that need them skip if the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} does not exist")
    return SHARED_DATA


def read_raw(out_dir: Path, table: str) -> pa.Table:
    """All Parquet parts of raw/<table>, in a stable order, without the Hive partition column."""
    return _read_with_partition(out_dir, table).select(TABLES[table].column_names)


def _read_with_partition(out_dir: Path, table: str) -> pa.Table:
    folder = DataLayout(out_dir).raw_table(table)
    files = sorted(str(p) for p in folder.rglob("*.parquet"))
    assert files, f"raw/{table} has no Parquet files"
    dataset = ds.dataset(
        files, format="parquet", partitioning="hive", partition_base_dir=str(folder)
    )
    return dataset.to_table()


def check_conforms(out_dir: Path, table: str) -> pa.Table:
    """Assert raw/<table> obeys its TableSchema (types, nulls, allowed values, ranges, keys,
    row rules, no future timestamps, event_date partitions) and return it."""
    schema = TABLES[table]
    folder = DataLayout(out_dir).raw_table(table)
    expected = schema.arrow_schema()
    for part in sorted(folder.rglob("*.parquet")):
        actual = pq.read_schema(part).remove_metadata()
        assert actual.equals(expected), f"{part}: schema {actual} != {expected}"
    with_partition = _read_with_partition(out_dir, table)
    data = with_partition.select(schema.column_names)
    assert data.schema.equals(expected), f"{table}: {data.schema}"
    now = datetime.now(UTC)
    for spec in schema.columns:
        column = data.column(spec.name)
        if not spec.nullable:
            assert column.null_count == 0, f"{table}.{spec.name} has nulls"
        if spec.allowed is not None:
            values = set(pc.unique(column.drop_null()).to_pylist())
            assert values <= set(spec.allowed), f"{table}.{spec.name}: {values - set(spec.allowed)}"
        if spec.allowed_elements is not None:
            elements = set(pc.unique(pc.list_flatten(column)).to_pylist())
            assert elements <= set(spec.allowed_elements), f"{table}.{spec.name}: {elements}"
        if column.null_count < len(column) and spec.min_value is not None:
            assert pc.min(column).as_py() >= spec.min_value, f"{table}.{spec.name} below min"
        if column.null_count < len(column) and spec.max_value is not None:
            assert pc.max(column).as_py() <= spec.max_value, f"{table}.{spec.name} above max"
        if spec.not_in_future and column.null_count < len(column):
            assert pc.max(column).as_py() <= now, f"{table}.{spec.name} in the future"
    keys = data.group_by(list(schema.primary_key)).aggregate([([], "count_all")])
    assert keys.num_rows == data.num_rows, f"{table}: duplicated primary keys"
    with duckdb.connect() as con:
        con.register("t", data)
        for name, predicate, _ in schema.row_rules:
            broken = con.sql(f"SELECT count(*) FROM t WHERE NOT ({predicate})").fetchall()[0][0]
            assert broken == 0, f"{table}: {broken} rows break {name}"
    if schema.partition_by is not None:
        days = pc.cast(with_partition.column("event_timestamp"), pa.date32())
        folders = pc.cast(with_partition.column(schema.partition_by), pa.date32())
        assert pc.all(pc.equal(days, folders)).as_py(), f"{table}: rows in the wrong partition"
    return data


def check_references(out_dir: Path) -> None:
    """Every foreign key of every written table points at an existing row."""
    written = {t for t in TABLES if DataLayout(out_dir).raw_table(t).exists()}
    for name in written:
        table = read_raw(out_dir, name)
        for fk in TABLES[name].foreign_keys:
            assert fk.table in written, f"{name} refers to missing table {fk.table}"
            known = read_raw(out_dir, fk.table).column(fk.ref_column)
            values = table.column(fk.column).drop_null()
            dangling = pc.sum(pc.invert(pc.is_in(values, value_set=known)).cast(pa.int64()))
            assert (dangling.as_py() or 0) == 0, f"{name}.{fk.column}: dangling references"


@pytest.fixture(scope="session")
def conforms() -> Callable[[Path, str], pa.Table]:
    return check_conforms


@pytest.fixture(scope="session")
def references() -> Callable[[Path], None]:
    return check_references


@pytest.fixture(scope="session")
def raw() -> Callable[[Path, str], pa.Table]:
    return read_raw
