"""The HTTP ingress (FastAPI inside Ray Serve): API keys, validation, experiment assignment,
the stage chain, degradation and metrics. Stage calls pass ``DeploymentResponse`` objects on to
the next stage and the ingress awaits once, so a request crosses each hop exactly once.

No ``from __future__ import annotations`` here: FastAPI reads the annotations at run time.
"""

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

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
from serving.experiments import Assignment, ExperimentRouter
from serving.metrics import ServingMetrics
from serving.priors import Priors
from serving.ranking import SERVED_FEATURE_SERVICE, RequestContext, rank_by_priors
from serving.retrieval import Retriever
from serving.rules import ContactState, RulesProvider
from serving.settings import ServingArgs
from serving.stages import Decision

log = logging.getLogger(__name__)

api = FastAPI(
    title="Persona",
    version="1",
    description="Ranked, explained product offers for the bank's four apps.",
)


class ApiError(Exception):
    def __init__(self, status: int, reason: str):
        self.status, self.reason = status, reason


@api.exception_handler(ApiError)
async def _api_error(_: Request, error: ApiError) -> JSONResponse:
    return JSONResponse({"error": error.reason}, status_code=error.status)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
    problems = [
        f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
        for e in error.errors()
    ]
    return JSONResponse({"error": "invalid request", "problems": problems}, status_code=422)


ApiKey = Annotated[str | None, Header(alias="X-API-Key", description="The calling app's key.")]


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=100)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        features: DeploymentHandle,
        retrieval: DeploymentHandle,
        ranking: DeploymentHandle,
        rules: DeploymentHandle,
        events: DeploymentHandle,
        args: ServingArgs,
    ):
        self.features, self.retrieval, self.ranking = features, retrieval, ranking
        self.rules, self.events = rules, events
        self.args = args
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

    # -- auth -------------------------------------------------------------------------------

    def _authorise(self, api_key: str | None, app: str, endpoint: str) -> None:
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

    @api.post("/v1/recommendations", response_model=RecommendationResponse)
    async def recommend(
        self, body: RecommendationRequest, x_api_key: ApiKey = None
    ) -> RecommendationResponse:
        started = time.perf_counter()
        self._authorise(x_api_key, body.app, "recommendations")
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
        fetch = self.features.fetch.remote(body.customer_id)
        retrieved = self.retrieval.retrieve.remote(fetch, body.app)
        ranked = self.ranking.rank.remote(fetch, retrieved, context, assignment.variant)
        decision_response = self.rules.apply.remote(
            fetch, ranked, body.app, k, assignment.variant, record
        )
        try:
            decision: Decision = await asyncio.wait_for(
                decision_response, self.args.budgets.total_ms / 1e3
            )
        except TimeoutError:
            decision_response.cancel()
            decision = self._fallback(body.customer_id, body.app, k, "pipeline_timeout")
        except Exception as error:  # noqa: BLE001 — any stage failure must still answer
            log.error("pipeline failed for request %s: %r", request_id, error)
            decision = self._fallback(
                body.customer_id, body.app, k, f"pipeline_error: {type(error).__name__}"
            )
        return self._respond(body, request_id, assignment, decision, started)

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

    @api.post("/v1/events", response_model=EventAck)
    async def events_endpoint(self, body: EventBatch, x_api_key: ApiKey = None) -> EventAck:
        apps = {e.app for e in body.events}
        if len(apps) != 1:
            raise ApiError(422, f"events: one app per batch, got {sorted(apps)}")
        app = apps.pop()
        self._authorise(x_api_key, app, "events")
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
            ack: EventAck = await self.events.ingest.remote(body.events)
        except ValueError as error:  # a record the write-ahead log refuses: nothing was written
            self.metrics.requests.labels("events", app, "422").inc()
            raise ApiError(422, f"events: {error}") from error
        self.metrics.requests.labels("events", app, "200").inc()
        for e in body.events:
            self.metrics.events.labels(app, e.event_type).inc()
        return ack

    # -- operations ---------------------------------------------------------------------------

    @api.get("/v1/audit/{request_id}")
    async def audit(self, request_id: str, x_api_key: ApiKey = None) -> dict[str, Any]:
        """The decision record of one of the calling app's requests."""
        owner = self.keys.app_for(x_api_key)
        if owner is None:
            raise ApiError(401, "missing or invalid X-API-Key header")
        record = await self.rules.audit_record.remote(request_id)
        if record is None or record.get("app") != owner:
            raise ApiError(404, f"no decision {request_id!r} for app {owner!r}")
        return record

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready when every stage answers. Apps whose model is missing are listed: they are
        served from priors (``degraded``) until a version is registered and reloaded."""
        try:
            status = await asyncio.wait_for(self.ranking.status.remote(), 5.0)
            rules_version = await asyncio.wait_for(self.rules.rules_version.remote(), 5.0)
            await asyncio.wait_for(self.features.ping.remote(), 5.0)
            await asyncio.wait_for(self.retrieval.ping.remote(), 5.0)
            await asyncio.wait_for(self.events.ping.remote(), 5.0)
        except Exception as error:  # noqa: BLE001 — readiness reports any failure as not ready
            return JSONResponse({"ready": False, "reason": repr(error)}, status_code=503)
        body = {
            "ready": True,
            "models": status,
            "rules_version": rules_version,
            "apps_without_model": sorted(set(self.apps) - set(status["serving"])),
        }
        return JSONResponse(body, status_code=200)

    @api.get("/metrics")
    async def metrics_endpoint(self) -> Response:
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")
