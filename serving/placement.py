"""Where each stage runs. One request always goes features → retrieval → ranking → decision; a
placement says which of those run in the ingress's own process and which behind a Serve
``DeploymentHandle``:

- ``colocated`` (production on CPU): every stage runs in each ingress replica, the model
  micro-batched across that replica's concurrent requests; replicas scale out behind HAProxy.
  No hop on the request path, so no Serve per-hop cost (~1 ms CPU each side plus pickling).
- ``fused``: features, retrieval and the decision in the ingress replica; the model in
  ``RankingStage`` (``@serve.batch`` across all ingress replicas, its own autoscaling and
  resources: the shape for a GPU ranker). One hop per request.
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

Placement = Literal["colocated", "fused", "graph", "local"]
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
    ranking_engine: Any = None  # the in-process model book, where the model runs in-process


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


def in_process_stages(
    args: ServingArgs,
    placement: Placement,
    events: Any,
    ranking: DeploymentHandle | None = None,
) -> Stages:
    """Features, retrieval and the decision in this process; the model too (micro-batched)
    unless ``ranking``, a ``RankingStage`` handle, scores instead. ``events`` is an
    ``EventsStage`` handle or an in-process instance."""
    from serving.engines import DecisionEngine, RankingEngine, RetrievalEngine
    from serving.microbatch import MicroBatcher
    from serving.stages import feature_reader

    features = feature_reader(args)
    retrieval = RetrievalEngine(args)
    decisions = DecisionEngine(args)
    engine: RankingEngine | None = None
    if ranking is None:
        engine = RankingEngine(args)
        scorer = MicroBatcher(engine.score_batch, args.max_batch_size, args.colocated_batch_wait_s)
        model = engine

        async def rank(*call: Any) -> Any:
            return await model.rank(*call, scorer)

        ranking_status = in_process(engine, "status")
    else:
        rank = remote(ranking, "rank")
        ranking_status = remote(ranking, "status")
    events_remote = isinstance(events, DeploymentHandle)
    return Stages(
        placement=placement,
        fetch=in_process(features, "fetch"),
        retrieve=in_process(retrieval, "retrieve"),
        rank=rank,
        decide=in_process(decisions, "decide"),
        audit_record=in_process(decisions, "audit_record"),
        ingest=remote(events, "ingest") if events_remote else in_process(events, "ingest"),
        ranking_status=ranking_status,
        rules_version=in_process(decisions, "rules_version"),
        pings=(remote(events, "ping"),) if events_remote else (),
        ranking_engine=engine,
    )


def local_stages(args: ServingArgs) -> Stages:
    """Everything in this process, events included, no Ray (the single-process server)."""
    from serving.stages import EventsStage

    return in_process_stages(args, "local", EventsStage.func_or_class(args))
