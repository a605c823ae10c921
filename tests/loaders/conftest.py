"""Shared fixtures of the loader tests: where the real data is, exact canonical schemas, and
the project's validation step run on every loader's output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from persona.layout import DataLayout
from persona.schemas import TABLES
from persona.validation import validate_dataset

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
    """Assert every part of raw/<table> has exactly the canonical Arrow schema and return the
    table. The rules on the values are validation's job: see :func:`check_passes_validation`."""
    schema = TABLES[table]
    folder = DataLayout(out_dir).raw_table(table)
    expected = schema.arrow_schema()
    for part in sorted(folder.rglob("*.parquet")):
        actual = pq.read_schema(part).remove_metadata()
        assert actual.equals(expected), f"{part}: schema {actual} != {expected}"
    data = read_raw(out_dir, table)
    assert data.schema.equals(expected), f"{table}: {data.schema}"
    return data


def check_passes_validation(out_dir: Path) -> None:
    """The one validation step every source passes through refuses no row of the loader's
    output: types, nulls, allowed values, ranges, keys, references, row rules, partitions."""
    report = validate_dataset(out_dir, progress=False)
    refused = {
        name: [(c.rule, c.field, c.rows) for c in table.rule_counts]
        for name, table in report.tables.items()
        if table.rows_quarantined
    }
    assert report.passed, refused


@pytest.fixture(scope="session")
def conforms() -> Callable[[Path, str], pa.Table]:
    return check_conforms


@pytest.fixture(scope="session")
def passes_validation() -> Callable[[Path], None]:
    return check_passes_validation


@pytest.fixture(scope="session")
def raw() -> Callable[[Path, str], pa.Table]:
    return read_raw
