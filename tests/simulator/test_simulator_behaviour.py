"""Directional expectations: outcomes in the generated logs carry the hidden model's signal.

Uses ``behaviour_bank`` from conftest.py (4000 customers × 60 days). Comparisons are adjusted
for the product mix where the logging policy would otherwise confound them (popular products
are shown more often and more often on top).
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from persona.layout import parquet_glob
from persona.simulator import TRAITS, GroundTruth


@pytest.fixture(scope="module")
def impressions(behaviour_bank) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """One row per impression: clicked/dismissed flags, prior impressions of the same product
    to the same customer, and whether a home loan was held at the time."""
    raw = behaviour_bank.layout.raw
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW ev AS SELECT * FROM read_parquet('{parquet_glob(raw / 'events')}', "
        "hive_partitioning = false)"
    )
    con.execute(f"CREATE VIEW ho AS SELECT * FROM read_parquet('{parquet_glob(raw / 'holdings')}')")
    return con.execute(
        """
        WITH outcome AS (
            SELECT request_id, product_id,
                   bool_or(event_type = 'click') AS clicked,
                   bool_or(event_type = 'dismiss') AS dismissed
            FROM ev WHERE event_type IN ('click', 'dismiss') GROUP BY ALL
        ), home AS (
            SELECT customer_id, opened_at, coalesce(closed_at, TIMESTAMPTZ '9999-01-01') AS closed_at
            FROM ho WHERE product_id = 'loan_home'
        )
        SELECT i.customer_id, i.product_id, i.position, i.event_timestamp,
               coalesce(o.clicked, false) AS clicked,
               coalesce(o.dismissed, false) AS dismissed,
               row_number() OVER (PARTITION BY i.customer_id, i.product_id
                                  ORDER BY i.event_timestamp) - 1 AS prior,
               EXISTS (SELECT 1 FROM home h WHERE h.customer_id = i.customer_id
                       AND h.opened_at <= i.event_timestamp
                       AND h.closed_at > i.event_timestamp) AS home_loan
        FROM ev i LEFT JOIN outcome o USING (request_id, product_id)
        WHERE i.event_type = 'impression'
        """
    ).df()


def _mix_adjusted_rate(df: pd.DataFrame, group: str, outcome: str = "clicked") -> pd.Series:
    """Outcome rate per ``group`` value, standardised to the overall product mix."""
    weights = df["product_id"].value_counts(normalize=True)
    rates = df.groupby(["product_id", group])[outcome].mean().unstack()
    return rates.mul(weights, axis=0).sum() / rates.notna().mul(weights, axis=0).sum()


def test_enough_data(impressions: pd.DataFrame) -> None:
    assert len(impressions) > 30_000
    assert 0.01 < impressions["clicked"].mean() < 0.1


def test_top_position_is_clicked_more(impressions: pd.DataFrame) -> None:
    ctr = _mix_adjusted_rate(impressions, "position")
    assert ctr[1] > ctr[2] > ctr[3]
    assert ctr[1] > 1.4 * ctr[3]


def test_home_loan_holders_click_home_insurance_more(impressions: pd.DataFrame) -> None:
    home = impressions[impressions["product_id"] == "ins_home"]
    ctr = home.groupby("home_loan")["clicked"].agg(["mean", "size"])
    assert ctr.loc[True, "size"] >= 50
    assert ctr.loc[True, "mean"] > 2 * ctr.loc[False, "mean"]


def test_fatigue_lowers_clicks_and_raises_dismissals(
    behaviour_bank,  # type: ignore[no-untyped-def]
    impressions: pd.DataFrame,
) -> None:
    """Raw CTR falls with prior impressions partly by selection (who clicked already bought),
    so compare clicks with what the oracle expects *without* fatigue: the ratio must fall."""
    truth = GroundTruth.load(behaviour_bank.root)
    expected = truth.click_probability(
        impressions["customer_id"].to_numpy(),
        impressions["product_id"].to_numpy(),
        impressions["event_timestamp"].dt.tz_convert(None).to_numpy(),
        position=impressions["position"].to_numpy(),
    )
    df = impressions.assign(seen=impressions["prior"].clip(upper=2), expected=expected)
    sums = df.groupby("seen")[["clicked", "expected"]].sum()
    observed_over_expected = sums["clicked"] / sums["expected"]
    assert observed_over_expected[2] < 0.8 * observed_over_expected[0]
    ctr = _mix_adjusted_rate(df, "seen")
    assert ctr[0] > ctr[2]
    dismissals = _mix_adjusted_rate(df, "seen", "dismissed")
    assert dismissals[2] > dismissals[0]


def test_travel_lovers_click_travel_products(behaviour_bank, impressions: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    """Within each affluence tercile (affluence also raises travel, and card_travel likes it),
    customers with a high hidden travel trait click travel products far more."""
    truth = GroundTruth.load(behaviour_bank.root)
    traits = truth.traits_of(impressions["customer_id"].to_numpy())
    df = impressions.assign(
        travel=traits[:, TRAITS.index("travel")], affluence=traits[:, TRAITS.index("affluence")]
    )
    df = df[df["product_id"].isin(["ins_travel", "card_travel", "pay_fx_transfer"])].copy()
    df["tercile"] = pd.qcut(df["affluence"], 3, labels=False)
    df["high_travel"] = df.groupby("tercile")["travel"].transform(lambda t: t > t.median())
    ctr = df.groupby(["tercile", "high_travel"])["clicked"].mean().unstack()
    assert (ctr[True] / ctr[False]).mean() > 2.0
