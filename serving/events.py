"""The events engine: validated events are written to the replica's write-ahead log (fsynced,
one fsync shared by concurrent requests) before they are acknowledged, then applied online
(contact counters, the customer's behaviour sequence and holdings in the feature store, cache
invalidation) by one thread that takes everything pending as one batch, and flushed to the
Parquet event log by a background worker. A request waits (bounded) for its events to be
applied, so a caller that reads right after the ack sees them; the ack says whether they were.
Whatever cannot be applied now (Redis down) stays pending in the WAL and is retried; a dead
replica's WAL is adopted and drained by a live one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Final

import redis

from serving.audit import audit_key
from serving.catalogue import Catalogue
from serving.event_apply import APPLY_ERRORS, ApplyLoop, OnlineUpdate
from serving.event_log import EventLogWriter
from serving.event_wal import (
    ONLINE_CURSOR,
    WalLockedError,
    WalPosition,
    WriteAheadLog,
    adopt_orphans,
)
from serving.features import serving_repo_config
from serving.settings import ServingArgs

log = logging.getLogger(__name__)

#: Most records one online apply takes from the WAL (bounds one Feast read and write).
APPLY_BATCH: Final = 5_000
#: How long ``ingest`` waits for its events to be applied online before it answers
#: ``online_applied=False`` (they are durable either way and applied shortly after), seconds.
ONLINE_WAIT_S: Final = 2.0
#: How often a failed online apply is retried when no new events arrive, seconds.
ONLINE_RETRY_S: Final = 1.0
#: Threads that write and fsync for ``ingest_async`` (their appends share fsyncs).
WAL_WRITERS: Final = 8


class EventProcessor:
    """One replica's event path. Thread-safe; ``ingest`` is the only call on the request path.

    ``online_wait_s``: how long ``ingest`` waits for the online apply by default (0: answer as
    soon as the events are durable). The apply thread starts with the first ``ingest`` or
    :meth:`start`; :meth:`close` stops it and closes the WAL.
    """

    def __init__(
        self,
        args: ServingArgs,
        owner: str,
        catalogue: Catalogue,
        *,
        online_wait_s: float = ONLINE_WAIT_S,
    ):
        from feast import FeatureStore

        self.args = args
        self.catalogue = catalogue
        self.online_wait_s = online_wait_s
        self.wal_root = args.serving_dir / "wal"
        self.wal = WriteAheadLog(self.wal_root, owner)
        self.writer = EventLogWriter(args.live_event_log)
        self.client = (
            redis.Redis.from_url(args.redis_url, socket_timeout=0.2, socket_connect_timeout=0.2)
            if args.online_store == "redis"
            else None
        )
        self.store = FeatureStore(
            config=serving_repo_config(args.persona_settings(), args.online_store, 0.2)
        )
        self.online = OnlineUpdate(self.store, self.client, catalogue)
        self._online_lock = threading.Lock()
        self.applier = ApplyLoop(
            lambda applied: self._apply_batch(self.wal, applied),
            lambda: self.wal.position(ONLINE_CURSOR),
            lambda: self.wal.position(ONLINE_CURSOR) < self.wal.end_position(),
            retry_s=ONLINE_RETRY_S,
        )
        self._writers: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Start the online apply thread (idempotent); it first resolves the feature views."""
        self.applier.start(warm_up=self.online.resolve_views)

    def close(self) -> None:
        """Stop the apply thread and close the WAL (what is pending stays for the next owner)."""
        self.applier.stop()
        if self._writers is not None:
            self._writers.shutdown(wait=True)
        self.wal.close()

    # -- request path --------------------------------------------------------------------

    def ingest(
        self, events: list[dict[str, Any]], wait_online_s: float | None = None
    ) -> tuple[list[str], bool]:
        """Durably log ``events`` (canonical EVENTS records), then wait up to ``wait_online_s``
        (default: the processor's ``online_wait_s``) for them to be applied online.
        Returns (event ids, applied online). Raises ValueError for an invalid record and
        OSError if the WAL could not make them durable (nothing is acknowledged then)."""
        end = self._log(events)
        wait = self.online_wait_s if wait_online_s is None else wait_online_s
        return [e["event_id"] for e in events], self.applier.wait_applied(end, wait)

    async def ingest_async(
        self, events: list[Any], wait_online_s: float | None = None
    ) -> tuple[list[str], bool]:
        """:meth:`ingest` for an async caller: the write and fsync run in the processor's writer
        threads and the wait for the online apply does not block the event loop, so one replica
        can have many ingests in flight (and they share fsyncs and apply batches)."""
        if self._writers is None:
            self._writers = ThreadPoolExecutor(WAL_WRITERS, thread_name_prefix="events-wal")
        end = await asyncio.get_running_loop().run_in_executor(self._writers, self._log, events)
        wait = self.online_wait_s if wait_online_s is None else wait_online_s
        return [e["event_id"] for e in events], await self.applier.wait_applied_async(end, wait)

    def _log(self, events: list[dict[str, Any]]) -> WalPosition:
        """Join the decision audit, append durably, wake the apply thread; the WAL end."""
        self.start()
        self._fill_from_audit(events)
        _, end = self.wal.append(events)
        self.applier.wake(acked=end)
        return end

    def _fill_from_audit(self, events: list[dict[str, Any]]) -> None:
        """Impressions carry what was served (variant, model, propensity, position), read from the
        decision audit by request id, so analysis joins outcomes to the serving policy."""
        wanted = sorted({e["request_id"] for e in events if e.get("request_id")})
        if not wanted or self.client is None:
            return
        try:
            raw: list[bytes | None] = list(self.client.mget([audit_key(r) for r in wanted]))  # type: ignore[arg-type]
        except (redis.RedisError, OSError):
            return  # the app's own fields stay; nothing is refused for a missing join
        decisions = {r: json.loads(v) for r, v in zip(wanted, raw, strict=True) if v}
        for event in events:
            decision = decisions.get(event.get("request_id") or "")
            if decision is None:
                continue
            event["variant"] = event.get("variant") or decision.get("variant")
            event["model_version"] = event.get("model_version") or decision.get("model_version")
            served = {s["product_id"]: s for s in decision.get("served", [])}
            slot = served.get(event.get("product_id") or "")
            if slot is not None:
                event["propensity"] = event.get("propensity") or slot.get("propensity")
                event["position"] = event.get("position") or slot.get("rank")

    # -- online application -----------------------------------------------------------------

    def apply_online(self, wal: WriteAheadLog | None = None) -> bool:
        """Apply every pending record of ``wal`` (default: own) online now; False if the store
        or Redis failed (the records stay pending and are retried)."""
        wal = wal or self.wal
        while (outcome := self._apply_batch(wal)) is not None:
            if not outcome:
                return False
        return True

    def _apply_batch(
        self, wal: WriteAheadLog, applied: Callable[[WalPosition], None] | None = None
    ) -> bool | None:
        """Apply up to APPLY_BATCH pending records of ``wal`` as one batch, tell ``applied``,
        then commit the online cursor: True if applied, None if nothing was pending, False if
        the apply failed. A crash before the commit replays the batch: sequences and holdings
        merge idempotently; contact counters may count it twice (at least once)."""
        with self._online_lock:
            records, position = wal.pending(ONLINE_CURSOR, APPLY_BATCH)
            if not records:
                return None
            try:
                self.online.apply(records)
            except APPLY_ERRORS as error:
                log.warning("events: online apply deferred (%s)", error)
                return False
            if applied is not None:
                applied(position)
            wal.commit(ONLINE_CURSOR, position)
            return True

    # -- background work ------------------------------------------------------------------

    def flush(self, wal: WriteAheadLog | None = None) -> int:
        """Move every pending record of ``wal`` (default: own) into the Parquet event log."""
        wal = wal or self.wal
        total = 0
        while written := self.writer.flush(wal):
            total += written
        return total

    def adopt_orphans(self) -> int:
        """Drain the WALs of replicas that died: flush, apply online, then remove them."""
        drained = 0
        for owner in adopt_orphans(self.wal_root, self.wal.owner):
            try:
                orphan = WriteAheadLog(self.wal_root, owner)
            except WalLockedError:
                continue  # another replica adopted it first
            try:
                drained += self.flush(orphan)
                if self.apply_online(orphan):
                    orphan.retire()
            finally:
                orphan.close()
        return drained


class BackgroundWorker:
    """Flushes to the Parquet event log on an interval in a daemon thread and adopts orphans
    every minute; starting it starts the processor's online apply thread too (which retries
    what Redis could not take)."""

    def __init__(self, processor: EventProcessor, interval_s: float):
        self.processor = processor
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events-worker", daemon=True)
        self._last_adopt = 0.0

    def start(self) -> None:
        self.processor.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.processor.flush()
                if time.monotonic() - self._last_adopt > 60:
                    self._last_adopt = time.monotonic()
                    self.processor.adopt_orphans()
            except (OSError, ValueError, redis.RedisError) as error:
                log.error("events worker: %s", error)


def canonical_events(events: Iterable[Any], now: datetime) -> list[dict[str, Any]]:
    """API events (``serving.api.EventIn``) -> canonical EVENTS records with ids and times."""
    from uuid import uuid4

    out = []
    for e in events:
        out.append(
            {
                "event_id": e.event_id or uuid4().hex,
                "customer_id": e.customer_id,
                "product_id": e.product_id,
                "app": e.app,
                "event_type": e.event_type,
                "event_timestamp": e.timestamp or now,
                "request_id": e.request_id,
                "position": e.position,
                "amount": e.amount,
                "propensity": None,
                "model_version": None,
                "variant": None,
                "device": e.device,
            }
        )
    return out


__all__ = ["BackgroundWorker", "EventProcessor", "canonical_events"]
