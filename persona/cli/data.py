"""``persona data``: make canonical bank data (simulate or load) and validate it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from persona.cli.errors import console, user_errors
from persona.settings import get_settings

if TYPE_CHECKING:
    from persona.loaders.summary import LoadSummary

data_app = typer.Typer(no_args_is_help=True)
load_app = typer.Typer(no_args_is_help=True, help="Load a real data set into canonical tables.")
data_app.add_typer(load_app, name="load")

OutDir = Annotated[
    Path, typer.Option("--out", help="Data directory; the source writes its tables under OUT/raw/.")
]


@data_app.command("simulate")
def simulate_command(
    customers: Annotated[int, typer.Option(help="Number of customers to simulate.")] = 2_000,
    days: Annotated[int, typer.Option(help="Days of activity to simulate.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bank.")] = 7,
    out: OutDir = Path("data/sim"),
    chunk_size: Annotated[
        int, typer.Option(help="Customers simulated per chunk (bounds memory).")
    ] = 50_000,
) -> None:
    """Simulate a bank: customers, catalogue, holdings and event logs across the four apps."""
    from persona.simulator import SimulationConfig, simulate_bank

    with user_errors():
        config = SimulationConfig(customers=customers, days=days, seed=seed, chunk_size=chunk_size)
        summary = simulate_bank(config, out)
    console.print_json(summary.model_dump_json())


@data_app.command("validate")
def validate_command(
    data_dir: Annotated[Path, typer.Argument(help="Data directory holding raw/ tables.")],
) -> None:
    """Validate DIR/raw into DIR/clean; every refused row goes to DIR/quarantine with its reason."""
    from persona.validation import validate_dataset

    with user_errors():
        report = validate_dataset(data_dir)
    if not report.passed:
        refused = sum(t.rows_quarantined for t in report.tables.values())
        console.print(
            f"[yellow]{refused:,} row(s) quarantined[/yellow] "
            f"— see {data_dir / 'quarantine'} and {data_dir / 'validation_report.json'}"
        )


@load_app.command("amazon-games")
def load_amazon_games_command(
    out: OutDir = Path("data/amazon_games"),
    source: Annotated[
        Path | None, typer.Option(help="Folder with Video.txt (default: shared data).")
    ] = None,
) -> None:
    """The SASRec paper's Amazon Games interactions."""
    from persona.loaders.amazon_games import load_amazon_games

    with user_errors():
        settings = get_settings()
        summary = load_amazon_games(
            source or settings.shared_data_dir / "amazon_games", out, roots=settings.data_roots
        )
    _print_summary(summary)


@load_app.command("czech-bank")
def load_czech_bank_command(
    out: OutDir = Path("data/czech_bank"),
    source: Annotated[
        Path | None, typer.Option(help="Folder with the PKDD'99 CSVs (default: shared data).")
    ] = None,
) -> None:
    """The real Czech bank (PKDD'99): clients, accounts, cards, loans, permanent orders."""
    from persona.loaders.czech_bank import load_czech_bank

    with user_errors():
        settings = get_settings()
        summary = load_czech_bank(
            source or settings.shared_data_dir / "czech_bank", out, roots=settings.data_roots
        )
    _print_summary(summary)


@load_app.command("open-bandit")
def load_open_bandit_command(
    out: OutDir = Path("data/open_bandit"),
    policy: Annotated[str, typer.Option(help="Logging policy: random or bts.")] = "random",
    campaign: Annotated[str, typer.Option(help="Campaign: all, men or women.")] = "all",
    source: Annotated[
        Path | None, typer.Option(help="open_bandit folder (default: shared data).")
    ] = None,
) -> None:
    """Open Bandit Dataset click logs with propensities."""
    from persona.loaders.open_bandit import load_open_bandit

    with user_errors():
        settings = get_settings()
        summary = load_open_bandit(
            source or settings.shared_data_dir / "open_bandit",
            out,
            policy=_choice("policy", policy, ("random", "bts")),  # type: ignore[arg-type]
            campaign=_choice("campaign", campaign, ("all", "men", "women")),  # type: ignore[arg-type]
            roots=settings.data_roots,
        )
    _print_summary(summary)


@load_app.command("csv")
def load_csv_command(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet interactions file.")],
    user: Annotated[str, typer.Option(help="Column holding the user/customer id.")],
    item: Annotated[str, typer.Option(help="Column holding the item/product id.")],
    timestamp: Annotated[str, typer.Option(help="Column holding the event time.")],
    out: OutDir = Path("data/csv"),
    event_type: Annotated[
        str | None, typer.Option(help="Column holding the event type (see --default-event-type).")
    ] = None,
    default_event_type: Annotated[
        str | None,
        typer.Option(help="Event type of every row when the file has no event-type column."),
    ] = None,
    timestamp_format: Annotated[
        str | None,
        typer.Option(help="strptime format, or epoch_s / epoch_ms / epoch_us (default: ISO)."),
    ] = None,
    app_column: Annotated[
        str | None, typer.Option("--app", help="Column holding the app (rib, cib, nli, imobile).")
    ] = None,
    default_app: Annotated[
        str | None, typer.Option(help="App for every row when the file has no app column.")
    ] = None,
) -> None:
    """Any interactions file, with a column mapping (user, item, timestamp, event type, app)."""
    from persona.loaders.csv_interactions import ColumnMapping, load_interactions_csv

    with user_errors():
        settings = get_settings()
        mapping = ColumnMapping(
            user=user, item=item, timestamp=timestamp, event_type=event_type, app=app_column
        )
        summary = load_interactions_csv(
            path,
            out,
            mapping,
            default_app=default_app,
            default_event_type=default_event_type,
            timestamp_format=timestamp_format,
            roots=settings.data_roots,
        )
    _print_summary(summary)


def _choice(
    field: str, value: str, allowed: tuple[str, ...]
) -> Literal["random", "bts", "all", "men", "women"]:
    if value not in allowed:
        raise ValueError(f"{field}: {value!r} is not one of {', '.join(allowed)}")
    return value  # type: ignore[return-value]


def _print_summary(summary: LoadSummary) -> None:
    console.print(summary.render())
