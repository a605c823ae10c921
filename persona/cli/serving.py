"""``persona serve``: run the serving graph locally; build its priors; make API keys."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from persona.cli.errors import console, user_errors
from persona.cli.features import DataDirOption, settings_for

serve_app = typer.Typer(invoke_without_command=True)


def serving_args_for(data_dir: Path, config_dir: Path | None = None) -> object:
    """ServingArgs for a data dir: Redis when it answers (or is configured), else SQLite."""
    from persona.features.store import choose_online_store
    from serving.config import DEFAULT_CONFIG_DIR
    from serving.settings import ServingArgs

    settings = settings_for(data_dir)
    choice = choose_online_store(settings)
    console.print(f"online store: [bold]{choice.kind}[/bold] — {choice.reason}")
    return ServingArgs(
        data_dir=settings.data_dir,
        config_dir=(config_dir or DEFAULT_CONFIG_DIR).resolve(),
        online_store=choice.kind,
        redis_url=settings.redis_url,
        feast_project=settings.feast_project,
    )


def build_serving_priors(data_dir: Path) -> Path:
    from serving.priors import build_priors, priors_summary

    priors = build_priors(data_dir)
    path = priors.save(data_dir / "serving")
    console.print(f"priors: {priors_summary(priors)} → {path}")
    return path


@serve_app.callback()
def serve_command(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    config_dir: Annotated[
        Path | None, typer.Option(help="Folder with apps.yaml, rules.yaml, experiments.yaml.")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface the HTTP proxy listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")] = 8000,
    mode: Annotated[
        str,
        typer.Option(
            help="Ray Serve front: 'proxy' (Serve's HTTP proxy), 'throughput' (Serve's "
            "throughput-optimised mode) or 'haproxy' (throughput-optimised behind HAProxy)."
        ),
    ] = "proxy",
    single_process: Annotated[
        bool, typer.Option(help="Run the same pipeline in one uvicorn process, without Ray.")
    ] = False,
) -> None:
    """Serve /v1/recommendations and /v1/events on a local Ray until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from serving.runner import SERVE_MODES, start_serving, stop_serving
    from serving.settings import ServingArgs

    with user_errors():
        if mode not in SERVE_MODES:
            raise ValueError(f"--mode: {mode!r} is not one of {', '.join(SERVE_MODES)}")
        settings = settings_for(data_dir)
        if not (settings.data_dir / "serving" / "priors.json").exists():
            build_serving_priors(settings.data_dir)
        args = serving_args_for(settings.data_dir, config_dir)
        assert isinstance(args, ServingArgs)
        if single_process:
            from serving.single_process import run_single_process

            console.print(f"serving at http://{host}:{port} in one process; Ctrl-C stops")
            run_single_process(args, host, port)
            return
        url = start_serving(args, host=host, port=port, mode=mode)
    console.print(f"serving at {url}  (OpenAPI: {url}/docs, metrics: {url}/metrics); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop_serving()


@serve_app.command("priors")
def priors_command(data_dir: DataDirOption = None) -> None:
    """Build the segment priors and co-interest neighbours retrieval and fallbacks use."""
    with user_errors():
        build_serving_priors(settings_for(data_dir).data_dir)


@serve_app.command("new-key")
def new_key_command(
    app: Annotated[str, typer.Option(help="The app the key is for (rib, cib, nli, imobile).")],
) -> None:
    """Print a new API key (give it to the app) and its SHA-256 (put it in apps.yaml)."""
    from persona import domain
    from serving.auth import new_api_key

    if app not in domain.APPS:
        console.print(f"[red]error:[/red] app: {app!r} is not one of {', '.join(domain.APPS)}")
        raise typer.Exit(code=2)
    key, digest = new_api_key()
    console.print(f"app {app}\nkey {key}\napi_key_sha256 {digest}")
