"""Candidate matrices of the sampled, full and candidates protocols."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.evaluation.example_sets import batch_of, row
from training.evaluation.protocols import (
    build_candidates,
    candidates,
    full,
    rankable,
    sampled,
)


def test_sampled_puts_the_target_first_and_pads_ragged_negatives():
    batch = batch_of(
        row(5, sampled_negatives=[1, 2, 3]),
        row(4, sampled_negatives=[6, 4]),  # a negative equal to the target must not compete
    )
    items, target_col, valid = sampled(batch)
    assert items.tolist() == [[5, 1, 2, 3], [4, 6, 4, 0]]
    assert items.dtype == np.int64
    assert target_col.tolist() == [0, 0]
    assert valid.tolist() == [[True, True, True, True], [True, True, False, False]]


def test_full_masks_history_but_not_the_target():
    # Row 0: history {2, 3, 5}, target 3 (re-consumption): 2 and 5 are masked, 3 stays valid.
    # Row 1: history {1}, eligible {1, 3, 4}, target 4: only 3 and 4 remain.
    batch = batch_of(
        row(3, history=[2, 3, 5]),
        row(4, history=[1], candidates=[1, 3, 4]),
    )
    items, target_col, valid = full(batch, n_items=6)
    assert items.tolist() == [[1, 2, 3, 4, 5, 6]] * 2
    assert target_col.tolist() == [2, 3]
    assert valid.tolist() == [
        [True, False, True, True, False, True],
        [False, False, True, True, False, False],
    ]


def test_full_refuses_a_target_outside_the_eligible_list_naming_the_row():
    batch = batch_of(row(2), row(4, candidates=[1, 3]))
    with pytest.raises(ValueError, match="candidates: row 1"):
        full(batch, n_items=6)
    with pytest.raises(ValueError, match="target"):
        full(batch_of(row(7)), n_items=6)


def test_full_scales_to_the_catalogue_of_the_real_sets():
    n_items, rows = 23_715, 256
    batch = batch_of(*[row(1 + (i * 97) % n_items, history=[i + 1, i + 2]) for i in range(rows)])
    items, target_col, valid = full(batch, n_items)
    assert items.shape == valid.shape == (rows, n_items)
    assert items.flags.writeable  # rankers may hand it to torch
    assert items.nbytes + valid.nbytes < 60 * 2**20
    # each row loses its two history items unless one of them is the target
    lost = n_items - valid.sum(axis=1)
    assert set(lost.tolist()) <= {1, 2}
    assert valid[np.arange(rows), target_col].all()


def test_candidates_protocol_finds_the_target_column():
    batch = batch_of(row(3, candidates=[5, 3, 1]), row(2, candidates=[2]))
    items, target_col, valid = candidates(batch)
    assert items.tolist() == [[5, 3, 1], [2, 0, 0]]
    assert target_col.tolist() == [1, 0]
    assert valid.tolist() == [[True, True, True], [True, False, False]]


def test_candidates_protocol_names_the_row_missing_its_target():
    batch = batch_of(row(3, candidates=[5, 3]), row(2, candidates=[4, 5]))
    with pytest.raises(ValueError, match="row 1"):
        candidates(batch)


def test_rankable_skips_rows_without_target_or_anything_to_rank_against():
    batch = batch_of(
        row(0, sampled_negatives=[1], candidates=[1]),
        row(2, sampled_negatives=[1]),
        row(2, candidates=[2, 3]),
    )
    assert rankable("sampled", batch).tolist() == [False, True, False]
    assert rankable("candidates", batch).tolist() == [False, False, True]
    assert rankable("full", batch).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="target: row 0"):
        sampled(batch)


def test_unknown_protocol_is_a_value_error_naming_protocol():
    with pytest.raises(ValueError, match="protocol"):
        build_candidates("leave-one-out", batch_of(row(1)), 3)
    with pytest.raises(ValueError, match="n_items"):
        build_candidates("full", batch_of(row(1)))
