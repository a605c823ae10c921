"""KPI anomaly detection: seasonality, no look-ahead, the incident scenario's precision and
recall, and ``persona anomaly detect`` on a real simulated event log."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from monitoring.alerts import Alert, read_alerts
from monitoring.incidents import (
    Incident,
    ScenarioConfig,
    TrafficProfile,
    pool_scores,
    run_scenario,
    score_alerts,
    simulate_traffic_profile,
)
from monitoring.kpi import (
    FRAME_COLUMNS,
    KpiSeries,
    hourly_event_kpis,
    hourly_request_kpis,
    kpi_series,
)
from monitoring.kpi_anomaly import DetectorConfig, score_series
from persona.cli.anomaly import anomaly_app
from persona.simulator import SimulationConfig, simulate_bank
from persona.validation.validate import validate_dataset

#: Daily seasonality only and two weeks of training: enough for the synthetic series below.
DAILY = DetectorConfig(periods=(24,), train_hours=14 * 24)


@pytest.fixture(scope="module")
def profile() -> TrafficProfile:
    """The simulated bank's daily and hourly traffic shape (3,000 customers × 28 days)."""
    return simulate_traffic_profile(seed=0)


@pytest.fixture(scope="module")
def simulated_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small validated simulated bank: 1,500 customers × 24 days."""
    root = tmp_path_factory.mktemp("kpi_bank")
    simulate_bank(SimulationConfig(customers=1_500, days=24, seed=3), root, progress=False)
    validate_dataset(root, progress=False)
    return root


def _daily_volume(days: int, seed: int) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Hourly impressions with a midday peak: 200/h at night, 1,000/h at 12:00 (Poisson)."""
    hours = pd.date_range("2026-09-01", periods=days * 24, freq="h", tz="UTC")
    hour = hours.hour.to_numpy()
    mean = 200 + 800 * np.exp(-0.5 * ((hour - 12) / 2.0) ** 2)
    return hours, mean, np.random.default_rng(seed).poisson(mean).astype(np.float64)


def test_daily_peak_is_expected_but_an_off_peak_spike_of_the_same_size_is_flagged() -> None:
    hours, mean, volume = _daily_volume(days=21, seed=1)
    peak_excess = mean.max() - mean.min()  # what 12:00 adds to a night hour, every day
    spike_day = 18 * 24
    spike = slice(spike_day + 3, spike_day + 6)  # 03:00-05:00, same size as the daily peak
    volume[spike] += peak_excess
    series = KpiSeries(kpi="volume", app="rib", segment="all", hours=hours, value=volume)

    scored = score_series(series, DAILY)

    scored_hours = scored.scored
    noon = scored_hours & (hours.hour == 12)
    assert noon.sum() >= 6
    assert not scored.flagged[noon].any(), "a normal daily peak was flagged"
    assert scored.flagged[spike].all(), "an off-peak spike as large as the peak was missed"
    outside = scored_hours.copy()
    outside[spike] = False
    assert scored.flagged[outside].sum() <= 1


def test_scoring_an_hour_uses_no_later_hour() -> None:
    hours, _, volume = _daily_volume(days=20, seed=2)
    cut = 16 * 24 + 7
    changed = volume.copy()
    changed[cut:] *= 5  # a different future
    before = score_series(KpiSeries("volume", "rib", "all", hours, volume), DAILY)
    after = score_series(KpiSeries("volume", "rib", "all", hours, changed), DAILY)
    np.testing.assert_array_equal(before.z[:cut], after.z[:cut])
    np.testing.assert_array_equal(before.expected[:cut], after.expected[:cut])
    assert after.flagged[cut:].any()


@pytest.mark.slow
def test_injected_incidents_are_found_with_high_precision_and_recall(
    profile: TrafficProfile,
) -> None:
    """Seeds 0 and 1, default magnitudes (CTR -40 %, traffic ×3, fallbacks 0.5 % → 30 %).

    Precision and outage recall reach the 0.9 target; CTR drops and spikes that fall in quiet
    hours of the small apps (a night, the corporate app's Sunday) can go unseen, so overall
    recall is held to 0.8 here (bench/anomaly_incidents.py measures it over more seeds).
    """
    runs = [run_scenario(profile, ScenarioConfig(seed=seed, segments_per_app=1)) for seed in (0, 1)]
    score = pool_scores([r.score for r in runs])
    assert score.incidents == 12
    assert score.precision >= 0.9, score.by_kpi
    assert score.recall >= 0.8, score.by_kind
    assert score.by_kind["pipeline_outage"].recall == 1.0
    assert max(score.by_kind["pipeline_outage"].delays_h) <= 2.0
    # Every alert is a structured kpi_anomaly event about one app's KPI.
    alerts = [a for r in runs for a in r.detection.alerts]
    assert {a.kind for a in alerts} == {"kpi_anomaly"}
    assert {a.subject for a in alerts} <= {
        "kpi:volume",
        "kpi:ctr",
        "kpi:latency_p95_ms",
        "kpi:fallback_share",
    }


@pytest.mark.slow
def test_clean_traffic_raises_almost_no_alerts(profile: TrafficProfile) -> None:
    run = run_scenario(
        profile, ScenarioConfig(seed=5, days=28, incidents_per_kind=0, segments_per_app=1)
    )
    hours_scored = sum(int(s.scored.sum()) for s in run.detection.scored)
    assert hours_scored > 20 * 7 * 24  # 20+ series × 7 scored days
    assert len(run.detection.alerts) <= 1, [
        (a.subject, a.app, a.segment, a.window_start) for a in run.detection.alerts
    ]


def test_scoring_counts_an_alert_once_and_only_for_the_apps_an_incident_hit() -> None:
    start, end = datetime(2026, 10, 1, 10, tzinfo=UTC), datetime(2026, 10, 1, 14, tzinfo=UTC)
    incidents = [
        Incident(
            incident_id="a", kind="ctr_drop", apps=("rib",), start=start, end=end, magnitude=0.4
        ),
        Incident(
            incident_id="b",
            kind="traffic_spike",
            apps=("nli",),
            start=datetime(2026, 10, 3, 1, tzinfo=UTC),
            end=datetime(2026, 10, 3, 3, tzinfo=UTC),
            magnitude=3.0,
        ),
    ]

    def alert(app: str, first: int, last: int) -> Alert:
        return Alert.create(
            kind="kpi_anomaly",
            subject="kpi:ctr",
            app=app,
            segment="all",
            window_start=datetime(2026, 10, 1, first, tzinfo=UTC),
            window_end=datetime(2026, 10, 1, last, tzinfo=UTC),
            observed=0.02,
            expected=0.03,
            score=-6.0,
            severity="alert",
            detected_at=datetime(2026, 10, 1, first + 2, tzinfo=UTC),
        )

    score = score_alerts([alert("rib", 12, 16), alert("cib", 11, 13)], incidents)
    assert (score.alerts, score.true_alerts, score.precision) == (2, 1, 0.5)
    assert (score.incidents, score.detected, score.recall) == (2, 1, 0.5)
    assert score.by_kind["ctr_drop"].delays_h == [4.0]
    assert score.by_kind["traffic_spike"].recall == 0.0


def test_request_kpis_are_hourly_p95_latency_and_fallback_share() -> None:
    rng = np.random.default_rng(0)
    timestamps = pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(
        rng.uniform(0, 2 * 3600, 500), unit="s"
    )
    requests = pd.DataFrame(
        {
            "timestamp": timestamps,
            "app": "rib",
            "latency_ms": rng.gamma(4.0, 20.0, 500),
            "degraded": rng.random(500) < 0.1,
        }
    )
    frame = hourly_request_kpis(requests)
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == 24  # the whole day, hours without requests included
    first = requests[requests["timestamp"] < pd.Timestamp("2026-10-01 01:00", tz="UTC")]
    row = frame.iloc[0]
    assert row["requests"] == len(first)
    assert row["fallbacks"] == first["degraded"].sum()
    assert row["latency_p95_ms"] == pytest.approx(np.percentile(first["latency_ms"], 95))
    assert frame.iloc[5]["requests"] == 0 and np.isnan(frame.iloc[5]["latency_p95_ms"])
    with pytest.raises(ValueError, match="latency_ms"):
        hourly_request_kpis(requests.drop(columns=["latency_ms"]))


def _with_traffic_spike(events_dir: Path, out: Path, app: str, day: str) -> Path:
    """A copy of the event log where ``app``'s impressions 09:00-15:00 on ``day`` appear 5×."""
    table = ds.dataset(events_dir, format="parquet").to_table()
    frame = table.to_pandas()
    start = pd.Timestamp(f"{day} 09:00", tz="UTC")
    window = (
        (frame["app"] == app)
        & (frame["event_type"] == "impression")
        & (frame["event_timestamp"] >= start)
        & (frame["event_timestamp"] < start + pd.Timedelta(hours=6))
    )
    copies = []
    for k in range(4):
        extra = frame[window].copy()
        extra["event_id"] = extra["event_id"] + f"-copy{k}"
        copies.append(extra)
    spiked = pd.concat([frame, *copies], ignore_index=True)
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(spiked, preserve_index=False), out / "events.parquet")
    return out


def test_detect_on_a_simulated_event_log_writes_alerts_as_json_lines(
    simulated_bank: Path, tmp_path: Path
) -> None:
    clean_events = simulated_bank / "clean" / "events"
    last_day = hourly_event_kpis(clean_events)["hour"].max().strftime("%Y-%m-%d")
    spiked = _with_traffic_spike(clean_events, tmp_path / "events", "imobile", last_day)
    out = tmp_path / "out"

    result = CliRunner().invoke(
        anomaly_app,
        ["detect", "--events", str(spiked), "--train-days", "14", "--out", str(out)],
    )

    assert result.exit_code == 0, result.output
    alerts = read_alerts(out / "alerts.jsonl")
    spike_alerts = [
        a
        for a in alerts
        if a.app == "imobile" and a.subject == "kpi:volume" and a.score > 0
        and a.window_start.strftime("%Y-%m-%d") == last_day
    ]  # fmt: skip
    assert spike_alerts, [(a.subject, a.app, a.window_start) for a in alerts]
    summary = json.loads((out / "detect.json").read_text())
    assert summary["series"] == 8  # 4 apps × (volume, CTR): the log has no latency
    assert summary["alerts"] == len(alerts)
    assert (out / "detect.png").stat().st_size > 10_000


def test_detect_by_segment_reads_segments_next_to_the_log(simulated_bank: Path) -> None:
    frame = hourly_event_kpis(simulated_bank / "clean" / "events", by="segment")
    series = kpi_series(frame, ("volume",))
    segments = {s.segment for s in series}
    assert "corporate:business" in segments and "all" not in segments
    total = hourly_event_kpis(simulated_bank / "clean" / "events")
    assert frame["impressions"].sum() == total["impressions"].sum()


def test_bad_input_is_refused_with_one_line_naming_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(anomaly_app, ["detect", "--events", str(tmp_path)])
    assert result.exit_code == 2
    assert "events" in result.output and "Traceback" not in result.output
    with pytest.raises(ValueError, match="refit_every"):
        DetectorConfig(periods=(24,), refit_every=48)
    with pytest.raises(ValueError, match="clicks"):
        kpi_series(pd.DataFrame(columns=[c for c in FRAME_COLUMNS if c != "clicks"]))
