"""Evaluation protocols: which candidates each example row's target is ranked against.

Every protocol turns a batch of rows into ``Candidates(items, target_col, valid)``:

* ``items``: (B, C) int64 item indices, 0 = padding (what :class:`~training.ranker.Ranker` scores);
* ``target_col``: (B,) int64, the column of each row's target in ``items``;
* ``valid``: (B, C) bool, the candidates that take part in the ranking (the target always does).

The three protocols:

* ``sampled``: the target plus the row's stored ``sampled_negatives`` (the SASRec paper's
  leave-one-out protocol with 100 sampled negatives). Stored once with the set's seed, so every
  model ranks exactly the same candidates. A negative equal to the target is marked invalid.
* ``full``: the whole catalogue 1..n_items, minus the items already in the row's ``history``
  (other than the target: re-consumption stays rankable); a non-empty ``candidates`` list further
  restricts validity to those eligible items. One batch costs about ``B * n_items * 17`` bytes
  (items, valid, the ranker's float64 scores): ~100 MB for 256 rows of 23,715 items, which is
  why the evaluator streams batches.
* ``candidates``: only the row's ``candidates`` list (the slate the app could actually show),
  history not masked. The target must be in the list.

Rows without a target (``target == 0``) or, for ``sampled`` / ``candidates``, without any stored
negatives / candidates cannot be ranked by that protocol: :func:`rankable` finds them and the
evaluator skips them; the protocol functions refuse them.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

import numpy as np

from training.examples import ExampleBatch

ProtocolName = Literal["sampled", "full", "candidates"]
PROTOCOLS: Final[tuple[str, ...]] = ("sampled", "full", "candidates")


class Candidates(NamedTuple):
    items: np.ndarray  # (B, C) int64, 0 = padding
    target_col: np.ndarray  # (B,) int64
    valid: np.ndarray  # (B, C) bool


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def rankable(protocol: str, batch: ExampleBatch) -> np.ndarray:
    """(B,) bool: rows this protocol can rank (a target, and something to rank it against)."""
    check_protocol(protocol)
    mask = batch.target > 0
    if protocol == "sampled":
        mask &= np.array([len(n) > 0 for n in batch.sampled_negatives], dtype=bool)
    elif protocol == "candidates":
        mask &= np.array([len(c) > 0 for c in batch.candidates], dtype=bool)
    return mask


def _require_targets(batch: ExampleBatch) -> None:
    missing = np.flatnonzero(batch.target <= 0)
    if missing.size:
        raise ValueError(f"target: row {int(missing[0])} has no target (0); skip it first")


def pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Right-pad ragged int lists with 0 into a (B, max_len) int64 matrix."""
    width = max((len(r) for r in rows), default=0)
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def sampled(batch: ExampleBatch) -> Candidates:
    """Candidates = [target] + the row's stored sampled negatives (target in column 0)."""
    _require_targets(batch)
    items = pad_rows(
        [
            np.concatenate([[t], n])
            for t, n in zip(batch.target, batch.sampled_negatives, strict=True)
        ]
    )
    valid = items > 0
    valid[:, 1:] &= items[:, 1:] != batch.target[:, None]
    return Candidates(items, np.zeros(len(batch), dtype=np.int64), valid)


def full(batch: ExampleBatch, n_items: int) -> Candidates:
    """Candidates = every item 1..n_items; history (bar the target) and ineligible items invalid."""
    if n_items < 1:
        raise ValueError(f"n_items: must be >= 1, got {n_items}")
    _require_targets(batch)
    n_rows = len(batch)
    if (batch.target > n_items).any():
        raise ValueError(f"target: item indices must lie in 1..{n_items}")
    if (batch.history > n_items).any() or (batch.history < 0).any():
        raise ValueError(f"history: item indices must lie in 0..{n_items}")
    items = np.broadcast_to(np.arange(1, n_items + 1, dtype=np.int64), (n_rows, n_items)).copy()
    rows = np.arange(n_rows)
    target_col = batch.target - 1

    valid = np.ones((n_rows, n_items), dtype=bool)
    hist_rows, hist_cols = np.nonzero(batch.history > 0)
    valid[hist_rows, batch.history[hist_rows, hist_cols] - 1] = False
    valid[rows, target_col] = True

    for i, eligible in enumerate(batch.candidates):
        if len(eligible) == 0:
            continue
        eligible = np.asarray(eligible, dtype=np.int64)
        if eligible.min() < 1 or eligible.max() > n_items:
            raise ValueError(f"candidates: row {i} has item indices outside 1..{n_items}")
        if batch.target[i] not in eligible:
            raise ValueError(f"candidates: row {i}'s target {batch.target[i]} is not in its list")
        allowed = np.zeros(n_items, dtype=bool)
        allowed[eligible - 1] = True
        valid[i] &= allowed
    return Candidates(items, target_col.astype(np.int64), valid)


def candidates(batch: ExampleBatch) -> Candidates:
    """Candidates = only the row's eligible ``candidates`` list, which must hold the target."""
    _require_targets(batch)
    items = pad_rows(batch.candidates)
    valid = items > 0
    target_col = np.zeros(len(batch), dtype=np.int64)
    for i, target in enumerate(batch.target):
        hits = np.flatnonzero(items[i] == target)
        if hits.size == 0:
            reason = "is empty" if len(batch.candidates[i]) == 0 else f"lacks target {target}"
            raise ValueError(f"candidates: row {i}'s list {reason}")
        target_col[i] = hits[0]
        valid[i, hits[1:]] = False  # a duplicated target counts once
    return Candidates(items, target_col, valid)


def build_candidates(protocol: str, batch: ExampleBatch, n_items: int | None = None) -> Candidates:
    """Dispatch on the protocol name (``n_items`` is needed by ``full`` only)."""
    check_protocol(protocol)
    if protocol == "sampled":
        return sampled(batch)
    if protocol == "candidates":
        return candidates(batch)
    if n_items is None:
        raise ValueError("n_items: the full protocol needs the catalogue size")
    return full(batch, n_items)
