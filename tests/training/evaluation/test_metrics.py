"""Ranking metrics and calibration against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.metrics import (
    calibration,
    per_example_metrics,
    rank_counts,
    target_rank,
)

# Three rows, four candidates each (target column marked *):
#   A: scores [0.9, 0.5*, 0.7, 0.1], all valid.  0.9 and 0.7 beat the target -> rank 2.
#      NDCG@10 = 1/log2(4) = 0.5, HR@10 = 1, MRR = 1/3, AUC = 1/3 (only 0.1 is below).
#   B: scores [0.4*, 0.9, 0.1, 0.3], column 1 invalid (e.g. already bought). Nothing valid beats
#      the target -> rank 0: NDCG = HR = MRR = 1, AUC = 2/2 = 1.
#   C: scores [0.5*, 0.5, 0.9, 0.5], all valid: 0.9 beats it, two others tie -> rank 1 + 2/2 = 2.
#      The tie puts the target at rank 1, 2 or 3 with probability 1/3 each:
#      NDCG@10 = (1/log2(3) + 1/log2(4) + 1/log2(5)) / 3 = (0.630930 + 0.5 + 0.430677) / 3
#              = 0.520535, HR@10 = 1, MRR = (1/2 + 1/3 + 1/4) / 3 = 13/36,
#      AUC = (0 below + 0.5 * 2 ties) / 3 others = 1/3.
SCORES = np.array(
    [
        [0.9, 0.5, 0.7, 0.1],
        [0.4, 0.9, 0.1, 0.3],
        [0.5, 0.5, 0.9, 0.5],
    ]
)
TARGET_COL = np.array([1, 0, 0])
VALID = np.array(
    [
        [True, True, True, True],
        [True, False, True, True],
        [True, True, True, True],
    ]
)


def test_target_rank_counts_greater_and_half_the_ties_among_valid_only():
    assert target_rank(SCORES, TARGET_COL, VALID).tolist() == [2.0, 0.0, 2.0]
    counts = rank_counts(SCORES, TARGET_COL, VALID)
    assert counts.greater.tolist() == [2, 0, 1]
    assert counts.ties.tolist() == [0, 0, 2]
    assert counts.n_candidates.tolist() == [4, 3, 4]


def test_hand_checked_metrics_for_three_rows():
    counts = rank_counts(SCORES, TARGET_COL, VALID)
    m = per_example_metrics(counts.rank, counts.n_candidates, k=10, ties=counts.ties)
    c_ndcg = (1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 3
    assert m["ndcg@10"] == pytest.approx([0.5, 1.0, c_ndcg])
    assert c_ndcg == pytest.approx(0.520535, abs=1e-6)
    assert m["hr@10"].tolist() == [1.0, 1.0, 1.0]
    assert m["mrr"] == pytest.approx([1 / 3, 1.0, 13 / 36])
    assert m["auc"] == pytest.approx([1 / 3, 1.0, 1 / 3])
    # Means over the three rows, as an evaluator reports them.
    assert m["ndcg@10"].mean() == pytest.approx((0.5 + 1 + 0.520535) / 3, abs=1e-6)


def test_cutoff_applies_to_each_rank_of_a_tie():
    # Row C with k=2: only discrete rank 1 of {1, 2, 3} is inside the top 2.
    counts = rank_counts(SCORES[2:], TARGET_COL[2:], VALID[2:])
    m = per_example_metrics(counts.rank, counts.n_candidates, k=2, ties=counts.ties)
    assert m["ndcg@2"] == pytest.approx([(1 / math.log2(3)) / 3])
    assert m["hr@2"] == pytest.approx([1 / 3])
    # Row A (rank 2) misses a top-2 list entirely.
    m = per_example_metrics(np.array([2.0]), np.array([4]), k=2)
    assert m["ndcg@2"].tolist() == [0.0]
    assert m["hr@2"].tolist() == [0.0]


@pytest.mark.parametrize("n_candidates", [5, 10, 50, 101])
def test_constant_scores_give_the_expectation_of_a_random_ranking(n_candidates):
    rows = 3
    scores = np.zeros((rows, n_candidates))
    target_col = np.array([0, n_candidates // 2, n_candidates - 1])
    valid = np.ones_like(scores, dtype=bool)
    counts = rank_counts(scores, target_col, valid)
    m = per_example_metrics(counts.rank, counts.n_candidates, k=10, ties=counts.ties)
    top = min(10, n_candidates)
    # A uniformly random position r in 0..C-1: P(r < 10) = min(10, C)/C, E[1/(r+1)] = H(C)/C.
    expected_ndcg = sum(1 / math.log2(r + 2) for r in range(top)) / n_candidates
    expected_mrr = sum(1 / (r + 1) for r in range(n_candidates)) / n_candidates
    assert counts.rank.tolist() == [(n_candidates - 1) / 2] * rows
    assert m["hr@10"] == pytest.approx([top / n_candidates] * rows)
    assert m["ndcg@10"] == pytest.approx([expected_ndcg] * rows)
    assert m["mrr"] == pytest.approx([expected_mrr] * rows)
    assert m["auc"] == pytest.approx([0.5] * rows)


def test_single_candidate_rows_have_nan_auc():
    m = per_example_metrics(np.array([0.0, 0.0]), np.array([1, 2]))
    assert math.isnan(m["auc"][0])
    assert m["auc"][1] == 1.0
    assert m["ndcg@10"].tolist() == [1.0, 1.0]


def test_fractional_rank_without_ties_is_refused():
    with pytest.raises(ValueError, match="ties"):
        per_example_metrics(np.array([1.5]), np.array([4]))
    with pytest.raises(ValueError, match="rank"):
        per_example_metrics(np.array([4.0]), np.array([4]))
    with pytest.raises(ValueError, match="k"):
        per_example_metrics(np.array([0.0]), np.array([4]), k=0)


def test_rank_input_errors_name_the_field():
    with pytest.raises(ValueError, match="valid: the target of row 1"):
        bad = VALID.copy()
        bad[1, 0] = False
        target_rank(SCORES, TARGET_COL, bad)
    with pytest.raises(ValueError, match="scores: row 0"):
        nan_scores = SCORES.copy()
        nan_scores[0, 3] = np.nan
        target_rank(nan_scores, TARGET_COL, VALID)
    nan_scores = SCORES.copy()
    nan_scores[1, 1] = np.nan  # invalid entries may hold anything
    assert target_rank(nan_scores, TARGET_COL, VALID).tolist() == [2.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="target_col"):
        target_rank(SCORES, np.array([0, 1, 4]), VALID)


def test_calibration_hand_checked():
    # p = [0.1, 0.2, 0.7, 0.9], y = [0, 1, 1, 1]; two bins split {0.1, 0.2} | {0.7, 0.9}
    # for both strategies (median 0.45 and width 0.5):
    #   bin 1: mean p 0.15, click rate 0.5;  bin 2: mean p 0.8, click rate 1.0
    #   ECE = 0.5 * |0.15 - 0.5| + 0.5 * |0.8 - 1.0| = 0.175 + 0.1 = 0.275
    #   Brier = (0.1² + 0.8² + 0.3² + 0.1²) / 4 = 0.75 / 4 = 0.1875
    #   log loss = -(ln 0.9 + ln 0.2 + ln 0.7 + ln 0.9) / 4;  AUC = 1 (the negative is lowest)
    p = np.array([0.1, 0.2, 0.7, 0.9])
    y = np.array([0, 1, 1, 1])
    for strategy in ("quantile", "uniform"):
        result = calibration(p, y, bins=2, strategy=strategy)
        assert result.ece == pytest.approx(0.275)
        assert result.brier == pytest.approx(0.1875)
        expected = -(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.9)) / 4
        assert result.log_loss == pytest.approx(expected)
        assert result.auc == pytest.approx(1.0)
        assert result.mean_predicted == pytest.approx(0.475)
        assert result.observed_rate == pytest.approx(0.75)
        assert [(c.mean_predicted, c.observed_rate, c.count) for c in result.curve] == [
            pytest.approx((0.15, 0.5, 2)),
            pytest.approx((0.8, 1.0, 2)),
        ]


def test_calibration_clips_log_loss_and_handles_one_class():
    result = calibration(np.array([0.0, 0.5]), np.array([1, 1]), bins=2)
    # -(ln 1e-7 + ln 0.5) / 2: the certain mistake costs 16.12 nats, not infinity.
    assert result.log_loss == pytest.approx(-(math.log(1e-7) + math.log(0.5)) / 2)
    assert result.auc is None
    with pytest.raises(ValueError, match="probabilities"):
        calibration(np.array([1.2]), np.array([1]))
    with pytest.raises(ValueError, match="labels"):
        calibration(np.array([0.2, 0.3]), np.array([0, 2]))
