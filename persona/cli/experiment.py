"""``persona experiment analyze``: lift, intervals, p-values, SRM and CUPED of an experiment,
from the served-impression log or from any CSV/Parquet export."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona.cli.errors import console, user_errors

if TYPE_CHECKING:
    from monitoring.experiments.readout import ExperimentReadout, SliceReadout

experiment_app = typer.Typer(no_args_is_help=True)

_TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]


@experiment_app.callback()
def experiment_callback() -> None:
    """Analyse experiments: lifts with confidence intervals, SRM checks, CUPED."""


def parse_expected_split(text: str) -> dict[str, float]:
    """``control=0.5,treatment=0.5`` as {variant: share}; ValueError naming the bad part."""
    split: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, share = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected-split: {part!r} is not VARIANT=SHARE")
        try:
            value = float(share)
        except ValueError:
            raise ValueError(
                f"expected-split: share {share!r} of {name!r} is not a number"
            ) from None
        if not value > 0:
            raise ValueError(f"expected-split: share of {name!r} must be positive, got {value}")
        split[name.strip()] = value
    if not split:
        raise ValueError("expected-split: empty; give e.g. control=0.5,treatment=0.5")
    return split


@experiment_app.command("analyze")
def analyze_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for readout.json/.html, lift.png.")],
    table: Annotated[
        Path | None,
        typer.Option("--table", help="A CSV or Parquet table with unit, variant, outcomes."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data dir whose serving/events log to analyse."),
    ] = None,
    unit: Annotated[str, typer.Option(help="--table: the randomisation unit column.")] = (
        "customer_id"
    ),
    variant: Annotated[str, typer.Option(help="--table: the variant column.")] = "variant",
    outcome: Annotated[
        list[str] | None,
        typer.Option(help="--table: an outcome column, summed per unit (repeatable)."),
    ] = None,
    denominator: Annotated[
        str | None,
        typer.Option(help="--table: denominator column (e.g. impressions): rate = sum/sum."),
    ] = None,
    covariate: Annotated[
        list[str] | None,
        typer.Option(help="--table: pre-period covariate per unit for CUPED (repeatable)."),
    ] = None,
    segment_column: Annotated[
        str | None, typer.Option("--segment-column", help="--table: segment per unit.")
    ] = None,
    app_column: Annotated[
        str | None, typer.Option("--app-column", help="--table: app column (per-app readouts).")
    ] = None,
    expected_split: Annotated[
        str | None,
        typer.Option(
            "--expected-split",
            help="--table: shares for the SRM test, e.g. control=0.5,treatment=0.5 "
            "(default: equal shares).",
        ),
    ] = None,
    experiments_file: Annotated[
        Path | None,
        typer.Option(
            "--experiments-file",
            help="--data-dir: experiments.yaml (default: configs/serving/experiments.yaml).",
        ),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(help="--data-dir: experiment name (needed when the file has several)."),
    ] = None,
    start: Annotated[
        datetime | None,
        typer.Option(
            formats=_TIME_FORMATS,
            help="--data-dir: experiment start (UTC); earlier events are CUPED's pre-period.",
        ),
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option(formats=_TIME_FORMATS, help="--data-dir: experiment end (UTC, exclusive)."),
    ] = None,
    control: Annotated[
        str | None, typer.Option(help="The control variant (default: control).")
    ] = None,
    alpha: Annotated[
        float, typer.Option(min=0.0001, max=0.5, help="1 - confidence level of intervals.")
    ] = 0.05,
    srm_alpha: Annotated[
        float, typer.Option("--srm-alpha", min=1e-9, max=0.5, help="SRM p-value threshold.")
    ] = 0.001,
) -> None:
    """Per-variant rates, lifts with CIs, p-values, SRM; overall, per app, per segment."""
    with user_errors():
        if (table is None) == (data_dir is None):
            raise ValueError("table: give exactly one of --table FILE or --data-dir DIR")
        from monitoring.experiments.readout import experiment_readout
        from monitoring.experiments.report import write_readout
        from monitoring.experiments.sources import units_from_event_log, units_from_table

        if table is not None:
            if experiment or experiments_file or start or end:
                raise ValueError(
                    "experiment: --experiment/--experiments-file/--start/--end need --data-dir"
                )
            units = units_from_table(
                table,
                unit=unit,
                variant=variant,
                outcomes=outcome or [],
                denominator=denominator,
                covariates=covariate or [],
                segment_column=segment_column,
                app_column=app_column,
                expected_split=parse_expected_split(expected_split) if expected_split else None,
            )
        else:
            assert data_dir is not None
            table_only = {
                "outcome": outcome,
                "denominator": denominator,
                "covariate": covariate,
                "segment-column": segment_column,
                "app-column": app_column,
                "expected-split": expected_split,
            }
            given = [name for name, value in table_only.items() if value]
            if given:
                raise ValueError(f"{given[0]}: only with --table (the served log defines it)")
            from serving.config import DEFAULT_CONFIG_DIR

            units = units_from_event_log(
                data_dir,
                experiments_file=experiments_file or DEFAULT_CONFIG_DIR / "experiments.yaml",
                experiment=experiment,
                start=start,
                end=end,
            )
        readout = experiment_readout(
            units, control=control, alpha=alpha, srm_alpha=srm_alpha, progress=True
        )
        paths = write_readout(readout, out)
    _print_readout(readout)
    console.print(f"report: {paths.html}  json: {paths.json}  plot: {paths.png}")


def _print_readout(readout: ExperimentReadout) -> None:
    overall = readout.overall
    table = Table(
        title=f"{readout.experiment or readout.source}: overall (control {readout.control})"
    )
    for column in ("metric", "variant", "units", "rate", "relative lift", "CI", "p-value", "CUPED"):
        table.add_column(column)
    for metric in overall.metrics:
        lifts = {lift.variant: lift for lift in metric.lifts}
        for rate in metric.variants:
            lift = lifts.get(rate.variant)
            est = lift.primary if lift else None
            table.add_row(
                metric.metric,
                rate.variant,
                f"{rate.units:,}",
                f"{rate.rate:.5f}",
                f"{est.relative:+.2%}"
                if est
                else "control"
                if rate.variant == readout.control
                else "–",
                f"[{est.relative_ci_low:+.2%}, {est.relative_ci_high:+.2%}]" if est else "",
                f"{est.p_value:.2g}" if est else "",
                "yes" if lift and lift.cuped else "",
            )
    console.print(table)
    slices = Table(title="sample ratio and primary lift per slice")
    first = readout.metrics[0]["name"] if readout.metrics else ""
    for column in ("slice", "units", "SRM p", f"{first} lift [CI]"):
        slices.add_column(column)
    for slice_ in readout.slices:
        slices.add_row(
            slice_.name,
            " / ".join(f"{v} {n:,}" for v, n in slice_.units.items()),
            f"{slice_.srm.p_value:.3g}" + (" [red]SRM[/red]" if slice_.srm.mismatch else ""),
            _lift_cell(slice_, first),
        )
    console.print(slices)
    for note in readout.notes:
        console.print(f"note: {note}")


def _lift_cell(slice_: SliceReadout, metric: str) -> str:
    for readout in slice_.metrics:
        if readout.metric == metric:
            return "; ".join(
                f"{lift.variant} {lift.primary.relative:+.1%} "
                f"[{lift.primary.relative_ci_low:+.1%}, {lift.primary.relative_ci_high:+.1%}]"
                for lift in readout.lifts
            )
    return "–"
