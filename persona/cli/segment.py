"""``persona segment fit|report``: customer segments, published as the Feast segment view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona.cli.errors import console, error_console, user_errors
from persona.cli.features import DataDirOption, settings_for

if TYPE_CHECKING:
    from segmentation.pipeline import SegmentationSummary

segment_app = typer.Typer(no_args_is_help=True)


@segment_app.command("fit")
def fit_command(
    data_dir: DataDirOption = None,
    k_min: Annotated[int, typer.Option("--k-min", help="Fewest segments per customer type.")] = 3,
    k_max: Annotated[int, typer.Option("--k-max", help="Most segments per customer type.")] = 10,
    components: Annotated[int, typer.Option(help="Principal components k-means clusters in.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of k-means, samples and bootstraps.")] = 0,
    bootstraps: Annotated[
        int, typer.Option(help="Bootstrap refits of the chosen model (stability check).")
    ] = 10,
    min_ari: Annotated[
        float,
        typer.Option("--min-ari", help="Mean adjusted Rand index needed to publish (0..1)."),
    ] = 0.8,
    min_segment_customers: Annotated[
        int,
        typer.Option("--min-segment-customers", help="k is capped at customers // this."),
    ] = 100,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            "--as-of", help="Snapshot time, UTC (default: the latest behaviour snapshot)."
        ),
    ] = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish/--no-publish", help="Append the segments to the customer_segment view."
        ),
    ] = True,
    materialize: Annotated[
        bool,
        typer.Option(
            "--materialize/--no-materialize",
            help="Load the published view into the online store (Redis or SQLite).",
        ),
    ] = True,
) -> None:
    """Choose k, fit, check stability, profile and name segments; publish them to Feast."""
    with user_errors():
        from persona.features.store import choose_online_store
        from segmentation.params import SegmentationParams
        from segmentation.pipeline import run_segmentation

        params = SegmentationParams(
            k_min=k_min,
            k_max=k_max,
            components=components,
            seed=seed,
            bootstraps=bootstraps,
            min_ari=min_ari,
            min_segment_customers=min_segment_customers,
        )
        from segmentation.features import latest_snapshot

        settings = settings_for(data_dir)
        if not settings.data_dir.exists():
            raise FileNotFoundError(f"data_dir: {settings.data_dir} does not exist")
        latest_snapshot(settings.data_dir)  # the feature tables exist, before any store is opened
        choice = None
        if publish and materialize:
            choice = choose_online_store(settings)
            console.print(f"online store: [bold]{choice.kind}[/bold] ({choice.reason})")
        summary = run_segmentation(
            settings.data_dir,
            params,
            as_of=as_of.replace(tzinfo=UTC)
            if as_of is not None and as_of.tzinfo is None
            else as_of,
            publish=publish,
            materialize=materialize,
            settings=settings,
            online_store=choice,
        )
    _print_summary(summary)
    if publish and summary.published is None:
        error_console.print(f"[yellow]not published:[/yellow] {summary.not_published_because}")
        raise typer.Exit(code=1)


@segment_app.command("report")
def report_command(
    data_dir: DataDirOption = None,
    version: Annotated[
        str | None, typer.Option(help="Segmentation version (default: the latest fitted).")
    ] = None,
) -> None:
    """Rewrite a fitted segmentation's HTML/PNG report and print its segments."""
    with user_errors():
        from segmentation.pipeline import load_run, version_folder
        from segmentation.report import write_report

        settings = settings_for(data_dir)
        folder = version_folder(settings.data_dir, version)
        summary, selection, stability, profiles = load_run(folder)
        paths = write_report(folder, summary.version, selection, stability, profiles)
    _print_summary(summary.model_copy(update={"report": str(paths.html)}))


def _print_summary(summary: SegmentationSummary) -> None:
    table = Table(title=f"segmentation {summary.version} ({summary.customers:,} customers)")
    for column in ("segment", "name", "customers", "share"):
        table.add_column(column)
    for row in summary.segments:
        table.add_row(row.segment_id, row.name, f"{row.customers:,}", f"{row.share:.1%}")
    console.print(table)
    for customer_type, reason in summary.selection_reasons.items():
        console.print(f"k for {customer_type}: {summary.chosen_k[customer_type]} — {reason}")
    by_type = ", ".join(
        f"{t} {m:.3f} (min {summary.ari_min_by_type[t]:.3f})"
        for t, m in summary.ari_mean_by_type.items()
    )
    verdict = "[green]stable[/green]" if summary.stable else "[red]not stable[/red]"
    console.print(
        f"bootstrap ARI: {by_type or 'no type with more than one segment'}; "
        f"all customers {summary.ari_overall_mean:.3f} → {verdict}"
    )
    if summary.published is not None:
        console.print(
            f"published {summary.published.rows_added:,} rows at "
            f"{summary.published.event_timestamp.isoformat()} to {summary.published.table}"
        )
    if summary.materialized is not None:
        console.print(
            f"materialised {summary.materialized.entities:,} customers "
            f"({summary.materialized.online_store}) in {summary.materialized.seconds:.1f} s"
        )
    console.print(f"report: {summary.report}")
