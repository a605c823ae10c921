"""Run a whole simulation: chunks of customers simulated in parallel, published in order.

Each chunk is simulated and written by one worker process into its own staging folder with
:class:`persona.layout.TableWriter`; the parent then moves the chunk's Parquet parts into the
final tables in chunk order, numbering parts with one counter per table. The output therefore
does not depend on the number of workers or on which worker finished first.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import psutil
from tqdm import tqdm

from persona.layout import DataLayout, TableWriter, write_table
from persona.schemas import CUSTOMERS, EVENTS, HOLDINGS, PRODUCTS, TableSchema
from persona.simulator.catalogue import Catalogue
from persona.simulator.config import SimulationConfig, SimulationSummary
from persona.simulator.daily_loop import simulate_chunk
from persona.simulator.ground_truth import CUSTOMER_TRAITS, PreferenceModel, write_model
from persona.simulator.logging_policy import LoggingPolicy

#: Per-chunk tables: name -> schema. ``customer_traits`` goes to ground_truth/, the rest to raw/.
_CHUNK_TABLES: Final[dict[str, TableSchema]] = {
    "customers": CUSTOMERS,
    "holdings": HOLDINGS,
    "events": EVENTS,
    "customer_traits": CUSTOMER_TRAITS,
}
_STAGING: Final = ".simulator_staging"
#: The run's :class:`SimulationConfig`, beside the hidden model under ``ground_truth/``.
SIMULATION_CONFIG_FILE: Final = "simulation_config.json"


def _final_dir(layout: DataLayout, table: str) -> Path:
    if table == "customer_traits":
        return layout.ground_truth / table
    return layout.raw_table(table)


def stage_chunk(config: SimulationConfig, chunk_index: int, staging: Path) -> dict[str, int]:
    """Simulate one chunk and write its tables under ``staging/chunk-NNNNN/``; rows per table.

    Runs in a worker process (it is a top-level function so it can be pickled by name).
    """
    catalogue = Catalogue()
    model = PreferenceModel.default(catalogue)
    policy = LoggingPolicy.default(catalogue)
    output = simulate_chunk(config, chunk_index, catalogue, model, policy)
    folder = staging / f"chunk-{chunk_index:05d}"
    rows = {}
    for name, table in output.tables(catalogue).items():
        writer = TableWriter(folder / name, _CHUNK_TABLES[name])
        writer.write(table)
        rows[name] = writer.rows_written
    return rows


def _part_number(path: Path) -> int:
    return int(path.stem.removeprefix("part-"))


def _publish(staged: Path, final: Path, next_part: int) -> int:
    """Move a staged table's parts into ``final`` (keeping partition folders), renumbered from
    ``next_part`` in the order they were written; returns the next free part number."""
    for part in sorted(staged.rglob("part-*.parquet"), key=_part_number):
        target = final / part.parent.relative_to(staged) / f"part-{next_part:05d}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, target)
        next_part += 1
    return next_part


@contextmanager
def _peak_rss_sampler(interval_s: float = 0.2) -> Iterator[list[int]]:
    """Samples the summed RSS (bytes) of this process and its children; yields [peak]."""
    peak = [0]
    stop = threading.Event()
    me = psutil.Process()

    def sample() -> None:
        while True:
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a worker may exit between listing and reading it
                    continue
            peak[0] = max(peak[0], total)
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=sample, name="persona-sim-rss", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


#: Below this many customer-days, starting worker processes costs more than it saves.
_PARALLEL_MIN_CUSTOMER_DAYS: Final = 1_000_000


def default_workers(config: SimulationConfig) -> int:
    """One worker per available core (at most one per chunk); 1 for small runs."""
    if config.customers * config.days < _PARALLEL_MIN_CUSTOMER_DAYS:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), config.num_chunks))


def simulate_bank(
    config: SimulationConfig,
    out_dir: Path,
    *,
    progress: bool = True,
    workers: int | None = None,
) -> SimulationSummary:
    """Simulate the bank described by ``config`` into ``DataLayout(out_dir)``.

    Writes ``raw/{customers,products,holdings,events}`` (replacing those tables) and the hidden
    model under ``ground_truth/``. ``workers`` processes simulate chunks in parallel (default:
    one per core for big runs; 1 = in this process); the output is byte-identical for any
    number of workers.
    Shows a progress bar over customers unless ``progress`` is False. Returns rows per table,
    wall time (s) and peak RSS (bytes, this process plus its workers, sampled every 0.2 s).
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    layout = DataLayout(out_dir)
    catalogue = Catalogue()
    workers = workers or default_workers(config)

    rows = {"products": write_table(layout.raw_table("products"), catalogue.to_arrow(), PRODUCTS)}
    write_model(PreferenceModel.default(catalogue), out_dir)
    # The config regenerates the customers' hidden behaviour (the traffic simulator needs it).
    (layout.ground_truth / SIMULATION_CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    next_part: dict[str, int] = {}
    for name in _CHUNK_TABLES:
        final = _final_dir(layout, name)
        if final.exists():
            shutil.rmtree(final)
        final.mkdir(parents=True)
        next_part[name] = 0
        rows[name] = 0
    staging = out_dir / _STAGING
    if staging.exists():
        shutil.rmtree(staging)  # left over from an interrupted run

    def publish(chunk_index: int, chunk_rows: dict[str, int]) -> None:
        folder = staging / f"chunk-{chunk_index:05d}"
        for name, count in chunk_rows.items():
            next_part[name] = _publish(folder / name, _final_dir(layout, name), next_part[name])
            rows[name] += count
        shutil.rmtree(folder)

    bar = tqdm(
        total=config.customers,
        unit="customer",
        unit_scale=True,
        desc="simulating bank",
        disable=not progress,
    )
    try:
        with _peak_rss_sampler() as peak, bar:
            for chunk_index, chunk_rows in _run_chunks(config, staging, workers):
                publish(chunk_index, chunk_rows)
                bar.update(
                    min(config.chunk_size, config.customers - chunk_index * config.chunk_size)
                )
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    rows.pop("customer_traits")
    return SimulationSummary(
        out_dir=out_dir,
        customers=config.customers,
        days=config.days,
        seed=config.seed,
        start_date=config.start_date,
        end_date=config.end_date,
        rows=rows,
        wall_seconds=round(time.perf_counter() - started, 3),
        peak_rss_bytes=peak[0],
    )


def _run_chunks(
    config: SimulationConfig, staging: Path, workers: int
) -> Iterator[tuple[int, dict[str, int]]]:
    """Yield (chunk index, rows) in chunk order, simulating up to ``workers`` chunks at once."""
    chunks = range(config.num_chunks)
    if workers == 1:
        for chunk_index in chunks:
            yield chunk_index, stage_chunk(config, chunk_index, staging)
        return
    # spawn: workers start clean (no copied locks or threads from the parent).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[tuple[int, Future[dict[str, int]]]] = deque()
        todo = iter(chunks)
        for chunk_index in todo:
            pending.append((chunk_index, pool.submit(stage_chunk, config, chunk_index, staging)))
            if len(pending) > workers:  # bound staged-but-unpublished chunks (disk, memory)
                break
        while pending:
            chunk_index, future = pending.popleft()
            try:
                result = future.result()
            except BaseException:
                for _, other in pending:
                    other.cancel()
                raise
            next_index = next(todo, None)
            if next_index is not None:
                pending.append((next_index, pool.submit(stage_chunk, config, next_index, staging)))
            yield chunk_index, result
