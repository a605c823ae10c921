"""Popularity baselines: what a ranker must beat before its personalisation counts for anything.

Both count *positives* in the train split. A positive is every non-zero entry of ``targets`` of
a train row: every position of a next-item row (the SASRec targets) and the clicked item of an
impression row (which the set already puts in the last ``targets`` slot). ``shown`` items with
label 1 are therefore **not** counted again. Impressions feed only :meth:`click_probability`:
the smoothed click-through rate ``(clicks + 1) / (impressions + 20)`` of each item, computed from
``shown`` / ``shown_labels`` of the train rows.

Ties are left as ties (no tie-break from the item index): the evaluator owns tie handling, and a
hidden index tie-break would flatter whichever items happen to have small indices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.examples import ExampleBatch, ExampleSet

_POPULARITY_FILE = "popularity.json"


class PopularityConfig(BaseModel):
    """Settings of :class:`GlobalPopularity` (the CTR prior is one click in twenty impressions)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ctr_prior_clicks: float = Field(1.0, ge=0, description="pseudo-clicks added to every item")
    ctr_prior_impressions: float = Field(20.0, gt=0, description="pseudo-impressions per item")
    batch_size: int = Field(8192, ge=1, description="train rows read per streamed batch")


class SegmentPopularityConfig(PopularityConfig):
    """Settings of :class:`SegmentPopularity`."""

    alpha: float = Field(10.0, ge=0, description="pseudo-positives pulling a segment to global")
    ctr_strength: float = Field(
        20.0, gt=0, description="pseudo-impressions pulling a segment's CTR to the global CTR"
    )


@dataclass(frozen=True)
class ItemCounts:
    """Per-item counts over some train rows; index 0 (padding) is always zero."""

    positives: np.ndarray  # (n_items + 1,) int64
    impressions: np.ndarray  # (n_items + 1,) int64
    clicks: np.ndarray  # (n_items + 1,) int64

    @classmethod
    def zeros(cls, n_items: int) -> ItemCounts:
        z = np.zeros(n_items + 1, dtype=np.int64)
        return cls(positives=z, impressions=z.copy(), clicks=z.copy())

    @classmethod
    def from_rows(
        cls,
        targets: np.ndarray,
        shown: list[np.ndarray],
        shown_labels: list[np.ndarray],
        n_items: int,
    ) -> ItemCounts:
        """Counts of the given rows (``targets`` (R, L); ``shown``/labels one array per row)."""
        positives = targets[targets != 0].astype(np.int64)
        items, labels = concat_shown(shown, shown_labels)
        for field, values in (("targets", positives), ("shown", items)):
            if values.size and (values.min() < 1 or values.max() > n_items):
                raise ValueError(f"{field}: item index outside 1..{n_items}")
        size = n_items + 1
        return cls(
            positives=np.bincount(positives, minlength=size),
            impressions=np.bincount(items, minlength=size),
            clicks=np.bincount(items[labels > 0], minlength=size),
        )

    @classmethod
    def from_batch(cls, batch: ExampleBatch, n_items: int) -> ItemCounts:
        return cls.from_rows(batch.targets, batch.shown, batch.shown_labels, n_items)

    def __add__(self, other: ItemCounts) -> ItemCounts:
        return ItemCounts(
            positives=self.positives + other.positives,
            impressions=self.impressions + other.impressions,
            clicks=self.clicks + other.clicks,
        )

    @property
    def n_items(self) -> int:
        return len(self.positives) - 1

    @property
    def has_impressions(self) -> bool:
        return bool(self.impressions.any())

    def popularity(self) -> np.ndarray:
        """Positives as a distribution over items (all zero when there are no positives)."""
        total = self.positives.sum()
        return self.positives / total if total else np.zeros(len(self.positives))

    def ctr(self, prior_clicks: float, prior_impressions: float) -> np.ndarray:
        """Additively smoothed click-through rate per item (the prior alone for unseen items)."""
        return (self.clicks + prior_clicks) / (self.impressions + prior_impressions)

    def to_json(self) -> dict[str, list[int]]:
        return {
            "positives": self.positives.tolist(),
            "impressions": self.impressions.tolist(),
            "clicks": self.clicks.tolist(),
        }

    @classmethod
    def from_json(cls, payload: dict[str, list[int]]) -> ItemCounts:
        return cls(
            positives=np.asarray(payload["positives"], dtype=np.int64),
            impressions=np.asarray(payload["impressions"], dtype=np.int64),
            clicks=np.asarray(payload["clicks"], dtype=np.int64),
        )


def concat_shown(
    shown: list[np.ndarray], shown_labels: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ragged slates; empty rows arrive as float arrays, hence the explicit casts."""
    if len(shown) != len(shown_labels) or any(
        len(s) != len(lab) for s, lab in zip(shown, shown_labels, strict=True)
    ):
        raise ValueError("shown_labels: must have one label per shown item")
    if not shown:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return (
        np.concatenate(shown).astype(np.int64),
        np.concatenate(shown_labels).astype(np.int64),
    )


def validate_items(batch: ExampleBatch, items: np.ndarray, n_items: int) -> np.ndarray:
    """The (B, C) candidate matrix as int64, or ValueError naming what is wrong with it."""
    items = np.asarray(items)
    if items.ndim != 2:
        raise ValueError(f"items: expected a (B, C) matrix, got shape {items.shape}")
    if items.shape[0] != len(batch):
        raise ValueError(f"items: {items.shape[0]} rows for a batch of {len(batch)}")
    if items.size and not np.issubdtype(items.dtype, np.integer):
        raise ValueError(f"items: expected integer item indices, got {items.dtype}")
    items = items.astype(np.int64, copy=False)
    if items.size and (items.min() < 0 or items.max() > n_items):
        raise ValueError(f"items: indices must lie in 0..{n_items} (0 = padding)")
    return items


def count_train(example_set: ExampleSet, batch_size: int) -> ItemCounts:
    """Item counts over the whole train split, streamed."""
    n_items = example_set.manifest().n_items
    total = ItemCounts.zeros(n_items)
    for batch in example_set.batches("train", batch_size):
        total = total + ItemCounts.from_batch(batch, n_items)
    return total


def count_train_by_segment(
    example_set: ExampleSet, batch_size: int
) -> tuple[ItemCounts, dict[str, ItemCounts]]:
    """Global and per-segment item counts over the train split, streamed."""
    n_items = example_set.manifest().n_items
    total = ItemCounts.zeros(n_items)
    by_segment: dict[str, ItemCounts] = {}
    for batch in example_set.batches("train", batch_size):
        segments, codes = np.unique(batch.segment.astype(str), return_inverse=True)
        for code, segment in enumerate(segments.tolist()):
            rows = np.flatnonzero(codes == code)
            counts = ItemCounts.from_rows(
                batch.targets[rows],
                [batch.shown[r] for r in rows],
                [batch.shown_labels[r] for r in rows],
                n_items,
            )
            by_segment[segment] = by_segment.get(segment, ItemCounts.zeros(n_items)) + counts
            total = total + counts
    return total, dict(sorted(by_segment.items()))


def _write(directory: Path, payload: dict[str, Any]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _POPULARITY_FILE).write_text(json.dumps(payload, sort_keys=True))


def _read(directory: Path, model: str) -> dict[str, Any]:
    payload = json.loads((Path(directory) / _POPULARITY_FILE).read_text())
    if payload.get("model") != model:
        raise ValueError(f"model: {directory} holds {payload.get('model')!r}, not {model!r}")
    return payload


class GlobalPopularity:
    """Score = number of train positives of the item; the same ranking for everyone."""

    def __init__(self, config: PopularityConfig | None = None, *, name: str = "global_popularity"):
        self.config = config or PopularityConfig()
        self.name = name
        self._counts: ItemCounts | None = None

    @property
    def counts(self) -> ItemCounts:
        if self._counts is None:
            raise RuntimeError(f"{self.name}: not fitted (call fit or load first)")
        return self._counts

    @property
    def n_items(self) -> int:
        return self.counts.n_items

    def fit(self, example_set: ExampleSet) -> Self:
        self._counts = count_train(example_set, self.config.batch_size)
        return self

    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        items = validate_items(batch, items, self.n_items)
        return self.counts.positives.astype(np.float64)[items]

    def click_probability(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        """Smoothed item CTR; without impressions in train, the item's share of positives."""
        items = validate_items(batch, items, self.n_items)
        return self._probability_table()[items]

    def _probability_table(self) -> np.ndarray:
        counts = self.counts
        if counts.has_impressions:
            return counts.ctr(self.config.ctr_prior_clicks, self.config.ctr_prior_impressions)
        return counts.popularity()

    def save(self, directory: Path) -> None:
        _write(
            directory,
            {
                "model": "global_popularity",
                "name": self.name,
                "config": self.config.model_dump(),
                "counts": self.counts.to_json(),
            },
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        payload = _read(directory, "global_popularity")
        model = cls(PopularityConfig.model_validate(payload["config"]), name=payload["name"])
        model._counts = ItemCounts.from_json(payload["counts"])
        return model


class SegmentPopularity:
    """Popularity within the row's segment, shrunk toward global popularity.

    ``score(i) = (count_seg(i) + alpha * p_global(i)) / (n_seg + alpha)`` where ``n_seg`` is the
    segment's number of positives, so a small segment leans on the global ranking. Segments not
    seen in training score ``p_global``. The CTR used by :meth:`click_probability` is shrunk the
    same way: ``(clicks_seg + k * ctr_global) / (impressions_seg + k)``, ``k = ctr_strength``.
    """

    def __init__(
        self,
        config: SegmentPopularityConfig | None = None,
        *,
        name: str = "segment_popularity",
    ):
        self.config = config or SegmentPopularityConfig()
        self.name = name
        self._global: ItemCounts | None = None
        self._segments: dict[str, ItemCounts] = {}

    @property
    def segments(self) -> list[str]:
        return list(self._segments)

    @property
    def global_counts(self) -> ItemCounts:
        if self._global is None:
            raise RuntimeError(f"{self.name}: not fitted (call fit or load first)")
        return self._global

    @property
    def n_items(self) -> int:
        return self.global_counts.n_items

    def fit(self, example_set: ExampleSet) -> Self:
        self._global, self._segments = count_train_by_segment(example_set, self.config.batch_size)
        return self

    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        items = validate_items(batch, items, self.n_items)
        return self._lookup(self._score_table(), batch, items)

    def click_probability(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        """Segment CTR shrunk to the global CTR; without impressions, :meth:`score`."""
        items = validate_items(batch, items, self.n_items)
        if not self.global_counts.has_impressions:
            return self._lookup(self._score_table(), batch, items)
        return self._lookup(self._ctr_table(), batch, items)

    def _score_table(self) -> np.ndarray:
        """(S + 1, n_items + 1): one row per known segment, the last row global (for unknowns)."""
        p_global = self.global_counts.popularity()
        alpha = self.config.alpha
        rows = []
        for counts in self._segments.values():
            n_seg = counts.positives.sum()
            if n_seg + alpha > 0:
                rows.append((counts.positives + alpha * p_global) / (n_seg + alpha))
            else:  # alpha = 0 and a segment without positives: nothing to go on but global
                rows.append(p_global)
        return np.vstack([*rows, p_global])

    def _ctr_table(self) -> np.ndarray:
        cfg = self.config
        ctr_global = self.global_counts.ctr(cfg.ctr_prior_clicks, cfg.ctr_prior_impressions)
        k = cfg.ctr_strength
        rows = [
            (counts.clicks + k * ctr_global) / (counts.impressions + k)
            for counts in self._segments.values()
        ]
        return np.vstack([*rows, ctr_global])

    def _lookup(self, table: np.ndarray, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        index = {segment: i for i, segment in enumerate(self._segments)}
        unknown = len(index)
        rows = np.fromiter(
            (index.get(str(s), unknown) for s in batch.segment), dtype=np.int64, count=len(batch)
        )
        return table[rows[:, None], items]

    def save(self, directory: Path) -> None:
        _write(
            directory,
            {
                "model": "segment_popularity",
                "name": self.name,
                "config": self.config.model_dump(),
                "global": self.global_counts.to_json(),
                "segments": {s: c.to_json() for s, c in self._segments.items()},
            },
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        payload = _read(directory, "segment_popularity")
        model = cls(SegmentPopularityConfig.model_validate(payload["config"]), name=payload["name"])
        model._global = ItemCounts.from_json(payload["global"])
        model._segments = {
            s: ItemCounts.from_json(c) for s, c in sorted(payload["segments"].items())
        }
        return model
