"""Where each stage runs. One request always goes features → retrieval → ranking → decision; a
placement says which of those run in the ingress's own process and which behind a Serve
``DeploymentHandle``:

- ``fused`` (production): features, retrieval and the decision run in the ingress replica; the
  model runs in ``RankingStage`` (``@serve.batch`` across requests, its own autoscaling, its own
  CPU). One hop per request, so the Serve per-hop cost (~1 ms CPU each side) is paid once.
- ``graph``: every stage is its own deployment, awaited in turn (the naive reference).
- ``local``: everything in one process, events included (the single-process reference).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ray.serve.handle import DeploymentHandle

from serving.settings import ServingArgs

Placement = Literal["fused", "graph", "local"]
AsyncCall = Callable[..., Awaitable[Any]]


def remote(handle: DeploymentHandle, method: str) -> AsyncCall:
    """``await call(*args)`` runs ``method`` on a replica of the deployment."""
    bound = getattr(handle, method)

    async def call(*args: Any) -> Any:
        return await bound.remote(*args)

    call.__name__ = method
    return call


def in_process(target: Any, method: str) -> AsyncCall:
    """``await call(*args)`` runs ``method`` of an object in this process (sync or async)."""
    bound = getattr(target, method)

    async def call(*args: Any) -> Any:
        result = bound(*args)
        return await result if inspect.isawaitable(result) else result

    call.__name__ = method
    return call


@dataclass(frozen=True)
class Stages:
    """The calls the ingress makes, wherever they run."""

    placement: Placement
    fetch: AsyncCall  # (customer_id) -> FeatureFetch
    retrieve: AsyncCall  # (fetch, app) -> RetrievalOutput
    rank: AsyncCall  # (fetch, retrieved, context, variant) -> RankingOutput
    decide: AsyncCall  # (fetch, ranked, app, k, variant, record) -> Decision
    audit_record: AsyncCall  # (request_id) -> dict | None
    ingest: AsyncCall  # (events) -> EventAck
    ranking_status: AsyncCall  # () -> dict
    rules_version: AsyncCall  # () -> str
    pings: tuple[AsyncCall, ...]  # every remote stage answers


def graph_stages(
    features: DeploymentHandle,
    retrieval: DeploymentHandle,
    ranking: DeploymentHandle,
    rules: DeploymentHandle,
    events: DeploymentHandle,
) -> Stages:
    return Stages(
        placement="graph",
        fetch=remote(features, "fetch"),
        retrieve=remote(retrieval, "retrieve"),
        rank=remote(ranking, "rank"),
        decide=remote(rules, "decide"),
        audit_record=remote(rules, "audit_record"),
        ingest=remote(events, "ingest"),
        ranking_status=remote(ranking, "status"),
        rules_version=remote(rules, "rules_version"),
        pings=(remote(features, "ping"), remote(retrieval, "ping"), remote(events, "ping")),
    )


def fused_stages(args: ServingArgs, ranking: DeploymentHandle, events: DeploymentHandle) -> Stages:
    from serving.engines import DecisionEngine, RetrievalEngine
    from serving.stages import feature_reader

    features = feature_reader(args)
    retrieval = RetrievalEngine(args)
    decisions = DecisionEngine(args)
    return Stages(
        placement="fused",
        fetch=in_process(features, "fetch"),
        retrieve=in_process(retrieval, "retrieve"),
        rank=remote(ranking, "rank"),
        decide=in_process(decisions, "decide"),
        audit_record=in_process(decisions, "audit_record"),
        ingest=remote(events, "ingest"),
        ranking_status=remote(ranking, "status"),
        rules_version=in_process(decisions, "rules_version"),
        pings=(remote(events, "ping"),),
    )


def local_stages(args: ServingArgs) -> Stages:
    """Every stage in this process (the raw classes behind the deployments, no Ray)."""
    from serving.engines import DecisionEngine, RankingEngine, RetrievalEngine
    from serving.microbatch import MicroBatcher
    from serving.stages import EventsStage, feature_reader

    features = feature_reader(args)
    retrieval = RetrievalEngine(args)
    ranking = RankingEngine(args)
    scorer = MicroBatcher(ranking.score_batch, args.max_batch_size, args.batch_wait_timeout_s)

    async def rank(*call: Any) -> Any:
        return await ranking.rank(*call, scorer)

    decisions = DecisionEngine(args)
    events = EventsStage.func_or_class(args)
    return Stages(
        placement="local",
        fetch=in_process(features, "fetch"),
        retrieve=in_process(retrieval, "retrieve"),
        rank=rank,
        decide=in_process(decisions, "decide"),
        audit_record=in_process(decisions, "audit_record"),
        ingest=in_process(events, "ingest"),
        ranking_status=in_process(ranking, "status"),
        rules_version=in_process(decisions, "rules_version"),
        pings=(),
    )
