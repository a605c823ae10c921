"""``persona simulate``: closed-loop traffic from simulated customers against the live endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persona.cli.errors import console, user_errors
from persona.cli.features import settings_for

simulate_app = typer.Typer(no_args_is_help=True)

_SERVERS = ("single-process", "ray")


def _check_ports(port: int, shadow_port: int) -> None:
    if port == shadow_port:
        raise ValueError(f"shadow-port: must differ from --port ({port})")


@simulate_app.callback()
def simulate_callback() -> None:
    """Simulated customers using the live platform (the simulator's hidden truth decides)."""


@simulate_app.command("traffic")
def traffic_command(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="A prepared data dir (default: PERSONA_DATA_DIR)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the ledger and report go (default: DATA_DIR/ab).")
    ] = None,
    days: Annotated[int, typer.Option(help="Simulated days of traffic.")] = 14,
    seed: Annotated[int, typer.Option(help="Seed of sessions and outcomes.")] = 0,
    customers: Annotated[
        int | None, typer.Option(help="Only the first N customers log in (default: all).")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    server: Annotated[
        str, typer.Option(help="'single-process' (one uvicorn process) or 'ray' (Ray Serve).")
    ] = "single-process",
    port: Annotated[int, typer.Option(help="Port of the experiment's server.")] = 8700,
    shadow_port: Annotated[int, typer.Option(help="Port of the shadow ranker.")] = 8701,
    experiment: Annotated[str, typer.Option(help="Experiment every app runs.")] = (
        "ranker_vs_priors"
    ),
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of the OPE interval.")] = 2000,
) -> None:
    """Simulated customers open the four apps over simulated days and call the live endpoint;
    their outcomes go back as events; then the experiment is analysed (HTML + JSON)."""
    from persona.simulator.traffic.run import TrafficConfig
    from persona.simulator.traffic.session import run_traffic_session

    with user_errors():
        if server not in _SERVERS:
            raise ValueError(f"server: {server!r} is not one of {', '.join(_SERVERS)}")
        _check_ports(port, shadow_port)
        settings = settings_for(data_dir)
        config = TrafficConfig(days=days, seed=seed, customers=customers, concurrency=concurrency)
        outcome = run_traffic_session(
            settings.data_dir,
            out or settings.data_dir / "ab",
            config,
            settings,
            server=server,  # type: ignore[arg-type]
            port=port,
            shadow_port=shadow_port,
            experiment=experiment,
            n_bootstrap=bootstrap,
        )
    print_outcome(outcome)


def print_outcome(outcome: object) -> None:
    from persona.simulator.traffic.session import TrafficOutcome

    assert isinstance(outcome, TrafficOutcome)
    report, summary = outcome.report, outcome.summary
    acc = report.accounting
    console.print(
        f"requests {acc.requests_sent:,} sent = {acc.responses:,} answered + "
        f"{acc.request_errors} errors; 429 retries {acc.retries_429}; events sent "
        f"{acc.events_sent:,} / acknowledged {acc.events_acknowledged:,} / in log "
        f"{acc.events_in_log:,}; traffic {summary.wall_seconds:.0f} s "
        f"({summary.requests_per_second} req/s)"
    )
    table = Table(title="transformer vs control: CTR lift (95% CI)")
    for column in ("slice", "control", "transformer", "lift", "CI", "SRM p"):
        table.add_column(column)
    for lift in report.lifts:
        if lift.variant != "transformer":
            continue
        table.add_row(
            lift.slice,
            f"{lift.control_rate:.4f}",
            f"{lift.variant_rate:.4f}",
            f"{lift.relative:+.1%}",
            f"[{lift.ci_low:+.1%}, {lift.ci_high:+.1%}]",
            f"{lift.srm_p_value:.3g}",
        )
    console.print(table)
    for r in report.relevance:
        console.print(
            f"relevance NDCG@10 {r.variant}: {r.ndcg10:.4f} [{r.ci_low:.4f}, {r.ci_high:.4f}]"
        )
    for check in report.ope:
        console.print(
            f"OPE {check.estimator}: {check.estimate:.4f} [{check.ci_low:.4f}, {check.ci_high:.4f}]"
            f" vs observed {check.observed_ctr:.4f} — {'inside' if check.observed_inside else 'OUTSIDE'}"
        )
    console.print(f"guardrails held in every arm: {report.guardrails_held}")
    console.print(json.dumps({k: str(v) for k, v in outcome.paths.items()}))
