"""A gradient-boosted pair model: the strong non-neural baseline beside the transformer.

LightGBM scores one (row, item) pair at a time from hand-built features (:class:`PairFeatures`):
what the row knows (dense context, app / device / segment, request time, history length), what
the item is (log popularity, smoothed CTR, category) and how the two meet (has the customer
touched this item or its category, is it the last thing they touched, how long ago). The item
index itself is deliberately not a feature: it cannot generalise beyond the items it has seen.

Training pairs come from the train split:

* impression sets (the train split has ``shown`` items): every shown item with its label;
* next-item sets: each row's final target (the last non-zero of ``targets``, with the history as
  it stood at that position) as the positive, plus ``n_negatives`` items drawn uniformly from the
  items the row's history does not contain (the same kind of negative the evaluation samples).

Rows are subsampled (seeded) so at most ``max_rows`` pairs are built. Everything is seeded and
LightGBM runs in deterministic, row-wise mode, so two fits give identical models.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Self

import lightgbm
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.examples import ExampleBatch, ExampleSet, Vocabulary
from training.models.popularity import ItemCounts, concat_shown, validate_items

_CONFIG_FILE: Final = "tabular.json"
_BOOSTER_FILE: Final = "model.txt"
#: Rounds of redrawing negatives that hit the history before giving up on that slot.
_MAX_RESAMPLES: Final = 50
#: The pair features, in column order (see :meth:`PairFeatures.build`).
PAIR_FEATURES: Final[tuple[str, ...]] = (
    "history_item_count",
    "history_category_count",
    "last_is_item",
    "last_same_category",
    "positions_since_item",
)


class TabularConfig(BaseModel):
    """LightGBM and pair-sampling settings of :class:`TabularRanker`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_estimators: int = Field(200, ge=1)
    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0)
    min_child_samples: int = Field(20, ge=1)
    seed: int = Field(0, ge=0, description="seeds row subsampling, negatives and LightGBM")
    n_jobs: int = Field(2, ge=1, description="LightGBM threads for fit and predict")
    n_negatives: int = Field(4, ge=1, description="sampled negatives per next-item row")
    max_rows: int = Field(200_000, ge=1, description="most training pairs built")
    ctr_prior_clicks: float = Field(1.0, ge=0)
    ctr_prior_impressions: float = Field(20.0, gt=0)
    batch_size: int = Field(8192, ge=1, description="train rows read per streamed batch")
    max_predict_pairs: int = Field(2_000_000, ge=1, description="most pairs per predict call")
    max_predict_bytes: int = Field(
        256 * 2**20, ge=1, description="most bytes of float32 features per predict call"
    )


@dataclass(frozen=True)
class Rows:
    """The columns of example rows the pair features read."""

    context_dense: np.ndarray  # (R, D) float32
    app: np.ndarray  # (R,) str
    device: np.ndarray  # (R,) str
    segment: np.ndarray  # (R,) str
    request_hour: np.ndarray  # (R,)
    request_day_of_week: np.ndarray  # (R,)
    history: np.ndarray  # (R, L) int64, left-padded with 0, most recent last

    @classmethod
    def from_batch(cls, batch: ExampleBatch, index: np.ndarray | slice = slice(None)) -> Rows:
        return cls(
            context_dense=batch.context_dense[index],
            app=batch.app[index],
            device=batch.device[index],
            segment=batch.segment[index],
            request_hour=batch.request_hour[index],
            request_day_of_week=batch.request_day_of_week[index],
            history=batch.history[index],
        )

    def take(self, index: np.ndarray | slice) -> Rows:
        return Rows(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def with_history(self, history: np.ndarray) -> Rows:
        return dataclasses.replace(self, history=history)

    def __len__(self) -> int:
        return len(self.history)


class PairFeatures:
    """Builds the float32 feature matrix of (row, item) pairs, vectorised.

    Columns: ``context_dense`` | one-hot app, device, segment (training vocabularies; unknown
    values are all zero) | request hour, day of week, history length | item log-popularity,
    item CTR, one-hot item category | :data:`PAIR_FEATURES`.
    """

    def __init__(
        self,
        *,
        dense_names: list[str],
        apps: list[str],
        devices: list[str],
        segments: list[str],
        item_categories: list[str],
        counts: ItemCounts,
        ctr_prior_clicks: float,
        ctr_prior_impressions: float,
    ):
        if len(item_categories) != counts.n_items + 1:
            raise ValueError("vocabulary: one category per item index (with '' at padding 0)")
        self.dense_names = list(dense_names)
        self.apps = list(apps)
        self.devices = list(devices)
        self.segments = list(segments)
        self.item_categories = list(item_categories)
        self.counts = counts
        self.ctr_prior_clicks = ctr_prior_clicks
        self.ctr_prior_impressions = ctr_prior_impressions
        self.categories = sorted(set(item_categories[1:]))
        code = {c: i + 1 for i, c in enumerate(self.categories)}
        #: Category code per item index (1..K; 0 for padding).
        self.item_category_code = np.array(
            [0, *(code[c] for c in item_categories[1:])], dtype=np.int64
        )
        self._item_table = self._build_item_table()
        self._lookups = {
            name: {v: i for i, v in enumerate(vocab)} for name, vocab in self._vocabs()
        }

    def _vocabs(self) -> list[tuple[str, list[str]]]:
        return [("app", self.apps), ("device", self.devices), ("segment", self.segments)]

    def _build_item_table(self) -> np.ndarray:
        """(n_items + 1, 2 + K): log-popularity, CTR, one-hot category; row 0 is padding."""
        n_rows = self.counts.n_items + 1
        table = np.zeros((n_rows, 2 + len(self.categories)), dtype=np.float32)
        table[:, 0] = np.log1p(self.counts.positives)
        table[:, 1] = self.counts.ctr(self.ctr_prior_clicks, self.ctr_prior_impressions)
        items = np.flatnonzero(self.item_category_code)
        table[items, 1 + self.item_category_code[items]] = 1.0
        table[0] = 0.0
        return table

    @property
    def n_items(self) -> int:
        return self.counts.n_items

    @property
    def names(self) -> list[str]:
        """Readable column names (``group=value`` for one-hot columns)."""
        return [
            *(f"context_dense:{n}" for n in self.dense_names),
            *(f"{name}={v}" for name, vocab in self._vocabs() for v in vocab),
            "request_hour",
            "request_day_of_week",
            "history_length",
            "item_log_popularity",
            "item_ctr",
            *(f"item_category={c}" for c in self.categories),
            *PAIR_FEATURES,
        ]

    @property
    def booster_names(self) -> list[str]:
        """Column names LightGBM accepts (no JSON punctuation): group and position only."""
        return [f"f{i}_{name.split('=')[0].split(':')[0]}" for i, name in enumerate(self.names)]

    @property
    def width(self) -> int:
        return len(self.names)

    def row_block(self, rows: Rows) -> np.ndarray:
        """(R, row features): everything that does not depend on the item."""
        if rows.context_dense.shape[1] != len(self.dense_names):
            raise ValueError(
                f"context_dense: {rows.context_dense.shape[1]} columns, "
                f"the model was trained on {len(self.dense_names)}"
            )
        blocks = [rows.context_dense.astype(np.float32, copy=False)]
        for name, vocab in self._vocabs():
            lookup = self._lookups[name]
            values = getattr(rows, name)
            codes = np.fromiter(
                (lookup.get(str(v), -1) for v in values), dtype=np.int64, count=len(values)
            )
            block = np.zeros((len(rows), len(vocab)), dtype=np.float32)
            known = np.flatnonzero(codes >= 0)
            block[known, codes[known]] = 1.0
            blocks.append(block)
        blocks.append(
            np.column_stack(
                [rows.request_hour, rows.request_day_of_week, (rows.history > 0).sum(axis=1)]
            ).astype(np.float32)
        )
        return np.hstack(blocks)

    def build(self, rows: Rows, row_index: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(P, width) float32 features of the pairs ``(rows[row_index[p]], items[p])``."""
        row_block = self.row_block(rows)
        n_row = row_block.shape[1]
        n_item = self._item_table.shape[1]
        out = np.empty((len(items), self.width), dtype=np.float32)
        out[:, :n_row] = row_block[row_index]
        out[:, n_row : n_row + n_item] = self._item_table[items]
        out[:, n_row + n_item :] = self._pair_block(rows.history, row_index, items)
        return out

    def _pair_block(
        self, history: np.ndarray, row_index: np.ndarray, items: np.ndarray
    ) -> np.ndarray:
        """How each item relates to its row's history (:data:`PAIR_FEATURES`)."""
        length = history.shape[1]
        cat = self.item_category_code
        item_count, item_last = _history_lookup(history, row_index, items, self.n_items + 1)
        category_count, _ = _history_lookup(
            cat[history], row_index, cat[items], len(self.categories) + 1
        )
        last = history[:, -1][row_index]
        last_cat = cat[last]
        block = np.empty((len(items), len(PAIR_FEATURES)), dtype=np.float32)
        block[:, 0] = item_count
        block[:, 1] = category_count
        block[:, 2] = (items == last) & (last > 0)
        block[:, 3] = (cat[items] == last_cat) & (last_cat > 0)
        block[:, 4] = np.where(item_last >= 0, length - 1 - item_last, -1)
        return block

    def to_json(self) -> dict[str, Any]:
        return {
            "dense_names": self.dense_names,
            "apps": self.apps,
            "devices": self.devices,
            "segments": self.segments,
            "item_categories": self.item_categories,
            "counts": self.counts.to_json(),
            "ctr_prior_clicks": self.ctr_prior_clicks,
            "ctr_prior_impressions": self.ctr_prior_impressions,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> PairFeatures:
        return cls(
            dense_names=payload["dense_names"],
            apps=payload["apps"],
            devices=payload["devices"],
            segments=payload["segments"],
            item_categories=payload["item_categories"],
            counts=ItemCounts.from_json(payload["counts"]),
            ctr_prior_clicks=payload["ctr_prior_clicks"],
            ctr_prior_impressions=payload["ctr_prior_impressions"],
        )


def _history_lookup(
    values: np.ndarray, row_index: np.ndarray, query: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: how often ``query[p]`` occurs in row ``row_index[p]`` of ``values`` (R, L)
    (0 = padding, never matched) and the last position it occurs at (-1 if never).

    Sparse on purpose: a sorted key list of the R*L history entries answers any number of
    queries by binary search, so cost does not grow with the catalogue size.
    """
    r, pos = np.nonzero(values)  # row-major: positions ascend within each row
    keys = r.astype(np.int64) * width + values[r, pos]
    order = np.argsort(keys, kind="stable")  # stable keeps positions ascending per key
    keys, pos = keys[order], pos[order]
    counts = np.zeros(len(query), dtype=np.int64)
    last = np.full(len(query), -1, dtype=np.int64)
    if keys.size == 0:
        return counts, last
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    unique = keys[starts]
    run_counts = np.diff(np.r_[starts, len(keys)])
    run_last = pos[starts + run_counts - 1]
    query_keys = row_index.astype(np.int64) * width + query
    hit = np.minimum(np.searchsorted(unique, query_keys), len(unique) - 1)
    found = (unique[hit] == query_keys) & (query > 0)
    counts[found] = run_counts[hit[found]]
    last[found] = run_last[hit[found]]
    return counts, last


def _final_target_pairs(
    rows: Rows, targets: np.ndarray, n_items: int, n_negatives: int, rng: np.random.Generator
) -> tuple[Rows, np.ndarray, np.ndarray, np.ndarray]:
    """Next-item pairs: each row's final target (label 1) plus sampled negatives (label 0).

    The history is cut and re-aligned to the final target's position, so a row whose last
    target is not in the last slot never sees its own future.
    """
    n_rows, length = targets.shape
    nonzero = targets != 0
    last_slot = length - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    positive = targets[np.arange(n_rows), last_slot]
    source = np.arange(length)[None, :] - (length - 1 - last_slot)[:, None]
    history = np.where(
        source >= 0, np.take_along_axis(rows.history, np.maximum(source, 0), axis=1), 0
    )
    negatives = _sample_negatives(history, positive, n_items, n_negatives, rng)
    items = np.column_stack([positive, negatives])
    labels = np.zeros_like(items, dtype=np.int8)
    labels[:, 0] = 1
    valid = (items > 0).ravel()
    row_index = np.repeat(np.arange(n_rows), items.shape[1])[valid]
    return rows.with_history(history), row_index, items.ravel()[valid], labels.ravel()[valid]


def _sample_negatives(
    history: np.ndarray,
    positive: np.ndarray,
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(R, n_negatives) items uniform over those not in the row's history nor its positive;
    0 where none could be found (a history covering nearly the whole catalogue)."""

    def excluded(candidates: np.ndarray) -> np.ndarray:
        in_history = (candidates[:, :, None] == history[:, None, :]).any(axis=2)
        return in_history | (candidates == positive[:, None])

    negatives = rng.integers(1, n_items + 1, size=(len(positive), n_negatives))
    for _ in range(_MAX_RESAMPLES):
        bad = excluded(negatives)
        if not bad.any():
            return negatives
        negatives[bad] = rng.integers(1, n_items + 1, size=int(bad.sum()))
    negatives[excluded(negatives)] = 0
    return negatives


@dataclass
class _TrainScan:
    """What the first pass over the train split learns: counts, vocabularies, pairs per row."""

    counts: ItemCounts
    apps: list[str]
    devices: list[str]
    segments: list[str]
    n_dense: int
    shown_per_row: np.ndarray
    has_target: np.ndarray


def _scan_train(example_set: ExampleSet, n_items: int, batch_size: int) -> _TrainScan:
    counts = ItemCounts.zeros(n_items)
    vocab: dict[str, set[str]] = {"app": set(), "device": set(), "segment": set()}
    shown_per_row: list[np.ndarray] = []
    has_target: list[np.ndarray] = []
    n_dense = 0
    for batch in example_set.batches("train", batch_size):
        counts = counts + ItemCounts.from_batch(batch, n_items)
        for name, values in vocab.items():
            values.update(str(v) for v in getattr(batch, name))
        shown_per_row.append(np.fromiter((len(s) for s in batch.shown), dtype=np.int64))
        has_target.append((batch.targets != 0).any(axis=1))
        n_dense = batch.context_dense.shape[1]
    if not shown_per_row:
        raise ValueError("train: the split has no rows")
    return _TrainScan(
        counts=counts,
        apps=sorted(vocab["app"]),
        devices=sorted(vocab["device"]),
        segments=sorted(vocab["segment"]),
        n_dense=n_dense,
        shown_per_row=np.concatenate(shown_per_row),
        has_target=np.concatenate(has_target),
    )


def _select_rows(pairs_per_row: np.ndarray, max_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded random subset of rows whose pairs add up to at most ``max_pairs`` (at least one
    row, even if that row alone has more)."""
    eligible = rng.permutation(np.flatnonzero(pairs_per_row > 0))
    keep = np.searchsorted(np.cumsum(pairs_per_row[eligible]), max_pairs, side="right")
    selected = np.zeros(len(pairs_per_row), dtype=bool)
    selected[eligible[: max(int(keep), 1)]] = True
    return selected


def _dense_names(example_set: ExampleSet, n_dense: int) -> list[str]:
    names = example_set.manifest().dense_features
    return list(names) if len(names) == n_dense else [f"dense_{i}" for i in range(n_dense)]


class TabularRanker:
    """LightGBM on (row, item) pair features. ``score`` is the log-odds of a positive."""

    def __init__(self, config: TabularConfig | None = None, *, name: str = "lightgbm"):
        self.config = config or TabularConfig()
        self.name = name
        self._features: PairFeatures | None = None
        self._booster: lightgbm.Booster | None = None

    @property
    def features(self) -> PairFeatures:
        if self._features is None:
            raise RuntimeError(f"{self.name}: not fitted (call fit or load first)")
        return self._features

    @property
    def booster(self) -> lightgbm.Booster:
        if self._booster is None:
            raise RuntimeError(f"{self.name}: not fitted (call fit or load first)")
        return self._booster

    @property
    def feature_names(self) -> list[str]:
        return self.features.names

    def fit(self, example_set: ExampleSet) -> Self:
        cfg = self.config
        n_items = example_set.manifest().n_items
        vocabulary: Vocabulary = example_set.vocabulary()
        if vocabulary.size != n_items:
            raise ValueError(f"vocabulary: {vocabulary.size} items, the manifest says {n_items}")
        scan = _scan_train(example_set, n_items, cfg.batch_size)
        features = PairFeatures(
            dense_names=_dense_names(example_set, scan.n_dense),
            apps=scan.apps,
            devices=scan.devices,
            segments=scan.segments,
            item_categories=vocabulary.categories(),
            counts=scan.counts,
            ctr_prior_clicks=cfg.ctr_prior_clicks,
            ctr_prior_impressions=cfg.ctr_prior_impressions,
        )
        impressions = scan.counts.has_impressions
        rng = np.random.default_rng(cfg.seed)
        pairs_per_row = (
            scan.shown_per_row if impressions else scan.has_target * (1 + cfg.n_negatives)
        )
        selected = _select_rows(pairs_per_row, cfg.max_rows, rng)
        x_parts: list[np.ndarray] = []
        y_parts: list[np.ndarray] = []
        offset = 0
        for batch in example_set.batches("train", cfg.batch_size):
            index = np.flatnonzero(selected[offset : offset + len(batch)])
            offset += len(batch)
            if index.size == 0:
                continue
            rows = Rows.from_batch(batch, index)
            if impressions:
                shown = [batch.shown[i] for i in index]
                items, labels = concat_shown(shown, [batch.shown_labels[i] for i in index])
                row_index = np.repeat(np.arange(len(index)), [len(s) for s in shown])
                labels = (labels > 0).astype(np.int8)
            else:
                rows, row_index, items, labels = _final_target_pairs(
                    rows, batch.targets[index], n_items, cfg.n_negatives, rng
                )
            x_parts.append(features.build(rows, row_index, items))
            y_parts.append(labels)
        x = np.concatenate(x_parts)
        y = np.concatenate(y_parts)
        if y.min() == y.max():
            raise ValueError("train: the training pairs need both positive and negative labels")
        classifier = lightgbm.LGBMClassifier(
            objective="binary",
            n_estimators=cfg.n_estimators,
            num_leaves=cfg.num_leaves,
            learning_rate=cfg.learning_rate,
            min_child_samples=cfg.min_child_samples,
            random_state=cfg.seed,
            n_jobs=cfg.n_jobs,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        classifier.fit(x, y, feature_name=features.booster_names)
        self._features = features
        self._booster = classifier.booster_
        return self

    def score(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        """Predicted log-odds that the item is the positive / is clicked (raw LightGBM score)."""
        return self._predict(batch, items, raw_score=True)

    def click_probability(self, batch: ExampleBatch, items: np.ndarray) -> np.ndarray:
        return self._predict(batch, items, raw_score=False)

    def _predict(self, batch: ExampleBatch, items: np.ndarray, *, raw_score: bool) -> np.ndarray:
        """Predicts in blocks of rows x columns small enough for the memory budget, since the
        full catalogue (tens of thousands of items) times a batch would not fit at once."""
        features, booster = self.features, self.booster
        items = validate_items(batch, items, features.n_items)
        n_rows, n_cols = items.shape
        out = np.zeros((n_rows, n_cols), dtype=np.float64)
        if items.size == 0:
            return out
        cfg = self.config
        budget = max(1, min(cfg.max_predict_pairs, cfg.max_predict_bytes // (4 * features.width)))
        cols = min(n_cols, budget)
        rows_per_block = max(1, budget // cols)
        all_rows = Rows.from_batch(batch)
        for r0 in range(0, n_rows, rows_per_block):
            r1 = min(n_rows, r0 + rows_per_block)
            rows = all_rows.take(slice(r0, r1))
            for c0 in range(0, n_cols, cols):
                block = items[r0:r1, c0 : c0 + cols]
                row_index = np.repeat(np.arange(r1 - r0), block.shape[1])
                x = features.build(rows, row_index, block.ravel())
                predicted = booster.predict(x, raw_score=raw_score, num_threads=cfg.n_jobs)
                out[r0:r1, c0 : c0 + cols] = np.asarray(predicted).reshape(block.shape)
        return out

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": "tabular",
            "name": self.name,
            "config": self.config.model_dump(),
            "features": self.features.to_json(),
        }
        (directory / _CONFIG_FILE).write_text(json.dumps(payload, sort_keys=True))
        (directory / _BOOSTER_FILE).write_text(self.booster.model_to_string())

    @classmethod
    def load(cls, directory: Path) -> Self:
        directory = Path(directory)
        payload = json.loads((directory / _CONFIG_FILE).read_text())
        if payload.get("model") != "tabular":
            raise ValueError(f"model: {directory} holds {payload.get('model')!r}, not 'tabular'")
        model = cls(TabularConfig.model_validate(payload["config"]), name=payload["name"])
        model._features = PairFeatures.from_json(payload["features"])
        model._booster = lightgbm.Booster(model_str=(directory / _BOOSTER_FILE).read_text())
        if model._booster.num_feature() != model._features.width:
            raise ValueError(
                f"model: booster has {model._booster.num_feature()} features, "
                f"the feature spec {model._features.width}"
            )
        return model
