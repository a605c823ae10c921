"""Simulated data sets shared by the simulator tests (built once per session, in temp dirs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from persona.layout import DataLayout
from persona.simulator import SimulationConfig, SimulationSummary, simulate_bank


@dataclass(frozen=True)
class SimulatedBank:
    config: SimulationConfig
    summary: SimulationSummary
    root: Path

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.root)

    def table(self, name: str) -> pa.Table:
        """A raw table read back whole (without the ``event_date`` partition column)."""
        return ds.dataset(self.layout.raw_table(name), format="parquet").to_table()


def _simulate(root: Path, **config: int | float) -> SimulatedBank:
    cfg = SimulationConfig(**config)
    return SimulatedBank(cfg, simulate_bank(cfg, root, progress=False), root)


@pytest.fixture(scope="session")
def small_bank(tmp_path_factory: pytest.TempPathFactory) -> SimulatedBank:
    """500 customers × 14 days, three chunks (chunking is exercised everywhere)."""
    return _simulate(
        tmp_path_factory.mktemp("small_bank"), customers=500, days=14, seed=7, chunk_size=200
    )


@pytest.fixture(scope="session")
def behaviour_bank(tmp_path_factory: pytest.TempPathFactory) -> SimulatedBank:
    """Big enough for directional expectations on outcomes (~50k impressions)."""
    return _simulate(
        tmp_path_factory.mktemp("behaviour_bank"),
        customers=4000,
        days=60,
        seed=11,
        chunk_size=2000,
    )
