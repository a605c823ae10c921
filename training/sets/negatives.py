"""Negative sampling for the SASRec paper's evaluation protocol."""

from __future__ import annotations

import numpy as np


def sample_negatives(
    rng: np.random.Generator, n_items: int, touched: np.ndarray, k: int
) -> np.ndarray:
    """``k`` distinct items from 1..n_items the customer never touched (all of them if fewer)."""
    available = n_items - len(touched)
    if available <= k:
        pool = np.setdiff1d(np.arange(1, n_items + 1), touched)
        return rng.permutation(pool).astype(np.int32)
    chosen: list[int] = []
    seen = set(touched.tolist())
    while len(chosen) < k:
        for item in rng.integers(1, n_items + 1, size=2 * k).tolist():
            if item not in seen:
                seen.add(item)
                chosen.append(item)
                if len(chosen) == k:
                    break
    return np.asarray(chosen, dtype=np.int32)
