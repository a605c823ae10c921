"""What the simulator writes: schemas, keys, references, time bounds, slates and outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from persona import domain
from persona.schemas import TABLES
from persona.simulator import (
    MODEL_VERSION,
    VARIANT,
    Catalogue,
    LoggingPolicy,
    SimulationConfig,
    simulate_bank,
)
from persona.validation import validate_dataset

# ``small_bank`` comes from conftest.py: 500 customers × 14 days in three chunks, seed 7.


def _end_of_window(bank) -> pd.Timestamp:  # type: ignore[no-untyped-def]
    end = datetime.combine(bank.config.end_date + timedelta(days=1), datetime.min.time(), UTC)
    return pd.Timestamp(end)


@pytest.fixture(scope="module")
def frames(small_bank) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    return {name: small_bank.table(name).to_pandas() for name in TABLES}


def test_every_file_has_the_canonical_schema(small_bank) -> None:  # type: ignore[no-untyped-def]
    for name, schema in TABLES.items():
        files = sorted(small_bank.layout.raw_table(name).rglob("*.parquet"))
        assert files, name
        expected = schema.arrow_schema()
        for path in files:
            assert pq.read_schema(path).remove_metadata() == expected, path


def test_summary_counts_match_the_files(small_bank, frames) -> None:  # type: ignore[no-untyped-def]
    assert small_bank.summary.rows == {name: len(frames[name]) for name in TABLES}
    assert small_bank.summary.rows["customers"] == 500
    assert small_bank.summary.peak_rss_bytes > 0 and small_bank.summary.wall_seconds > 0


def test_events_are_partitioned_by_their_date(small_bank) -> None:  # type: ignore[no-untyped-def]
    folders = sorted(small_bank.layout.raw_table("events").iterdir())
    assert len(folders) == small_bank.config.days
    for folder in folders:
        day = folder.name.removeprefix("event_date=")
        stamps = pq.read_table(folder).column("event_timestamp").to_pandas()
        assert (stamps.dt.strftime("%Y-%m-%d") == day).all(), folder


def test_simulated_bank_passes_the_validation_step(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Keys, references, types, allowed values, ranges, row rules, partitions: the project's one
    validation step refuses no simulated row (its own folder, so small_bank stays raw-only)."""
    simulate_bank(
        SimulationConfig(customers=500, days=14, seed=7, chunk_size=200), tmp_path, progress=False
    )
    report = validate_dataset(tmp_path, progress=False)
    refused = {n: t.rule_counts for n, t in report.tables.items() if t.rows_quarantined}
    assert report.passed, refused
    assert {n: t.rows_clean for n, t in report.tables.items()} == {
        n: t.rows_in for n, t in report.tables.items()
    }


def test_timestamps_stay_inside_their_bounds(small_bank, frames) -> None:  # type: ignore[no-untyped-def]
    end = _end_of_window(small_bank)
    start = end - pd.Timedelta(days=small_bank.config.days)
    events, holdings, customers = frames["events"], frames["holdings"], frames["customers"]
    assert events["event_timestamp"].max() < end
    assert events["event_timestamp"].min() >= start
    assert holdings["opened_at"].max() < end
    assert holdings["closed_at"].dropna().max() < end
    assert (
        holdings["closed_at"].dropna() >= holdings.loc[holdings["closed_at"].notna(), "opened_at"]
    ).all()
    assert (customers["created_at"] < start).all()
    assert (customers["relationship_start"] <= customers["created_at"]).all()
    hours = events.loc[events["event_type"] == "login", "event_timestamp"].dt.hour
    assert hours.max() <= 22
    assert hours.between(8, 21).mean() > 0.75  # daytime peaks


def test_customers_are_plausible(frames) -> None:  # type: ignore[no-untyped-def]
    customers = frames["customers"]
    corporate = customers["customer_type"] == "corporate"
    assert 0.02 < corporate.mean() < 0.2
    assert customers.loc[corporate, "apps_enrolled"].map(lambda apps: "cib" in apps).all()
    retail_apps = customers.loc[~corporate, "apps_enrolled"]
    assert retail_apps.map(lambda apps: len(apps) > 0 and "cib" not in apps).all()
    assert customers.loc[corporate, "age_band"].isna().all()
    assert customers.loc[~corporate, "age_band"].notna().all()
    students = customers[customers["occupation"] == "student"]
    assert set(students["age_band"]) <= {"18-24", "25-34"}
    assert students["income_band"].isin(["low", "lower_middle", "middle"]).mean() > 0.9
    assert (customers.loc[customers["occupation"] == "retired", "life_stage"] == "retired").all()


def test_initial_holdings_look_like_a_bank(small_bank, frames) -> None:  # type: ignore[no-untyped-def]
    holdings, customers = frames["holdings"], frames["customers"]
    start = _end_of_window(small_bank) - pd.Timedelta(days=small_bank.config.days)
    initial = holdings[holdings["opened_at"] < start]
    retail = set(customers.loc[customers["customer_type"] == "retail", "customer_id"])
    with_current = set(initial.loc[initial["product_id"] == "dep_current", "customer_id"])
    assert len(with_current & retail) / len(retail) > 0.8
    catalogue = {p.product_id: p for p in Catalogue().products}
    kind = customers.set_index("customer_id")["customer_type"]
    for row in holdings.itertuples():
        assert kind[row.customer_id] in catalogue[row.product_id].customer_types


def test_impressions_carry_the_logging_policy(frames) -> None:  # type: ignore[no-untyped-def]
    events = frames["events"]
    imp = events[events["event_type"] == "impression"]
    assert len(imp) > 0
    assert imp["propensity"].between(0.0, 1.0, inclusive="right").all()
    assert imp["position"].notna().all() and imp["request_id"].notna().all()
    assert (imp["model_version"] == MODEL_VERSION).all() and (imp["variant"] == VARIANT).all()
    assert events.loc[events["event_type"] != "impression", "propensity"].isna().all()
    no_product = events["event_type"].isin(["login", "txn"])
    assert events.loc[no_product, "product_id"].isna().all()
    assert events.loc[~no_product, "product_id"].notna().all()


def test_slates_are_whole_and_allowed(small_bank, frames) -> None:  # type: ignore[no-untyped-def]
    events, customers = frames["events"], frames["customers"]
    imp = events[events["event_type"] == "impression"]
    k = small_bank.config.slate_size
    for _, slate in imp.groupby("request_id"):
        assert sorted(slate["position"]) == list(range(1, len(slate) + 1))
        assert len(slate) <= k
        assert slate["customer_id"].nunique() == 1 and slate["app"].nunique() == 1
        assert slate["event_timestamp"].nunique() == 1 and slate["product_id"].is_unique
    # Most slates are full; a short slate only when fewer products were allowed.
    sizes = imp.groupby("request_id").size()
    assert (sizes == k).mean() > 0.9
    # Products are allowed in the app and offered to the customer type.
    catalogue = {p.product_id: p for p in Catalogue().products}
    kind = customers.set_index("customer_id")["customer_type"]
    for row in imp.itertuples():
        product = catalogue[row.product_id]
        assert row.app in product.apps and kind[row.customer_id] in product.customer_types


def test_propensities_are_the_sequential_softmax_over_allowed_products(small_bank, frames) -> None:  # type: ignore[no-untyped-def]
    """Recompute every logged propensity from the policy's definition: allowed = in the app,
    for the customer type, not held at that moment, marketing offers only with consent;
    propensity(slot j) = w_j / (sum of w over allowed products not placed above j)."""
    events, customers, holdings = frames["events"], frames["customers"], frames["holdings"]
    catalogue = Catalogue()
    weights = np.exp(LoggingPolicy.default(catalogue).scores)
    index = {pid: i for i, pid in enumerate(catalogue.product_ids)}
    people = customers.set_index("customer_id")
    held_rows = holdings.assign(
        closed=holdings["closed_at"].fillna(pd.Timestamp.max.tz_localize("UTC"))
    )
    by_customer = dict(tuple(held_rows.groupby("customer_id")))
    imp = events[events["event_type"] == "impression"].sort_values(["request_id", "position"])
    k = small_bank.config.slate_size
    checked = 0
    for _, slate in imp.groupby("request_id"):
        first = slate.iloc[0]
        person = people.loc[first.customer_id]
        app = domain.APPS.index(first.app)
        ctype = domain.CUSTOMER_TYPES.index(person.customer_type)
        allowed = catalogue.app_allowed[app] & catalogue.type_allowed[ctype]
        if not person.consent_marketing:
            allowed &= ~catalogue.is_marketing_offer
        own = by_customer.get(first.customer_id)
        if own is not None:
            at = first.event_timestamp
            active = own[(own["opened_at"] <= at) & (own["closed"] > at)]
            allowed[[index[p] for p in active["product_id"]]] = False
        remaining = weights[allowed].sum()
        for row in slate.itertuples():
            p = index[row.product_id]
            assert allowed[p], (row.request_id, row.product_id)
            assert row.propensity == pytest.approx(weights[p] / remaining, rel=1e-9)
            remaining -= weights[p]
            checked += 1
        # A short slate only when nothing else was allowed.
        assert len(slate) == min(allowed.sum(), k)
    assert checked == len(imp) > 0


def test_outcomes_follow_their_impression(frames) -> None:  # type: ignore[no-untyped-def]
    events = frames["events"]
    imp = events[events["event_type"] == "impression"].set_index(["request_id", "product_id"])
    seen: dict[str, set[tuple[str, str]]] = {}
    for kind in domain.PRODUCT_INTERACTIONS:
        out = events[events["event_type"] == kind]
        keys = list(zip(out["request_id"], out["product_id"], strict=True))
        seen[kind] = set(keys)
        assert set(keys) <= set(imp.index), kind
        shown_at = imp.loc[keys, "event_timestamp"].to_numpy()
        assert (out["event_timestamp"].to_numpy() > shown_at).all(), kind
        assert (out["position"].to_numpy() == imp.loc[keys, "position"].to_numpy()).all()
    assert seen["purchase"] <= seen["apply"] <= seen["click"]
    assert not (seen["dismiss"] & seen["click"])
    assert len(seen["click"]) > 0 and len(seen["dismiss"]) > 0


def test_purchases_open_holdings(frames) -> None:  # type: ignore[no-untyped-def]
    events, holdings = frames["events"], frames["holdings"]
    bought = events[events["event_type"] == "purchase"]
    opened = set(
        zip(holdings["customer_id"], holdings["product_id"], holdings["opened_at"], strict=True)
    )
    for row in bought.itertuples():
        assert (row.customer_id, row.product_id, row.event_timestamp) in opened


def test_devices_match_apps(frames) -> None:  # type: ignore[no-untyped-def]
    events = frames["events"]
    with_device = events[events["event_type"] != "txn"]
    assert with_device["device"].notna().all()
    mobile = with_device[with_device["app"] == "imobile"]
    assert mobile["device"].isin(["ios", "android"]).all()
    assert (with_device.loc[with_device["app"].isin(["rib", "cib"]), "device"] == "web").all()


def test_logins_use_enrolled_apps(frames) -> None:  # type: ignore[no-untyped-def]
    events, customers = frames["events"], frames["customers"]
    enrolled = customers.set_index("customer_id")["apps_enrolled"].map(set)
    logins = events[events["event_type"] == "login"]
    assert len(logins) > 0
    assert all(
        app in enrolled[c] for c, app in zip(logins["customer_id"], logins["app"], strict=True)
    )


def test_transactions_have_amounts_and_salaries_arrive_monthly(frames) -> None:  # type: ignore[no-untyped-def]
    events, customers = frames["events"], frames["customers"]
    txn = events[events["event_type"] == "txn"]
    assert txn["amount"].notna().all() and (txn["amount"] != 0).all()
    assert (events.loc[events["event_type"] != "txn", "amount"].isna()).all()
    assert (txn["amount"] < 0).mean() > 0.5  # mostly debits
    salaried = set(customers.loc[customers["occupation"] == "salaried", "customer_id"])
    credits = txn[(txn["amount"] > 0) & txn["customer_id"].isin(salaried)]
    early = credits[credits["event_timestamp"].dt.hour < 6]
    assert len(early) > 0
    # One salary a month: within a 14-day window nobody is paid twice in the early-morning batch.
    assert early.groupby("customer_id").size().max() == 1
    assert early["event_timestamp"].dt.day.isin([1, 15, 25, 28]).all()
