"""The hidden preference model and its oracle, :class:`GroundTruth`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from persona.simulator import TRAITS, Catalogue, GroundTruth
from persona.simulator.ground_truth import PreferenceModel


@pytest.fixture(scope="module")
def truth(small_bank) -> GroundTruth:  # type: ignore[no-untyped-def]
    return GroundTruth.load(small_bank.root)


def _one(truth: GroundTruth, product: str, at: datetime, **kwargs: object) -> float:
    return float(truth.click_probability([1], [product], at, **kwargs)[0])  # type: ignore[arg-type]


def test_ground_truth_files_are_written(small_bank) -> None:  # type: ignore[no-untyped-def]
    folder = small_bank.layout.ground_truth
    traits = pq.read_table(folder / "customer_traits")
    assert traits.num_rows == small_bank.config.customers
    assert traits.column_names == ["customer_id", *TRAITS]
    vectors = pq.read_table(folder / "product_vectors.parquet")
    assert vectors.column("product_id").to_pylist() == list(Catalogue().product_ids)
    assert (folder / "sequential_effects.parquet").is_file()
    assert (folder / "response_params.json").is_file()


def test_loaded_model_equals_the_default(truth: GroundTruth) -> None:
    default = PreferenceModel.default(Catalogue())
    np.testing.assert_array_equal(truth.model.attributes, default.attributes)
    np.testing.assert_array_equal(truth.model.sequential, default.sequential)
    assert truth.model.params == default.params


def test_traits_follow_demographics(small_bank, truth: GroundTruth) -> None:  # type: ignore[no-untyped-def]
    customers = small_bank.table("customers").to_pandas()
    traits = truth.traits_of(customers["customer_id"].to_numpy())
    affluence = traits[:, TRAITS.index("affluence")]
    rich = customers["income_band"].isin(["upper_middle", "high"]).to_numpy()
    poor = customers["income_band"].isin(["low"]).to_numpy()
    assert affluence[rich].mean() > affluence[poor].mean() + 0.5
    business = traits[:, TRAITS.index("business")]
    corporate = (customers["customer_type"] == "corporate").to_numpy()
    assert business[corporate].mean() > business[~corporate].mean() + 1.0


def test_probabilities_are_probabilities(truth: GroundTruth) -> None:
    ids = np.repeat(truth.customer_ids[:50], 3)
    products = np.tile(["ins_home", "card_gold", "dep_term_12m"], 50)
    p = truth.click_probability(ids, products, datetime(2026, 10, 1, tzinfo=UTC))
    assert p.shape == (150,) and np.all((p > 0) & (p < 1))


def test_position_fatigue_and_sequence_effects(truth: GroundTruth) -> None:
    at = datetime(2026, 10, 14, 12, tzinfo=UTC)
    base = _one(truth, "ins_home", at)
    assert _one(truth, "ins_home", at, position=3) < _one(truth, "ins_home", at, position=2) < base
    tired = _one(truth, "ins_home", at, recent_impressions=np.array([3.0]))
    assert tired < base
    held = np.zeros((1, truth.model.size), dtype=bool)
    held[0, list(truth.model.product_ids).index("loan_home")] = True
    assert _one(truth, "ins_home", at, held=held) > 1.5 * base
    car = np.zeros_like(held)
    car[0, list(truth.model.product_ids).index("loan_car")] = True
    assert _one(truth, "ins_motor", at, held=car) > 1.5 * _one(truth, "ins_motor", at)
    paid = _one(truth, "card_classic", at, days_since_salary=np.array([0.0]))
    assert paid > _one(truth, "card_classic", at, days_since_salary=np.array([60.0]))
    matured = _one(truth, "inv_bond_fund", at, days_since_maturity=np.array([1.0]))
    assert matured > _one(truth, "inv_bond_fund", at)


def test_seasonality(truth: GroundTruth) -> None:
    july = datetime(2026, 7, 15, tzinfo=UTC)  # a Wednesday
    october = datetime(2026, 10, 14, tzinfo=UTC)  # a Wednesday
    november = datetime(2026, 11, 11, tzinfo=UTC)  # a Wednesday
    assert _one(truth, "ins_travel", july) > _one(truth, "ins_travel", october)
    assert _one(truth, "card_gold", november) > _one(truth, "card_gold", october)
    saturday = datetime(2026, 10, 17, tzinfo=UTC)
    assert _one(truth, "loan_personal", saturday) < _one(truth, "loan_personal", october)


def test_held_at_reads_the_holdings_table(small_bank, truth: GroundTruth) -> None:  # type: ignore[no-untyped-def]
    holdings = small_bank.table("holdings")
    ids = truth.customer_ids[:100]
    start = datetime.combine(small_bank.config.start_date, datetime.min.time(), UTC)
    held = truth.held_at(holdings, ids, start)
    current = list(truth.model.product_ids).index("dep_current")
    rows = holdings.to_pandas()
    expected = set(
        rows.loc[
            (rows["product_id"] == "dep_current") & (rows["opened_at"] <= start), "customer_id"
        ]
    )
    assert {int(c) for c in ids[held[:, current]]} == expected & {int(c) for c in ids}


def test_bad_inputs_are_clear_errors(truth: GroundTruth, tmp_path: Path) -> None:
    at = datetime(2026, 10, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="customer_ids"):
        truth.click_probability([10**12], ["ins_home"], at)
    with pytest.raises(ValueError, match="product_ids"):
        truth.click_probability([1], ["ins_dragon"], at)
    with pytest.raises(ValueError, match="position"):
        truth.click_probability([1], ["ins_home"], at, position=0)
    with pytest.raises(ValueError, match="data_dir"):
        GroundTruth.load(tmp_path)
