"""Errors of the validation step."""

from __future__ import annotations


class SchemaError(ValueError):
    """A raw table cannot be validated at all: a required table or column is missing, or a
    column's type cannot be read as the canonical type. Raised before any output is written."""


class MissingTableError(SchemaError):
    """A required table has no raw folder (or no Parquet file in it)."""


class ValidationInvariantError(RuntimeError):
    """The validator's own bookkeeping is wrong (rows in != clean + quarantined): a bug, not bad
    data. Raised instead of writing a result that would drop or invent rows."""
