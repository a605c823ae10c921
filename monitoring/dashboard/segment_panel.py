"""The segment panel: the latest fitted segmentation's sizes, names, traits, products, stability."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from monitoring.dashboard.page import Panel, figure_html, table_html

PANEL_ID, TITLE = "panel-segments", "Customer segments"


def segment_panel(data_dir: Path) -> Panel:
    from segmentation.pipeline import load_run, version_folder

    try:
        summary, _, stability, profiles = load_run(version_folder(data_dir))
    except FileNotFoundError:
        return Panel(PANEL_ID, TITLE, "", missing="run `persona segment fit --data-dir DIR`")
    ordered = sorted(profiles, key=lambda p: -p.customers)
    figure = go.Figure(
        go.Bar(
            x=[p.customers for p in ordered][::-1],
            y=[p.name for p in ordered][::-1],
            orientation="h",
        )
    )
    figure.update_layout(xaxis_title="customers", height=140 + 26 * len(ordered))
    rows = [
        {
            "segment": p.segment_id,
            "name": p.name,
            "type": p.customer_type,
            "customers": p.customers,
            "share": p.share,
            "traits": ", ".join(t.label or t.feature for t in p.named_traits()[:3]),
            "top products held": ", ".join(s.product_id for s in p.top_products_held[:3]),
            "main app": max(p.app_mix, key=p.app_mix.__getitem__) if p.app_mix else "",
            "marketing consent": p.consent_marketing_share,
        }
        for p in ordered
    ]
    header = (
        f"<p>version {summary.version} · {summary.customers:,} customers · k = {summary.chosen_k} · "
        f"bootstrap ARI mean {stability.overall_mean:.3f} (min {stability.overall_min:.3f}, "
        f"{stability.bootstraps} refits)</p>"
    )
    return Panel(
        PANEL_ID,
        TITLE,
        header + figure_html(figure, f"{PANEL_ID}-sizes") + table_html(rows, list(rows[0])),
    )
