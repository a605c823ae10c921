"""The validation report: per table rows in / clean / quarantined, counts per rule and field,
first examples, timing. Written as JSON next to the data and printed as a rich table."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, computed_field
from rich.console import Console
from rich.table import Table


class RuleCount(BaseModel):
    """How many rows broke one rule on one field."""

    rule: str
    field: str
    rows: int


class Example(BaseModel):
    """One refused row, as written to the quarantine file."""

    rule: str
    field: str
    reason: str
    #: Primary key columns of the row, as the raw values written as text.
    key: dict[str, str | None]
    #: The raw file, relative to the data directory, and the row's number in it (from 0).
    source_file: str
    source_row: int


class TableReport(BaseModel):
    """The outcome for one table."""

    table: str
    required: bool
    #: False for an optional table without raw files (then nothing else is filled in).
    present: bool
    note: str = ""
    files_in: int = 0
    rows_in: int = 0
    rows_clean: int = 0
    #: Distinct refused rows (a row with several problems counts once here).
    rows_quarantined: int = 0
    #: Rows of the quarantine file: one per problem.
    problems: int = 0
    #: Raw files copied unchanged (canonical, nothing refused), canonical files written again
    #: without their refused rows, and files whose passing rows were converted and rewritten
    #: (stored types other than canonical, extra columns, or not in their clean place).
    files_copied: int = 0
    files_filtered: int = 0
    files_rewritten: int = 0
    #: Raw columns read with a cast because their stored type is not the canonical one.
    cast_columns: list[str] = Field(default_factory=list)
    #: Raw columns the schema does not know; they are not carried into the clean table.
    extra_columns: list[str] = Field(default_factory=list)
    #: Files under the raw folder that were not read (not Parquet, or hidden).
    ignored_files: list[str] = Field(default_factory=list)
    #: Rules evaluated row by row, as ``rule(field)``.
    rules_checked: list[str] = Field(default_factory=list)
    #: Rules known to hold for every row without a row-by-row predicate, and how:
    #: ``statistics`` (Parquet footers: no nulls, all values within bounds) or ``key pre-pass``
    #: (no duplicate key, no dangling reference). Listed so every rule is accounted for.
    rules_proven: dict[str, str] = Field(default_factory=dict)
    rule_counts: list[RuleCount] = Field(default_factory=list)
    examples: list[Example] = Field(default_factory=list)
    seconds: float = 0.0
    #: Seconds per step: keys (pre-passes), checks, clean, quarantine.
    step_seconds: dict[str, float] = Field(default_factory=dict)
    clean_path: str | None = None
    quarantine_path: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0


class ValidationReport(BaseModel):
    """The outcome of validating one data directory."""

    root: str
    #: The time timestamps were compared with (``not_in_future``), UTC.
    validated_at: datetime
    seconds: float
    tables: dict[str, TableReport]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        """True when no row of any table was refused."""
        return all(t.rows_quarantined == 0 for t in self.tables.values())

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ValidationReport:
        return cls.model_validate_json(path.read_text())


def print_summary(report: ValidationReport, console: Console | None = None) -> None:
    """Print per-table counts and the most frequent problems as rich tables."""
    console = console or Console()
    tables = Table(title=f"Validation of {report.root}", title_justify="left")
    for name in ("table", "rows in", "clean", "quarantined", "problems", "seconds", "rows/s"):
        tables.add_column(name, justify="left" if name == "table" else "right")
    for table in report.tables.values():
        if not table.present:
            tables.add_row(table.table, "-", "-", "-", "-", "-", "-", style="dim")
            continue
        tables.add_row(
            table.table,
            f"{table.rows_in:,}",
            f"{table.rows_clean:,}",
            f"{table.rows_quarantined:,}",
            f"{table.problems:,}",
            f"{table.seconds:.2f}",
            f"{table.rows_per_second:,.0f}",
            style=None if table.rows_quarantined == 0 else "yellow",
        )
    console.print(tables)
    for table in report.tables.values():
        if table.note:
            console.print(f"[dim]{table.table}: {table.note}[/dim]")
    problems = Table(title="Problems (rule, field: rows; first example)", title_justify="left")
    for name in ("table", "rule", "field", "rows", "example"):
        problems.add_column(name, justify="right" if name == "rows" else "left")
    for table in report.tables.values():
        examples = {(e.rule, e.field): e.reason for e in table.examples}
        for count in table.rule_counts:
            problems.add_row(
                table.table,
                count.rule,
                count.field,
                f"{count.rows:,}",
                examples.get((count.rule, count.field), ""),
            )
    if problems.row_count:
        console.print(problems)
    verdict = "[green]passed[/green]" if report.passed else "[yellow]rows quarantined[/yellow]"
    console.print(f"validation {verdict} in {report.seconds:.1f} s")
