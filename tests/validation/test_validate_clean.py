"""A dataset that breaks no rule passes unchanged, and the outputs have the canonical layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from persona.layout import DataLayout
from persona.schemas import TABLES
from persona.validation import ValidationReport, validate_dataset
from tests.validation.datasets import (
    NOW,
    read_clean,
    read_quarantine,
    to_arrow,
    valid_rows,
    write_file,
    write_like_source,
)

Validate = Callable[[Path], ValidationReport]


def test_valid_dataset_passes_unchanged(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)

    report = validate(tmp_path)

    assert report.passed
    for name, schema in TABLES.items():
        table = report.tables[name]
        assert table.rows_in == table.rows_clean == len(rows[name])
        assert table.rows_quarantined == table.problems == 0
        assert read_quarantine(tmp_path, name) == []
        expected = to_arrow(name, rows[name]).sort_by(
            [(c, "ascending") for c in schema.primary_key]
        )
        assert read_clean(tmp_path, name).equals(expected)
        # Canonical raw files without a refused row are copied, not rewritten.
        assert table.files_copied == table.files_in and table.files_rewritten == 0


@pytest.mark.parametrize("raw_layout", ["as_source", "flat_file"])
def test_clean_files_have_the_canonical_schema_and_partitions(
    raw_layout: str, tmp_path: Path, validate: Validate
) -> None:
    rows = valid_rows()
    rows["events"][0]["app"] = "bogus"  # one refused row
    write_like_source(tmp_path, rows)
    if raw_layout == "flat_file":
        # One unpartitioned file with relaxed types: converted and re-partitioned by DuckDB.
        events = to_arrow("events", rows["events"], strict=False)
        write_file(tmp_path, "events", events.set_column(1, "customer_id", events[1].cast("int32")))

    report = validate(tmp_path)

    events = report.tables["events"]
    if raw_layout == "flat_file":
        assert (events.files_rewritten, events.files_filtered, events.files_copied) == (1, 0, 0)
    else:
        # The file with the refused row is filtered, the other day's file copied.
        assert (events.files_rewritten, events.files_filtered, events.files_copied) == (0, 1, 1)
    clean = DataLayout(tmp_path).clean_table("events")
    files = sorted(clean.rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"event_date=2024-03-01", "event_date=2024-03-02"}
    for file in files:
        # event_date is only the folder name, never a column inside the files.
        assert pq.read_schema(file).remove_metadata().equals(TABLES["events"].arrow_schema())
        day = file.parent.name.split("=")[1]
        stamps = pq.read_table(file).column("event_timestamp").to_pylist()
        assert {s.date().isoformat() for s in stamps} == {day}
    expected = to_arrow("events", rows["events"][1:])
    assert read_clean(tmp_path, "events").equals(expected)
    for name in ("customers", "products", "holdings"):
        for file in DataLayout(tmp_path).clean_table(name).rglob("*.parquet"):
            assert pq.read_schema(file).remove_metadata().equals(TABLES[name].arrow_schema())


def test_report_is_written_as_json_and_lists_every_rule(tmp_path: Path, validate: Validate) -> None:
    write_like_source(tmp_path, valid_rows())

    report = validate(tmp_path)

    path = DataLayout(tmp_path).validation_report
    assert ValidationReport.read(path) == report
    on_disk = json.loads(path.read_text())
    assert on_disk["passed"] is True
    assert on_disk["tables"]["events"]["rows_in"] == 8
    events = report.tables["events"]
    # Every rule of the schema is either checked row by row or proven, never silently skipped.
    accounted = set(events.rules_checked) | set(events.rules_proven)
    assert "primary_key(event_id)" in accounted
    assert "foreign_key(customer_id)" in accounted
    assert "not_in_future(event_timestamp)" in accounted
    for name, _, _ in TABLES["events"].row_rules:
        assert any(entry.startswith(f"{name}(") for entry in accounted), name
    assert events.rules_proven["not_null(event_id)"] == "statistics"
    assert events.rules_proven["primary_key(event_id)"] == "key pre-pass"


def test_optional_holdings_may_be_missing_and_stale_outputs_go(
    tmp_path: Path, validate: Validate
) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    validate(tmp_path)
    layout = DataLayout(tmp_path)
    assert layout.clean_table("holdings").exists()

    for file in layout.raw_table("holdings").rglob("*"):
        file.unlink()
    report = validate(tmp_path)

    holdings = report.tables["holdings"]
    assert not holdings.present and not holdings.required
    assert "optional" in holdings.note
    assert not layout.clean_table("holdings").exists()
    assert not (layout.quarantine / "holdings.parquet").exists()
    assert report.tables["events"].rows_clean == len(rows["events"])
    # The staging folder is gone after the run.
    assert not list(tmp_path.glob(".validation-*"))


def test_progress_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = valid_rows()
    rows["customers"][0]["city_tier"] = "village"
    write_like_source(tmp_path, rows)

    validate_dataset(tmp_path, now=NOW, progress=True)

    printed = capsys.readouterr().out
    assert "customers: 4 rows in, 3 clean, 1 quarantined" in printed
    assert "city_tier" in printed and "allowed" in printed
    assert "rows quarantined" in printed
