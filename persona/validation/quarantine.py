"""Refused rows: collected once per table with every problem of each row, then written as the
quarantine file (one row per problem) and summarised for the report."""

from __future__ import annotations

from pathlib import Path

import duckdb

from persona.validation.keys import referenced_columns
from persona.validation.report import Example, RuleCount
from persona.validation.rules import VIEW, Check, distinct_joins, joins_sql
from persona.validation.source import SOURCE_FILE, SOURCE_ROW, RawTable
from persona.validation.sql import ident, scalar, string_literal

#: Refused rows shown per (rule, field) in the report.
EXAMPLES_PER_RULE = 3
_PROBLEM = "STRUCT(rule VARCHAR, field VARCHAR, reason VARCHAR)"


def collect_refused(
    con: duckdb.DuckDBPyConnection,
    view: str,
    raw: RawTable,
    checks: list[Check],
    table: str,
    *,
    none_refused: bool = False,
) -> None:
    """Create temp table ``table`` with one row per refused raw row: its source file and row
    number, its key (``key__<col>``: raw values as text), the typed values other tables refer to
    (``ref__<col>``), ``row_values`` (a struct of the raw values) and ``problems``: a list of
    (rule, field, reason).

    Each check's predicate is computed once as a flag column; the filter and the problem list
    then only read flags, and a reason is only built for the checks a row fails. With
    ``none_refused`` (the pre-pass found nothing to refuse) the table is created empty without
    a scan.
    """
    flags = [f"{c.failed_sql} AS _failed{i}" for i, c in enumerate(checks)]
    exposed = [item for join in distinct_joins(checks) for item in join.select_items()]
    flagged = (
        f"SELECT {', '.join([f'{VIEW}.*', *exposed, *flags])} "
        f"FROM {view} {VIEW} {joins_sql(checks)}"
    )
    problems = ", ".join(
        f"CASE WHEN _failed{i} THEN struct_pack(rule := {string_literal(c.rule)}, "
        f"field := {string_literal(c.field)}, reason := {c.reason}) END"
        for i, c in enumerate(checks)
    )
    keys = [
        f"CAST({raw.read(c).raw} AS VARCHAR) AS {ident('key__' + c)}"
        for c in raw.schema.primary_key
    ]
    referenced = [
        f"{ident(c)} AS {ident('ref__' + c)}" for c in referenced_columns(raw.schema.name)
    ]
    values = ", ".join(f"{ident(r.spec.name)} := {r.raw}" for r in raw.reads)
    items = [
        SOURCE_FILE,
        SOURCE_ROW,
        *keys,
        *referenced,
        # A struct keeps the raw values with their own types, and costs a third of a JSON text.
        f"struct_pack({values}) AS row_values",
        (
            f"list_filter([{problems}], lambda p: p IS NOT NULL) AS problems"
            if problems
            else f"CAST([] AS {_PROBLEM}[]) AS problems"
        ),
    ]
    refused = " OR ".join(f"_failed{i}" for i in range(len(checks)))
    if none_refused or not refused:
        refused = "FALSE"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {', '.join(items)} "
        f"FROM ({flagged}) WHERE {refused}"
    )


def write_quarantine(
    con: duckdb.DuckDBPyConnection, raw: RawTable, refused: str, target: Path, root: Path
) -> int:
    """Write the quarantine file, one row per problem: table, rule, field, reason, the key
    columns (raw values as text), ``row_values`` (struct of the row's raw values),
    ``source_file`` (relative to the data directory) and ``source_row`` (from 0). Returns the
    number of problems written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    keys = [f"{ident('key__' + c)} AS {ident(c)}" for c in raw.schema.primary_key]
    query = (
        f'SELECT {string_literal(raw.schema.name)} AS "table", p.rule AS rule, '
        f"p.field AS field, p.reason AS reason, {', '.join(keys)}, row_values, "
        f"substr({SOURCE_FILE}, {len(str(root)) + 2}) AS source_file, {SOURCE_ROW} AS source_row "
        f"FROM (SELECT *, unnest(problems) AS p FROM {refused})"
    )
    con.execute(f"COPY ({query}) TO {string_literal(str(target))} (FORMAT parquet)")
    return scalar(con, f"SELECT count(*) FROM read_parquet({string_literal(str(target))})")


def rule_counts(con: duckdb.DuckDBPyConnection, refused: str) -> list[RuleCount]:
    """Rows per (rule, field), most frequent first."""
    rows = con.execute(
        f"SELECT p.rule, p.field, count(*) FROM (SELECT unnest(problems) AS p FROM {refused}) "
        "GROUP BY ALL ORDER BY 3 DESC, 1, 2"
    ).fetchall()
    return [RuleCount(rule=rule, field=field, rows=n) for rule, field, n in rows]


def examples(
    con: duckdb.DuckDBPyConnection, raw: RawTable, refused: str, root: Path
) -> list[Example]:
    """The first refused rows (by file and row) of every (rule, field); a top-n aggregate per
    group, so millions of refused rows are not sorted for a handful of examples."""
    keys = list(raw.schema.primary_key)
    example = ", ".join(
        [
            "reason := p.reason",
            f"source_file := substr({SOURCE_FILE}, {len(str(root)) + 2})",
            f"source_row := {SOURCE_ROW}",
            *(f"{ident('key__' + c)} := {ident('key__' + c)}" for c in keys),
        ]
    )
    order = f"struct_pack(f := {SOURCE_FILE}, r := {SOURCE_ROW})"
    key_columns = ", ".join(ident("key__" + c) for c in keys)
    rows = con.execute(
        f"SELECT p.rule, p.field, arg_min(struct_pack({example}), {order}, {EXAMPLES_PER_RULE}) "
        f"FROM (SELECT {SOURCE_FILE}, {SOURCE_ROW}, {key_columns}, unnest(problems) AS p "
        f"FROM {refused}) GROUP BY ALL ORDER BY 1, 2"
    ).fetchall()
    result = []
    for rule, field, firsts in rows:
        for first in sorted(firsts, key=lambda e: (e["source_file"], e["source_row"])):
            result.append(
                Example(
                    rule=rule,
                    field=field,
                    reason=first["reason"],
                    source_file=first["source_file"],
                    source_row=first["source_row"],
                    key={c: first["key__" + c] for c in keys},
                )
            )
    return result
