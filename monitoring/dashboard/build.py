"""Assemble the dashboard from what the platform has produced under a data dir."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from monitoring.alerts import Alert, read_alerts
from monitoring.dashboard.experiment_panel import experiment_panel
from monitoring.dashboard.kpi_panels import kpi_panel
from monitoring.dashboard.kpis import daily_kpis
from monitoring.dashboard.monitoring_panels import alerts_panel, drift_panel
from monitoring.dashboard.page import Panel, render_page
from monitoring.dashboard.segment_panel import segment_panel


@dataclass(frozen=True)
class DashboardInputs:
    """Where each panel's input lives; defaults follow the CLI commands' default outputs."""

    data_dir: Path
    readout: Path | None = None
    drift: Path | None = None
    alerts: tuple[Path, ...] = ()

    def readout_path(self) -> Path:
        return self.readout or self.data_dir / "monitoring" / "experiment" / "readout.json"

    def drift_path(self) -> Path:
        return self.drift or self.data_dir / "monitoring" / "drift" / "drift.json"

    def alert_paths(self) -> list[Path]:
        if self.alerts:
            return list(self.alerts)
        return sorted((self.data_dir / "monitoring").glob("**/alerts*.jsonl"))


@dataclass(frozen=True)
class Dashboard:
    path: Path
    panels: list[str]
    missing: dict[str, str]  # panel id -> what to run


def _json(path: Path) -> dict[str, object] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _alerts(paths: list[Path]) -> list[Alert] | None:
    if not paths:
        return None
    return [alert for path in paths if path.exists() for alert in read_alerts(path)]


def build_dashboard(inputs: DashboardInputs, out: Path) -> Dashboard:
    """Write the page to ``out``; panels whose input is missing say what to run."""
    kpis = daily_kpis(inputs.data_dir)
    panels: list[Panel] = [
        kpi_panel(kpis, d) for d in ("app", "segment", "variant", "model_version")
    ]
    panels += [
        drift_panel(_json(inputs.drift_path())),  # type: ignore[arg-type]
        alerts_panel(_alerts(inputs.alert_paths())),
        segment_panel(inputs.data_dir),
        experiment_panel(_json(inputs.readout_path())),  # type: ignore[arg-type]
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(panels, "Persona — monitoring", str(inputs.data_dir)))
    return Dashboard(
        path=out,
        panels=[p.panel_id for p in panels],
        missing={p.panel_id: p.missing for p in panels if p.missing},
    )
