"""Next-interaction example sets (data without impressions): leave-one-out with sampled negatives.

Per customer with at least ``min_positives`` positive interactions (click, apply, purchase):
the last positive is the **test** target, the one before it the **validation** target, and
everything before the validation target is training data (the SASRec paper's protocol).

Training rows come in one of two shapes:

* ``all_positions`` (sequence-only data such as Amazon Games): one row per customer whose
  ``targets`` hold the next item at every position, as SASRec trains.
* ``per_target`` (data with point-in-time features, such as the Czech bank): one row per training
  positive, its features joined at that positive's own time, so no row sees its future.

Evaluation rows carry 100 negatives sampled once (seeded) from items the customer never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from persona.features.catalog import SEQUENCE_LENGTH
from training.examples import NO_APP, NO_SEGMENT, Manifest, interaction_type_code
from training.sets.context import features_available
from training.sets.interactions import Interactions, load_interactions, read_vocabulary
from training.sets.negatives import sample_negatives
from training.sets.point_in_time import connect
from training.sets.rows import ExampleRows
from training.sets.write import concat_rows, finish_next_item_set

POSITIVE_CODES = tuple(interaction_type_code(t) for t in ("click", "apply", "purchase"))
TrainShape = Literal["all_positions", "per_target"]


def build_next_item_set(
    data_dir: Path,
    out_dir: Path,
    *,
    dataset: str,
    max_len: int = SEQUENCE_LENGTH,
    min_positives: int = 3,
    negatives: int = 100,
    train_shape: TrainShape | None = None,
    use_features: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Manifest:
    """Build ``out_dir`` (see :mod:`training.examples`) from ``data_dir``'s clean tables.

    ``use_features`` defaults to whether ``persona features build`` has run for ``data_dir``;
    ``train_shape`` defaults to ``per_target`` with features and ``all_positions`` without.
    """
    if min_positives < 3:
        raise ValueError("min_positives: leave-one-out needs at least 3 positives per customer")
    if negatives < 1:
        raise ValueError("negatives: must be at least 1")
    con = connect()
    use_features = features_available(data_dir) if use_features is None else use_features
    if use_features and not features_available(data_dir):
        raise FileNotFoundError(f"features: none under {data_dir}; run `persona features build`")
    train_shape = train_shape or ("per_target" if use_features else "all_positions")
    vocabulary = read_vocabulary(con, data_dir)
    inter = load_interactions(con, data_dir, vocabulary)
    rng = np.random.default_rng(seed)

    positive = np.isin(inter.type_code, POSITIVE_CODES)
    pos_index = np.flatnonzero(positive)
    pos_customer = np.searchsorted(inter.starts, pos_index, side="right") - 1
    n_pos = np.bincount(pos_customer, minlength=len(inter.customers))
    kept = np.flatnonzero(n_pos >= min_positives)
    # Last and second-to-last positive per customer (absolute interaction positions).
    last_pos = np.full(len(inter.customers), -1)
    second_pos = np.full(len(inter.customers), -1)
    for c, i in zip(pos_customer, pos_index, strict=True):
        second_pos[c], last_pos[c] = last_pos[c], i
    test_at, valid_at = last_pos[kept], second_pos[kept]
    customers = inter.customers[kept]
    starts = inter.starts[kept]

    evaluation = [_eval_rows(inter, customers, at, max_len, "valid") for at in (valid_at,)] + [
        _eval_rows(inter, customers, test_at, max_len, "test")
    ]
    if train_shape == "all_positions":
        train = _all_position_rows(inter, customers, starts, valid_at, max_len)
    else:
        train = _per_target_rows(inter, customers, starts, valid_at, positive, max_len)
    rows = concat_rows([train, *evaluation])

    touched = [
        np.unique(inter.item[s:e]) for s, e in zip(*inter.slice_of(rows.customer_id), strict=True)
    ]
    is_eval = rows.split != "train"
    rows.sampled_negatives = [
        sample_negatives(rng, vocabulary.size, touched[i], negatives)
        if is_eval[i]
        else np.array([], np.int32)
        for i in tqdm(range(len(rows)), desc="sampling negatives", disable=not progress)
    ]

    notes = [
        f"train rows: {train_shape}",
        f"customers with >= {min_positives} positives: {len(kept):,}",
    ]
    return finish_next_item_set(
        con,
        data_dir,
        out_dir,
        rows,
        vocabulary,
        dataset=dataset,
        max_len=max_len,
        seed=seed,
        use_features=use_features,
        notes=notes,
    )


def _rows_at(
    inter: Interactions,
    customers: np.ndarray,
    at: np.ndarray,
    history: tuple[np.ndarray, np.ndarray],
    targets: np.ndarray,
    target: np.ndarray,
    split: str,
) -> ExampleRows:
    """Rows whose time, app and device are those of interaction ``at``."""
    n = len(customers)
    return ExampleRows(
        customer_id=customers,
        event_timestamp=inter.timestamp[at],
        app=_apps(inter.app[at]),
        segment=np.full(n, NO_SEGMENT, dtype=object),
        device=inter.device[at],
        history=history[0],
        history_types=history[1],
        targets=targets,
        target=target.astype(np.int32),
        context_dense=np.zeros((n, 0), np.float32),
        split=np.full(n, split, dtype=object),
    )


def _eval_rows(
    inter: Interactions, customers: np.ndarray, at: np.ndarray, max_len: int, split: str
) -> ExampleRows:
    history = inter.histories(customers, at, max_len)
    targets = np.zeros_like(history[0])
    return _rows_at(inter, customers, at, history, targets, inter.item[at], split)


def _all_position_rows(
    inter: Interactions,
    customers: np.ndarray,
    starts: np.ndarray,
    valid_at: np.ndarray,
    max_len: int,
) -> ExampleRows:
    """One row per customer: history = train interactions but the last; targets = next items."""
    has_train = valid_at - starts >= 2
    customers, starts, valid_at = customers[has_train], starts[has_train], valid_at[has_train]
    history = inter.histories(customers, valid_at - 1, max_len)
    # targets[j] = the interaction after history[j], when it is a positive.
    next_items, next_types = inter.histories(customers, valid_at, max_len)
    starts_ok = (np.arange(-max_len, 0)[None, :] + (valid_at - 1)[:, None]) >= starts[:, None]
    targets = np.where(starts_ok & np.isin(next_types, POSITIVE_CODES), next_items, 0)
    targets = targets.astype(np.int32)
    return _rows_at(inter, customers, valid_at - 1, history, targets, targets[:, -1], "train")


def _per_target_rows(
    inter: Interactions,
    customers: np.ndarray,
    starts: np.ndarray,
    valid_at: np.ndarray,
    positive: np.ndarray,
    max_len: int,
) -> ExampleRows:
    """One row per positive before the validation target, history = what came before it."""
    positions = [np.arange(s, v)[positive[s:v]] for s, v in zip(starts, valid_at, strict=True)]
    at = np.concatenate(positions) if positions else np.array([], np.int64)
    owner = np.repeat(customers, [len(p) for p in positions])
    history = inter.histories(owner, at, max_len)
    targets = np.zeros_like(history[0])
    targets[:, -1] = inter.item[at]
    return _rows_at(inter, owner, at, history, targets, inter.item[at], "train")


def _apps(values: np.ndarray) -> np.ndarray:
    return np.asarray([v if v is not None else NO_APP for v in values], dtype=object)
