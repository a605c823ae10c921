"""How a raw column is read as its canonical type.

A raw column whose DuckDB type already is the canonical one is used as is. A column of another
type that can hold the same values (an int32 id, a naive timestamp, numbers written as text) is
read with a cast that yields NULL where a value does not convert, so the bad value is reported on
its row instead of failing the whole table. A type that cannot hold the canonical values at all
(a struct where a string belongs, a boolean where a timestamp belongs) is a :class:`SchemaError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from duckdb.sqltypes import DuckDBPyType

from persona.schemas import ColumnSpec
from persona.validation.sql import duckdb_type, ident

_INTEGER_IDS = frozenset(
    {
        "tinyint",
        "smallint",
        "integer",
        "bigint",
        "hugeint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "uhugeint",
    }
)
_FLOAT_IDS = frozenset({"float", "double", "decimal"})
_TIMESTAMP_IDS = frozenset(
    {
        "timestamp",
        "timestamp with time zone",
        "timestamp_s",
        "timestamp_ms",
        "timestamp_ns",
        "date",
    }
)
#: Integers written as text: an optional sign and digits only. DuckDB's own VARCHAR -> INTEGER
#: cast would round '1.5' to 2, which would change the value instead of refusing it.
_INTEGER_TEXT = r"'^\s*[+-]?[0-9]+\s*$'"

RAW_PREFIX = "__raw__"


@dataclass(frozen=True)
class ColumnRead:
    """How one canonical column is read from the raw files.

    ``raw`` is the column as stored (for null checks, cast failures and the quarantined row's
    values); ``typed`` is the expression giving the canonical type (NULL where a cast failed).
    """

    spec: ColumnSpec
    raw_type: str
    typed: str

    @property
    def needs_cast(self) -> bool:
        return self.typed != ident(self.spec.name)

    @property
    def raw(self) -> str:
        """The raw column's name in the typed view (the canonical name when no cast is needed)."""
        return ident(RAW_PREFIX + self.spec.name) if self.needs_cast else ident(self.spec.name)

    @property
    def target_type(self) -> str:
        return duckdb_type(self.spec.type)


def plan_column_read(spec: ColumnSpec, raw_type: DuckDBPyType) -> ColumnRead | str:
    """The read plan of ``spec`` from a raw column of ``raw_type``, or why it cannot be read.

    The returned string names the raw and the canonical type; the caller gathers them into one
    :class:`SchemaError` for the table.
    """
    target = duckdb_type(spec.type)
    column = ident(spec.name)
    if str(raw_type) == target:
        return ColumnRead(spec, str(raw_type), column)
    typed = _cast_expression(spec.type, target, column, raw_type)
    if typed is None:
        return f"{spec.name} is {raw_type}, which cannot be read as {spec.type}"
    return ColumnRead(spec, str(raw_type), typed)


def _cast_expression(
    canonical: pa.DataType, target: str, column: str, raw_type: DuckDBPyType
) -> str | None:
    """A SQL expression turning ``column`` (of ``raw_type``) into ``target``, NULL where a value
    does not convert; None when the raw type cannot hold canonical values at all."""
    kind = raw_type.id
    if kind == "null":
        return f"CAST(NULL AS {target})"
    if pa.types.is_integer(canonical):
        if kind in _INTEGER_IDS:
            return f"TRY_CAST({column} AS {target})"
        if kind in _FLOAT_IDS:
            # 1.0 is the integer 1; 1.5 is not an integer and must be refused, not rounded.
            return f"CASE WHEN {column} = trunc({column}) THEN TRY_CAST({column} AS {target}) END"
        if kind == "varchar":
            return (
                f"CASE WHEN regexp_matches({column}, {_INTEGER_TEXT}) "
                f"THEN TRY_CAST(trim({column}) AS {target}) END"
            )
        return None
    if pa.types.is_floating(canonical):
        if kind in _INTEGER_IDS or kind in _FLOAT_IDS or kind == "varchar":
            return f"TRY_CAST({column} AS {target})"
        return None
    if pa.types.is_string(canonical):
        if kind in _INTEGER_IDS or kind in ("uuid", "enum"):
            return f"CAST({column} AS VARCHAR)"
        return None
    if pa.types.is_boolean(canonical):
        if kind == "varchar":
            return f"TRY_CAST({column} AS BOOLEAN)"
        if kind in _INTEGER_IDS:
            return f"CASE WHEN {column} = 1 THEN TRUE WHEN {column} = 0 THEN FALSE END"
        return None
    if pa.types.is_timestamp(canonical):
        # Naive timestamps and dates are taken as UTC (the connection's time zone is UTC).
        if kind in _TIMESTAMP_IDS or kind == "varchar":
            return f"TRY_CAST({column} AS {target})"
        return None
    if pa.types.is_list(canonical):
        if kind == "list" and raw_type.child.id in (
            {"varchar", "null", "uuid", "enum"} | _INTEGER_IDS
        ):
            return f"TRY_CAST({column} AS {target})"
        return None
    return None


def shown_raw(read: ColumnRead) -> str:
    """A VARCHAR expression showing the raw value in a reason (text quoted, the rest as is)."""
    if read.raw_type == "VARCHAR":
        return f"coalesce('''' || {read.raw} || '''', 'null')"
    return f"coalesce(CAST({read.raw} AS VARCHAR), 'null')"
