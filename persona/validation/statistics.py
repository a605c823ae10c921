"""What Parquet footers say about a column: minimum, maximum and null count over all row groups.

A rule the statistics already prove (no nulls in any row group, every value within the bounds,
the latest timestamp not after ``now``) needs no row-by-row predicate. Only numbers and
timestamps stored in exactly the canonical type are used: string statistics may be truncated by
writers, and a value of another type is checked after its cast anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from persona.schemas import TableSchema

Bound = int | float | datetime


@dataclass(frozen=True)
class ColumnStats:
    """Footer statistics of one column. ``minimum``/``maximum`` are None where some row group
    did not record them; ``null_count`` likewise. ``empty``: no non-null value at all."""

    minimum: Bound | None
    maximum: Bound | None
    null_count: int | None
    empty: bool = False

    def within(self, low: float | None, high: float | None) -> bool:
        """Every value is >= ``low`` and <= ``high`` (None: no bound)."""
        if self.empty:
            return True
        minimum, maximum = self.minimum, self.maximum
        if not isinstance(minimum, int | float) or not isinstance(maximum, int | float):
            return False
        return (low is None or minimum >= low) and (high is None or maximum <= high)

    def only(self, allowed: tuple[str | int, ...]) -> bool:
        """Every value is one of ``allowed`` (integers: the whole span between minimum and
        maximum must be allowed)."""
        if self.empty:
            return True
        low, high = self.minimum, self.maximum
        if not isinstance(low, int) or not isinstance(high, int):
            return False
        return high - low < len(allowed) and all(v in allowed for v in range(low, high + 1))

    def not_after(self, moment: datetime) -> bool:
        """Every timestamp is at or before ``moment``."""
        if self.empty:
            return True
        return isinstance(self.maximum, datetime) and self.maximum <= moment

    def on_utc_date(self, day: date) -> bool:
        """Every timestamp falls on ``day`` in UTC."""
        if self.empty:
            return True
        low, high = self.minimum, self.maximum
        if not isinstance(low, datetime) or not isinstance(high, datetime):
            return False
        return low.astimezone(UTC).date() == day == high.astimezone(UTC).date()


_UNKNOWN = ColumnStats(None, None, None)


def _usable(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or (pa.types.is_timestamp(arrow_type) and arrow_type.tz is not None)
    )


def file_statistics(
    metadata: pq.FileMetaData, arrow_schema: pa.Schema, schema: TableSchema
) -> dict[str, ColumnStats]:
    """Statistics of the canonical columns of one file; a column stored in another type than
    the canonical one, or nested, keeps only its null count (or nothing)."""
    positions = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    result: dict[str, ColumnStats] = {}
    for spec in schema.columns:
        index = arrow_schema.get_field_index(spec.name)
        if index < 0 or spec.name not in positions:
            result[spec.name] = _UNKNOWN
            continue
        use_range = arrow_schema.field(index).type == spec.type and _usable(spec.type)
        column = positions[spec.name]
        groups = []
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            stats = row_group.column(column).statistics
            if stats is None:
                groups.append(_UNKNOWN)
                continue
            nulls = stats.null_count if stats.has_null_count else None
            bounds = _bounds(stats) if use_range else None
            if bounds is not None:
                groups.append(ColumnStats(bounds[0], bounds[1], nulls))
            elif nulls is not None and nulls == row_group.num_rows:
                groups.append(ColumnStats(None, None, nulls, empty=True))
            else:
                groups.append(ColumnStats(None, None, nulls))
        result[spec.name] = merge(groups)
    return result


def _bounds(stats: pq.Statistics) -> tuple[Bound, Bound] | None:
    """Minimum and maximum as Python values; None when absent or not representable (a timestamp
    beyond year 9999 has no ``datetime``: the rule is then checked row by row)."""
    if not stats.has_min_max:
        return None
    try:
        return stats.min, stats.max
    except (ValueError, OverflowError, pa.ArrowException):
        return None


def merge(parts: Iterable[ColumnStats]) -> ColumnStats:
    """Statistics of a union of row groups or files."""
    minimum: Bound | None = None
    maximum: Bound | None = None
    nulls: int | None = 0
    range_known = True
    for part in parts:
        nulls = None if nulls is None or part.null_count is None else nulls + part.null_count
        if part.empty:
            continue
        if part.minimum is None or part.maximum is None:
            range_known = False
            continue
        # One column's bounds all have one type (numbers or timestamps), so they compare.
        low: Any = part.minimum
        high: Any = part.maximum
        minimum = low if minimum is None else min(minimum, low)
        maximum = high if maximum is None else max(maximum, high)
    if not range_known:
        return ColumnStats(None, None, nulls)
    return ColumnStats(minimum, maximum, nulls, empty=minimum is None)
