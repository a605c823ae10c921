"""Canonical tables: the one definition every source writes and every consumer reads.

Each table is a folder of Parquet files under a data directory (``events`` partitioned by
``event_date=YYYY-MM-DD``). A :class:`TableSchema` states the Arrow type of every column and the
rules validation enforces (nullability, allowed values, ranges, keys, references), so schema
and validation cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa

from persona import domain

TIMESTAMP: Final = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its Arrow type and what validation demands of its values."""

    name: str
    type: pa.DataType
    nullable: bool = False
    allowed: tuple[str | int, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    #: Timestamps may not lie in the future (relative to validation time).
    not_in_future: bool = False
    #: For list columns: every element must be one of these.
    allowed_elements: tuple[str, ...] | None = None
    description: str = ""


@dataclass(frozen=True)
class ForeignKey:
    column: str
    table: str
    ref_column: str


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    #: Hive partition column for event logs, and the timestamp column its UTC date comes from.
    partition_by: str | None = None
    partition_source: str | None = None
    #: A source must provide every required table; optional ones may be absent.
    required: bool = True
    description: str = ""
    #: Row-level rules across columns, as (name, SQL predicate that must hold, message).
    row_rules: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    def column(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(f"table {self.name!r} has no column {name!r}")


CUSTOMERS = TableSchema(
    name="customers",
    description="One row per customer (retail person or corporate client).",
    primary_key=("customer_id",),
    columns=(
        ColumnSpec("customer_id", pa.int64(), min_value=1),
        ColumnSpec("created_at", TIMESTAMP, not_in_future=True),
        ColumnSpec("customer_type", pa.string(), allowed=domain.CUSTOMER_TYPES),
        ColumnSpec("age_band", pa.string(), nullable=True, allowed=domain.AGE_BANDS),
        ColumnSpec("income_band", pa.string(), nullable=True, allowed=domain.INCOME_BANDS),
        ColumnSpec("city_tier", pa.string(), nullable=True, allowed=domain.CITY_TIERS),
        ColumnSpec("occupation", pa.string(), nullable=True, allowed=domain.OCCUPATIONS),
        ColumnSpec("life_stage", pa.string(), nullable=True, allowed=domain.LIFE_STAGES),
        ColumnSpec("risk_profile", pa.string(), nullable=True, allowed=domain.RISK_PROFILES),
        ColumnSpec("kyc_level", pa.int8(), allowed=domain.KYC_LEVELS),
        ColumnSpec("consent_marketing", pa.bool_()),
        ColumnSpec("consent_data_sharing", pa.bool_()),
        ColumnSpec("apps_enrolled", pa.list_(pa.string()), allowed_elements=domain.APPS),
        ColumnSpec("relationship_start", TIMESTAMP, not_in_future=True),
    ),
    row_rules=(
        (
            "relationship_not_after_creation",
            "relationship_start <= created_at",
            "relationship_start is after created_at",
        ),
    ),
)

PRODUCTS = TableSchema(
    name="products",
    description="The catalogue: what may be offered, where, and to whom.",
    primary_key=("product_id",),
    columns=(
        ColumnSpec("product_id", pa.string()),
        ColumnSpec("category", pa.string(), allowed=domain.CATEGORIES),
        ColumnSpec("name", pa.string()),
        ColumnSpec("apps", pa.list_(pa.string()), allowed_elements=domain.APPS),
        ColumnSpec("customer_types", pa.list_(pa.string()), allowed_elements=domain.CUSTOMER_TYPES),
        ColumnSpec("min_age", pa.int16(), min_value=0, max_value=120),
        ColumnSpec("min_income_band", pa.string(), nullable=True, allowed=domain.INCOME_BANDS),
        ColumnSpec("min_kyc_level", pa.int8(), allowed=domain.KYC_LEVELS),
        ColumnSpec("risk_class", pa.int8(), allowed=domain.RISK_CLASSES),
        ColumnSpec("margin_weight", pa.float64(), min_value=0.0, max_value=10.0),
        ColumnSpec("is_marketing_offer", pa.bool_()),
    ),
)

HOLDINGS = TableSchema(
    name="holdings",
    description="Which customer holds (or held) which product, and when.",
    primary_key=("customer_id", "product_id", "opened_at"),
    required=False,
    foreign_keys=(
        ForeignKey("customer_id", "customers", "customer_id"),
        ForeignKey("product_id", "products", "product_id"),
    ),
    columns=(
        ColumnSpec("customer_id", pa.int64(), min_value=1),
        ColumnSpec("product_id", pa.string()),
        ColumnSpec("opened_at", TIMESTAMP, not_in_future=True),
        ColumnSpec("closed_at", TIMESTAMP, nullable=True, not_in_future=True),
    ),
    row_rules=(
        (
            "closed_after_opened",
            "closed_at IS NULL OR closed_at >= opened_at",
            "closed_at is before opened_at",
        ),
    ),
)

EVENTS = TableSchema(
    name="events",
    description=(
        "Everything customers did and were shown, across the four apps. Impressions carry the "
        "served request_id, position, the logging policy's propensity, model version and variant."
    ),
    primary_key=("event_id",),
    partition_by="event_date",
    partition_source="event_timestamp",
    foreign_keys=(
        ForeignKey("customer_id", "customers", "customer_id"),
        ForeignKey("product_id", "products", "product_id"),
    ),
    columns=(
        ColumnSpec("event_id", pa.string()),
        ColumnSpec("customer_id", pa.int64(), min_value=1),
        ColumnSpec("product_id", pa.string(), nullable=True),
        ColumnSpec("app", pa.string(), allowed=domain.APPS),
        ColumnSpec("event_type", pa.string(), allowed=domain.EVENT_TYPES),
        ColumnSpec("event_timestamp", TIMESTAMP, not_in_future=True),
        ColumnSpec("request_id", pa.string(), nullable=True),
        ColumnSpec("position", pa.int16(), nullable=True, min_value=1, max_value=100),
        ColumnSpec("amount", pa.float64(), nullable=True, min_value=-1e9, max_value=1e9),
        ColumnSpec("propensity", pa.float64(), nullable=True, min_value=0.0, max_value=1.0),
        ColumnSpec("model_version", pa.string(), nullable=True),
        ColumnSpec("variant", pa.string(), nullable=True),
        ColumnSpec("device", pa.string(), nullable=True, allowed=domain.DEVICES),
    ),
    row_rules=(
        (
            "product_event_has_product",
            "event_type IN ('login', 'txn') OR product_id IS NOT NULL",
            "impressions and product interactions need a product_id",
        ),
        (
            "impression_has_position",
            "event_type <> 'impression' OR position IS NOT NULL",
            "an impression needs the position it was shown at",
        ),
        (
            "propensity_positive_when_logged",
            "propensity IS NULL OR propensity > 0",
            "a logged propensity of 0 means the item could not have been shown",
        ),
    ),
)

#: Tables in dependency order (referenced tables first).
TABLES: Final[dict[str, TableSchema]] = {t.name: t for t in (CUSTOMERS, PRODUCTS, HOLDINGS, EVENTS)}
