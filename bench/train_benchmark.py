"""Benchmark: train and evaluate the transformer beside its baselines on real and simulated data.

    .venv/bin/python bench/train_benchmark.py amazon_games     # SASRec paper protocol, vs published
    .venv/bin/python bench/train_benchmark.py czech_bank       # last-acquired product held out
    .venv/bin/python bench/train_benchmark.py simulated_bank   # logged impressions + ground-truth oracle

Each run: load/simulate -> validate -> (features) -> example set -> Ray Train -> baselines ->
test evaluation -> report; writes bench/results/training_<dataset>.json with wall times,
training throughput, peak memory and the targets the issue sets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from persona.features.build import build_features
from persona.settings import get_settings
from persona.validation import validate_dataset
from training.config import TrainConfig
from training.pipeline import run_training

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: Kang & McAuley 2018, Table III, "Games".
SASREC_PAPER = {"SASRec (paper, Table III)": {"ndcg@10": 0.5360, "hr@10": 0.7410}}
POPREC_PAPER = {"PopRec (paper, Table III)": {"ndcg@10": 0.2833, "hr@10": 0.4724}}


def prepare(
    dataset: str, data_dir: Path, examples: Path, seed: int, customers: int, days: int
) -> dict[str, float]:
    from training.sets.holdout import build_holdout_set
    from training.sets.impressions import build_impression_set
    from training.sets.next_item import build_next_item_set

    shared = get_settings().shared_data_dir
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    if dataset == "amazon_games":
        from persona.loaders import load_amazon_games

        load_amazon_games(shared / "amazon_games", data_dir)
    elif dataset == "czech_bank":
        from persona.loaders import load_czech_bank

        load_czech_bank(shared / "czech_bank", data_dir)
    else:
        from persona.simulator import SimulationConfig, simulate_bank

        simulate_bank(
            SimulationConfig(customers=customers, days=days, seed=seed), data_dir, progress=True
        )
    seconds["load_or_simulate"] = time.perf_counter() - started
    started = time.perf_counter()
    report = validate_dataset(data_dir, progress=False)
    if not report.passed:
        raise SystemExit(f"validation failed for {data_dir}")
    seconds["validate"] = time.perf_counter() - started
    if dataset != "amazon_games":
        started = time.perf_counter()
        build_features(data_dir, progress=False)
        seconds["features"] = time.perf_counter() - started
    started = time.perf_counter()
    if dataset == "amazon_games":
        build_next_item_set(data_dir, examples, dataset=dataset, seed=seed, progress=False)
    elif dataset == "czech_bank":
        build_holdout_set(data_dir, examples, dataset=dataset, seed=seed)
    else:
        build_impression_set(data_dir, examples, dataset=dataset, seed=seed, max_len=20)
    seconds["example_set"] = time.perf_counter() - started
    return {k: round(v, 2) for k, v in seconds.items()}


def oracle_results(data_dir: Path, examples: Path) -> Any:
    from persona.simulator.oracle import GroundTruthRanker
    from training.evaluation import evaluate
    from training.examples import ExampleSet

    example_set = ExampleSet(examples)
    ranker = GroundTruthRanker(data_dir, example_set.vocabulary().product_ids())
    return [
        evaluate(ranker, example_set, "test", p, group_by=("app", "segment"))
        for p in ("candidates", "full")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["amazon_games", "czech_bank", "simulated_bank"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()

    config = TrainConfig.from_yaml(
        CONFIGS / f"{args.dataset}.yaml", epochs=args.epochs, seed=args.seed
    )
    data_dir = config.examples.parent / "data"
    started = time.perf_counter()
    prepare_seconds = prepare(
        args.dataset, data_dir, config.examples, args.seed, args.customers, args.days
    )
    reference = SASREC_PAPER | POPREC_PAPER if args.dataset == "amazon_games" else None
    summary = run_training(config, reference=reference, progress=False)
    extra: dict[str, Any] = {}
    if args.dataset == "simulated_bank":
        from training.evaluation import write_report
        from training.evaluation.report import load_results

        oracle = oracle_results(data_dir, config.examples)
        results = load_results(Path(summary.report).parent / "metrics.json") + oracle
        write_report(
            results,
            Path(summary.report).parent,
            title=f"{summary.dataset}: {summary.run_name} (+ oracle)",
            baseline_name="segment_popularity",
        )
        extra["oracle"] = {f"oracle/{r.protocol}": r.metrics for r in oracle}
    wall = time.perf_counter() - started
    payload = {
        "dataset": args.dataset,
        "command": f"python bench/train_benchmark.py {args.dataset} --seed {args.seed}",
        "seed": args.seed,
        "wall_seconds": round(wall, 1),
        "prepare_seconds": prepare_seconds,
        "reference": reference,
        **summary.model_dump(),
        **extra,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"training_{args.dataset}.json"
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(json.dumps({k: v for k, v in payload.items() if k != "history"}, indent=2, default=str))
    print(f"wrote {out}; report: {summary.report}")


if __name__ == "__main__":
    main()
