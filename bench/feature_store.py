"""Benchmark: Feast's stock Redis paths against Persona's fast ones, on the same simulated bank.

One run, one bank (simulated, validated, DuckDB features; cached under ``--data-dir`` and
reused while its size and seed match), one Redis database:

- **materialisation**: ``feast materialize`` (stock) against the bulk materialiser on the same
  20k-customer window of the bank (stock at 1M would take over four minutes), checked byte for
  byte; then the bulk materialiser alone on a 100k window and on all customers, each in a child
  process so its peak RSS is its own;
- **online reads** of ``customer_context_v1`` (every customer view, sequence included, plus the
  on-demand ratios) on the full load: Feast's ``get_online_features(...).to_dict()`` against
  ``FastOnlineReader.read`` (and ``aread``), for 1 and for 100 customers, interleaved call by
  call on the same customers, the answers compared as they go.

Writes bench/results/feature_store.json with the ratios (ours vs Feast) and the machine.

    .venv/bin/python bench/feature_store.py --customers 1000000 --days 7 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psutil
import redis

from persona.features import catalog
from persona.features.build import build_features
from persona.features.online_reader import FastOnlineReader
from persona.features.store import (
    OnlineStoreChoice,
    apply_definitions,
    materialize_all,
    open_store,
    redis_answers,
)
from persona.layout import DataLayout
from persona.settings import PersonaSettings
from persona.simulator import SimulationConfig, simulate_bank
from persona.validation import validate_dataset

RESULTS = Path(__file__).resolve().parent / "results"
SERVICE = "customer_context_v1"
MARKER = "bench_bank.json"


# --- Data: one bank, cached; windows of it by customer id ------------------------------------


def ensure_bank(root: Path, customers: int, days: int, seed: int, reuse: bool) -> dict[str, Any]:
    """Simulate → validate → build features into ``root`` unless a matching bank is there."""
    wanted = {"customers": customers, "days": days, "seed": seed}
    marker = root / MARKER
    if marker.exists():
        found = json.loads(marker.read_text())
        if reuse or {k: found.get(k) for k in wanted} == wanted:
            return {**found, "cached": True}
    timings: dict[str, float] = {}
    for name, run in (
        (
            "simulate",
            lambda: simulate_bank(
                SimulationConfig(customers=customers, days=days, seed=seed), root, progress=False
            ),
        ),
        ("validate", lambda: validate_dataset(root, progress=False)),
        ("features_build", lambda: build_features(root, progress=False)),
    ):
        started = time.perf_counter()
        run()
        timings[name] = round(time.perf_counter() - started, 1)
        print(f"{name}: {timings[name]} s", flush=True)
    marker.write_text(json.dumps({**wanted, "pipeline_seconds": timings}))
    return {**wanted, "pipeline_seconds": timings, "cached": False}


def customer_window(root: Path, customers: int) -> Path:
    """The bank's feature tables for customers 1..``customers`` (products: all), cached."""
    out = root.parent / f"{root.name}_window{customers}"
    marker = out / MARKER
    source = (root / MARKER).read_text()
    if marker.exists() and marker.read_text() == source:
        return out
    features, target = DataLayout(root).features, DataLayout(out).features
    with duckdb.connect() as con:
        for table in catalog.FEATURE_TABLES.values():
            (target / table.name).mkdir(parents=True, exist_ok=True)
            where = f"WHERE customer_id <= {customers}" if table.entity == "customer" else ""
            con.execute(
                f"COPY (SELECT * FROM read_parquet('{features / table.name / 'data.parquet'}') "
                f"{where}) TO '{target / table.name / 'data.parquet'}' (FORMAT parquet)"
            )
    marker.write_text(source)
    return out


# --- Redis projects --------------------------------------------------------------------------


def project_settings(work: Path, project: str, redis_url: str) -> PersonaSettings:
    return PersonaSettings(
        data_dir=work / project, feast_project=project, online_store="redis", redis_url=redis_url
    )


def open_project(work: Path, project: str, redis_url: str, data_root: Path, apply: bool) -> Any:
    settings = project_settings(work, project, redis_url)
    store = open_store(settings, OnlineStoreChoice("redis", "benchmark", redis_url))
    if apply:
        apply_definitions(store, data_root)
    return store


def drop_project(client: redis.Redis, project: str) -> int:
    """Delete a project's keys (SCAN + UNLINK); returns how many."""
    dropped, batch = 0, []
    for key in client.scan_iter(match=b"*" + project.encode(), count=10_000):
        batch.append(key)
        if len(batch) == 10_000:
            dropped += client.unlink(*batch)
            batch = []
    if batch:
        dropped += client.unlink(*batch)
    return dropped


def dump(client: redis.Redis, project: str) -> dict[bytes, dict[bytes, bytes]]:
    suffix = project.encode()
    keys = list(client.scan_iter(match=b"*" + suffix, count=10_000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    return {k[: -len(suffix)]: h for k, h in zip(keys, pipe.execute(), strict=True)}


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def materialise_in_child(
    work: Path, project: str, redis_url: str, data_root: Path, end: datetime
) -> dict[str, Any]:
    """Apply + bulk-materialise in a fresh process; its peak RSS is the materialiser's."""
    out = work / f"{project}.json"
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-materialise",
            str(out),
            "--data-dir",
            str(data_root),
            "--redis-url",
            redis_url,
            "--child-project",
            project,
            "--child-work",
            str(work),
            "--child-end",
            end.isoformat(),
        ],
        check=True,
    )
    return json.loads(out.read_text())


def child_materialise(args: argparse.Namespace) -> None:
    store = open_project(
        args.child_work, args.child_project, args.redis_url, args.data_dir.resolve(), apply=True
    )
    rss_before = psutil.Process().memory_info().rss
    client = redis.Redis.from_url(args.redis_url)
    cpu_before = redis_cpu_s(client)
    result = materialize_all(
        store, args.data_dir, end=datetime.fromisoformat(args.child_end), engine="bulk"
    )
    payload = {
        "engine": result.engine,
        "entity_rows_per_view": result.rows,
        "entity_rows_total": sum(result.rows.values()),
        "seconds": round(result.seconds, 2),
        "rows_per_second": round(result.rows_per_second),
        "redis_cpu_seconds": round(redis_cpu_s(client) - cpu_before, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_mb": round(rss_before / 2**20),
    }
    Path(args.child_materialise).write_text(json.dumps(payload))


# --- Reads -----------------------------------------------------------------------------------


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "calls": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


def same_response(ours: dict[str, list[Any]], feast: dict[str, list[Any]]) -> bool:
    return set(ours) == set(feast) and all(same(ours[k], feast[k]) for k in feast)


def timed_reads(
    feast_read: Callable[[list[int]], dict[str, list[Any]]],
    our_read: Callable[[list[int]], dict[str, list[Any]]],
    batches: list[list[int]],
    checked: int,
) -> tuple[list[float], list[float], int]:
    """Each batch through both readers, alternating which goes first; the first ``checked``
    answers are compared. Returns Feast's and our seconds per call and the mismatches."""
    feast_s, ours_s, mismatches = [], [], 0
    for i, ids in enumerate(batches):
        order = [("feast", feast_read), ("ours", our_read)]
        answers: dict[str, dict[str, list[Any]]] = {}
        for name, read in order if i % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            answers[name] = read(ids)
            (feast_s if name == "feast" else ours_s).append(time.perf_counter() - started)
        if i < checked and not same_response(answers["ours"], answers["feast"]):
            mismatches += 1
    return feast_s, ours_s, mismatches


def timed_sync_reads(reader: FastOnlineReader, batches: list[list[int]]) -> list[float]:
    seconds = []
    for ids in batches:
        started = time.perf_counter()
        reader.read(ids)
        seconds.append(time.perf_counter() - started)
    return seconds


async def timed_async_reads(reader: FastOnlineReader, batches: list[list[int]]) -> list[float]:
    seconds = []
    try:
        for ids in batches[:50]:
            await reader.aread(ids)  # warm the pool
        for ids in batches:
            started = time.perf_counter()
            await reader.aread(ids)
            seconds.append(time.perf_counter() - started)
    finally:
        await reader.aclose()
    return seconds


def read_benchmark(store: Any, customers: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    service = store.get_feature_service(SERVICE)
    reader = FastOnlineReader(store, SERVICE, timeout_s=2.0)

    def feast_read(ids: list[int]) -> dict[str, list[Any]]:
        rows = [{"customer_id": i} for i in ids]
        return store.get_online_features(features=service, entity_rows=rows).to_dict()

    def batches(size: int, calls: int) -> list[list[int]]:
        return [
            [int(c) for c in rng.choice(np.arange(1, customers + 1), size, replace=False)]
            for _ in range(calls)
        ]

    warm = batches(1, 50)
    timed_reads(feast_read, reader.read, warm, checked=0)
    # As a serving replica would after start-up: without it, full collections of the Feast
    # process's heap (100-300 ms) land in Feast's calls and dominate its p99.
    gc.collect()
    gc.freeze()
    out: dict[str, Any] = {}
    for label, size, calls in (
        ("1_customer", 1, args.single_calls),
        ("100_customers", 100, args.batch_calls),
    ):
        sample = batches(size, calls)
        feast_s, ours_s, mismatches = timed_reads(feast_read, reader.read, sample, checked=calls)
        alone_s = timed_sync_reads(reader, sample)
        async_s = asyncio.run(timed_async_reads(reader, sample))
        feast, ours, ours_async = percentiles(feast_s), percentiles(ours_s), percentiles(async_s)
        out[label] = {
            "feast_sdk": feast,
            "fast_reader_sync": ours,
            "fast_reader_sync_back_to_back": percentiles(alone_s),
            "fast_reader_async_back_to_back": ours_async,
            "answers_compared": calls,
            "answers_differing": mismatches,
            "speedup_p50": round(feast["p50_ms"] / ours["p50_ms"], 1),
            "speedup_p99": round(feast["p99_ms"] / ours["p99_ms"], 1),
        }
        print(f"read {label}: feast {feast} ours {ours} async {ours_async}", flush=True)
    reader.close()
    return out


# --- The run ---------------------------------------------------------------------------------


def machine(client: redis.Redis) -> dict[str, Any]:
    import feast
    import pyarrow

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "feast": feast.__version__,
        "redis_server": client.info("server")["redis_version"],
        "redis_py": redis.__version__,
        "duckdb": duckdb.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
        "note": "shared machine: Redis, this process and other users' jobs share the cores",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench_features"))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--single-calls", type=int, default=1_000)
    parser.add_argument("--batch-calls", type=int, default=200)
    parser.add_argument(
        "--stock-customers",
        type=int,
        default=20_000,
        help="window stock `feast materialize` and the bulk loader are compared on",
    )
    parser.add_argument("--mid-customers", type=int, default=100_000)
    parser.add_argument(
        "--reuse", action="store_true", help="Reuse the bank under --data-dir whatever its size."
    )
    parser.add_argument("--child-materialise", help=argparse.SUPPRESS)
    parser.add_argument("--child-project", help=argparse.SUPPRESS)
    parser.add_argument("--child-work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-end", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_materialise:
        child_materialise(args)
        return
    if not redis_answers(args.redis_url):
        raise SystemExit(f"Redis does not answer at {args.redis_url}")

    started = time.perf_counter()
    root = args.data_dir.resolve()
    bank = ensure_bank(root, args.customers, args.days, args.seed, args.reuse)
    customers = int(bank["customers"])
    stock_root = customer_window(root, args.stock_customers)
    mid_root = customer_window(root, args.mid_customers)
    client = redis.Redis.from_url(args.redis_url)
    work = root.parent / f"{root.name}_registries"
    shutil.rmtree(work, ignore_errors=True)
    tag = uuid.uuid4().hex[:6]
    end = datetime.now(UTC)
    projects: list[str] = []
    load_average = [os.getloadavg()]
    try:
        # Stock against bulk on the same window, same end, then byte for byte.
        stock_project, bulk_project = f"bench_stock_{tag}", f"bench_bulk_{tag}"
        projects += [stock_project, bulk_project]
        stock_store = open_project(work, stock_project, args.redis_url, stock_root, apply=True)
        stock = materialize_all(stock_store, stock_root, end=end, engine="feast", progress=False)
        print(f"stock materialise: {stock.rows_per_second:.0f} rows/s", flush=True)
        bulk_store = open_project(work, bulk_project, args.redis_url, stock_root, apply=True)
        bulk = materialize_all(bulk_store, stock_root, end=end, engine="bulk", progress=False)
        print(f"bulk materialise (same window): {bulk.rows_per_second:.0f} rows/s", flush=True)
        stock_dump, bulk_dump = dump(client, stock_project), dump(client, bulk_project)
        identical = stock_dump == bulk_dump
        del stock_dump, bulk_dump
        for project in (stock_project, bulk_project):
            drop_project(client, project)

        mid_project, full_project = f"bench_mid_{tag}", f"bench_full_{tag}"
        projects += [mid_project, full_project]
        mid = materialise_in_child(work, mid_project, args.redis_url, mid_root, end)
        print(f"bulk materialise {args.mid_customers}: {mid}", flush=True)
        drop_project(client, mid_project)
        full = materialise_in_child(work, full_project, args.redis_url, root, end)
        print(f"bulk materialise {customers}: {full}", flush=True)
        load_average.append(os.getloadavg())
        full["redis_used_memory_mb"] = round(client.info("memory")["used_memory"] / 2**20)

        full_store = open_project(work, full_project, args.redis_url, root, apply=False)
        online = read_benchmark(full_store, customers, args)
        load_average.append(os.getloadavg())
    finally:
        for project in projects:
            drop_project(client, project)
        shutil.rmtree(work, ignore_errors=True)

    payload = {
        "benchmark": "feature_store",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": customers,
        "days": bank["days"],
        "seed": bank["seed"],
        "data": {
            "cached": bank["cached"],
            "pipeline_seconds": bank.get("pipeline_seconds", {}),
            "materialised_interval": [
                (
                    end - timedelta(days=max(t.ttl_days for t in catalog.FEATURE_TABLES.values()))
                ).isoformat(timespec="seconds"),
                end.isoformat(timespec="seconds"),
            ],
        },
        "materialize": {
            "online_store": "redis",
            "stock_vs_bulk_same_window": {
                "window": f"customers 1..{args.stock_customers} (all products); stock "
                "`feast materialize` on all 1M customers would take over four minutes",
                "feast_stock": {
                    "path": "FeatureStore.materialize (stock), DuckDB offline store",
                    "entity_rows_per_view": stock.rows,
                    "entity_rows_total": sum(stock.rows.values()),
                    "seconds": round(stock.seconds, 2),
                    "rows_per_second": round(stock.rows_per_second),
                },
                "bulk": {
                    "path": "persona.features.bulk_materialise (in process)",
                    "entity_rows_total": sum(bulk.rows.values()),
                    "seconds": round(bulk.seconds, 2),
                    "rows_per_second": round(bulk.rows_per_second),
                },
                "redis_contents_byte_identical": identical,
                "speedup": round(bulk.rows_per_second / stock.rows_per_second, 1),
            },
            f"bulk_{args.mid_customers}_customers": mid,
            f"bulk_{customers}_customers": full,
            "bulk_1m_vs_stock_rows_per_second": round(
                full["rows_per_second"] / stock.rows_per_second, 1
            ),
        },
        "online_read": {
            "service": SERVICE,
            "store": f"the {customers}-customer bulk load",
            "gc": "gc.collect(); gc.freeze() after set-up, for both (as a serving replica would)",
            "method": "feast_sdk and fast_reader_sync: each call's customers read by both, "
            "alternating which goes first, answers compared (dict of lists, values and types); "
            "then the same calls again through the reader alone, sync and async",
            **online,
        },
        "targets": {
            "1_customer_p99_ms_at_most_2": {
                k: online["1_customer"][k]["p99_ms"]
                for k in (
                    "fast_reader_sync",
                    "fast_reader_sync_back_to_back",
                    "fast_reader_async_back_to_back",
                )
            },
            "100_customers_p99_ms_at_most_10": {
                k: online["100_customers"][k]["p99_ms"]
                for k in (
                    "fast_reader_sync",
                    "fast_reader_sync_back_to_back",
                    "fast_reader_async_back_to_back",
                )
            },
            "bulk_1m_rows_per_second_at_least_50000": full["rows_per_second"],
        },
        "load_average_1_5_15": [[round(x, 2) for x in la] for la in load_average],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": machine(client),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "feature_store.json"
    out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
