"""``persona anomaly``: KPI anomaly detection on an event log, and the injected-incident scenario."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persona.cli.errors import console, user_errors

anomaly_app = typer.Typer(no_args_is_help=True)


class Grouping(StrEnum):
    app = "app"
    segment = "segment"


@anomaly_app.command("detect")
def detect_command(
    events: Annotated[
        Path,
        typer.Option(
            "--events",
            help="Event log folder (canonical events Parquet), e.g. DATA/clean/events or "
            "DATA/serving/events.",
        ),
    ],
    by: Annotated[
        Grouping, typer.Option(help="Series per app, or per app × customer segment.")
    ] = Grouping.app,
    requests: Annotated[
        Path | None,
        typer.Option(
            help="Optional request table (Parquet: timestamp, app, latency_ms, degraded) for "
            "the latency and fallback KPIs."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Folder for alerts.jsonl, detect.json and detect.png.")
    ] = Path("kpi_anomalies"),
    train_days: Annotated[
        int,
        typer.Option("--train-days", min=3, help="Days of history before the first scored hour."),
    ] = 21,
    weekly: Annotated[
        bool,
        typer.Option(
            help="Model weekly as well as daily seasonality (MSTL; needs train days > 14)."
        ),
    ] = True,
    threshold: Annotated[
        float | None,
        typer.Option(min=1.0, help="Robust z-score that flags an hour (default: the detector's)."),
    ] = None,
) -> None:
    """Detect anomalies in hourly CTR, volume (and latency, fallbacks) of a real event log."""
    with user_errors():
        from monitoring.alerts import write_alerts
        from monitoring.kpi import (
            hourly_event_kpis,
            hourly_request_kpis,
            kpi_series,
            merge_frames,
            read_requests,
        )
        from monitoring.kpi_anomaly import DetectorConfig, detect_kpi_anomalies, plot_detection

        settings: dict[str, object] = {
            "train_hours": train_days * 24,
            "periods": (24, 168) if weekly else (24,),
        }
        if threshold is not None:
            settings["threshold"] = threshold
        detector = DetectorConfig.model_validate(settings)
        frame = hourly_event_kpis(events, by=by.value)
        if requests is not None:
            frame = merge_frames(frame, hourly_request_kpis(read_requests(requests)))
        hours = frame["hour"].nunique()
        if hours <= detector.train_hours:
            raise ValueError(
                f"events: the log spans {hours // 24} days, not more than --train-days "
                f"{train_days}; pass a smaller --train-days"
            )
        series = kpi_series(frame)
        result = detect_kpi_anomalies(series, detector, progress=True)
        out.mkdir(parents=True, exist_ok=True)
        alerts_path = out / "alerts.jsonl"
        alerts_path.unlink(missing_ok=True)
        write_alerts(alerts_path, result.alerts)
        summary = {
            "events": str(events),
            "by": by.value,
            "first_hour": frame["hour"].min().isoformat(),
            "last_hour": frame["hour"].max().isoformat(),
            "series": len(series),
            "hours_scored": int(sum(s.scored.sum() for s in result.scored)),
            "hours_flagged": int(sum(s.flagged.sum() for s in result.scored)),
            "alerts": len(result.alerts),
            "alerts_by_kpi": _count(a.subject for a in result.alerts),
            "detector": json.loads(detector.model_dump_json()),
        }
        (out / "detect.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_detection(
            result.scored,
            result.alerts,
            out / "detect.png",
            title=f"{events}: {len(result.alerts)} alerts",
        )
    table = Table(title=f"{len(result.alerts)} KPI alerts ({by.value} series)")
    for column in ("window (UTC)", "kpi", "app", "segment", "observed", "expected", "z"):
        table.add_column(column)
    for alert in result.alerts[:30]:
        table.add_row(
            f"{alert.window_start:%Y-%m-%d %H:%M} – {alert.window_end:%H:%M}",
            alert.subject.removeprefix("kpi:"),
            alert.app or "",
            alert.segment or "",
            f"{alert.observed:.4g}",
            f"{alert.expected:.4g}" if alert.expected is not None else "–",
            f"{alert.score:+.1f}",
        )
    console.print(table)
    console.print(
        f"alerts: {alerts_path}\nsummary: {out / 'detect.json'}, plot: {out / 'detect.png'}"
    )


@anomaly_app.command("scenario")
def scenario_command(
    seed: Annotated[int, typer.Option(min=0, help="Seed of the first run.")] = 0,
    runs: Annotated[
        int, typer.Option(min=1, help="Runs, with seeds seed, seed+1, …; scores are pooled.")
    ] = 3,
    days: Annotated[int, typer.Option(min=7, help="Days of hourly traffic per run.")] = 35,
    train_days: Annotated[
        int, typer.Option("--train-days", min=3, help="Days before the first scored hour.")
    ] = 21,
    incidents_per_kind: Annotated[
        int, typer.Option("--incidents-per-kind", min=1, help="Incidents of each kind per run.")
    ] = 2,
    ctr_drop: Annotated[
        float, typer.Option("--ctr-drop", min=0.01, max=0.99, help="Relative CTR drop.")
    ] = 0.4,
    spike: Annotated[float, typer.Option(min=1.01, help="Traffic spike multiplier.")] = 3.0,
    outage_fallback_share: Annotated[
        float,
        typer.Option(
            "--outage-fallback-share", min=0.01, max=1.0, help="Fallback share in an outage."
        ),
    ] = 0.3,
    out: Annotated[
        Path, typer.Option(help="Folder for scenario.json, scenario.png and alerts.jsonl.")
    ] = Path("kpi_anomaly_scenario"),
) -> None:
    """Inject incidents into simulated bank traffic, detect them, report precision and recall."""
    with user_errors():
        from monitoring.incidents import (
            Magnitudes,
            ScenarioConfig,
            pool_scores,
            run_scenario,
            simulate_traffic_profile,
            write_scenario_report,
        )
        from monitoring.kpi_anomaly import DetectorConfig

        magnitudes = Magnitudes(
            ctr_drop=ctr_drop, spike_factor=spike, outage_fallback_share=outage_fallback_share
        )
        configs = [
            ScenarioConfig(
                seed=seed + i,
                days=days,
                train_days=train_days,
                incidents_per_kind=incidents_per_kind,
                magnitudes=magnitudes,
            )
            for i in range(runs)
        ]
        detector = DetectorConfig(train_hours=train_days * 24)
        console.print("simulating the bank's traffic profile …")
        profile = simulate_traffic_profile(seed=seed)
        results = []
        for config in configs:
            console.print(f"run seed {config.seed}: building traffic, detecting …")
            results.append(run_scenario(profile, config, detector, progress=True))
        paths = write_scenario_report(results, detector, out)
        pooled = pool_scores([r.score for r in results])
    table = Table(title=f"KPI anomaly scenario: {runs} run(s) from seed {seed}")
    for column in ("incident kind", "incidents", "detected", "recall", "median delay (h)"):
        table.add_column(column)
    for kind, score in pooled.by_kind.items():
        delay = score.median_delay_h
        table.add_row(
            kind,
            str(score.incidents),
            str(score.detected),
            _pct(score.recall),
            "–" if delay is None else f"{delay:.1f}",
        )
    table.add_row("all", str(pooled.incidents), str(pooled.detected), _pct(pooled.recall), "")
    console.print(table)
    kpis = ", ".join(
        f"{kpi} {s.true_alerts}/{s.alerts}" for kpi, s in pooled.by_kpi.items() if s.alerts
    )
    console.print(
        f"precision {_pct(pooled.precision)} ({pooled.true_alerts} of {pooled.alerts} alerts "
        f"overlap an incident of their app; by KPI: {kpis or 'no alerts'})"
    )
    console.print(f"report: {paths['json']}, plot: {paths['png']}, alerts: {paths['alerts']}")


def _count(items: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"
