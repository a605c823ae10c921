"""What a source wrote for one table: its Parquet files, their row counts, and how each canonical
column is read from them. Everything here reads only file footers and DuckDB's bound schema, so
the checks that stop a run (missing table or column, unreadable type) cost no data scan."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import cast

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from persona.schemas import EVENTS, TableSchema
from persona.validation.casting import RAW_PREFIX, ColumnRead, plan_column_read
from persona.validation.errors import MissingTableError, SchemaError
from persona.validation.sql import ident, string_literal
from persona.validation.statistics import ColumnStats, file_statistics, merge

#: Names DuckDB gives the file each row came from and its row number inside that file.
SOURCE_FILE = "__source_file"
SOURCE_ROW = "__source_row"
#: The timestamp a partitioned table's ``event_date`` is derived from (as layout.TableWriter does).
PARTITION_SOURCE = cast(str, EVENTS.partition_source)

_PARTITION_DIR = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class RawFile:
    """One Parquet file of a raw table. ``canonical`` means its Arrow schema is exactly the
    canonical one and it sits where the clean layout would put it, so once none of its rows is
    refused it can be copied to the clean table byte for byte instead of being rewritten."""

    path: Path
    relative: str
    rows: int
    canonical: bool
    #: The file sits in a ``<partition_by>=YYYY-MM-DD`` folder and its footer statistics put
    #: every partition-source timestamp on that UTC date.
    partition_proven: bool = False


@dataclass(frozen=True)
class RawTable:
    """A raw table ready to validate: files, column read plans, extra columns."""

    schema: TableSchema
    directory: Path
    files: tuple[RawFile, ...]
    reads: tuple[ColumnRead, ...]
    #: Raw type of the hive partition column, when the files sit in partition folders.
    partition_type: str | None
    extra_columns: tuple[str, ...]
    ignored_files: tuple[str, ...]
    #: Footer statistics per canonical column over all files.
    stats: dict[str, ColumnStats]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def partition_proven(self) -> bool:
        """Every file's rows lie on its partition folder's date (by footer statistics)."""
        return all(f.partition_proven for f in self.files)

    def read(self, column: str) -> ColumnRead:
        for read in self.reads:
            if read.spec.name == column:
                return read
        raise KeyError(f"{self.schema.name} has no column {column!r}")

    def relation(self) -> str:
        """A ``read_parquet`` over exactly the discovered files."""
        return parquet_relation([f.path for f in self.files], self.schema)

    def typed_view_sql(self) -> str:
        """SELECT giving every canonical column in its canonical type under its own name, the raw
        value of every cast column as ``__raw__<name>``, the raw partition value and where each
        row came from (file and row number)."""
        items = [f"{read.typed} AS {ident(read.spec.name)}" for read in self.reads]
        items += [
            f"{ident(read.spec.name)} AS {read.raw}" for read in self.reads if read.needs_cast
        ]
        if self.partition_type is not None:
            assert self.schema.partition_by is not None
            key = self.schema.partition_by
            items.append(f"{ident(key)} AS {ident(RAW_PREFIX + key)}")
        items += [f"filename AS {SOURCE_FILE}", f"file_row_number AS {SOURCE_ROW}"]
        return f"SELECT {', '.join(items)} FROM {self.relation()}"


def parquet_relation(paths: list[Path], schema: TableSchema) -> str:
    """``read_parquet`` of some files of ``schema``'s table, with file names and row numbers;
    hive partition folders are read only for partitioned tables."""
    files = "[" + ", ".join(string_literal(str(p)) for p in paths) + "]"
    hive = "true" if schema.partition_by is not None else "false"
    return (
        f"read_parquet({files}, hive_partitioning={hive}, union_by_name=true, "
        "filename=true, file_row_number=true)"
    )


def discover_raw_table(
    con: duckdb.DuckDBPyConnection, directory: Path, schema: TableSchema, *, required: bool
) -> RawTable | None:
    """Inspect a raw table folder; None when an optional table has no files.

    Raises :class:`MissingTableError` for a required table without files and
    :class:`SchemaError` naming every missing or unreadable column.
    """
    paths, ignored = _parquet_files(directory)
    if not paths:
        if required:
            raise MissingTableError(
                f"{schema.name}: required table has no Parquet files under {directory}"
            )
        return None
    files, stats = _inspect_files(directory, paths, schema)
    try:
        bound = con.sql(f"SELECT * FROM {parquet_relation(paths, schema)} LIMIT 0")
    except duckdb.Error as error:
        raise SchemaError(f"{schema.name}: cannot read the raw files: {error}") from error
    raw_types = dict(zip(bound.columns, bound.types, strict=True))
    for virtual in ("filename", "file_row_number"):
        raw_types.pop(virtual, None)

    missing = [c for c in schema.column_names if c not in raw_types]
    if missing:
        raise SchemaError(
            f"{schema.name}: missing required column(s) {', '.join(missing)} in {directory}"
        )
    reads: list[ColumnRead] = []
    unreadable: list[str] = []
    for spec in schema.columns:
        plan = plan_column_read(spec, raw_types[spec.name])
        if isinstance(plan, str):
            unreadable.append(plan)
        else:
            reads.append(plan)
    if unreadable:
        raise SchemaError(f"{schema.name}: unreadable column type(s): {'; '.join(unreadable)}")

    partition_type = None
    if schema.partition_by is not None and schema.partition_by in raw_types:
        partition_type = str(raw_types[schema.partition_by])
    known = {*schema.column_names, schema.partition_by}
    extra = tuple(c for c in raw_types if c not in known)
    return RawTable(
        schema=schema,
        directory=directory,
        files=tuple(files),
        reads=tuple(reads),
        partition_type=partition_type,
        extra_columns=extra,
        ignored_files=tuple(ignored),
        stats=stats,
    )


def _parquet_files(directory: Path) -> tuple[list[Path], list[str]]:
    """Parquet files under ``directory``; hidden or ``_``-prefixed paths (``.tmp``,
    ``_SUCCESS``-style markers) are listed apart so the report can name them."""
    if not directory.is_dir():
        return [], []
    files: list[Path] = []
    ignored: list[str] = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(directory)
        if any(part.startswith((".", "_")) for part in relative.parts):
            ignored.append(relative.as_posix())
        elif path.suffix == ".parquet":
            files.append(path)
        else:
            ignored.append(relative.as_posix())
    return files, ignored


def _inspect_files(
    directory: Path, paths: list[Path], schema: TableSchema
) -> tuple[list[RawFile], dict[str, ColumnStats]]:
    """Row count, schema and column statistics of every file, read from the footers.

    Every file must hold every canonical column: reading files by name would otherwise fill the
    gap with NULLs, a silent default.
    """
    canonical_schema = schema.arrow_schema()

    def inspect(path: Path) -> tuple[RawFile, list[str], dict[str, ColumnStats]]:
        relative = path.relative_to(directory)
        try:
            metadata = pq.read_metadata(path)
            arrow_schema = metadata.schema.to_arrow_schema()
        except (OSError, pa.ArrowException) as error:
            raise SchemaError(
                f"{schema.name}: cannot read Parquet file {relative}: {error}"
            ) from error
        absent = [c for c in schema.column_names if arrow_schema.get_field_index(c) < 0]
        place = _clean_place(relative, schema)
        canonical = arrow_schema.equals(canonical_schema) and place is not False
        stats = file_statistics(metadata, arrow_schema, schema)
        partition_proven = False
        if isinstance(place, date) and PARTITION_SOURCE in stats:
            partition_proven = stats[PARTITION_SOURCE].on_utc_date(place)
        raw_file = RawFile(
            path, relative.as_posix(), metadata.num_rows, canonical, partition_proven
        )
        return raw_file, absent, stats

    # Footer parsing holds the GIL, so threads would not help.
    inspected = [inspect(path) for path in paths]
    missing: dict[str, list[str]] = {}
    for raw_file, absent, _ in inspected:
        for column in absent:
            missing.setdefault(column, []).append(raw_file.relative)
    if missing:
        where = "; ".join(
            f"{column} (in {len(files)} of {len(paths)} files, e.g. {files[0]})"
            for column, files in missing.items()
        )
        raise SchemaError(f"{schema.name}: missing required column(s) {where}")
    stats = {
        column: merge(file_stats[column] for _, _, file_stats in inspected)
        for column in schema.column_names
    }
    return [raw_file for raw_file, _, _ in inspected], stats


def _clean_place(relative: Path, schema: TableSchema) -> bool | date:
    """Whether a file sits where the clean layout puts it: directly in the table folder (True),
    or, for a partitioned table, in one ``<partition_by>=YYYY-MM-DD`` folder (that date)."""
    if schema.partition_by is None:
        return len(relative.parts) == 1
    if len(relative.parts) != 2:
        return False
    match = _PARTITION_DIR.match(relative.parts[0])
    if match is None or match["key"] != schema.partition_by:
        return False
    try:
        return date.fromisoformat(match["value"])
    except ValueError:
        return False
