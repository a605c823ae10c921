"""Benchmark: precision and recall of the KPI anomaly detector on injected incidents.

Usage::

    .venv/bin/python bench/anomaly_incidents.py --seeds 8

For each magnitude set (the realistic default, then smaller incidents), runs the incident
scenario (``monitoring.incidents``) with seeds ``first-seed .. first-seed + seeds - 1``, pools
the scores and writes ``bench/results/anomaly_incidents.json`` (per set: precision, recall and
median detection delay per incident kind, precision per KPI, false alerts), plus
``anomaly_incidents.png`` (the first default run: series, incidents shaded, alerts marked) and
``anomaly_incidents_recall.png`` (recall per kind and precision, per magnitude set).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from monitoring.incidents import (
    INCIDENT_KINDS,
    Magnitudes,
    ScenarioConfig,
    ScenarioRun,
    plot_scenario,
    pool_scores,
    run_scenario,
    simulate_traffic_profile,
)
from monitoring.kpi_anomaly import DetectorConfig

RESULTS = Path(__file__).resolve().parent / "results"
#: Realistic incidents first, then halved and quartered ones to show how detection degrades.
MAGNITUDE_SETS: dict[str, Magnitudes] = {
    "default: CTR -40%, traffic x3, fallbacks 30%": Magnitudes(),
    "smaller: CTR -20%, traffic x1.5, fallbacks 5%": Magnitudes(
        ctr_drop=0.20, spike_factor=1.5, outage_fallback_share=0.05, outage_latency_factor=1.2
    ),
    "small: CTR -10%, traffic x1.25, fallbacks 2%": Magnitudes(
        ctr_drop=0.10, spike_factor=1.25, outage_fallback_share=0.02, outage_latency_factor=1.1
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="scenario runs per magnitude set")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first run")
    parser.add_argument("--days", type=int, default=35, help="days of hourly traffic per run")
    parser.add_argument("--train-days", type=int, default=21, help="days before scoring starts")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for JSON and PNGs")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    started = time.perf_counter()
    detector = DetectorConfig(train_hours=args.train_days * 24)
    profile = simulate_traffic_profile(seed=args.first_seed)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    sets: dict[str, dict] = {}
    first_run: ScenarioRun | None = None
    for name, magnitudes in MAGNITUDE_SETS.items():
        runs = []
        for seed in tqdm(seeds, desc=name.split(":")[0], unit="run"):
            config = ScenarioConfig(
                seed=seed, days=args.days, train_days=args.train_days, magnitudes=magnitudes
            )
            runs.append(run_scenario(profile, config, detector))
        first_run = first_run or runs[0]
        pooled = pool_scores([r.score for r in runs])
        sets[name] = {
            "magnitudes": json.loads(magnitudes.model_dump_json()),
            "precision": pooled.precision,
            "recall": pooled.recall,
            "incidents": pooled.incidents,
            "detected": pooled.detected,
            "alerts": pooled.alerts,
            "true_alerts": pooled.true_alerts,
            "by_kind": {
                kind: {
                    "incidents": score.incidents,
                    "detected": score.detected,
                    "recall": score.recall,
                    "median_delay_h": score.median_delay_h,
                    "true_alerts": score.true_alerts,
                }
                for kind, score in pooled.by_kind.items()
            },
            "by_kpi": {k: json.loads(v.model_dump_json()) for k, v in pooled.by_kpi.items()},
            "missed": [
                {"seed": r.scenario.config.seed, **json.loads(i.model_dump_json())}
                for r in runs
                for i in r.scenario.incidents
                if not any(
                    a.app in i.apps and a.window_start < i.end and a.window_end > i.start
                    for a in r.detection.alerts
                )
            ],
        }
        print(
            f"{name}: precision {_pct(pooled.precision)}, recall {_pct(pooled.recall)} "
            + ", ".join(f"{k} {_pct(v.recall)}" for k, v in pooled.by_kind.items())
        )

    args.results.mkdir(parents=True, exist_ok=True)
    assert first_run is not None
    series_png = plot_scenario(first_run, args.results / "anomaly_incidents.png")
    recall_png = _plot_recall(sets, args.results / "anomaly_incidents_recall.png")
    scenario = ScenarioConfig(days=args.days, train_days=args.train_days)
    result = {
        "benchmark": "anomaly_incidents",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "seeds": list(seeds),
        "scenario": json.loads(scenario.model_dump_json(exclude={"seed", "magnitudes"})),
        "detector": json.loads(detector.model_dump_json()),
        "traffic_profile": {
            "sim_customers": profile.sim_customers,
            "customers_represented": scenario.customers_represented,
        },
        "sets": sets,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "plots": [str(series_png.name), str(recall_png.name)],
    }
    path = args.results / "anomaly_incidents.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}, {series_png}, {recall_png} in {result['wall_seconds']} s")
    return 0


def _plot_recall(sets: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [*INCIDENT_KINDS, "precision"]
    figure, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(sets)
    for i, (name, data) in enumerate(sets.items()):
        values = [data["by_kind"][k]["recall"] or 0.0 for k in INCIDENT_KINDS]
        values.append(data["precision"] or 0.0)
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=name)
    ax.axhline(0.9, color="red", lw=0.8, ls="--", label="target 0.9")
    ax.set_xticks(np.arange(len(labels)) + width * (len(sets) - 1) / 2)
    ax.set_xticklabels([label.replace("_", " ") for label in labels])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall (kinds) / precision")
    ax.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


if __name__ == "__main__":
    raise SystemExit(main())
