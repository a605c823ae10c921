"""Small simulated banks for tests: simulated, validated and turned into offline features."""

from __future__ import annotations

from pathlib import Path

from persona.features.build import build_features
from persona.simulator import SimulationConfig, simulate_bank
from persona.validation import validate_dataset


def featured_bank(root: Path, *, customers: int, days: int, seed: int) -> Path:
    """Simulate ``customers`` × ``days`` into ``root``, validate (it must pass) and build the
    offline feature tables; returns ``root``."""
    simulate_bank(
        SimulationConfig(customers=customers, days=days, seed=seed), root, progress=False, workers=1
    )
    report = validate_dataset(root, progress=False)
    assert report.passed
    build_features(root, progress=False)
    return root
