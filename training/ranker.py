"""What every model (the transformer and each baseline) offers the evaluation and serving code."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from training.examples import ExampleBatch


@runtime_checkable
class Ranker(Protocol):
    """Scores candidate items for each example row. Higher = ranked first.

    ``items`` is (B, C) int64 item indices (1..n_items) per row; the result is (B, C) float.
    Entries of ``items`` equal to 0 are padding: their scores are ignored by the caller.
    """

    name: str

    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class ProbabilisticRanker(Ranker, Protocol):
    """A ranker whose scores can be turned into click probabilities (for AUC and calibration)."""

    def click_probability(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray: ...
