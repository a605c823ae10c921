"""Panels of KPIs over time: CTR and volume by app, segment, variant and model."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from monitoring.dashboard.kpis import by_dimension
from monitoring.dashboard.page import Panel, figure_html

#: A day's CTR is drawn only when it rests on at least this many impressions.
MIN_IMPRESSIONS_FOR_CTR = 20
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
_TITLES = {
    "app": "KPIs by app",
    "segment": "KPIs by segment",
    "variant": "KPIs by experiment variant",
    "model_version": "KPIs by model version",
}


def kpi_panel(kpis: pd.DataFrame, dimension: str) -> Panel:
    """Daily CTR (top) and impressions (bottom), one line per value of ``dimension``."""
    panel_id = f"panel-kpi-{dimension.replace('_', '-')}"
    served = (
        kpis if dimension not in ("variant", "model_version") else kpis[kpis[dimension] != "none"]
    )
    if served.empty:
        return Panel(
            panel_id,
            _TITLES[dimension],
            "",
            missing="no served traffic with a variant yet: run `persona serve` (or the demo) and send events",
        )
    frame = by_dimension(served, dimension)
    days = pd.date_range(frame["day"].min(), frame["day"].max(), freq="D")
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=("CTR", "impressions"))
    for i, (value, rows) in enumerate(frame.groupby(dimension, sort=True)):
        # Every day on the axis: days without traffic break the line instead of bridging it.
        daily = rows.set_index(pd.to_datetime(rows["day"])).reindex(days)
        ctr = daily["ctr"].where(daily["impressions"] >= MIN_IMPRESSIONS_FOR_CTR)
        colour = PALETTE[i % len(PALETTE)]
        common = {
            "name": str(value),
            "legendgroup": str(value),
            "mode": "lines",
            "line": {"color": colour},
        }
        figure.add_trace(go.Scatter(x=days, y=ctr, **common), row=1, col=1)
        figure.add_trace(
            go.Scatter(x=days, y=daily["impressions"], showlegend=False, **common), row=2, col=1
        )
    figure.update_layout(height=520)
    return Panel(panel_id, _TITLES[dimension], figure_html(figure, f"{panel_id}-figure"))
