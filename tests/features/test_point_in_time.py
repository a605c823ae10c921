"""Point-in-time correctness: a feature row stamped t never uses an event after t.

Every DuckDB-built row is checked against a brute-force recomputation in pandas from the raw
events, so a frame off by one day, a window that peeks at the current day or a sequence that
includes a later interaction fails here.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from persona import domain
from persona.features.build import feature_table_path
from persona.layout import DataLayout, parquet_glob
from tests.features.conftest import START

DAY = pd.Timedelta(days=1)


def _clean(root: Path, table: str) -> pd.DataFrame:
    import duckdb

    glob = parquet_glob(DataLayout(root).clean_table(table))
    with duckdb.connect() as con:
        return con.execute(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = false)").df()


@pytest.fixture(scope="module")
def events(crafted_bank: Path) -> pd.DataFrame:
    events = _clean(crafted_bank, "events")
    products = _clean(crafted_bank, "products")[["product_id", "category"]]
    events = events.merge(products, on="product_id", how="left")
    events["event_timestamp"] = pd.to_datetime(events["event_timestamp"], utc=True)
    return events


def test_behaviour_rows_match_brute_force_over_events_strictly_before(
    crafted_bank: Path, events: pd.DataFrame
) -> None:
    rows = pd.read_parquet(feature_table_path(crafted_bank, "customer_behaviour"))
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    assert len(rows) > 500
    assert (rows["event_timestamp"].dt.floor("D") == rows["event_timestamp"]).all()
    positive = events["event_type"].isin(domain.POSITIVE_FEEDBACK)
    for row in rows.itertuples(index=False):
        mine = events[events["customer_id"] == row.customer_id]
        before = mine[mine["event_timestamp"] < row.event_timestamp]
        for days in (7, 30, 90):
            window = before[before["event_timestamp"] >= row.event_timestamp - days * DAY]
            in_window = positive.loc[window.index]
            assert getattr(row, f"card_interactions_{days}d") == int(
                (in_window & (window["category"] == "card")).sum()
            ), (row.customer_id, row.event_timestamp, days)
            assert getattr(row, f"rib_events_{days}d") == int((window["app"] == "rib").sum())
        window30 = before[before["event_timestamp"] >= row.event_timestamp - 30 * DAY]
        assert row.clicks_30d == int((window30["event_type"] == "click").sum())
        credits = window30[(window30["event_type"] == "txn") & (window30["amount"] > 0)]
        assert row.txn_amount_in_30d == pytest.approx(float(credits["amount"].sum()))
        last_day = before["event_timestamp"].max().floor("D")
        assert row.days_since_last_event == (row.event_timestamp - last_day).days


def test_day_boundary_event_counts_only_after_its_day(crafted_bank: Path) -> None:
    rows = pd.read_parquet(feature_table_path(crafted_bank, "customer_behaviour"))
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    mine = rows[rows["customer_id"] == 1].set_index("event_timestamp")
    day10 = pd.Timestamp(START + timedelta(days=10))
    # 'edge-before' (day 9, 23:59:59) is in the day-10 snapshot; 'edge-after' (day 10,
    # 00:00:01) appears only from day 11, one click later.
    assert (
        mine.loc[day10 + DAY, "card_interactions_7d"] - mine.loc[day10, "card_interactions_7d"] >= 1
    )
    assert mine.loc[day10, "days_since_last_event"] == 1


def test_sequence_rows_hold_only_interactions_up_to_their_time(
    crafted_bank: Path, events: pd.DataFrame
) -> None:
    rows = pd.read_parquet(feature_table_path(crafted_bank, "customer_sequence"))
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    interactions = events[events["event_type"].isin(domain.PRODUCT_INTERACTIONS)].sort_values(
        ["event_timestamp", "event_id"]
    )
    assert len(rows) > 100
    for row in rows.itertuples(index=False):
        mine = interactions[
            (interactions["customer_id"] == row.customer_id)
            & (interactions["event_timestamp"] <= row.event_timestamp)
        ].tail(50)
        assert list(row.seq_product_ids) == mine["product_id"].tolist()
        assert list(row.seq_event_types) == mine["event_type"].tolist()
        assert max(row.seq_timestamps) <= row.event_timestamp.timestamp()
        assert row.seq_length == len(mine)


def test_holdings_rows_hold_products_open_at_their_time(crafted_bank: Path) -> None:
    rows = pd.read_parquet(feature_table_path(crafted_bank, "customer_holdings"))
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    customer1 = rows[rows["customer_id"] == 1].sort_values("event_timestamp")
    held = [list(v) for v in customer1["held_product_ids"]]
    # loan_a opened, then card_b opened, then loan_a closed on day 60.
    assert held == [["loan_a"], ["card_b", "loan_a"], ["card_b"]]
    assert customer1["held_loan"].tolist() == [1, 1, 0]


def test_product_stats_count_only_days_before(crafted_bank: Path, events: pd.DataFrame) -> None:
    rows = pd.read_parquet(feature_table_path(crafted_bank, "product_stats"))
    rows["event_timestamp"] = pd.to_datetime(rows["event_timestamp"], utc=True)
    for row in rows.sample(60, random_state=3).itertuples(index=False):
        window = events[
            (events["product_id"] == row.product_id)
            & (events["event_timestamp"] < row.event_timestamp)
            & (events["event_timestamp"] >= row.event_timestamp - 30 * DAY)
        ]
        assert row.product_clicks_30d == int((window["event_type"] == "click").sum())
        assert row.product_impressions_30d == int((window["event_type"] == "impression").sum())
