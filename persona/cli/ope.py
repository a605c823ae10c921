"""``persona ope``: off-policy evaluation, judging a policy on logs another policy made."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona.cli.errors import console, user_errors

if TYPE_CHECKING:
    import pandas as pd

ope_app = typer.Typer(no_args_is_help=True)


class CampaignName(StrEnum):
    all = "all"
    men = "men"
    women = "women"


class EstimatorName(StrEnum):
    ips = "ips"
    snips = "snips"
    dr = "dr"


Bootstrap = Annotated[
    int, typer.Option("--bootstrap", min=100, help="Bootstrap resamples of the rounds.")
]
Seed = Annotated[int, typer.Option(help="Seed of the bootstrap and the reward model's folds.")]
Confidence = Annotated[
    float, typer.Option(min=0.5, max=0.999, help="Confidence level of the intervals.")
]
Estimators = Annotated[
    list[EstimatorName] | None,
    typer.Option("--estimator", help="ips, snips or dr (repeatable; default all three)."),
]


@ope_app.command("open-bandit")
def open_bandit_command(
    campaign: Annotated[
        list[CampaignName] | None,
        typer.Option(help="Campaign(s) to validate: all, men, women (repeatable; default all)."),
    ] = None,
    bootstrap: Bootstrap = 2000,
    seed: Seed = 0,
    out: Annotated[Path, typer.Option(help="Folder for ope_open_bandit.json and .png.")] = Path(
        "data/ope/open_bandit"
    ),
    source: Annotated[
        Path | None,
        typer.Option(help="open_bandit folder holding random/ and bts/ (default: shared data)."),
    ] = None,
    estimator: Estimators = None,
    confidence: Confidence = 0.95,
) -> None:
    """Estimate Bernoulli TS's click rate from the uniform-random Open Bandit log and compare
    it with the click rate BTS observed in its own log."""
    with user_errors():
        from monitoring.ope.open_bandit import validate_on_open_bandit
        from monitoring.ope.report import open_bandit_report, write_open_bandit_report
        from persona.settings import get_settings

        root = source or get_settings().shared_data_dir / "open_bandit"
        validations = validate_on_open_bandit(
            root,
            [c.value for c in campaign or list(CampaignName)],
            estimators=[e.value for e in estimator or list(EstimatorName)],
            n_bootstrap=bootstrap,
            seed=seed,
            confidence_level=confidence,
            progress=True,
        )
        report = open_bandit_report(validations, source=root, seed=seed)
        paths = write_open_bandit_report(report, out)
    table = Table(title=f"Bernoulli TS click rate from the random log ({confidence:.0%} intervals)")
    for column in (
        "campaign",
        "BTS observed",
        "estimator",
        "estimate",
        "interval",
        "covers",
        "rel. error",
    ):
        table.add_column(column)
    for validation in report.campaigns:
        for item in validation.estimates:
            table.add_row(
                validation.campaign,
                f"{validation.observed_ctr:.3%}",
                item.name.upper(),
                f"{item.value:.3%}",
                f"{item.ci_low:.3%} – {item.ci_high:.3%}",
                "yes" if validation.covered[item.name] else "[red]no[/red]",
                f"{validation.relative_error[item.name]:+.1%}",
            )
    console.print(table)
    console.print(f"headline estimator: {report.headline_estimator.upper()}")
    console.print(f"report: {paths.json} {paths.png}")


@ope_app.command("log")
def log_command(
    logged: Annotated[
        Path, typer.Option("--logged", help="Logged rounds, .parquet or .csv (one row a round).")
    ],
    target: Annotated[
        Path,
        typer.Option(
            "--target",
            help="Target policy, .parquet or .csv: action, probability and optionally the "
            "position or round column (one distribution per key).",
        ),
    ],
    action_column: Annotated[
        str, typer.Option(help="Column of the action shown (in both files).")
    ] = "action",
    reward_column: Annotated[str, typer.Option(help="Logged reward column.")] = "reward",
    propensity_column: Annotated[
        str, typer.Option(help="Logging policy's probability of the shown action, in (0, 1].")
    ] = "propensity",
    target_column: Annotated[
        str, typer.Option(help="Target policy's probability column in --target.")
    ] = "probability",
    position_column: Annotated[
        str | None, typer.Option(help="Slot column: a reward-model feature and target key.")
    ] = None,
    round_column: Annotated[
        str | None, typer.Option(help="Round id in both files, for a per-round target.")
    ] = None,
    context_column: Annotated[
        list[str] | None,
        typer.Option(help="Numeric logged column for the reward model (repeatable)."),
    ] = None,
    estimator: Estimators = None,
    bootstrap: Bootstrap = 2000,
    seed: Seed = 0,
    confidence: Confidence = 0.95,
    out: Annotated[Path, typer.Option(help="Folder for ope.json and ope.png.")] = Path(
        "data/ope/log"
    ),
) -> None:
    """Estimate a target policy's mean reward per round from any log with propensities."""
    with user_errors():
        from datetime import UTC, datetime

        from monitoring.ope.estimators import estimate, logged_bandit_from_tables
        from monitoring.ope.report import EstimatesReport, write_estimates_report

        bandit, target_probabilities = logged_bandit_from_tables(
            _read_table(logged, "logged"),
            _read_table(target, "target"),
            action_column=action_column,
            reward_column=reward_column,
            propensity_column=propensity_column,
            target_column=target_column,
            position_column=position_column,
            round_column=round_column,
            context_columns=context_column or (),
        )
        with console.status(f"bootstrapping {bandit.n_rounds:,} rounds × {bootstrap:,}"):
            estimates = estimate(
                bandit,
                target_probabilities,
                estimators=[e.value for e in estimator or list(EstimatorName)],
                n_bootstrap=bootstrap,
                seed=seed,
                confidence_level=confidence,
            )
        report = EstimatesReport(
            title=f"Off-policy estimate of {target.name} on {logged.name}",
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            logged=str(logged),
            target=str(target),
            n_rounds=bandit.n_rounds,
            seed=seed,
            logging_mean_reward=float(bandit.rewards.mean()),
            estimates=estimates,
        )
        paths = write_estimates_report(report, out)
    table = Table(title=f"{report.title} ({confidence:.0%} intervals)")
    for column in ("estimator", "estimate", "interval", "std. error"):
        table.add_column(column)
    for item in estimates:
        table.add_row(
            item.name.upper(),
            f"{item.value:.5g}",
            f"{item.ci_low:.5g} – {item.ci_high:.5g}",
            f"{item.standard_error:.3g}",
        )
    console.print(table)
    console.print(f"logging policy's mean reward: {report.logging_mean_reward:.5g}")
    console.print(f"report: {paths.json} {paths.png}")


def _read_table(path: Path, option: str) -> pd.DataFrame:
    """A .parquet or .csv file as a DataFrame; other suffixes are refused naming the option."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"--{option}: file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise ValueError(f"--{option}: {path.name} is neither .parquet nor .csv")
