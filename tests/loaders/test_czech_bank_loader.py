"""Czech bank (PKDD'99) loader on the real files, plus the original YYMMDD/birth_number format."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from persona.loaders import LoadSummary, MissingColumnError, MissingSourceError, load_czech_bank
from persona.loaders.czech_bank import age_band, city_tier

pytestmark = pytest.mark.slow

#: Facts from shared/data/README.md.
CLIENTS, CARDS, LOANS, ORDERS, ACCOUNTS = 5_369, 892, 682, 6_471, 4_500


@pytest.fixture(scope="module")
def loaded(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LoadSummary]:
    out = tmp_path_factory.mktemp("czech")
    return out, load_czech_bank(shared_data / "czech_bank", out, roots=[shared_data])


@pytest.fixture(scope="module")
def tables(
    loaded: tuple[Path, LoadSummary], conforms: Callable[[Path, str], pa.Table]
) -> dict[str, pa.Table]:
    """The four written tables, each checked against its schema once."""
    out, _ = loaded
    return {t: conforms(out, t) for t in ("customers", "products", "holdings", "events")}


def by_prefix(holdings: pa.Table, prefix: str) -> pa.Table:
    return holdings.filter(pc.starts_with(holdings.column("product_id"), prefix))


def test_counts_match_the_data(
    loaded: tuple[Path, LoadSummary], tables: dict[str, pa.Table]
) -> None:
    _, summary = loaded
    assert summary.rows["customers"] == tables["customers"].num_rows == CLIENTS
    holdings = tables["holdings"]
    assert by_prefix(holdings, "card_").num_rows == CARDS
    assert by_prefix(holdings, "loan_").num_rows == LOANS
    assert by_prefix(holdings, "account_").num_rows == CLIENTS  # one disposition per client
    # Orders: every order is a holding or merged into one, and the summary says how many.
    merged = next(n for n in summary.notes if "merged" in n)
    merged_count = int(merged.split("holdings: ")[1].split()[0])
    assert by_prefix(holdings, "order_").num_rows + merged_count == ORDERS
    # One purchase per dated acquisition: accounts (per client), cards, loans.
    assert summary.rows["events"] == tables["events"].num_rows == CLIENTS + CARDS + LOANS


def test_references_hold(tables: dict[str, pa.Table]) -> None:
    customers = tables["customers"].column("customer_id")
    products = tables["products"].column("product_id")
    for name in ("holdings", "events"):
        assert pc.all(pc.is_in(tables[name].column("customer_id"), value_set=customers)).as_py()
        assert pc.all(pc.is_in(tables[name].column("product_id"), value_set=products)).as_py()


def test_catalogue(tables: dict[str, pa.Table]) -> None:
    products = {p["product_id"]: p for p in tables["products"].to_pylist()}
    assert {p for p in products if p.startswith("card_")} == {
        "card_junior",
        "card_classic",
        "card_gold",
    }
    assert {p for p in products if p.startswith("loan_")} == {
        f"loan_{m}m" for m in (12, 24, 36, 48, 60)
    }
    assert products["order_household"]["category"] == "payment"
    assert products["order_insurance"]["category"] == "insurance"
    assert products["order_leasing"]["category"] == "loan"
    assert products["account_monthly_statement"]["category"] == "deposit"
    assert products["card_gold"]["min_age"] == 18
    assert products["card_junior"]["min_age"] == 0


def test_customers_from_clients(tables: dict[str, pa.Table]) -> None:
    customers = {c["customer_id"]: c for c in tables["customers"].to_pylist()}
    # client 1: born 1970-12-13 (28 on 1998-12-31), district 18, account 1 created 1995-03-24.
    assert customers[1]["age_band"] == "25-34"
    assert customers[1]["created_at"] == datetime(1995, 3, 24, tzinfo=UTC)
    assert customers[1]["relationship_start"] == customers[1]["created_at"]
    # client 2: born 1945-02-04 (53), Prague (district 1) -> metro.
    assert customers[2]["age_band"] == "45-54"
    assert customers[2]["city_tier"] == "metro"
    minors = sum(1 for c in customers.values() if c["age_band"] is None)
    assert minors == 72  # born after 1980-12-31: no canonical band under 18


def test_every_card_and_loan_is_a_dated_purchase(
    tables: dict[str, pa.Table], shared_data: Path
) -> None:
    events = tables["events"]
    holdings = tables["holdings"]
    folder = shared_data / "czech_bank"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("events", events)
        con.register("holdings", holdings)
        unmatched_cards = con.sql(
            f"""
            SELECT count(*) FROM read_csv('{folder / "card.csv"}') k
            JOIN read_csv('{folder / "disp.csv"}') d USING (disp_id)
            ANTI JOIN events e ON e.event_id = 'czech_bank-card-' || k.card_id
              AND e.customer_id = d.client_id AND e.product_id = 'card_' || k.type
              AND e.event_timestamp = k.issued::TIMESTAMPTZ AND e.event_type = 'purchase'
            """
        ).fetchall()[0][0]
        assert unmatched_cards == 0
        loans = con.sql(
            f"""
            SELECT l.status, h.closed_at IS NULL AS open, count(*) FROM read_csv('{folder / "loan.csv"}') l
            JOIN read_csv('{folder / "disp.csv"}') d ON d.account_id = l.account_id AND d.type = 'OWNER'
            JOIN holdings h ON h.customer_id = d.client_id
              AND h.product_id = 'loan_' || l.duration || 'm' AND h.opened_at = l.date::TIMESTAMPTZ
            GROUP BY ALL ORDER BY ALL
            """
        ).fetchall()
    assert sum(n for *_, n in loans) == LOANS
    # Finished contracts (A, B) are closed; running ones (C, D) open.
    assert {(status, is_open) for status, is_open, _ in loans} == {
        ("A", False),
        ("B", False),
        ("C", True),
        ("D", True),
    }


def test_last_acquired_product_is_recoverable(tables: dict[str, pa.Table]) -> None:
    """No customer has two purchases at the same instant, so 'last acquired' is well defined."""
    events = tables["events"]
    per_instant = events.group_by(["customer_id", "event_timestamp"]).aggregate([([], "count_all")])
    assert pc.max(per_instant.column("count_all")).as_py() == 1


def test_rules() -> None:
    assert age_band(date(1980, 12, 31)) == "18-24"
    assert age_band(date(1981, 1, 1)) is None
    assert age_band(date(1930, 1, 1)) == "65+"
    assert city_tier(1_204_953, 100.0) == "metro"
    assert city_tier(88_884, 46.0) == "rural"
    assert city_tier(75_000, 72.0) == "urban"
    assert city_tier(75_000, 55.0) == "town"


# --- error paths and the original file format (small crafted copies in tmp_path) -------------

ORIGINAL = {
    "client.asc": "client_id;birth_number;district_id\n1;706213;1\n2;450204;1\n3;855110;1\n",
    "disp.asc": 'disp_id;client_id;account_id;type\n1;1;10;"OWNER"\n2;2;10;"DISPONENT"\n3;3;11;"OWNER"\n',
    "account.asc": 'account_id;district_id;frequency;date\n10;1;"POPLATEK MESICNE";930101\n11;1;"POPLATEK TYDNE";970515\n',
    "card.asc": 'card_id;disp_id;type;issued\n100;1;"gold";981016\n101;3;"junior";980102\n',
    "loan.asc": 'loan_id;account_id;date;amount;duration;payments;status\n500;10;940105;80952;24;3373.00;"A"\n',
    "order.asc": 'order_id;account_id;bank_to;account_to;amount;k_symbol\n1;10;"YZ";1;2452.0;"SIPO"\n2;10;"ST";2;100.0;"SIPO"\n3;11;"QR";3;50.0;" "\n',
    "district.asc": "A1;A2;A3;A4;A5;A6;A7;A8;A9;A10;A11;A12;A13;A14;A15;A16\n1;Praha;Prague;1204953;0;0;0;1;1;100.0;12541;0.29;0.43;167;85677;99107\n",
}


def test_original_format_yymmdd_and_birth_number(
    tmp_path: Path,
    raw: Callable[[Path, str], pa.Table],
    conforms: Callable[[Path, str], pa.Table],
    passes_validation: Callable[[Path], None],
) -> None:
    for name, text in ORIGINAL.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    summary = load_czech_bank(tmp_path, out, roots=[tmp_path])
    assert any("birth_number" in n for n in summary.notes)
    for table in ("customers", "products", "holdings", "events"):
        conforms(out, table)
    passes_validation(out)
    customers = {c["customer_id"]: c for c in raw(out, "customers").to_pylist()}
    # 706213: woman born 1970-12-13 (month 62 - 50) -> 28; 450204: man born 1945-02-04.
    assert customers[1]["age_band"] == "25-34"
    assert customers[2]["age_band"] == "45-54"
    assert customers[3]["age_band"] is None  # 1985-01-10: a minor in 1998
    assert customers[2]["created_at"] == datetime(1993, 1, 1, tzinfo=UTC)
    holdings = {(h["customer_id"], h["product_id"]): h for h in raw(out, "holdings").to_pylist()}
    assert holdings[(1, "card_gold")]["opened_at"] == datetime(1998, 10, 16, tzinfo=UTC)
    assert holdings[(1, "loan_24m")]["closed_at"] == datetime(1996, 1, 5, tzinfo=UTC)
    assert (2, "loan_24m") not in holdings  # the disponent cannot hold the owner's loan
    assert (2, "account_monthly_statement") in holdings
    assert (3, "order_other") in holdings  # blank k_symbol
    # 1: account, gold card, loan, household (two SIPO orders); 2: account; 3: account,
    # junior card, other order.
    assert summary.rows["holdings"] == 8
    assert any("1 source record(s) merged" in n for n in summary.notes)


def test_deterministic(tmp_path: Path) -> None:
    for name, text in ORIGINAL.items():
        (tmp_path / name).write_text(text)
    load_czech_bank(tmp_path, tmp_path / "a", roots=[tmp_path])
    load_czech_bank(tmp_path, tmp_path / "b", roots=[tmp_path])
    first = sorted((tmp_path / "a" / "raw").rglob("*.parquet"))
    second = sorted((tmp_path / "b" / "raw").rglob("*.parquet"))
    assert [p.relative_to(tmp_path / "a") for p in first] == [
        p.relative_to(tmp_path / "b") for p in second
    ]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def copy_real(shared_data: Path, target: Path) -> Path:
    target.mkdir()
    for path in (shared_data / "czech_bank").glob("*.csv"):
        shutil.copy(path, target / path.name)
    return target


def test_missing_file_is_named(shared_data: Path, tmp_path: Path) -> None:
    folder = copy_real(shared_data, tmp_path / "czech")
    (folder / "card.csv").unlink()
    with pytest.raises(MissingSourceError, match=r"card\.csv"):
        load_czech_bank(folder, tmp_path / "out", roots=[tmp_path])
    with pytest.raises(MissingSourceError, match="does not exist"):
        load_czech_bank(tmp_path / "nowhere", tmp_path / "out", roots=[tmp_path])


def test_missing_column_is_named(shared_data: Path, tmp_path: Path) -> None:
    folder = copy_real(shared_data, tmp_path / "czech")
    loan = folder / "loan.csv"
    loan.write_text(loan.read_text().replace('"duration"', '"length"'))
    with pytest.raises(MissingColumnError, match="'duration'"):
        load_czech_bank(folder, tmp_path / "out", roots=[tmp_path])


def test_unknown_codes_are_refused(shared_data: Path, tmp_path: Path) -> None:
    folder = copy_real(shared_data, tmp_path / "czech")
    card = folder / "card.csv"
    card.write_text(card.read_text().replace('"gold"', '"platinum"', 1))
    with pytest.raises(ValueError, match="'platinum'"):
        load_czech_bank(folder, tmp_path / "out", roots=[tmp_path])
