"""A whole traffic run on a prepared data dir: config folders, live servers, the simulated
days, the served log flushed and counted, the analysis and its report."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel

from persona.settings import PersonaSettings
from persona.simulator.traffic.analysis import AbReport, analyse, count_event_log
from persona.simulator.traffic.population import load_population
from persona.simulator.traffic.report import write_report
from persona.simulator.traffic.run import TrafficConfig, TrafficSummary, run_traffic
from persona.simulator.traffic.servers import ServerKind, live_server, single_process_server
from persona.simulator.traffic.serving_config import write_config_dirs
from serving.contact_policy import KEY_PREFIX
from serving.settings import ServingArgs

DEMO_KEYS = {app: f"demo-{app}-key" for app in ("rib", "cib", "nli", "imobile")}


class TrafficOutcome(BaseModel):
    summary: TrafficSummary
    report: AbReport
    paths: dict[str, Path]
    wall_seconds: float


def _fresh_served_state(data_dir: Path, client: redis.Redis) -> None:
    """A run starts with an empty served log and no contact history (its own experiment)."""
    for name in ("events", "wal", "audit"):
        shutil.rmtree(data_dir / "serving" / name, ignore_errors=True)
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def _wait_for_log(data_dir: Path, expected: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        events = count_event_log(data_dir)[0]
        if events >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def run_traffic_session(
    data_dir: Path,
    out_dir: Path,
    config: TrafficConfig,
    settings: PersonaSettings,
    *,
    server: ServerKind = "single-process",
    port: int = 8700,
    shadow_port: int = 8701,
    experiment: str = "ranker_vs_priors",
    n_bootstrap: int = 2000,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrafficOutcome:
    started = time.perf_counter()
    data_dir, out_dir = data_dir.resolve(), out_dir.resolve()
    pop = load_population(data_dir)
    last_day = pop.first_day + timedelta(days=config.days - 1)
    if last_day >= datetime.now(UTC).date():
        raise ValueError(
            f"days: {config.days} days of traffic from {pop.first_day} reach {last_day}, not "
            "before today; simulate a bank that ends earlier or run fewer days"
        )
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as error:
        raise ConnectionError(f"redis: {settings.redis_url} does not answer ({error})") from None
    experiment_dir, shadow_dir = write_config_dirs(out_dir / "config", experiment)
    _fresh_served_state(data_dir, client)
    args = ServingArgs(
        data_dir=data_dir,
        config_dir=experiment_dir,
        online_store="redis",
        redis_url=settings.redis_url,
        feast_project=settings.feast_project,
    )
    # The shadow ranks the baseline's requests with the model: no cache, so it never reads a
    # sequence older than the events the experiment's server has applied.
    shadow_args = args.model_copy(update={"config_dir": shadow_dir, "feature_cache_ttl_s": 0.0})
    logs = out_dir / "logs"
    with (
        single_process_server(shadow_args, shadow_port, logs / "shadow.log") as shadow_url,
        live_server(server, args, port, logs / "server.log") as url,
    ):
        summary = asyncio.run(
            run_traffic(
                pop,
                config,
                url=url,
                shadow_url=shadow_url,
                keys=DEMO_KEYS,
                redis_url=settings.redis_url,
                out_dir=out_dir,
                progress=progress,
            )
        )
        # The Parquet log is flushed by a worker every few seconds: wait for every ack.
        _wait_for_log(data_dir, summary.events_acknowledged, timeout_s=120.0)
    report = analyse(
        data_dir,
        out_dir,
        pop=pop,
        config_dir=experiment_dir,
        experiment=experiment,
        summary=summary,
        n_bootstrap=n_bootstrap,
        seed=config.seed,
    )
    wall = round(time.perf_counter() - started, 1)
    info = {
        "server": server,
        "url_port": port,
        "traffic_days": config.days,
        "traffic_first_day": summary.first_day,
        "traffic_last_day": summary.last_day,
        "sessions": summary.sessions,
        "requests_served": summary.recommendations.ok,
        "traffic_wall_seconds": summary.wall_seconds,
        "requests_per_second": summary.requests_per_second,
        "session_wall_seconds": wall,
        **(extra or {}),
        "traffic_summary": summary.model_dump(),
    }
    paths = write_report(report, info, out_dir / "report")
    return TrafficOutcome(summary=summary, report=report, paths=paths, wall_seconds=wall)
