"""Raw tables whose shape is wrong stop the run; values that merely do not convert are refused
row by row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from persona.layout import DataLayout
from persona.schemas import TABLES
from persona.validation import MissingTableError, SchemaError, ValidationReport
from tests.validation.datasets import (
    T0,
    read_clean,
    read_quarantine,
    to_arrow,
    valid_rows,
    write_file,
    write_like_source,
)

Validate = Callable[[Path], ValidationReport]


def _assert_nothing_written(root: Path) -> None:
    layout = DataLayout(root)
    assert not layout.clean.exists()
    assert not layout.quarantine.exists()
    assert not layout.validation_report.exists()
    assert not list(root.glob(".validation-*"))


def test_missing_required_column_stops_the_run(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    products = to_arrow("products", rows["products"]).drop_columns(["risk_class", "apps"])
    write_file(tmp_path, "products", products)

    with pytest.raises(SchemaError, match=r"products: missing required column\(s\) apps .*risk"):
        validate(tmp_path)
    _assert_nothing_written(tmp_path)


def test_column_missing_from_one_file_stops_the_run(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    folder = DataLayout(tmp_path).raw_table("events") / "event_date=2024-03-02"
    extra = to_arrow("events", rows["events"][5:6]).drop_columns(["device"])
    import pyarrow.parquet as pq

    pq.write_table(extra, folder / "part-late.parquet")

    with pytest.raises(SchemaError, match=r"events: .*device \(in 1 of 3 files"):
        validate(tmp_path)
    _assert_nothing_written(tmp_path)


def test_unreadable_column_type_stops_the_run(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    customers = to_arrow("customers", rows["customers"])
    customers = customers.set_column(
        customers.schema.get_field_index("created_at"),
        "created_at",
        pa.array([True, False, True, True]),
    )
    write_file(tmp_path, "customers", customers)

    with pytest.raises(SchemaError, match=r"customers: .*created_at is BOOLEAN"):
        validate(tmp_path)
    _assert_nothing_written(tmp_path)


def test_missing_required_table_stops_the_run(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    del rows["products"]
    write_like_source(tmp_path, rows)

    with pytest.raises(MissingTableError, match="products: required table"):
        validate(tmp_path)
    _assert_nothing_written(tmp_path)


def test_values_that_do_not_convert_are_refused_per_row(tmp_path: Path, validate: Validate) -> None:
    """Numbers written as text, ids as int32, naive timestamps: read with a cast; the values
    that do not convert are refused with the raw value in the reason."""
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    customers = to_arrow("customers", rows["customers"])
    kyc = customers.schema.get_field_index("kyc_level")
    customers = customers.set_column(kyc, "kyc_level", pa.array(["2", "abc", " 1 ", "1.5"]))
    ids = customers.schema.get_field_index("customer_id")
    customers = customers.set_column(ids, "customer_id", pa.array([1, 2, 3, 4], pa.int32()))
    created = customers.schema.get_field_index("created_at")
    naive = customers.column("created_at").cast(pa.timestamp("ms"))
    customers = customers.set_column(created, "created_at", naive)
    write_file(tmp_path, "customers", customers)

    report = validate(tmp_path)

    problems = read_quarantine(tmp_path, "customers")
    assert {(p["customer_id"], p["rule"], p["field"], p["reason"]) for p in problems} == {
        ("2", "type", "kyc_level", "kyc_level: 'abc' cannot be read as int8"),
        # 1.5 is not an integer: refused, not rounded.
        ("4", "type", "kyc_level", "kyc_level: '1.5' cannot be read as int8"),
    }
    clean = read_clean(tmp_path, "customers")
    assert clean.schema.equals(TABLES["customers"].arrow_schema())
    assert clean.column("customer_id").to_pylist() == [1, 3]
    assert clean.column("kyc_level").to_pylist() == [2, 1]
    assert clean.column("created_at").to_pylist()[0] == rows["customers"][0]["created_at"]
    table = report.tables["customers"]
    assert set(table.cast_columns) == {"customer_id", "kyc_level", "created_at"}
    assert table.rows_in == table.rows_clean + table.rows_quarantined
    # Events of the refused customers are refused as well.
    assert {p["event_id"] for p in read_quarantine(tmp_path, "events")} == {"e3", "e4", "e7"}


def test_number_too_big_for_the_canonical_type_is_refused(
    tmp_path: Path, validate: Validate
) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    products = to_arrow("products", rows["products"])
    risk = products.schema.get_field_index("risk_class")
    products = products.set_column(risk, "risk_class", pa.array([2, 300, 1], pa.int64()))
    write_file(tmp_path, "products", products)

    validate(tmp_path)

    (problem,) = read_quarantine(tmp_path, "products")
    assert (problem["product_id"], problem["reason"]) == (
        "P2",
        "risk_class: 300 cannot be read as int8",
    )


def test_extra_columns_are_reported_and_left_out(tmp_path: Path, validate: Validate) -> None:
    rows = valid_rows()
    write_like_source(tmp_path, rows)
    products = to_arrow("products", rows["products"]).append_column(
        "internal_note", pa.array(["a", "b", "c"])
    )
    write_file(tmp_path, "products", products)

    report = validate(tmp_path)

    assert report.tables["products"].extra_columns == ["internal_note"]
    assert "internal_note" in report.tables["products"].note
    assert read_clean(tmp_path, "products").schema.equals(TABLES["products"].arrow_schema())
    assert report.passed


def test_now_must_be_timezone_aware(tmp_path: Path) -> None:
    from persona.validation import validate_dataset

    write_like_source(tmp_path, valid_rows())
    with pytest.raises(ValueError, match="now"):
        validate_dataset(tmp_path, now=datetime(2025, 1, 1), progress=False)
    assert T0.tzinfo is not None
