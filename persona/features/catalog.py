"""The feature catalogue: every offline feature table, its columns and their types.

One place for each fact: the DuckDB builders write exactly these columns and the Feast
definitions in ``feature_repo/`` declare exactly these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from persona import domain

#: Trailing windows (days) of the behaviour aggregates.
WINDOWS_DAYS: Final[tuple[int, ...]] = (7, 30, 90)
#: Length of the behaviour sequence the transformer reads.
SEQUENCE_LENGTH: Final[int] = 50
#: Pseudo-counts of the product CTR prior: smoothed_ctr = (clicks + a) / (impressions + a + b).
CTR_PRIOR_CLICKS: Final[float] = 1.0
CTR_PRIOR_IMPRESSIONS: Final[float] = 20.0

FeatureType = Literal["int64", "float64", "string", "bool", "string_list", "int64_list"]


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    type: FeatureType
    description: str


@dataclass(frozen=True)
class FeatureTable:
    """An offline feature table: one Feast batch source and feature view."""

    name: str
    entity: Literal["customer", "product"]
    columns: tuple[FeatureColumn, ...]
    ttl_days: int
    description: str

    @property
    def join_key(self) -> str:
        return f"{self.entity}_id"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _behaviour_columns() -> tuple[FeatureColumn, ...]:
    cols: list[FeatureColumn] = []
    for category in domain.CATEGORIES:
        for w in WINDOWS_DAYS:
            cols.append(
                FeatureColumn(
                    f"{category}_interactions_{w}d",
                    "int64",
                    f"clicks, applies and purchases on {category} products in the {w} days before",
                )
            )
    for app in domain.APPS:
        for w in WINDOWS_DAYS:
            cols.append(
                FeatureColumn(
                    f"{app}_events_{w}d", "int64", f"events in the {app} app, last {w} days"
                )
            )
    cols += [
        FeatureColumn("logins_30d", "int64", "logins in any app, last 30 days"),
        FeatureColumn("impressions_30d", "int64", "offers shown, last 30 days"),
        FeatureColumn("clicks_30d", "int64", "offers clicked, last 30 days"),
        FeatureColumn("dismissals_30d", "int64", "offers dismissed, last 30 days"),
        FeatureColumn("active_days_30d", "int64", "days with any event, last 30 days"),
        FeatureColumn("txn_count_30d", "int64", "transactions, last 30 days (frequency)"),
        FeatureColumn("txn_count_90d", "int64", "transactions, last 90 days (frequency)"),
        FeatureColumn("txn_amount_in_30d", "float64", "sum of credits, last 30 days (monetary)"),
        FeatureColumn("txn_amount_out_30d", "float64", "sum of debits (positive), last 30 days"),
        FeatureColumn("txn_amount_in_90d", "float64", "sum of credits, last 90 days (monetary)"),
        FeatureColumn("txn_amount_out_90d", "float64", "sum of debits (positive), last 90 days"),
        FeatureColumn(
            "days_since_last_event", "int64", "recency: whole days since the last event (any app)"
        ),
        FeatureColumn(
            "days_since_last_interaction",
            "int64",
            "recency: whole days since the last click/apply/purchase (-1 if none in 90 days)",
        ),
    ]
    return tuple(cols)


CUSTOMER_PROFILE = FeatureTable(
    name="customer_profile",
    entity="customer",
    ttl_days=36_500,
    description="Who the customer is: type, demographics, risk profile, consents, KYC, apps.",
    columns=(
        FeatureColumn("customer_type", "string", "retail or corporate"),
        FeatureColumn("age_band", "string", "age band"),
        FeatureColumn("income_band", "string", "income band (ordinal)"),
        FeatureColumn(
            "income_band_index", "int64", "income band as 0 (low) .. 4 (high), -1 unknown"
        ),
        FeatureColumn("city_tier", "string", "metro, urban, town or rural"),
        FeatureColumn("occupation", "string", "occupation"),
        FeatureColumn("life_stage", "string", "life stage"),
        FeatureColumn("risk_profile", "string", "conservative .. aggressive"),
        FeatureColumn("kyc_level", "int64", "0 none .. 3 enhanced"),
        FeatureColumn("consent_marketing", "bool", "may receive marketing offers"),
        FeatureColumn("consent_data_sharing", "bool", "may have data shared"),
        FeatureColumn("apps_enrolled", "string_list", "apps the customer uses"),
    ),
)

CUSTOMER_BEHAVIOUR = FeatureTable(
    name="customer_behaviour",
    entity="customer",
    ttl_days=91,
    description=(
        "Daily snapshots of behaviour aggregates by category and app over 7/30/90 days, "
        "recency, frequency, monetary; a row at day D counts only events before D 00:00 UTC."
    ),
    columns=_behaviour_columns(),
)

CUSTOMER_HOLDINGS = FeatureTable(
    name="customer_holdings",
    entity="customer",
    ttl_days=36_500,
    description="Products held, as of each opening or closing (a row per change).",
    columns=(
        FeatureColumn("held_product_ids", "string_list", "products held, sorted"),
        FeatureColumn("n_holdings", "int64", "number of products held"),
        *(
            FeatureColumn(f"held_{c}", "int64", f"number of {c} products held")
            for c in domain.CATEGORIES
        ),
    ),
)

CUSTOMER_SEQUENCE = FeatureTable(
    name="customer_sequence",
    entity="customer",
    ttl_days=36_500,
    description=(
        f"The customer's last {SEQUENCE_LENGTH} product interactions (click, apply, purchase, "
        "dismiss), oldest first, as of each interaction; ages are derived at request time."
    ),
    columns=(
        FeatureColumn("seq_product_ids", "string_list", "product ids, oldest first"),
        FeatureColumn("seq_event_types", "string_list", "event types, aligned with product ids"),
        FeatureColumn("seq_timestamps", "int64_list", "event times, unix seconds, aligned"),
        FeatureColumn("seq_length", "int64", f"number of interactions kept (≤ {SEQUENCE_LENGTH})"),
    ),
)

CUSTOMER_SEGMENT = FeatureTable(
    name="customer_segment",
    entity="customer",
    ttl_days=36_500,
    description=(
        "Segment id and version. Placeholder rule (customer type × life stage) until the "
        "segmentation models publish their own version into this view."
    ),
    columns=(
        FeatureColumn("segment_id", "string", "segment the customer belongs to"),
        FeatureColumn("segment_version", "string", "which segmentation produced segment_id"),
    ),
)

PRODUCT_STATS = FeatureTable(
    name="product_stats",
    entity="product",
    ttl_days=91,
    description="Daily product popularity and CTR; a row at day D counts only events before D.",
    columns=(
        FeatureColumn("category", "string", "product category"),
        FeatureColumn("product_impressions_7d", "int64", "times shown, last 7 days"),
        FeatureColumn("product_clicks_7d", "int64", "clicks, last 7 days"),
        FeatureColumn("product_impressions_30d", "int64", "times shown, last 30 days"),
        FeatureColumn("product_clicks_30d", "int64", "clicks, last 30 days"),
        FeatureColumn("product_applies_30d", "int64", "applications, last 30 days"),
        FeatureColumn("product_purchases_30d", "int64", "purchases, last 30 days"),
        FeatureColumn("product_purchases_90d", "int64", "purchases, last 90 days"),
        FeatureColumn(
            "product_ctr_30d",
            "float64",
            f"smoothed CTR (clicks + {CTR_PRIOR_CLICKS:g}) / "
            f"(impressions + {CTR_PRIOR_CLICKS + CTR_PRIOR_IMPRESSIONS:g}), last 30 days",
        ),
        FeatureColumn(
            "product_popularity_rank_30d", "int64", "rank by purchases then clicks, 1 = top"
        ),
        FeatureColumn(
            "product_active_holders", "int64", "customers holding it at the snapshot time"
        ),
    ),
)

FEATURE_TABLES: Final[dict[str, FeatureTable]] = {
    t.name: t
    for t in (
        CUSTOMER_PROFILE,
        CUSTOMER_BEHAVIOUR,
        CUSTOMER_HOLDINGS,
        CUSTOMER_SEQUENCE,
        CUSTOMER_SEGMENT,
        PRODUCT_STATS,
    )
}

#: Request-time context the apps send; fed to the on-demand view.
REQUEST_FIELDS: Final[tuple[FeatureColumn, ...]] = (
    FeatureColumn("app", "string", "calling app: rib, cib, nli or imobile"),
    FeatureColumn("request_hour", "int64", "hour of day of the request, 0..23 (bank time)"),
    FeatureColumn("request_day_of_week", "int64", "0 = Monday .. 6 = Sunday"),
    FeatureColumn("device", "string", "web, ios or android"),
)
