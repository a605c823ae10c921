"""Benchmark: how fast, and in how much memory, the bank simulator writes N customers × D days.

Usage::

    .venv/bin/python bench/simulator_scale.py --customers 1000000 --days 90 --seed 0 \
        --out data/bench_sim

Writes ``bench/results/simulator_scale.json``: customers, days, rows per table, wall seconds,
peak RSS in MB (``peak_rss_mb``: this process plus its worker processes together, sampled every
0.2 s; ``peak_rss_largest_process_mb``: getrusage's peak of the largest single process, self or
children), rows per second and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from persona.layout import DataLayout
from persona.simulator import SimulationConfig, simulate_bank
from persona.simulator.run import default_workers

RESULTS = Path(__file__).resolve().parent / "results" / "simulator_scale.json"


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024.0, 1)  # Linux reports kilobytes


def _folder_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers to simulate")
    parser.add_argument("--days", type=int, default=90, help="days in the simulated window")
    parser.add_argument("--seed", type=int, default=0, help="root seed")
    parser.add_argument("--chunk-size", type=int, default=50_000, help="customers per chunk")
    parser.add_argument(
        "--out", type=Path, default=Path("data/bench_sim"), help="data directory to write"
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where to write the JSON result"
    )
    parser.add_argument(
        "--delete-output",
        action="store_true",
        help="remove the simulator's raw tables and ground truth from --out afterwards",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    config = SimulationConfig(
        customers=args.customers, days=args.days, seed=args.seed, chunk_size=args.chunk_size
    )
    started = time.perf_counter()
    summary = simulate_bank(config, args.out, progress=not args.no_progress, workers=args.workers)
    wall = time.perf_counter() - started
    total_rows = summary.total_rows
    layout = DataLayout(args.out)
    result = {
        "benchmark": "simulator_scale",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": config.customers,
        "days": config.days,
        "seed": config.seed,
        "chunk_size": config.chunk_size,
        "rows": summary.rows,
        "total_rows": total_rows,
        "events_per_customer": round(summary.rows["events"] / config.customers, 2),
        "wall_s": round(wall, 2),
        "workers": args.workers or default_workers(config),
        "peak_rss_mb": round(summary.peak_rss_bytes / 2**20, 1),
        "peak_rss_largest_process_mb": _peak_rss_mb(),
        "rows_per_s": round(total_rows / wall),
        "output_mb": {
            "raw": _folder_mb(layout.raw),
            "ground_truth": _folder_mb(layout.ground_truth),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pyarrow": pa.__version__,
            "platform": platform.platform(),
        },
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.delete_output:
        for table in summary.rows:
            shutil.rmtree(layout.raw_table(table), ignore_errors=True)
        shutil.rmtree(layout.ground_truth, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
