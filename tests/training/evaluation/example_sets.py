"""Tiny example sets and rankers for the evaluation tests (every schema column filled)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from training.examples import (
    SPLITS,
    ExampleBatch,
    ExampleSet,
    Manifest,
    Vocabulary,
    example_schema,
)

MAX_LEN = 4
SCHEMA = example_schema(MAX_LEN, 0)


def row(target: int, **overrides: Any) -> dict[str, Any]:
    """One example row with neutral defaults (customer id and time are numbered by write_set).

    ``history`` may be given shorter than MAX_LEN: it is left-padded with 0.
    """
    history = list(overrides.pop("history", []))
    padded = [0] * (MAX_LEN - len(history)) + history
    values: dict[str, Any] = {
        "app": "none",
        "segment": "unknown",
        "device": "unknown",
        "request_hour": 12,
        "request_day_of_week": 2,
        "history": padded,
        "history_types": [1 if item else 0 for item in padded],
        "targets": [0] * (MAX_LEN - 1) + [target],
        "target": target,
        "sampled_negatives": [],
        "candidates": [],
        "shown": [],
        "shown_labels": [],
        "shown_positions": [],
        "shown_propensities": [],
        "context_dense": [0.0],
    }
    values.update(overrides)
    if values["shown"] and not values["shown_positions"]:
        values["shown_positions"] = list(range(len(values["shown"])))
        values["shown_propensities"] = [1.0] * len(values["shown"])
    return values


def _numbered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"customer_id": i + 1, "event_timestamp": datetime(2024, 1, 1) + timedelta(hours=i), **r}
        for i, r in enumerate(rows)
    ]


def batch_of(*rows: dict[str, Any]) -> ExampleBatch:
    """An in-memory batch of ``rows``, read back exactly as the evaluator reads Parquet."""
    return ExampleBatch.from_table(pa.Table.from_pylist(_numbered(list(rows)), schema=SCHEMA))


def write_set(root: Path, n_items: int, **splits: list[dict[str, Any]]) -> ExampleSet:
    """Write an example set with the given rows per split (missing splits are empty)."""
    tables = {}
    for split in SPLITS:
        rows = _numbered(splits.get(split, []))
        tables[split] = pa.Table.from_pylist(rows, schema=SCHEMA)
    vocabulary = Vocabulary.from_products(
        [f"p{i:05d}" for i in range(1, n_items + 1)], ["cat"] * n_items
    )
    manifest = Manifest(
        dataset="toy",
        kind="next_item",
        max_len=MAX_LEN,
        n_items=n_items,
        dense_features=[],
        dense_mean=[],
        dense_std=[],
        apps=["none"],
        segments=["unknown"],
        devices=["unknown"],
        feature_service=None,
        feature_service_version=None,
        data_snapshot="test",
        seed=0,
        rows={split: len(splits.get(split, [])) for split in SPLITS},
    )
    example_set = ExampleSet(root)
    example_set.write(tables, vocabulary, manifest)
    return example_set


def negatives(target: int, n_items: int, count: int, seed: int) -> list[int]:
    """``count`` distinct items other than ``target``, drawn deterministically."""
    pool = np.array([i for i in range(1, n_items + 1) if i != target])
    return np.random.default_rng(seed).choice(pool, size=count, replace=False).tolist()


class OracleRanker:
    """Scores the target 1 and everything else 0: the target always ranks first."""

    name = "oracle"

    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        return (items == batch.target[:, None]).astype(np.float64)


class ReversedRanker:
    """Scores the target -1 and everything else 0: the target always ranks last."""

    name = "reversed"

    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        return -(items == batch.target[:, None]).astype(np.float64)


class ConstantRanker:
    """Every candidate scores the same: a random ranking in expectation."""

    name = "constant"

    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        return np.zeros(items.shape)


class ItemScoreRanker:
    """A fixed score per item index (``scores[0]`` is for padding)."""

    def __init__(self, name: str, scores: np.ndarray):
        self.name = name
        self.scores = np.asarray(scores, dtype=np.float64)

    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        return self.scores[items]


class ItemProbabilityRanker(ItemScoreRanker):
    """An :class:`ItemScoreRanker` whose scores are click probabilities."""

    def click_probability(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        return self.scores[items]
