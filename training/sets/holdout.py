"""Product-holding example sets (data with holdings but few dated events, e.g. the Czech bank).

The protocol the issue names: per customer holding at least two products, the **last-acquired**
product is held out (ties on the latest opening date, such as undated payment orders that open
with the account, are broken at random with the set's seed) and the remaining products are the
input. Customers are split at random (seeded) into training, validation and test customers, so
the model learns the same question it is tested on from other customers: training customers give
one row per acquisition after their first (each time, "what came next, holding the rest?"),
validation and test customers one row: their last acquisition.

History order is opening time, then product id; every history entry is a ``purchase``. Point-in-
time features are joined just before each target's opening time.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from persona.layout import DataLayout, parquet_glob
from training.examples import NO_APP, NO_SEGMENT, SPLITS, Manifest, interaction_type_code
from training.sets.context import features_available
from training.sets.interactions import read_vocabulary
from training.sets.negatives import sample_negatives
from training.sets.point_in_time import connect
from training.sets.rows import ExampleRows
from training.sets.write import concat_rows, finish_next_item_set

_PURCHASE = interaction_type_code("purchase")


def build_holdout_set(
    data_dir: Path,
    out_dir: Path,
    *,
    dataset: str,
    max_len: int = 20,
    negatives: int = 100,
    valid_share: float = 0.15,
    test_share: float = 0.15,
    seed: int = 0,
) -> Manifest:
    if not (0 < valid_share < 1 and 0 < test_share < 1 and valid_share + test_share < 1):
        raise ValueError("valid_share/test_share: each in (0, 1), together below 1")
    split_shares = [1.0 - valid_share - test_share, valid_share, test_share]
    con = connect()
    vocabulary = read_vocabulary(con, data_dir)
    index = vocabulary.index_of()
    holdings = con.sql(
        f"""
        SELECT customer_id, product_id, CAST(opened_at AS TIMESTAMP) AS opened_at
        FROM read_parquet('{parquet_glob(DataLayout(data_dir).clean_table("holdings"))}')
        ORDER BY customer_id, opened_at, product_id
        """
    ).to_arrow_table()
    rng = np.random.default_rng(seed)
    customers = holdings.column("customer_id").to_numpy()
    items = np.array([index[p] for p in holdings.column("product_id").to_pylist()], np.int32)
    opened = holdings.column("opened_at").to_numpy()
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(customers)) + 1, [len(customers)]])

    rows: dict[str, list[tuple[int, np.ndarray, int, np.datetime64]]] = {
        "train": [],
        "valid": [],
        "test": [],
    }
    for s, e in itertools.pairwise(bounds):
        if e - s < 2:
            continue
        split = str(rng.choice(SPLITS, p=split_shares))
        owned = list(range(s, e))
        # Peel off the last-acquired product, then (training customers only) the one before it,
        # and so on: each row asks "what did this customer acquire next, holding the rest?".
        while len(owned) >= 2:
            latest = max(opened[i] for i in owned)
            tied = [i for i in owned if opened[i] == latest]
            pick = tied[int(rng.integers(len(tied)))] if len(tied) > 1 else tied[0]
            owned.remove(pick)
            rows[split].append((customers[s], items[owned], items[pick], opened[pick]))
            if split != "train":
                break

    parts = []
    for split, entries in rows.items():
        n = len(entries)
        history = np.zeros((n, max_len), np.int32)
        for r, (_, hist, _, _) in enumerate(entries):
            kept = hist[-max_len:]
            if len(kept):
                history[r, -len(kept) :] = kept
        target = np.array([t for _, _, t, _ in entries], np.int32)
        targets = np.zeros_like(history)
        if split == "train":
            targets[:, -1] = target
        parts.append(
            ExampleRows(
                customer_id=np.array([c for c, _, _, _ in entries], np.int64),
                event_timestamp=np.array([t for _, _, _, t in entries], dtype="datetime64[us]"),
                app=np.full(n, NO_APP, dtype=object),
                segment=np.full(n, NO_SEGMENT, dtype=object),
                device=np.full(n, None, dtype=object),
                history=history,
                history_types=np.where(history > 0, _PURCHASE, 0).astype(np.int8),
                targets=targets,
                target=target,
                context_dense=np.zeros((n, 0), np.float32),
                split=np.full(n, split, dtype=object),
            )
        )
    all_rows = concat_rows(parts)
    is_eval = all_rows.split != "train"
    all_rows.sampled_negatives = [
        sample_negatives(
            rng,
            vocabulary.size,
            np.unique(np.append(all_rows.history[i], all_rows.target[i])),
            negatives,
        )
        if is_eval[i]
        else np.array([], np.int32)
        for i in range(len(all_rows))
    ]
    notes = [
        "holdout: last-acquired product per customer (ties at random, seeded); customers "
        f"split {split_shares} into train/valid/test; training customers also give a row per "
        "earlier acquisition"
    ]
    return finish_next_item_set(
        con,
        data_dir,
        out_dir,
        all_rows,
        vocabulary,
        dataset=dataset,
        max_len=max_len,
        seed=seed,
        use_features=features_available(data_dir),
        notes=notes,
    )
