"""Example sets: leave-one-out, time splits, and no row ever sees its own future."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from persona.features.build import build_features
from persona.layout import DataLayout, parquet_glob
from persona.schemas import CUSTOMERS, EVENTS, HOLDINGS, PRODUCTS
from persona.validation import validate_dataset
from tests.features.conftest import VALIDATION_NOW, crafted_tables, write_raw
from training.examples import ExampleSet
from training.sets.impressions import build_impression_set
from training.sets.next_item import build_next_item_set


def _events(root: Path) -> pa.Table:
    glob = parquet_glob(DataLayout(root).clean_table("events"))
    with duckdb.connect() as con:  # private: the default connection is shared by the process
        return con.sql(
            f"""SELECT customer_id, product_id, event_type, CAST(event_timestamp AS TIMESTAMP) AS ts,
                       event_id
                FROM read_parquet('{glob}', hive_partitioning = false)
                WHERE event_type IN ('click', 'apply', 'purchase', 'dismiss')
                ORDER BY customer_id, ts, event_id"""
        ).to_arrow_table()


@pytest.mark.slow
def test_impression_rows_hold_exactly_the_interactions_before_the_request(
    tiny_bank: Path, tiny_impressions: ExampleSet
) -> None:
    index = tiny_impressions.vocabulary().index_of()
    events = _events(tiny_bank).to_pandas()
    by_customer = {c: g for c, g in events.groupby("customer_id")}
    rows = pa.concat_tables([tiny_impressions.read(s) for s in ("train", "valid", "test")])
    rng = np.random.default_rng(0)
    checked = 0
    for i in rng.choice(rows.num_rows, size=300, replace=False):
        row = rows.slice(int(i), 1).to_pylist()[0]
        past = by_customer.get(row["customer_id"])
        expected = [] if past is None else past[past["ts"] < row["event_timestamp"]]["product_id"]
        expected = [index[p] for p in list(expected)[-10:]]
        assert [h for h in row["history"] if h] == expected
        if row["target"]:
            assert row["target"] in row["shown"]
            assert row["shown_labels"][row["shown"].index(row["target"])] == 1
            assert row["target"] in row["candidates"]
        checked += 1
    assert checked == 300
    assert pc.sum(pc.greater(rows.column("target"), 0)).as_py() > 100


@pytest.mark.slow
def test_splits_follow_time(tiny_impressions: ExampleSet) -> None:
    times = {
        s: tiny_impressions.read(s).column("event_timestamp") for s in ("train", "valid", "test")
    }
    assert pc.max(times["train"]).as_py() < pc.min(times["valid"]).as_py()
    assert pc.max(times["valid"]).as_py() < pc.min(times["test"]).as_py()
    manifest = tiny_impressions.manifest()
    assert manifest.feature_service == "ranker_v1"
    assert sum(manifest.rows.values()) == sum(len(times[s]) for s in times)


def _truncate_clean_copy(source: Path, target: Path, cutoff: np.datetime64) -> None:
    """A copy of ``source`` as the bank knew it at ``cutoff``: later events and holdings gone."""
    layout, out = DataLayout(source), DataLayout(target)
    cut = pa.scalar(cutoff.astype("datetime64[us]").astype(object), pa.timestamp("us", "UTC"))
    tables = {}
    for name in ("customers", "products", "events", "holdings"):
        tables[name] = pq.read_table(layout.clean_table(name), partitioning=None)
    events = tables["events"].drop_columns(
        [c for c in tables["events"].column_names if c == "event_date"]
    )
    tables["events"] = events.filter(pc.less(events.column("event_timestamp"), cut))
    holdings = tables["holdings"].filter(pc.less(tables["holdings"].column("opened_at"), cut))
    closed = holdings.column("closed_at")
    still_open = pc.if_else(pc.greater_equal(closed, cut), pa.scalar(None, closed.type), closed)
    tables["holdings"] = holdings.set_column(
        holdings.column_names.index("closed_at"), "closed_at", still_open
    )
    write_raw_tables(target, tables)
    assert validate_dataset(target, progress=False).passed
    build_features(target, progress=False)
    assert out.clean.exists()


def write_raw_tables(root: Path, tables: dict[str, pa.Table]) -> None:
    from persona.layout import write_table

    schemas = {"customers": CUSTOMERS, "products": PRODUCTS, "events": EVENTS, "holdings": HOLDINGS}
    for name, table in tables.items():
        write_table(DataLayout(root).raw_table(name), table, schemas[name])


@pytest.mark.slow
def test_removing_the_future_changes_no_earlier_row(tiny_bank: Path, tmp_path: Path) -> None:
    """The leakage test: rebuild with everything from the test period on deleted; every train
    and validation row (history, targets, features, segment, candidates) is unchanged."""
    test_from = np.datetime64("2026-10-25")
    full = ExampleSet(tmp_path / "full")
    build_impression_set(
        tiny_bank, full.root, dataset="t", max_len=10, valid_days=5, test_from=test_from
    )
    past_dir = tmp_path / "past_data"
    _truncate_clean_copy(tiny_bank, past_dir, test_from.astype("datetime64[us]"))
    past = ExampleSet(tmp_path / "past")
    build_impression_set(
        past_dir, past.root, dataset="t", max_len=10, valid_days=5, test_from=test_from
    )

    assert past.manifest().rows["test"] == 0 and full.manifest().rows["test"] > 0
    assert past.manifest().dense_mean == full.manifest().dense_mean
    for split in ("train", "valid"):
        a, b = full.read(split), past.read(split)
        assert a.num_rows == b.num_rows > 0
        for column in a.column_names:
            assert a.column(column).equals(b.column(column)), (split, column)
    shutil.rmtree(past_dir)


@pytest.mark.slow
def test_next_item_set_is_leave_one_out_with_untouched_negatives(
    crafted_bank: Path, tmp_path: Path
) -> None:
    example_set = ExampleSet(tmp_path / "set")
    manifest = build_next_item_set(
        crafted_bank,
        example_set.root,
        dataset="crafted",
        max_len=20,
        negatives=5,
        seed=3,
        progress=False,
    )
    assert manifest.feature_service == "ranker_v1"
    index = example_set.vocabulary().index_of()
    events = _events(crafted_bank).to_pandas()
    positives = events[events["event_type"].isin(["click", "apply", "purchase"])]
    test, valid = example_set.read("test").to_pandas(), example_set.read("valid").to_pandas()
    train = example_set.read("train").to_pandas()
    assert len(test) == len(valid) > 0
    for row in test.itertuples():
        mine = positives[positives["customer_id"] == row.customer_id]
        assert row.target == index[mine["product_id"].iloc[-1]]
        assert row.event_timestamp == mine["ts"].iloc[-1]
        touched = {index[p] for p in events[events["customer_id"] == row.customer_id]["product_id"]}
        negatives = list(row.sampled_negatives)
        untouched = manifest.n_items - len(touched)
        assert len(negatives) == len(set(negatives)) == min(5, untouched)
        assert not set(negatives) & touched
    for row in valid.itertuples():
        mine = positives[positives["customer_id"] == row.customer_id]
        assert row.target == index[mine["product_id"].iloc[-2]]
        later = train[(train["customer_id"] == row.customer_id)]
        assert (later["event_timestamp"] < row.event_timestamp).all()


@pytest.mark.slow
def test_renaming_customer_ids_changes_nothing_but_the_ids(
    crafted_bank: Path, tmp_path: Path
) -> None:
    tables = crafted_tables()
    rename = {
        c: 9_000 + (13 - c) * 7 for c in tables["customers"].column("customer_id").to_pylist()
    }

    def renamed(table: pa.Table) -> pa.Table:
        ids = [rename[c] for c in table.column("customer_id").to_pylist()]
        return table.set_column(
            table.column_names.index("customer_id"), "customer_id", pa.array(ids, pa.int64())
        )

    root = tmp_path / "renamed"
    write_raw(
        root, {k: renamed(v) if "customer_id" in v.column_names else v for k, v in tables.items()}
    )
    assert validate_dataset(root, now=VALIDATION_NOW, progress=False).passed
    build_features(root, progress=False)
    a, b = ExampleSet(tmp_path / "a"), ExampleSet(tmp_path / "b")
    build_next_item_set(crafted_bank, a.root, dataset="x", negatives=5, seed=3, progress=False)
    build_next_item_set(root, b.root, dataset="x", negatives=5, seed=3, progress=False)
    for split in ("train", "valid", "test"):
        left = a.read(split).to_pandas()
        left["customer_id"] = left["customer_id"].map(rename)
        left = (
            left.drop(columns=["sampled_negatives"])
            .sort_values(["customer_id", "event_timestamp"])
            .reset_index(drop=True)
        )
        right = b.read(split).to_pandas().drop(columns=["sampled_negatives"])
        right = right.sort_values(["customer_id", "event_timestamp"]).reset_index(drop=True)
        assert len(left) == len(right) > 0
        assert (left["customer_id"] == right["customer_id"]).all()
        for column in left.columns:
            ours, theirs = left[column].tolist(), right[column].tolist()
            if column == "context_dense":  # standardised: summation order may differ
                np.testing.assert_allclose(np.stack(ours), np.stack(theirs), rtol=1e-4, atol=1e-5)
            else:
                assert [_plain(v) for v in ours] == [_plain(v) for v in theirs], (split, column)


def _plain(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else value


@pytest.mark.slow
def test_holdout_set_holds_out_each_test_customers_last_acquired_product(
    tiny_bank: Path, tmp_path: Path
) -> None:
    from training.sets.holdout import build_holdout_set

    example_set = ExampleSet(tmp_path / "holdout")
    build_holdout_set(
        tiny_bank, example_set.root, dataset="tiny", valid_share=0.2, test_share=0.2, seed=2
    )
    index = example_set.vocabulary().index_of()
    holdings = pq.read_table(DataLayout(tiny_bank).clean_table("holdings")).to_pandas()
    splits = {s: example_set.read(s).to_pandas() for s in ("train", "valid", "test")}
    customers = {s: set(frame["customer_id"]) for s, frame in splits.items()}
    assert not customers["train"] & customers["test"] and not customers["valid"] & customers["test"]
    assert len(splits["test"]) == len(customers["test"]) > 50
    assert len(splits["train"]) > len(customers["train"])  # earlier acquisitions too
    for row in splits["test"].itertuples():
        mine = holdings[holdings["customer_id"] == row.customer_id]
        latest = mine[mine["opened_at"] == mine["opened_at"].max()]
        assert row.target in {index[p] for p in latest["product_id"]}
        rest = sorted(index[p] for p in mine["product_id"])
        rest.remove(row.target)
        assert sorted(h for h in row.history if h) == rest
