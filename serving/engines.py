"""The stages' logic as plain classes: retrieval, ranking (model book + policy) and the decision
(rules, contact policy, audit). Serve deployments (``serving.stages``) wrap them one per replica
in the *graph* placement; the *fused* ingress and the single-process reference run them in their
own process. Engines never raise for a dependency failure: they answer from their fallback and
say why in ``degraded``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from persona import domain
from serving.audit import AuditLog
from serving.catalogue import Catalogue
from serving.config import Variant, load_apps
from serving.contact_policy import ContactCounters
from serving.customer import CustomerView
from serving.features import FeatureFetch
from serving.priors import Priors
from serving.ranking import (
    ModelRefused,
    RankingRequest,
    RequestContext,
    ServedModel,
    rank_by_model,
    rank_by_priors,
)
from serving.retrieval import Retriever
from serving.rules import Candidate, ContactState, RulesProvider
from serving.settings import ServingArgs

if TYPE_CHECKING:
    from training.registry import ModelRegistry

log = logging.getLogger(__name__)

#: Scores one (model label, request) pair; batched by ``@serve.batch`` wherever it runs.
Scorer = Callable[[tuple[str, RankingRequest]], Awaitable[list[Candidate]]]


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1e3


def redis_client(args: ServingArgs, timeout_s: float = 0.05) -> redis.Redis | None:
    """A client for counters and the audit log, or None on the embedded (SQLite) store."""
    if args.online_store != "redis":
        return None
    return redis.Redis.from_url(
        args.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


@dataclass(frozen=True)
class RetrievalOutput:
    candidates: list[Candidate]
    source: str
    timings: dict[str, float]
    degraded: list[str]


@dataclass(frozen=True)
class RankingOutput:
    candidates: list[Candidate]
    model_version: str
    timings: dict[str, float]
    degraded: list[str]


@dataclass(frozen=True)
class Decision:
    """The decision stage's answer: what the ingress turns into the HTTP response."""

    items: list[Candidate]
    removed: int
    removed_by_rule: dict[str, int]
    rules_version: str
    model_version: str
    timings: dict[str, float]
    degraded: list[str]
    cache_hit: bool
    explain: dict[str, Any] = field(default_factory=dict)


class RetrievalEngine:
    """Candidates in the app's scope, scored by segment priors and co-interest."""

    def __init__(self, args: ServingArgs):
        self.apps = load_apps(args.apps_file).apps
        self.retriever = Retriever(
            Catalogue.from_data_dir(args.data_dir),
            Priors.load(args.serving_dir),
            max_candidates=args.max_candidates,
        )

    def retrieve(self, fetch: FeatureFetch, app: str) -> RetrievalOutput:
        started = time.perf_counter()
        retrieved = self.retriever.retrieve(fetch.customer, app, self.apps[app])
        return RetrievalOutput(
            retrieved.candidates,
            retrieved.source,
            {"features": fetch.elapsed_ms, "retrieval": elapsed_ms(started)},
            [fetch.degraded] if fetch.degraded else [],
        )


class ModelBook:
    """The model versions serving can use, by label; loading failures keep what was there."""

    def __init__(self) -> None:
        self.models: dict[str, ServedModel] = {}
        self.by_app: dict[str, str] = {}  # app -> label of its serving alias
        self.errors: dict[str, str] = {}

    def load(self, registry_root: Path, model_name: str, pinned: set[int]) -> None:
        """Load every version an app's serving alias names, plus ``pinned`` versions. A version
        that is refused (incompatible feature service, unreadable weights) never serves: the app
        keeps the version it had, or, in a replica starting fresh, the most recent version it
        served before (the registry's serving history)."""
        from training.registry import ModelRegistry

        registry = ModelRegistry(registry_root)
        wanted: dict[str, list[int]] = {}  # app -> versions to try, preferred first
        try:
            for app in domain.APPS:
                serving = registry.serving_version(model_name, app)
                if serving is not None:
                    history = registry.serving_history(model_name, app)
                    wanted[app] = [serving.version, *(v for v in history if v != serving.version)]
        except ValueError as error:  # no such model yet: serve priors until one is registered
            self.errors[model_name] = str(error)
        for version in pinned:
            self._load_version(registry, model_name, version)
        for app, versions in wanted.items():
            for version in versions:
                label = self._load_version(registry, model_name, version)
                if label is not None:
                    self.by_app[app] = label
                    break
                if self.by_app.get(app, "").startswith(f"{model_name}@"):
                    break  # keep what this replica serves now

    def _load_version(self, registry: ModelRegistry, model_name: str, version: int) -> str | None:
        """The version's label once loaded, or None when it is refused (the reason kept)."""
        label = f"{model_name}@v{version}"
        if label in self.models:
            return label
        if label in self.errors:
            return None  # refused before: the files have not changed under a version number
        try:
            self.models[label] = ServedModel(
                registry.load_dir(model_name, version), model_name, version
            )
        except (ModelRefused, ValueError, OSError) as error:
            self.errors[label] = str(error)
            log.error("model %s refused: %s", label, error)
            return None
        return label

    def resolve(self, model_name: str, variant: Variant, app: str) -> ServedModel | None:
        if variant.model_version == "serving":
            label = self.by_app.get(app)
        else:
            label = f"{variant.model_name or model_name}@v{variant.model_version}"
        return self.models.get(label) if label else None


class RankingEngine:
    """The variant's policy over the retrieved candidates: a registry model (scored through a
    batching ``Scorer``), or the priors order for the baseline policy and every failure."""

    def __init__(self, args: ServingArgs):
        import torch

        torch.set_num_threads(1)
        self.args = args
        self.book = ModelBook()
        self.book.load(args.registry, args.model_name, set())

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``{"model_name": ..., "pinned_versions": [..], "reload": <any>}``: load what the registry
        says now."""
        model_name = user_config.get("model_name", self.args.model_name)
        self.args = self.args.model_copy(update={"model_name": model_name})
        pinned = {int(v) for v in user_config.get("pinned_versions", [])}
        self.book.load(self.args.registry, model_name, pinned)

    def status(self) -> dict[str, Any]:
        return {
            "serving": dict(self.book.by_app),
            "loaded": sorted(self.book.models),
            "errors": self.book.errors,
        }

    def score_batch(self, items: list[tuple[str, RankingRequest]]) -> list[list[Candidate]]:
        """One forward pass per model label present in the batch."""
        by_model: dict[str, list[int]] = {}
        for i, (label, _) in enumerate(items):
            by_model.setdefault(label, []).append(i)
        out: list[list[Candidate]] = [[] for _ in items]
        for label, indices in by_model.items():
            ranked = rank_by_model(self.book.models[label], [items[i][1] for i in indices])
            for i, candidates in zip(indices, ranked, strict=True):
                out[i] = candidates
        return out

    async def rank(
        self,
        fetch: FeatureFetch,
        retrieved: RetrievalOutput,
        context: RequestContext,
        variant: Variant,
        scorer: Scorer,
    ) -> RankingOutput:
        started = time.perf_counter()
        degraded = list(retrieved.degraded)
        timings = dict(retrieved.timings)
        if variant.policy == "segment_priors":
            ranked = rank_by_priors(retrieved.candidates, retrieved.source)
            timings["ranking"] = elapsed_ms(started)
            return RankingOutput(ranked, retrieved.source, timings, degraded)
        model = self.book.resolve(self.args.model_name, variant, context.app)
        if model is None:
            degraded.append("model_unavailable")
        else:
            request = RankingRequest(fetch.customer, context, retrieved.candidates)
            try:
                ranked = await asyncio.wait_for(
                    scorer((model.label, request)), self.args.budgets.ranking_ms / 1e3
                )
                timings["ranking"] = elapsed_ms(started)
                return RankingOutput(ranked, model.label, timings, degraded)
            except TimeoutError:
                degraded.append("ranking_timeout")
            except (RuntimeError, ValueError, IndexError, KeyError) as error:
                log.exception("ranking failed with %s", model.label)
                degraded.append(f"model_error: {type(error).__name__}")
        ranked = rank_by_priors(retrieved.candidates, f"fallback_{retrieved.source}")
        timings["ranking"] = elapsed_ms(started)
        return RankingOutput(ranked, f"fallback_{retrieved.source}", timings, degraded)


class DecisionEngine:
    """Eligibility, suitability, consent, contact policy, diversity; reason codes; audit."""

    def __init__(self, args: ServingArgs):
        self.args = args
        self.apps = load_apps(args.apps_file).apps
        self.rules = RulesProvider(args.rules_file, Catalogue.from_data_dir(args.data_dir))
        client = redis_client(args)
        self.counters = ContactCounters(client) if client is not None else None
        # The audit writer runs off the request path: it may wait longer for Redis.
        self.audit = AuditLog(redis_client(args, timeout_s=1.0), args.serving_dir / "audit")

    def rules_version(self) -> str:
        return self.rules.engine().rules.version

    def audit_record(self, request_id: str) -> dict[str, Any] | None:
        try:
            return self.audit.read(request_id)
        except (redis.RedisError, OSError):
            return None

    def decide(
        self,
        fetch: FeatureFetch,
        ranked: RankingOutput,
        app: str,
        k: int,
        variant: Variant,
        request: dict[str, Any],
    ) -> Decision:
        started = time.perf_counter()
        degraded = list(ranked.degraded)
        now_s = time.time()
        contact = self._contact(fetch.customer, now_s, degraded)
        engine = self.rules.engine()
        outcome = engine.apply(
            fetch.customer,
            ranked.candidates,
            app,
            self.apps[app],
            contact,
            k,
            exploration=variant.exploration,
            rng=random.Random(request["request_id"]),
            now_s=now_s,
        )
        removed_by_rule: dict[str, int] = {}
        for r in outcome.removed:
            removed_by_rule[r.rule] = removed_by_rule.get(r.rule, 0) + 1
        timings = {**ranked.timings, "rules": elapsed_ms(started)}
        record = {
            **request,
            "model_version": ranked.model_version,
            "rules_version": outcome.rules_version,
            "degraded": degraded,
            "served": [
                {
                    "product_id": c.product_id,
                    "rank": i + 1,
                    "score": c.score,
                    "propensity": c.propensity,
                }
                for i, c in enumerate(outcome.kept)
            ],
            "removed": [r.__dict__ for r in outcome.removed],
        }
        self.audit.write(record)
        explain = {}
        if request.get("explain"):
            explain = _explain(fetch.customer, ranked, outcome.removed)
        return Decision(
            items=outcome.kept,
            removed=len(outcome.removed),
            removed_by_rule=removed_by_rule,
            rules_version=outcome.rules_version,
            model_version=ranked.model_version,
            timings={**timings, "audit": elapsed_ms(started) - timings["rules"]},
            degraded=degraded,
            cache_hit=fetch.cache_hit,
            explain=explain,
        )

    def _contact(self, customer: CustomerView, now_s: float, degraded: list[str]) -> ContactState:
        if self.counters is None:
            return ContactState.unavailable()
        try:
            return self.counters.read(customer.customer_id, now_s)
        except (redis.RedisError, OSError) as error:
            degraded.append(f"contact_policy_unavailable: {type(error).__name__}")
            return ContactState.unavailable()


def _explain(customer: CustomerView, ranked: RankingOutput, removed: list[Any]) -> dict[str, Any]:
    return {
        "customer_known": customer.known,
        "segment": customer.segment,
        "sequence": [f"{i.event_type}:{i.product_id}" for i in customer.sequence],
        "held": sorted(customer.held),
        "consent_marketing": customer.consent_marketing,
        "ranked": [c.product_id for c in ranked.candidates],
        "removed": [
            {"product_id": r.product_id, "rule": r.rule, "detail": r.detail} for r in removed
        ],
    }
