"""Persona's Feast definitions, top to bottom in dependency order.

project → entities → batch sources → push source → feature views → on-demand views →
feature services. Column lists come from :mod:`persona.features.catalog`, the one place that
also drives the DuckDB builders, so definitions and offline tables cannot drift apart.

Everything is built by :func:`build_feature_repo` from the folder of offline tables, so the
same definitions apply to a laptop data dir, a test's temp dir or production storage;
``repo.py`` binds them to the configured data dir for the ``feast`` CLI.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.data_format import ParquetFormat
from feast.on_demand_feature_view import OnDemandFeatureView, on_demand_feature_view
from feast.types import Array, Bool, FeastType, Float64, Int64, String

from persona import domain
from persona.features import catalog

#: Bump when a feature service's contents change; models record the name they trained on.
RANKER_SERVICE = "ranker_v1"
CUSTOMER_CONTEXT_SERVICE = "customer_context_v1"
INTERACTION_PUSH_SOURCE = "interaction_push"

Udf = Callable[[dict[str, list[Any]]], dict[str, list[Any]]]

_FEAST_TYPES: dict[str, FeastType] = {
    "int64": Int64,
    "float64": Float64,
    "string": String,
    "bool": Bool,
    "string_list": Array(String),
    "int64_list": Array(Int64),
}


@dataclass
class FeatureRepo:
    """Every Feast object of the repo, by kind."""

    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, FileSource] = field(default_factory=dict)
    push_sources: dict[str, PushSource] = field(default_factory=dict)
    request_sources: dict[str, RequestSource] = field(default_factory=dict)
    views: dict[str, FeatureView] = field(default_factory=dict)
    on_demand_views: dict[str, OnDemandFeatureView] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)

    def objects(self) -> list[Any]:
        """All objects, in the order ``FeatureStore.apply`` should see them."""
        return [
            *self.entities.values(),
            *self.sources.values(),
            *self.push_sources.values(),
            *self.request_sources.values(),
            *self.views.values(),
            *self.on_demand_views.values(),
            *self.services.values(),
        ]


def _fields(columns: tuple[catalog.FeatureColumn, ...]) -> list[Field]:
    return [
        Field(name=c.name, dtype=_FEAST_TYPES[c.type], description=c.description) for c in columns
    ]


def request_context_features(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Request-time context (app, hour, weekday, device) as model-ready numbers.

    Python mode (lists in, lists out): on the online path it costs microseconds, where a
    pandas transform costs milliseconds per call.
    """
    import math

    from persona.domain import APPS

    angle = [2.0 * math.pi * float(h) / 24.0 for h in inputs["request_hour"]]
    out: dict[str, list[Any]] = {
        "hour_sin": [math.sin(a) for a in angle],
        "hour_cos": [math.cos(a) for a in angle],
        "is_weekend": [int(d) >= 5 for d in inputs["request_day_of_week"]],
        "is_mobile_device": [d in ("ios", "android") for d in inputs["device"]],
    }
    for app in APPS:
        out[f"app_is_{app}"] = [a == app for a in inputs["app"]]
    return out


def behaviour_ratios(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Derived ratios of the behaviour aggregates: own CTR and the category mix of interest.

    Customers without a behaviour snapshot arrive as None and count as zero.
    """
    from persona.domain import CATEGORIES

    def counts(column: str) -> list[float]:
        return [float(v) if v is not None else 0.0 for v in inputs[column]]

    clicks, impressions = counts("clicks_30d"), counts("impressions_30d")
    # One pseudo-impression keeps the ratio defined for customers never shown an offer.
    out: dict[str, list[Any]] = {
        "customer_ctr_30d": [c / (i + 1.0) for c, i in zip(clicks, impressions, strict=True)]
    }
    per_category = {c: counts(f"{c}_interactions_90d") for c in CATEGORIES}
    totals = [sum(values) for values in zip(*per_category.values(), strict=True)]
    for c, interactions in per_category.items():
        out[f"{c}_share_90d"] = [
            x / t if t > 0 else 0.0 for x, t in zip(interactions, totals, strict=True)
        ]
    return out


def _fresh(udf: Udf) -> Udf:
    """A new function object for an on-demand view's udf.

    Feast's decorator rewrites the udf's ``__module__`` to ``__main__``; decorating the shared
    module-level function a second time (a second build in one process) then fails to find its
    source. A copy per build keeps the module function untouched.
    """
    copy = types.FunctionType(udf.__code__, udf.__globals__, udf.__name__, udf.__defaults__)
    copy.__doc__ = udf.__doc__
    return copy


def build_feature_repo(features_dir: Path) -> FeatureRepo:
    """Build every Feast object over the offline tables in ``features_dir``."""
    repo = FeatureRepo()

    # Entities
    repo.entities["customer"] = Entity(
        name="customer",
        join_keys=["customer_id"],
        value_type=ValueType.INT64,
        description="A bank customer (retail person or corporate client).",
    )
    repo.entities["product"] = Entity(
        name="product",
        join_keys=["product_id"],
        value_type=ValueType.STRING,
        description="A product or offer of the catalogue.",
    )

    # Batch sources: DuckDB-built Parquet, one file per feature table.
    for table in catalog.FEATURE_TABLES.values():
        repo.sources[table.name] = FileSource(
            name=f"{table.name}_source",
            path=str(features_dir / table.name / "data.parquet"),
            file_format=ParquetFormat(),
            timestamp_field="event_timestamp",
            description=table.description,
        )

    # Push source: /v1/events pushes each customer's new sequence so the next request sees it.
    repo.push_sources[INTERACTION_PUSH_SOURCE] = PushSource(
        name=INTERACTION_PUSH_SOURCE,
        batch_source=repo.sources["customer_sequence"],
        description="Live product interactions from the events endpoint.",
    )

    # Request source: what the apps send with each recommendation request.
    repo.request_sources["request_context"] = RequestSource(
        name="request_context",
        schema=_fields(catalog.REQUEST_FIELDS),
        description="Request-time context sent by the calling app.",
    )

    # Feature views
    for table in catalog.FEATURE_TABLES.values():
        source: FileSource | PushSource = repo.sources[table.name]
        if table.name == "customer_sequence":
            source = repo.push_sources[INTERACTION_PUSH_SOURCE]
        repo.views[table.name] = FeatureView(
            name=table.name,
            entities=[repo.entities[table.entity]],
            ttl=timedelta(days=table.ttl_days),
            schema=_fields(table.columns),
            source=source,
            online=True,
            description=table.description,
            tags={"team": "persona", "entity": table.entity},
        )

    # On-demand views
    repo.on_demand_views["request_context_features"] = on_demand_feature_view(
        name="request_context_features",
        sources=[repo.request_sources["request_context"]],
        schema=[
            Field(name="hour_sin", dtype=Float64),
            Field(name="hour_cos", dtype=Float64),
            Field(name="is_weekend", dtype=Bool),
            Field(name="is_mobile_device", dtype=Bool),
            *(Field(name=f"app_is_{a}", dtype=Bool) for a in domain.APPS),
        ],
        mode="python",
        description="Request context (app, hour, weekday, device) encoded for the ranker.",
    )(_fresh(request_context_features))
    repo.on_demand_views["behaviour_ratios"] = on_demand_feature_view(
        name="behaviour_ratios",
        sources=[repo.views["customer_behaviour"]],
        schema=[
            Field(name="customer_ctr_30d", dtype=Float64),
            *(Field(name=f"{c}_share_90d", dtype=Float64) for c in domain.CATEGORIES),
        ],
        mode="python",
        description="The customer's own CTR and category mix, derived from behaviour.",
    )(_fresh(behaviour_ratios))

    # Feature services, versioned: a model records the one it trained on.
    customer_views = [
        repo.views[name]
        for name in (
            "customer_profile",
            "customer_behaviour",
            "customer_holdings",
            "customer_sequence",
            "customer_segment",
        )
    ]
    repo.services[CUSTOMER_CONTEXT_SERVICE] = FeatureService(
        name=CUSTOMER_CONTEXT_SERVICE,
        features=[*customer_views, repo.on_demand_views["behaviour_ratios"]],
        description="Everything about one customer: one online round trip at request time.",
        tags={"version": "1"},
    )
    repo.services[RANKER_SERVICE] = FeatureService(
        name=RANKER_SERVICE,
        features=[
            *customer_views,
            repo.views["product_stats"],
            repo.on_demand_views["behaviour_ratios"],
            repo.on_demand_views["request_context_features"],
        ],
        description="Ranker features: customer, product and request context (customer × product rows).",
        tags={"version": "1"},
    )
    return repo
