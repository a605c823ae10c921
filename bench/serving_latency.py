"""Serving latency and throughput of the full graph over HTTP, at 1 and 16 concurrent clients.

Builds a simulated bank, materialises its features into Redis (its own Redis db), registers a
transformer of production shape (the simulated-bank config: d_model 64, 2 blocks; initialised,
not trained: cost depends on shape, not weights), starts the Ray Serve graph, then runs
closed-loop clients (threads, one keep-alive session each) for a fixed time per level. Stage
times come from the graph's own Prometheus histograms (delta of sum / count over the run).

    python bench/serving_latency.py --customers 2000 --days 30 --duration 20
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import requests

RESULTS = Path(__file__).resolve().parent / "results"


def prepare(data_dir: Path, customers: int, days: int, seed: int, redis_url: str) -> Any:
    from persona.features.build import build_features
    from persona.features.store import (
        OnlineStoreChoice,
        apply_definitions,
        materialize_all,
        open_store,
    )
    from persona.settings import PersonaSettings
    from persona.simulator import SimulationConfig, simulate_bank
    from persona.validation import validate_dataset
    from serving.priors import build_priors
    from serving.scaffold import register_initialised_model
    from serving.settings import ServingArgs
    from training.examples import ExampleSet
    from training.registry import ModelRegistry
    from training.sets.impressions import build_impression_set

    if not (data_dir / "examples" / "manifest.json").exists():
        simulate_bank(SimulationConfig(customers=customers, days=days, seed=seed), data_dir)
        validate_dataset(data_dir)
        build_features(data_dir)
        build_impression_set(
            data_dir,
            data_dir / "examples",
            dataset="bench-serving",
            max_len=50,
            valid_days=3,
            test_days=3,
            seed=seed,
        )
    build_priors(data_dir).save(data_dir / "serving")
    settings = PersonaSettings(data_dir=data_dir, online_store="redis", redis_url=redis_url)
    store = open_store(settings, OnlineStoreChoice("redis", "bench", redis_url))
    apply_definitions(store, data_dir)
    materialize_all(store, data_dir)
    registry = ModelRegistry(data_dir / "registry")
    if (
        registry.serving_version("persona-ranker", "rib") is None
        if "persona-ranker" in registry.models()
        else True
    ):
        register_initialised_model(
            ExampleSet(data_dir / "examples"),
            registry,
            data_dir / "model",
            seed=seed,
            d_model=64,
            n_blocks=2,
            n_heads=2,
        )
    return ServingArgs(data_dir=data_dir, online_store="redis", redis_url=redis_url)


def stage_sums(url: str) -> dict[str, tuple[float, float]]:
    """stage -> (sum seconds, count) over all apps, from /metrics."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    out: dict[str, list[float]] = {}
    for kind in ("sum", "count"):
        for stage, value in re.findall(
            rf'^persona_stage_seconds_{kind}{{app="[a-z]+",stage="([a-z_]+)"}} ([0-9.e+-]+)$',
            text,
            re.M,
        ):
            out.setdefault(stage, [0.0, 0.0])[0 if kind == "sum" else 1] += float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


def run_level(
    url: str, customer_ids: list[int], clients: int, duration_s: float, seed: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = degraded = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def client(index: int) -> None:
        nonlocal errors, degraded
        rng = random.Random(seed * 1000 + index)
        session = requests.Session()
        mine: list[float] = []
        my_errors = my_degraded = 0
        while time.perf_counter() < stop_at:
            app = rng.choice(("rib", "imobile", "nli"))
            body = {"customer_id": rng.choice(customer_ids), "app": app}
            t0 = time.perf_counter()
            answer = session.post(
                f"{url}/v1/recommendations",
                json=body,
                headers={"X-API-Key": f"demo-{app}-key"},
                timeout=30,
            )
            mine.append((time.perf_counter() - t0) * 1e3)
            if answer.status_code != 200:
                my_errors += 1
            elif answer.json()["degraded"]:
                my_degraded += 1
        with lock:
            latencies.extend(mine)
            errors += my_errors
            degraded += my_degraded

    before = stage_sums(url)
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    after = stage_sums(url)
    q = statistics.quantiles(latencies, n=100)
    stages = {
        stage: round(
            (after[stage][0] - before.get(stage, (0, 0))[0])
            * 1e3
            / max(after[stage][1] - before.get(stage, (0, 0))[1], 1),
            3,
        )
        for stage in after
    }
    return {
        "clients": clients,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49], 2),
        "p90_ms": round(q[89], 2),
        "p99_ms": round(q[98], 2),
        "errors": errors,
        "degraded": degraded,
        "stage_mean_ms": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench_serving"))
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["default", "throughput_optimized"],
        choices=["default", "throughput_optimized"],
        help="Serve modes, each in a fresh process (RAY_SERVE_THROUGHPUT_OPTIMIZED is read at start)",
    )
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child_out is None:
        compare_modes(a)
        return

    import ray

    from serving.runner import start_serving, stop_serving

    data_dir = a.data_dir.resolve()
    args = prepare(data_dir, a.customers, a.days, a.seed, a.redis_url)
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    url = start_serving(args, port=a.port, quiet=True)
    glob = str(data_dir / "clean" / "customers" / "**" / "*.parquet")
    with duckdb.connect() as con:
        ids = [
            r[0]
            for r in con.sql(
                f"SELECT customer_id FROM read_parquet('{glob}') WHERE customer_type = 'retail'"
            ).fetchall()
        ]
    try:
        run_level(url, ids, 4, 5.0, a.seed)  # warm-up: caches, batchers, JIT paths
        levels = [run_level(url, ids, n, a.duration, a.seed) for n in a.levels]
    finally:
        stop_serving()
        ray.shutdown()
    result = {
        "benchmark": "serving_latency",
        "machine": "2 cores, loopback, Python closed-loop clients (requests, keep-alive)",
        "customers": a.customers,
        "model": "transformer d_model 64, 2 blocks, 2 heads, max_len 50 (initialised)",
        "levels": levels,
    }
    a.child_out.write_text(json.dumps(result, indent=2))


def compare_modes(a: argparse.Namespace) -> None:
    """Run each Serve mode in its own process, one after the other on the same data, and write
    them side by side with the throughput ratios."""
    import os
    import subprocess
    import sys
    import tempfile

    runs: dict[str, Any] = {}
    for mode in a.modes:
        env = dict(os.environ)
        env.pop("RAY_SERVE_THROUGHPUT_OPTIMIZED", None)
        if mode == "throughput_optimized":
            env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        with tempfile.TemporaryDirectory() as tmp:
            child = Path(tmp) / "run.json"
            command = [
                sys.executable,
                __file__,
                "--child-out",
                str(child),
                "--customers",
                str(a.customers),
                "--days",
                str(a.days),
                "--seed",
                str(a.seed),
                "--duration",
                str(a.duration),
                "--redis-url",
                a.redis_url,
                "--data-dir",
                str(a.data_dir),
                "--port",
                str(a.port),
                "--levels",
                *map(str, a.levels),
            ]
            subprocess.run(command, env=env, check=True)
            runs[mode] = json.loads(child.read_text())
    first = next(iter(runs.values()))
    result = {
        "benchmark": "serving_latency",
        "command": "python bench/serving_latency.py " + " ".join(sys.argv[1:]),
        "machine": first["machine"],
        "customers": first["customers"],
        "model": first["model"],
        "modes": {mode: run["levels"] for mode, run in runs.items()},
    }
    if {"default", "throughput_optimized"} <= runs.keys():
        result["req_per_s_ratio_optimized_vs_default"] = {
            str(d["clients"]): round(o["req_per_s"] / d["req_per_s"], 2)
            for d, o in zip(
                runs["default"]["levels"], runs["throughput_optimized"]["levels"], strict=True
            )
        }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "serving_latency.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
