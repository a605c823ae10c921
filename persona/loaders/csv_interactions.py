"""Any user's interactions file (CSV or Parquet) -> customers, products and events.

The user names the columns with a :class:`ColumnMapping`; everything else is explicit too: an
app and event type for every row (a mapped column or a default), timestamps that parse. User
ids that are not positive integers get stable int64 ids, kept in ``id_map/customers.parquet``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from persona import domain
from persona.loaders.canonical import (
    NON_BANK_PRODUCT_NOTE,
    build_table,
    other_products,
    unknown_customers,
)
from persona.loaders.errors import LoaderError, MissingColumnError
from persona.loaders.ids import id_map_table
from persona.loaders.output import write_load
from persona.loaders.paths import checked_input, require_file
from persona.loaders.summary import LoadSummary
from persona.schemas import EVENTS, TIMESTAMP

SOURCE = "interactions"
CSV_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
#: timestamp_format values for numeric epochs; anything else is a strptime format.
EPOCH_FORMATS: dict[str, int] = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
#: A user id used as customer_id as is: a positive int64 without leading zeros or signs.
_PLAIN_ID = re.compile(r"[1-9][0-9]{0,18}")
_INT64_MAX = (1 << 63) - 1
_EXAMPLES = 5
#: DuckDB types of the optional numeric fields; their values must convert or the load fails.
_NUMERIC_FIELDS: dict[str, str] = {"position": "SMALLINT", "amount": "DOUBLE"}


class ColumnMapping(BaseModel):
    """Which column of the user's file holds each canonical field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = Field(description="Customer (user) id column.")
    item: str = Field(description="Product (item) id column.")
    timestamp: str = Field(description="When the interaction happened.")
    event_type: str | None = Field(
        default=None, description="Event type column (values: persona.domain.EVENT_TYPES)."
    )
    app: str | None = Field(default=None, description="App column (rib, cib, nli, imobile).")
    position: str | None = Field(
        default=None, description="Rank the item was shown at (1 = top); needed for impressions."
    )
    request_id: str | None = Field(
        default=None, description="Id of the served request, joins clicks to impressions."
    )
    amount: str | None = Field(default=None, description="Amount of money (e.g. of a txn).")

    def optional_columns(self) -> dict[str, str]:
        """Mapped optional canonical field -> source column."""
        fields = {
            "event_type": self.event_type,
            "app": self.app,
            "position": self.position,
            "request_id": self.request_id,
            "amount": self.amount,
        }
        return {field: column for field, column in fields.items() if column is not None}


def load_interactions_csv(
    path: Path,
    out_dir: Path,
    mapping: ColumnMapping,
    *,
    default_app: str | None = None,
    timestamp_format: str | None = None,
    event_type_map: Mapping[str, str] | None = None,
    default_event_type: str | None = None,
    roots: Sequence[Path] | None = None,
) -> LoadSummary:
    """Load a CSV/Parquet interactions file into ``out_dir/raw/`` (customers, products, events).

    Optional mapped columns (position, request_id, amount) are copied to the events; an
    impression without a position is an error.

    * ``default_app`` fills rows whose app is empty, or every row when ``mapping.app`` is None.
    * ``timestamp_format``: a strptime format (e.g. ``'%d/%m/%Y %H:%M'``) or ``epoch_s`` /
      ``epoch_ms`` / ``epoch_us`` for numbers; without it DuckDB's typed or ISO-8601 values are
      used. Timestamps without a zone are taken as UTC.
    * ``event_type_map`` renames source event types to canonical ones (e.g. ``{'view': 'click'}``);
      ``default_event_type`` fills empty ones, or every row when ``mapping.event_type`` is None.

    Raises a :class:`LoaderError` (a ``ValueError``) naming the column or the values it cannot
    map; nothing is dropped.
    """
    source_path = require_file(checked_input(path, roots), "interactions file")
    _check_choice(default_app, domain.APPS, "default_app")
    _check_choice(default_event_type, domain.EVENT_TYPES, "default_event_type")
    for value in (event_type_map or {}).values():
        _check_choice(value, domain.EVENT_TYPES, "event_type_map target")
    if event_type_map and mapping.event_type is None:
        raise LoaderError("event_type_map needs an event type column: set ColumnMapping.event_type")
    if mapping.app is None and default_app is None:
        raise LoaderError(
            "no app for the events: map the app column (ColumnMapping.app) or pass default_app "
            f"(one of {', '.join(domain.APPS)})"
        )
    if mapping.event_type is None and default_event_type is None:
        raise LoaderError(
            "no event type for the events: map the event type column (ColumnMapping.event_type) "
            f"or pass default_event_type (one of {', '.join(domain.EVENT_TYPES)})"
        )

    notes: list[str] = []
    raw = _read(source_path, mapping, timestamp_format, notes)
    n = raw.num_rows
    if n == 0:
        raise LoaderError(f"{source_path}: the file has no rows")

    event_types = _mapped_values(
        raw.column("event_type"),
        column=mapping.event_type,
        default=default_event_type,
        rename=dict(event_type_map or {}),
        allowed=domain.EVENT_TYPES,
        what="event type",
        hint="pass event_type_map={'<source value>': '<canonical>'}",
        path=source_path,
        notes=notes,
    )
    apps = _mapped_values(
        raw.column("app"),
        column=mapping.app,
        default=default_app,
        rename={},
        allowed=domain.APPS,
        what="app",
        hint="pass default_app for empty values",
        path=source_path,
        notes=notes,
    )
    _refuse_nulls(raw.column("user_key"), mapping.user, source_path)
    needs_product = pc.invert(pc.is_in(event_types, value_set=pa.array(["login", "txn"])))
    missing_item = pc.and_(needs_product, pc.is_null(raw.column("item_key")))
    missing_items = pc.sum(missing_item.cast(pa.int64())).as_py() or 0
    if missing_items:
        raise LoaderError(
            f"{source_path}: {missing_items} row(s) with an empty {mapping.item!r} "
            "(only login and txn events may lack an item)"
        )

    impressions = pc.equal(event_types, "impression")
    unplaced = pc.sum(pc.and_(impressions, pc.is_null(raw.column("position"))).cast(pa.int64()))
    if unplaced.as_py():
        where = f"empty {mapping.position!r}" if mapping.position else "no position column"
        raise LoaderError(
            f"{source_path}: {unplaced.as_py()} impression(s) with {where}; an impression needs "
            "the rank it was shown at: map ColumnMapping.position"
        )
    customer_ids, id_map = _customer_ids(raw.column("user_key"), mapping.user, notes)
    row_numbers = pc.cast(pa.array(np.arange(1, n + 1, dtype=np.int64)), pa.string())
    events = build_table(
        EVENTS,
        n,
        {
            "event_id": pc.binary_join_element_wise(f"{source_path.stem}-", row_numbers, ""),
            "customer_id": customer_ids,
            "product_id": raw.column("item_key"),
            "app": apps,
            "event_type": event_types,
            "event_timestamp": raw.column("ts"),
            "request_id": raw.column("request_id"),
            "position": raw.column("position"),
            "amount": raw.column("amount"),
        },
    )
    customers = _customers(events)
    item_ids = sorted(set(raw.column("item_key").drop_null().to_pylist()))
    products = other_products(item_ids, item_ids)

    now = datetime.now(UTC)
    future = pc.sum(pc.greater(raw.column("ts"), pa.scalar(now, TIMESTAMP)).cast(pa.int64()))
    if future.as_py():
        notes.append(
            f"events: {future.as_py()} event(s) have timestamps in the future (validation "
            "will refuse them)"
        )
    notes += [
        f"events: event_id = '{source_path.stem}-<data row number from 1>'; "
        f"product_id = the {mapping.item!r} value as text",
        "customers: created_at = relationship_start = first event; apps_enrolled = the apps "
        "the customer's events are in; customer_type 'retail' (assumed); demographics "
        "unknown (null), kyc_level 0, consents false (never given)",
        NON_BANK_PRODUCT_NOTE.replace("products:", "products: name = item id;"),
    ]
    return write_load(
        source=SOURCE,
        input_path=source_path,
        out_dir=out_dir,
        tables={"customers": customers, "products": products, "events": events},
        notes=notes,
        id_map=id_map,
    )


def _check_choice(value: str | None, allowed: Sequence[str], name: str) -> None:
    if value is not None and value not in allowed:
        raise LoaderError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read(
    path: Path, mapping: ColumnMapping, timestamp_format: str | None, notes: list[str]
) -> pa.Table:
    """user_key, item_key, event_type, app, request_id (text or null), ts (UTC), position,
    amount (numbers or null), in file order."""
    name = path.name.lower()
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        # Results come back in file order: no ORDER BY is needed while insertion order is kept.
        con.execute("SET preserve_insertion_order = true")
        if name.endswith(PARQUET_SUFFIXES):
            reader = f"read_parquet({_quote_literal(str(path))})"
        elif name.endswith(CSV_SUFFIXES):
            reader = f"read_csv({_quote_literal(str(path))}, header = true)"
        else:
            raise LoaderError(
                f"{path}: unknown file type; use one of "
                f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
            )
        try:
            described = con.sql(f"DESCRIBE SELECT * FROM {reader}").fetchall()
        except duckdb.Error as exc:
            raise LoaderError(f"{path}: cannot read the file: {exc}") from exc
        types = {row[0]: str(row[1]) for row in described}
        optional = mapping.optional_columns()
        wanted = [mapping.user, mapping.item, mapping.timestamp, *optional.values()]
        missing = [c for c in dict.fromkeys(wanted) if c not in types]
        if missing:
            raise MissingColumnError(path, missing, list(types))
        if name.endswith(CSV_SUFFIXES):
            # Read ids as text so '007' keeps its zeros; timestamps as text when a format is given.
            as_text = [mapping.user, mapping.item, mapping.event_type, mapping.app]
            as_text.append(mapping.request_id)
            if timestamp_format is not None:
                as_text.append(mapping.timestamp)
            columns = ", ".join(
                f"{_quote_literal(c)}: 'VARCHAR'" for c in dict.fromkeys(as_text) if c is not None
            )
            reader = f"read_csv({_quote_literal(str(path))}, header = true, types = {{{columns}}})"
            if timestamp_format is not None:
                types[mapping.timestamp] = "VARCHAR"
        ts = _timestamp_sql(mapping.timestamp, types[mapping.timestamp], timestamp_format, path)
        text = "CAST({} AS VARCHAR)"
        parts = [
            f"{text.format(_quote_ident(mapping.user))} AS user_key",
            f"{text.format(_quote_ident(mapping.item))} AS item_key",
            f"{ts} AS ts",
            f"{text.format(_quote_ident(mapping.timestamp))} AS ts_raw",
        ]
        for field in ("event_type", "app", "request_id", "position", "amount"):
            column = optional.get(field)
            if column is None:
                parts.append(f"NULL AS {field}")
            elif field in _NUMERIC_FIELDS:
                parts.append(
                    f"TRY_CAST({_quote_ident(column)} AS {_NUMERIC_FIELDS[field]}) AS {field}"
                )
                parts.append(f"{text.format(_quote_ident(column))} AS {field}_raw")
            else:
                parts.append(f"{text.format(_quote_ident(column))} AS {field}")
        select = ", ".join(parts)
        try:
            table = con.sql(f"SELECT {select} FROM {reader}").to_arrow_table()
        except duckdb.Error as exc:
            raise LoaderError(f"{path}: cannot read the mapped columns: {exc}") from exc
    table = table.set_column(
        table.column_names.index("ts"), "ts", table.column("ts").cast(TIMESTAMP)
    )
    _check_timestamps(table, mapping.timestamp, timestamp_format, path)
    for field, duck_type in _NUMERIC_FIELDS.items():
        if f"{field}_raw" in table.column_names:
            raw_values, values = table.column(f"{field}_raw"), table.column(field)
            bad = pc.and_(pc.is_valid(raw_values), pc.is_null(values))
            count = pc.sum(bad.cast(pa.int64())).as_py() or 0
            if count:
                examples = raw_values.filter(bad).slice(0, _EXAMPLES).to_pylist()
                raise LoaderError(
                    f"{path}: {count} value(s) of {optional[field]!r} ({field}) are not "
                    f"{duck_type}, e.g. {examples}"
                )
            table = table.drop_columns([f"{field}_raw"])
    notes.append(
        f"events: timestamps from {mapping.timestamp!r} "
        + (f"with format {timestamp_format!r}" if timestamp_format else "as typed/ISO-8601")
        + "; values without a time zone are taken as UTC"
    )
    return table.drop_columns(["ts_raw"])


def _timestamp_sql(column: str, duck_type: str, fmt: str | None, path: Path) -> str:
    """SQL turning the timestamp column into TIMESTAMPTZ (session zone UTC), NULL if unparsable."""
    col = _quote_ident(column)
    if fmt in EPOCH_FORMATS:
        factor = EPOCH_FORMATS[fmt]
        return (
            f"CAST(make_timestamp(CAST(round(TRY_CAST({col} AS DOUBLE) * {factor}) AS BIGINT))"
            " AS TIMESTAMPTZ)"
        )
    if fmt is not None:
        return f"CAST(try_strptime(CAST({col} AS VARCHAR), {_quote_literal(fmt)}) AS TIMESTAMPTZ)"
    upper = duck_type.upper()
    if upper.startswith(("TIMESTAMP", "DATE")):
        return f"CAST({col} AS TIMESTAMPTZ)"
    if upper == "VARCHAR":
        return f"TRY_CAST({col} AS TIMESTAMPTZ)"
    raise LoaderError(
        f"{path}: timestamp column {column!r} has type {duck_type}; pass timestamp_format "
        f"({', '.join(EPOCH_FORMATS)} for numbers, or a strptime format)"
    )


def _check_timestamps(table: pa.Table, column: str, fmt: str | None, path: Path) -> None:
    raw, parsed = table.column("ts_raw"), table.column("ts")
    if raw.null_count:
        raise LoaderError(f"{path}: {raw.null_count} row(s) with an empty {column!r}")
    bad = pc.is_null(parsed)
    count = pc.sum(bad.cast(pa.int64())).as_py() or 0
    if count:
        examples = raw.filter(bad).slice(0, _EXAMPLES).to_pylist()
        how = f"format {fmt!r}" if fmt else "ISO-8601 (pass timestamp_format)"
        raise LoaderError(
            f"{path}: {count} value(s) of {column!r} do not parse with {how}, e.g. {examples}"
        )


def _mapped_values(
    values: pa.ChunkedArray,
    *,
    column: str | None,
    default: str | None,
    rename: dict[str, str],
    allowed: Sequence[str],
    what: str,
    hint: str,
    path: Path,
    notes: list[str],
) -> pa.ChunkedArray:
    """Canonical values of an app or event type column (renamed, defaults filled, checked)."""
    if column is None:
        notes.append(f"events: {what} {default!r} for every row (no column mapped)")
        return pa.chunked_array([pa.repeat(pa.scalar(default, pa.string()), len(values))])
    if rename:
        keys = pa.array(list(rename), pa.string())
        targets = pa.array(list(rename.values()), pa.string())
        renamed = pc.take(targets, pc.index_in(values, value_set=keys))
        values = pc.coalesce(renamed, values)
        notes.append(f"events: {what} values renamed {rename}")
    empty = values.null_count
    if empty:
        if default is None:
            raise LoaderError(f"{path}: {empty} row(s) with an empty {column!r} ({what}); {hint}")
        values = pc.fill_null(values, default)
        notes.append(f"events: {empty} empty {column!r} value(s) set to {default!r}")
    distinct = set(pc.unique(values).to_pylist())
    unknown = sorted(distinct - set(allowed))
    if unknown:
        shown = ", ".join(repr(v) for v in unknown[:20])
        raise LoaderError(
            f"{path}: column {column!r} has {what} value(s) outside {', '.join(allowed)}: "
            f"{shown}{' ...' if len(unknown) > 20 else ''}; {hint}"
        )
    return values


def _refuse_nulls(values: pa.ChunkedArray, column: str, path: Path) -> None:
    if values.null_count:
        raise LoaderError(f"{path}: {values.null_count} row(s) with an empty {column!r}")


def _customer_ids(
    user_keys: pa.ChunkedArray, column: str, notes: list[str]
) -> tuple[pa.Array, pa.Table | None]:
    """customer_id per row: the user id itself if every id is a plain positive int64, else a
    stable hash of the id text (map returned for id_map/customers.parquet)."""
    distinct = pc.unique(user_keys).to_pylist()
    if all(_PLAIN_ID.fullmatch(k) and int(k) <= _INT64_MAX for k in distinct):
        notes.append(f"customers: customer_id = {column!r} (positive integers)")
        return pc.cast(user_keys, pa.int64()), None
    id_map = id_map_table(distinct)
    positions = pc.index_in(user_keys, value_set=id_map.column("external_id"))
    notes.append(
        f"customers: {column!r} values are not all positive integers; customer_id = first 63 "
        "bits of BLAKE2b(value); map in id_map/customers.parquet"
    )
    return pc.take(id_map.column("customer_id"), positions), id_map


def _customers(events: pa.Table) -> pa.Table:
    """One customer per id: first event time and the sorted apps their events are in."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("events", events)
        table = con.sql(
            """
            SELECT customer_id, min(event_timestamp) AS first_seen,
                   list_sort(list_distinct(list(app))) AS apps
            FROM events GROUP BY customer_id ORDER BY customer_id
            """
        ).to_arrow_table()
    return unknown_customers(
        table.column("customer_id"),
        table.column("first_seen"),
        apps_enrolled=table.column("apps"),
    )
