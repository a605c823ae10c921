"""Off-policy evaluation results as files people look at: a JSON document and a PNG plot.

Plots use matplotlib's object API on the Agg canvas (no pyplot global state, no display).
Rates are plotted in percent; the JSON keeps them as fractions (0.0042 = 0.42%).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel

from monitoring.ope.estimators import ESTIMATORS, Estimate
from monitoring.ope.open_bandit import HEADLINE_ESTIMATOR, CampaignValidation

#: One colour per estimator, the same in every plot.
ESTIMATOR_COLOURS: dict[str, str] = {"ips": "#9e9e9e", "snips": "#1f77b4", "dr": "#ff7f0e"}


@dataclass(frozen=True)
class ReportPaths:
    """The files a report wrote."""

    json: Path
    png: Path


class OpenBanditReport(BaseModel):
    """The content of the Open Bandit validation JSON."""

    title: str
    created_at: str
    source: str
    evaluation_policy: str
    headline_estimator: str
    n_bootstrap: int
    seed: int
    confidence_level: float
    #: Per estimator: did the interval hold BTS's observed click rate in every campaign?
    covered_in_every_campaign: dict[str, bool]
    #: Per estimator: mean over campaigns of |estimate / observed - 1|.
    mean_absolute_relative_error: dict[str, float]
    campaigns: list[CampaignValidation]


class EstimatesReport(BaseModel):
    """The content of a generic log's OPE JSON (``persona ope log``)."""

    title: str
    created_at: str
    logged: str
    target: str
    n_rounds: int
    seed: int
    #: Mean reward per round the logging policy actually earned (the policy in production).
    logging_mean_reward: float
    estimates: list[Estimate]


def open_bandit_report(
    validations: Sequence[CampaignValidation], *, source: Path, seed: int
) -> OpenBanditReport:
    """Summarise per-campaign validations: coverage and relative error per estimator."""
    if not validations:
        raise ValueError("validations: nothing to report")
    names = [e.name for e in validations[0].estimates]
    first = validations[0].estimates[0]
    return OpenBanditReport(
        title="Off-policy estimate of Bernoulli TS from the uniform-random log (Open Bandit)",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=str(source),
        evaluation_policy=(
            "BTS's mean logged propensity per (item, position), normalised per position"
        ),
        headline_estimator=HEADLINE_ESTIMATOR,
        n_bootstrap=first.n_bootstrap,
        seed=seed,
        confidence_level=first.confidence_level,
        covered_in_every_campaign={n: all(v.covered[n] for v in validations) for n in names},
        mean_absolute_relative_error={
            n: float(np.mean([abs(v.relative_error[n]) for v in validations])) for n in names
        },
        campaigns=list(validations),
    )


def write_open_bandit_report(
    report: OpenBanditReport, out_dir: Path, *, stem: str = "ope_open_bandit"
) -> ReportPaths:
    """Write ``<stem>.json`` and ``<stem>.png`` (estimates with intervals beside observed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(json=out_dir / f"{stem}.json", png=out_dir / f"{stem}.png")
    paths.json.write_text(report.model_dump_json(indent=2) + "\n")
    _plot_open_bandit(report, paths.png)
    return paths


def write_estimates_report(
    report: EstimatesReport, out_dir: Path, *, stem: str = "ope"
) -> ReportPaths:
    """Write ``<stem>.json`` and ``<stem>.png`` for a generic log's estimates."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(json=out_dir / f"{stem}.json", png=out_dir / f"{stem}.png")
    paths.json.write_text(report.model_dump_json(indent=2) + "\n")
    _plot_estimates(report, paths.png)
    return paths


def _plot_open_bandit(report: OpenBanditReport, path: Path) -> None:
    figure = Figure(figsize=(7.5, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    names = [n for n in ESTIMATORS if n in report.covered_in_every_campaign]
    width = 0.8 / (len(names) + 1)
    for group, campaign in enumerate(report.campaigns):
        for k, name in enumerate(names):
            item = campaign.estimate_of(name)
            x = group - 0.4 + width * (k + 0.5)
            axes.errorbar(
                x,
                100 * item.value,
                yerr=[[100 * (item.value - item.ci_low)], [100 * (item.ci_high - item.value)]],
                fmt="o",
                capsize=4,
                color=ESTIMATOR_COLOURS.get(name, "black"),
                label=name.upper() if group == 0 else None,
            )
        x = group - 0.4 + width * (len(names) + 0.5)
        axes.errorbar(
            x,
            100 * campaign.observed_ctr,
            yerr=[
                [100 * (campaign.observed_ctr - campaign.observed_ci_low)],
                [100 * (campaign.observed_ci_high - campaign.observed_ctr)],
            ],
            fmt="D",
            capsize=4,
            color="black",
            label="BTS observed" if group == 0 else None,
        )
        axes.hlines(
            100 * campaign.observed_ctr, group - 0.45, group + 0.45, colors="black", lw=0.6, ls=":"
        )
    axes.set_xticks(range(len(report.campaigns)), [c.campaign for c in report.campaigns])
    axes.set_ylabel("click rate (%)")
    axes.set_title(
        f"BTS click rate from the random log: {report.confidence_level:.0%} bootstrap intervals",
        fontsize=10,
    )
    figure.legend(fontsize=8, ncols=len(names) + 1, loc="outside lower center")
    axes.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=120)


def _plot_estimates(report: EstimatesReport, path: Path) -> None:
    figure = Figure(figsize=(6.5, 1.2 + 0.6 * len(report.estimates)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for row, item in enumerate(report.estimates):
        axes.errorbar(
            item.value,
            row,
            xerr=[[item.value - item.ci_low], [item.ci_high - item.value]],
            fmt="o",
            capsize=4,
            color=ESTIMATOR_COLOURS.get(item.name, "black"),
        )
    axes.axvline(report.logging_mean_reward, color="black", ls=":", label="logging policy")
    axes.set_yticks(range(len(report.estimates)), [e.name.upper() for e in report.estimates])
    axes.set_xlabel("mean reward per round of the target policy")
    axes.set_title(report.title, fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(axis="x", alpha=0.3)
    figure.savefig(path, dpi=120)
