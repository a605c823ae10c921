"""The traffic simulator's customers: regenerated exactly, their sessions and responses seeded,
fatigue lowering clicks and raising dismissals, purchases only when eligible."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from persona.simulator import SimulationConfig, simulate_bank
from persona.simulator.traffic.behaviour import end_of_day, respond, true_logit
from persona.simulator.traffic.population import Population, load_population
from persona.simulator.traffic.sessions import daily_sessions

DAY = date(2026, 11, 2)  # a Monday


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Population:
    root = tmp_path_factory.mktemp("traffic_bank")
    simulate_bank(
        SimulationConfig(customers=300, days=20, seed=11), root, progress=False, workers=1
    )
    return load_population(root)


def test_population_is_the_simulated_one(population: Population) -> None:
    assert len(population.customer_id) == 300
    assert population.first_day == date(2026, 11, 1)
    # Holdings rebuilt from the table: every customer has a current account of some kind.
    assert population.held.any(axis=1).mean() > 0.9
    # Impressions of the 20 simulated days left fatigue behind, decayed below their count.
    assert population.fatigue.sum() > 0
    assert population.fatigue.max() < 20


def test_regenerated_customers_must_match_the_table(tmp_path: Path) -> None:
    simulate_bank(SimulationConfig(customers=50, days=14, seed=1), tmp_path, progress=False)
    config = tmp_path / "ground_truth" / "simulation_config.json"
    config.write_text(config.read_text().replace('"seed": 1', '"seed": 2'))
    with pytest.raises(ValueError, match="differ from raw/customers"):
        load_population(tmp_path)


def _slates(pop: Population, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(n), 3)
    products = np.tile(np.array([0, 5, 9]), n)
    positions = np.tile(np.array([1, 2, 3]), n)
    return rows, products, positions


def test_responses_are_deterministic_given_the_seed(population: Population) -> None:
    rows, products, positions = _slates(population)
    a, b = copy.deepcopy(population), copy.deepcopy(population)
    first = respond(a, rows, products, positions, DAY, np.random.default_rng(5))
    second = respond(b, rows, products, positions, DAY, np.random.default_rng(5))
    for name in ("p_click", "clicked", "dismissed", "applied", "purchased"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    np.testing.assert_array_equal(a.fatigue, b.fatigue)
    third = respond(
        copy.deepcopy(population), rows, products, positions, DAY, np.random.default_rng(6)
    )
    assert not np.array_equal(first.clicked | first.dismissed, third.clicked | third.dismissed)


def test_fatigue_lowers_clicks_then_decays(population: Population) -> None:
    pop = copy.deepcopy(population)
    rows, products = np.array([3, 3]), np.array([7, 7])
    before = true_logit(pop, rows[:1], products[:1], DAY)[0]
    respond(pop, rows[:1], products[:1], np.array([1]), DAY, np.random.default_rng(0))
    after = true_logit(pop, rows[:1], products[:1], DAY)[0]
    assert after == pytest.approx(before - pop.model.params.fatigue_per_impression, abs=1e-5)
    fatigue = pop.fatigue[3, 7]
    end_of_day(pop)
    assert pop.fatigue[3, 7] == pytest.approx(fatigue * pop.model.params.fatigue_decay_per_day)
    # Examination: the same item clicks less further down the slate.
    p = respond(
        copy.deepcopy(pop), rows, products, np.array([1, 4]), DAY, np.random.default_rng(0)
    ).p_click
    assert p[1] < p[0]


def test_fatigue_raises_dismissals(population: Population) -> None:
    rows, products, positions = _slates(population, 300)
    fresh, tired = copy.deepcopy(population), copy.deepcopy(population)
    fresh.fatigue[:] = 0.0
    tired.fatigue[:] = 4.0
    a = respond(fresh, rows, products, positions, DAY, np.random.default_rng(1))
    b = respond(tired, rows, products, positions, DAY, np.random.default_rng(1))
    assert b.dismissed.mean() > a.dismissed.mean() + 0.05
    assert b.p_click.mean() < a.p_click.mean()


def test_purchases_only_when_eligible_and_become_holdings(population: Population) -> None:
    pop = copy.deepcopy(population)
    n = 2000
    rows = np.arange(n) % len(pop.customer_id)
    products = np.arange(n) % pop.catalogue.size
    eligible_before = pop.eligible[rows, products]
    pop.fatigue[:] = 0.0
    out = respond(pop, rows, products, np.ones(n, int), DAY, np.random.default_rng(2))
    assert out.purchased.sum() > 0
    assert not (out.purchased & ~eligible_before).any()
    assert not (out.applied & ~out.clicked).any()
    assert pop.held[rows[out.purchased], products[out.purchased]].all()


def test_sessions_are_seeded_one_per_customer(population: Population) -> None:
    a = daily_sessions(population, DAY, np.random.default_rng(3))
    b = daily_sessions(population, DAY, np.random.default_rng(3))
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.at == b.at
    assert len(set(a.rows.tolist())) == len(a)
    assert all(a.at[i] <= a.at[i + 1] for i in range(len(a) - 1))
    assert all(t.date() == DAY for t in a.at)
    # Apps come from each customer's own mix: never one they are not enrolled in.
    assert (population.app_weights[a.rows, a.app] > 0).all()
    only = daily_sessions(population, DAY, np.random.default_rng(3), np.arange(50))
    assert (only.rows < 50).all()
