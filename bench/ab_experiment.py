"""Benchmark: the closed-loop online A/B experiment on the simulated bank (``make ab``).

    .venv/bin/python bench/ab_experiment.py --customers 30000 --bank-days 90 --epochs 5 \
        --traffic-days 14 --seed 42

Builds a bank through the platform's normal path (simulate, validate, features, Feast into
Redis, impression examples, Ray Train fit + baselines + test report, registry, priors), then
``persona simulate traffic``: simulated customers call the live endpoint for the given
simulated days (every app runs ``ranker_vs_priors``: segment-priors baseline vs transformer),
then ``persona experiment analyze`` reads the served-impression log. Writes
``bench/results/ab_experiment.json`` (every figure and the command that produced it); the
HTML reports stay under ``<data-dir>/ab/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import redis

from persona.settings import PersonaSettings
from persona.simulator.traffic.prepare import BankSpec, prepare_bank
from persona.simulator.traffic.run import TrafficConfig
from persona.simulator.traffic.session import run_traffic_session

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=30_000)
    parser.add_argument("--bank-days", type=int, default=90)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--traffic-days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server", choices=["single-process", "ray"], default="single-process")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--shadow-port", type=int, default=8701)
    parser.add_argument("--data-dir", type=Path, default=Path("data/ab"))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--feast-project", default="persona_ab")
    parser.add_argument("--skip-prepare", action="store_true", help="Reuse a prepared data dir.")
    parser.add_argument("--out", type=Path, default=RESULTS / "ab_experiment.json")
    args = parser.parse_args()

    started = time.perf_counter()
    data_dir = args.data_dir.resolve()
    settings = PersonaSettings(
        data_dir=data_dir,
        online_store="redis",
        redis_url=args.redis_url,
        feast_project=args.feast_project,
    )
    spec = BankSpec(
        customers=args.customers, days=args.bank_days, seed=args.seed, epochs=args.epochs
    )
    if args.skip_prepare:
        prepared = json.loads((data_dir / "prepared.json").read_text())
    else:
        redis.Redis.from_url(args.redis_url).flushdb()  # this benchmark's own database
        prepared = json.loads(prepare_bank(spec, data_dir, settings).model_dump_json())
    prepare_seconds = round(time.perf_counter() - started, 1)

    traffic = TrafficConfig(days=args.traffic_days, seed=args.seed, concurrency=args.concurrency)
    outcome = run_traffic_session(
        data_dir,
        data_dir / "ab",
        traffic,
        settings,
        server=args.server,
        port=args.port,
        shadow_port=args.shadow_port,
        extra={"bank": spec.model_dump(mode="json")},
    )
    analyze_out = data_dir / "ab" / "experiment_analyze"
    analyze = [
        str(Path(sys.executable).with_name("persona")),
        "experiment",
        "analyze",
        "--data-dir",
        str(data_dir),
        "--experiments-file",
        str(data_dir / "ab" / "config" / "experiment" / "experiments.yaml"),
        "--experiment",
        "ranker_vs_priors",
        "--out",
        str(analyze_out),
    ]
    subprocess.run(analyze, check=True)
    report = json.loads(outcome.paths["json"].read_text())
    result = {
        "command": "make ab  # " + " ".join(sys.argv),
        "bank": spec.model_dump(mode="json"),
        "traffic": traffic.model_dump(mode="json"),
        "server": args.server,
        "prepare_seconds": prepare_seconds,
        "prepare_steps_seconds": prepared.get("seconds"),
        "training": {
            k: (prepared.get("run_summary") or {}).get(k)
            for k in ("train_seconds", "epochs_run", "best_epoch", "best_valid_ndcg", "test")
        },
        "traffic_session_seconds": outcome.wall_seconds,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "report_html": str(outcome.paths["html"]),
        "report_json": str(outcome.paths["json"]),
        "experiment_analyze": {
            "command": " ".join(analyze[1:]),
            "html": str(analyze_out / "readout.html"),
            "json": str(analyze_out / "readout.json"),
        },
        **{k: v for k, v in report.items() if k not in ("bank",)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['wall_seconds']:.0f} s); report {outcome.paths['html']}")


if __name__ == "__main__":
    main()
