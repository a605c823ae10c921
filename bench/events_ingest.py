"""Durable event ingestion: events/s through ``EventProcessor.ingest`` and over HTTP, zero lost.

Builds a small simulated bank (once, kept in ``--data-dir``), applies and materialises its
features into its own Redis db and registers a small transformer (the HTTP part serves the
whole graph). Then:

* engine: N threads call ``EventProcessor.ingest`` with batches of B realistic events
  (impressions with request ids, clicks, logins, dismissals, purchases and transactions of ten
  customers per 100 events) for a fixed time, on a fresh WAL each: events/s acknowledged, call
  latency, fsyncs per append (group commit), how long after the ack the events were applied
  online (contact counters, sequence, holdings), and the Parquet event log counted against the
  acknowledged ids.
* http: the real Ray Serve app; several clients post batches to ``/v1/events`` for a fixed time
  per batch size, then the background worker flushes and the Parquet event log is counted with
  DuckDB: every acknowledged event id must be stored (lost = acked - stored = 0), once.

    python bench/events_ingest.py --duration 3 --http-duration 12 --http-batches 100 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import redis
import requests

RESULTS = Path(__file__).resolve().parent / "results"

#: Event mix of an app's traffic: mostly impressions, then clicks, logins and transactions.
EVENT_MIX: dict[str, float] = {
    "impression": 0.66,
    "click": 0.12,
    "login": 0.08,
    "txn": 0.06,
    "dismiss": 0.04,
    "apply": 0.03,
    "purchase": 0.01,
}
EVENTS_PER_CUSTOMER = 10  # a batch of 100 carries ten customers' sessions
_ID_SLOT = "@event_id@"


def prepare(data_dir: Path, customers: int, days: int, seed: int, redis_url: str) -> Any:
    """A featured bank in ``data_dir``, Feast applied and materialised into ``redis_url``, a
    small transformer registered for every app; returns the ServingArgs (reused when built)."""
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

    ready = data_dir / "bench_ready.json"
    if not ready.exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        simulate_bank(
            SimulationConfig(customers=customers, days=days, seed=seed),
            data_dir,
            progress=False,
            workers=1,
        )
        validate_dataset(data_dir, progress=False)
        build_features(data_dir, progress=False)
        build_impression_set(
            data_dir,
            data_dir / "examples",
            dataset="bench-events",
            max_len=20,
            valid_days=3,
            test_days=3,
            seed=seed,
        )
        build_priors(data_dir).save(data_dir / "serving")
        register_initialised_model(
            ExampleSet(data_dir / "examples"),
            ModelRegistry(data_dir / "registry"),
            data_dir / "model",
            seed=seed,
            d_model=16,
            n_blocks=1,
        )
        ready.write_text(json.dumps({"customers": customers, "days": days, "seed": seed}))
    redis.Redis.from_url(redis_url).flushdb()
    settings = PersonaSettings(data_dir=data_dir, online_store="redis", redis_url=redis_url)
    store = open_store(settings, OnlineStoreChoice("redis", "bench", redis_url))
    apply_definitions(store, data_dir)
    materialize_all(store, data_dir)
    return ServingArgs(
        data_dir=data_dir, online_store="redis", redis_url=redis_url, flush_interval_s=1.0
    )


def bank_ids(data_dir: Path) -> tuple[list[int], list[str]]:
    """Retail customer ids and product ids of the simulated bank."""
    clean = data_dir / "clean"
    with duckdb.connect() as con:
        customers = [
            r[0]
            for r in con.sql(
                "SELECT customer_id FROM read_parquet("
                f"'{clean}/customers/**/*.parquet') ORDER BY customer_id"
            ).fetchall()
        ]
        products = [
            r[0]
            for r in con.sql(
                f"SELECT product_id FROM read_parquet('{clean}/products/**/*.parquet') "
                "ORDER BY product_id"
            ).fetchall()
        ]
    return customers, products


class EventFactory:
    """Realistic event batches (API shape: dicts as a client posts them), one app per batch."""

    def __init__(self, customers: list[int], products: list[str], seed: int):
        self.customers, self.products = customers, products
        self.rng = random.Random(seed)
        self.types = list(EVENT_MIX)
        self.weights = list(EVENT_MIX.values())

    def batch(self, size: int) -> list[dict[str, Any]]:
        rng = self.rng
        app = rng.choice(("rib", "imobile", "nli", "cib"))
        out: list[dict[str, Any]] = []
        customer = rng.choice(self.customers)
        request_id = uuid.uuid4().hex
        for i in range(size):
            if i and i % EVENTS_PER_CUSTOMER == 0:
                customer, request_id = rng.choice(self.customers), uuid.uuid4().hex
            kind = rng.choices(self.types, self.weights)[0]
            event: dict[str, Any] = {
                "event_id": uuid.uuid4().hex,
                "customer_id": customer,
                "app": app,
                "event_type": kind,
                "device": "ios" if app == "imobile" else "web",
            }
            if kind in ("impression", "click", "dismiss", "apply", "purchase"):
                event["product_id"] = rng.choice(self.products)
            if kind == "impression":
                event["request_id"] = request_id
                event["position"] = 1 + i % EVENTS_PER_CUSTOMER
            if kind == "txn":
                event["amount"] = round(rng.uniform(5, 500), 2)
            out.append(event)
        return out


def canonical(batch: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """What the events stage hands the engine: canonical EVENTS records."""
    from serving.api import EventIn
    from serving.events import canonical_events

    return canonical_events([EventIn(**e) for e in batch], now)


def closed_loop(
    call: Callable[[int], tuple[int, float]], threads: int, duration_s: float
) -> dict[str, Any]:
    """Run ``call(thread_index) -> (events acked, seconds)`` in ``threads`` threads for
    ``duration_s``; events/s and call latency quantiles."""
    latencies: list[float] = []
    acked = 0
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def worker(index: int) -> None:
        nonlocal acked
        mine: list[float] = []
        my_acked = 0
        try:
            while time.perf_counter() < stop_at:
                n, seconds = call(index)
                my_acked += n
                mine.append(seconds * 1e3)
        except Exception as error:  # noqa: BLE001 (a benchmark reports, it does not die)
            errors.append(repr(error))
        with lock:
            latencies.extend(mine)
            acked += my_acked

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "threads": threads,
        "calls": len(latencies),
        "events_acked": acked,
        "seconds": round(elapsed, 2),
        "events_per_s": round(acked / elapsed, 1),
        "call_p50_ms": round(q[49], 2),
        "call_p99_ms": round(q[98], 2),
        "errors": errors[:3],
    }


def machine() -> dict[str, Any]:
    import pyarrow

    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "redis_server": redis_version(),
        "platform": platform.platform(),
        "load_avg_1m_at_start": round(load[0], 2),
        "note": "cores shared with other work while measured; Redis on loopback; WAL on local disk",
    }


def fsync_ms(folder: Path, n: int = 50) -> dict[str, float]:
    """Latency of appending one event-sized line and fdatasync'ing it, where the WAL lives: what
    one group commit costs on this disk (shared disks vary by an order of magnitude)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".fsync_probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 300 + b"\n")
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        os.close(fd)
        path.unlink()
    q = statistics.quantiles(times, n=100)
    return {"p50": round(q[49], 3), "p99": round(q[98], 3)}


def redis_version() -> str:
    try:
        server: Any = redis.Redis().info("server")
        return str(server["redis_version"])
    except redis.RedisError:
        return "unknown"


def clear_serving_state(args: Any) -> None:
    """Drop WALs and the live event log (priors stay): each part counts only its own events."""
    for folder in (args.serving_dir / "wal", args.live_event_log):
        shutil.rmtree(folder, ignore_errors=True)


def stored_events(event_log: Path) -> tuple[int, set[str]]:
    """(rows, distinct event ids) in the Parquet event log."""
    if not any(event_log.rglob("*.parquet")):
        return 0, set()
    with duckdb.connect() as con:
        ids = [
            r[0]
            for r in con.execute(
                "SELECT event_id FROM read_parquet(?, hive_partitioning=false)",
                [str(event_log / "**" / "*.parquet")],
            ).fetchall()
        ]
    return len(ids), set(ids)


# --- engine ---------------------------------------------------------------------------------


def engine_level(
    args: Any,
    customers: list[int],
    products: list[str],
    configs: list[tuple[int, int, float | None]],
    duration_s: float,
) -> list[dict[str, Any]]:
    """``EventProcessor.ingest`` from N threads, batches of B events, for each (N, B, wait)."""
    from serving.catalogue import Catalogue

    catalogue = Catalogue.from_data_dir(args.data_dir)
    out = []
    for threads, size, wait in configs:
        run = engine_run(args, catalogue, customers, products, threads, size, wait, duration_s)
        print(json.dumps(run), flush=True)
        out.append(run)
    return out


def engine_run(
    args: Any,
    catalogue: Any,
    customers: list[int],
    products: list[str],
    threads: int,
    size: int,
    wait: float | None,
    duration_s: float,
) -> dict[str, Any]:
    """One level on a fresh WAL and event log, flushed and counted at the end."""
    from serving.events import EventProcessor

    clear_serving_state(args)
    processor = EventProcessor(args, f"bench-{threads}x{size}", catalogue)
    processor.start()
    factories = [EventFactory(customers, products, seed=97 * t + size) for t in range(threads)]
    calls = [0, 0]  # answered applied, all
    acked: list[str] = []
    lock = threading.Lock()

    def call(index: int) -> tuple[int, float]:
        batch = canonical(factories[index].batch(size), datetime.now(UTC))
        started = time.perf_counter()
        ids, online = processor.ingest(batch, wait)
        seconds = time.perf_counter() - started
        with lock:
            calls[0] += online
            calls[1] += 1
            acked.extend(ids)
        return len(ids), seconds

    try:
        run = closed_loop(call, threads, duration_s)
        caught_up = processor.applier.wait_applied(processor.wal.end_position(), 60.0)
        lag = sorted(processor.applier.lag_s)
        processor.flush()
        rows, ids = stored_events(args.live_event_log)
        fsyncs = processor.wal.fsyncs
    finally:
        processor.close()
    return run | {
        "batch": size,
        "wait_online_s": processor.online_wait_s if wait is None else wait,
        "acked_online_applied": round(calls[0] / max(calls[1], 1), 3),
        "fsyncs_per_append": round(fsyncs / max(calls[1], 1), 3),
        "apply_lag_p50_ms": round(1e3 * lag[len(lag) // 2], 1) if lag else None,
        "apply_lag_p99_ms": round(1e3 * lag[int(len(lag) * 0.99)], 1) if lag else None,
        "all_applied_within_60s_after": caught_up,
        "stored": len(ids),
        "lost": len(set(acked) - ids),
        "duplicates": rows - len(ids),
    }


# --- HTTP -----------------------------------------------------------------------------------


class HttpClients:
    """Closed-loop clients posting event batches to ``/v1/events``; keeps every acknowledged id.

    Bodies are made from templates with fresh event ids spliced in, so the clients spend their
    CPU on HTTP rather than on building events (the machine is shared with the server).
    """

    def __init__(self, url: str, customers: list[int], products: list[str], clients: int):
        self.url = url
        self.factory = EventFactory(customers, products, seed=1000)
        self.sessions = [requests.Session() for _ in range(clients)]
        self.counters = [0] * clients
        self.acked: set[str] = set()
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.sent = 0
        self.applied = [0, 0]  # acks that said online_applied, acks
        self.failures: dict[str, int] = {}

    def level(self, size: int, clients: int, duration_s: float) -> dict[str, Any]:
        templates = []
        for _ in range(64):
            batch = self.factory.batch(size)
            for event in batch:
                event["event_id"] = _ID_SLOT
            body = json.dumps({"events": batch}).split(f'"{_ID_SLOT}"')
            templates.append((batch[0]["app"], body))

        def call(index: int) -> tuple[int, float]:
            self.counters[index] += 1
            app, parts = templates[(index * 7 + self.counters[index]) % len(templates)]
            prefix = f"h{size}-{index}-{self.counters[index]}-"
            ids = [f'"{prefix}{j}"' for j in range(len(parts) - 1)]
            body = "".join(p for pair in zip(parts, [*ids, ""], strict=True) for p in pair)
            t0 = time.perf_counter()
            answer = self.sessions[index].post(
                f"{self.url}/v1/events",
                data=body.encode(),
                headers={"X-API-Key": f"demo-{app}-key", "Content-Type": "application/json"},
                timeout=30,
            )
            seconds = time.perf_counter() - t0
            with self.lock:
                self.sent += len(ids)
                if answer.status_code != 200:
                    key = f"{answer.status_code} {answer.text[:120]}"
                    self.failures[key] = self.failures.get(key, 0) + 1
                    return 0, seconds
                ack = answer.json()
                self.acked.update(ack["event_ids"])
                self.applied[0] += ack["online_applied"]
                self.applied[1] += 1
            return len(ack["event_ids"]), seconds

        self.reset()
        run = closed_loop(call, clients, duration_s)
        return run | {
            "batch": size,
            "events_sent_per_s": round(self.sent / max(run["seconds"], 1e-9), 1),
            "acked_online_applied": round(self.applied[0] / max(self.applied[1], 1), 3),
            "failures": dict(self.failures),
        }


def http_level(
    args: Any,
    customers: list[int],
    products: list[str],
    clients: int,
    sizes: list[int],
    duration_s: float,
    port: int,
) -> dict[str, Any]:
    """Start the real Serve app, post batches of each size to ``/v1/events`` from ``clients``
    threads for ``duration_s`` each, then wait for the background flush and count the Parquet
    event log against every event acknowledged (warm-up included)."""
    import ray

    from serving.runner import start_serving, stop_serving

    clear_serving_state(args)
    started = time.perf_counter()
    url = start_serving(args, "127.0.0.1", port, quiet=True)
    startup_s = time.perf_counter() - started
    posting = HttpClients(url, customers, products, clients)
    try:
        posting.level(sizes[0], 2, 3.0)  # warm-up: connections, Feast views, first fsyncs
        levels = [posting.level(size, clients, duration_s) for size in sizes]
        waited = time.perf_counter()
        rows, ids = stored_events(args.live_event_log)
        while not posting.acked <= ids and time.perf_counter() - waited < 60:
            time.sleep(0.5)  # the worker flushes every flush_interval_s
            rows, ids = stored_events(args.live_event_log)
        waited_s = time.perf_counter() - waited
    finally:
        stop_serving()
        ray.shutdown()
    acked = posting.acked
    return {
        "startup_s": round(startup_s, 1),
        "flush_interval_s": args.flush_interval_s,
        "levels": levels,
        "acked": len(acked),
        "stored": len(ids),
        "lost": len(acked - ids),
        "duplicates": rows - len(ids),
        "stored_not_acked": len(ids - acked),
        "seconds_until_all_stored": round(waited_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per engine level")
    parser.add_argument(
        "--levels",
        nargs="*",
        default=["1x1", "1x10", "1x100", "4x10", "4x100", "8x100", "8x100x0"],
        help="engine levels THREADSxBATCH[xWAIT_S] (WAIT_S 0: answer once durable)",
    )
    parser.add_argument("--http-duration", type=float, default=12.0, help="seconds per batch size")
    parser.add_argument("--http-clients", type=int, default=8)
    parser.add_argument("--http-batches", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench_events"))
    parser.add_argument("--port", type=int, default=8125)
    a = parser.parse_args()
    started = time.perf_counter()
    info = machine()
    data_dir = a.data_dir.resolve()
    info["fdatasync_ms"] = fsync_ms(data_dir)
    args = prepare(data_dir, a.customers, a.days, a.seed, a.redis_url)
    customers, products = bank_ids(data_dir)
    configs = []
    for level in a.levels:
        parts = level.split("x")
        configs.append((int(parts[0]), int(parts[1]), float(parts[2]) if len(parts) > 2 else None))
    engine = engine_level(args, customers, products, configs, a.duration)
    http: dict[str, Any] | str = "skipped"
    if not a.skip_http:
        try:
            http = http_level(
                args, customers, products, a.http_clients, a.http_batches, a.http_duration, a.port
            )
            print(json.dumps(http), flush=True)
        except (TimeoutError, RuntimeError, OSError, requests.RequestException) as error:
            http = f"not measured: {type(error).__name__}: {error}"[:500]
            print(http, flush=True)
    result = {
        "benchmark": "events_ingest",
        "command": "python bench/events_ingest.py " + " ".join(sys.argv[1:]),
        "machine": info,
        "customers": a.customers,
        "event_mix": EVENT_MIX,
        "engine": engine,
        "http": http,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "events_ingest.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['wall_s']} s)")


if __name__ == "__main__":
    main()
