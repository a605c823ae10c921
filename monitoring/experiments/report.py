"""The readout people look at: ``readout.json``, ``lift.png`` (forest plot of relative lifts
with their intervals) and ``readout.html`` (self-contained: tables and the embedded plot)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from monitoring.experiments.readout import ExperimentReadout, Lift, SliceReadout


@dataclass(frozen=True)
class ReadoutPaths:
    json: Path
    html: Path
    png: Path


def write_readout(readout: ExperimentReadout, out_dir: Path) -> ReadoutPaths:
    """Write the JSON, the forest plot and the HTML page of ``readout`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReadoutPaths(out_dir / "readout.json", out_dir / "readout.html", out_dir / "lift.png")
    paths.json.write_text(json.dumps(readout.to_dict(), indent=2, allow_nan=False) + "\n")
    forest_plot(readout, paths.png)
    paths.html.write_text(readout_html(readout, paths.png.read_bytes()))
    return paths


def forest_plot(readout: ExperimentReadout, path: Path) -> None:
    """One panel per metric; one row per (slice, arm): relative lift (%) and its CI, the
    CUPED estimate where there is one. Slices with an SRM are drawn in red."""
    metrics = [m["name"] for m in readout.metrics] or [""]
    rows: list[tuple[SliceReadout, str]] = []
    for slice_ in readout.slices:
        arms = dict.fromkeys(lift.variant for m in slice_.metrics for lift in m.lifts)
        rows += [(slice_, arm) for arm in arms]
    figure = Figure(
        figsize=(4.2 * len(metrics), 1.6 + 0.28 * max(len(rows), 1)), layout="constrained"
    )
    axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        drawn = 0
        for y, (slice_, arm) in enumerate(rows):
            lift = next((x for x in _lifts(slice_, metric) if x.variant == arm), None)
            if lift is None:
                continue
            drawn += 1
            est = lift.primary
            ax.errorbar(
                100 * est.relative,
                y,
                xerr=[[100 * (est.relative - est.relative_ci_low)],
                      [100 * (est.relative_ci_high - est.relative)]],
                fmt="o", capsize=3, markersize=4,
                color="tab:red" if slice_.srm.mismatch else "tab:blue",
            )  # fmt: skip
        if not drawn:
            ax.text(0.5, 0.5, "no lift (see notes)", ha="center", transform=ax.transAxes)
        ax.axvline(0.0, color="grey", linewidth=0.8)
        adjusted = any(lift.cuped is not None for s in readout.slices for lift in _lifts(s, metric))
        ax.set_title(f"{metric}{' (CUPED)' if adjusted else ''}", fontsize=10)
        ax.set_xlabel(f"relative lift vs {readout.control} (%), {1 - readout.alpha:.0%} CI")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [f"{s.name}: {arm}" for s, arm in rows], fontsize=8)
    axes[0].invert_yaxis()
    figure.suptitle(f"Experiment {readout.experiment or readout.source}", fontsize=11)
    figure.savefig(path, dpi=110)


def _lifts(slice_: SliceReadout, metric: str) -> list[Lift]:
    for readout in slice_.metrics:
        if readout.metric == metric:
            return readout.lifts
    return []


def _pct(value: float) -> str:
    return f"{value:+.2%}" if value == value else "–"


def _num(value: float, digits: int = 5) -> str:
    return f"{value:.{digits}f}" if value == value else "–"


def _p(value: float) -> str:
    return "–" if value != value else (f"{value:.2e}" if value < 1e-4 else f"{value:.4f}")


def readout_html(readout: ExperimentReadout, png: bytes) -> str:
    """A self-contained HTML page: summary, one section per slice (SRM, rates, lifts)."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Experiment readout: {esc(readout.experiment or readout.source)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        ".bad{color:#b00;font-weight:bold}.good{color:#070}</style></head><body>",
        f"<h1>Experiment readout: {esc(readout.experiment or '(table)')}</h1>",
        f"<p>Source: <code>{esc(readout.source)}</code>; unit: <code>{esc(readout.unit)}</code>;"
        f" control: <b>{esc(readout.control)}</b>; intervals {1 - readout.alpha:.0%}, two-sided;"
        f" SRM threshold p &lt; {readout.srm_alpha}.</p>",
    ]
    if any(readout.window.values()):
        parts.append(
            f"<p>Window: {esc(readout.window.get('start') or 'the first event')} to "
            f"{esc(readout.window.get('end') or 'the last event')}</p>"
        )
    metric_rows = "".join(
        f"<tr><td>{esc(m['name'])}</td><td>{esc(m['label'])}</td>"
        f"<td>{esc(', '.join(m['covariates']) or '–')}</td></tr>"
        for m in readout.metrics
    )
    parts.append(
        "<h2>Metrics</h2><table><tr><th>metric</th><th>definition (sums over an arm's units)</th>"
        f"<th>CUPED covariates</th></tr>{metric_rows}</table>"
    )
    if readout.notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in readout.notes) + "</ul>")
    image = base64.b64encode(png).decode("ascii")
    parts.append(
        f"<h2>Lifts</h2><img alt='forest plot of lifts' src='data:image/png;base64,{image}'>"
    )
    for slice_ in readout.slices:
        parts.append(_slice_html(slice_))
    parts.append("</body></html>")
    return "\n".join(parts)


def _slice_html(slice_: SliceReadout) -> str:
    esc = html.escape
    srm = slice_.srm
    verdict = (
        f"<span class='bad'>sample-ratio mismatch</span> (p = {_p(srm.p_value)})"
        if srm.mismatch
        else f"<span class='good'>no sample-ratio mismatch</span> (p = {_p(srm.p_value)})"
    )
    split_rows = "".join(
        f"<tr><td>{esc(v)}</td><td>{srm.observed.get(v, 0):,}</td>"
        f"<td>{srm.observed.get(v, 0) / max(sum(srm.observed.values()), 1):.2%}</td>"
        f"<td>{share:.2%}</td></tr>"
        for v, share in srm.expected_share.items()
    )
    parts = [
        f"<h2>{esc(slice_.name)}</h2><p>{verdict}, χ² = {srm.chi2:.2f}</p>",
        "<table><tr><th>variant</th><th>units</th><th>share</th><th>expected</th></tr>"
        f"{split_rows}</table>",
    ]
    for metric in slice_.metrics:
        rate_rows = "".join(
            f"<tr><td>{esc(r.variant)}</td><td>{r.units:,}</td><td>{r.numerator:,.0f}</td>"
            f"<td>{r.denominator:,.0f}</td><td>{_num(r.rate)}</td>"
            f"<td>[{_num(r.ci_low)}, {_num(r.ci_high)}]</td>"
            f"<td>{_num(r.adjusted_rate) if r.adjusted_rate is not None else '–'}</td></tr>"
            for r in metric.variants
        )
        lift_rows = "".join(_lift_row(lift) for lift in metric.lifts)
        notes = "".join(f"<li>{esc(n)}</li>" for n in metric.notes)
        parts.append(
            f"<h3>{esc(metric.metric)} ({esc(metric.label)})</h3>"
            "<table><tr><th>variant</th><th>units</th><th>numerator</th><th>denominator</th>"
            f"<th>rate</th><th>CI</th><th>CUPED rate</th></tr>{rate_rows}</table>"
            "<table><tr><th>variant vs control</th><th>absolute lift</th><th>CI</th>"
            "<th>relative lift</th><th>CI</th><th>p-value</th><th>CUPED relative lift</th>"
            f"<th>CI</th><th>p-value</th><th>variance removed</th></tr>{lift_rows}</table>"
            + (f"<ul>{notes}</ul>" if notes else "")
        )
    return "\n".join(parts)


def _lift_row(lift: Lift) -> str:
    raw, cuped = lift.raw, lift.cuped
    cells = [
        f"{html.escape(lift.variant)} vs {html.escape(lift.control)}",
        _num(raw.absolute),
        f"[{_num(raw.absolute_ci_low)}, {_num(raw.absolute_ci_high)}]",
        _pct(raw.relative),
        f"[{_pct(raw.relative_ci_low)}, {_pct(raw.relative_ci_high)}]",
        _p(raw.p_value),
    ]
    if cuped is None:
        cells += ["–"] * 4
    else:
        reduction = lift.variance_reduction
        cells += [
            _pct(cuped.relative),
            f"[{_pct(cuped.relative_ci_low)}, {_pct(cuped.relative_ci_high)}]",
            _p(cuped.p_value),
            f"{reduction:.1%}" if reduction is not None else "–",
        ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
