"""The stage deployments: thin Ray Serve wrappers around the engines (``serving.features``,
``serving.engines``, ``serving.events``). In the *fused* placement only ``RankingStage`` (the
model, batched across requests) and ``EventsStage`` (the write-ahead log's owner) run as their
own deployments; the *graph* placement runs every stage as one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ray import serve

from serving.api import EventAck
from serving.catalogue import Catalogue
from serving.config import Variant
from serving.engines import (
    Decision,
    DecisionEngine,
    RankingEngine,
    RankingOutput,
    RetrievalEngine,
    RetrievalOutput,
)
from serving.features import FeatureFetch, OnlineFeatureReader
from serving.ranking import RankingRequest, RequestContext
from serving.rules import Candidate
from serving.settings import ServingArgs


def feature_reader(args: ServingArgs) -> OnlineFeatureReader:
    """The features engine of one replica, listening for cache invalidations."""
    reader = OnlineFeatureReader(
        args.persona_settings(),
        args.online_store,
        cache_ttl_s=args.feature_cache_ttl_s,
        timeout_s=args.budgets.features_ms / 1e3,
    )
    reader.start_invalidation_listener()
    return reader


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class FeaturesStage:
    """Online features of one customer (Feast; in-process TTL cache, invalidated on events)."""

    def __init__(self, args: ServingArgs):
        self.reader = feature_reader(args)

    def ping(self) -> bool:
        return True

    def fetch(self, customer_id: int) -> FeatureFetch:
        return self.reader.fetch(customer_id)

    def __del__(self) -> None:
        if hasattr(self, "reader"):
            self.reader.stop()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class RetrievalStage:
    """Candidates in the app's scope, scored by segment priors and co-interest."""

    def __init__(self, args: ServingArgs):
        self.engine = RetrievalEngine(args)

    def ping(self) -> bool:
        return True

    def retrieve(self, fetch: FeatureFetch, app: str) -> RetrievalOutput:
        return self.engine.retrieve(fetch, app)


@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=64)
class RankingStage:
    """Registry models behind ``@serve.batch``; ``reconfigure`` re-resolves the serving aliases.
    Also usable as a plain class (``RankingStage.func_or_class(args)``): ``serve.batch`` batches
    in any asyncio loop, which is how the single-process reference ranks."""

    def __init__(self, args: ServingArgs):
        self.engine = RankingEngine(args)
        # serve.batch adds these setters; the batch size and wait come from ServingArgs.
        self._score.set_max_batch_size(args.max_batch_size)  # type: ignore[attr-defined]
        self._score.set_batch_wait_timeout_s(args.batch_wait_timeout_s)  # type: ignore[attr-defined]

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Called at start and on every ``serve deploy`` with a changed user_config."""
        self.engine.reconfigure(user_config)

    def status(self) -> dict[str, Any]:
        return self.engine.status()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003)
    async def _score(self, items: list[tuple[str, RankingRequest]]) -> list[list[Candidate]]:
        return self.engine.score_batch(items)

    async def rank(
        self,
        fetch: FeatureFetch,
        retrieved: RetrievalOutput,
        context: RequestContext,
        variant: Variant,
    ) -> RankingOutput:
        return await self.engine.rank(fetch, retrieved, context, variant, self._score)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class RulesStage:
    """Eligibility, suitability, consent, contact policy, diversity; reason codes; audit."""

    def __init__(self, args: ServingArgs):
        self.engine = DecisionEngine(args)

    def rules_version(self) -> str:
        return self.engine.rules_version()

    def audit_record(self, request_id: str) -> dict[str, Any] | None:
        return self.engine.audit_record(request_id)

    def decide(
        self,
        fetch: FeatureFetch,
        ranked: RankingOutput,
        app: str,
        k: int,
        variant: Variant,
        request: dict[str, Any],
    ) -> Decision:
        return self.engine.decide(fetch, ranked, app, k, variant, request)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class EventsStage:
    """Durable event ingestion: WAL (fsync) before the ack, then online apply; a background
    worker flushes to the Parquet event log and retries what Redis could not take."""

    def __init__(self, args: ServingArgs):
        import uuid

        from serving.events import BackgroundWorker, EventProcessor

        self.processor = EventProcessor(
            args, f"events-{uuid.uuid4().hex[:12]}", Catalogue.from_data_dir(args.data_dir)
        )
        self.worker = BackgroundWorker(self.processor, args.flush_interval_s)
        self.worker.start()

    def ping(self) -> bool:
        return True

    async def ingest(self, events: list[Any]) -> EventAck:
        """Async, so every request in flight shares the group-commit fsync and the online
        apply batch (a sync method would hold one of the replica's few threads for both)."""
        from serving.events import canonical_events

        records = canonical_events(events, datetime.now(UTC))
        ids, applied = await self.processor.ingest_async(records)
        return EventAck(accepted=len(ids), durable=True, online_applied=applied, event_ids=ids)

    def flush(self) -> int:
        """Flush pending events to the Parquet log now (operations and tests)."""
        return self.processor.flush()

    def __del__(self) -> None:
        if hasattr(self, "worker"):
            self.worker.stop()
        if hasattr(self, "processor"):
            self.processor.close()
