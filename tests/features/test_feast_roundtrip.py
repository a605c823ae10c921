"""The real Feast repo, applied in a temp dir: apply → materialise → online read, Redis and SQLite.

Also checks Feast's own point-in-time join over the DuckDB offline store against the
DuckDB-built tables.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import redis

from persona.features.build import feature_table_path
from persona.features.store import (
    OnlineStoreChoice,
    apply_definitions,
    materialize_all,
    online_customer_vector,
    open_store,
    redis_answers,
)
from persona.settings import PersonaSettings
from tests.features.conftest import START, VALIDATION_NOW

REDIS_URL = "redis://127.0.0.1:6379/0"


def _settings(data_dir: Path, project: str, online: str) -> PersonaSettings:
    return PersonaSettings(
        data_dir=data_dir, feast_project=project, online_store=online, redis_url=REDIS_URL
    )


def _expected_latest(root: Path, view: str, customer_id: int) -> pd.Series:
    rows = pd.read_parquet(feature_table_path(root, view))
    mine = rows[rows["customer_id"] == customer_id].sort_values("event_timestamp")
    return mine.iloc[-1]


def _roundtrip(crafted_bank: Path, tmp_path: Path, kind: str) -> dict[str, object]:
    project = f"t_{kind}_{uuid.uuid4().hex[:8]}"
    # Registry and SQLite file live in tmp_path; the offline tables are the crafted bank's.
    settings = _settings(tmp_path, project, kind)
    location = REDIS_URL if kind == "redis" else str(settings.sqlite_online_path)
    store = open_store(settings, OnlineStoreChoice(kind, "test", location))  # type: ignore[arg-type]
    names = apply_definitions(store, crafted_bank)
    assert {"ranker_v1", "customer_context_v1", "customer_sequence"} <= set(names)
    result = materialize_all(store, crafted_bank, end=VALIDATION_NOW)
    assert result.rows["customer_profile"] == 12
    vector = online_customer_vector(store, 1)
    if kind == "redis":
        client = redis.Redis.from_url(REDIS_URL)
        try:
            assert any(project.encode() in key for key in client.scan_iter(count=1000)), (
                "materialised rows must be in Redis"
            )
        finally:
            client.close()
    else:
        assert settings.sqlite_online_path.exists()
    return vector


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_apply_materialize_online_roundtrip(crafted_bank: Path, tmp_path: Path, kind: str) -> None:
    if kind == "redis" and not redis_answers(REDIS_URL):
        pytest.fail(f"Redis must answer at {REDIS_URL} (CI starts it in .ci/run)")
    vector = _roundtrip(crafted_bank, tmp_path, kind)
    seq = _expected_latest(crafted_bank, "customer_sequence", 1)
    assert vector["customer_id"] == 1
    assert list(vector["seq_product_ids"]) == list(seq["seq_product_ids"])
    assert vector["seq_length"] == seq["seq_length"]
    holdings = _expected_latest(crafted_bank, "customer_holdings", 1)
    assert list(vector["held_product_ids"]) == list(holdings["held_product_ids"])
    assert vector["segment_id"] == "retail:family"
    assert vector["income_band_index"] == 2
    assert 0.0 <= vector["customer_ctr_30d"] <= 1.0


@pytest.mark.slow
def test_historical_features_through_the_feature_service_are_point_in_time(
    crafted_bank: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, f"t_hist_{uuid.uuid4().hex[:8]}", "sqlite")
    store = open_store(settings, OnlineStoreChoice("sqlite", "test", str(tmp_path / "o.db")))
    apply_definitions(store, crafted_bank)
    times = [START + timedelta(days=d, hours=h) for d in (15, 40, 75, 110) for h in (3, 20)]
    entity_df = pd.DataFrame(
        {
            "customer_id": [c for c in (1, 2, 5) for _ in times],
            "product_id": ["card_a"] * (3 * len(times)),
            "event_timestamp": times * 3,
            "app": ["rib"] * (3 * len(times)),
            "request_hour": [9] * (3 * len(times)),
            "request_day_of_week": [2] * (3 * len(times)),
            "device": ["web"] * (3 * len(times)),
        }
    )
    service = store.get_feature_service("ranker_v1")
    training = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    assert len(training) == len(entity_df)
    behaviour = pd.read_parquet(feature_table_path(crafted_bank, "customer_behaviour"))
    behaviour["event_timestamp"] = pd.to_datetime(behaviour["event_timestamp"], utc=True)
    sequence = pd.read_parquet(feature_table_path(crafted_bank, "customer_sequence"))
    sequence["event_timestamp"] = pd.to_datetime(sequence["event_timestamp"], utc=True)
    for row in training.itertuples(index=False):
        t = pd.Timestamp(row.event_timestamp)
        # Feast picked the snapshot of the label's own day: the latest row at or before t.
        expected = behaviour[
            (behaviour["customer_id"] == row.customer_id) & (behaviour["event_timestamp"] <= t)
        ].sort_values("event_timestamp")
        assert row.clicks_30d == expected.iloc[-1]["clicks_30d"]
        seq_before = sequence[
            (sequence["customer_id"] == row.customer_id) & (sequence["event_timestamp"] <= t)
        ].sort_values("event_timestamp")
        if len(seq_before):
            assert max(row.seq_timestamps) <= t.timestamp()
            assert list(row.seq_product_ids) == list(seq_before.iloc[-1]["seq_product_ids"])
        assert row.hour_sin == pytest.approx(0.7071067811865476)
