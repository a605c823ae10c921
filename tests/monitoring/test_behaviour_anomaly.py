"""Behaviour anomaly scores on a small simulated bank, with customers whose money moved ×50."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from monitoring.alerts import read_alerts
from monitoring.behaviour_anomaly import (
    ALL_CUSTOMERS,
    BEHAVIOUR_FEATURES,
    AnomalyConfig,
    behaviour_alerts,
    latest_behaviour,
    peer_groups,
    relative_log,
    score_behaviour,
)
from persona.cli.monitor import monitor_app
from persona.features.build import feature_table_path
from persona.pseudonym import Pseudonymiser, configured_pseudonymiser
from tests.banks import featured_bank

CUSTOMERS = 600
INJECTED = 5
#: The injected customers must all rank in the top 2.5% of 600.
TOP = 15


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("behaviour_bank")
    featured_bank(root, customers=CUSTOMERS, days=45, seed=3)
    return root


@pytest.fixture(scope="module")
def injected(bank: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A copy of the bank's features where five ordinary retail customers (debits in the middle
    half of retail customers') move fifty times their money in every snapshot."""
    rows = latest_behaviour(bank)
    debits = rows.column("txn_amount_out_30d").to_numpy()
    retail = np.asarray(rows.column("customer_type").to_pylist()) == "retail"
    low, high = np.quantile(debits[retail], [0.25, 0.75])
    ordinary = np.flatnonzero(retail & (debits >= low) & (debits <= high))
    picked = np.random.default_rng(1).choice(ordinary, INJECTED, replace=False)
    customers = sorted(int(c) for c in rows.column("customer_id").to_numpy()[picked])

    root = tmp_path_factory.mktemp("behaviour_injected")
    for view in ("customer_profile", "customer_segment"):
        target = feature_table_path(root, view)
        target.parent.mkdir(parents=True)
        shutil.copy(feature_table_path(bank, view), target)
    behaviour = pq.read_table(feature_table_path(bank, "customer_behaviour"))
    chosen = pc.is_in(behaviour.column("customer_id"), pa.array(customers, pa.int64()))
    chosen = chosen.to_numpy(zero_copy_only=False)
    for name in behaviour.column_names:
        if name.startswith("txn_amount"):
            values = behaviour.column(name).to_numpy().copy()
            values[chosen] *= 50
            behaviour = behaviour.set_column(
                behaviour.column_names.index(name), name, pa.array(values)
            )
    target = feature_table_path(root, "customer_behaviour")
    target.parent.mkdir(parents=True)
    pq.write_table(behaviour, target)
    return root, customers


def _ranks(table: pa.Table, customers: list[int]) -> list[int]:
    by_customer = dict(
        zip(table.column("customer_id").to_pylist(), table.column("rank").to_pylist(), strict=True)
    )
    return sorted(by_customer[c] for c in customers)


def test_latest_behaviour_is_one_row_per_customer_at_the_newest_snapshot(bank: Path) -> None:
    rows = latest_behaviour(bank)
    assert rows.num_rows == CUSTOMERS
    assert len(set(rows.column("customer_id").to_pylist())) == CUSTOMERS
    newest = pc.max(
        pq.read_table(feature_table_path(bank, "customer_behaviour"))["event_timestamp"]
    )
    assert max(rows.column("snapshot_at").to_pylist()) == newest.as_py().replace(tzinfo=None)
    assert set(rows.column("customer_type").to_pylist()) <= {"retail", "corporate"}
    assert rows.column("segment_id").null_count == 0


def test_injected_extreme_money_ranks_at_the_top(injected: tuple[Path, list[int]]) -> None:
    root, customers = injected
    scores = score_behaviour(latest_behaviour(root))
    ranks = _ranks(scores.table, customers)
    assert max(ranks) <= TOP, f"injected customers ranked {ranks}"
    top = {row["customer_id"]: row for row in scores.top(TOP)}
    for customer in customers:
        why = {u["feature"] for u in top[customer]["unusual"]}  # type: ignore[union-attr]
        assert why & {f for f in BEHAVIOUR_FEATURES if "amount" in f or "per_txn" in f}, why


def test_the_same_customers_are_ordinary_before_the_injection(
    bank: Path, injected: tuple[Path, list[int]]
) -> None:
    _, customers = injected
    ranks = _ranks(score_behaviour(latest_behaviour(bank)).table, customers)
    assert sum(r <= TOP for r in ranks) <= 1, f"already unusual before: {ranks}"
    assert np.median(ranks) > 100


def test_scores_are_in_0_1_ordered_and_reproducible(bank: Path) -> None:
    rows = latest_behaviour(bank)
    first = score_behaviour(rows, AnomalyConfig(seed=7))
    again = score_behaviour(rows, AnomalyConfig(seed=7))
    other = score_behaviour(rows, AnomalyConfig(seed=8))
    score = first.table.column("anomaly_score").to_numpy()
    assert ((score > 0) & (score <= 1)).all()
    assert (np.diff(score) <= 0).all()
    assert first.table.column("rank").to_pylist() == list(range(1, CUSTOMERS + 1))
    assert first.table.equals(again.table)
    assert not first.table.equals(other.table)
    assert set(first.table.column("peer_group").to_pylist()) == {"retail", "corporate"}


def test_peer_groups_pool_rare_and_unknown_types() -> None:
    groups = peer_groups(["retail"] * 30 + ["corporate"] * 3 + [None], min_size=20)
    assert groups.tolist() == ["retail"] * 30 + [ALL_CUSTOMERS] * 4


def test_relative_log_puts_the_typical_customer_at_log_2() -> None:
    features = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [1000.0, 0.0]])
    out = relative_log(features)
    assert out[0, 0] == 0.0 and out[2, 0] == pytest.approx(np.log(2))  # median of 10, 20, 1000
    assert out[3, 0] == pytest.approx(np.log1p(50))
    assert (out[:, 1] == 0).all()  # a column that is zero for everyone stays zero


def test_bad_input_names_the_missing_column(bank: Path) -> None:
    rows = latest_behaviour(bank).drop_columns(["logins_30d"])
    with pytest.raises(ValueError, match="logins_30d"):
        score_behaviour(rows)
    with pytest.raises(ValueError, match="alert_score"):
        AnomalyConfig(watch_score=0.8, alert_score=0.7)


def test_behaviour_cli_writes_scores_top_and_alerts(
    injected: tuple[Path, list[int]], tmp_path: Path
) -> None:
    root, customers = injected
    out = tmp_path / "behaviour"
    result = CliRunner().invoke(
        monitor_app, ["behaviour", "--data-dir", str(root), "--out", str(out), "--top", "10"]
    )
    assert result.exit_code == 0, result.output
    scores = pq.read_table(out / "behaviour_scores.parquet")
    assert scores.num_rows == CUSTOMERS
    assert {"customer_id", "anomaly_score", "rank", "segment_id"} <= set(scores.column_names)
    top = json.loads((out / "behaviour_top.json").read_text())
    assert len(top["top"]) == 10 and top["customers"] == CUSTOMERS
    assert set(customers) <= {row["customer_id"] for row in top["top"]}
    assert (out / "behaviour.png").stat().st_size > 5_000

    alerts = read_alerts(out / "alerts.jsonl")
    config = AnomalyConfig()
    flagged = [row for row in top["top"] if row["anomaly_score"] >= config.watch_score]
    pseudonym = configured_pseudonymiser(root)
    assert [a.subject for a in alerts] == [
        f"customer:{pseudonym(row['customer_id'])}" for row in flagged
    ]
    assert {f"customer:{pseudonym(c)}" for c in customers} <= {a.subject for a in alerts}
    # Alerts travel: no raw id, no customer's own feature values in them.
    for alert in alerts:
        assert "customer_id" not in alert.details
        assert all({"feature", "robust_z"} == u.keys() for u in alert.details["unusual"])
    for alert in alerts:
        assert alert.kind == "behaviour_anomaly" and alert.segment is not None
        assert alert.severity == ("alert" if alert.score >= config.alert_score else "watch")
        assert alert.expected is not None and alert.expected < alert.observed


def test_alerts_stop_below_the_watch_score(bank: Path) -> None:
    scores = score_behaviour(latest_behaviour(bank))
    strict = AnomalyConfig(watch_score=0.99, alert_score=0.995)
    pseudonym = Pseudonymiser(b"k" * 32)
    assert behaviour_alerts(scores, strict, pseudonym=pseudonym) == []
    loose = AnomalyConfig(watch_score=0.01, alert_score=0.02)
    assert len(behaviour_alerts(scores, loose, pseudonym=pseudonym, top=7)) == 7


def test_behaviour_cli_without_features_fails_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(monitor_app, ["behaviour", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "features" in result.output and "Traceback" not in result.output
