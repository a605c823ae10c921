"""``persona examples``, ``persona train`` and ``persona evaluate``: the training side of the CLI."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persona.cli.errors import console, user_errors

examples_app = typer.Typer(no_args_is_help=True)


class SetKind(StrEnum):
    next_item = "next-item"
    holdout = "holdout"
    impressions = "impressions"


@examples_app.command("build")
def build_examples_command(
    kind: Annotated[
        SetKind,
        typer.Argument(
            help="next-item (leave-one-out), holdout (last-acquired product) or impressions (logged slates)."
        ),
    ],
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", help="Validated data directory (with features for holdout/impressions)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the example set.")],
    seed: Annotated[int, typer.Option(help="Seed of negative sampling and tie breaks.")] = 0,
    max_len: Annotated[
        int, typer.Option("--max-len", min=1, help="History length kept per row.")
    ] = 50,
    negatives: Annotated[
        int, typer.Option(min=1, help="Sampled negatives per evaluation row.")
    ] = 100,
    valid_days: Annotated[
        int, typer.Option("--valid-days", min=1, help="impressions: validation days.")
    ] = 7,
    test_days: Annotated[
        int, typer.Option("--test-days", min=1, help="impressions: test days.")
    ] = 7,
) -> None:
    """Build labelled examples with point-in-time features from canonical data."""
    with user_errors():
        common = {"dataset": data_dir.name, "max_len": max_len, "seed": seed}
        if kind is SetKind.next_item:
            from training.sets.next_item import build_next_item_set

            manifest = build_next_item_set(data_dir, out, negatives=negatives, **common)
        elif kind is SetKind.holdout:
            from training.sets.holdout import build_holdout_set

            manifest = build_holdout_set(data_dir, out, negatives=negatives, **common)
        else:
            from training.sets.impressions import build_impression_set

            manifest = build_impression_set(
                data_dir, out, valid_days=valid_days, test_days=test_days, **common
            )
    console.print_json(
        manifest.model_dump_json(exclude={"dense_mean", "dense_std", "dense_features"})
    )


def train_command(
    config: Annotated[Path, typer.Option("--config", help="Run config (YAML), see configs/.")],
    epochs: Annotated[int | None, typer.Option(help="Override the config's epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the config's seed.")] = None,
) -> None:
    """Train the transformer with Ray Train, fit the baselines, evaluate, report, register."""
    from training.config import TrainConfig

    with user_errors():
        run_config = TrainConfig.from_yaml(config, epochs=epochs, seed=seed)
        from training.pipeline import run_training

        summary = run_training(run_config)
    table = Table(title=f"{summary.dataset}: {summary.run_name} (test split)")
    for column in ("model / protocol", "NDCG@10", "HR@10", "MRR", "AUC"):
        table.add_column(column)
    for name, metrics in summary.test.items():
        table.add_row(name, *(_fmt(metrics.get(m)) for m in ("ndcg@10", "hr@10", "mrr", "auc")))
    console.print(table)
    for protocol, lift in summary.lift_vs_best_baseline.items():
        base = summary.best_baseline[protocol]
        console.print(f"transformer vs {base} ({protocol}): NDCG@10 {_pct(lift)}")
    console.print(
        f"trained {summary.epochs_run} epochs in {summary.train_seconds:.0f} s "
        f"({summary.train_samples_per_second:.0f} samples/s, peak {summary.peak_rss_mb:.0f} MB); "
        f"best epoch {summary.best_epoch}"
    )
    if summary.registered_version is not None:
        console.print(f"registered version {summary.registered_version}")
    console.print(f"report: {summary.report}")


def evaluate_command(
    run: Annotated[Path, typer.Option("--run", help="A training run folder (its output_dir).")],
    examples: Annotated[Path | None, typer.Option(help="Example set (default: the run's).")] = None,
    protocol: Annotated[
        list[str] | None, typer.Option(help="sampled, full or candidates (repeatable).")
    ] = None,
    split: Annotated[str, typer.Option(help="valid or test.")] = "test",
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: RUN/evaluation).")
    ] = None,
) -> None:
    """Evaluate a trained run's transformer and baselines: JSON, Markdown and PNG report."""
    import json

    with user_errors():
        from training.evaluation import write_report
        from training.examples import ExampleSet
        from training.models import GlobalPopularity, SegmentPopularity, TabularRanker
        from training.models.sequence_ranker import TransformerRanker
        from training.pipeline import best_baselines, evaluate_all

        if split not in ("valid", "test"):
            raise ValueError(f"split: must be valid or test, got {split!r}")
        summary_path = run / "summary.json"
        if examples is None:
            if not summary_path.exists():
                raise FileNotFoundError(f"run: no summary.json in {run}; pass --examples")
            examples = Path(json.loads(summary_path.read_text())["examples"])
        example_set = ExampleSet(examples)
        example_set.manifest()
        rankers = [TransformerRanker.load(run / "model")]
        loaders = {
            "global_popularity": GlobalPopularity,
            "segment_popularity": SegmentPopularity,
            "lightgbm": TabularRanker,
            "tabular": TabularRanker,
        }
        for folder in sorted((run / "baselines").glob("*")):
            if folder.name in loaders:
                rankers.append(loaders[folder.name].load(folder))
        protocols = protocol or ["sampled", "full"]
        unknown = sorted(set(protocols) - {"sampled", "full", "candidates"})
        if unknown:
            raise ValueError(f"protocol: {unknown} not one of sampled, full, candidates")
        results = evaluate_all(rankers, example_set, protocols, split=split, progress=True)  # type: ignore[arg-type]
        baselines = best_baselines(results, 10)
        paths = write_report(
            results,
            out or run / "evaluation",
            title=f"{example_set.manifest().dataset}: {run.name}",
            baseline_name=baselines.get(protocols[0]),
        )
    console.print((paths.report_md).read_text())
    console.print(f"report: {paths.report_md}")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1%}"
