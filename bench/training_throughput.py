"""Benchmark: Ray Train against one plain torch process on the same model, and peak memory.

Usage::

    .venv/bin/python bench/training_throughput.py          # make bench-training-throughput

Trains the Amazon Games transformer (``configs/amazon_games.yaml``: model, loss, optimiser,
learning-rate schedule, batch size, seed) twice on the same seeded subset of the example set:

* ``ray``: the project's path, :func:`training.trainer.fit` unchanged (``TorchTrainer`` over
  Ray Data, ``ScalingConfig`` from the config: one CPU worker with 2 CPUs, 2 torch threads);
* ``torch``: one Python process, no Ray: the same :func:`training.trainer.train_epoch` and
  :func:`training.trainer.validate` over the same rows in the same order (Ray Data's local
  shuffle reproduced for the same buffer size and seeds; the JSON's per-epoch training losses
  of the two paths agreeing is the check).

Each path runs in its own child process while this one samples the child's process tree with
psutil (RSS and CPU seconds of every process every 0.5 s, PSS every 4 s). Reported per path:
steady-state samples/s (training rows per second of the epochs after the first), start-up
seconds (path start, after imports, to the first training step; for Ray: ``ray.init``, the
Train controller, the worker group and the first Ray Data execution's start),
wall seconds until validation NDCG@10 (the SASRec sampled protocol, on a seeded subsample of
the trained customers' validation rows) first reaches ``--target``, and peak RSS. Then the bank
simulator (``bench/simulator_scale.py``) runs at each ``--simulator`` size for its peak RSS,
beside the 1M × 90 days figure in ``bench/results/simulator_scale.json``.

Writes ``bench/results/training_throughput.json`` and ``training_throughput.png`` (validation
NDCG@10 against wall seconds for both paths) and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil

from training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CONFIG = REPO / "configs" / "amazon_games.yaml"
SIMULATOR_REFERENCE = RESULTS / "simulator_scale.json"
WORK = REPO / "data" / "bench" / "training_throughput"
TrainingPath = Literal["ray", "torch"]
PATHS: tuple[TrainingPath, ...] = ("ray", "torch")


# --------------------------------------------------------------------------------------------
# Data: the Amazon Games example set (bench/train_benchmark.py's preparation) and a seeded subset
# --------------------------------------------------------------------------------------------


def example_subset(source: Path, target: Path, train_rows: int, valid_rows: int, seed: int) -> Path:
    """Copy of ``source`` keeping ``train_rows`` seeded-random customers' train rows (file order)
    and the valid rows of ``valid_rows`` of those customers; test is left out (empty)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from training.examples import ExampleSet

    rng = np.random.default_rng(seed)
    train = pq.read_table(source / "train.parquet")
    keep = np.sort(rng.choice(train.num_rows, size=min(train_rows, train.num_rows), replace=False))
    train = train.take(pa.array(keep))
    customers = train.column("customer_id").to_numpy()
    scored = rng.choice(customers, size=min(valid_rows, len(customers)), replace=False)
    valid = pq.read_table(source / "valid.parquet")
    valid = valid.filter(pc.is_in(valid.column("customer_id"), pa.array(scored)))
    source_set = ExampleSet(source)
    manifest = source_set.manifest()
    splits = {"train": train, "valid": valid, "test": valid.slice(0, 0)}
    manifest = manifest.model_copy(
        update={
            "rows": {name: table.num_rows for name, table in splits.items()},
            "notes": [
                *manifest.notes,
                f"benchmark subset: {train.num_rows} train customers, {valid.num_rows} of their "
                f"valid rows (seed {seed})",
            ],
        }
    )
    ExampleSet(target).write(splits, source_set.vocabulary(), manifest)
    return target


def popularity_ndcg(example_root: Path, k: int) -> float:
    """Validation NDCG@k of global popularity fitted on the same train rows (the level a model
    must beat to have learnt anything personal)."""
    from training.evaluation import evaluate
    from training.examples import ExampleSet
    from training.models import GlobalPopularity

    example_set = ExampleSet(example_root)
    model = GlobalPopularity().fit(example_set)
    result = evaluate(model, example_set, split="valid", protocol="sampled", k=k, group_by=())
    return round(float(result.metrics[f"ndcg@{k}"]), 4)


def prepare_examples(seed: int) -> tuple[Path, float]:
    """The full Amazon Games example set under ``WORK`` (built once, reused); build seconds."""
    if str(REPO) not in sys.path:  # run as a script, bench/ is on the path but not the checkout
        sys.path.insert(0, str(REPO))
    from bench.train_benchmark import prepare
    from training.examples import ExampleSet

    examples = WORK / "examples"
    started = time.perf_counter()
    if not (ExampleSet(examples).exists() and ExampleSet(examples).manifest().seed == seed):
        prepare("amazon_games", WORK / "data", examples, seed, customers=0, days=0)
    return examples, time.perf_counter() - started


# --------------------------------------------------------------------------------------------
# The two training paths (each runs in a child process of its own)
# --------------------------------------------------------------------------------------------


def ray_local_shuffle_order(
    block_rows: list[int], batch_size: int, buffer_rows: int, seed: int
) -> Iterator[np.ndarray]:
    """Row indices of each batch, in the order Ray Data 2.60's local shuffle
    (``iter_batches(local_shuffle_buffer_size=..., local_shuffle_seed=...)``, its
    ``ShufflingBatcher``) yields them from blocks of ``block_rows`` rows: pending rows are
    compacted with the unyielded rest (pending first) into a generation shuffled by one
    ``permutation`` of a seeded generator, and batches are taken from it in order."""
    rng = np.random.default_rng(seed)
    buffer_rows = max(buffer_rows, batch_size)
    min_yield = max(1, int(buffer_rows * 0.5))  # SHUFFLE_BUFFER_COMPACTION_THRESHOLD
    min_compact = int(buffer_rows * 1.5)  # SHUFFLE_BUFFER_COMPACTION_RATIO
    starts = np.cumsum([0, *block_rows])
    blocks = iter(range(len(block_rows)))
    pending: list[np.ndarray] = []
    generation = np.empty(0, dtype=np.int64)
    done = False
    while True:
        n_pending = sum(len(p) for p in pending)
        total = n_pending + len(generation)
        ready = total >= batch_size and (
            done or len(generation) >= min_yield or total - batch_size >= min_compact
        )
        if ready or (done and total > 0):
            if n_pending and (done or len(generation) <= min_yield):
                rows = np.concatenate([*pending, generation])
                generation, pending = rows[rng.permutation(len(rows))], []
            yield generation[:batch_size]
            generation = generation[batch_size:]
        elif not done:
            block = next(blocks, None)
            if block is None:
                done = True
            elif block_rows[block] > 0:
                pending.append(np.arange(starts[block], starts[block + 1]))
        else:
            return


def local_shuffle_batches(
    columns: dict[str, np.ndarray], batch_size: int, buffer_rows: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """The train columns in Ray Data's local-shuffle order (:func:`ray_local_shuffle_order`)
    for a split read as one block, which is how Ray Data 2.60 reads an example set's train file
    (one Parquet file far below its 128 MiB block target)."""
    n_rows = len(columns["targets"])
    for rows in ray_local_shuffle_order([n_rows], batch_size, buffer_rows, seed):
        yield {name: values[rows] for name, values in columns.items()}


def train_columns(example_root: Path) -> dict[str, np.ndarray]:
    """The train split's :data:`training.trainer.TRAIN_COLUMNS` as numpy (what Ray Data yields:
    fixed-size lists as 2-D arrays, ragged lists as object arrays)."""
    import pyarrow.parquet as pq

    from training.trainer import TRAIN_COLUMNS

    table = pq.read_table(example_root / "train.parquet", columns=list(TRAIN_COLUMNS))
    out: dict[str, np.ndarray] = {}
    for name in TRAIN_COLUMNS:
        column = table.column(name).combine_chunks()
        if hasattr(column.type, "list_size"):
            flat = column.flatten().to_numpy(zero_copy_only=False)
            out[name] = flat.reshape(len(table), column.type.list_size)
        elif hasattr(column.type, "value_type"):
            ragged = np.empty(len(table), dtype=object)
            ragged[:] = [np.asarray(v) for v in column.to_pylist()]
            out[name] = ragged
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out


def run_torch(config: TrainConfig, model_config: dict[str, Any]) -> list[dict[str, float]]:
    """The plain loop: one process, no Ray; the trainer's own epoch step and validation."""
    import torch
    from tqdm import tqdm

    from training.examples import ExampleSet
    from training.models.sequence_ranker import BatchEncoder, SequenceRanker, SequenceRankerConfig
    from training.trainer import (
        make_optimiser,
        seed_worker,
        shuffle_buffer_size,
        shuffle_seed,
        torch_threads,
        train_epoch,
        validate,
    )

    seed_worker(config.seed)  # rank 0's seed, as in train_loop_per_worker
    torch.set_num_threads(torch_threads(config))
    device = torch.device("cpu")
    parsed = SequenceRankerConfig.model_validate(model_config)
    model = SequenceRanker(parsed)
    encoder = BatchEncoder(parsed)
    example_set = ExampleSet(config.examples)
    columns = train_columns(config.examples)
    optimiser, scheduler = make_optimiser(model, config, len(columns["targets"]), world=1)
    ndcg_key = f"valid_ndcg@{config.eval_k}"
    best = -1.0
    history: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory() as checkpoint,
        tqdm(range(config.epochs), desc="torch: epochs", unit="epoch") as epochs,
    ):
        for epoch in epochs:
            batches = local_shuffle_batches(
                columns, config.batch_size, shuffle_buffer_size(config), shuffle_seed(config, epoch)
            )
            trained = train_epoch(
                model, model, encoder, optimiser, scheduler, batches, config, device
            )
            metrics: dict[str, float] = {
                "epoch": epoch + 1,
                "train_loss": trained.loss,
                "epoch_seconds": trained.seconds,
                "epoch_started_at": trained.started_at,
                "samples_per_second": trained.samples / max(trained.seconds, 1e-9),
            }
            metrics |= validate(model, example_set, config)
            if metrics[ndcg_key] > best:  # the Ray path checkpoints on improvement too
                best = metrics[ndcg_key]
                model.save(Path(checkpoint))
            epochs.set_postfix(
                ndcg=f"{metrics[ndcg_key]:.4f}", sps=f"{trained.samples / trained.seconds:.0f}"
            )
            history.append(metrics)
    return history


def run_ray(config: TrainConfig, model_config: dict[str, Any]) -> list[dict[str, float]]:
    """The project's path: :func:`training.trainer.fit` exactly as the pipeline calls it."""
    import ray

    from training.trainer import fit

    _, history = fit(config, model_config)
    ray.shutdown()
    return [dict(h) for h in history]


def child_main(path: TrainingPath, job_file: Path, out_file: Path) -> None:
    """Entry point of a path's child process: train, then write the history and timestamps."""
    import resource

    import torch  # noqa: F401 - imported before the clock starts, as in any long-lived process

    if path == "ray":
        import ray.train.torch  # noqa: F401

    job = json.loads(job_file.read_text())
    config = TrainConfig.model_validate(job["config"])
    imported_at = started_at = time.time()
    run = run_ray if path == "ray" else run_torch
    history = run(config, job["model"])

    out_file.write_text(
        json.dumps(
            {
                "path": path,
                "process_created_at": psutil.Process().create_time(),
                "imported_at": imported_at,
                "started_at": started_at,
                "finished_at": time.time(),
                "ru_maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "history": history,
            }
        )
    )


# --------------------------------------------------------------------------------------------
# Measuring a child: process-tree RSS sampled in a thread
# --------------------------------------------------------------------------------------------


@dataclass
class ProcessTree:
    """RSS and CPU seconds of a process and everything under it, sampled every ``interval_s``,
    and PSS every ``pss_every`` samples (PSS shares each shared page among the processes
    mapping it, so the tree's PSS sum does not count Ray's shared memory once per process as the
    RSS sum does; reading it walks every page table, ~2 ms per process, hence less often)."""

    interval_s: float = 0.5
    pss_every: int = 8
    samples: int = 0
    peak_rss_bytes: int = 0
    peak_pss_bytes: int = 0
    peak_by_process: dict[int, int] = field(default_factory=dict)
    cpu_seconds: dict[int, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)

    def sample(self, root: psutil.Process) -> None:
        with_pss = self.samples % self.pss_every == 0
        self.samples += 1
        rss_total = pss_total = 0
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:  # the child has exited
            return
        for proc in processes:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    pss = getattr(proc.memory_full_info(), "pss", rss) if with_pss else 0
                    times = proc.cpu_times()
                    self.names[proc.pid] = _process_label(proc)  # Ray retitles its workers
            except psutil.Error:  # a process may exit between listing and reading it
                continue
            rss_total += rss
            pss_total += pss
            self.peak_by_process[proc.pid] = max(self.peak_by_process.get(proc.pid, 0), rss)
            self.cpu_seconds[proc.pid] = times.user + times.system
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss_total)
        self.peak_pss_bytes = max(self.peak_pss_bytes, pss_total)

    def watch(self, process: subprocess.Popen[bytes]) -> threading.Thread:
        root = psutil.Process(process.pid)

        def loop() -> None:
            while process.poll() is None:
                self.sample(root)
                time.sleep(self.interval_s)

        thread = threading.Thread(target=loop, name="bench-process-tree", daemon=True)
        thread.start()
        return thread

    def summary(self, root_pid: int) -> dict[str, Any]:
        largest = max(self.peak_by_process, key=self.peak_by_process.__getitem__, default=root_pid)
        workers = [pid for pid, name in self.names.items() if "TrainWorker" in name]
        return {
            "peak_rss_tree_mb": _mb(self.peak_rss_bytes),
            "peak_pss_tree_mb": _mb(self.peak_pss_bytes),
            "peak_rss_driver_mb": _mb(self.peak_by_process.get(root_pid, 0)),
            "peak_rss_largest_process_mb": _mb(self.peak_by_process.get(largest, 0)),
            "largest_process": self.names.get(largest, ""),
            "peak_rss_train_worker_mb": _mb(max(self.peak_by_process[p] for p in workers))
            if workers
            else None,
            "processes_seen": len(self.names),
            "cpu_seconds_tree": round(sum(self.cpu_seconds.values()), 1),
            # the process whose threads train: Ray's train worker, or the torch child itself
            "cpu_seconds_training_process": round(
                sum(self.cpu_seconds[p] for p in workers)
                if workers
                else self.cpu_seconds.get(root_pid, 0.0),
                1,
            ),
        }


def _process_label(proc: psutil.Process) -> str:
    cmdline = proc.cmdline()
    return " ".join(cmdline)[:60].strip() if cmdline else proc.name()


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def run_child(
    path: TrainingPath, config: TrainConfig, model_config: dict[str, Any], scratch: Path
) -> dict[str, Any]:
    """One path in a fresh Python process; returns its history, timings and memory."""
    job = scratch / f"{path}_job.json"
    out = scratch / f"{path}_out.json"
    job.write_text(json.dumps({"config": config.model_dump(mode="json"), "model": model_config}))
    threads = str(config.scaling.torch_threads or int(config.scaling.cpus_per_worker))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        __file__,
        "--child",
        path,
        "--job",
        str(job),
        "--child-out",
        str(out),
    ]
    memory = ProcessTree()
    load_before = [round(v, 2) for v in os.getloadavg()]
    launched = time.time()
    process = subprocess.Popen(command, env=env)
    thread = memory.watch(process)
    if process.wait() != 0:
        raise SystemExit(f"{path} path failed (exit {process.returncode})")
    thread.join()
    result = json.loads(out.read_text())
    return {
        **result,
        "launched_at": launched,
        "memory": memory.summary(process.pid),
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def path_summary(run: dict[str, Any], target: float, eval_k: int) -> dict[str, Any]:
    """Samples/s, start-up, time-to-target and the NDCG curve of one path's child run."""
    history = run["history"]
    key = f"valid_ndcg@{eval_k}"
    t0 = run["started_at"]
    samples = [h["samples_per_second"] * h["epoch_seconds"] for h in history]
    seconds = [h["epoch_seconds"] for h in history]
    steady = slice(1, None) if len(history) > 1 else slice(None)
    reached = next((h for h in history if h[key] >= target), None)
    curve = [
        {
            "epoch": int(h["epoch"]),
            "wall_seconds": round(h["validated_at"] - t0, 2),
            "train_seconds": round(h["epoch_seconds"], 2),
            "valid_seconds": round(h["valid_seconds"], 2),
            "samples_per_second": round(h["samples_per_second"], 1),
            key: round(h[key], 4),
            "train_loss": round(h["train_loss"], 6),
        }
        for h in history
    ]
    trainer_peaks = [h["peak_rss_mb"] for h in history if "peak_rss_mb" in h]
    in_loop = 0.0
    for h in history:
        in_loop += h["epoch_seconds"] + h["valid_seconds"]
        if h is reached:
            break
    return {
        "samples_per_second_steady": round(sum(samples[steady]) / sum(seconds[steady]), 1),
        "samples_per_second_first_epoch": round(samples[0] / seconds[0], 1),
        "startup_seconds": round(history[0]["epoch_started_at"] - t0, 2),
        "python_and_imports_seconds": round(run["imported_at"] - run["process_created_at"], 2),
        "teardown_seconds": round(run["finished_at"] - history[-1]["validated_at"], 2),
        "wall_seconds": round(run["finished_at"] - t0, 2),
        "time_to_target_seconds": round(reached["validated_at"] - t0, 2) if reached else None,
        "time_to_target_in_loop_seconds": round(in_loop, 2) if reached else None,
        "epochs_to_target": int(reached["epoch"]) if reached else None,
        "best_valid_ndcg@10": round(max(h[key] for h in history), 4),
        # getrusage's peak of the process that trains: Ray's train worker reports its own.
        "peak_rss_training_process_mb": round(max(trainer_peaks or [run["ru_maxrss_self_mb"]]), 1),
        "memory": run["memory"],
        "load_average_before_after": [run["load_average_before"], run["load_average_after"]],
        "curve": curve,
    }


def simulator_run(customers: int, days: int, seed: int, scratch: Path) -> dict[str, Any]:
    """``bench/simulator_scale.py`` at ``customers`` × ``days`` in a child process (its output
    deleted afterwards): wall seconds and peak RSS of all its processes."""
    results = scratch / f"simulator_{customers}x{days}.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "simulator_scale.py"),
        *("--customers", str(customers), "--days", str(days), "--seed", str(seed)),
        *("--out", str(WORK / "simulator"), "--results", str(results)),
        *("--delete-output", "--no-progress"),
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    measured = json.loads(results.read_text())
    return {
        "customers": customers,
        "days": days,
        "seed": seed,
        "wall_seconds": measured["wall_s"],
        "workers": measured["workers"],
        "total_rows": measured["total_rows"],
        "peak_rss_mb": measured["peak_rss_mb"],
        "peak_rss_largest_process_mb": measured["peak_rss_largest_process_mb"],
    }


def simulator_memory(sizes: list[tuple[int, int]], seed: int, scratch: Path) -> dict[str, Any]:
    """The simulator at each (customers, days), beside the committed 1M × 90 days figure."""
    out: dict[str, Any] = {
        "what": "bench/simulator_scale.py; peak RSS = this process plus its workers, summed, "
        "sampled every 0.2 s (persona.simulator.simulate_bank)",
        "runs": [simulator_run(customers, days, seed, scratch) for customers, days in sizes],
    }
    if SIMULATOR_REFERENCE.exists():
        reference = json.loads(SIMULATOR_REFERENCE.read_text())
        out["reference"] = {
            "source": str(SIMULATOR_REFERENCE.relative_to(REPO)),
            "customers": reference["customers"],
            "days": reference["days"],
            "wall_seconds": reference["wall_s"],
            "peak_rss_mb": reference["peak_rss_mb"],
            "peak_rss_largest_process_mb": reference["peak_rss_largest_process_mb"],
            "measured_at": reference.get("measured_at"),
        }
    return out


def simulator_size(text: str) -> tuple[int, int]:
    """``100000x30`` -> (customers, days)."""
    customers, _, days = text.lower().partition("x")
    try:
        return int(customers), int(days)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CUSTOMERSxDAYS") from None


def machine() -> dict[str, Any]:
    import ray
    import torch

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """One line per path and one of ratios (what ``bench/report.py`` prints), plus the memory
    figures the suite's peak-memory rows read."""
    target = report["target_ndcg@10"]

    def line(name: str) -> str:
        run = report["paths"][name]
        reached = run["time_to_target_seconds"]
        memory = run["memory"]
        return (
            f"{run['samples_per_second_steady']:.0f} samples/s (epoch 2+), start-up "
            f"{run['startup_seconds']:.1f} s, NDCG@10 {target} after "
            + (f"{reached:.0f} s" if reached is not None else "never (not reached)")
            + f"; peak RSS {run['peak_rss_training_process_mb']:,.0f} MB training process, "
            f"{memory['peak_rss_tree_mb']:,.0f} MB all processes "
            f"(PSS {memory['peak_pss_tree_mb']:,.0f} MB)"
        )

    ratios = report["ray_vs_torch"]
    simulator = report["simulator"]
    ray_run, torch_run = report["paths"]["ray"], report["paths"]["torch"]
    return {
        "ray": "Ray Train: " + line("ray"),
        "torch": "one torch process: " + line("torch"),
        "ratios": (
            f"samples/s {ratios['samples_per_second_ratio']}×, time to target "
            f"{ratios['time_to_target_ratio']}×, peak RSS (all processes) "
            f"{ratios['peak_rss_tree_ratio']}× (Ray / torch)"
        ),
        "peak_memory_mb": {
            "training_ray_train_worker": ray_run["peak_rss_training_process_mb"],
            "training_ray_all_processes_rss": ray_run["memory"]["peak_rss_tree_mb"],
            "training_ray_all_processes_pss": ray_run["memory"]["peak_pss_tree_mb"],
            "training_torch_process": torch_run["peak_rss_training_process_mb"],
            "simulator": {
                f"{run['customers']:,} customers × {run['days']} days": run["peak_rss_mb"]
                for run in (simulator["runs"] if simulator else [])
            },
            "simulator_reference": {
                f"{ref['customers']:,} customers × {ref['days']} days": ref["peak_rss_mb"]
                for ref in (
                    [simulator["reference"]] if simulator and "reference" in simulator else []
                )
            },
        },
    }


def plot(summaries: dict[str, dict[str, Any]], target: float, popularity: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, summary in summaries.items():
        curve = summary["curve"]
        xs = [0.0, *(c["wall_seconds"] for c in curve)]
        ys = [np.nan, *(c["valid_ndcg@10"] for c in curve)]
        label = f"{name}: {summary['samples_per_second_steady']:.0f} samples/s"
        ax.plot(xs, ys, marker="o", label=label)
        ax.axvline(summary["startup_seconds"], ls=":", lw=0.8, color=ax.lines[-1].get_color())
    ax.axhline(target, ls="--", color="grey", lw=1, label=f"target NDCG@10 {target}")
    ax.axhline(popularity, ls=":", color="black", lw=1, label=f"global popularity {popularity}")
    ax.set_xlabel("wall seconds since the path started (dotted: first training step)")
    ax.set_ylabel("validation NDCG@10 (sampled protocol)")
    ax.set_title("Amazon Games transformer: Ray Train vs one torch process, 2 threads")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    paths = report["paths"]
    table = Table(title=f"training throughput (target NDCG@10 {report['target_ndcg@10']})")
    table.add_column("measure")
    for name in PATHS:
        table.add_column(name, justify="right")
    table.add_column("ray / torch", justify="right")
    rows = [
        ("samples/s (steady)", "samples_per_second_steady"),
        ("start-up s", "startup_seconds"),
        ("time to target s", "time_to_target_seconds"),
        ("best valid NDCG@10", "best_valid_ndcg@10"),
    ]
    for label, key in rows:
        values = [paths[p][key] for p in PATHS]
        table.add_row(label, *(str(v) for v in values), str(ratio(values[0], values[1])))
    for label, key in (
        ("peak RSS, process tree MB", "peak_rss_tree_mb"),
        ("peak PSS, process tree MB", "peak_pss_tree_mb"),
    ):
        values = [paths[p]["memory"][key] for p in PATHS]
        table.add_row(label, *(str(v) for v in values), str(ratio(values[0], values[1])))
    for label, key in (
        ("CPU s, process tree", "cpu_seconds_tree"),
        ("CPU s, training process", "cpu_seconds_training_process"),
    ):
        values = [paths[p]["memory"][key] for p in PATHS]
        table.add_row(label, *(str(v) for v in values), str(ratio(values[0], values[1])))
    trainers = [paths[p]["peak_rss_training_process_mb"] for p in PATHS]
    table.add_row(
        "peak RSS, training process MB", *(str(v) for v in trainers), str(ratio(*trainers))
    )
    console = Console()
    console.print(table)
    sim = report["simulator"]
    for run in sim["runs"] if sim else []:
        console.print(
            f"simulator {run['customers']:,} customers × {run['days']} days: peak RSS "
            f"{run['peak_rss_mb']:,} MB (all processes), {run['wall_seconds']} s"
        )
    if sim and "reference" in sim:
        ref = sim["reference"]
        console.print(
            f"simulator {ref['customers']:,} × {ref['days']} days ({ref['source']}): peak RSS "
            f"{ref['peak_rss_mb']:,} MB"
        )


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seed", type=int, default=42, help="example set, subset and training seed"
    )
    parser.add_argument("--train-customers", type=int, default=10_000, help="train rows kept")
    parser.add_argument("--valid-customers", type=int, default=2000, help="valid rows scored")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per path (cosine over them)")
    parser.add_argument("--target", type=float, default=0.30, help="validation NDCG@10 to reach")
    parser.add_argument(
        "--simulator",
        type=simulator_size,
        nargs="*",
        default=[(100_000, 30), (1_000_000, 7)],
        metavar="CUSTOMERSxDAYS",
        help="simulator sizes whose peak memory to measure (default: 100000x30 1000000x7)",
    )
    parser.add_argument("--no-simulator", action="store_true", help="skip the simulator's memory")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for JSON and PNG")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.job, args.child_out)
        return 0

    from training.examples import ExampleSet
    from training.models.sequence_ranker import SequenceRankerConfig

    wall_started = time.perf_counter()
    env = machine()
    print("preparing the Amazon Games example set ...", flush=True)
    examples, prepare_seconds = prepare_examples(args.seed)
    subset = example_subset(
        examples, WORK / "subset", args.train_customers, args.valid_customers, args.seed
    )
    manifest = ExampleSet(subset).manifest()
    popularity = popularity_ndcg(subset, k=10)
    config = TrainConfig.from_yaml(
        CONFIG,
        examples=str(subset),
        output_dir=str(WORK / "run"),
        epochs=args.epochs,
        patience=args.epochs,  # no early stop: both paths run every epoch
        seed=args.seed,
    )
    model_config = SequenceRankerConfig.for_manifest(
        manifest, **config.architecture.model_dump()
    ).model_dump(mode="json")

    summaries: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="persona_throughput_") as tmp:
        for path in PATHS:
            print(f"training: {path} path, {args.epochs} epochs ...", flush=True)
            run = run_child(path, config, model_config, Path(tmp))
            summaries[path] = path_summary(run, args.target, config.eval_k)
        simulator = None
        if not args.no_simulator and args.simulator:
            sizes = ", ".join(f"{c:,} customers × {d} days" for c, d in args.simulator)
            print(f"simulator: {sizes} ...", flush=True)
            simulator = simulator_memory(args.simulator, seed=0, scratch=Path(tmp))

    ray_run, torch_run = summaries["ray"], summaries["torch"]
    losses = {name: [c["train_loss"] for c in summaries[name]["curve"]] for name in PATHS}
    report: dict[str, Any] = {
        "benchmark": "training_throughput",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/training_throughput.py " + " ".join(argv or sys.argv[1:]),
        "what": (
            "Amazon Games transformer (configs/amazon_games.yaml), Ray Train (training.trainer.fit: "
            "TorchTrainer, ScalingConfig 1 CPU worker x 2 CPUs) vs one torch process calling the "
            "same train_epoch/validate; same model, loss, optimiser, schedule, batch size, rows, "
            "shuffle-buffer size and seeds; 2 torch threads each"
        ),
        "dataset": manifest.dataset,
        "train_rows": manifest.rows["train"],
        "valid_rows": manifest.rows["valid"],
        "n_items": manifest.n_items,
        "subset_note": manifest.notes[-1],
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "lr_schedule": config.lr_schedule,
        "torch_threads": config.scaling.torch_threads or int(config.scaling.cpus_per_worker),
        "seed": args.seed,
        "target_ndcg@10": args.target,
        "global_popularity_valid_ndcg@10": popularity,
        "metric": "validation NDCG@10, sampled protocol (target among 100 untouched items)",
        "definitions": {
            "samples_per_second_steady": "training rows / training seconds over epochs 2..N",
            "startup_seconds": "path start (after imports) to the first training step",
            "time_to_target_seconds": "path start to the end of the first validation >= target",
            "time_to_target_in_loop_seconds": "training + validation seconds up to that epoch",
            "peak_rss_tree_mb": "summed RSS of the child and all its descendants (Ray: raylet, "
            "GCS, controller, train worker; a shared page counts in every process mapping it)",
        },
        "paths": summaries,
        "same_data_order_check": {
            "what": "per-epoch mean training loss of both paths: equal when both saw the same "
            "batches in the same order from the same initial weights",
            "train_loss": losses,
            "max_abs_difference": round(
                max(abs(a - b) for a, b in zip(*losses.values(), strict=True)), 6
            ),
        },
        "ray_vs_torch": {
            "samples_per_second_ratio": ratio(
                ray_run["samples_per_second_steady"], torch_run["samples_per_second_steady"]
            ),
            "time_to_target_ratio": ratio(
                ray_run["time_to_target_seconds"], torch_run["time_to_target_seconds"]
            ),
            "startup_overhead_seconds": round(
                ray_run["startup_seconds"] - torch_run["startup_seconds"], 2
            ),
            "peak_rss_tree_ratio": ratio(
                ray_run["memory"]["peak_rss_tree_mb"], torch_run["memory"]["peak_rss_tree_mb"]
            ),
        },
        "simulator": simulator,
        "prepare_seconds": round(prepare_seconds, 1),
        "machine": env,
    }
    report["total_wall_seconds"] = round(time.perf_counter() - wall_started, 1)
    report["summary"] = headline(report)
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "training_throughput.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(summaries, args.target, popularity, args.results / "training_throughput.png")
    print_table(report)
    print(f"wrote {out} ({report['total_wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
