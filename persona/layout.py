"""Where things live under a data directory, and how canonical tables are written.

```
DIR/raw/<table>/            what a source (simulator or loader) produced
DIR/clean/<table>/          what passed validation: the only input of feature building
DIR/quarantine/<table>.parquet  rows refused by validation, with field and reason
DIR/validation_report.json
DIR/features/<view>/        offline feature tables (DuckDB-built, read by Feast)
DIR/ground_truth/           the simulator's hidden preference model (simulator only)
```
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from persona.schemas import TABLES, TableSchema

_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def clean(self) -> Path:
        return self.root / "clean"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth"

    @property
    def validation_report(self) -> Path:
        return self.root / "validation_report.json"

    def raw_table(self, table: str) -> Path:
        return self.raw / table

    def clean_table(self, table: str) -> Path:
        return self.clean / table

    def feature_table(self, view: str) -> Path:
        return self.features / view


def parquet_glob(table_dir: Path) -> str:
    """A glob DuckDB reads every Parquet file of a table folder with (partitioned or not)."""
    return str(table_dir / "**" / "*.parquet")


def conform(table: pa.Table, schema: TableSchema) -> pa.Table:
    """Order and cast columns to the canonical schema; a missing column is an error."""
    missing = [c for c in schema.column_names if c not in table.column_names]
    if missing:
        raise ValueError(f"{schema.name}: missing required column(s) {', '.join(missing)}")
    arrays = [table.column(c.name).cast(c.type) for c in schema.columns]
    return pa.Table.from_arrays(arrays, schema=schema.arrow_schema())


class TableWriter:
    """Appends batches of one canonical table as Parquet parts under ``table_dir``.

    Event logs are split into ``event_date=YYYY-MM-DD`` partitions. Parts are numbered so
    several writes never overwrite each other, and an existing table is replaced on open.
    """

    def __init__(self, table_dir: Path, schema: TableSchema, *, replace: bool = True) -> None:
        self.table_dir = table_dir
        self.schema = schema
        self._part = 0
        self.rows_written = 0
        if replace and table_dir.exists():
            shutil.rmtree(table_dir)
        table_dir.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table) -> None:
        table = conform(table, self.schema)
        if table.num_rows == 0:
            return
        if self.schema.partition_by is None:
            self._write_part(self.table_dir, table)
        else:
            self._write_partitioned(table)
        self.rows_written += table.num_rows

    def _write_partitioned(self, table: pa.Table) -> None:
        assert self.schema.partition_source is not None
        days = pc.cast(table.column(self.schema.partition_source), pa.date32())
        table = table.append_column("_date", days).sort_by("_date")
        day_numbers = table.column("_date").cast(pa.int32()).to_numpy()
        # Sorted, so each date is one contiguous run: slice instead of filtering per date.
        starts = np.concatenate(([0], np.flatnonzero(np.diff(day_numbers)) + 1))
        ends = np.append(starts[1:], len(day_numbers))
        table = table.drop_columns(["_date"])
        for start, end in zip(starts, ends, strict=True):
            date = _EPOCH + timedelta(days=int(day_numbers[start]))
            folder = self.table_dir / f"{self.schema.partition_by}={date.isoformat()}"
            self._write_part(folder, table.slice(start, end - start))

    def _write_part(self, folder: Path, table: pa.Table) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"part-{self._part:05d}.parquet", compression="zstd")
        self._part += 1


def write_table(table_dir: Path, table: pa.Table, schema: TableSchema) -> int:
    """Write a whole table at once (replacing what was there); returns rows written."""
    writer = TableWriter(table_dir, schema)
    writer.write(table)
    return writer.rows_written


def schema_for(table: str) -> TableSchema:
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"unknown table {table!r}; known: {', '.join(TABLES)}") from None
