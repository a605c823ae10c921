"""Drift (PSI) on crafted samples and on a small simulated bank; alerts as JSON lines."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from monitoring.alerts import Alert, alert_id_for, read_alerts, write_alerts
from monitoring.drift import (
    DriftThresholds,
    column_drift,
    customer_snapshot,
    drift_alerts,
    drift_report,
    feature_drift,
    population_stability_index,
    score_drift,
    shown_item_scores,
    training_window_end,
)
from persona.cli.monitor import monitor_app
from persona.features.build import feature_table_path
from tests.banks import featured_bank
from training.examples import ExampleSet
from training.models import SegmentPopularity
from training.sets.impressions import build_impression_set

AMOUNT_FEATURE = "log1p(txn_amount_out_30d)"


# --- fixtures: a small simulated bank, its example set, and a copy whose money moved ---------


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drift_bank")
    featured_bank(root, customers=600, days=45, seed=3)
    return root


@pytest.fixture(scope="module")
def examples(bank: Path, tmp_path_factory: pytest.TempPathFactory) -> ExampleSet:
    out = tmp_path_factory.mktemp("drift_examples")
    build_impression_set(bank, out, dataset="tiny", max_len=10, valid_days=5, test_days=5, seed=1)
    return ExampleSet(out)


@pytest.fixture(scope="module")
def shifted_bank(
    bank: Path, examples: ExampleSet, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The same customers, with every transaction amount after the training window ×50."""
    root = tmp_path_factory.mktemp("drift_shifted")
    for view in ("customer_profile", "customer_holdings"):
        target = feature_table_path(root, view)
        target.parent.mkdir(parents=True)
        shutil.copy(feature_table_path(bank, view), target)
    behaviour = pq.read_table(feature_table_path(bank, "customer_behaviour"))
    end = pa.scalar(training_window_end(examples), pa.timestamp("us", tz="UTC"))
    after = pc.greater(behaviour.column("event_timestamp"), end).to_numpy(zero_copy_only=False)
    for name in behaviour.column_names:
        if name.startswith("txn_amount"):
            values = behaviour.column(name).to_numpy().copy()
            values[after] *= 50
            index = behaviour.column_names.index(name)
            behaviour = behaviour.set_column(index, name, pa.array(values))
    target = feature_table_path(root, "customer_behaviour")
    target.parent.mkdir(parents=True)
    pq.write_table(behaviour, target)
    return root


def _drift_args(examples: ExampleSet, data_dir: Path) -> list[str]:
    return ["drift", "--examples", str(examples.root), "--data-dir", str(data_dir)]


# --- PSI ------------------------------------------------------------------------------------


def test_psi_matches_the_formula_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    expected = 0.25 * np.log(2) + 0.25 * np.log(1.5)
    assert population_stability_index([50, 50], [25, 75]) == pytest.approx(expected, rel=1e-6)
    assert population_stability_index([1, 1, 1], [1, 1, 1]) == 0.0


def test_identical_samples_have_no_drift() -> None:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "amount": rng.lognormal(5, 1, 5_000),
            "logins": rng.poisson(3, 5_000),
            "app": rng.choice(["rib", "cib", "nli", "imobile"], 5_000),
        }
    )
    results = feature_drift(frame, frame)
    assert [r.feature for r in results] == ["amount", "logins", "app"]
    assert all(r.psi < 1e-9 and r.status == "ok" for r in results)
    assert [r.kind for r in results] == ["numeric", "numeric", "categorical"]
    # Two samples of the same distribution: small, not zero.
    other = pd.DataFrame({"amount": rng.lognormal(5, 1, 20_000)})
    again = pd.DataFrame({"amount": rng.lognormal(5, 1, 20_000)})
    assert 0 < feature_drift(other, again)[0].psi < 0.01


def test_a_shifted_sample_drifts_by_how_far_it_moved() -> None:
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 20_000)})
    small = pd.DataFrame({"x": rng.normal(0.45, 1, 20_000)})
    large = pd.DataFrame({"x": rng.normal(1.0, 1, 20_000)})
    watched, alerted = feature_drift(reference, small)[0], feature_drift(reference, large)[0]
    assert 0.1 <= watched.psi < 0.25 and watched.status == "watch"
    assert alerted.psi > 0.25 and alerted.status == "alert"
    assert alerted.current_mean == pytest.approx(1.0, abs=0.05)
    # Bins are the reference's deciles: 10% of the reference in each.
    assert len(alerted.bins) == 10
    assert all(b.reference_share == pytest.approx(0.1, abs=1e-3) for b in alerted.bins)


def test_thresholds_give_the_status() -> None:
    thresholds = DriftThresholds()
    assert (thresholds.watch, thresholds.alert) == (0.1, 0.25)
    assert [thresholds.status(p) for p in (0.0, 0.099, 0.1, 0.2499, 0.25, 3.0)] == [
        "ok",
        "ok",
        "watch",
        "watch",
        "alert",
        "alert",
    ]
    strict = DriftThresholds(watch=0.02, alert=0.05)
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 20_000)})
    current = pd.DataFrame({"x": rng.normal(0.3, 1, 20_000)})
    assert feature_drift(reference, current, thresholds=strict)[0].status == "alert"
    with pytest.raises(ValueError, match="below watch"):
        DriftThresholds(watch=0.3, alert=0.2)


def test_categorical_psi_counts_new_categories() -> None:
    reference = pd.Series(["rib"] * 500 + ["cib"] * 500)
    current = pd.Series(["rib"] * 800 + ["cib"] * 100 + ["nli"] * 100)
    result = column_drift("app", reference, current)
    assert result.kind == "categorical"
    assert [b.label for b in result.bins] == ["cib", "rib", "nli"]  # reference order, then new
    r = np.array([0.5, 0.5, 1e-4])
    c = np.array([0.1, 0.8, 0.1])
    r, c = r / r.sum(), c / c.sum()
    assert result.psi == pytest.approx(float(np.sum((c - r) * np.log(c / r))), rel=1e-9)
    assert result.status == "alert"


def test_counts_with_ties_get_exact_bins_and_missing_values_their_own() -> None:
    reference = pd.Series([0] * 700 + [1] * 200 + [5] * 100, dtype="float64")
    current = pd.Series([0] * 400 + [1] * 300 + [5] * 200 + [np.nan] * 100, dtype="float64")
    result = column_drift("clicks_30d", reference, current)
    labels = [b.label for b in result.bins]
    assert labels == ["<= 0", "(0, 1]", "> 1", "<missing>"]  # 5s are the top decile
    shares = {b.label: (b.reference_share, b.current_share) for b in result.bins}
    assert shares["<= 0"] == (0.7, 0.4)
    assert shares["<missing>"] == (0.0, 0.1)
    assert result.status == "alert"


def test_bad_input_names_the_column() -> None:
    frame = pd.DataFrame({"income": [1.0, 2.0], "age": [30.0, 40.0]})
    with pytest.raises(ValueError, match=r"current: missing column\(s\) income"):
        feature_drift(frame, frame[["age"]], ["income", "age"])
    with pytest.raises(ValueError, match="age: empty sample"):
        feature_drift(frame, frame.iloc[:0], ["age"])
    with pytest.raises(ValueError, match="current_scores: contains NaN"):
        score_drift([0.1, 0.2], [0.1, float("nan")])
    with pytest.raises(ValueError, match="numeric in the reference"):
        column_drift("age", frame["age"], pd.Series(["a", "b"]))


def test_score_drift_between_training_and_serving() -> None:
    rng = np.random.default_rng(5)
    trained = rng.beta(2, 20, 10_000)
    assert score_drift(trained, rng.beta(2, 20, 10_000)).status == "ok"
    shifted = score_drift(trained, rng.beta(2, 8, 10_000))
    assert shifted.feature == "score" and shifted.status == "alert"


# --- training snapshot vs live snapshot on real data ----------------------------------------


def test_the_training_snapshot_is_encoded_like_the_example_set(
    bank: Path, examples: ExampleSet
) -> None:
    train = examples.read("train").sort_by("event_timestamp")
    last = train.slice(train.num_rows - 1, 1).to_pylist()[0]
    snapshot = customer_snapshot(examples, bank, last["event_timestamp"])
    (position,) = np.flatnonzero(snapshot.customer_ids == last["customer_id"])
    row = snapshot.features.iloc[position]
    assert list(snapshot.features.columns) == examples.manifest().dense_features
    np.testing.assert_allclose(row.to_numpy(), np.asarray(last["context_dense"]), atol=1e-5)


def test_drift_report_pairs_the_training_window_with_the_latest_snapshot(
    bank: Path, examples: ExampleSet
) -> None:
    report = drift_report(examples, bank)
    train_end = max(examples.read("train").column("event_timestamp").to_pylist())
    assert report.reference_as_of == train_end.replace(tzinfo=UTC)
    behaviour = pq.read_table(feature_table_path(bank, "customer_behaviour"))
    assert report.current_as_of == pc.max(behaviour.column("event_timestamp")).as_py()
    assert report.current_as_of > report.reference_as_of
    assert report.reference_customers == report.current_customers == 600
    assert [r.feature for r in report.features] == examples.manifest().dense_features
    for result in report.features:
        assert result.status == report.thresholds.status(result.psi)
    statuses = {r.feature: r.status for r in report.features}
    assert statuses[AMOUNT_FEATURE] == "ok"
    assert sum(s == "alert" for s in statuses.values()) <= 5  # ten days of ordinary change


def test_drift_cli_writes_report_plot_and_alerts_for_moved_money(
    shifted_bank: Path, examples: ExampleSet, tmp_path: Path
) -> None:
    out = tmp_path / "drift"
    result = CliRunner().invoke(
        monitor_app,
        [*_drift_args(examples, shifted_bank), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    body = json.loads((out / "drift.json").read_text())
    assert (out / "drift.png").stat().st_size > 10_000
    psi = [f["psi"] for f in body["features"]]
    assert psi == sorted(psi, reverse=True)
    statuses = {f["feature"]: f["status"] for f in body["features"]}
    assert statuses[AMOUNT_FEATURE] == "alert"
    assert body["counts"]["alert"] == sum(s == "alert" for s in statuses.values())

    alerts = read_alerts(out / "alerts.jsonl")
    assert len(alerts) == body["counts"]["alert"]
    assert {a.subject for a in alerts} == {
        f"feature:{f}" for f, s in statuses.items() if s == "alert"
    }
    money = next(a for a in alerts if a.subject == f"feature:{AMOUNT_FEATURE}")
    assert money.kind == "drift" and money.severity == "alert" and money.score > 0.25
    assert money.observed > money.expected  # ×50 moves the mean up
    assert money.window_end > money.window_start


def test_drift_cli_adds_score_drift_from_parquet_columns(
    bank: Path, examples: ExampleSet, tmp_path: Path
) -> None:
    ranker = SegmentPopularity().fit(examples)
    trained = shown_item_scores(ranker, examples, "train")
    shown = sum(len(s) for s in examples.read("train").column("shown").to_pylist())
    assert len(trained) == shown and ((trained >= 0) & (trained <= 1)).all()
    pq.write_table(pa.table({"score": trained}), tmp_path / "train_scores.parquet")
    served = np.clip(trained * 3, 0, 1)  # a model that serves three times the probability
    pq.write_table(pa.table({"p": served}), tmp_path / "served.parquet")
    score_args = [
        *_drift_args(examples, bank),
        *("--out", str(tmp_path / "out"), "--alerts", str(tmp_path / "alerts.jsonl")),
        *("--reference-scores", str(tmp_path / "train_scores.parquet")),
        *("--served-scores", str(tmp_path / "served.parquet"), "--score-column", "p"),
    ]
    result = CliRunner().invoke(monitor_app, score_args)
    assert result.exit_code == 2 and "no column 'p'" in result.output  # train file has "score"
    pq.write_table(pa.table({"p": trained}), tmp_path / "train_scores.parquet")
    result = CliRunner().invoke(
        monitor_app,
        score_args,
    )
    assert result.exit_code == 0, result.output
    body = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert body["score"]["status"] == "alert"
    assert "score" in {a.subject for a in read_alerts(tmp_path / "alerts.jsonl")}


def test_drift_cli_refuses_bad_input_in_one_line(examples: ExampleSet, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        monitor_app, ["drift", "--examples", str(tmp_path), "--data-dir", str(tmp_path)]
    )
    assert missing.exit_code == 2 and "examples" in missing.output
    assert "Traceback" not in missing.output
    no_features = runner.invoke(
        monitor_app, ["drift", "--examples", str(examples.root), "--data-dir", str(tmp_path)]
    )
    assert no_features.exit_code == 2 and "features" in no_features.output
    one_score = runner.invoke(
        monitor_app,
        [*_drift_args(examples, tmp_path), "--served-scores", str(tmp_path / "x.parquet")],
    )
    assert one_score.exit_code == 2 and "scores" in one_score.output
    inverted = runner.invoke(
        monitor_app, [*_drift_args(examples, tmp_path), "--watch", "0.3", "--alert", "0.2"]
    )
    assert inverted.exit_code == 2 and "below watch" in inverted.output


# --- alerts ---------------------------------------------------------------------------------


def _alert(subject: str = "feature:log1p(logins_30d)", **changes: object) -> Alert:
    fields: dict[str, object] = {
        "kind": "drift",
        "subject": subject,
        "window_start": datetime(2026, 10, 21, 22, 33, tzinfo=UTC),
        "window_end": datetime(2026, 11, 1, tzinfo=UTC),
        "observed": 0.94,
        "expected": 0.64,
        "score": 0.37,
        "severity": "alert",
        "app": "rib",
        "details": {"bins": [{"label": "<= 0", "share": 0.5}], "psi": 0.37},
    }
    return Alert.create(**{**fields, **changes})  # type: ignore[arg-type]


def test_alerts_round_trip_through_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "alerts" / "alerts.jsonl"
    first = [_alert(), _alert("score", app=None, segment="retail:family", severity="watch")]
    second = [_alert("customer:42", kind="behaviour_anomaly", expected=None)]
    assert write_alerts(path, first) == 2
    assert write_alerts(path, second) == 1  # appends
    assert read_alerts(path) == first + second
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["kind"] == "drift"


def test_alert_ids_are_stable_for_the_same_detection() -> None:
    a = _alert(detected_at=datetime(2026, 11, 1, 1, tzinfo=UTC))
    b = _alert(detected_at=datetime(2026, 11, 2, 1, tzinfo=UTC))
    assert a.alert_id == b.alert_id  # detection time is not part of the identity
    assert _alert(app="cib").alert_id != a.alert_id
    naive = _alert(window_start=datetime(2026, 10, 21, 22, 33))
    assert naive.window_start.tzinfo is not None and naive.alert_id == a.alert_id
    assert a.alert_id == alert_id_for("drift", a.subject, "rib", None, a.window_start, a.window_end)


def test_alerts_refuse_what_could_not_be_read_back(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window_end"):
        _alert(window_end=datetime(2026, 10, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="observed"):
        _alert(observed=float("nan"))
    with pytest.raises(ValueError, match="severity"):
        _alert(severity="panic")
    path = tmp_path / "alerts.jsonl"
    write_alerts(path, [_alert()])
    with path.open("a") as sink:
        sink.write('{"kind": "drift"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_alerts(path)


def test_drift_alerts_follow_the_minimum_severity(bank: Path, examples: ExampleSet) -> None:
    report = drift_report(examples, bank)
    counts = report.counts()
    assert len(drift_alerts(report)) == counts["alert"]
    watch = drift_alerts(report, min_severity="watch")
    assert len(watch) == counts["alert"] + counts["watch"]
    assert [a.score for a in watch] == sorted((a.score for a in watch), reverse=True)
    assert all(a.window_end - a.window_start < timedelta(days=30) for a in watch)
