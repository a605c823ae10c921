"""Benchmark: materialisation into Redis and online feature reads, on a simulated bank.

simulate N customers → validate → DuckDB features → feast apply → `feast materialize` (Feast's
stock path) into Redis, timed; then online reads of the customer feature service for 1 and
for 100 customers, timed per call. Writes bench/results/feature_store.json.

    .venv/bin/python bench/feature_store.py --customers 100000 --days 30 --seed 7
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from persona.features import catalog
from persona.features.build import build_features
from persona.features.store import (
    OnlineStoreChoice,
    apply_definitions,
    materialize_all,
    open_store,
    redis_answers,
)
from persona.layout import DataLayout, parquet_glob
from persona.settings import PersonaSettings
from persona.simulator import SimulationConfig, simulate_bank
from persona.validation import validate_dataset

RESULTS = Path(__file__).resolve().parent / "results"


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        "calls": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench_features"))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--single-calls", type=int, default=2_000)
    parser.add_argument("--batch-calls", type=int, default=300)
    parser.add_argument("--reuse", action="store_true", help="Reuse data already built.")
    args = parser.parse_args()
    if not redis_answers(args.redis_url):
        raise SystemExit(f"Redis does not answer at {args.redis_url}")

    root = args.data_dir.resolve()
    timings: dict[str, float] = {}
    if not (args.reuse and (DataLayout(root).features / "build_summary.json").exists()):
        for name, run in (
            (
                "simulate",
                lambda: simulate_bank(
                    SimulationConfig(customers=args.customers, days=args.days, seed=args.seed),
                    root,
                ),
            ),
            ("validate", lambda: validate_dataset(root)),
            ("features_build", lambda: build_features(root)),
        ):
            started = time.perf_counter()
            run()
            timings[name] = round(time.perf_counter() - started, 2)
            print(f"{name}: {timings[name]} s", flush=True)

    settings = PersonaSettings(
        data_dir=root / "bench_registry" / uuid.uuid4().hex[:8],
        feast_project=f"bench_{uuid.uuid4().hex[:8]}",
        online_store="redis",
        redis_url=args.redis_url,
    )
    store = open_store(settings, OnlineStoreChoice("redis", "benchmark", args.redis_url))
    apply_definitions(store, root)
    result = materialize_all(store, root, end=datetime.now(UTC))
    print(f"materialize: {result.rows} in {result.seconds:.1f} s", flush=True)

    glob = parquet_glob(DataLayout(root).clean_table("customers"))
    ids = [
        int(r[0])
        for r in duckdb.execute(f"SELECT customer_id FROM read_parquet('{glob}')").fetchall()
    ]
    rng = np.random.default_rng(args.seed)
    feature_sets: dict[str, Any] = {
        # What serving will call: every customer view plus the on-demand ratios, one round trip.
        "customer_context_v1": store.get_feature_service("customer_context_v1"),
        # The same views without the on-demand transform (its cost shows as the difference).
        "customer_views_only": [
            f"{t.name}:{c}"
            for t in catalog.FEATURE_TABLES.values()
            if t.entity == "customer"
            for c in t.column_names
        ],
        # One small view: the figure comparable to Feast's usual single-view benchmarks.
        "customer_profile_only": [
            f"customer_profile:{c}" for c in catalog.CUSTOMER_PROFILE.column_names
        ],
    }
    for _ in range(50):  # warm connections and caches
        store.get_online_features(
            features=feature_sets["customer_context_v1"], entity_rows=[{"customer_id": ids[0]}]
        )

    def timed(features: Any, batch: int, calls: int) -> list[float]:
        samples = []
        for _ in range(calls):
            rows = [{"customer_id": int(c)} for c in rng.choice(ids, batch, replace=False)]
            started = time.perf_counter()
            response = store.get_online_features(features=features, entity_rows=rows).to_dict()
            samples.append(time.perf_counter() - started)
            assert len(response["customer_id"]) == batch
        return samples

    online = {
        name: {
            "1_customer": _percentiles(timed(features, 1, args.single_calls)),
            "100_customers": _percentiles(timed(features, 100, args.batch_calls)),
        }
        for name, features in feature_sets.items()
    }
    payload = {
        "benchmark": "feature_store",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": args.customers,
        "days": args.days,
        "seed": args.seed,
        "pipeline_seconds": timings,
        "materialize": {
            "online_store": "redis",
            "path": "feast FeatureStore.materialize (stock), DuckDB offline store",
            "entity_rows_per_view": result.rows,
            "entity_rows_total": sum(result.rows.values()),
            "seconds": round(result.seconds, 2),
            "rows_per_second": round(result.rows_per_second),
            "customers_per_second": round(args.customers / result.seconds),
        },
        "online_read": online,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "feature_store.json"
    out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
