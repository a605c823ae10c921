"""Every kind of bad value is refused with its rule, field and a reason a person can act on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from persona.layout import DataLayout
from persona.schemas import TABLES
from persona.validation import ValidationReport
from tests.validation.datasets import (
    Rows,
    read_clean,
    read_quarantine,
    to_arrow,
    valid_rows,
    write_file,
    write_like_source,
)

Validate = Callable[[Path], ValidationReport]


def _refused(root: Path, table: str) -> list[dict[str, Any]]:
    return read_quarantine(root, table)


def _only_problem(root: Path, table: str) -> dict[str, Any]:
    problems = _refused(root, table)
    assert len(problems) == 1, problems
    return problems[0]


def _clean_ids(root: Path, table: str) -> list[Any]:
    return read_clean(root, table).column(TABLES[table].primary_key[0]).to_pylist()


def _assert_counts_add_up(report: ValidationReport, root: Path) -> None:
    for name, table in report.tables.items():
        assert table.rows_in == table.rows_clean + table.rows_quarantined
        problems = _refused(root, name)
        assert len(problems) == table.problems
        assert len({(p["source_file"], p["source_row"]) for p in problems}) == (
            table.rows_quarantined
        )
        assert sum(c.rows for c in table.rule_counts) == table.problems


def test_value_outside_allowed_values(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    rows["customers"][1]["age_band"] = "teen"
    write_like_source(tmp_path, rows)

    report = validate(tmp_path)

    problem = _only_problem(tmp_path, "customers")
    assert (problem["rule"], problem["field"], problem["customer_id"]) == (
        "allowed",
        "age_band",
        "2",
    )
    assert problem["reason"] == (
        "age_band: 'teen' not in allowed values "
        "['18-24', '25-34', '35-44', '45-54', '55-64', '65+']"
    )
    assert problem["row_values"]["age_band"] == "teen"
    assert problem["source_file"].startswith("raw/customers/")
    assert 2 not in _clean_ids(tmp_path, "customers")
    assert report.tables["customers"].rule_counts[0].model_dump() == {
        "rule": "allowed",
        "field": "age_band",
        "rows": 1,
    }
    assert report.tables["customers"].examples[0].key == {"customer_id": "2"}
    assert not report.passed


def test_numbers_out_of_range(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    rows["products"][0]["min_age"] = 130
    rows["events"][0]["position"] = 0
    rows["events"][2]["propensity"] = 1.5
    write_like_source(tmp_path, rows)

    report = validate(tmp_path)

    product = _only_problem(tmp_path, "products")
    assert (product["rule"], product["field"]) == ("max_value", "min_age")
    assert product["reason"] == "min_age: 130 is above the maximum 120"
    reasons = {(p["rule"], p["event_id"], p["reason"]) for p in _refused(tmp_path, "events")}
    assert ("min_value", "e1", "position: 0 is below the minimum 1") in reasons
    assert ("max_value", "e3", "propensity: 1.5 is above the maximum 1") in reasons
    _assert_counts_add_up(report, tmp_path)


def test_nan_is_not_a_number_in_range(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    rows["events"][4]["amount"] = float("nan")
    write_like_source(tmp_path, rows)

    validate(tmp_path)

    problem = _only_problem(tmp_path, "events")
    assert (problem["rule"], problem["field"], problem["event_id"]) == ("finite", "amount", "e5")
    assert problem["reason"] == "amount: nan is not a finite number"


def test_null_in_non_nullable_column(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    rows["customers"][2]["customer_type"] = None
    write_file(tmp_path, "customers", to_arrow("customers", rows["customers"], strict=False))

    report = validate(tmp_path)

    problem = _only_problem(tmp_path, "customers")
    assert (problem["rule"], problem["field"], problem["customer_id"]) == (
        "not_null",
        "customer_type",
        "3",
    )
    assert problem["reason"] == "customer_type: null in a non-nullable column"
    assert _clean_ids(tmp_path, "customers") == [1, 2, 4]
    # The clean table is written in the canonical schema although the raw one was relaxed.
    assert read_clean(tmp_path, "customers").schema.equals(TABLES["customers"].arrow_schema())
    assert report.tables["customers"].files_rewritten == 1


def test_list_element_outside_allowed_values(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    rows["customers"][0]["apps_enrolled"] = ["rib", "web"]
    write_like_source(tmp_path, rows)

    validate(tmp_path)

    problem = _only_problem(tmp_path, "customers")
    assert (problem["rule"], problem["field"]) == ("allowed_elements", "apps_enrolled")
    assert problem["reason"] == (
        "apps_enrolled: element(s) ['web'] not in allowed values ['rib', 'cib', 'nli', 'imobile']"
    )


def test_every_copy_of_a_duplicate_key_is_refused(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    rows["events"][5]["event_id"] = "e1"  # on another day, so in another file
    rows["holdings"].append(dict(rows["holdings"][0]))
    write_like_source(tmp_path, rows)

    report = validate(tmp_path)

    duplicates = _refused(tmp_path, "events")
    assert {(p["rule"], p["field"], p["event_id"]) for p in duplicates} == {
        ("primary_key", "event_id", "e1")
    }
    assert len(duplicates) == 2
    assert duplicates[0]["reason"] == "event_id: duplicate (2 rows)"
    assert "e1" not in _clean_ids(tmp_path, "events")
    holdings = _refused(tmp_path, "holdings")
    assert len(holdings) == 2
    assert holdings[0]["reason"] == "(customer_id, product_id, opened_at): duplicate (2 rows)"
    assert holdings[0]["field"] == "customer_id, product_id, opened_at"
    _assert_counts_add_up(report, tmp_path)


def test_dangling_reference_and_cascade_from_a_refused_customer(
    tmp_path: Path, validate: Validate
) -> None:
    rows = valid_rows()
    rows["events"][4]["customer_id"] = 42  # no such customer
    rows["events"][7]["product_id"] = "P9"  # no such product
    rows["customers"][1]["kyc_level"] = 7  # customer 2 is refused...
    write_like_source(tmp_path, rows)

    report = validate(tmp_path)

    events = {(p["event_id"], p["field"]): p["reason"] for p in _refused(tmp_path, "events")}
    assert events[("e5", "customer_id")] == "customer_id: 42 not found in customers.customer_id"
    assert events[("e8", "product_id")] == "product_id: 'P9' not found in products.product_id"
    # ... and so are its events and holdings, with the reason saying why.
    cascade = (
        "customer_id: 2 not found in customers.customer_id (that customers row was quarantined)"
    )
    assert events[("e3", "customer_id")] == cascade
    assert events[("e4", "customer_id")] == cascade
    holdings = _only_problem(tmp_path, "holdings")
    assert (holdings["customer_id"], holdings["reason"]) == ("2", cascade)
    assert sorted(_clean_ids(tmp_path, "events")) == ["e1", "e2", "e6", "e7"]
    _assert_counts_add_up(report, tmp_path)


def test_timestamp_in_the_future(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    rows["events"][1]["event_timestamp"] = datetime(2031, 1, 1, tzinfo=UTC)
    write_like_source(tmp_path, rows)

    validate(tmp_path)

    problem = _only_problem(tmp_path, "events")
    assert (problem["rule"], problem["field"], problem["event_id"]) == (
        "not_in_future",
        "event_timestamp",
        "e2",
    )
    assert problem["reason"].startswith("event_timestamp: 2031-01-01 00:00:00 is in the future")


#: For every row rule of the schema: which row to break and how.
ROW_RULE_BREAKERS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "relationship_not_after_creation": (
        "customers",
        0,
        {"relationship_start": datetime(2024, 1, 1, tzinfo=UTC)},
    ),
    "closed_after_opened": ("holdings", 1, {"closed_at": datetime(2023, 1, 1, tzinfo=UTC)}),
    "product_event_has_product": ("events", 1, {"product_id": None}),
    "impression_has_position": ("events", 0, {"position": None}),
    "propensity_positive_when_logged": ("events", 2, {"propensity": 0.0}),
}


def test_every_row_rule_of_the_schema_has_a_case() -> None:
    names = {name for schema in TABLES.values() for name, _, _ in schema.row_rules}
    assert names == set(ROW_RULE_BREAKERS)


@pytest.mark.parametrize("rule", sorted(ROW_RULE_BREAKERS))
def test_row_rule(rule: str, tmp_path: Path, validate: Validate) -> None:
    table, index, changes = ROW_RULE_BREAKERS[rule]
    rows = valid_rows()
    rows[table][index].update(changes)
    write_like_source(tmp_path, rows)

    validate(tmp_path)

    problem = _only_problem(tmp_path, table)
    assert problem["rule"] == rule
    message = next(m for name, _, m in TABLES[table].row_rules if name == rule)
    assert problem["reason"].startswith(message + " (")
    for column in problem["field"].split(", "):
        assert f"{column}=" in problem["reason"]


def test_a_row_with_several_problems_is_reported_once_per_problem(
    tmp_path: Path, validate: Validate
) -> None:
    rows: Rows = valid_rows()
    rows["events"][0].update(app="fax", device="pager", customer_id=42, position=0)
    write_like_source(tmp_path, rows)

    report = validate(tmp_path)

    problems = _refused(tmp_path, "events")
    assert {(p["rule"], p["field"]) for p in problems} == {
        ("allowed", "app"),
        ("allowed", "device"),
        ("min_value", "position"),
        ("foreign_key", "customer_id"),
    }
    assert {p["event_id"] for p in problems} == {"e1"}
    assert report.tables["events"].rows_quarantined == 1
    assert report.tables["events"].problems == 4
    _assert_counts_add_up(report, tmp_path)


def test_row_filed_under_the_wrong_partition(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    raw = DataLayout(tmp_path).raw_table("events")
    misplaced = raw / "event_date=2024-03-05"
    (raw / "event_date=2024-03-02").rename(misplaced)

    report = validate(tmp_path)

    problems = _refused(tmp_path, "events")
    assert {p["rule"] for p in problems} == {"partition_key"}
    assert {p["event_id"] for p in problems} == {"e6", "e7", "e8"}
    assert problems[0]["reason"] == (
        "event_date: row filed under 2024-03-05 but its event_timestamp is on 2024-03-02"
    )
    assert "partition_key(event_date)" in report.tables["events"].rules_checked
    assert not list(DataLayout(tmp_path).clean_table("events").glob("event_date=2024-03-05"))


def test_quarantine_file_holds_keys_values_and_sources(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    rows["events"][6]["event_type"] = "wave"
    write_like_source(tmp_path, rows)

    validate(tmp_path)

    path = DataLayout(tmp_path).quarantine / "events.parquet"
    names = pq.read_schema(path).names
    assert names == [
        "table",
        "rule",
        "field",
        "reason",
        "event_id",
        "row_values",
        "source_file",
        "source_row",
    ]
    problem = _only_problem(tmp_path, "events")
    assert problem["table"] == "events"
    assert problem["row_values"]["event_type"] == "wave"
    assert problem["row_values"]["customer_id"] == 4
    source = pq.read_table(tmp_path / problem["source_file"])
    assert source.column("event_id")[problem["source_row"]].as_py() == "e7"


def test_timestamp_beyond_year_9999_is_refused_not_a_crash(
    tmp_path: Path, validate: Validate
) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    events = to_arrow("events", rows["events"])
    stamps = events.column("event_timestamp").cast(pa.int64()).to_pylist()
    stamps[3] = 300_000_000_000_000_000  # about year 11476: no Python datetime holds it
    index = events.schema.get_field_index("event_timestamp")
    events = events.set_column(
        index,
        "event_timestamp",
        pa.array(stamps).cast(TABLES["events"].column("event_timestamp").type),
    )
    write_file(tmp_path, "events", events)

    validate(tmp_path)

    # (row_values holds the raw timestamp, which Python's datetime cannot show: leave it out)
    quarantine = DataLayout(tmp_path).quarantine / "events.parquet"
    (problem,) = pq.read_table(quarantine, columns=["rule", "event_id", "reason"]).to_pylist()
    assert (problem["rule"], problem["event_id"]) == ("not_in_future", "e4")
    assert problem["reason"].startswith("event_timestamp: 11476-")
