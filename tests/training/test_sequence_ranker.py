"""The transformer: checkpoint round trip, invariances, and behaviour after real training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.crafted_sets import items_of, write_crafted_set
from training.config import TrainConfig
from training.examples import ExampleBatch, ExampleSet
from training.models.sequence_ranker import (
    SequenceRanker,
    SequenceRankerConfig,
    TransformerRanker,
)


def _batch(example_set: ExampleSet, split: str = "test", n: int = 64) -> ExampleBatch:
    return next(example_set.batches(split, n))  # type: ignore[arg-type]


def _untrained(example_set: ExampleSet, seed: int = 0) -> TransformerRanker:
    torch.manual_seed(seed)
    config = SequenceRankerConfig.for_manifest(example_set.manifest(), d_model=16)
    return TransformerRanker(SequenceRanker(config))


def test_checkpoint_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    example_set = write_crafted_set(tmp_path / "set")
    ranker = _untrained(example_set)
    batch = _batch(example_set)
    items = np.tile(np.arange(1, 21), (len(batch), 1))
    before = ranker.score(batch, items)
    ranker.model.save(tmp_path / "ckpt")
    after = TransformerRanker.load(tmp_path / "ckpt").score(batch, items)
    np.testing.assert_array_equal(before, after)
    assert before.shape == (len(batch), 20)


def test_loading_a_folder_without_a_model_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model: no model_config\.json"):
        SequenceRanker.load(tmp_path)


def test_renaming_customer_ids_changes_no_score(tmp_path: Path) -> None:
    example_set = write_crafted_set(tmp_path / "set")
    ranker = _untrained(example_set)
    batch = _batch(example_set)
    renamed = replace(batch, customer_id=batch.customer_id[::-1] * 7919 + 13)
    items = np.tile(np.arange(1, 21), (len(batch), 1))
    np.testing.assert_array_equal(ranker.score(batch, items), ranker.score(renamed, items))


def test_scores_gather_the_requested_items_in_order(tmp_path: Path) -> None:
    example_set = write_crafted_set(tmp_path / "set")
    ranker = _untrained(example_set)
    batch = _batch(example_set, n=4)
    full = ranker.score(batch, np.tile(np.arange(1, 21), (4, 1)))
    picked = ranker.score(batch, np.array([[3, 1, 20]] * 4))
    np.testing.assert_allclose(picked, full[:, [2, 0, 19]], rtol=1e-6)


@pytest.fixture(scope="module")
def trained_on_crafted(
    tmp_path_factory: pytest.TempPathFactory, ray_session: None
) -> tuple[TransformerRanker, ExampleSet, list[dict[str, float]]]:
    """A real Ray Train run (TorchTrainer, Ray Data) on the crafted set."""
    from training.trainer import fit

    root = tmp_path_factory.mktemp("crafted_run")
    example_set = write_crafted_set(root / "set")
    config = TrainConfig(
        run_name="crafted",
        examples=example_set.root,
        output_dir=root / "run",
        architecture={"d_model": 32, "n_blocks": 1, "dropout": 0.1},
        epochs=6,
        batch_size=64,
        learning_rate=0.01,
        eval_protocol="sampled",
        seed=5,
        scaling={"cpus_per_worker": 1, "torch_threads": 1},
    )
    model_config = SequenceRankerConfig.for_manifest(
        example_set.manifest(), **config.architecture.model_dump()
    )
    model_dir, history = fit(config, model_config.model_dump(mode="json"))
    return TransformerRanker.load(model_dir), example_set, history


@pytest.mark.slow
def test_ray_train_run_learns_and_reports_every_epoch(
    trained_on_crafted: tuple[TransformerRanker, ExampleSet, list[dict[str, float]]],
) -> None:
    _, _, history = trained_on_crafted
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["valid_ndcg@10"] for h in history) > 0.6  # 11 candidates: random ≈ 0.35
    assert all(h["samples_per_second"] > 0 for h in history)


@pytest.mark.slow
def test_a_customer_whose_recent_events_are_all_cards_ranks_a_card_higher(
    trained_on_crafted: tuple[TransformerRanker, ExampleSet, list[dict[str, float]]],
) -> None:
    ranker, example_set, _ = trained_on_crafted
    vocabulary = example_set.vocabulary()
    cards, loans = items_of(vocabulary, "card"), items_of(vocabulary, "loan")
    batch = _batch(example_set, n=32)
    items = np.tile(np.arange(1, vocabulary.size + 1), (len(batch), 1))

    def best_card_rank(history: np.ndarray) -> np.ndarray:
        scores = ranker.score(replace(batch, history=history), items)
        order = np.argsort(-scores, axis=1)
        ranks = np.argsort(order, axis=1)  # rank of each item (0 = top)
        return ranks[:, cards - 1].min(axis=1)

    before = best_card_rank(np.tile(loans[np.arange(8) % len(loans)], (len(batch), 1)))
    recent_cards = batch.history.copy()
    recent_cards[:, -6:] = cards[np.arange(6) % len(cards)]
    after = best_card_rank(recent_cards)
    assert (after <= before).all()
    assert (after < before).mean() >= 0.9
    assert (after == 0).mean() >= 0.8
