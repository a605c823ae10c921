"""The experiment readout panel: per-variant rates, lifts with 95% intervals, SRM, per app."""

from __future__ import annotations

from html import escape
from typing import Any

import plotly.graph_objects as go

from monitoring.dashboard.page import Panel, figure_html, table_html

PANEL_ID = "panel-experiment"
TITLE = "Experiment readout"


def experiment_panel(readout: dict[str, Any] | None) -> Panel:
    """From ``readout.json`` (:func:`monitoring.experiments.readout.experiment_readout`)."""
    if readout is None:
        return Panel(PANEL_ID, TITLE, "", missing="run `persona experiment analyze --data-dir DIR`")
    overall = readout["overall"]
    srm = overall["srm"]
    rows, lifts = [], []
    for metric in overall["metrics"]:
        for v in metric["variants"]:
            rows.append(
                {
                    "metric": metric["label"],
                    "variant": v["variant"],
                    "units": v["units"],
                    "rate": v["rate"],
                    "95% CI": f"{v['ci_low']:.4g} – {v['ci_high']:.4g}",
                }
            )
        for lift in metric["lifts"]:
            raw = lift["raw"]
            lifts.append((f"{metric['label']}: {lift['variant']} vs {lift['control']}", raw))
    figure = go.Figure(
        go.Scatter(
            x=[100 * raw["relative"] for _, raw in lifts],
            y=[name for name, _ in lifts],
            mode="markers",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [100 * (raw["relative_ci_high"] - raw["relative"]) for _, raw in lifts],
                "arrayminus": [
                    100 * (raw["relative"] - raw["relative_ci_low"]) for _, raw in lifts
                ],
            },
        )
    )
    figure.add_vline(x=0, line_dash="dash", line_color="grey")
    figure.update_layout(xaxis_title="relative lift, % (95% CI)", height=120 + 40 * len(lifts))
    by_app = [
        {
            "app": s["value"],
            "metric": m["label"],
            "variant": lift["variant"],
            "lift %": 100 * lift["raw"]["relative"],
            "p": lift["raw"]["p_value"],
            "SRM p": s["srm"]["p_value"],
        }
        for s in readout.get("by_app", [])
        for m in s["metrics"]
        for lift in m["lifts"]
    ]
    verdict = "sample-ratio mismatch!" if srm["mismatch"] else "no sample-ratio mismatch"
    body = (
        f"<p>experiment <b>{escape(str(readout.get('experiment') or 'table'))}</b>, "
        f"unit {escape(str(readout['unit']))}, control {escape(str(readout['control']))} · "
        f"SRM χ² p = {srm['p_value']:.3g} ({verdict})</p>"
        + figure_html(figure, f"{PANEL_ID}-lifts")
        + table_html(rows, ["metric", "variant", "units", "rate", "95% CI"])
        + ("<h3>by app</h3>" + table_html(by_app, list(by_app[0])) if by_app else "")
    )
    return Panel(PANEL_ID, TITLE, body)
