"""``persona data validate DIR``: check every raw table against its canonical schema and split
it into clean rows and quarantined rows, with a report.

Per table, in dependency order (referenced tables first, so a reference is checked against the
*clean* referenced table and refusals cascade):

1. a typed view reads the raw files as canonical types (:mod:`~persona.validation.source`);
2. narrow key pre-passes find duplicated primary keys and dangling references
   (:mod:`~persona.validation.keys`);
3. one scan evaluates every check (:mod:`~persona.validation.rules`) that the files' statistics
   or the pre-passes do not already prove, and keeps each refused row with all its problems
   (:mod:`~persona.validation.quarantine`);
4. the clean table is written (:mod:`~persona.validation.output`) and its rows are counted back
   from disk: rows in must equal rows clean plus rows quarantined, or nothing is published.

Outputs are staged in a hidden folder of the data directory and moved into place only once every
table is done, so a failed run leaves the previous outputs as they were.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from rich.console import Console

from persona.layout import DataLayout
from persona.schemas import TABLES, TableSchema
from persona.validation.errors import ValidationInvariantError
from persona.validation.keys import register_reference_keys, scan_keys
from persona.validation.output import (
    clean_rows_query,
    copy_files,
    count_rows,
    ensure_readable,
    filter_files,
    rewrite_rows,
)
from persona.validation.quarantine import collect_refused, examples, rule_counts, write_quarantine
from persona.validation.report import TableReport, ValidationReport, print_summary
from persona.validation.rules import CheckContext, build_checks, refused_sql
from persona.validation.source import SOURCE_FILE, SOURCE_ROW, RawTable, discover_raw_table
from persona.validation.sql import scalar, string_literal

#: Tables a source may leave out; the others must be there.
OPTIONAL_TABLES = frozenset(t.name for t in TABLES.values() if not t.required)


def validate_dataset(
    root: Path, *, now: datetime | None = None, progress: bool = True
) -> ValidationReport:
    """Validate ``root/raw/<table>`` for every canonical table; write ``root/clean/<table>/``,
    ``root/quarantine/<table>.parquet`` and ``root/validation_report.json``.

    ``now`` is the time ``not_in_future`` compares with (timezone-aware; default: the current
    UTC time). With ``progress`` the steps and a summary are printed.

    Raises :class:`~persona.validation.errors.SchemaError` (a required table or column is
    missing, or a column's type cannot be read) before writing anything.
    """
    started = time.perf_counter()
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError(f"now: {now!r} has no time zone; pass an aware datetime")
    now = now.astimezone(UTC)
    layout = DataLayout(Path(root).resolve())
    console = Console() if progress else None
    schemas = dependency_order(TABLES)

    # Row order carries no meaning here; not keeping it lets DuckDB stream and write in parallel.
    con = duckdb.connect(config={"preserve_insertion_order": False})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        raws = {
            schema.name: discover_raw_table(
                con,
                layout.raw_table(schema.name),
                schema,
                required=schema.name not in OPTIONAL_TABLES,
            )
            for schema in schemas
        }
        layout.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".validation-", dir=layout.root))
        try:
            con.execute(f"SET temp_directory = {string_literal(str(staging / 'spill'))}")
            run = _Run(con, layout, staging, now, console, uuid.uuid4().hex[:12])
            reports = {}
            for schema in schemas:
                raw = raws[schema.name]
                if raw is None:
                    reports[schema.name] = TableReport(
                        table=schema.name,
                        required=False,
                        present=False,
                        note=f"optional table: no Parquet files under raw/{schema.name}/",
                    )
                else:
                    reports[schema.name] = run.validate_table(raw)
            _publish(layout, staging, reports)
        finally:
            # Our own scratch folder; what it held was either published or is to be discarded.
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        con.close()

    report = ValidationReport(
        root=str(layout.root),
        validated_at=now,
        seconds=time.perf_counter() - started,
        tables=reports,
    )
    report.write(layout.validation_report)
    if console is not None:
        print_summary(report, console)
    return report


def dependency_order(tables: Mapping[str, TableSchema]) -> list[TableSchema]:
    """Tables ordered so every table comes after the tables its foreign keys reference."""
    ordered: list[TableSchema] = []
    done: set[str] = set()
    pending = list(tables.values())
    while pending:
        ready = [t for t in pending if all(fk.table in done for fk in t.foreign_keys)]
        if not ready:
            names = ", ".join(t.name for t in pending)
            raise ValueError(f"foreign keys form a cycle or name unknown tables among: {names}")
        for table in ready:
            ordered.append(table)
            done.add(table.name)
            pending.remove(table)
    return ordered


@dataclass
class _Run:
    """State shared by the tables of one validation run."""

    con: duckdb.DuckDBPyConnection
    layout: DataLayout
    staging: Path
    now: datetime
    console: Console | None
    run_id: str

    def validate_table(self, raw: RawTable) -> TableReport:
        """Validate one raw table into the staging folder; returns its report."""
        started = time.perf_counter()
        self.step_seconds: dict[str, float] = {}
        con = self.con
        schema = raw.schema
        name = schema.name
        view = f"typed_{name}"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {raw.typed_view_sql()}")
        # Row-level rules first (key rules need the pre-pass); the pre-pass counts their failures.
        no_key_problems = CheckContext(
            raw, self.now, None, {fk: None for fk in schema.foreign_keys}
        )
        row_checks = [c for c in build_checks(no_key_problems) if not c.proven]
        with self._step("keys", f"{name}: keys, references and rule failures"):
            scan = scan_keys(con, view, schema, refused_sql(row_checks), raw.rows)
        every_check = build_checks(CheckContext(raw, self.now, scan.duplicates, scan.dangling))
        checks = [c for c in every_check if not c.proven]

        refused = f"refused_{name}"
        with self._step("checks", f"{name}: collecting refused rows"):
            collect_refused(con, view, raw, checks, refused, none_refused=not scan.anything_refused)
        refused_rows: dict[str, list[int]] = dict(
            con.execute(
                f"SELECT {SOURCE_FILE}, list({SOURCE_ROW}) FROM {refused} GROUP BY ALL"
            ).fetchall()
        )
        copied = [f for f in raw.files if f.canonical and str(f.path) not in refused_rows]
        filtered = {
            f: refused_rows[str(f.path)]
            for f in raw.files
            if f.canonical and str(f.path) in refused_rows
        }
        rewritten = [f for f in raw.files if not f.canonical]
        clean_dir = self.staging / "clean" / name
        with self._step("clean", f"{name}: writing clean rows"):
            copy_files(copied, clean_dir)
            filter_files(filtered, schema, clean_dir)
            if rewritten:
                everything = len(rewritten) == len(raw.files)
                rewrite_rows(
                    con,
                    clean_rows_query(schema, view, checks, None if everything else rewritten),
                    schema,
                    clean_dir,
                    basename=f"validated-{self.run_id}",
                )
            ensure_readable(schema, clean_dir)

        rows_clean = count_rows(con, clean_dir)
        rows_quarantined = scalar(con, f"SELECT count(*) FROM {refused}")
        if raw.rows != rows_clean + rows_quarantined:
            raise ValidationInvariantError(
                f"{name}: {raw.rows} rows in but {rows_clean} clean + {rows_quarantined} "
                "quarantined; nothing was published"
            )
        target = self.staging / "quarantine" / f"{name}.parquet"
        with self._step("quarantine", f"{name}: writing quarantine"):
            problems = write_quarantine(con, raw, refused, target, self.layout.root)
            register_reference_keys(con, name, clean_dir, refused)

        report = TableReport(
            table=name,
            required=name not in OPTIONAL_TABLES,
            present=True,
            note=_note(raw),
            files_in=len(raw.files),
            rows_in=raw.rows,
            rows_clean=rows_clean,
            rows_quarantined=rows_quarantined,
            problems=problems,
            files_copied=len(copied),
            files_filtered=len(filtered),
            files_rewritten=len(rewritten),
            cast_columns=[r.spec.name for r in raw.reads if r.needs_cast],
            extra_columns=list(raw.extra_columns),
            ignored_files=list(raw.ignored_files),
            rules_checked=[f"{c.rule}({c.field})" for c in checks],
            rules_proven={f"{c.rule}({c.field})": c.proven_by for c in every_check if c.proven_by},
            rule_counts=rule_counts(con, refused),
            examples=examples(con, raw, refused, self.layout.root),
            seconds=time.perf_counter() - started,
            step_seconds={k: round(v, 3) for k, v in self.step_seconds.items()},
            clean_path=str(self.layout.clean_table(name)),
            quarantine_path=str(self.layout.quarantine / f"{name}.parquet"),
        )
        con.execute(f"DROP VIEW {view}")
        for table in (refused, *scan.temp_tables()):
            con.execute(f"DROP TABLE {table}")
        if self.console is not None:
            self.console.print(
                f"{name}: {raw.rows:,} rows in, {rows_clean:,} clean, "
                f"{rows_quarantined:,} quarantined ({report.seconds:.1f} s)"
            )
        return report

    @contextmanager
    def _step(self, step: str, message: str) -> Iterator[None]:
        """Time a step (seconds, kept for the report) and show it while it runs."""
        started = time.perf_counter()
        if self.console is None:
            yield
        else:
            with self.console.status(message):
                yield
        self.step_seconds[step] = self.step_seconds.get(step, 0.0) + time.perf_counter() - started


def _note(raw: RawTable) -> str:
    """What a reader of the report should know about the raw files beyond the counts."""
    notes = []
    if raw.extra_columns:
        notes.append(f"columns not in the schema, left out: {', '.join(raw.extra_columns)}")
    if raw.ignored_files:
        notes.append(f"{len(raw.ignored_files)} hidden or non-Parquet file(s) not read")
    return "; ".join(notes)


def _publish(layout: DataLayout, staging: Path, reports: Mapping[str, TableReport]) -> None:
    """Move staged clean tables and quarantine files into place, replacing earlier outputs; an
    absent optional table also loses its earlier outputs, so nothing stale is read as clean."""
    layout.clean.mkdir(parents=True, exist_ok=True)
    layout.quarantine.mkdir(parents=True, exist_ok=True)
    for name, report in reports.items():
        clean = layout.clean_table(name)
        quarantine = layout.quarantine / f"{name}.parquet"
        if clean.exists():
            shutil.rmtree(clean)
        quarantine.unlink(missing_ok=True)
        if report.present:
            (staging / "clean" / name).rename(clean)
            (staging / "quarantine" / f"{name}.parquet").rename(quarantine)
