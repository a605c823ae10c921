"""Sticky experiment assignment: deterministic, salted, and split as configured over 10k customers."""

from __future__ import annotations

from collections import Counter

import pytest
from scipy.stats import chisquare

from serving.config import DEFAULT_CONFIG_DIR, ConfigError, Experiment, load_apps, load_experiments
from serving.experiments import assign

EXPERIMENT = Experiment.model_validate(
    {
        "salt": "test-salt-1",
        "holdout": 0.05,
        "holdout_variant": {"name": "holdout", "weight": 1, "policy": "segment_priors"},
        "variants": [
            {"name": "control", "weight": 1, "policy": "segment_priors"},
            {"name": "transformer", "weight": 1},
        ],
    }
)


def test_split_over_10k_customers_matches_the_configured_shares() -> None:
    n = 10_000
    counts = Counter(assign(c, "e", EXPERIMENT).variant.name for c in range(1, n + 1))
    expected = {"holdout": 0.05 * n, "control": 0.475 * n, "transformer": 0.475 * n}
    _, p_value = chisquare([counts[v] for v in expected], [expected[v] for v in expected])
    assert p_value > 0.001, counts  # a sample-ratio mismatch would fail here
    for variant, share in expected.items():
        assert abs(counts[variant] - share) < 4 * (share * (1 - share / n)) ** 0.5, counts


def test_assignment_is_sticky_and_reported_with_its_probability() -> None:
    for customer_id in range(1, 500):
        first = assign(customer_id, "e", EXPERIMENT)
        assert assign(customer_id, "e", EXPERIMENT) == first
        expected = {"holdout": 0.05, "control": 0.475, "transformer": 0.475}[first.variant.name]
        assert first.probability == pytest.approx(expected)


def test_a_new_salt_reshuffles_customers() -> None:
    other = EXPERIMENT.model_copy(update={"salt": "test-salt-2"})
    moved = sum(
        assign(c, "e", EXPERIMENT).variant.name != assign(c, "e", other).variant.name
        for c in range(1, 2001)
    )
    assert moved > 600  # about half would move between the two big arms


def test_shipped_configs_are_valid_and_a_missing_experiment_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    apps = load_apps(DEFAULT_CONFIG_DIR / "apps.yaml")
    load_experiments(DEFAULT_CONFIG_DIR / "experiments.yaml", apps)
    (tmp_path / "experiments.yaml").write_text("experiments: {}\n")
    with pytest.raises(ConfigError, match="ranker_vs_priors"):
        load_experiments(tmp_path / "experiments.yaml", apps)
    (tmp_path / "apps.yaml").write_text(
        "apps:\n  atm:\n    api_key_sha256: ['" + "0" * 64 + "']\n    allowed_categories: [card]\n"
    )
    with pytest.raises(ConfigError, match="atm"):
        load_apps(tmp_path / "apps.yaml")
