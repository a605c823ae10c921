"""Validation rules as SQL, generated from a :class:`~persona.schemas.TableSchema`.

Each rule kind of the schema (nullability, allowed values, ranges, keys, row rules, ...) has one
builder that turns it into :class:`Check` objects: a predicate that is TRUE exactly for the rows
breaking the rule, and a reason expression naming the field and the offending value. The engine
ORs the predicates to split clean from quarantined rows, so no table has hand-written SQL. A
builder marks its check ``proven_by`` when the Parquet footer statistics or the key pre-pass
already show that no row breaks it; such a check costs nothing per row.

Predicates run over the typed view of :mod:`persona.validation.source` (canonical names hold
canonical types) aliased ``v``; rules needing another table (duplicates, references) declare a
:class:`Join` whose columns never clash with canonical names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from persona.schemas import ForeignKey
from persona.validation.casting import RAW_PREFIX, shown_raw
from persona.validation.source import PARTITION_SOURCE, RawTable
from persona.validation.sql import (
    ident,
    literal,
    literal_list,
    number,
    python_list,
    shown,
    string_literal,
    utc_date,
)

VIEW = "v"


@dataclass(frozen=True)
class Join:
    """``LEFT JOIN table alias ON v.a = alias.b AND ...``; the joined table has unique keys, so
    the join never repeats a row. ``exposes`` are columns of the joined table a reason shows;
    they are selected as ``<alias>__<column>`` (see :meth:`exposed`)."""

    alias: str
    table: str
    on: tuple[tuple[str, str], ...]
    exposes: tuple[str, ...] = ()

    def exposed(self, column: str) -> str:
        """The name a reason refers to an exposed column by."""
        return ident(f"{self.alias}__{column}")

    def select_items(self) -> list[str]:
        return [f"{self.alias}.{ident(c)} AS {self.exposed(c)}" for c in self.exposes]

    def sql(self) -> str:
        condition = " AND ".join(
            f"{VIEW}.{ident(left)} = {self.alias}.{ident(right)}" for left, right in self.on
        )
        return f"LEFT JOIN {self.table} {self.alias} ON {condition}"


@dataclass(frozen=True)
class Check:
    """One rule on one field. ``failed`` is TRUE for a row breaking the rule (a NULL result is
    taken as passing: a NULL in a non-nullable column is the not_null rule's finding, not every
    rule's); ``reason`` is a VARCHAR expression, only evaluated for failing rows, over the typed
    view's columns and the joins' exposed columns (not the join aliases)."""

    rule: str
    field: str
    failed: str
    reason: str
    joins: tuple[Join, ...] = ()
    #: How the rule is known to hold for every row without evaluating it row by row:
    #: ``statistics`` (Parquet footers: no nulls, all values within bounds) or ``key pre-pass``
    #: (no duplicate key, no dangling reference). None: evaluated per row.
    proven_by: str | None = None

    @property
    def proven(self) -> bool:
        return self.proven_by is not None

    @property
    def failed_sql(self) -> str:
        return f"coalesce({self.failed}, FALSE)"


@dataclass(frozen=True)
class CheckContext:
    raw: RawTable
    now: datetime
    #: Temp table of duplicated primary keys (``_k0.._kn``, ``_n`` copies); None if there are none.
    duplicates: str | None
    #: Per foreign key, a temp table of the values found nowhere in the referenced clean table
    #: (``_key``, and ``_quarantined``: the referenced row was refused); None if there are none.
    dangling: Mapping[ForeignKey, str | None]


def _statistics(proven: bool) -> str | None:
    return "statistics" if proven else None


def _reason(field: str, *parts: str) -> str:
    """``'<field>: ' || part || part ...`` where parts are SQL VARCHAR expressions."""
    return " || ".join([string_literal(f"{field}: "), *parts])


def type_checks(ctx: CheckContext) -> list[Check]:
    """A value present in the raw file that does not convert to the canonical type."""
    checks = []
    for read in ctx.raw.reads:
        if read.needs_cast:
            name = read.spec.name
            checks.append(
                Check(
                    rule="type",
                    field=name,
                    failed=f"{read.raw} IS NOT NULL AND {ident(name)} IS NULL",
                    reason=_reason(
                        name,
                        shown_raw(read),
                        string_literal(f" cannot be read as {read.spec.type}"),
                    ),
                )
            )
    return checks


def not_null_checks(ctx: CheckContext) -> list[Check]:
    """A missing value in a column that is not nullable (judged on the raw value, so a failed
    cast is reported once, as a type problem)."""
    return [
        Check(
            rule="not_null",
            field=read.spec.name,
            failed=f"{read.raw} IS NULL",
            reason=string_literal(f"{read.spec.name}: null in a non-nullable column"),
            proven_by=_statistics(ctx.raw.stats[read.spec.name].null_count == 0),
        )
        for read in ctx.raw.reads
        if not read.spec.nullable
    ]


def allowed_checks(ctx: CheckContext) -> list[Check]:
    """A value outside the column's allowed values."""
    checks = []
    for read in ctx.raw.reads:
        spec = read.spec
        if spec.allowed is None:
            continue
        column = ident(spec.name)
        checks.append(
            Check(
                rule="allowed",
                field=spec.name,
                failed=f"{column} IS NOT NULL AND {column} NOT IN {literal_list(spec.allowed)}",
                reason=_reason(
                    spec.name,
                    shown(column, spec.type),
                    string_literal(f" not in allowed values {python_list(spec.allowed)}"),
                ),
                proven_by=_statistics(
                    not read.needs_cast and ctx.raw.stats[spec.name].only(spec.allowed)
                ),
            )
        )
    return checks


def allowed_element_checks(ctx: CheckContext) -> list[Check]:
    """A list element (or a null element) outside the allowed values of a list column."""
    checks = []
    for read in ctx.raw.reads:
        spec = read.spec
        if spec.allowed_elements is None:
            continue
        column = ident(spec.name)
        bad = (
            f"list_filter({column}, lambda element: element IS NULL "
            f"OR element NOT IN {literal_list(spec.allowed_elements)})"
        )
        checks.append(
            Check(
                rule="allowed_elements",
                field=spec.name,
                failed=f"{column} IS NOT NULL AND len({bad}) > 0",
                reason=_reason(
                    spec.name,
                    string_literal("element(s) "),
                    shown(bad, spec.type),
                    string_literal(f" not in allowed values {python_list(spec.allowed_elements)}"),
                ),
            )
        )
    return checks


def finite_checks(ctx: CheckContext) -> list[Check]:
    """NaN or infinity in a floating-point column."""
    return [
        Check(
            rule="finite",
            field=read.spec.name,
            failed=f"{ident(read.spec.name)} IS NOT NULL AND NOT isfinite({ident(read.spec.name)})",
            reason=_reason(
                read.spec.name,
                shown(ident(read.spec.name), read.spec.type),
                string_literal(" is not a finite number"),
            ),
        )
        for read in ctx.raw.reads
        if pa.types.is_floating(read.spec.type)
    ]


def range_checks(ctx: CheckContext) -> list[Check]:
    """A number below ``min_value`` or above ``max_value`` (NaN and infinity are the finite
    rule's finding)."""
    checks = []
    for read in ctx.raw.reads:
        spec = read.spec
        column = ident(spec.name)
        guard = f"{column} IS NOT NULL"
        if pa.types.is_floating(spec.type):
            guard += f" AND isfinite({column})"
        stats = ctx.raw.stats[spec.name]
        bounds = (
            ("min_value", spec.min_value, "<", "below the minimum", (spec.min_value, None)),
            ("max_value", spec.max_value, ">", "above the maximum", (None, spec.max_value)),
        )
        for rule, bound, operator, words, (low, high) in bounds:
            if bound is None:
                continue
            proven = not read.needs_cast and stats.within(low, high)
            checks.append(
                Check(
                    rule=rule,
                    field=spec.name,
                    failed=f"{guard} AND {column} {operator} {_bound(bound, spec.type)}",
                    reason=_reason(
                        spec.name,
                        shown(column, spec.type),
                        string_literal(f" is {words} {number(bound)}"),
                    ),
                    proven_by=_statistics(proven),
                )
            )
    return checks


def _bound(value: float, arrow_type: pa.DataType) -> str:
    """A bound as a literal of the column's kind, so an integer column is compared as integers."""
    if pa.types.is_integer(arrow_type) and float(value).is_integer():
        return literal(int(value))
    return literal(float(value))


def future_checks(ctx: CheckContext) -> list[Check]:
    """A timestamp after the validation time ``now``."""
    now = literal(ctx.now)
    return [
        Check(
            rule="not_in_future",
            field=read.spec.name,
            failed=f"{ident(read.spec.name)} > {now}",
            reason=_reason(
                read.spec.name,
                shown(ident(read.spec.name), read.spec.type),
                string_literal(f" is in the future (validated at {ctx.now:%Y-%m-%d %H:%M:%S} UTC)"),
            ),
            proven_by=_statistics(
                not read.needs_cast and ctx.raw.stats[read.spec.name].not_after(ctx.now)
            ),
        )
        for read in ctx.raw.reads
        if read.spec.not_in_future
    ]


def partition_checks(ctx: CheckContext) -> list[Check]:
    """A row filed under a partition folder that is not the date of its timestamp (UTC)."""
    key = ctx.raw.schema.partition_by
    if key is None or ctx.raw.partition_type is None:
        return []
    raw = ident(RAW_PREFIX + key)
    as_date = f"TRY_CAST({raw} AS DATE)"
    day = utc_date(ident(PARTITION_SOURCE))
    return [
        Check(
            rule="partition_key",
            field=key,
            failed=(
                f"{raw} IS NOT NULL AND ({as_date} IS NULL OR "
                f"({ident(PARTITION_SOURCE)} IS NOT NULL AND {as_date} <> {day}))"
            ),
            proven_by=_statistics(ctx.raw.partition_proven),
            reason=_reason(
                key,
                string_literal("row filed under "),
                f"CAST({raw} AS VARCHAR)",
                string_literal(f" but its {PARTITION_SOURCE} is on "),
                f"coalesce(CAST({day} AS VARCHAR), 'null')",
            ),
        )
    ]


_QUOTED = re.compile(r"'(?:[^']|'')*'")


def row_rule_checks(ctx: CheckContext) -> list[Check]:
    """The schema's cross-column rules; the reason shows the values of the columns involved."""
    schema = ctx.raw.schema
    checks = []
    for name, predicate, message in schema.row_rules:
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _QUOTED.sub("", predicate)))
        columns = [c for c in schema.column_names if c in words]
        values = " || ', ' || ".join(
            f"{string_literal(c + '=')} || {shown(ident(c), schema.column(c).type)}"
            for c in columns
        )
        checks.append(
            Check(
                rule=name,
                field=", ".join(columns),
                failed=f"NOT ({predicate})",
                reason=f"{string_literal(message + ' (')} || {values} || ')'",
            )
        )
    return checks


def primary_key_checks(ctx: CheckContext) -> list[Check]:
    """Every copy of a primary key that occurs more than once (no copy is guessed right)."""
    key = ctx.raw.schema.primary_key
    field = ", ".join(key)
    if ctx.duplicates is None:
        return [Check("primary_key", field, "FALSE", "''", proven_by="key pre-pass")]
    join = Join(
        "dup", ctx.duplicates, tuple((c, f"_k{i}") for i, c in enumerate(key)), exposes=("_n",)
    )
    label = key[0] if len(key) == 1 else f"({field})"
    return [
        Check(
            rule="primary_key",
            field=field,
            failed="dup._n IS NOT NULL",
            reason=(
                f"{string_literal(label + ': duplicate (')} || "
                f"CAST({join.exposed('_n')} AS VARCHAR) || ' rows)'"
            ),
            joins=(join,),
        )
    ]


def foreign_key_checks(ctx: CheckContext) -> list[Check]:
    """A reference to a row that is not in the referenced clean table (missing there, or
    quarantined: the reason says which)."""
    checks = []
    for index, fk in enumerate(ctx.raw.schema.foreign_keys):
        dangling = ctx.dangling[fk]
        if dangling is None:
            checks.append(Check("foreign_key", fk.column, "FALSE", "''", proven_by="key pre-pass"))
            continue
        join = Join(f"ref{index}", dangling, ((fk.column, "_key"),), exposes=("_quarantined",))
        column = ident(fk.column)
        checks.append(
            Check(
                rule="foreign_key",
                field=fk.column,
                failed=f"{join.alias}._key IS NOT NULL",
                reason=_reason(
                    fk.column,
                    shown(column, ctx.raw.schema.column(fk.column).type),
                    string_literal(f" not found in {fk.table}.{fk.ref_column}"),
                    f"CASE WHEN {join.exposed('_quarantined')} "
                    f"THEN {string_literal(f' (that {fk.table} row was quarantined)')} "
                    "ELSE '' END",
                ),
                joins=(join,),
            )
        )
    return checks


#: Every rule kind, in the order problems of one row are reported.
RULE_BUILDERS: tuple[Callable[[CheckContext], list[Check]], ...] = (
    type_checks,
    not_null_checks,
    allowed_checks,
    allowed_element_checks,
    finite_checks,
    range_checks,
    future_checks,
    partition_checks,
    row_rule_checks,
    primary_key_checks,
    foreign_key_checks,
)


def build_checks(ctx: CheckContext) -> list[Check]:
    """All checks of a table, generated from its schema."""
    return [check for build in RULE_BUILDERS for check in build(ctx)]


def distinct_joins(checks: list[Check]) -> list[Join]:
    """The joins the checks need, each once."""
    joins: dict[str, Join] = {}
    for check in checks:
        for join in check.joins:
            joins.setdefault(join.alias, join)
    return list(joins.values())


def joins_sql(checks: list[Check]) -> str:
    """The LEFT JOIN clauses the checks need."""
    return " ".join(join.sql() for join in distinct_joins(checks))


def refused_sql(checks: list[Check]) -> str:
    """TRUE for a row breaking any of the checks (never NULL)."""
    return " OR ".join(c.failed_sql for c in checks) or "FALSE"
