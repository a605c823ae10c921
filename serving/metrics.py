"""Prometheus metrics of the serving graph (prometheus_client, the reference client).

Recorded by the ingress from what every stage reports back with its answer (stage timings,
cache hits, fallbacks), so one scrape of ``/metrics`` shows the whole pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class ServingMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    stage_latency: Histogram
    fallbacks: Counter
    cache: Counter
    scores: Histogram
    items: Histogram
    events: Counter
    removed: Counter

    @classmethod
    def create(cls) -> ServingMetrics:
        r = CollectorRegistry()
        return cls(
            registry=r,
            requests=Counter(
                "persona_requests",
                "HTTP requests by endpoint, app and status",
                ["endpoint", "app", "status"],
                registry=r,
            ),
            latency=Histogram(
                "persona_request_seconds",
                "End-to-end latency of recommendations",
                ["app"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            stage_latency=Histogram(
                "persona_stage_seconds",
                "Time inside each stage",
                ["stage", "app"],
                buckets=_LATENCY_BUCKETS,
                registry=r,
            ),
            fallbacks=Counter(
                "persona_fallbacks", "Degraded answers by reason", ["app", "reason"], registry=r
            ),
            cache=Counter("persona_feature_cache", "Feature cache lookups", ["result"], registry=r),
            scores=Histogram(
                "persona_served_score",
                "Scores of served items",
                ["app", "variant"],
                buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0),
                registry=r,
            ),
            items=Histogram(
                "persona_items_served",
                "Items per response",
                ["app"],
                buckets=(0, 1, 2, 3, 5, 10, 20),
                registry=r,
            ),
            events=Counter(
                "persona_events",
                "Events accepted by app and type",
                ["app", "event_type"],
                registry=r,
            ),
            removed=Counter(
                "persona_rule_removals", "Candidates removed by rule", ["app", "rule"], registry=r
            ),
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
