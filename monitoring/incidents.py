"""An incident scenario for the KPI anomaly detector: clean bank traffic, injected incidents, a score.

Clean traffic. The bank simulator's events have a real daily shape (morning, lunch and evening
peaks for retail customers, office hours for corporate ones; nothing after 23:00) and a weekly
one (corporate logins ×0.3 and retail ×0.85 at weekends). A small simulated bank gives, per app
× segment, impressions per weekday and per weekend day and the CTR, and per app the hour-of-day
share of a day's impressions (hour 23, empty in the simulator, is filled between 22:00 and
00:00). The scenario scales that bank to ``customers_represented`` customers and draws every
hour afresh: requests ~ Poisson (each shows ``slate_size`` impressions) around a day level that
wanders (±5 % a day for the bank, ±3 % per app, ±3 % per hour), clicks ~ binomial at a CTR that
wanders ±3 % a day; per app the fallback share is binomial around 0.5 % and the p95 latency
grows with load (+30 % at the app's peak) with ±4 % noise. An app's series is the sum of its
segments'; the largest segments of each app are monitored beside it.

Incidents start at random hours (seeded, night or day alike) in the scored part, 24 h or
more apart:

* ``ctr_drop``: one app's CTR falls by ``ctr_drop`` (default 40 %) in every segment, for
  6-24 h (a broken ranker or feature stays broken until someone rolls it back);
* ``traffic_spike``: one app's traffic is multiplied by ``spike_factor`` (default ×3) for
  2-6 h; latency follows the load;
* ``pipeline_outage``: the feature pipeline fails for every app: ``outage_fallback_share`` of
  responses (default 30 %, from 0.5 %) come from fallback priors, whose CTR is half the
  model's, and the p95 latency rises ×1.6 (feature look-ups time out), for 2-6 h.

Score: an incident is detected when an alert of an app it hit overlaps its window
(recall = detected / incidents); an alert is true when it overlaps an incident that hit its
app (precision = true alerts / alerts; one alert per merged run of flagged hours).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring.alerts import Alert, as_utc, write_alerts
from monitoring.kpi import (
    ALL_SEGMENTS,
    FRAME_COLUMNS,
    KPIS,
    complete_hourly_grid,
    hourly_event_kpis,
    kpi_series,
    segments_from_customers,
)
from monitoring.kpi_anomaly import (
    DetectionResult,
    DetectorConfig,
    Shading,
    detect_kpi_anomalies,
    plot_detection,
)
from persona import domain

IncidentKind = Literal["ctr_drop", "traffic_spike", "pipeline_outage"]
INCIDENT_KINDS: Final[tuple[IncidentKind, ...]] = ("ctr_drop", "traffic_spike", "pipeline_outage")
#: Hours each kind of incident lasts, drawn uniformly from (low, high) inclusive.
DURATION_HOURS: Final[dict[str, tuple[int, int]]] = {
    "ctr_drop": (6, 24),
    "traffic_spike": (2, 6),
    "pipeline_outage": (2, 6),
}
#: Hours kept free between two incidents, so each one's alerts are its own.
INCIDENT_GAP_HOURS: Final = 24
#: The p95 latency of each app at no load (ms), and how much it grows at the app's peak load.
BASE_LATENCY_MS: Final[dict[str, float]] = {
    "rib": 120.0,
    "cib": 150.0,
    "nli": 110.0,
    "imobile": 90.0,
}
LOAD_LATENCY_GAIN: Final = 0.3
BASE_FALLBACK_SHARE: Final = 0.005


class Magnitudes(BaseModel):
    """How hard each kind of incident hits (relative changes are fractions, 0.4 = 40 %)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ctr_drop: float = Field(default=0.40, gt=0, lt=1, description="Relative CTR drop, one app.")
    spike_factor: float = Field(default=3.0, gt=1, description="Traffic multiplier, one app.")
    outage_fallback_share: float = Field(
        default=0.30, gt=BASE_FALLBACK_SHARE, le=1, description="Fallback share in an outage."
    )
    fallback_ctr_ratio: float = Field(
        default=0.5, ge=0, le=1, description="CTR of fallback responses / the model's."
    )
    outage_latency_factor: float = Field(
        default=1.6, gt=0, description="p95 latency multiplier in an outage."
    )


class ScenarioConfig(BaseModel):
    """Size, seed and incidents of one scenario run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0, description="Seed of traffic noise and incident placement.")
    days: int = Field(default=35, ge=3, description="Days of hourly traffic.")
    train_days: int = Field(
        default=21, ge=2, description="Days before the first scored hour (the first fit)."
    )
    customers_represented: int = Field(
        default=1_000_000, ge=1_000, description="Customers the scaled-up bank has."
    )
    incidents_per_kind: int = Field(default=2, ge=0, description="Incidents of each kind.")
    segments_per_app: int = Field(
        default=2, ge=0, description="Largest segments of each app monitored beside it."
    )
    slate_size: int = Field(default=3, ge=1, description="Impressions per request.")
    magnitudes: Magnitudes = Field(default_factory=Magnitudes)

    @model_validator(mode="after")
    def _scored_days_left(self) -> ScenarioConfig:
        if self.train_days >= self.days:
            raise ValueError(f"train_days: {self.train_days} must be below days ({self.days})")
        return self


class Incident(BaseModel):
    """One injected incident: what, where (apps) and when (``end`` exclusive, UTC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    incident_id: str
    kind: IncidentKind
    apps: tuple[str, ...]
    start: datetime
    end: datetime
    magnitude: float = Field(description="ctr_drop: relative drop; spike: factor; outage: share.")


@dataclass(frozen=True)
class TrafficProfile:
    """What a simulated bank does per day and hour, to be scaled up.

    ``units``: one row per app × segment with ``weekday`` and ``weekend`` (mean impressions per
    day) and ``ctr``; ``hour_share``: per app (columns), the share of a day's impressions in
    each hour 0..23 (rows), each column summing to 1.
    """

    sim_customers: int
    units: pd.DataFrame
    hour_share: pd.DataFrame


@dataclass(frozen=True)
class Scenario:
    """Hourly KPI frame (``monitoring.kpi.FRAME_COLUMNS``) with incidents injected."""

    config: ScenarioConfig
    frame: pd.DataFrame
    incidents: list[Incident]

    @property
    def train_hours(self) -> int:
        return self.config.train_days * 24


class KindScore(BaseModel):
    """Recall for one kind of incident, and how long detection took (hours after its start)."""

    incidents: int
    detected: int
    recall: float | None
    delays_h: list[float]
    true_alerts: int = Field(description="Alerts that overlap an incident of this kind.")

    @property
    def median_delay_h(self) -> float | None:
        return statistics.median(self.delays_h) if self.delays_h else None


class KpiScore(BaseModel):
    """Alerts raised on one KPI and how many of them were true."""

    alerts: int
    true_alerts: int
    precision: float | None


class ScenarioScore(BaseModel):
    """Precision and recall of alerts against injected incidents (pooled over runs)."""

    incidents: int
    detected: int
    recall: float | None
    alerts: int
    true_alerts: int
    precision: float | None
    by_kind: dict[str, KindScore]
    by_kpi: dict[str, KpiScore]


@dataclass(frozen=True)
class ScenarioRun:
    """One seeded scenario, what the detector made of it, and the score."""

    scenario: Scenario
    detection: DetectionResult
    score: ScenarioScore


def simulate_traffic_profile(
    seed: int = 0, customers: int = 3_000, days: int = 28, workdir: Path | None = None
) -> TrafficProfile:
    """Run the bank simulator (``customers`` × ``days``, one process) and read its profile."""
    from persona.simulator import SimulationConfig, simulate_bank

    config = SimulationConfig(customers=customers, days=days, seed=seed)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="kpi_profile_") as folder:
        simulate_bank(config, Path(folder), workers=1, progress=False)
        raw = Path(folder) / "raw"
        return traffic_profile(
            raw / "events", segments_from_customers(raw / "customers"), customers
        )


def traffic_profile(events_dir: Path, segments: pd.DataFrame, sim_customers: int) -> TrafficProfile:
    """Daily impressions, CTR and hour-of-day shape per app × segment from an event log."""
    frame = hourly_event_kpis(events_dir, by="segment", segments=segments)
    frame["day"] = frame["hour"].dt.floor("D")
    frame["weekend"] = frame["hour"].dt.dayofweek >= 5
    daily = frame.groupby(["app", "segment", "day", "weekend"], as_index=False)[
        ["impressions", "clicks"]
    ].sum()
    if not daily["weekend"].any() or daily["weekend"].all():
        raise ValueError("events: the profile needs weekdays and weekend days (7 days or more)")
    units = daily.pivot_table(
        index=["app", "segment"], columns="weekend", values="impressions", aggfunc="mean"
    ).rename(columns={False: "weekday", True: "weekend"})
    totals = daily.groupby(["app", "segment"])[["impressions", "clicks"]].sum()
    app_ctr = totals.groupby("app")["clicks"].sum() / totals.groupby("app")["impressions"].sum()
    # A segment with few impressions gets its app's CTR rather than a noisy one of its own.
    unit_ctr = totals["clicks"] / totals["impressions"].where(totals["impressions"] >= 200)
    units["ctr"] = unit_ctr.fillna(
        app_ctr.reindex(units.index.get_level_values("app")).set_axis(units.index)
    )
    units = units.reset_index()
    units = units[(units["weekday"] + units["weekend"]) > 0].reset_index(drop=True)
    by_hour = frame.groupby(["app", frame["hour"].dt.hour])["impressions"].sum().unstack("app")
    by_hour = by_hour.reindex(range(24)).fillna(0.0)
    # The simulator leaves some hours empty (23:00); traffic never stops, so fill between.
    for app in by_hour.columns:
        column = by_hour[app].to_numpy(dtype=np.float64)
        empty = column <= 0
        column[empty] = ((np.roll(column, 1) + np.roll(column, -1)) / 2)[empty]
        by_hour[app] = column / column.sum()
    return TrafficProfile(sim_customers=sim_customers, units=units, hour_share=by_hour)


def build_scenario(profile: TrafficProfile, config: ScenarioConfig) -> Scenario:
    """Clean hourly traffic for every app × segment of ``profile``, scaled and seeded, with
    ``config.incidents_per_kind`` incidents of each kind injected."""
    if config.train_days >= config.days:
        raise ValueError(f"train_days: {config.train_days} must be below days ({config.days})")
    apps = [a for a in domain.APPS if a in profile.hour_share.columns]
    if not apps:
        raise ValueError("profile: no app of the bank has traffic")
    rng_noise, rng_incidents = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(2)
    )
    from persona.simulator.config import DEFAULT_END_DATE

    start = pd.Timestamp(DEFAULT_END_DATE - timedelta(days=config.days - 1), tz="UTC")
    hours = pd.date_range(start, periods=config.days * 24, freq="h", tz="UTC")
    n = len(hours)
    incidents = place_incidents(rng_incidents, hours, apps, config)
    effects = _incident_effects(incidents, hours, apps, config.magnitudes)

    scale = config.customers_represented / profile.sim_customers
    day_index = np.arange(n) // 24
    weekend = hours.dayofweek.to_numpy() >= 5
    bank_day = rng_noise.lognormal(0.0, 0.05, config.days)
    rows = []
    app_requests = {}
    for app in apps:
        app_day = rng_noise.lognormal(0.0, 0.03, config.days)
        shape = profile.hour_share[app].to_numpy()[hours.hour.to_numpy()]
        units = profile.units[profile.units["app"] == app]
        requests_total = np.zeros(n)
        for unit in units.itertuples(index=False):
            daily = np.where(weekend, unit.weekend, unit.weekday) * scale
            mean_impressions = (
                daily * shape * bank_day[day_index] * app_day[day_index]
                * rng_noise.lognormal(0.0, 0.03, n) * effects.volume[app]
            )  # fmt: skip
            requests = rng_noise.poisson(mean_impressions / config.slate_size)
            impressions = requests * config.slate_size
            ctr = unit.ctr * rng_noise.lognormal(0.0, 0.03, config.days)[day_index]
            clicks = rng_noise.binomial(impressions, np.clip(ctr * effects.ctr[app], 0, 1))
            requests_total += requests
            rows.append(
                pd.DataFrame(
                    {
                        "hour": hours,
                        "app": app,
                        "segment": unit.segment,
                        "impressions": impressions,
                        "clicks": clicks,
                    }
                )
            )
        app_requests[app] = requests_total
    units_frame = pd.concat(rows, ignore_index=True)
    app_frame = units_frame.groupby(["hour", "app"], as_index=False)[
        ["impressions", "clicks"]
    ].sum()
    app_frame["segment"] = ALL_SEGMENTS
    request_rows = []
    for app in apps:
        requests = app_requests[app].astype(np.int64)
        share = np.clip(BASE_FALLBACK_SHARE * rng_noise.lognormal(0.0, 0.15, n), 0, 1)
        share = np.maximum(share, effects.fallback_share[app])
        load = requests / max(float(np.quantile(requests[: config.train_days * 24], 0.95)), 1.0)
        latency = (
            BASE_LATENCY_MS.get(app, 100.0) * (1 + LOAD_LATENCY_GAIN * load)
            * rng_noise.lognormal(0.0, 0.04, n) * effects.latency[app]
        )  # fmt: skip
        request_rows.append(
            pd.DataFrame(
                {
                    "hour": hours,
                    "app": app,
                    "requests": requests,
                    "fallbacks": rng_noise.binomial(requests, share),
                    "latency_p95_ms": np.where(requests > 0, latency, np.nan),
                }
            )
        )
    app_frame = app_frame.merge(pd.concat(request_rows), on=["hour", "app"], how="left")
    monitored = _monitored_segments(units_frame, config.segments_per_app)
    segment_frame = units_frame.merge(monitored, on=["app", "segment"])
    frame = complete_hourly_grid(pd.concat([app_frame, segment_frame], ignore_index=True))
    return Scenario(config=config, frame=frame[list(FRAME_COLUMNS)], incidents=incidents)


def place_incidents(
    rng: np.random.Generator, hours: pd.DatetimeIndex, apps: Sequence[str], config: ScenarioConfig
) -> list[Incident]:
    """Random, non-overlapping incidents (``INCIDENT_GAP_HOURS`` apart) in the scored hours."""
    n = len(hours)
    first = config.train_days * 24
    taken = np.zeros(n, dtype=bool)
    kinds = [k for k in INCIDENT_KINDS for _ in range(config.incidents_per_kind)]
    rng.shuffle(kinds)
    magnitude = {
        "ctr_drop": config.magnitudes.ctr_drop,
        "traffic_spike": config.magnitudes.spike_factor,
        "pipeline_outage": config.magnitudes.outage_fallback_share,
    }
    incidents = []
    for number, kind in enumerate(kinds):
        low, high = DURATION_HOURS[kind]
        duration = int(rng.integers(low, high + 1))
        free = [
            s
            for s in range(first, n - duration)
            if not taken[max(0, s - INCIDENT_GAP_HOURS) : s + duration + INCIDENT_GAP_HOURS].any()
        ]
        if not free:
            raise ValueError(
                f"days: {config.days} days leave no room for {len(kinds)} incidents "
                f"after {config.train_days} training days; add days or fewer incidents"
            )
        start = int(rng.choice(free))
        taken[start : start + duration] = True
        hit = tuple(apps) if kind == "pipeline_outage" else (str(rng.choice(list(apps))),)
        incidents.append(
            Incident(
                incident_id=f"s{config.seed}-{number:02d}-{kind}",
                kind=kind,
                apps=hit,
                start=hours[start].to_pydatetime(),
                end=(hours[start] + pd.Timedelta(hours=duration)).to_pydatetime(),
                magnitude=magnitude[kind],
            )
        )
    return sorted(incidents, key=lambda i: i.start)


def score_alerts(alerts: Sequence[Alert], incidents: Sequence[Incident]) -> ScenarioScore:
    """Precision and recall of ``alerts`` against ``incidents`` (see the module doc)."""
    by_kind = {
        kind: KindScore(incidents=0, detected=0, recall=None, delays_h=[], true_alerts=0)
        for kind in INCIDENT_KINDS
    }
    by_kpi: dict[str, list[int]] = {}
    true_alerts = 0
    matched_by_incident: dict[str, list[Alert]] = {i.incident_id: [] for i in incidents}
    for alert in alerts:
        kpi = alert.subject.removeprefix("kpi:")
        hits = [i for i in incidents if _overlaps(alert, i)]
        counts = by_kpi.setdefault(kpi, [0, 0])
        counts[0] += 1
        if hits:
            true_alerts += 1
            counts[1] += 1
            for incident in hits:
                matched_by_incident[incident.incident_id].append(alert)
            by_kind[hits[0].kind].true_alerts += 1
    detected = 0
    for incident in incidents:
        score = by_kind[incident.kind]
        score.incidents += 1
        matched = matched_by_incident[incident.incident_id]
        if matched:
            detected += 1
            score.detected += 1
            first = min(as_utc(a.detected_at) for a in matched)
            score.delays_h.append((first - as_utc(incident.start)).total_seconds() / 3600)
    for score in by_kind.values():
        score.recall = score.detected / score.incidents if score.incidents else None
    return ScenarioScore(
        incidents=len(incidents),
        detected=detected,
        recall=detected / len(incidents) if incidents else None,
        alerts=len(alerts),
        true_alerts=true_alerts,
        precision=true_alerts / len(alerts) if alerts else None,
        by_kind=by_kind,
        by_kpi={
            kpi: KpiScore(alerts=a, true_alerts=t, precision=t / a if a else None)
            for kpi, (a, t) in sorted(by_kpi.items())
        },
    )


def pool_scores(scores: Sequence[ScenarioScore]) -> ScenarioScore:
    """One score over several runs: counts summed, then the ratios recomputed."""
    incidents = sum(s.incidents for s in scores)
    detected = sum(s.detected for s in scores)
    alerts = sum(s.alerts for s in scores)
    true_alerts = sum(s.true_alerts for s in scores)
    by_kind = {}
    for kind in INCIDENT_KINDS:
        parts = [s.by_kind[kind] for s in scores if kind in s.by_kind]
        n, d = sum(p.incidents for p in parts), sum(p.detected for p in parts)
        by_kind[kind] = KindScore(
            incidents=n,
            detected=d,
            recall=d / n if n else None,
            delays_h=[x for p in parts for x in p.delays_h],
            true_alerts=sum(p.true_alerts for p in parts),
        )
    by_kpi = {}
    for kpi in sorted({k for s in scores for k in s.by_kpi}):
        a = sum(s.by_kpi[kpi].alerts for s in scores if kpi in s.by_kpi)
        t = sum(s.by_kpi[kpi].true_alerts for s in scores if kpi in s.by_kpi)
        by_kpi[kpi] = KpiScore(alerts=a, true_alerts=t, precision=t / a if a else None)
    return ScenarioScore(
        incidents=incidents,
        detected=detected,
        recall=detected / incidents if incidents else None,
        alerts=alerts,
        true_alerts=true_alerts,
        precision=true_alerts / alerts if alerts else None,
        by_kind=by_kind,
        by_kpi=by_kpi,
    )


def run_scenario(
    profile: TrafficProfile,
    config: ScenarioConfig,
    detector: DetectorConfig | None = None,
    *,
    progress: bool = False,
) -> ScenarioRun:
    """Build one scenario, detect on every monitored series, and score the alerts."""
    detector = detector or DetectorConfig()
    # Scoring starts where the scenario's training days end.
    detector = DetectorConfig.model_validate(
        {**detector.model_dump(), "train_hours": config.train_days * 24}
    )
    scenario = build_scenario(profile, config)
    detection = detect_kpi_anomalies(kpi_series(scenario.frame, KPIS), detector, progress=progress)
    return ScenarioRun(
        scenario=scenario,
        detection=detection,
        score=score_alerts(detection.alerts, scenario.incidents),
    )


def scenario_summary(runs: Sequence[ScenarioRun], detector: DetectorConfig) -> dict:
    """A JSON-ready summary of several runs: pooled score, per-run scores, incidents, settings."""
    pooled = pool_scores([r.score for r in runs])
    return {
        "pooled": _score_dict(pooled),
        "runs": [
            {
                "seed": run.scenario.config.seed,
                "score": _score_dict(run.score),
                "incidents": [json.loads(i.model_dump_json()) for i in run.scenario.incidents],
                "false_alerts": [
                    json.loads(
                        a.model_dump_json(
                            include={
                                "subject",
                                "app",
                                "segment",
                                "window_start",
                                "window_end",
                                "score",
                            }
                        )
                    )
                    for a in run.detection.alerts
                    if not any(_overlaps(a, i) for i in run.scenario.incidents)
                ],
                "series_monitored": len(run.detection.scored),
            }
            for run in runs
        ],
        "scenario": json.loads(runs[0].scenario.config.model_dump_json()) if runs else None,
        "detector": json.loads(detector.model_dump_json()),
    }


def write_scenario_report(
    runs: Sequence[ScenarioRun], detector: DetectorConfig, out_dir: Path
) -> dict[str, Path]:
    """Write ``scenario.json`` (pooled and per-run scores, incidents, false alerts, settings),
    ``scenario.png`` (the first run's series) and ``alerts.jsonl`` (every run's alerts, with
    the run's seed in ``details``) under ``out_dir``; returns their paths."""
    if not runs:
        raise ValueError("runs: nothing to report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "scenario.json",
        "png": out_dir / "scenario.png",
        "alerts": out_dir / "alerts.jsonl",
    }
    paths["json"].write_text(json.dumps(scenario_summary(runs, detector), indent=2) + "\n")
    plot_scenario(runs[0], paths["png"])
    paths["alerts"].unlink(missing_ok=True)
    for run in runs:
        seed = run.scenario.config.seed
        write_alerts(
            paths["alerts"],
            [
                a.model_copy(update={"details": {**a.details, "seed": seed}})
                for a in run.detection.alerts
            ],
        )
    return paths


def plot_scenario(run: ScenarioRun, path: Path) -> Path:
    """PNG of every app's KPIs: observed, expected, incidents shaded, alerts marked."""
    score = run.score
    return plot_detection(
        run.detection.scored,
        run.detection.alerts,
        path,
        shadings=[
            Shading(i.start, i.end, i.apps, i.kind.replace("_", " "))
            for i in run.scenario.incidents
        ],
        title=(
            f"seed {run.scenario.config.seed}: precision {_pct(score.precision)}, "
            f"recall {_pct(score.recall)}"
        ),
    )


def _score_dict(score: ScenarioScore) -> dict:
    data = json.loads(score.model_dump_json())
    for kind, part in score.by_kind.items():
        data["by_kind"][kind]["median_delay_h"] = part.median_delay_h
    return data


@dataclass(frozen=True)
class _Effects:
    volume: dict[str, np.ndarray]
    ctr: dict[str, np.ndarray]
    fallback_share: dict[str, np.ndarray]
    latency: dict[str, np.ndarray]


def _incident_effects(
    incidents: Sequence[Incident], hours: pd.DatetimeIndex, apps: Sequence[str], m: Magnitudes
) -> _Effects:
    n = len(hours)
    effects = _Effects(
        volume={a: np.ones(n) for a in apps},
        ctr={a: np.ones(n) for a in apps},
        fallback_share={a: np.zeros(n) for a in apps},
        latency={a: np.ones(n) for a in apps},
    )
    for incident in incidents:
        window = (hours >= incident.start) & (hours < incident.end)
        for app in incident.apps:
            if incident.kind == "ctr_drop":
                effects.ctr[app][window] *= 1 - m.ctr_drop
            elif incident.kind == "traffic_spike":
                effects.volume[app][window] *= m.spike_factor
            else:
                effects.fallback_share[app][window] = m.outage_fallback_share
                lost = m.outage_fallback_share * (1 - m.fallback_ctr_ratio)
                effects.ctr[app][window] *= 1 - lost
                effects.latency[app][window] *= m.outage_latency_factor
    return effects


def _monitored_segments(units_frame: pd.DataFrame, per_app: int) -> pd.DataFrame:
    """The ``per_app`` largest segments of each app, skipping one that is nearly the whole app."""
    volume = units_frame.groupby(["app", "segment"], as_index=False)["impressions"].sum()
    volume["share"] = volume["impressions"] / volume.groupby("app")["impressions"].transform("sum")
    volume = volume[volume["share"] < 0.95].sort_values(
        ["app", "impressions"], ascending=[True, False]
    )
    return volume.groupby("app").head(per_app)[["app", "segment"]]


def _overlaps(alert: Alert, incident: Incident) -> bool:
    return (
        alert.app in incident.apps
        and as_utc(alert.window_start) < as_utc(incident.end)
        and as_utc(alert.window_end) > as_utc(incident.start)
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
