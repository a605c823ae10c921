"""Open Bandit Dataset sample (ZOZOTOWN): logged impressions with clicks and propensities.

``{policy}/{campaign}/{campaign}.csv`` has one row per shown item: timestamp, item_id, position
(1-3), click, propensity_score and four hashed user features; ``item_context.csv`` lists the
items. Customers are the distinct user-feature combinations (there is no user id).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from persona import domain
from persona.loaders.canonical import (
    NON_BANK_CUSTOMER_NOTE,
    NON_BANK_PRODUCT_NOTE,
    build_table,
    other_products,
    unknown_customers,
)
from persona.loaders.errors import LoaderError, MissingColumnError
from persona.loaders.ids import id_map_table
from persona.loaders.output import write_load
from persona.loaders.paths import checked_input, require_dir, require_file
from persona.loaders.summary import LoadSummary
from persona.schemas import EVENTS, TIMESTAMP

Policy = Literal["random", "bts"]
Campaign = Literal["all", "men", "women"]
POLICIES: tuple[str, ...] = ("random", "bts")
CAMPAIGNS: tuple[str, ...] = ("all", "men", "women")
USER_FEATURES: tuple[str, ...] = tuple(f"user_feature_{i}" for i in range(4))
LOG_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "item_id",
    "position",
    "click",
    "propensity_score",
    *USER_FEATURES,
)
#: A click is logged this long after the impression it belongs to (the log has no click time).
CLICK_DELAY_US = 1_000_000
#: Separator of the user features in a customer's external id.
KEY_SEPARATOR = "|"


def product_id(item_id: int) -> str:
    return f"obd_{item_id}"


def load_open_bandit(
    source: Path,
    out_dir: Path,
    *,
    policy: Policy = "random",
    campaign: Campaign = "all",
    app: str = "rib",
    roots: Sequence[Path] | None = None,
) -> LoadSummary:
    """Load one Open Bandit log (``source`` = the folder holding ``random/`` and ``bts/``).

    Writes customers (one per distinct user-feature combination, id = BLAKE2b hash of the
    features joined by ``|``; map in ``id_map/customers.parquet``), products (``obd_<item_id>``)
    and events: one ``impression`` per row (own request_id, position, propensity, model_version
    and variant = policy) and a ``click`` 1 s later for rows with click = 1. All in ``app``.
    """
    if policy not in POLICIES:
        raise LoaderError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
    if campaign not in CAMPAIGNS:
        raise LoaderError(f"campaign {campaign!r} is not one of {', '.join(CAMPAIGNS)}")
    if app not in domain.APPS:
        raise LoaderError(f"app {app!r} is not one of {', '.join(domain.APPS)}")
    root = require_dir(checked_input(source, roots), "Open Bandit data")
    folder = root / policy / campaign
    log_path = require_file(folder / f"{campaign}.csv", f"Open Bandit log {policy}/{campaign}")
    items_path = require_file(folder / "item_context.csv", "Open Bandit item list")
    log = _read_log(log_path)
    catalogue = _read_item_ids(items_path)

    n = log.num_rows
    keys = pc.binary_join_element_wise(*(log.column(c) for c in USER_FEATURES), KEY_SEPARATOR)
    id_map = id_map_table(keys.to_pylist())
    customer_ids = pc.take(
        id_map.column("customer_id"), pc.index_in(keys, value_set=id_map.column("external_id"))
    )
    prefix = f"open_bandit-{policy}-{campaign}-"
    request_ids = pc.binary_join_element_wise(
        prefix, pc.cast(pa.array(np.arange(n)), pa.string()), ""
    )
    product_ids = pc.binary_join_element_wise(
        "obd_", pc.cast(log.column("item_id"), pa.string()), ""
    )
    common = {
        "customer_id": customer_ids,
        "product_id": product_ids,
        "app": app,
        "request_id": request_ids,
        "position": log.column("position"),
        "model_version": policy,
        "variant": policy,
    }
    impressions = build_table(
        EVENTS,
        n,
        {
            **common,
            "event_id": pc.binary_join_element_wise(request_ids, "impression", "-"),
            "event_type": "impression",
            "event_timestamp": log.column("timestamp"),
            "propensity": log.column("propensity_score"),
        },
    )
    clicked = pc.equal(log.column("click"), 1)
    click_times = pa.array(
        log.column("timestamp").cast(pa.int64()).to_numpy() + CLICK_DELAY_US, TIMESTAMP
    )
    clicks = build_table(
        EVENTS,
        n,
        {
            **common,
            "event_id": pc.binary_join_element_wise(request_ids, "click", "-"),
            "event_type": "click",
            "event_timestamp": click_times,
        },
    ).filter(clicked)
    events = pa.concat_tables([impressions, clicks])

    first_seen = (
        pa.table({"customer_id": customer_ids, "ts": log.column("timestamp")})
        .group_by("customer_id", use_threads=False)
        .aggregate([("ts", "min")])
        .sort_by("customer_id")
    )
    customers = unknown_customers(
        first_seen.column("customer_id"), first_seen.column("ts_min"), apps_enrolled=(app,)
    )
    item_ids = sorted(set(catalogue) | set(log.column("item_id").to_pylist()))
    products = other_products(
        [product_id(i) for i in item_ids], [f"Open Bandit item {i}" for i in item_ids]
    )
    not_listed = sorted(set(log.column("item_id").to_pylist()) - set(catalogue))
    feature_columns = pa.table(
        {
            name: pc.list_element(
                pc.split_pattern(id_map.column("external_id"), KEY_SEPARATOR), index
            )
            for index, name in enumerate(USER_FEATURES)
        }
    )
    for name in USER_FEATURES:
        id_map = id_map.append_column(name, feature_columns.column(name))

    clicks_n = clicks.num_rows
    notes = [
        f"events: {n:,} impressions ({policy}/{campaign}), one request_id per row (the log "
        "has one row per shown item and no round id), position, propensity = "
        f"propensity_score, model_version = variant = {policy!r}; {clicks_n} clicks "
        f"(click rate {clicks_n / n:.2%}) as 'click' events 1 s after their impression with "
        "the same request_id and position; timestamps as logged; app "
        f"{app!r} (assumed: the data come from a fashion e-commerce site)",
        f"customers: {customers.num_rows:,} distinct user_feature_0..3 combinations; "
        "customer_id = first 63 bits of BLAKE2b('f0|f1|f2|f3'), map in id_map/customers.parquet;"
        " created_at = first impression",
        f"products: {products.num_rows} items (product_id 'obd_<item_id>') from item_context.csv"
        + (f"; {len(not_listed)} logged item(s) missing from it added" if not_listed else ""),
        "user-item affinities and item features are not canonical and were not loaded",
        NON_BANK_CUSTOMER_NOTE,
        NON_BANK_PRODUCT_NOTE,
    ]
    return write_load(
        source=f"open_bandit/{policy}/{campaign}",
        input_path=log_path,
        out_dir=out_dir,
        tables={"customers": customers, "products": products, "events": events},
        notes=notes,
        id_map=id_map,
    )


def _header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle), [])


def _read_log(path: Path) -> pa.Table:
    """The log's needed columns, typed, in file order; refuses values it cannot map."""
    header = _header(path)
    missing = [c for c in LOG_COLUMNS if c not in header]
    if missing:
        raise MissingColumnError(path, missing, header)
    types = {
        "timestamp": TIMESTAMP,
        "item_id": pa.int64(),
        "position": pa.int64(),
        "click": pa.int64(),
        "propensity_score": pa.float64(),
        **{c: pa.string() for c in USER_FEATURES},
    }
    try:
        table = pcsv.read_csv(
            path,
            convert_options=pcsv.ConvertOptions(
                include_columns=list(LOG_COLUMNS), column_types=types, strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise LoaderError(f"{path}: cannot parse the log: {exc}") from exc
    for column in LOG_COLUMNS:
        if table.column(column).null_count:
            raise LoaderError(
                f"{path}: {table.column(column).null_count} row(s) without {column!r}"
            )
    checks = {
        "position outside 1..100": pc.or_(
            pc.less(table.column("position"), 1), pc.greater(table.column("position"), 100)
        ),
        "click not 0 or 1": pc.invert(pc.is_in(table.column("click"), value_set=pa.array([0, 1]))),
        "propensity_score outside (0, 1]": pc.or_(
            pc.less_equal(table.column("propensity_score"), 0.0),
            pc.greater(table.column("propensity_score"), 1.0),
        ),
        "item_id < 0": pc.less(table.column("item_id"), 0),
    }
    for what, bad in checks.items():
        count = pc.sum(bad.cast(pa.int64())).as_py() or 0
        if count:
            raise LoaderError(f"{path}: {count} row(s) with {what}")
    return table


def _read_item_ids(path: Path) -> list[int]:
    header = _header(path)
    if "item_id" not in header:
        raise MissingColumnError(path, ["item_id"], header)
    table = pcsv.read_csv(
        path,
        convert_options=pcsv.ConvertOptions(
            include_columns=["item_id"], column_types={"item_id": pa.int64()}
        ),
    )
    return sorted(table.column("item_id").drop_null().to_pylist())
