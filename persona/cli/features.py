"""``persona features``: DuckDB offline tables, then Feast apply / materialise / online reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from persona.cli.errors import console, user_errors
from persona.settings import PersonaSettings, get_settings

features_app = typer.Typer(no_args_is_help=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: PERSONA_DATA_DIR)."),
]


def settings_for(data_dir: Path | None) -> PersonaSettings:
    settings = get_settings()
    if data_dir is None:
        return settings
    return settings.model_copy(update={"data_dir": data_dir.resolve()})


@features_app.command("build")
def build_command(data_dir: DataDirOption = None) -> None:
    """Compute the offline feature tables point-in-time correctly with DuckDB SQL."""
    from persona.features.build import build_features

    with user_errors():
        settings = settings_for(data_dir)
        summary = build_features(settings.data_dir)
    console.print_json(summary.model_dump_json())


@features_app.command("apply")
def apply_command(data_dir: DataDirOption = None) -> None:
    """Register entities, sources, views and feature services with Feast."""
    from persona.features.store import apply_definitions, choose_online_store, open_store

    with user_errors():
        settings = settings_for(data_dir)
        choice = choose_online_store(settings)
        console.print(f"online store: [bold]{choice.kind}[/bold] ({choice.reason})")
        names = apply_definitions(open_store(settings, choice), settings.data_dir)
    console.print(f"applied {len(names)} objects: {', '.join(names)}")


@features_app.command("materialize")
def materialize_command(
    data_dir: DataDirOption = None,
    engine: Annotated[
        Literal["auto", "feast", "bulk"],
        typer.Option(
            help="auto: the bulk loader for Redis, Feast's own path for SQLite; "
            "feast: FeatureStore.materialize; bulk: the bulk loader (Redis only)."
        ),
    ] = "auto",
) -> None:
    """Load the latest feature rows into the online store (Redis, or SQLite when Redis is down)."""
    from persona.features.store import choose_online_store, materialize_all, open_store

    with user_errors():
        settings = settings_for(data_dir)
        choice = choose_online_store(settings)
        console.print(f"online store: [bold]{choice.kind}[/bold] ({choice.reason})")
        result = materialize_all(open_store(settings, choice), settings.data_dir, engine=engine)
    console.print_json(
        json.dumps(
            {
                "engine": result.engine,
                "rows": result.rows,
                "seconds": round(result.seconds, 2),
                "rows_per_second": round(result.rows_per_second),
            }
        )
    )


@features_app.command("show")
def show_command(
    customer_id: Annotated[int, typer.Option(help="Customer whose online vector to print.")],
    data_dir: DataDirOption = None,
    service: Annotated[str, typer.Option(help="Feature service to read.")] = "customer_context_v1",
) -> None:
    """Print one customer's online feature vector."""
    from persona.features.store import choose_online_store, online_customer_vector, open_store

    with user_errors():
        settings = settings_for(data_dir)
        store = open_store(settings, choose_online_store(settings))
        vector = online_customer_vector(store, customer_id, service)
    console.print_json(json.dumps(vector, default=str))
