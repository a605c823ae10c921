"""Real data for the training tests: a small simulated bank, validated, with offline features."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.banks import featured_bank
from tests.features.conftest import crafted_bank  # noqa: F401  (re-exported fixture)
from training.examples import ExampleSet
from training.sets.impressions import build_impression_set

TINY_CUSTOMERS = 600
TINY_DAYS = 45


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny_bank")
    featured_bank(root, customers=TINY_CUSTOMERS, days=TINY_DAYS, seed=3)
    return root


@pytest.fixture(scope="session")
def tiny_impressions(tiny_bank: Path, tmp_path_factory: pytest.TempPathFactory) -> ExampleSet:
    out = tmp_path_factory.mktemp("tiny_impressions")
    build_impression_set(
        tiny_bank, out, dataset="tiny", max_len=10, valid_days=5, test_days=5, seed=1
    )
    return ExampleSet(out)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    if not ray.is_initialized():  # the CLI demo test may have started one in this process
        ray.init(include_dashboard=False, num_cpus=3, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()
