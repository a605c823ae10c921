"""PKDD'99 "financial" data of a Czech bank (1993-1998): clients, accounts, cards, loans, orders.

Mapping (each rule also goes into the load's notes):

* customers = clients. ``created_at`` = creation date of the account of their first disposition;
  ``age_band`` from the birth date as of :data:`DATA_END` (under 18: null, no canonical band);
  ``city_tier`` from the district's inhabitants and urban ratio (:func:`city_tier`).
* products = a catalogue derived from the data: current accounts by statement frequency, cards
  by type, loans by duration, permanent orders by purpose (``k_symbol``).
* holdings: the account product for every client with a disposition on the account; a card for
  the disposition it was issued to; loans and permanent orders for the account's owner(s), who
  alone may ask for loans and issue orders. Loans with a finished contract (status A/B) close
  ``duration`` months after they were granted.
* events: one ``purchase`` (app ``rib``) per dated acquisition (account, card, loan), so the
  last acquired product is recoverable. Orders carry no date: their holdings open on the
  account's creation date and get no event.

Dates may be ISO dates (this distribution) or ``YYMMDD`` numbers (the original ``.asc`` files,
years 19YY); the original ``birth_number`` (women: month + 50) is decoded when present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from persona import domain
from persona.loaders.canonical import build_table
from persona.loaders.errors import LoaderError, MissingColumnError, MissingSourceError
from persona.loaders.output import write_load
from persona.loaders.paths import checked_input, require_dir
from persona.loaders.summary import LoadSummary
from persona.schemas import CUSTOMERS, EVENTS, HOLDINGS, PRODUCTS, TIMESTAMP

SOURCE = "czech_bank"
#: Last day covered by the data; ages are computed on this day.
DATA_END = date(1998, 12, 31)
APP = "rib"
#: Clients hold accounts at a bank, so standard due diligence (KYC level 2) is assumed.
CUSTOMER_KYC_LEVEL = 2

#: Columns each file must have (lower case; file headers are matched case-insensitively).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "client": ("client_id", "district_id"),
    "disp": ("disp_id", "client_id", "account_id", "type"),
    "account": ("account_id", "frequency", "date"),
    "card": ("card_id", "disp_id", "type", "issued"),
    "loan": ("loan_id", "account_id", "date", "amount", "duration", "status"),
    "order": ("order_id", "account_id", "k_symbol"),
    "district": ("district_id", "a4", "a10"),
}
DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "account": ("date",),
    "card": ("issued",),
    "loan": ("date",),
}


@dataclass(frozen=True)
class BankProduct:
    product_id: str
    name: str
    category: str
    min_age: int
    risk_class: int


#: Statement frequency (account.frequency) -> current-account product.
ACCOUNT_PRODUCTS: dict[str, BankProduct] = {
    "POPLATEK MESICNE": BankProduct(
        "account_monthly_statement", "Current account, monthly statement", "deposit", 0, 1
    ),
    "POPLATEK TYDNE": BankProduct(
        "account_weekly_statement", "Current account, weekly statement", "deposit", 0, 1
    ),
    "POPLATEK PO OBRATU": BankProduct(
        "account_statement_per_transaction",
        "Current account, statement after each transaction",
        "deposit",
        0,
        1,
    ),
}
#: Card type (card.type, lower case) -> card product. Junior cards are for minors.
CARD_PRODUCTS: dict[str, BankProduct] = {
    "junior": BankProduct("card_junior", "Junior debit card", "card", 0, 1),
    "classic": BankProduct("card_classic", "Classic credit card", "card", 18, 2),
    "gold": BankProduct("card_gold", "Gold credit card", "card", 18, 2),
}
#: Permanent order purpose (order.k_symbol; '' when empty) -> standing-order product.
ORDER_PRODUCTS: dict[str, BankProduct] = {
    "SIPO": BankProduct(
        "order_household", "Standing order: household payments (SIPO)", "payment", 0, 1
    ),
    "POJISTNE": BankProduct(
        "order_insurance", "Standing order: insurance premium", "insurance", 0, 1
    ),
    "LEASING": BankProduct("order_leasing", "Standing order: leasing instalment", "loan", 18, 2),
    "UVER": BankProduct("order_loan_payment", "Standing order: loan repayment", "loan", 18, 2),
    "": BankProduct("order_other", "Standing order (other purpose)", "payment", 0, 1),
}
#: Loan statuses whose contract is finished (A: paid off, B: finished, not paid).
FINISHED_LOAN_STATUSES: tuple[str, ...] = ("A", "B")


def loan_product(duration_months: int) -> BankProduct:
    return BankProduct(
        f"loan_{duration_months}m", f"Personal loan, {duration_months} months", "loan", 18, 2
    )


def city_tier(inhabitants: int, urban_ratio_pct: float) -> str:
    """Tier of a district (okres) from its inhabitants and its % of urban inhabitants.

    metro: big-city districts (>= 150,000 inhabitants, >= 95 % urban: Prague, Brno, Ostrava,
    Plzen); urban: >= 70 % urban; town: >= 50 %; rural: below.
    """
    if inhabitants >= 150_000 and urban_ratio_pct >= 95.0:
        return "metro"
    if urban_ratio_pct >= 70.0:
        return "urban"
    if urban_ratio_pct >= 50.0:
        return "town"
    return "rural"


def age_band(birth: date, on: date = DATA_END) -> str | None:
    """Canonical age band of someone born on ``birth``, on day ``on``; None under 18."""
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if age < 18:
        return None
    for band, upper in zip(domain.AGE_BANDS, (24, 34, 44, 54, 64), strict=False):
        if age <= upper:
            return band
    return domain.AGE_BANDS[-1]


def load_czech_bank(
    source: Path, out_dir: Path, *, roots: Sequence[Path] | None = None
) -> LoadSummary:
    """Load the PKDD'99 files in folder ``source`` into ``out_dir/raw/`` (all four tables)."""
    folder = require_dir(checked_input(source, roots), "Czech bank (PKDD'99) data")
    notes: list[str] = []
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        frames = {name: _read(con, folder, name, notes) for name in REQUIRED_COLUMNS}
        for name, table in frames.items():
            con.register(name, table)
        customers = _customers(con, notes)
        account_holdings = _account_holdings(con, notes)
        card_holdings = _card_holdings(con, notes)
        loan_holdings = _loan_holdings(con, notes)
        order_holdings = _order_holdings(con, notes)

    acquisitions = pa.concat_tables(
        [account_holdings, card_holdings, loan_holdings, order_holdings]
    )
    catalogue = _catalogue(acquisitions)
    holdings = _merge_holdings(acquisitions, notes)
    events = _purchase_events(acquisitions, notes)
    products = build_table(
        PRODUCTS,
        len(catalogue),
        {
            "product_id": [p.product_id for p in catalogue],
            "name": [p.name for p in catalogue],
            "category": [p.category for p in catalogue],
            "apps": domain.APPS,
            "customer_types": ("retail",),
            "min_age": [p.min_age for p in catalogue],
            "min_kyc_level": CUSTOMER_KYC_LEVEL,
            "risk_class": [p.risk_class for p in catalogue],
            "margin_weight": 1.0,
            "is_marketing_offer": False,
        },
    )
    notes += [
        "products: catalogue derived from the values present (statement frequencies, card "
        "types, loan durations, order purposes); all four apps, retail only, min KYC level 2, "
        "min age 18 for credit products, margin_weight 1.0 (unknown), not marketing offers",
        f"customers: customer_type 'retail', kyc_level {CUSTOMER_KYC_LEVEL} (assumed for "
        "account holders), consents false (unknown), apps_enrolled ['rib']; income, "
        "occupation, life stage and risk profile unknown (null); gender is not canonical",
    ]
    notes += _under_age_notes(holdings, catalogue, frames["client"])
    return write_load(
        source=SOURCE,
        input_path=folder,
        out_dir=out_dir,
        tables={
            "customers": customers,
            "products": products,
            "holdings": holdings,
            "events": events,
        },
        notes=notes,
    )


# --- reading ------------------------------------------------------------------------------


def _read(con: duckdb.DuckDBPyConnection, folder: Path, name: str, notes: list[str]) -> pa.Table:
    """One PKDD'99 file as Arrow, column names lower case, date columns as date32."""
    path = folder / f"{name}.csv"
    if not path.is_file() and (folder / f"{name}.asc").is_file():
        path = folder / f"{name}.asc"  # the original distribution's ';'-separated files
    if not path.is_file():
        raise MissingSourceError(f"Czech bank data: file {path} does not exist")
    table = con.sql("SELECT * FROM read_csv(?, header = true)", params=[str(path)]).to_arrow_table()
    table = table.rename_columns([c.lower() for c in table.column_names])
    if (
        name == "district"
        and "district_id" not in table.column_names
        and "a1" in table.column_names
    ):
        table = table.rename_columns(
            ["district_id" if c == "a1" else c for c in table.column_names]
        )
    required = list(REQUIRED_COLUMNS[name])
    if name == "client" and not {"birth_date", "birth_number"} & set(table.column_names):
        required.append("birth_date")
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise MissingColumnError(path, missing, table.column_names)
    for column in DATE_COLUMNS.get(name, ()):
        table = _replace(table, column, _as_dates(table.column(column), path, column))
    if name == "client":
        table = _with_birth_date(table, path, notes)
    return table


def _replace(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.column_names.index(column), column, values)


def _as_dates(values: pa.ChunkedArray, path: Path, column: str) -> pa.Array:
    """Dates from DATE/TIMESTAMP values, ISO strings or YYMMDD numbers (19YY)."""
    if pa.types.is_date32(values.type):
        parsed = values.combine_chunks()
    elif pa.types.is_timestamp(values.type) or pa.types.is_date64(values.type):
        parsed = values.cast(pa.date32()).combine_chunks()
    else:
        parsed = pa.array([_parse_date(v) for v in values.to_pylist()], pa.date32())
    bad = parsed.null_count
    if bad:
        example = values.filter(pc.is_null(parsed))[0].as_py()
        raise LoaderError(
            f"{path}: {bad} row(s) with no valid date in {column!r}, e.g. {example!r}"
        )
    return parsed


def _parse_date(value: object) -> date | None:
    if value is None:
        return None
    text = str(value).strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        if len(text) == 6 and text.isdigit():
            return date(1900 + int(text[:2]), int(text[2:4]), int(text[4:]))
    except ValueError:
        return None
    return None


def _with_birth_date(table: pa.Table, path: Path, notes: list[str]) -> pa.Table:
    if "birth_date" in table.column_names:
        return _replace(
            table, "birth_date", _as_dates(table.column("birth_date"), path, "birth_date")
        )
    # Original encoding: YYMMDD for men, YYMM+50DD for women.
    decoded: list[date | None] = []
    for value in table.column("birth_number").to_pylist():
        text = "" if value is None else f"{int(value):06d}"
        month = int(text[2:4]) if len(text) == 6 else 0
        decoded.append(
            _parse_date(f"{text[:2]}{month - 50 if month > 50 else month:02d}{text[4:]}")
        )
    parsed = pa.array(decoded, pa.date32())
    if parsed.null_count:
        raise LoaderError(f"{path}: {parsed.null_count} row(s) with an invalid 'birth_number'")
    notes.append("customers: birth dates decoded from birth_number (YYMMDD; women: month + 50)")
    return table.append_column("birth_date", parsed)


# --- customers ----------------------------------------------------------------------------


def _customers(con: duckdb.DuckDBPyConnection, notes: list[str]) -> pa.Table:
    rows = con.sql(
        """
        SELECT c.client_id, c.birth_date, min(a.date) AS first_account_date,
               any_value(dt.a4) AS inhabitants, any_value(dt.a10) AS urban_ratio
        FROM client c
        LEFT JOIN disp d ON d.client_id = c.client_id
        LEFT JOIN account a ON a.account_id = d.account_id
        LEFT JOIN district dt ON dt.district_id = c.district_id
        GROUP BY c.client_id, c.birth_date
        ORDER BY c.client_id
        """
    ).fetchall()
    without_account = [r[0] for r in rows if r[2] is None]
    if without_account:
        raise LoaderError(
            f"Czech bank data: {len(without_account)} client(s) have no disposition on a known "
            f"account, so no customer creation date, e.g. client_id {without_account[0]}"
        )
    bands = [age_band(r[1]) for r in rows]
    tiers = [None if r[3] is None else city_tier(int(r[3]), float(r[4])) for r in rows]
    created = pa.array([_midnight(r[2]) for r in rows], TIMESTAMP)
    minors = sum(1 for b in bands if b is None)
    no_district = sum(1 for t in tiers if t is None)
    notes.append(
        f"customers: {len(rows):,} clients; age_band from birth date as of {DATA_END} "
        f"({minors} under 18 -> null); city_tier from the district's inhabitants and urban "
        "ratio (metro: >=150k and >=95% urban; urban >=70%; town >=50%; else rural)"
        + (f"; {no_district} with an unknown district -> null" if no_district else "")
    )
    notes.append(
        "customers: created_at = relationship_start = creation date of the account of the "
        "client's first disposition (00:00 UTC)"
    )
    return build_table(
        CUSTOMERS,
        len(rows),
        {
            "customer_id": [r[0] for r in rows],
            "created_at": created,
            "relationship_start": created,
            "customer_type": "retail",
            "age_band": bands,
            "city_tier": tiers,
            "kyc_level": CUSTOMER_KYC_LEVEL,
            "consent_marketing": False,
            "consent_data_sharing": False,
            "apps_enrolled": (APP,),
        },
    )


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# --- holdings -----------------------------------------------------------------------------
# Each builder returns acquisitions: customer_id, product key, opened (date), closed (date),
# amount, kind ('account'|'card'|'loan'|'order'), source_id (the source record's id).

_ACQUISITION_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("product_id", pa.string()),
        ("opened", pa.date32()),
        ("closed", pa.date32()),
        ("amount", pa.float64()),
        ("kind", pa.string()),
        ("source_id", pa.string()),
    ]
)


def _acquisitions(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    return con.sql(sql).to_arrow_table().cast(_ACQUISITION_SCHEMA)


def _check_codes(values: list[str], known: dict[str, BankProduct], what: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise LoaderError(
            f"Czech bank data: unknown {what} value(s) {', '.join(repr(v) for v in unknown)}; "
            f"known: {', '.join(repr(k) for k in known)}"
        )


def _dangling(con: duckdb.DuckDBPyConnection, sql: str, what: str) -> None:
    """Source rows that reference nothing cannot be mapped: refuse rather than drop them."""
    count, example = con.sql(f"SELECT count(*), min(id) FROM ({sql})").fetchall()[0]
    if count:
        raise LoaderError(f"Czech bank data: {count} {what}, e.g. id {example}")


def _account_holdings(con: duckdb.DuckDBPyConnection, notes: list[str]) -> pa.Table:
    _dangling(
        con,
        "SELECT d.disp_id AS id FROM disp d ANTI JOIN account a ON a.account_id = d.account_id",
        "disposition(s) refer to no account",
    )
    _dangling(
        con,
        "SELECT d.disp_id AS id FROM disp d ANTI JOIN client c ON c.client_id = d.client_id",
        "disposition(s) refer to no client",
    )
    frequencies = [r[0] for r in con.sql("SELECT DISTINCT frequency FROM account").fetchall()]
    _check_codes(frequencies, ACCOUNT_PRODUCTS, "account frequency")
    mapping = ", ".join(f"('{k}', '{p.product_id}')" for k, p in ACCOUNT_PRODUCTS.items())
    table = _acquisitions(
        con,
        f"""
        SELECT d.client_id AS customer_id, m.product_id, a.date AS opened, NULL AS closed,
               NULL AS amount, 'account' AS kind,
               a.account_id::VARCHAR || '-' || d.client_id::VARCHAR AS source_id
        FROM disp d JOIN account a ON a.account_id = d.account_id
        JOIN (VALUES {mapping}) m(frequency, product_id) ON m.frequency = a.frequency
        ORDER BY d.disp_id
        """,
    )
    notes.append(
        f"holdings: {table.num_rows:,} current accounts (product by statement frequency) for "
        "every client with a disposition (owner or user), opened on the account's creation date"
    )
    return table


def _card_holdings(con: duckdb.DuckDBPyConnection, notes: list[str]) -> pa.Table:
    _dangling(
        con,
        "SELECT k.card_id AS id FROM card k ANTI JOIN disp d ON d.disp_id = k.disp_id",
        "card(s) refer to no disposition",
    )
    types = [r[0] for r in con.sql("SELECT DISTINCT lower(type) FROM card").fetchall()]
    _check_codes(types, CARD_PRODUCTS, "card type")
    table = _acquisitions(
        con,
        """
        SELECT d.client_id AS customer_id, 'card_' || lower(k.type) AS product_id,
               k.issued AS opened, NULL AS closed, NULL AS amount, 'card' AS kind,
               k.card_id::VARCHAR AS source_id
        FROM card k JOIN disp d ON d.disp_id = k.disp_id
        ORDER BY k.card_id
        """,
    )
    notes.append(f"holdings: {table.num_rows:,} cards for the client of the card's disposition")
    return table


def _loan_holdings(con: duckdb.DuckDBPyConnection, notes: list[str]) -> pa.Table:
    _dangling(
        con,
        "SELECT l.loan_id AS id FROM loan l ANTI JOIN disp d "
        "ON d.account_id = l.account_id AND upper(d.type) = 'OWNER'",
        "loan(s) are on an account without an owner",
    )
    finished = ", ".join(f"'{s}'" for s in FINISHED_LOAN_STATUSES)
    table = _acquisitions(
        con,
        f"""
        SELECT d.client_id AS customer_id, 'loan_' || l.duration::VARCHAR || 'm' AS product_id,
               l.date AS opened,
               CASE WHEN upper(l.status) IN ({finished})
                    THEN (l.date + to_months(l.duration::INTEGER))::DATE END AS closed,
               l.amount::DOUBLE AS amount, 'loan' AS kind,
               l.loan_id::VARCHAR || '-' || d.client_id::VARCHAR AS source_id
        FROM loan l JOIN disp d ON d.account_id = l.account_id AND upper(d.type) = 'OWNER'
        ORDER BY l.loan_id, d.client_id
        """,
    )
    closed = (
        table.column("closed").num_chunks and table.num_rows - table.column("closed").null_count
    )
    notes.append(
        f"holdings: {table.num_rows:,} loans (product by duration in months) for the account "
        f"owner, opened on the grant date; {closed} finished contracts (status A/B) closed "
        "`duration` months after the grant date (assumed: the file has no end date)"
    )
    return table


def _order_holdings(con: duckdb.DuckDBPyConnection, notes: list[str]) -> pa.Table:
    _dangling(
        con,
        'SELECT o.order_id AS id FROM "order" o ANTI JOIN disp d '
        "ON d.account_id = o.account_id AND upper(d.type) = 'OWNER' "
        "AND o.account_id IN (SELECT account_id FROM account)",
        "permanent order(s) are on an unknown account or one without an owner",
    )
    symbols = [
        r[0]
        for r in con.sql("SELECT DISTINCT coalesce(trim(k_symbol), '') FROM \"order\"").fetchall()
    ]
    _check_codes(symbols, ORDER_PRODUCTS, "order k_symbol")
    mapping = ", ".join(f"('{k}', '{p.product_id}')" for k, p in ORDER_PRODUCTS.items())
    table = _acquisitions(
        con,
        f"""
        SELECT d.client_id AS customer_id, m.product_id, a.date AS opened, NULL AS closed,
               o.amount::DOUBLE AS amount, 'order' AS kind, o.order_id::VARCHAR AS source_id
        FROM "order" o
        JOIN account a ON a.account_id = o.account_id
        JOIN disp d ON d.account_id = o.account_id AND upper(d.type) = 'OWNER'
        JOIN (VALUES {mapping}) m(k_symbol, product_id)
          ON m.k_symbol = coalesce(trim(o.k_symbol), '')
        ORDER BY o.order_id, d.client_id
        """,
    )
    notes.append(
        f"holdings: {table.num_rows:,} permanent orders (product by k_symbol: SIPO household, "
        "POJISTNE insurance, LEASING leasing, UVER loan repayment, empty other) for the account "
        "owner; orders have no date, so opened_at = the account's creation date (assumed) and "
        "no purchase event is emitted for them"
    )
    return table


def _catalogue(acquisitions: pa.Table) -> list[BankProduct]:
    """Products in the order: accounts, cards, loans, orders; only those the data holds."""
    held = set(acquisitions.column("product_id").to_pylist())
    durations = sorted(
        int(p.removeprefix("loan_").removesuffix("m")) for p in held if p.startswith("loan_")
    )
    candidates = [
        *ACCOUNT_PRODUCTS.values(),
        *CARD_PRODUCTS.values(),
        *(loan_product(d) for d in durations),
        *ORDER_PRODUCTS.values(),
    ]
    return [p for p in candidates if p.product_id in held]


def _merge_holdings(acquisitions: pa.Table, notes: list[str]) -> pa.Table:
    """One holding per (customer, product, opened day): several permanent orders of one purpose
    on one account are one held product."""
    grouped = acquisitions.group_by(
        ["customer_id", "product_id", "opened"], use_threads=False
    ).aggregate([("closed", "max"), ("kind", "count")])
    merged = acquisitions.num_rows - grouped.num_rows
    if merged:
        notes.append(
            f"holdings: {merged} source record(s) merged into a holding of the same product "
            "opened the same day by the same customer (e.g. two household orders on one account)"
        )
    grouped = grouped.sort_by(
        [("customer_id", "ascending"), ("product_id", "ascending"), ("opened", "ascending")]
    )
    return build_table(
        HOLDINGS,
        grouped.num_rows,
        {
            "customer_id": grouped.column("customer_id"),
            "product_id": grouped.column("product_id"),
            "opened_at": grouped.column("opened").cast(TIMESTAMP),
            "closed_at": grouped.column("closed_max").cast(TIMESTAMP),
        },
    )


def _purchase_events(acquisitions: pa.Table, notes: list[str]) -> pa.Table:
    dated = acquisitions.filter(pc.not_equal(acquisitions.column("kind"), "order"))
    dated = dated.sort_by(
        [
            ("customer_id", "ascending"),
            ("opened", "ascending"),
            ("kind", "ascending"),
            ("source_id", "ascending"),
        ]
    )
    event_ids = pc.binary_join_element_wise(
        f"{SOURCE}-", dated.column("kind"), "-", dated.column("source_id"), ""
    )
    same_day = dated.group_by(["customer_id", "opened"], use_threads=False).aggregate(
        [("kind", "count")]
    )
    ties = same_day.filter(pc.greater(same_day.column("kind_count"), 1)).num_rows
    notes.append(
        f"events: {dated.num_rows:,} 'purchase' events in app 'rib', one per dated acquisition "
        "(account, card, loan; loans carry their amount in CZK), at 00:00 UTC of the date; "
        f"{ties} customer-day(s) with more than one acquisition"
    )
    return build_table(
        EVENTS,
        dated.num_rows,
        {
            "event_id": event_ids,
            "customer_id": dated.column("customer_id"),
            "product_id": dated.column("product_id"),
            "app": APP,
            "event_type": "purchase",
            "event_timestamp": dated.column("opened").cast(TIMESTAMP),
            "amount": dated.column("amount"),
        },
    )


def _under_age_notes(
    holdings: pa.Table, catalogue: list[BankProduct], clients: pa.Table
) -> list[str]:
    """Count holdings opened before the product's min_age: a data quirk worth knowing."""
    min_age = {p.product_id: p.min_age for p in catalogue}
    births = dict(
        zip(
            clients.column("client_id").to_pylist(),
            clients.column("birth_date").to_pylist(),
            strict=True,
        )
    )
    under = 0
    for cid, pid, opened in zip(
        holdings.column("customer_id").to_pylist(),
        holdings.column("product_id").to_pylist(),
        holdings.column("opened_at").to_pylist(),
        strict=True,
    ):
        birth = births[cid]
        day = opened.date()
        age = day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
        if age < min_age[pid]:
            under += 1
    if not under:
        return []
    return [
        f"holdings: {under} held product(s) were opened before the product's min_age "
        "(kept as in the data; eligibility applies to new offers)"
    ]
