"""The DuckDB point-in-time join gives exactly Feast's ``get_historical_features`` rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from persona.features.catalog import CUSTOMER_SEGMENT, CUSTOMER_SEQUENCE
from persona.features.store import OnlineStoreChoice, apply_definitions, open_store
from persona.settings import PersonaSettings
from tests.features.conftest import START
from training.sets.dense import CUSTOMER_VIEWS
from training.sets.point_in_time import connect, join_point_in_time

VIEWS = (*CUSTOMER_VIEWS, CUSTOMER_SEGMENT, CUSTOMER_SEQUENCE)


def _entities() -> pd.DataFrame:
    times = [
        START + timedelta(days=d, hours=h)
        for d in (-1, 0, 15, 40, 75, 110, 140)
        for h in (0, 3, 20)
    ]
    return pd.DataFrame(
        {
            "customer_id": [c for c in (1, 2, 5, 12) for _ in times],
            "event_timestamp": times * 4,
        }
    )


def _same(a: object, b: object) -> bool:
    if a is None or (isinstance(a, float) and np.isnan(a)):
        return b is None or (isinstance(b, float) and np.isnan(b))
    if isinstance(a, (list, np.ndarray)):
        return b is not None and list(a) == list(b)
    return bool(a == b)


@pytest.mark.slow
def test_duckdb_join_equals_feast_historical_features(crafted_bank: Path, tmp_path: Path) -> None:
    settings = PersonaSettings(
        data_dir=crafted_bank,
        feature_repo=tmp_path / "repo",
        feast_project=f"t_pit_{uuid.uuid4().hex[:8]}",
        online_store="sqlite",
    )
    store = open_store(settings, OnlineStoreChoice("sqlite", "test", str(tmp_path / "o.db")))
    apply_definitions(store, crafted_bank)
    entity_df = _entities()
    features = [f"{v.name}:{c}" for v in VIEWS for c in v.column_names]
    feast_rows = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    feast_rows = feast_rows.sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)

    entities = pa.table(
        {
            "row_id": np.arange(len(entity_df)),
            "customer_id": entity_df["customer_id"].to_numpy(),
            "event_timestamp": pa.array(entity_df["event_timestamp"]),
        }
    )
    ours = join_point_in_time(connect(), entities, crafted_bank, VIEWS).to_pandas()
    ours["event_timestamp"] = pd.to_datetime(ours["event_timestamp"], utc=True)
    ours = ours.sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)

    assert len(ours) == len(feast_rows) == len(entity_df)
    compared = 0
    for view in VIEWS:
        for column in view.column_names:
            for i in range(len(ours)):
                assert _same(ours.at[i, column], feast_rows.at[i, column]), (
                    view.name,
                    column,
                    ours.at[i, "customer_id"],
                    ours.at[i, "event_timestamp"],
                    ours.at[i, column],
                    feast_rows.at[i, column],
                )
                compared += 1
    # Rows before the first snapshot are null in both; rows after it carry values.
    assert ours["clicks_30d"].notna().sum() > 0 and ours["clicks_30d"].isna().sum() > 0
    assert compared > 5_000
