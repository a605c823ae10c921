"""The ``persona`` command: one CLI, a sub-command group per part of the platform."""

from __future__ import annotations

import typer

from persona.cli.anomaly import anomaly_app
from persona.cli.dashboard import dashboard_command
from persona.cli.data import data_app
from persona.cli.demo import demo_command
from persona.cli.experiment import experiment_app
from persona.cli.features import features_app
from persona.cli.monitor import monitor_app
from persona.cli.ope import ope_app
from persona.cli.segment import segment_app
from persona.cli.serving import serve_app
from persona.cli.simulate import simulate_app
from persona.cli.training import evaluate_command, examples_app, train_command

app = typer.Typer(
    name="persona",
    help="Persona: personalization and ranking for a multi-app retail bank.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data", help="Simulate, load and validate canonical bank data.")
app.add_typer(features_app, name="features", help="Build, apply and materialise Feast features.")
app.add_typer(examples_app, name="examples", help="Build labelled example sets for training.")
app.command("train", help="Train, evaluate and register a ranker from a run config.")(train_command)
app.command("evaluate", help="Evaluate a trained run beside its baselines.")(evaluate_command)
app.add_typer(
    experiment_app, name="experiment", help="Analyse experiments: lifts, intervals, SRM, CUPED."
)
app.add_typer(
    monitor_app, name="monitor", help="Feature and score drift (PSI); behaviour anomalies."
)
app.add_typer(
    anomaly_app, name="anomaly", help="KPI anomaly detection; the injected-incident scenario."
)
app.add_typer(ope_app, name="ope", help="Off-policy evaluation: IPS, SNIPS, DR with intervals.")
app.add_typer(segment_app, name="segment", help="Fit, report and publish customer segments.")
app.add_typer(
    simulate_app, name="simulate", help="Simulated customers using the live platform (A/B)."
)
app.add_typer(serve_app, name="serve", help="Serve recommendations over HTTP (Ray Serve).")
app.command("dashboard", help="Write the monitoring dashboard (HTML).")(dashboard_command)
app.command("demo", help="Run the main job end to end on a small simulated bank.")(demo_command)


def main() -> None:
    app()
