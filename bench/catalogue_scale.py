"""How the request path's cost grows with the catalogue: the same bank with 50 products and with
5,000 (offer variants, ``bench/offer_catalogue.py``), the same service and engines in one
process (no HTTP, so the figure is the pipeline's own), sequential requests, per-stage times
from each response's ``explain.timings_ms``.

    python bench/catalogue_scale.py        # ~2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
RESULTS = BENCH / "results"


def measure(args: Any, requests_n: int, seed: int) -> dict[str, Any]:
    from serving_throughput import customers_and_candidates

    from serving.api import RecommendationRequest
    from serving.placement import local_stages
    from serving.service import RecommendationService

    pairs, candidates = customers_and_candidates(args)
    rib = [cid for cid, app in pairs if app == "rib"]
    service = RecommendationService(args, local_stages(args))
    rng = random.Random(seed)

    async def run() -> tuple[list[float], dict[str, list[float]]]:
        totals: list[float] = []
        stages: dict[str, list[float]] = {}
        for i in range(requests_n + 30):
            body = RecommendationRequest(customer_id=rng.choice(rib), app="rib", explain=True)
            started = time.perf_counter()
            answer = await service.recommend(body, "demo-rib-key")
            elapsed = (time.perf_counter() - started) * 1e3
            if i < 30:  # warm-up: caches, allocator
                continue
            assert not answer.degraded, answer.degraded_reasons
            totals.append(elapsed)
            for stage, ms in (answer.explain or {}).get("timings_ms", {}).items():  # type: ignore[union-attr]
                stages.setdefault(stage, []).append(ms)
        return totals, stages

    totals, stages = asyncio.run(run())
    q = statistics.quantiles(totals, n=100)
    return {
        "catalogue_items": len(service.catalogue.products),
        "candidates_rib": min(candidates["rib"], args.max_candidates),
        "requests": len(totals),
        "p50_ms": round(q[49], 3),
        "p99_ms": round(q[98], 3),
        "mean_ms": round(statistics.fmean(totals), 3),
        "stage_mean_ms": {s: round(statistics.fmean(v), 3) for s, v in stages.items()},
    }


def main() -> None:
    from serving_throughput import prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["50:200", "5000:200", "5000:0"],
        help="catalogue size:max candidates (0 = every product in the app's scope)",
    )
    parser.add_argument("--customers", type=int, default=600)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    parser.add_argument("--out", type=Path, default=RESULTS / "catalogue_scale.json")
    a = parser.parse_args()
    started = time.perf_counter()
    runs = []
    for spec in a.runs:
        size, cap = (int(x) for x in spec.split(":"))
        setup = argparse.Namespace(
            customers=a.customers,
            days=a.days,
            catalogue=size,
            seed=a.seed,
            redis_url=a.redis_url,
            data_dir=Path(f"data/bench_catalogue_{size}"),
        )
        args = prepare(setup).model_copy(update={"max_candidates": cap or size})
        runs.append({"max_candidates": cap or "all", **measure(args, a.requests, a.seed)})
        print(json.dumps(runs[-1]), flush=True)
    base = runs[0]
    for run in runs[1:]:
        run["mean_ratio_vs_smallest"] = round(run["mean_ms"] / base["mean_ms"], 2)
    result = {
        "benchmark": "catalogue_scale",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "what": "in-process pipeline per request (features from Redis, retrieval, transformer, "
        "rules, audit), sequential, app rib; max_candidates 200 is the shipped setting",
        "runs": runs,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    a.out.write_text(json.dumps(result, indent=2))
    print(f"→ {a.out}")


if __name__ == "__main__":
    main()
