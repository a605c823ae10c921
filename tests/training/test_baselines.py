"""Popularity and LightGBM baselines on tiny hand-made example sets."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from training.examples import ExampleBatch, ExampleSet, Manifest, Vocabulary, example_schema
from training.models.popularity import (
    GlobalPopularity,
    ItemCounts,
    PopularityConfig,
    SegmentPopularity,
    SegmentPopularityConfig,
)
from training.models.tabular import (
    PairFeatures,
    Rows,
    TabularConfig,
    TabularRanker,
    _final_target_pairs,
)
from training.ranker import ProbabilisticRanker

MAX_LEN = 5
FAST = TabularConfig(n_estimators=60, num_leaves=15, min_child_samples=5, n_jobs=2, seed=7)


def _pad(values: list[int], width: int) -> list[int]:
    return [0] * (width - len(values)) + list(values)


def row(
    history: list[int],
    targets: list[int],
    *,
    segment: str = "a",
    target: int = 0,
    shown: list[int] | None = None,
    labels: list[int] | None = None,
    negatives: list[int] | None = None,
    dense: float = 0.0,
    customer_id: int = 0,
) -> dict:
    """One example row; ``history`` / ``targets`` unpadded and aligned (left-padded here)."""
    shown = shown or []
    return {
        "customer_id": customer_id,
        "event_timestamp": dt.datetime(2024, 1, 1, 12),
        "app": "web",
        "segment": segment,
        "device": "ios",
        "request_hour": 12,
        "request_day_of_week": 2,
        "history": _pad(history, MAX_LEN),
        "history_types": _pad([1] * len(history), MAX_LEN),
        "targets": _pad(targets, MAX_LEN),
        "target": target,
        "sampled_negatives": negatives or [],
        "candidates": [],
        "shown": shown,
        "shown_labels": labels or [0] * len(shown),
        "shown_positions": list(range(len(shown))),
        "shown_propensities": [0.5] * len(shown),
        "context_dense": [dense],
    }


def write_set(
    root: Path,
    categories: list[str],
    train: list[dict],
    test: list[dict] | None = None,
    kind: str = "next_item",
) -> ExampleSet:
    schema = example_schema(MAX_LEN, 1)
    n_items = len(categories)
    splits = {"train": train, "valid": test or train[:1], "test": test or train[:1]}
    tables = {s: pa.Table.from_pylist(rows, schema=schema) for s, rows in splits.items()}
    vocabulary = Vocabulary.from_products([f"p{i:03d}" for i in range(1, n_items + 1)], categories)
    manifest = Manifest(
        dataset="toy",
        kind=kind,
        max_len=MAX_LEN,
        n_items=n_items,
        dense_features=["x"],
        dense_mean=[0.0],
        dense_std=[1.0],
        apps=["web"],
        segments=sorted({r["segment"] for r in train}),
        devices=["ios"],
        feature_service=None,
        feature_service_version=None,
        data_snapshot="toy",
        seed=0,
        rows={s: len(r) for s, r in splits.items()},
    )
    example_set = ExampleSet(root)
    example_set.write(tables, vocabulary, manifest)
    return example_set


def batch_of(rows: list[dict]) -> ExampleBatch:
    return ExampleBatch.from_table(pa.Table.from_pylist(rows, schema=example_schema(MAX_LEN, 1)))


# --- toy sets -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def popularity_set(tmp_path_factory: pytest.TempPathFactory) -> ExampleSet:
    """Positives: item 1 x3 (segment a), item 2 x3 (b), item 3 x4 and item 4 x1 (c), item 5 none."""
    train = [row([5], [1], segment="a") for _ in range(3)]
    train += [row([5], [2], segment="b") for _ in range(3)]
    train += [row([3, 3, 3], [3, 3, 3], segment="c"), row([3, 3], [3, 4], segment="c")]
    return write_set(tmp_path_factory.mktemp("pop"), ["x"] * 5, train)


@pytest.fixture(scope="module")
def impression_set(tmp_path_factory: pytest.TempPathFactory) -> ExampleSet:
    """Impressions 1:3 2:2 3:3 4:1; clicks 1:2 2:1; clicked items also sit in ``targets``."""
    train = [
        row([4], [1], segment="a", shown=[1, 2, 3], labels=[1, 0, 0]),
        row([4], [2], segment="b", shown=[1, 2], labels=[0, 1]),
        row([4], [1], segment="a", shown=[1, 3], labels=[1, 0]),
        row([4], [0], segment="b", shown=[3, 4], labels=[0, 0]),
    ]
    return write_set(tmp_path_factory.mktemp("imp"), ["x"] * 4, train, kind="impressions")


N_CATEGORIES = 30
RULE_ITEMS = 2 * N_CATEGORIES  # items 2c+1, 2c+2 form category c


def _partner(item: int) -> int:
    return item + 1 if item % 2 else item - 1


def _rule_rows(rng: np.random.Generator, n: int, n_negatives: int = 0) -> list[dict]:
    """Random histories; the next item is the other item of the last item's category."""
    rows = []
    for i in range(n):
        history = rng.choice(
            np.arange(1, RULE_ITEMS + 1), size=int(rng.integers(1, 5)), replace=False
        )
        history = history.tolist()
        nxt = _partner(history[-1])
        negatives: list[int] = []
        if n_negatives:
            pool = np.setdiff1d(np.arange(1, RULE_ITEMS + 1), [*history, nxt])
            negatives = rng.choice(pool, size=n_negatives, replace=False).tolist()
        targets = [*history[1:], nxt]
        segment = "a" if i % 2 else "b"
        rows.append(
            row(history, targets, target=nxt, negatives=negatives, segment=segment, customer_id=i)
        )
    return rows


@pytest.fixture(scope="module")
def rule_set(tmp_path_factory: pytest.TempPathFactory) -> ExampleSet:
    rng = np.random.default_rng(3)
    categories = [f"cat{(i - 1) // 2:02d}" for i in range(1, RULE_ITEMS + 1)]
    train = _rule_rows(rng, 800)
    test = _rule_rows(rng, 200, n_negatives=20)
    return write_set(tmp_path_factory.mktemp("rule"), categories, train, test)


@pytest.fixture(scope="module")
def rule_model(rule_set: ExampleSet) -> TabularRanker:
    return TabularRanker(FAST).fit(rule_set)


def _test_candidates(example_set: ExampleSet) -> tuple[ExampleBatch, np.ndarray]:
    """Test rows with candidates [target, *sampled_negatives] (the target in column 0)."""
    batch = ExampleBatch.from_table(example_set.read("test"))
    items = np.column_stack([batch.target, np.vstack(batch.sampled_negatives)]).astype(np.int64)
    return batch, items


def _top1_rate(scores: np.ndarray) -> float:
    """Share of rows where column 0 beats every other column strictly (ties count as misses)."""
    return float(np.mean(scores[:, 0] > scores[:, 1:].max(axis=1)))


# --- GlobalPopularity -------------------------------------------------------------------------


def test_global_popularity_counts_positives_and_keeps_ties(popularity_set: ExampleSet) -> None:
    model = GlobalPopularity().fit(popularity_set)
    batch = batch_of([row([5], [1])])
    scores = model.score(batch, np.array([[1, 2, 3, 4, 5]]))
    np.testing.assert_array_equal(scores, [[3, 3, 4, 1, 0]])  # items 1 and 2 stay tied
    # No impressions in the set: the click probability is the share of positives (11 in all).
    np.testing.assert_allclose(
        model.click_probability(batch, np.array([[1, 3, 5]])), [[3 / 11, 4 / 11, 0]]
    )
    assert isinstance(model, ProbabilisticRanker)


def test_global_popularity_impressions_ctr_and_no_double_count(impression_set: ExampleSet) -> None:
    model = GlobalPopularity().fit(impression_set)
    batch = batch_of([row([4], [0])])
    # Positives are the targets only: the shown-and-clicked item 1 counts twice, not four times.
    np.testing.assert_array_equal(model.score(batch, np.array([[1, 2, 3, 4]])), [[2, 1, 0, 0]])
    expected = [[3 / 23, 2 / 22, 1 / 23, 1 / 21]]  # (clicks + 1) / (impressions + 20)
    np.testing.assert_allclose(model.click_probability(batch, np.array([[1, 2, 3, 4]])), expected)


def test_global_popularity_save_load_round_trip(impression_set: ExampleSet, tmp_path: Path) -> None:
    model = GlobalPopularity(PopularityConfig(ctr_prior_impressions=10)).fit(impression_set)
    model.save(tmp_path)
    loaded = GlobalPopularity.load(tmp_path)
    batch = batch_of([row([4], [0]), row([1], [0])])
    items = np.array([[1, 2, 3, 4], [4, 3, 0, 1]])
    np.testing.assert_array_equal(loaded.score(batch, items), model.score(batch, items))
    np.testing.assert_array_equal(
        loaded.click_probability(batch, items), model.click_probability(batch, items)
    )
    assert loaded.config == model.config and loaded.name == model.name


# --- SegmentPopularity ------------------------------------------------------------------------


def test_segment_popularity_hand_checked_and_unknown_falls_back(popularity_set: ExampleSet) -> None:
    model = SegmentPopularity().fit(popularity_set)  # alpha = 10
    assert model.segments == ["a", "b", "c"]
    batch = batch_of([row([5], [0], segment=s) for s in ("a", "b", "zzz")])
    items = np.tile(np.arange(1, 6), (3, 1))
    scores = model.score(batch, items)
    # Segment a: (count_a + 10 * count / 11) / (3 + 10), with global counts 3, 3, 4, 1, 0.
    np.testing.assert_allclose(scores[0], np.array([63, 30, 40, 10, 0]) / 143)
    np.testing.assert_allclose(scores[1], np.array([30, 63, 40, 10, 0]) / 143)
    np.testing.assert_allclose(scores[2], np.array([3, 3, 4, 1, 0]) / 11)  # unknown: global
    assert scores.argmax(axis=1).tolist() == [0, 1, 2]  # favourites 1, 2, and globally 3


def test_segment_popularity_alpha_zero_is_pure_segment(popularity_set: ExampleSet) -> None:
    model = SegmentPopularity(SegmentPopularityConfig(alpha=0)).fit(popularity_set)
    batch = batch_of([row([5], [0], segment="c")])
    np.testing.assert_allclose(
        model.score(batch, np.array([[1, 2, 3, 4, 5]])), [[0, 0, 0.8, 0.2, 0]]
    )


def test_segment_ctr_shrinks_to_global_ctr(impression_set: ExampleSet, tmp_path: Path) -> None:
    model = SegmentPopularity().fit(impression_set)  # ctr_strength = 20
    batch = batch_of([row([4], [0], segment="a"), row([4], [0], segment="new")])
    probability = model.click_probability(batch, np.array([[1, 2], [1, 2]]))
    # Segment a: item 1 shown 2x clicked 2x, item 2 shown 1x clicked 0x.
    item1 = (2 + 20 * Fraction(3, 23)) / (2 + 20)
    item2 = (0 + 20 * Fraction(2, 22)) / (1 + 20)
    np.testing.assert_allclose(probability[0], [float(item1), float(item2)])
    np.testing.assert_allclose(probability[1], [3 / 23, 2 / 22])  # unknown: global CTR
    model.save(tmp_path)
    loaded = SegmentPopularity.load(tmp_path)
    np.testing.assert_array_equal(
        loaded.click_probability(batch, np.array([[1, 2], [1, 2]])), probability
    )
    np.testing.assert_array_equal(
        loaded.score(batch, np.array([[1, 2], [3, 4]])),
        model.score(batch, np.array([[1, 2], [3, 4]])),
    )


# --- TabularRanker: features ------------------------------------------------------------------


def test_pair_features_hand_checked() -> None:
    counts = ItemCounts.zeros(6)
    features = PairFeatures(
        dense_names=["x"],
        apps=["web"],
        devices=["ios"],
        segments=["a"],
        item_categories=["", "X", "Z", "X", "X", "Y", "Z"],
        counts=counts,
        ctr_prior_clicks=1,
        ctr_prior_impressions=20,
    )
    rows = Rows.from_batch(batch_of([row([3, 5, 3], [0, 0, 0])]))  # history [0, 0, 3, 5, 3]
    items = np.array([3, 4, 5, 6, 0])
    x = features.build(rows, np.zeros(5, dtype=np.int64), items)
    assert x.dtype == np.float32 and x.shape == (5, features.width)
    pair = x[:, -5:]
    # count, category count, last is item, last same category, positions since last seen
    np.testing.assert_array_equal(
        pair,
        [
            [2, 2, 1, 1, 0],
            [0, 2, 0, 1, -1],
            [1, 1, 0, 0, 1],
            [0, 0, 0, 0, -1],
            [0, 0, 0, 0, -1],
        ],
    )
    names = features.names
    assert x[0, names.index("history_length")] == 3
    assert x[0, names.index("item_category=X")] == 1 and x[2, names.index("item_category=Y")] == 1
    assert x[4, names.index("item_category=X") : names.index("item_category=Z") + 1].sum() == 0
    unknown = Rows.from_batch(batch_of([row([3], [0], segment="zz")]))
    x_unknown = features.build(unknown, np.zeros(1, dtype=np.int64), np.array([3]))
    assert x_unknown[0, names.index("segment=a")] == 0


def test_final_target_pairs_cut_history_and_avoid_it() -> None:
    rows = Rows.from_batch(batch_of([row([6, 7, 8, 9], [7, 8, 9, 0])]))
    targets = np.array([[0, 7, 8, 9, 0]])  # the final target sits before the last slot
    cut, row_index, items, labels = _final_target_pairs(
        rows, targets, n_items=12, n_negatives=4, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(cut.history, [[0, 0, 6, 7, 8]])  # item 9 was not known yet
    assert items[0] == 9 and labels.tolist() == [1, 0, 0, 0, 0]
    assert not set(items[1:].tolist()) & {6, 7, 8, 9}
    assert row_index.tolist() == [0] * 5


# --- TabularRanker: learning, persistence, determinism -----------------------------------------


def test_tabular_learns_rule_popularity_cannot(
    rule_set: ExampleSet, rule_model: TabularRanker
) -> None:
    batch, items = _test_candidates(rule_set)  # target + 20 untouched items: chance is 1/21
    tabular = _top1_rate(rule_model.score(batch, items))
    popularity = _top1_rate(GlobalPopularity().fit(rule_set).score(batch, items))
    assert tabular > 0.9
    assert popularity < 0.3
    assert isinstance(rule_model, ProbabilisticRanker)


def test_tabular_save_load_identical(
    rule_model: TabularRanker, rule_set: ExampleSet, tmp_path: Path
) -> None:
    batch, items = _test_candidates(rule_set)
    rule_model.save(tmp_path)
    loaded = TabularRanker.load(tmp_path)
    assert loaded.config == rule_model.config and loaded.feature_names == rule_model.feature_names
    np.testing.assert_array_equal(loaded.score(batch, items), rule_model.score(batch, items))


def test_tabular_fit_is_deterministic(rule_model: TabularRanker, rule_set: ExampleSet) -> None:
    batch, items = _test_candidates(rule_set)
    again = TabularRanker(FAST).fit(rule_set)
    np.testing.assert_array_equal(again.score(batch, items), rule_model.score(batch, items))


def test_tabular_chunked_scoring_matches_and_handles_padding(
    rule_model: TabularRanker, rule_set: ExampleSet
) -> None:
    batch = ExampleBatch.from_table(rule_set.read("test").slice(0, 7))
    catalogue = np.tile(np.arange(0, RULE_ITEMS + 1), (7, 1))  # column 0 is padding
    whole = rule_model.score(batch, catalogue)
    tiny = TabularRanker(rule_model.config.model_copy(update={"max_predict_pairs": 13}))
    tiny._features, tiny._booster = rule_model.features, rule_model.booster
    np.testing.assert_array_equal(tiny.score(batch, catalogue), whole)
    assert whole.shape == (7, RULE_ITEMS + 1) and np.isfinite(whole).all()
    probability = rule_model.click_probability(batch, catalogue)
    np.testing.assert_allclose(probability, 1 / (1 + np.exp(-whole)), rtol=1e-6)


def test_tabular_impression_set_uses_shown_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    train = []
    for i in range(300):
        shown = rng.choice(np.arange(1, 9), size=3, replace=False).tolist()
        labels = [int(s == 1) for s in shown]  # item 1 is clicked whenever shown
        clicked = [s for s, lab in zip(shown, labels, strict=True) if lab]
        train.append(row([9], clicked or [0], shown=shown, labels=labels, customer_id=i))
    example_set = write_set(tmp_path / "set", ["x"] * 9, train, kind="impressions")
    model = TabularRanker(FAST).fit(example_set)
    batch = batch_of([row([9], [0])])
    probability = model.click_probability(batch, np.array([[1, 2, 3, 0]]))
    assert probability[0, 0] > 0.8 and probability[0, 1:3].max() < 0.2


# --- padding and bad input -----------------------------------------------------------------


def test_padding_items_do_not_crash(popularity_set: ExampleSet, rule_model: TabularRanker) -> None:
    batch = batch_of([row([1], [0]), row([], [], segment="zzz")])
    items = np.array([[0, 1, 0], [0, 0, 0]])
    for model in (GlobalPopularity().fit(popularity_set), SegmentPopularity().fit(popularity_set)):
        assert model.score(batch, items).shape == (2, 3)
        assert model.click_probability(batch, items).shape == (2, 3)
    assert rule_model.score(batch, items).shape == (2, 3)
    assert rule_model.score(batch, np.zeros((2, 0), dtype=np.int64)).shape == (2, 0)


def test_bad_items_and_config_are_refused(popularity_set: ExampleSet) -> None:
    model = GlobalPopularity().fit(popularity_set)
    batch = batch_of([row([1], [0])])
    with pytest.raises(ValueError, match="items"):
        model.score(batch, np.array([[6]]))  # only 5 items
    with pytest.raises(ValueError, match="items"):
        model.score(batch, np.array([1, 2]))
    with pytest.raises(ValidationError):
        SegmentPopularityConfig(alpha=-1)
    with pytest.raises(ValidationError):
        TabularConfig(n_negatives=0)
    with pytest.raises(ValidationError):
        TabularConfig(num_leaves=31, leaves=3)  # unknown field
    with pytest.raises(RuntimeError, match="not fitted"):
        TabularRanker().score(batch, np.array([[1]]))
