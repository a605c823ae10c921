"""``persona monitor drift`` and ``persona monitor behaviour``: drift and anomaly reports, alerts."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persona.cli.errors import console, user_errors

monitor_app = typer.Typer(no_args_is_help=True)


class AlertLevel(StrEnum):
    watch = "watch"
    alert = "alert"


AlertsOption = Annotated[
    Path | None,
    typer.Option(
        "--alerts", help="JSON-lines file the alerts are appended to (default: OUT/alerts.jsonl)."
    ),
]


@monitor_app.command("drift")
def drift_command(
    examples: Annotated[
        Path, typer.Option("--examples", help="Example set the model was trained on.")
    ],
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Data directory with the current feature tables.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for drift.json and drift.png (default: DATA_DIR/monitoring/drift)."
        ),
    ] = None,
    reference_scores: Annotated[
        Path | None,
        typer.Option(
            "--reference-scores", help="Parquet of model scores on the train split (score drift)."
        ),
    ] = None,
    served_scores: Annotated[
        Path | None,
        typer.Option("--served-scores", help="Parquet of scores of served items (score drift)."),
    ] = None,
    score_column: Annotated[
        str, typer.Option("--score-column", help="Score column in both score files.")
    ] = "score",
    watch: Annotated[
        float | None, typer.Option(min=0.0, help="PSI from which a column is watched [0.1].")
    ] = None,
    alert: Annotated[
        float | None, typer.Option(min=0.0, help="PSI from which an alert is raised [0.25].")
    ] = None,
    bins: Annotated[
        int | None, typer.Option(min=2, help="Quantile bins per numeric feature [10].")
    ] = None,
    alerts: AlertsOption = None,
    alert_on: Annotated[
        AlertLevel, typer.Option("--alert-on", help="Lowest status that is written as an alert.")
    ] = AlertLevel.alert,
) -> None:
    """PSI of every model input (and the score) between the training window and the latest
    feature snapshot: drift.json, drift.png, and alerts as JSON lines."""
    from monitoring.alerts import write_alerts
    from monitoring.drift import (
        DEFAULT_BINS,
        DriftThresholds,
        drift_alerts,
        drift_report,
        read_scores,
        write_drift_report,
    )
    from training.examples import ExampleSet

    with user_errors():
        thresholds = DriftThresholds.model_validate(_given(watch=watch, alert=alert))
        if (reference_scores is None) != (served_scores is None):
            raise ValueError("scores: give both --reference-scores and --served-scores, or neither")
        example_set = ExampleSet(examples)
        if not example_set.exists():
            raise FileNotFoundError(f"examples: no complete example set at {examples}")
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data-dir: {data_dir} is not a directory")
        report = drift_report(
            example_set,
            data_dir,
            reference_scores=read_scores(reference_scores, score_column)
            if reference_scores
            else None,
            current_scores=read_scores(served_scores, score_column) if served_scores else None,
            thresholds=thresholds,
            n_bins=bins or DEFAULT_BINS,
            progress=True,
        )
        out_dir = out or data_dir / "monitoring" / "drift"
        paths = write_drift_report(report, out_dir)
        raised = drift_alerts(report, min_severity=alert_on.value)
        alerts_path = alerts or out_dir / "alerts.jsonl"
        write_alerts(alerts_path, raised)

    table = Table(
        title=f"drift {report.reference_as_of:%Y-%m-%d} → {report.current_as_of:%Y-%m-%d} "
        f"({report.reference_customers:,} → {report.current_customers:,} customers)"
    )
    for column in ("feature", "PSI", "status"):
        table.add_column(column)
    top = [*([report.score] if report.score else []), *report.ranked()[:10]]
    for result in top:
        table.add_row(result.feature, f"{result.psi:.3f}", result.status)
    console.print(table)
    counts = report.counts()
    console.print(f"features: {counts['alert']} alert, {counts['watch']} watch, {counts['ok']} ok")
    console.print(f"report: {paths.json}  plot: {paths.png}")
    console.print(f"{len(raised)} alert(s) appended to {alerts_path}")


@monitor_app.command("behaviour")
def behaviour_command(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Data directory with the customer feature tables.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the scores Parquet, top-N JSON and plot "
            "(default: DATA_DIR/monitoring/behaviour)."
        ),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Customers listed in behaviour_top.json.")] = 20,
    seed: Annotated[int | None, typer.Option(help="Seed of the Isolation Forests [0].")] = None,
    trees: Annotated[int | None, typer.Option(min=10, help="Trees per forest [200].")] = None,
    watch_score: Annotated[
        float | None,
        typer.Option("--watch-score", min=0.0, max=1.0, help="Anomaly score watched [0.6]."),
    ] = None,
    alert_score: Annotated[
        float | None,
        typer.Option("--alert-score", min=0.0, max=1.0, help="Anomaly score alerted [0.7]."),
    ] = None,
    alerts: AlertsOption = None,
) -> None:
    """Anomaly score (0..1, higher = more unusual) of every customer's latest behaviour:
    behaviour_scores.parquet, behaviour_top.json, behaviour.png, and alerts as JSON lines."""
    from monitoring.alerts import write_alerts
    from monitoring.behaviour_anomaly import (
        AnomalyConfig,
        behaviour_alerts,
        latest_behaviour,
        score_behaviour,
        write_behaviour_report,
    )
    from persona.pseudonym import configured_pseudonymiser

    with user_errors():
        config = AnomalyConfig.model_validate(
            _given(n_estimators=trees, seed=seed, watch_score=watch_score, alert_score=alert_score)
        )
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data-dir: {data_dir} is not a directory")
        scores = score_behaviour(latest_behaviour(data_dir), config, progress=True)
        out_dir = out or data_dir / "monitoring" / "behaviour"
        paths = write_behaviour_report(scores, out_dir, top=top, config=config)
        raised = behaviour_alerts(
            scores, config, pseudonym=configured_pseudonymiser(data_dir), top=top
        )
        alerts_path = alerts or out_dir / "alerts.jsonl"
        write_alerts(alerts_path, raised)

    table = Table(title=f"most unusual behaviour, snapshot {scores.as_of:%Y-%m-%d}")
    for column in ("rank", "customer", "type", "score", "most unusual"):
        table.add_column(column)
    for row in scores.top(min(top, 10)):
        why = row["unusual"][0]  # type: ignore[index]
        table.add_row(
            str(row["rank"]),
            str(row["customer_id"]),
            str(row["customer_type"]),
            f"{row['anomaly_score']:.3f}",
            f"{why['feature']} {why['value']:g} (peer median {why['peer_median']:g})",
        )
    console.print(table)
    console.print(f"scores: {paths.scores}  top: {paths.top}  plot: {paths.png}")
    console.print(f"{len(raised)} alert(s) appended to {alerts_path}")


def _given(**options: object) -> dict[str, object]:
    """The options the user set; the rest keep the config model's defaults (one place each)."""
    return {name: value for name, value in options.items() if value is not None}
