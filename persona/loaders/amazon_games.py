"""Amazon Games (SASRec preprocessing): ``Video.txt`` with ``user_id item_id`` per line.

Ids are kept as in the file (customer_id = user_id, product_id = str(item_id)) so the SASRec
paper's leave-one-out protocol can be reproduced on the canonical tables. The file has no
timestamps, only each user's order, so timestamps are synthetic: see :data:`BASE_TIME`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from persona.loaders.errors import LoaderError
from persona.loaders.output import write_load
from persona.loaders.paths import checked_input, require_file
from persona.loaders.summary import LoadSummary
from persona.schemas import EVENTS, TIMESTAMP

SOURCE = "amazon_games"
FILE_NAME = "Video.txt"
#: A user's n-th interaction (n = 0, 1, ...) happens at BASE_TIME + n * STEP.
BASE_TIME = datetime(2018, 1, 1, tzinfo=UTC)
STEP = timedelta(hours=1)


def load_amazon_games(
    source: Path,
    out_dir: Path,
    *,
    app: str = "rib",
    roots: Sequence[Path] | None = None,
) -> LoadSummary:
    """Load ``Video.txt`` (``source`` is the file or its folder) into ``out_dir/raw/``.

    Writes customers (one per user), products (one per item) and one ``purchase`` event per
    line, in ``app``. The n-th line of a user (from 0) gets timestamp ``BASE_TIME + n hours``,
    which preserves each user's order and never lies in the future.
    """
    if app not in domain.APPS:
        raise LoaderError(f"app {app!r} is not one of {', '.join(domain.APPS)}")
    path = checked_input(source, roots)
    if path.is_dir():
        path = path / FILE_NAME
    require_file(path, "Amazon Games interactions (user_id item_id per line)")
    users, items = _read_pairs(path)

    positions = _positions_within_user(users)
    last = BASE_TIME + STEP * int(positions.max(initial=0))
    if last > datetime.now(UTC):
        raise LoaderError(
            f"{path}: a user has {positions.max() + 1} interactions; synthetic "
            f"timestamps would reach {last:%Y-%m-%d}, in the future"
        )
    base_us = int(BASE_TIME.timestamp() * 1_000_000)
    step_us = int(STEP / timedelta(microseconds=1))
    timestamps = pa.array(base_us + positions * step_us, type=TIMESTAMP)
    line_numbers = pa.array(np.arange(1, len(users) + 1))
    event_ids = pc.binary_join_element_wise(f"{SOURCE}-", pc.cast(line_numbers, pa.string()), "")

    events = build_table(
        EVENTS,
        len(users),
        {
            "event_id": event_ids,
            "customer_id": users,
            "product_id": pc.cast(pa.array(items), pa.string()),
            "app": app,
            "event_type": "purchase",
            "event_timestamp": timestamps,
        },
    )
    customer_ids = np.unique(users)
    customers = unknown_customers(
        customer_ids,
        pa.repeat(pa.scalar(BASE_TIME, type=TIMESTAMP), len(customer_ids)),
        apps_enrolled=(app,),
    )
    item_ids = np.unique(items)
    products = other_products(
        [str(i) for i in item_ids.tolist()], [f"Amazon Games item {i}" for i in item_ids.tolist()]
    )
    notes = [
        f"events: one 'purchase' in app {app!r} per line; the file has no timestamps, so a "
        f"user's n-th line (n from 0) is at {BASE_TIME:%Y-%m-%d %H:%M} UTC + n hours "
        f"(longest user sequence: {int(positions.max(initial=-1)) + 1} lines)",
        f"customers: customer_id = user_id, created_at = {BASE_TIME:%Y-%m-%d} (synthetic)",
        "products: product_id = str(item_id)",
        NON_BANK_CUSTOMER_NOTE,
        NON_BANK_PRODUCT_NOTE,
    ]
    return write_load(
        source=SOURCE,
        input_path=path,
        out_dir=out_dir,
        tables={"customers": customers, "products": products, "events": events},
        notes=notes,
    )


def _read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(user_ids, item_ids)`` as int64 arrays in file order; malformed lines are an error."""
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=["user_id", "item_id"]),
            parse_options=pcsv.ParseOptions(delimiter=" "),
            convert_options=pcsv.ConvertOptions(
                column_types={"user_id": pa.int64(), "item_id": pa.int64()}
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise LoaderError(f"{path}: not 'user_id item_id' integer pairs: {exc}") from exc
    for column in ("user_id", "item_id"):
        values = table.column(column)
        nulls = values.null_count
        if nulls:
            raise LoaderError(f"{path}: {nulls} line(s) without a {column}")
        below_one = pc.sum(pc.less(values, 1).cast(pa.int64())).as_py() or 0
        if below_one:
            raise LoaderError(f"{path}: {below_one} line(s) with {column} < 1 (ids start at 1)")
    if table.num_rows == 0:
        raise LoaderError(f"{path}: the file has no interactions")
    users = table.column("user_id").to_numpy()
    items = table.column("item_id").to_numpy()
    return users, items


def _positions_within_user(users: np.ndarray) -> np.ndarray:
    """0-based index of each line among its user's lines, in file order."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    run_lengths = np.diff(np.r_[starts, len(users)])
    within = np.arange(len(users)) - np.repeat(starts, run_lengths)
    positions = np.empty(len(users), dtype=np.int64)
    positions[order] = within
    return positions
