"""Panels of the monitors: feature/score drift (PSI) and the alerts of every detector."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from monitoring.alerts import Alert
from monitoring.dashboard.page import Panel, figure_html, table_html

DRIFT_ID, DRIFT_TITLE = "panel-drift", "Feature and score drift (PSI)"
ALERTS_ID, ALERTS_TITLE = "panel-anomalies", "Anomalies and alerts"


def drift_panel(report: dict[str, Any] | None, top: int = 20) -> Panel:
    """From ``drift.json`` (:func:`monitoring.drift.write_drift_report`)."""
    if report is None:
        return Panel(
            DRIFT_ID,
            DRIFT_TITLE,
            "",
            missing="run `persona monitor drift --examples DIR --data-dir DIR`",
        )
    features = sorted(report["features"], key=lambda f: -f["psi"])
    shown = features[:top][::-1]
    colours = {"ok": "#4c956c", "watch": "#f4a259", "alert": "#bc4b51"}
    figure = go.Figure(
        go.Bar(
            x=[f["psi"] for f in shown],
            y=[f["feature"] for f in shown],
            orientation="h",
            marker_color=[colours.get(f["status"], "#888") for f in shown],
        )
    )
    thresholds = report["thresholds"]
    for name in ("watch", "alert"):
        figure.add_vline(x=thresholds[name], line_dash="dash", annotation_text=name)
    figure.update_layout(xaxis_title="PSI", height=140 + 22 * len(shown))
    counts = {s: sum(f["status"] == s for f in features) for s in ("ok", "watch", "alert")}
    score = report.get("score")
    summary = (
        f"<p>training snapshot {report['reference_as_of']} vs live {report['current_as_of']} · "
        f"{len(features)} features: {counts['alert']} alert, {counts['watch']} watch, {counts['ok']} ok"
        + (f" · score PSI {score['psi']:.3f} ({score['status']})" if score else "")
        + "</p>"
    )
    return Panel(DRIFT_ID, DRIFT_TITLE, summary + figure_html(figure, f"{DRIFT_ID}-bars"))


def alerts_panel(alerts: list[Alert] | None, latest: int = 25) -> Panel:
    """Every alert on a timeline (one row per subject), and the latest ones as a table."""
    if alerts is None:
        return Panel(
            ALERTS_ID,
            ALERTS_TITLE,
            "",
            missing="run `persona anomaly detect` / `persona monitor drift` / `persona monitor behaviour` with --alerts",
        )
    if not alerts:
        return Panel(
            ALERTS_ID,
            ALERTS_TITLE,
            "<p>no alerts: every monitored KPI within its expected range</p>",
        )
    figure = go.Figure()
    for severity, colour in (("watch", "#f4a259"), ("alert", "#bc4b51")):
        chosen = [a for a in alerts if a.severity == severity]
        if chosen:
            figure.add_trace(
                go.Scatter(
                    x=[a.window_start for a in chosen],
                    y=[
                        f"{a.kind} · {a.subject}" + (f" · {a.app}" if a.app else "") for a in chosen
                    ],
                    mode="markers",
                    name=severity,
                    marker={"color": colour, "size": 9},
                    text=[
                        f"observed {a.observed:.4g}, expected {a.expected:.4g}, score {a.score:.3g}"
                        for a in chosen
                    ],
                )
            )
    figure.update_layout(height=200 + 18 * len({(a.kind, a.subject, a.app) for a in alerts}))
    rows = [
        {
            "start": a.window_start.strftime("%Y-%m-%d %H:%M"),
            "kind": a.kind,
            "subject": a.subject,
            "app": a.app,
            "segment": a.segment,
            "observed": a.observed,
            "expected": a.expected,
            "severity": a.severity,
        }
        for a in sorted(alerts, key=lambda a: a.window_start, reverse=True)[:latest]
    ]
    return Panel(
        ALERTS_ID,
        ALERTS_TITLE,
        figure_html(figure, f"{ALERTS_ID}-timeline") + table_html(rows, list(rows[0])),
    )
