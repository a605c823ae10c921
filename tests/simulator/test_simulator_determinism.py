"""Same seed → identical Parquet; another seed → different data; workers don't change output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from persona.layout import DataLayout
from persona.simulator import SimulationConfig, simulate_bank

_TABLES = ("customers", "products", "holdings", "events")


def _file_digests(root: Path) -> dict[str, str]:
    """sha256 of every Parquet file under the data dir, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.parquet"))
    }


def _content(root: Path, table: str):  # type: ignore[no-untyped-def]
    return ds.dataset(DataLayout(root).raw_table(table), format="parquet").to_table()


def test_same_seed_gives_identical_parquet(small_bank, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    again = simulate_bank(small_bank.config, tmp_path, progress=False)
    assert again.rows == small_bank.summary.rows
    assert _file_digests(tmp_path) == _file_digests(small_bank.root)
    for table in _TABLES:
        assert _content(tmp_path, table).equals(_content(small_bank.root, table)), table


def test_different_seed_gives_different_data(small_bank, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = small_bank.config.model_copy(update={"seed": small_bank.config.seed + 1})
    simulate_bank(other, tmp_path, progress=False)
    assert _content(tmp_path, "products").equals(_content(small_bank.root, "products"))
    for table in ("customers", "holdings", "events"):
        assert not _content(tmp_path, table).equals(_content(small_bank.root, table)), table


def test_rerun_into_the_same_folder_replaces_the_tables(tmp_path: Path) -> None:
    config = SimulationConfig(customers=60, days=5, seed=2, chunk_size=25)
    first = simulate_bank(config, tmp_path, progress=False)
    second = simulate_bank(config, tmp_path, progress=False)
    assert first.rows == second.rows
    for table in _TABLES:
        assert _content(tmp_path, table).num_rows == first.rows[table]
    assert not (tmp_path / ".simulator_staging").exists()


@pytest.mark.slow
def test_worker_processes_do_not_change_the_output(tmp_path: Path) -> None:
    config = SimulationConfig(customers=900, days=10, seed=5, chunk_size=200)
    simulate_bank(config, tmp_path / "one", progress=False, workers=1)
    simulate_bank(config, tmp_path / "two", progress=False, workers=2)
    assert _file_digests(tmp_path / "one") == _file_digests(tmp_path / "two")


def test_bad_worker_count_is_a_clear_error(tmp_path: Path) -> None:
    config = SimulationConfig(customers=10, days=2, seed=1)
    with pytest.raises(ValueError, match="workers"):
        simulate_bank(config, tmp_path, progress=False, workers=0)
