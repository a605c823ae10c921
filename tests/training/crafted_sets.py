"""A crafted next-item example set with one clear rule: customers stay in their category."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.examples import ExampleSet, Manifest, Vocabulary
from training.sets.rows import ExampleRows
from training.sets.write import concat_rows, write_example_set

CATEGORIES = ("card", "loan", "deposit", "insurance")
PER_CATEGORY = 5
MAX_LEN = 8


def crafted_vocabulary() -> Vocabulary:
    ids = [f"{c}_{i}" for c in CATEGORIES for i in range(PER_CATEGORY)]
    return Vocabulary.from_products(ids, [p.rsplit("_", 1)[0] for p in ids])


def items_of(vocabulary: Vocabulary, category: str) -> np.ndarray:
    return np.array([it.index for it in vocabulary.items if it.category == category])


def _rows(rng: np.random.Generator, vocabulary: Vocabulary, n: int, split: str) -> ExampleRows:
    """Each customer interacts with items of one category (10% noise); the next item too."""
    history = np.zeros((n, MAX_LEN), np.int32)
    targets = np.zeros((n, MAX_LEN), np.int32)
    target = np.zeros(n, np.int32)
    all_items = np.array([it.index for it in vocabulary.items])
    for r in range(n):
        own = items_of(vocabulary, CATEGORIES[rng.integers(len(CATEGORIES))])
        seq = [
            int(rng.choice(own)) if rng.random() > 0.1 else int(rng.choice(all_items))
            for _ in range(MAX_LEN + 1)
        ]
        seq[-1] = int(rng.choice(own))
        history[r] = seq[:-1]
        if split == "train":
            targets[r] = seq[1:]
        target[r] = seq[-1]
    return ExampleRows(
        customer_id=np.arange(n, dtype=np.int64)
        + {"train": 0, "valid": 10**6, "test": 2 * 10**6}[split],
        event_timestamp=np.full(n, np.datetime64("2026-06-01T10:00:00", "us")),
        app=np.full(n, "rib", dtype=object),
        segment=np.full(n, "all", dtype=object),
        device=np.full(n, "web", dtype=object),
        history=history,
        history_types=np.where(history > 0, 1, 0).astype(np.int8),
        targets=targets,
        target=target,
        context_dense=np.zeros((n, 0), np.float32),
        sampled_negatives=[
            np.setdiff1d(all_items, [target[r], *history[r]])[:10].astype(np.int32)
            for r in range(n)
        ],
        split=np.full(n, split, dtype=object),
    )


def write_crafted_set(root: Path, seed: int = 0, train_rows: int = 1500) -> ExampleSet:
    rng = np.random.default_rng(seed)
    vocabulary = crafted_vocabulary()
    rows = concat_rows(
        [
            _rows(rng, vocabulary, train_rows, "train"),
            _rows(rng, vocabulary, 300, "valid"),
            _rows(rng, vocabulary, 300, "test"),
        ]
    )
    manifest = Manifest(
        dataset="crafted",
        kind="next_item",
        max_len=MAX_LEN,
        n_items=vocabulary.size,
        dense_features=[],
        dense_mean=[],
        dense_std=[],
        apps=["rib"],
        segments=["all"],
        devices=["web"],
        feature_service=None,
        feature_service_version=None,
        data_snapshot="crafted",
        seed=seed,
        rows={},
    )
    example_set = ExampleSet(root)
    write_example_set(example_set, rows, vocabulary, manifest)
    return example_set
