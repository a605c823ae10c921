"""One training run end to end: Ray Train fit, baselines, test evaluation, report, registry.

``persona train --config run.yaml`` calls :func:`run_training`. Everything lands under the
config's ``output_dir``::

    model/          best transformer checkpoint + the example set's manifest and vocabulary
    baselines/      each fitted baseline
    report/         metrics.json, report.md, PNG plots (every baseline beside the model)
    summary.json    timings, throughput, peak memory, per-epoch history, registry version
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from training.config import Protocol, TrainConfig
from training.evaluation import EvaluationResult, evaluate, write_report
from training.examples import ExampleSet, Split
from training.models import GlobalPopularity, SegmentPopularity, TabularRanker
from training.models.sequence_ranker import SequenceRankerConfig, TransformerRanker
from training.ranker import Ranker

#: Scoring every catalogue item with LightGBM is too slow beyond this many items.
TABULAR_FULL_PROTOCOL_MAX_ITEMS: Final = 2_000
NON_PERSONALISED: Final = ("global_popularity", "segment_popularity")
TRANSFORMER: Final = "transformer"


class RunSummary(BaseModel):
    run_name: str
    dataset: str
    examples: str
    output_dir: str
    train_seconds: float
    epochs_run: int
    best_epoch: int
    best_valid_ndcg: float
    train_samples_per_second: float
    peak_rss_mb: float  # the training worker's peak
    driver_peak_rss_mb: float  # this process: example loading, baselines, evaluation
    test: dict[str, dict[str, float | None]]  # "model/protocol" -> metrics
    lift_vs_best_baseline: dict[str, float | None]  # protocol -> relative NDCG lift
    best_baseline: dict[str, str]  # protocol -> baseline name
    registered_version: int | None
    report: str
    history: list[dict[str, Any]]


def fit_baselines(config: TrainConfig, example_set: ExampleSet) -> list[Ranker]:
    fitted: list[Ranker] = []
    for name in config.baselines:
        folder = config.output_dir / "baselines" / name
        model: GlobalPopularity | SegmentPopularity | TabularRanker
        if name == "global_popularity":
            model = GlobalPopularity().fit(example_set)
        elif name == "segment_popularity":
            model = SegmentPopularity().fit(example_set)
        else:
            from training.models import TabularConfig

            model = TabularRanker(TabularConfig(seed=config.seed)).fit(example_set)
        model.save(folder)
        fitted.append(model)
    return fitted


def evaluate_all(
    rankers: list[Ranker],
    example_set: ExampleSet,
    protocols: list[Protocol],
    *,
    k: int = 10,
    split: Split = "test",
    progress: bool = False,
) -> list[EvaluationResult]:
    """Every ranker under every protocol on one split (LightGBM skips huge full catalogues)."""
    n_items = example_set.manifest().n_items
    results = []
    for protocol in protocols:
        for ranker in rankers:
            if (
                ranker.name == "lightgbm"
                and protocol == "full"
                and n_items > TABULAR_FULL_PROTOCOL_MAX_ITEMS
            ):
                continue
            results.append(
                evaluate(
                    ranker,
                    example_set,
                    split=split,
                    protocol=protocol,
                    k=k,
                    batch_size=256,
                    group_by=("app", "segment"),
                    progress=progress,
                )
            )
    return results


def best_baselines(results: list[EvaluationResult], k: int) -> dict[str, str]:
    """Per protocol, the non-personalised baseline with the highest NDCG@k."""
    best: dict[str, tuple[float, str]] = {}
    for r in results:
        score = r.metrics.get(f"ndcg@{k}")
        better = r.protocol not in best or (score or 0.0) > best[r.protocol][0]
        if r.model in NON_PERSONALISED and score is not None and better:
            best[r.protocol] = (score, r.model)
    return {protocol: name for protocol, (_, name) in best.items()}


def run_training(
    config: TrainConfig,
    *,
    reference: dict[str, dict[str, float]] | None = None,
    progress: bool = True,
) -> RunSummary:
    from training.trainer import fit

    example_set = ExampleSet(config.examples)
    manifest = example_set.manifest()
    config.output_dir.mkdir(parents=True, exist_ok=True)
    model_config = SequenceRankerConfig.for_manifest(manifest, **config.architecture.model_dump())

    started = time.perf_counter()
    model_dir, history = fit(config, model_config.model_dump(mode="json"))
    train_seconds = time.perf_counter() - started
    for source in (example_set.manifest_path, example_set.vocabulary_path):
        shutil.copy2(source, model_dir / source.name)

    transformer = TransformerRanker.load(model_dir, name=TRANSFORMER)
    rankers: list[Ranker] = [transformer, *fit_baselines(config, example_set)]
    results = evaluate_all(
        rankers, example_set, config.test_protocols, k=config.eval_k, progress=progress
    )
    baselines = best_baselines(results, config.eval_k)
    primary = config.test_protocols[0]
    report = write_report(
        results,
        config.output_dir / "report",
        title=f"{manifest.dataset}: {config.run_name}",
        reference=reference,
        baseline_name=baselines.get(primary),
    )
    test = {f"{r.model}/{r.protocol}": dict(r.metrics) for r in results}
    ndcg = f"ndcg@{config.eval_k}"
    lifts: dict[str, float | None] = {}
    for protocol, name in baselines.items():
        model_score = test.get(f"{TRANSFORMER}/{protocol}", {}).get(ndcg)
        base_score = test[f"{name}/{protocol}"].get(ndcg)
        lifts[protocol] = (
            model_score / base_score - 1.0 if model_score is not None and base_score else None
        )

    version = None
    if config.registry.root is not None:
        version = _register(config, model_dir, manifest.model_dump(), results)

    valid_key = f"valid_ndcg@{config.eval_k}"
    scored = [h for h in history if h.get(valid_key) is not None]
    best = max(scored, key=lambda h: h[valid_key]) if scored else {}
    summary = RunSummary(
        run_name=config.run_name,
        dataset=manifest.dataset,
        examples=str(config.examples),
        output_dir=str(config.output_dir),
        train_seconds=round(train_seconds, 1),
        epochs_run=len(history),
        best_epoch=int(best.get("epoch", 0)),
        best_valid_ndcg=float(best.get(valid_key, float("nan"))),
        train_samples_per_second=_mean(h.get("samples_per_second") for h in history),
        peak_rss_mb=max([float(h.get("peak_rss_mb", 0.0)) for h in history] or [0.0]),
        driver_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        test=test,
        lift_vs_best_baseline=lifts,
        best_baseline=baselines,
        registered_version=version,
        report=str(report.report_md),
        history=[_plain(h) for h in history],
    )
    (config.output_dir / "summary.json").write_text(summary.model_dump_json(indent=2))
    return summary


def _register(
    config: TrainConfig, model_dir: Path, manifest: dict[str, Any], results: list[EvaluationResult]
) -> int:
    from training.registry import ModelRegistry

    if config.registry.root is None:
        raise ValueError("registry.root: no registry configured")
    registry = ModelRegistry(config.registry.root)
    metrics = {
        f"test_{r.protocol}_{name.replace('@', '_at_')}": float(value)
        for r in results
        if r.model == TRANSFORMER
        for name, value in r.metrics.items()
        if value is not None
    }
    registered = registry.register_run(
        model_name=config.registry.model_name,
        model_dir=model_dir,
        config=config.model_dump(mode="json"),
        metrics=metrics,
        feature_service=manifest["feature_service"] or "none",
        feature_service_version=manifest["feature_service_version"] or "none",
        data_snapshot=manifest["data_snapshot"],
        seed=config.seed,
        dataset=manifest["dataset"],
    )
    for app in config.registry.serve_apps:
        registry.mark_serving(config.registry.model_name, registered.version, app)
    return registered.version


def _mean(values: Any) -> float:
    got = [float(v) for v in values if v is not None]
    return sum(got) / len(got) if got else 0.0


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(row, default=str))
