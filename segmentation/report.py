"""What people look at: the k curve (PNG), segment traits and sizes (PNG), one HTML page."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from matplotlib.figure import Figure

from segmentation.features import FEATURE_NAMES
from segmentation.profile import SegmentProfile
from segmentation.selection import Selection
from segmentation.stability import StabilityReport

SELECTION_PNG: Final = "selection.png"
SEGMENTS_PNG: Final = "segments.png"
REPORT_HTML: Final = "report.html"
Z_LIMIT: Final = 2.0


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    selection_png: Path
    segments_png: Path


def plot_selection(selection: Selection, path: Path) -> Path:
    """Silhouette, mean bootstrap ARI and BIC against k, one panel per customer type."""
    curves = {t: s for t, s in selection.per_type.items() if s.curve}
    fig = Figure(figsize=(6.0 * max(1, len(curves)), 4.0), layout="constrained")
    axes = fig.subplots(1, max(1, len(curves)), squeeze=False)[0]
    for ax, (customer_type, chosen) in zip(axes, curves.items(), strict=False):
        ks = [p.k for p in chosen.curve]
        ax.plot(ks, [p.silhouette for p in chosen.curve], "o-", label="silhouette")
        ax.plot(ks, [p.ari_mean for p in chosen.curve], "s-", label="bootstrap ARI (mean)")
        ax.axhline(selection.params.min_ari, color="grey", ls=":", lw=1, label="ARI bar")
        ax.axvline(
            chosen.chosen_k, color="black", ls="--", lw=1, label=f"chosen k={chosen.chosen_k}"
        )
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("k (segments)")
        ax.set_title(f"{customer_type} ({chosen.customers:,} customers)")
        bic = ax.twinx()
        bic.plot(ks, [p.bic for p in chosen.curve], "^:", color="tab:red", label="GMM BIC")
        bic.set_ylabel("BIC (lower is better)", color="tab:red")
        lines = ax.get_legend_handles_labels()
        more = bic.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower left")
    if not curves:
        axes[0].text(0.5, 0.5, "every customer type is one segment", ha="center")
        axes[0].set_axis_off()
    fig.savefig(path, dpi=110)
    return path


def plot_segments(profiles: list[SegmentProfile], path: Path) -> Path:
    """Heatmap of trait z-units (segments × features) beside segment sizes."""
    z = np.array([[{t.feature: t.z for t in p.traits}[f] for f in FEATURE_NAMES] for p in profiles])
    fig = Figure(figsize=(14.0, 1.2 + 0.45 * len(profiles)), layout="constrained")
    heat, sizes = fig.subplots(1, 2, width_ratios=[5, 1], sharey=True)
    # Colours saturate at ±2 z so one extreme trait does not wash out the others.
    image = heat.imshow(z, cmap="RdBu_r", vmin=-Z_LIMIT, vmax=Z_LIMIT, aspect="auto")
    heat.set_xticks(range(len(FEATURE_NAMES)), FEATURE_NAMES, rotation=60, ha="right", fontsize=8)
    heat.set_yticks(
        range(len(profiles)), [f"{p.segment_id}: {p.name}" for p in profiles], fontsize=8
    )
    heat.set_title(
        f"traits: segment mean vs its customer type, z-units (colour clipped at ±{Z_LIMIT:g})"
    )
    fig.colorbar(image, ax=heat, shrink=0.8)
    sizes.barh(range(len(profiles)), [p.customers for p in profiles], color="tab:blue")
    sizes.set_title("customers")
    fig.savefig(path, dpi=110)
    return path


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    folder: Path,
    version: str,
    selection: Selection,
    stability: StabilityReport,
    profiles: list[SegmentProfile],
) -> ReportPaths:
    """Write ``selection.png``, ``segments.png`` and ``report.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    selection_png = plot_selection(selection, folder / SELECTION_PNG)
    segments_png = plot_segments(profiles, folder / SEGMENTS_PNG)
    esc = html.escape
    segment_rows = [
        [
            esc(p.segment_id),
            esc(p.name),
            f"{p.customers:,}",
            f"{p.share:.1%}",
            ", ".join(f"{esc(t.feature)} {t.z:+.2f}" for t in p.named_traits()[:4]) or "–",
            ", ".join(f"{esc(x.product_id)} {x.share:.0%}" for x in p.top_products_held[:3]),
            ", ".join(f"{esc(x.product_id)} {x.share:.0%}" for x in p.top_products_engaged[:3])
            or "–",
            ", ".join(f"{esc(a)} {s:.0%}" for a, s in p.app_mix.items() if s >= 0.05),
            f"{p.consent_marketing_share:.0%}",
        ]
        for p in profiles
    ]
    selection_rows = [
        [
            esc(t),
            f"{s.customers:,}",
            str(s.chosen_k),
            str(s.silhouette_best_k or "–"),
            str(s.bic_best_k or "–"),
            esc(s.reason),
        ]
        for t, s in selection.per_type.items()
    ]
    stability_rows = [
        [esc(t), str(s.k), f"{s.ari_mean:.3f}", f"{s.ari_min:.3f}"]
        for t, s in stability.per_type.items()
    ]
    stability_rows.append(
        [
            "all customers",
            str(sum(s.chosen_k for s in selection.per_type.values())),
            f"{stability.overall_mean:.3f}",
            f"{stability.overall_min:.3f}",
        ]
    )
    verdict = "stable" if stability.stable else "NOT stable"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Segmentation {esc(version)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;
font-size:13px;text-align:left}}th{{background:#f3f3f3}}</style></head><body>
<h1>Segmentation {esc(version)}</h1>
<p>{esc(selection.method)}.</p>
<h2>Segments</h2>
{_table(["id", "name", "customers", "share", "traits (z)", "top held", "top engaged (90 d)", "apps", "marketing consent"], segment_rows)}
<img src="{SEGMENTS_PNG}" alt="segment traits" style="max-width:100%">
<h2>How many segments</h2>
{_table(["customer type", "customers", "chosen k", "best silhouette k", "best BIC k", "why"], selection_rows)}
<img src="{SELECTION_PNG}" alt="k selection curves" style="max-width:100%">
<h2>Stability: {verdict}</h2>
<p>{stability.bootstraps} bootstrap refits per type; adjusted Rand index against the published
assignment; the bar is a mean of {stability.min_ari} for every type with more than one segment.</p>
{_table(["customer type", "k", "mean ARI", "min ARI"], stability_rows)}
</body></html>
"""
    report = folder / REPORT_HTML
    report.write_text(page)
    return ReportPaths(html=report, selection_png=selection_png, segments_png=segments_png)
