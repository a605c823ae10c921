"""Writing a clean table in the canonical Arrow schema (events partitioned by ``event_date``,
which is only the folder name), with as little work as the raw files allow:

- a canonical file (canonical schema, in its clean place) without a refused row is copied byte
  for byte;
- a canonical file with refused rows is read, the refused rows are dropped by row number, and
  the rest is written to the same place (files in parallel);
- every other file (types that needed a cast, extra columns, not partitioned) is rewritten from
  the typed view through DuckDB.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from persona.schemas import TableSchema
from persona.validation.rules import VIEW, Check, joins_sql, refused_sql
from persona.validation.source import PARTITION_SOURCE, SOURCE_FILE, RawFile
from persona.validation.sql import ident, scalar, string_literal, utc_date

#: Rows per Arrow batch pulled from DuckDB while rewriting (bounded memory, few Python calls).
BATCH_ROWS = 1_000_000


def parquet_options(schema: TableSchema) -> dict[str, Any]:
    """Writer options for clean files: zstd, and dictionary encoding only for text columns
    other than the primary key. Trying a dictionary on unique ids, timestamps or amounts gains
    nothing and made writing about 1.5x slower (measured on the 52M-event benchmark)."""
    text = [
        c.name
        for c in schema.columns
        if c.name not in schema.primary_key
        and (pa.types.is_string(c.type) or pa.types.is_list(c.type))
    ]
    return {"compression": "zstd", "use_dictionary": text}


def copy_files(files: list[RawFile], destination: Path) -> None:
    """Copy files to the same relative place under ``destination``."""
    for raw_file in files:
        target = destination / raw_file.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw_file.path, target)


def filter_files(
    refused_rows: dict[RawFile, list[int]], schema: TableSchema, destination: Path
) -> None:
    """Write each canonical file without its refused rows (row numbers from 0) to the same
    relative place under ``destination``. Files are independent, so they go in parallel
    (Arrow releases the GIL while decoding and encoding)."""
    options = parquet_options(schema)

    def rewrite(raw_file: RawFile, rows: list[int]) -> None:
        # The file is canonical, so it reads as the canonical schema; one thread per file.
        table = pq.ParquetFile(raw_file.path).read(use_threads=False)
        keep = np.ones(table.num_rows, dtype=bool)
        keep[rows] = False
        if not keep.any():
            return
        target = destination / raw_file.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pa.array(keep)), target, **options)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done in [pool.submit(rewrite, f, rows) for f, rows in refused_rows.items()]:
            done.result()


def clean_rows_query(
    schema: TableSchema, view: str, checks: list[Check], files: list[RawFile] | None
) -> str:
    """The passing rows of ``files`` (None: of all files) in canonical columns, plus the
    partition date (UTC date of the partition source timestamp) for a partitioned table."""
    items = [f"{VIEW}.{ident(c)}" for c in schema.column_names]
    if schema.partition_by is not None:
        day = utc_date(f"{VIEW}.{ident(PARTITION_SOURCE)}")
        items.append(f"{day} AS {ident(schema.partition_by)}")
    where = f"NOT ({refused_sql(checks)})"
    if files is not None:
        listed = ", ".join(string_literal(str(f.path)) for f in files)
        where = f"{VIEW}.{SOURCE_FILE} IN ({listed}) AND {where}"
    return f"SELECT {', '.join(items)} FROM {view} {VIEW} {joins_sql(checks)} WHERE {where}"


def rewrite_rows(
    con: duckdb.DuckDBPyConnection,
    query: str,
    schema: TableSchema,
    destination: Path,
    *,
    basename: str,
) -> None:
    """Stream the rows of ``query`` (canonical columns, then ``partition_by`` as a DATE for a
    partitioned table) into Parquet files named ``<basename>-<i>.parquet`` under ``destination``,
    in the canonical Arrow schema."""
    canonical = schema.arrow_schema()
    partitioning = None
    stream_schema = canonical
    if schema.partition_by is not None:
        key = pa.field(schema.partition_by, pa.date32(), nullable=False)
        stream_schema = canonical.append(key)
        partitioning = ds.partitioning(pa.schema([key]), flavor="hive")
    reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
    options = parquet_options(schema)

    def batches() -> Iterator[pa.RecordBatch]:
        # DuckDB marks every column nullable and names list items differently; the values are
        # already canonical (refused rows were filtered out), so this only relabels types.
        for batch in reader:
            if batch.num_rows:
                columns = [
                    column.cast(field.type)
                    for column, field in zip(batch.columns, stream_schema, strict=True)
                ]
                yield pa.RecordBatch.from_arrays(columns, schema=stream_schema)

    with reader:  # closing it releases the connection for the next statement
        ds.write_dataset(
            pa.RecordBatchReader.from_batches(stream_schema, batches()),
            destination,
            format="parquet",
            partitioning=partitioning,
            basename_template=f"{basename}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            file_options=ds.ParquetFileFormat().make_write_options(**options),
            max_open_files=4096,
            max_rows_per_group=1 << 20,
            min_rows_per_group=1 << 16,
            create_dir=True,
        )


def ensure_readable(schema: TableSchema, destination: Path) -> None:
    """Give a table with no clean row one empty file, so readers find the table and its schema."""
    destination.mkdir(parents=True, exist_ok=True)
    if not any(destination.rglob("*.parquet")):
        pq.write_table(schema.arrow_schema().empty_table(), destination / "part-empty.parquet")


def count_rows(con: duckdb.DuckDBPyConnection, destination: Path) -> int:
    """Rows in all Parquet files under ``destination`` (from the footers)."""
    glob = str(destination / "**" / "*.parquet")
    return scalar(con, "SELECT sum(num_rows) FROM parquet_file_metadata(?)", [glob])
