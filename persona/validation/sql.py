"""Small helpers that spell DuckDB SQL: identifiers, literals, canonical types, and how a value
is written inside a human-readable reason."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import duckdb
import pyarrow as pa


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def string_literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def literal(value: str | int | float | bool | datetime) -> str:
    """A SQL literal for a value taken from a schema (allowed values, bounds) or for ``now``."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return string_literal(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"now: {value!r} has no time zone; pass an aware datetime")
        return f"TIMESTAMPTZ {string_literal(value.isoformat())}"
    raise TypeError(f"no SQL literal for {type(value).__name__} value {value!r}")


def literal_list(values: Iterable[str | int]) -> str:
    """``(v1, v2, ...)`` for an ``IN`` predicate."""
    return "(" + ", ".join(literal(v) for v in values) + ")"


def duckdb_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type a canonical Arrow type is read as; spelled as ``str(DuckDBPyType)``."""
    if pa.types.is_list(arrow_type):
        return duckdb_type(arrow_type.value_type) + "[]"
    if pa.types.is_timestamp(arrow_type):
        if arrow_type.tz is None:
            return "TIMESTAMP"
        if arrow_type.tz.upper() not in ("UTC", "+00:00"):
            raise ValueError(f"canonical timestamps are UTC, not {arrow_type.tz}")
        return "TIMESTAMP WITH TIME ZONE"
    names = {
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.string(): "VARCHAR",
        pa.bool_(): "BOOLEAN",
        pa.date32(): "DATE",
    }
    try:
        return names[arrow_type]
    except KeyError:
        raise ValueError(f"no DuckDB type for canonical type {arrow_type}") from None


def shown(expr: str, arrow_type: pa.DataType) -> str:
    """A VARCHAR expression showing the value of ``expr`` in a reason: strings quoted like
    Python's repr, timestamps as ``YYYY-MM-DD HH:MM:SS`` (UTC), lists as ``['a', 'b']``."""
    if pa.types.is_string(arrow_type):
        value = f"'''' || {expr} || ''''"
    elif pa.types.is_timestamp(arrow_type):
        value = f"strftime({expr}, '%Y-%m-%d %H:%M:%S')"
    elif pa.types.is_list(arrow_type):
        element = shown("element", arrow_type.value_type)
        value = (
            f"'[' || array_to_string(list_transform({expr}, "
            f"lambda element: coalesce({element}, 'null')), ', ') || ']'"
        )
    else:
        value = f"CAST({expr} AS VARCHAR)"
    return f"coalesce({value}, 'null')"


def python_list(values: Iterable[str | int]) -> str:
    """How a list of allowed values is written in a reason: ``['a', 'b']``."""
    return "[" + ", ".join(repr(v) for v in values) + "]"


def number(value: float) -> str:
    """A bound as written in a reason: ``1`` rather than ``1.0``."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def utc_date(expr: str) -> str:
    """The UTC calendar date of a TIMESTAMPTZ expression. Computed from the epoch instead of
    ``CAST(... AS DATE)``, which goes through ICU time zone rules and costs several times more."""
    return f"(DATE '1970-01-01' + CAST(floor(epoch_us({expr}) / 86400000000) AS INTEGER))"


def scalar(
    con: duckdb.DuckDBPyConnection, query: str, parameters: list[object] | None = None
) -> int:
    """The single integer a query returns. ``fetchall`` rather than ``fetchone``: DuckDB keeps
    a result open (and the connection busy) until a fetch has drained it."""
    rows = con.execute(query, parameters or []).fetchall()
    if len(rows) != 1 or len(rows[0]) != 1:
        raise RuntimeError(f"expected one value from {query!r}, got {rows!r}")
    return int(rows[0][0] or 0)
