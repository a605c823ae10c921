"""Example sets from logged impressions (the simulated bank, or any bank log with request ids).

One row per served request: the slate the logging policy showed (``shown``, positions,
propensities), whether each shown item was clicked (``shown_labels``), and the clicked item as
``target`` (the highest-placed click; 0 when nothing was clicked). History is the customer's
product interactions strictly before the request; features are joined point-in-time at the
request time, which precedes every outcome of that request. ``candidates`` are the products the
request could have shown: allowed in the app and for the customer type, not held at that time,
and marketing offers only with marketing consent (the bank's hard rules).

Splits are by time: the last ``test_days`` days are the test set, the ``valid_days`` before them
validation, everything earlier training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from persona.features.catalog import SEQUENCE_LENGTH
from persona.layout import DataLayout, parquet_glob
from training.examples import NO_DEVICE, Manifest
from training.sets.context import features_available, point_in_time_context
from training.sets.dense import Standardiser
from training.sets.interactions import load_interactions, read_vocabulary
from training.sets.point_in_time import connect
from training.sets.rows import ExampleRows
from training.sets.write import FEATURE_SERVICE, write_with_manifest


def build_impression_set(
    data_dir: Path,
    out_dir: Path,
    *,
    dataset: str,
    max_len: int = SEQUENCE_LENGTH,
    valid_days: int = 7,
    test_days: int = 7,
    test_from: np.datetime64 | None = None,
    seed: int = 0,
) -> Manifest:
    """Build ``out_dir`` from ``data_dir``'s clean tables and features.

    ``test_from`` (a day) fixes where the test period starts; by default it is the last
    ``test_days`` days of the log.
    """
    if valid_days < 1 or test_days < 1:
        raise ValueError("valid_days/test_days: must be at least 1")
    if not features_available(data_dir):
        raise FileNotFoundError(f"features: none under {data_dir}; run `persona features build`")
    con = connect()
    vocabulary = read_vocabulary(con, data_dir)
    index = vocabulary.index_of()
    events = parquet_glob(DataLayout(data_dir).clean_table("events"))
    requests = con.sql(
        f"""
        WITH shown AS (
            SELECT request_id, any_value(customer_id) AS customer_id, any_value(app) AS app,
                   any_value(device) AS device, min(CAST(event_timestamp AS TIMESTAMP)) AS ts,
                   list(product_id ORDER BY position) AS shown,
                   list(position ORDER BY position) AS positions,
                   list(propensity ORDER BY position) AS propensities
            FROM read_parquet('{events}', hive_partitioning = false)
            WHERE event_type = 'impression' AND request_id IS NOT NULL
            GROUP BY request_id
        ),
        clicked AS (
            SELECT request_id, list(DISTINCT product_id) AS clicked
            FROM read_parquet('{events}', hive_partitioning = false)
            WHERE event_type = 'click' AND request_id IS NOT NULL
            GROUP BY request_id
        )
        SELECT s.*, COALESCE(c.clicked, []) AS clicked
        FROM shown s LEFT JOIN clicked c USING (request_id)
        ORDER BY s.ts, s.request_id
        """
    ).to_arrow_table()
    if requests.num_rows == 0:
        raise ValueError(f"events: no impressions with a request_id under {data_dir}")
    products = con.sql(
        f"""SELECT product_id, apps, customer_types, is_marketing_offer
            FROM read_parquet('{parquet_glob(DataLayout(data_dir).clean_table("products"))}')"""
    ).to_arrow_table()

    n = requests.num_rows
    customer_id = requests.column("customer_id").to_numpy()
    ts = requests.column("ts").to_numpy()
    shown = [
        np.array([index[p] for p in s], np.int32) for s in requests.column("shown").to_pylist()
    ]
    clicked = [set(c) for c in requests.column("clicked").to_pylist()]
    shown_ids = requests.column("shown").to_pylist()
    labels = [
        np.array([p in c for p in s], np.int8) for s, c in zip(shown_ids, clicked, strict=True)
    ]
    target = np.array(
        [s[np.argmax(lab)] if lab.any() else 0 for s, lab in zip(shown, labels, strict=True)],
        np.int32,
    )

    inter = load_interactions(con, data_dir, vocabulary)
    ends = inter.position_before(customer_id, ts)
    history, history_types = inter.histories(customer_id, ends, max_len)
    targets = np.zeros_like(history)
    targets[:, -1] = target

    context = point_in_time_context(
        con, data_dir, customer_id, ts, tuple(vocabulary.product_ids()[1:])
    )
    apps = np.asarray(requests.column("app").to_pylist(), dtype=object)
    candidates = _eligible(
        products,
        index,
        apps,
        context.customer_type,
        context.consent_marketing,
        context.held,
        target,
    )

    if test_from is None:
        test_from = ts.max().astype("datetime64[D]") - np.timedelta64(test_days - 1, "D")
    test_from = np.datetime64(test_from, "D")
    valid_from = test_from - np.timedelta64(valid_days, "D")
    day = ts.astype("datetime64[D]")
    split = np.where(day >= test_from, "test", np.where(day >= valid_from, "valid", "train"))
    scaler = Standardiser.fit(context.dense[split == "train"])
    rows = ExampleRows(
        customer_id=customer_id,
        event_timestamp=ts,
        app=apps,
        segment=context.segment,
        device=np.asarray(
            [d or NO_DEVICE for d in requests.column("device").to_pylist()], dtype=object
        ),
        history=history,
        history_types=history_types,
        targets=targets,
        target=target,
        context_dense=scaler.apply(context.dense),
        sampled_negatives=None,
        candidates=candidates,
        shown=shown,
        shown_labels=labels,
        shown_positions=[np.asarray(p, np.int16) for p in requests.column("positions").to_pylist()],
        shown_propensities=[
            np.asarray(p, np.float32) for p in requests.column("propensities").to_pylist()
        ],
        split=split.astype(object),
    )
    return write_with_manifest(
        data_dir,
        out_dir,
        rows,
        vocabulary,
        dataset=dataset,
        kind="impressions",
        max_len=max_len,
        dense_features=context.names,
        scaler=scaler,
        feature_service=FEATURE_SERVICE,
        seed=seed,
        notes=[
            f"{n:,} requests; test from {test_from}, validation from {valid_from}",
            f"click rate per request {float((target > 0).mean()):.4f}",
        ],
    )


def _eligible(
    products: pa.Table,
    index: dict[str, int],
    apps: np.ndarray,
    customer_type: np.ndarray,
    consent: np.ndarray,
    held: list[list[str]],
    target: np.ndarray,
) -> list[np.ndarray]:
    """Per request, the products the bank's hard rules allow (the clicked one always included)."""
    item = np.array([index[p] for p in products.column("product_id").to_pylist()], np.int32)
    order = np.argsort(item)
    item = item[order]
    apps_of = [products.column("apps").to_pylist()[i] or [] for i in order]
    types_of = [products.column("customer_types").to_pylist()[i] or [] for i in order]
    marketing = np.asarray(products.column("is_marketing_offer").to_pylist(), dtype=bool)[order]
    allowed_for: dict[tuple[object, object, bool], np.ndarray] = {}
    position = {int(it): k for k, it in enumerate(item)}
    out = []
    for r in range(len(apps)):
        key = (apps[r], customer_type[r], bool(consent[r]))
        if key not in allowed_for:
            mask = np.array([apps[r] in a for a in apps_of]) & np.array(
                [customer_type[r] in t for t in types_of]
            )
            allowed_for[key] = mask if consent[r] else mask & ~marketing
        mask = allowed_for[key].copy()
        for product in held[r]:
            if product in index:
                mask[position[index[product]]] = False
        if target[r]:
            mask[position[int(target[r])]] = True
        out.append(item[mask])
    return out
