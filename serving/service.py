"""What the HTTP ingress does, whatever the placement: API keys, experiment assignment, the stage
chain under its time budget, the fallback, metrics, events and audit reads. Routes live in
``serving.http_api``; stages are reached through ``serving.placement.Stages``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

from persona.pseudonym import configured_pseudonymiser
from serving.api import (
    EventAck,
    EventBatch,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
    new_request_id,
)
from serving.auth import KeyRing
from serving.catalogue import Catalogue
from serving.config import load_apps, load_experiments
from serving.customer import CustomerView
from serving.engines import Decision, redis_client
from serving.experiments import Assignment, ExperimentRouter
from serving.metrics import ServingMetrics
from serving.placement import Stages
from serving.priors import Priors
from serving.ranking import SERVED_FEATURE_SERVICE, RequestContext, rank_by_priors
from serving.rate_limit import RateLimiter
from serving.retrieval import Retriever
from serving.rules import ContactState, RulesProvider
from serving.settings import ServingArgs

log = logging.getLogger(__name__)
#: One line per answered recommendation; customers appear only as pseudonyms.
access_log = logging.getLogger("persona.access")
#: The rate limiter's Redis round trip; beyond it the replica's local bucket decides.
RATE_LIMIT_TIMEOUT_S: Final = 0.02


#: First-generation collection threshold in serving processes (CPython's default is 700).
GC_THRESHOLD: Final = 50_000


def tune_collector(freeze: bool) -> None:
    """A request allocates thousands of short-lived objects: with the default threshold the
    collector runs several times per request, and its pauses land in the tail latency. Collect
    less often; ``freeze`` also moves what start-up built (Feast's registry, the model) out of
    the collector's way, as Serve's throughput-optimised mode does for its replicas."""
    if freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


class ApiError(Exception):
    """A refusal the caller can act on: the HTTP status, the reason and any headers (e.g.
    ``Retry-After``)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.headers = headers or {}


class RecommendationService:
    def __init__(self, args: ServingArgs, stages: Stages):
        self.args = args
        self.stages = stages
        apps = load_apps(args.apps_file)
        self.apps = apps.apps
        self.keys = KeyRing(apps)
        self.router = ExperimentRouter(
            load_experiments(args.experiments_file, apps),
            {app: config.experiment for app, config in apps.apps.items()},
        )
        self.catalogue = Catalogue.from_data_dir(args.data_dir)
        # The fallback when the chain fails: priors + the same rules, for an unknown customer.
        self.fallback_retriever = Retriever(self.catalogue, Priors.load(args.serving_dir))
        self.fallback_rules = RulesProvider(args.rules_file, self.catalogue)
        self.metrics = ServingMetrics.create()
        self.rate_limiter = RateLimiter(
            {
                (app, endpoint): getattr(config.rate_limit, endpoint)
                for app, config in apps.apps.items()
                for endpoint in ("recommendations", "events")
            },
            redis_client(args, timeout_s=RATE_LIMIT_TIMEOUT_S),
        )
        self.pseudonym = configured_pseudonymiser(args.data_dir)

    # -- auth -------------------------------------------------------------------------------

    def authorise(self, api_key: str | None, app: str, endpoint: str, cost: int = 1) -> None:
        """The key must be the app's own, and the app within its rate limit on ``endpoint``."""
        self.authenticate(api_key, app, endpoint)
        verdict = self.rate_limiter.take(app, endpoint, cost)
        if not verdict.allowed:
            self.metrics.requests.labels(endpoint, app, "429").inc()
            limit = self.apps[app].rate_limit
            bucket = getattr(limit, endpoint)
            raise ApiError(
                429,
                f"rate limit of app {app!r} on {endpoint}: {bucket.per_second:g}/s, burst "
                f"{bucket.burst}; retry in {verdict.retry_after_s:.3f} s",
                headers={"Retry-After": verdict.retry_after_header},
            )

    def authenticate(self, api_key: str | None, app: str, endpoint: str) -> None:
        if not api_key:
            self.metrics.requests.labels(endpoint, app, "401").inc()
            raise ApiError(401, "missing X-API-Key header")
        owner = self.keys.app_for(api_key)
        if owner is None:
            self.metrics.requests.labels(endpoint, app, "401").inc()
            raise ApiError(401, "invalid API key")
        if owner != app:
            self.metrics.requests.labels(endpoint, app, "403").inc()
            raise ApiError(403, f"this API key belongs to app {owner!r}, not {app!r}")

    # -- recommendations ----------------------------------------------------------------------

    async def recommend(
        self, body: RecommendationRequest, api_key: str | None
    ) -> RecommendationResponse:
        started = time.perf_counter()
        self.authorise(api_key, body.app, "recommendations")
        app_config = self.apps.get(body.app)
        if app_config is None:
            raise ApiError(404, f"app {body.app!r} is not configured on this deployment")
        k = body.k or app_config.default_k
        if k > app_config.max_k:
            self.metrics.requests.labels("recommendations", body.app, "422").inc()
            raise ApiError(
                422, f"k: at most {app_config.max_k} items in app {body.app!r}, asked {k}"
            )
        when = body.context.timestamp or datetime.now(UTC)
        context = RequestContext(body.app, body.context.device, when.hour, when.weekday())
        assignment = self.router.assign(body.app, body.customer_id)
        request_id = new_request_id()
        record = {
            "request_id": request_id,
            "app": body.app,
            "customer_id": body.customer_id,
            "experiment": assignment.experiment,
            "variant": assignment.variant.name,
            "variant_probability": assignment.probability,
            "served_at": when.isoformat(),
            "explain": body.explain,
        }
        chain = self._chain(body, k, context, assignment, record)
        try:
            decision = await asyncio.wait_for(chain, self.args.budgets.total_ms / 1e3)
        except TimeoutError:
            decision = self._fallback(body.customer_id, body.app, k, "pipeline_timeout")
        except Exception as error:  # noqa: BLE001 — any stage failure must still answer
            # The type only: a message could carry a customer's feature values.
            log.error("pipeline failed for request %s: %s", request_id, type(error).__name__)
            decision = self._fallback(
                body.customer_id, body.app, k, f"pipeline_error: {type(error).__name__}"
            )
        return self._respond(body, request_id, assignment, decision, started)

    async def _chain(
        self,
        body: RecommendationRequest,
        k: int,
        context: RequestContext,
        assignment: Assignment,
        record: dict[str, Any],
    ) -> Decision:
        s = self.stages
        fetch = await s.fetch(body.customer_id)
        retrieved = await s.retrieve(fetch, body.app)
        ranked = await s.rank(fetch, retrieved, context, assignment.variant)
        return await s.decide(fetch, ranked, body.app, k, assignment.variant, record)

    def _fallback(self, customer_id: int, app: str, k: int, reason: str) -> Decision:
        """Priors and the same rules for an unknown customer: no marketing, no held-product
        knowledge, conservative suitability. Never fails."""
        started = time.perf_counter()
        customer = CustomerView.unknown(customer_id)
        retrieved = self.fallback_retriever.retrieve(customer, app, self.apps[app])
        ranked = rank_by_priors(retrieved.candidates, f"fallback_{retrieved.source}")
        engine = self.fallback_rules.engine()
        outcome = engine.apply(customer, ranked, app, self.apps[app], ContactState.unavailable(), k)
        return Decision(
            items=outcome.kept,
            removed=len(outcome.removed),
            removed_by_rule={},
            rules_version=outcome.rules_version,
            model_version=f"fallback_{retrieved.source}",
            timings={"fallback": (time.perf_counter() - started) * 1e3},
            degraded=[reason],
            cache_hit=False,
        )

    def _respond(
        self,
        body: RecommendationRequest,
        request_id: str,
        assignment: Assignment,
        decision: Decision,
        started: float,
    ) -> RecommendationResponse:
        latency_ms = (time.perf_counter() - started) * 1e3
        m, app = self.metrics, body.app
        m.requests.labels("recommendations", app, "200").inc()
        m.latency.labels(app).observe(latency_ms / 1e3)
        for stage, ms in decision.timings.items():
            m.stage_latency.labels(stage, app).observe(ms / 1e3)
        for reason in decision.degraded:
            m.fallbacks.labels(app, reason.split(":")[0]).inc()
        for rule, n in decision.removed_by_rule.items():
            m.removed.labels(app, rule).inc(n)
        m.cache.labels("hit" if decision.cache_hit else "miss").inc()
        m.items.labels(app).observe(len(decision.items))
        for c in decision.items:
            m.scores.labels(app, assignment.variant.name).observe(c.score)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "recommendation %s app=%s customer=%s variant=%s items=%d degraded=%s "
                "latency_ms=%.1f",
                request_id,
                app,
                self.pseudonym(body.customer_id),
                assignment.variant.name,
                len(decision.items),
                ",".join(r.split(":")[0] for r in decision.degraded) or "no",
                latency_ms,
            )
        explain = None
        if body.explain:
            explain = {**decision.explain, "timings_ms": decision.timings}
        return RecommendationResponse(
            request_id=request_id,
            items=[
                RecommendedItem(
                    product_id=c.product_id,
                    score=round(c.score, 6),
                    rank=i + 1,
                    reasons=list(c.reasons),
                    propensity=c.propensity,
                )
                for i, c in enumerate(decision.items)
            ],
            model_version=decision.model_version,
            variant=assignment.variant.name,
            experiment=assignment.experiment,
            variant_probability=round(assignment.probability, 6),
            feature_service=SERVED_FEATURE_SERVICE,
            rules_version=decision.rules_version,
            degraded=bool(decision.degraded),
            degraded_reasons=decision.degraded,
            latency_ms=round(latency_ms, 3),
            explain=explain,
        )

    # -- events -----------------------------------------------------------------------------

    async def ingest(self, body: EventBatch, api_key: str | None) -> EventAck:
        apps = {e.app for e in body.events}
        if len(apps) != 1:
            raise ApiError(422, f"events: one app per batch, got {sorted(apps)}")
        app = apps.pop()
        self.authorise(api_key, app, "events", cost=len(body.events))
        unknown = sorted(
            {
                e.product_id
                for e in body.events
                if e.product_id and e.product_id not in self.catalogue
            }
        )
        if unknown:
            self.metrics.requests.labels("events", app, "422").inc()
            raise ApiError(422, f"product_id: unknown product(s) {unknown[:5]}")
        try:
            ack: EventAck = await self.stages.ingest(body.events)
        except ValueError as error:  # a record the write-ahead log refuses: nothing was written
            self.metrics.requests.labels("events", app, "422").inc()
            raise ApiError(422, f"events: {error}") from error
        self.metrics.requests.labels("events", app, "200").inc()
        for e in body.events:
            self.metrics.events.labels(app, e.event_type).inc()
        return ack

    # -- per-app reads ------------------------------------------------------------------------

    def app_config(self, app: str, api_key: str | None) -> dict[str, Any]:
        """What ``app`` is configured to get (never the key hashes); only with its own key."""
        self.authenticate(api_key, app, "config")
        config = self.apps[app]
        experiment = None
        if config.experiment:
            defined = self.router.experiments.experiments[config.experiment]
            experiment = {"name": config.experiment, **defined.model_dump(mode="json")}
            experiment.pop("salt")  # knowing it would let a caller predict assignments
        return {
            "app": app,
            "allowed_categories": list(config.allowed_categories),
            "default_k": config.default_k,
            "max_k": config.max_k,
            "rate_limit": config.rate_limit.model_dump(mode="json"),
            "experiment": experiment,
        }

    def app_rules(self, app: str, api_key: str | None) -> dict[str, Any]:
        """The business rules applied to ``app``'s answers now; only with its own key."""
        self.authenticate(api_key, app, "rules")
        rules = self.fallback_rules.engine().rules
        return {
            "app": app,
            "rules_version": rules.version,
            "allowed_categories": list(self.apps[app].allowed_categories),
            "rules": rules.model_dump(mode="json"),
        }

    # -- operations ---------------------------------------------------------------------------

    async def audit(self, request_id: str, api_key: str | None) -> dict[str, Any]:
        """The decision record of one of the calling app's requests."""
        owner = self.keys.app_for(api_key)
        if owner is None:
            raise ApiError(401, "missing or invalid X-API-Key header")
        record = await self.stages.audit_record(request_id)
        if record is None or record.get("app") != owner:
            raise ApiError(404, f"no decision {request_id!r} for app {owner!r}")
        return record

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when every stage answers. Apps whose model is missing are listed: they are
        served from priors (``degraded``) until a version is registered and reloaded."""
        try:
            status = await asyncio.wait_for(self.stages.ranking_status(), 5.0)
            rules_version = await asyncio.wait_for(self.stages.rules_version(), 5.0)
            for ping in self.stages.pings:
                await asyncio.wait_for(ping(), 5.0)
        except Exception as error:  # noqa: BLE001 — readiness reports any failure as not ready
            return False, {"ready": False, "reason": repr(error)}
        return True, {
            "ready": True,
            "placement": self.stages.placement,
            "models": status,
            "rules_version": rules_version,
            "apps_without_model": sorted(set(self.apps) - set(status["serving"])),
        }
