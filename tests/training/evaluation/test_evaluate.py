"""The evaluator over tiny example sets written to disk with ExampleSet.write."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.training.evaluation.example_sets import (
    ConstantRanker,
    ItemProbabilityRanker,
    ItemScoreRanker,
    OracleRanker,
    ReversedRanker,
    negatives,
    row,
    write_set,
)
from training.evaluation.evaluate import (
    EvaluationResult,
    evaluate,
    evaluate_pointwise,
    per_example_frame,
)
from training.evaluation.metrics import calibration

N_ITEMS = 120


@pytest.fixture
def next_item_set(tmp_path):
    """Four rankable test rows (two per app) and one without a target; 100 negatives each."""

    def ranked(target: int, app: str, seed: int) -> dict:
        return row(
            target,
            app=app,
            segment="young",
            history=[1, 2],
            sampled_negatives=negatives(target, N_ITEMS, 100, seed),
        )

    test_rows = [
        ranked(7, "retail", 0),
        ranked(8, "retail", 1),
        ranked(9, "card", 2),
        row(0, app="card", segment="young"),
        ranked(10, "card", 3),
    ]
    return write_set(tmp_path / "set", N_ITEMS, test=test_rows, valid=[ranked(11, "retail", 4)])


def test_oracle_scores_one_and_reversed_scores_zero_on_the_sampled_protocol(next_item_set):
    oracle = evaluate(OracleRanker(), next_item_set, protocol="sampled")
    assert oracle.n_examples == 4
    assert oracle.n_skipped == 1  # the row with target 0
    assert oracle.metrics == {"ndcg@10": 1.0, "hr@10": 1.0, "mrr": 1.0, "auc": 1.0}

    # The target ranks 100th (0-based) of 101: outside the top 10, MRR 1/101, AUC 0.
    reversed_ = evaluate(ReversedRanker(), next_item_set, protocol="sampled")
    assert reversed_.metrics["ndcg@10"] == 0.0
    assert reversed_.metrics["hr@10"] == 0.0
    assert reversed_.metrics["mrr"] == pytest.approx(1 / 101)
    assert reversed_.metrics["auc"] == 0.0


def test_constant_ranker_gets_the_random_ranking_expectation(next_item_set):
    result = evaluate(ConstantRanker(), next_item_set, protocol="sampled", k=10)
    assert result.metrics["hr@10"] == pytest.approx(10 / 101)
    assert result.metrics["ndcg@10"] == pytest.approx(
        sum(1 / math.log2(r + 2) for r in range(10)) / 101
    )
    assert result.metrics["mrr"] == pytest.approx(sum(1 / r for r in range(1, 102)) / 101)
    assert result.metrics["auc"] == pytest.approx(0.5)


def test_groups_carry_counts_and_means(next_item_set):
    # Lower item index scores higher. Sampled negatives differ per row, so compare each group's
    # mean with the per-example frame rather than by hand.
    ranker = ItemScoreRanker("by-index", -np.arange(N_ITEMS + 1, dtype=float))
    result = evaluate(ranker, next_item_set, protocol="sampled", group_by=("app", "segment"))
    assert {v: g.n for v, g in result.groups["app"].items()} == {"card": 2, "retail": 2}
    assert {v: g.n for v, g in result.groups["segment"].items()} == {"young": 4}
    frame, skipped = per_example_frame(ranker, next_item_set, protocol="sampled")
    assert skipped == 1
    for app, part in frame.groupby("app"):
        assert result.groups["app"][app].metrics["mrr"] == pytest.approx(part["mrr"].mean())
    assert result.metrics["mrr"] == pytest.approx(frame["mrr"].mean())


def test_full_protocol_masks_history_when_ranking(next_item_set):
    # Lower index ranks first; row 0's target is 7 with history {1, 2}: only 3, 4, 5, 6 beat it
    # (rank 4, NDCG 1/log2(6)); 118 valid candidates (120 minus two history items).
    ranker = ItemScoreRanker("by-index", -np.arange(N_ITEMS + 1, dtype=float))
    frame, _ = per_example_frame(ranker, next_item_set, protocol="full", batch_size=2)
    assert frame["rank"].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert frame["n_candidates"].tolist() == [118] * 4
    assert frame["ndcg@10"].iloc[0] == pytest.approx(1 / math.log2(6))
    streamed = evaluate(ranker, next_item_set, protocol="full", batch_size=2)
    whole = evaluate(ranker, next_item_set, protocol="full", batch_size=256)
    assert streamed.metrics == whole.metrics


def test_result_round_trips_through_json(next_item_set):
    result = evaluate(ConstantRanker(), next_item_set, split="valid", protocol="full")
    assert result.split == "valid"
    assert result.model == "constant"
    assert EvaluationResult.model_validate_json(result.model_dump_json()) == result


def test_bad_arguments_are_value_errors_naming_the_field(next_item_set):
    with pytest.raises(ValueError, match="protocol"):
        evaluate(OracleRanker(), next_item_set, protocol="leave-one-out")
    with pytest.raises(ValueError, match="split"):
        evaluate(OracleRanker(), next_item_set, split="holdout")
    with pytest.raises(ValueError, match="group_by"):
        evaluate(OracleRanker(), next_item_set, group_by=("country",))

    class WrongShape:
        name = "wrong"

        def score(self, batch, items):
            return np.zeros(len(batch))

    with pytest.raises(ValueError, match="score: ranker 'wrong'"):
        evaluate(WrongShape(), next_item_set)


def test_candidates_protocol_error_names_the_row(tmp_path):
    example_set = write_set(
        tmp_path / "set", 5, test=[row(1, candidates=[1, 2]), row(3, candidates=[1, 2])]
    )
    with pytest.raises(ValueError, match="row 1"):
        evaluate(OracleRanker(), example_set, protocol="candidates")


def test_pointwise_calibration_on_logged_impressions(tmp_path):
    # Probability of item i is i/10. Shown: {1, 2, 3} with 2 clicked, and {4, 5} with no click
    # (target 0: skipped by the ranking protocols, but its impressions are negatives here).
    probabilities = np.arange(N_ITEMS + 1) / 1000.0
    probabilities[:6] = np.arange(6) / 10.0
    ranker = ItemProbabilityRanker("prob", probabilities)
    example_set = write_set(
        tmp_path / "impressions",
        N_ITEMS,
        test=[
            row(2, shown=[1, 2, 3], shown_labels=[0, 1, 0], candidates=[1, 2, 3]),
            row(0, shown=[4, 5], shown_labels=[0, 0], candidates=[4, 5]),
        ],
    )
    result = evaluate_pointwise(ranker, example_set, "test", bins=2)
    expected = calibration(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), np.array([0, 1, 0, 0, 0]), bins=2)
    assert result == expected
    assert result.n == 5
    # AUC: the clicked 0.2 beats only 0.1 of four negatives -> 1/4.
    assert result.auc == pytest.approx(0.25)

    ranked = evaluate(ranker, example_set, protocol="candidates")
    assert ranked.n_examples == 1
    assert ranked.calibration == evaluate_pointwise(ranker, example_set, "test")


def test_pointwise_is_none_without_impressions_and_needs_probabilities(next_item_set):
    ranker = ItemProbabilityRanker("prob", np.full(N_ITEMS + 1, 0.1))
    assert evaluate_pointwise(ranker, next_item_set, "test") is None
    assert evaluate(ranker, next_item_set).calibration is None
    with pytest.raises(ValueError, match="ranker"):
        evaluate_pointwise(OracleRanker(), next_item_set, "test")
