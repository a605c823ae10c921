"""``persona dashboard``: one HTML page of KPIs, drift, anomalies, segments and experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persona.cli.errors import console, user_errors
from persona.cli.features import DataDirOption, settings_for


def dashboard_command(
    data_dir: DataDirOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="HTML file to write (default: <data-dir>/dashboard/index.html)."),
    ] = None,
    readout: Annotated[
        Path | None,
        typer.Option(help="Experiment readout.json (default: <data-dir>/monitoring/experiment/)."),
    ] = None,
    drift: Annotated[
        Path | None, typer.Option(help="drift.json (default: <data-dir>/monitoring/drift/).")
    ] = None,
    alerts: Annotated[
        list[Path] | None,
        typer.Option(
            help="Alert JSON-lines files (default: <data-dir>/monitoring/**/alerts*.jsonl)."
        ),
    ] = None,
) -> None:
    """Write the monitoring dashboard and say where it is."""
    from monitoring.dashboard.build import DashboardInputs, build_dashboard

    with user_errors():
        root = settings_for(data_dir).data_dir
        target = out or root / "dashboard" / "index.html"
        result = build_dashboard(
            DashboardInputs(root, readout=readout, drift=drift, alerts=tuple(alerts or ())), target
        )
    for panel, todo in result.missing.items():
        console.print(f"[yellow]{panel}[/yellow]: not available yet — {todo}")
    console.print(f"dashboard: {result.path} ({len(result.panels)} panels)")
