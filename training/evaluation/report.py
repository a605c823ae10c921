"""Write evaluation results as a report folder: ``metrics.json``, ``report.md`` and PNG plots.

The Markdown report is what a reader compares models with, so it puts every model × protocol
on one table next to published reference numbers, adds per-app / per-segment tables where there
is more than one group value, and, given ``baseline_name``, each model's relative lift over that
baseline under the same protocol and split. Plots use matplotlib's object API on the Agg canvas
(no pyplot global state, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel

from training.evaluation.evaluate import EvaluationResult
from training.evaluation.metrics import CalibrationResult, metric_names

#: The published/reference rows: row label -> metric name (as in ``metric_names``) -> value.
Reference = dict[str, dict[str, float]]


@dataclass(frozen=True)
class ReportPaths:
    out_dir: Path
    metrics_json: Path
    report_md: Path
    metrics_plot: Path
    groups_plot: Path | None
    reliability_plot: Path | None

    def files(self) -> list[Path]:
        """Every file written."""
        paths = [self.metrics_json, self.report_md, self.metrics_plot]
        return paths + [p for p in (self.groups_plot, self.reliability_plot) if p is not None]


class Lift(BaseModel):
    """``model`` vs ``baseline`` under the same protocol and split: ``value / baseline - 1``."""

    model: str
    baseline: str
    protocol: str
    split: str
    lift: dict[str, float | None]


class ReportDocument(BaseModel):
    """The content of ``metrics.json``."""

    title: str
    k: int
    results: list[EvaluationResult]
    reference: Reference | None = None
    baseline_name: str | None = None
    lifts: list[Lift] = []


def load_results(path: Path) -> list[EvaluationResult]:
    """Read the results back from a report's ``metrics.json``."""
    return ReportDocument.model_validate_json(Path(path).read_text()).results


def _label(result: EvaluationResult) -> str:
    return f"{result.model} · {result.protocol}"


def _check(results: Sequence[EvaluationResult]) -> int:
    if not results:
        raise ValueError("results: nothing to report")
    ks = {r.k for r in results}
    if len(ks) > 1:
        raise ValueError(f"results: all results must share one k, got {sorted(ks)}")
    seen: set[tuple[str, str, str]] = set()
    for r in results:
        key = (r.model, r.protocol, r.split)
        if key in seen:
            raise ValueError(f"results: {key} appears twice")
        seen.add(key)
    return ks.pop()


def compute_lifts(results: Sequence[EvaluationResult], baseline_name: str) -> list[Lift]:
    """Relative lift of every other model over ``baseline_name``, per protocol and split."""
    baselines = {(r.protocol, r.split): r for r in results if r.model == baseline_name}
    if not baselines:
        models = sorted({r.model for r in results})
        raise ValueError(f"baseline_name: {baseline_name!r} is not among the models {models}")
    lifts = []
    for r in results:
        base = baselines.get((r.protocol, r.split))
        if base is None or r.model == baseline_name:
            continue
        lift: dict[str, float | None] = {}
        for name, value in r.metrics.items():
            ref = base.metrics.get(name)
            lift[name] = None if value is None or not ref else value / ref - 1.0
        lifts.append(
            Lift(
                model=r.model, baseline=baseline_name, protocol=r.protocol, split=r.split, lift=lift
            )
        )
    return lifts


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.1%}" if percent else f"{value:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _multi_valued_groups(results: Sequence[EvaluationResult]) -> dict[str, list[str]]:
    """Group column -> its sorted values, for columns with more than one value in any result."""
    values: dict[str, set[str]] = {}
    for r in results:
        for column, groups in r.groups.items():
            values.setdefault(column, set()).update(groups)
    return {c: sorted(v) for c, v in values.items() if len(v) > 1}


def render_markdown(document: ReportDocument) -> str:
    """The report as Markdown (see the module docstring)."""
    ndcg, hr, mrr, auc = metric_names(document.k)
    names = (ndcg, hr, mrr, auc)
    lines = [f"# {document.title}", ""]
    header = ["Model", "Protocol", "Split", ndcg.upper(), hr.upper(), "MRR", "AUC", "n"]
    rows = [
        [r.model, r.protocol, r.split, *(_fmt(r.metrics.get(m)) for m in names), str(r.n_examples)]
        for r in document.results
    ]
    for label, published in (document.reference or {}).items():
        lowered = {key.lower(): v for key, v in published.items()}
        rows.append(
            [label, "published/reference", "—", *(_fmt(lowered.get(m)) for m in names), "—"]
        )
    lines += ["## Ranking", "", *_table(header, rows), ""]
    skipped = [r for r in document.results if r.n_skipped]
    if skipped:
        notes = ", ".join(f"{_label(r)}: {r.n_skipped}" for r in skipped)
        lines += [f"Rows skipped (no target or nothing to rank against): {notes}.", ""]

    if document.lifts:
        lift_header = ["Model", "Protocol", "Split", *(f"Δ {m.upper()}" for m in names)]
        lift_rows = [
            [x.model, x.protocol, x.split, *(_fmt(x.lift.get(m), percent=True) for m in names)]
            for x in document.lifts
        ]
        lines += [f"## Lift vs {document.baseline_name}", "", *_table(lift_header, lift_rows), ""]

    for column, group_values in _multi_valued_groups(document.results).items():
        group_rows = []
        for value in group_values:
            for r in document.results:
                group = r.groups.get(column, {}).get(value)
                if group is not None:
                    metrics = [_fmt(group.metrics.get(m)) for m in (ndcg, hr, mrr)]
                    group_rows.append([value, r.model, r.protocol, *metrics, str(group.n)])
        group_header = [column, "Model", "Protocol", ndcg.upper(), hr.upper(), "MRR", "n"]
        lines += [f"## By {column}", "", *_table(group_header, group_rows), ""]

    calibrated = _calibrations(document.results)
    if calibrated:
        cal_header = ["Model", "n", "ECE", "Brier", "Log loss", "AUC", "Mean p", "Click rate"]
        cal_rows = []
        for name, c in calibrated.items():
            numbers = (c.ece, c.brier, c.log_loss, c.auc, c.mean_predicted, c.observed_rate)
            cal_rows.append([name, str(c.n), *(_fmt(v) for v in numbers)])
        strategies = sorted({c.strategy for c in calibrated.values()})
        lines += [
            f"## Calibration ({', '.join(strategies)} bins, pointwise on logged impressions)",
            "",
            *_table(cal_header, cal_rows),
            "",
        ]
    return "\n".join(lines)


def _calibrations(results: Sequence[EvaluationResult]) -> dict[str, CalibrationResult]:
    """ "model (split)" -> calibration, once per model and split (it does not vary by protocol)."""
    out: dict[str, CalibrationResult] = {}
    for r in results:
        if r.calibration is not None:
            out.setdefault(f"{r.model} ({r.split})", r.calibration)
    return out


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _bars(axes: Axes, labels: list[str], series: dict[str, list[float]]) -> None:
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        axes.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    axes.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    axes.legend(fontsize=8)


def plot_metrics(document: ReportDocument, path: Path) -> Path:
    """Grouped bars of NDCG@k and HR@k per model × protocol (and reference rows)."""
    ndcg, hr = metric_names(document.k)[:2]
    labels = [_label(r) for r in document.results]
    series = {m.upper(): [r.metrics.get(m) or 0.0 for r in document.results] for m in (ndcg, hr)}
    for name, values in (document.reference or {}).items():
        labels.append(f"{name} (ref)")
        lowered = {key.lower(): v for key, v in values.items()}
        for m in (ndcg, hr):
            series[m.upper()].append(lowered.get(m, 0.0))
    figure = Figure(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.5))
    axes = figure.add_subplot()
    _bars(axes, labels, series)
    axes.set_ylabel("score")
    axes.set_title(document.title)
    return _save(figure, path)


def plot_groups(document: ReportDocument, path: Path) -> Path | None:
    """NDCG@k per group value, one panel per group column with several values."""
    ndcg = metric_names(document.k)[0]
    columns = _multi_valued_groups(document.results)
    if not columns:
        return None
    figure = Figure(figsize=(7.0, 3.5 * len(columns)))
    for i, (column, values) in enumerate(columns.items()):
        axes = figure.add_subplot(len(columns), 1, i + 1)
        series = {}
        for r in document.results:
            groups = r.groups.get(column, {})
            series[_label(r)] = [
                (groups[v].metrics.get(ndcg) or 0.0) if v in groups else 0.0 for v in values
            ]
        _bars(axes, values, series)
        axes.set_ylabel(ndcg.upper())
        axes.set_title(f"{ndcg.upper()} by {column}")
    return _save(figure, path)


def plot_reliability(document: ReportDocument, path: Path) -> Path | None:
    """Reliability diagram (mean predicted vs observed click rate) per calibrated model."""
    curves = _calibrations(document.results)
    if not curves:
        return None
    figure = Figure(figsize=(5.0, 5.0))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    for name, result in curves.items():
        xs = [p.mean_predicted for p in result.curve]
        ys = [p.observed_rate for p in result.curve]
        axes.plot(xs, ys, marker="o", label=f"{name}, ECE {result.ece:.3f}")
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed click rate")
    axes.legend(fontsize=8)
    return _save(figure, path)


def write_report(
    results: list[EvaluationResult],
    out_dir: Path,
    title: str,
    reference: Reference | None = None,
    baseline_name: str | None = None,
) -> ReportPaths:
    """Write ``metrics.json``, ``report.md`` and the plots into ``out_dir`` (created).

    ``reference`` adds published rows, e.g. ``{"SASRec (paper)": {"ndcg@10": 0.536,
    "hr@10": 0.741}}``; ``baseline_name`` names the model (e.g. the best baseline) whose
    metrics every other model's are divided by, per protocol and split.
    """
    k = _check(results)
    lifts = compute_lifts(results, baseline_name) if baseline_name is not None else []
    document = ReportDocument(
        title=title,
        k=k,
        results=results,
        reference=reference,
        baseline_name=baseline_name,
        lifts=lifts,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_json = out_dir / "metrics.json"
    metrics_json.write_text(document.model_dump_json(indent=2))
    report_md = out_dir / "report.md"
    report_md.write_text(render_markdown(document))
    return ReportPaths(
        out_dir=out_dir,
        metrics_json=metrics_json,
        report_md=report_md,
        metrics_plot=plot_metrics(document, out_dir / "metrics.png"),
        groups_plot=plot_groups(document, out_dir / "groups.png"),
        reliability_plot=plot_reliability(document, out_dir / "reliability.png"),
    )
