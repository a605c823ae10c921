"""Acknowledged events into the online state, a batch at a time, in one background thread.

:class:`OnlineUpdate` turns one batch of WAL records into the online state every replica reads:
contact counters (Redis), the customer's behaviour sequence (the views fed by the interaction
push source) and holdings (Feast), then announces the customers whose features changed so
feature caches drop them. A batch costs the same few round trips whether it holds one event or
thousands, so batching is what makes ingestion fast; :class:`ApplyLoop` applies whatever
accumulated in the WAL while the previous batch was being applied, and lets a request wait
(bounded) until its own events are applied.

Why not ``FeatureStore.push`` / ``write_to_online_store`` / ``get_online_features``: each call
re-reads and re-validates the registry (``push``: about 50 ms on two cores, more than everything
else in a batch together). The views are resolved once and refreshed every
:data:`VIEW_REFRESH_S`, and rows are read and written through the provider, as those calls do.
Reading that way also gives each row's stored timestamp, which a write must exceed (see
:func:`_after`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pandas as pd
import redis

from persona import domain
from persona.features.catalog import SEQUENCE_LENGTH
from serving.catalogue import Catalogue
from serving.contact_policy import ContactCounters, ContactEvent
from serving.event_wal import WalPosition
from serving.features import INVALIDATION_CHANNEL

log = logging.getLogger(__name__)

#: How often the resolved feature views are re-read from the registry (seconds).
VIEW_REFRESH_S: Final = 60.0
HOLDINGS_VIEW: Final = "customer_holdings"
SEQUENCE_VIEW: Final = "customer_sequence"
_SEQUENCE_FEATURES: Final = ["seq_product_ids", "seq_event_types", "seq_timestamps"]
_HOLDINGS_FEATURES: Final = ["held_product_ids"]
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: How far after a stored row an update of it is stamped (Feast reads stamps back as floats).
_STEP: Final = timedelta(milliseconds=1)
#: What a failed apply raises; the records stay pending and are retried.
APPLY_ERRORS: Final = (redis.RedisError, OSError, ConnectionError)


def _seconds(event: dict[str, Any]) -> float:
    return int(event["event_timestamp"]) / 1e6


class OnlineUpdate:
    """Applies batches of WAL records (dicts, ``event_timestamp`` in µs) to the online state.

    Not thread-safe: sequences and holdings are read, merged and written back, so one caller at
    a time (the event processor holds its online lock).
    """

    def __init__(self, store: Any, client: redis.Redis | None, catalogue: Catalogue):
        self.store = store
        self.client = client
        self.catalogue = catalogue
        self.counters = ContactCounters(client) if client is not None else None
        self._views: _Views | None = None
        self._views_at = 0.0

    def apply(self, records: list[dict[str, Any]]) -> None:
        """Apply ``records`` (in WAL order); raises one of :data:`APPLY_ERRORS` on failure.

        Sequences and holdings are merged idempotently, so a retried batch leaves them as one
        application would; the counters and the invalidation go in one Redis transaction after
        them, so a batch that fails in Feast is not counted twice when it is retried.
        """
        interactions = [
            r
            for r in records
            if r["event_type"] in domain.PRODUCT_INTERACTIONS and r.get("product_id")
        ]
        if interactions:
            views = self._resolved()
            self._push_sequences(views, interactions)
            purchases = [r for r in interactions if r["event_type"] == "purchase"]
            if purchases:
                self._write_holdings(views, purchases)
        if self.client is None:
            return
        pipe = self.client.pipeline(transaction=True)
        assert self.counters is not None
        self.counters.record_into(
            pipe,
            (
                ContactEvent(r["customer_id"], r["product_id"], r["event_type"], _seconds(r))
                for r in records
                if r["event_type"] in ("impression", "dismiss") and r.get("product_id")
            ),
        )
        if interactions:
            ids = sorted({str(r["customer_id"]) for r in interactions})
            pipe.publish(INVALIDATION_CHANNEL, ",".join(ids))
        if len(pipe):
            pipe.execute()

    # -- Feast ----------------------------------------------------------------------------

    def resolve_views(self) -> None:
        """Re-read the push source's views and the holdings view from the registry now."""
        from feast.data_source import PushSource

        from feature_repo.definitions import INTERACTION_PUSH_SOURCE

        views = [*self.store.list_feature_views(), *self.store.list_stream_feature_views()]
        pushed = [
            v
            for v in views
            if isinstance(v.stream_source, PushSource)
            and v.stream_source.name == INTERACTION_PUSH_SOURCE
        ]
        names = {v.name for v in pushed}
        # A feature service that precomputes vectors must be refreshed by push itself.
        precomputed = any(
            s.precompute_online and any(p.name in names for p in s.feature_view_projections)
            for s in self.store.list_feature_services()
        )
        sequence = self.store.get_feature_view(SEQUENCE_VIEW)
        if sequence.name not in names:
            raise ValueError(
                f"{SEQUENCE_VIEW}: not fed by the push source {INTERACTION_PUSH_SOURCE}"
            )
        self._views = _Views(
            pushed, sequence, self.store.get_feature_view(HOLDINGS_VIEW), precomputed
        )
        self._views_at = time.monotonic()

    def _resolved(self) -> _Views:
        if self._views is None or time.monotonic() - self._views_at > VIEW_REFRESH_S:
            self.resolve_views()
        assert self._views is not None
        return self._views

    def _read(
        self, view: Any, customers: list[int], features: list[str]
    ) -> list[tuple[datetime | None, dict[str, Any]]]:
        """(row timestamp, feature values) of each customer's row of ``view``; (None, {})
        where there is none. One pipelined Redis read, through the provider Feast reads with."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        keys = [
            EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=c)])
            for c in customers
        ]
        rows = self.store._get_provider().online_read(self.store.config, view, keys, features)
        return [
            (
                stamp,
                {k: feast_value_type_to_python_type(v) for k, v in (values or {}).items()},
            )
            for stamp, values in rows
        ]

    def _write(self, views: list[Any], rows: list[dict[str, Any]]) -> None:
        frame = pd.DataFrame(rows)
        provider = self.store._get_provider()  # what push writes through, minus the registry
        for view in views:
            provider.ingest_df(view, frame)

    def _push_sequences(self, views: _Views, interactions: list[dict[str, Any]]) -> None:
        new: dict[int, list[dict[str, Any]]] = {}
        for r in interactions:
            new.setdefault(int(r["customer_id"]), []).append(r)
        customers = sorted(new)
        current = self._read(views.sequence, customers, _SEQUENCE_FEATURES)
        rows = []
        for customer_id, (stamp, values) in zip(customers, current, strict=True):
            known = zip(
                values.get("seq_product_ids") or [],
                values.get("seq_event_types") or [],
                values.get("seq_timestamps") or [],
                strict=False,
            )
            added = [(r["product_id"], r["event_type"], int(_seconds(r))) for r in new[customer_id]]
            merged = sorted(set(known) | set(added), key=lambda t: (t[2], t[0], t[1]))[
                -SEQUENCE_LENGTH:
            ]
            latest = max(
                datetime.fromtimestamp(max(m[2] for m in merged), UTC),
                max(_moment(r) for r in new[customer_id]),
            )
            rows.append(
                {
                    "customer_id": customer_id,
                    "seq_product_ids": [m[0] for m in merged],
                    "seq_event_types": [m[1] for m in merged],
                    "seq_timestamps": [m[2] for m in merged],
                    "seq_length": len(merged),
                    "event_timestamp": _after(latest, stamp),
                }
            )
        if views.precomputed:
            from feast.data_source import PushMode

            from feature_repo.definitions import INTERACTION_PUSH_SOURCE

            self.store.push(INTERACTION_PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE)
        else:
            self._write(views.pushed, rows)

    def _write_holdings(self, views: _Views, purchases: list[dict[str, Any]]) -> None:
        bought: dict[int, list[dict[str, Any]]] = {}
        for r in purchases:
            bought.setdefault(int(r["customer_id"]), []).append(r)
        customers = sorted(bought)
        current = self._read(views.holdings, customers, _HOLDINGS_FEATURES)
        rows = []
        for customer_id, (stamp, values) in zip(customers, current, strict=True):
            held = set(values.get("held_product_ids") or [])
            held |= {r["product_id"] for r in bought[customer_id]}
            row: dict[str, Any] = {
                "customer_id": customer_id,
                "held_product_ids": sorted(held),
                "n_holdings": len(held),
                "event_timestamp": _after(max(_moment(r) for r in bought[customer_id]), stamp),
            }
            for category in domain.CATEGORIES:
                row[f"held_{category}"] = sum(
                    1
                    for p in held
                    if p in self.catalogue and self.catalogue[p].category == category
                )
            rows.append(row)
        self._write([views.holdings], rows)


@dataclass(frozen=True)
class _Views:
    pushed: list[Any]  # every view the interaction push source feeds
    sequence: Any
    holdings: Any
    precomputed: bool  # a feature service precomputes them: write through FeatureStore.push


def _moment(event: dict[str, Any]) -> datetime:
    return _EPOCH + timedelta(microseconds=int(event["event_timestamp"]))


def _after(latest: datetime, stored: datetime | None) -> datetime:
    """The row timestamp to write: ``latest``, or just after the stored row's when that is not
    earlier. Feast's Redis store skips a row whose timestamp is not after the stored one, which
    would silently drop a second update in the same second, or one for late events."""
    if stored is not None and latest <= stored:
        return stored + _STEP
    return latest


class ApplyLoop:
    """Runs ``apply_step`` in a daemon thread whenever woken (and every ``retry_s`` while
    records are pending), and lets callers wait until a WAL position is applied.

    ``apply_step(applied)`` applies one batch: True if it applied something, None if nothing
    was pending, False if it failed (the records stay pending); it calls ``applied(position)``
    as soon as the batch is applied, before its slower durable cursor commit, so waiters are
    answered first. ``applied()`` is the committed WAL position everything before which is
    applied; ``pending()`` whether records await application.
    """

    def __init__(
        self,
        apply_step: Callable[[Callable[[WalPosition], None]], bool | None],
        applied: Callable[[], WalPosition],
        pending: Callable[[], bool],
        retry_s: float = 1.0,
        lag_samples: int = 10_000,
    ):
        self._apply_step = apply_step
        self._committed = applied
        self._applied_at = WalPosition(0, 0)  # applied, maybe not committed yet
        self._pending = pending
        self.retry_s = retry_s
        self._cond = threading.Condition()
        self._wanted = False
        self._stopping = False
        self._attempts = 0  # attempts started so far
        self._last_failed = 0  # number of the latest attempt that failed
        self._thread: threading.Thread | None = None
        # (WAL end of an ingest, monotonic time it was durable), until that end is applied.
        self._acked: deque[tuple[WalPosition, float]] = deque(maxlen=100_000)
        # asyncio waiters: (position, attempts started when it began waiting, loop, future).
        self._futures: list[
            tuple[WalPosition, int, asyncio.AbstractEventLoop, asyncio.Future[bool]]
        ] = []
        self.lag_s: deque[float] = deque(maxlen=lag_samples)

    def start(self, warm_up: Callable[[], object] | None = None) -> None:
        """Start the thread (idempotent); ``warm_up`` runs in it first (errors are logged: the
        first real apply meets and reports the same)."""
        with self._cond:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, args=(warm_up,), name="events-online-apply", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._settle()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def wake(self, acked: WalPosition | None = None) -> None:
        """Ask for an apply now; ``acked``: the WAL end of an acknowledged ingest (for lag)."""
        with self._cond:
            if acked is not None:
                self._acked.append((acked, time.monotonic()))
            self._wanted = True
            self._cond.notify_all()

    def wait_applied(self, position: WalPosition, timeout_s: float) -> bool:
        """True once everything before ``position`` is applied; False after ``timeout_s``, or
        as soon as an attempt that started after this call failed (Redis down: don't wait)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            started = self._attempts
            while self._applied() < position:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._last_failed > started or self._stopping:
                    return False
                self._cond.wait(remaining)
            return True

    async def wait_applied_async(self, position: WalPosition, timeout_s: float) -> bool:
        """:meth:`wait_applied` for a coroutine: the event loop is not blocked meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self._cond:
            if self._applied() >= position:
                return True
            if self._stopping or timeout_s <= 0:
                return False
            self._futures.append((position, self._attempts, loop, future))
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return False

    def _run(self, warm_up: Callable[[], object] | None) -> None:
        if warm_up is not None:
            self._guarded(warm_up)
        while True:
            with self._cond:
                if not self._wanted and not self._stopping:
                    self._cond.wait(self.retry_s)  # woken by an ingest, or time to retry
                if self._stopping:
                    return
                self._wanted = False
                if not self._pending():
                    self._settle()  # applied by someone else (an orphan drain, a direct call)
                    self._cond.notify_all()
                    continue
                self._attempts += 1
                attempt = self._attempts
            while True:
                outcome = self._guarded(lambda: self._apply_step(self._mark_applied))
                with self._cond:
                    if outcome is False:
                        self._last_failed = attempt
                    self._settle()
                    self._cond.notify_all()
                if outcome is not True or self._stopping:
                    break

    @staticmethod
    def _guarded(step: Callable[[], Any]) -> bool | None:
        """Run ``step``; an unexpected error counts as a failed attempt instead of ending the
        thread (requests would then wait for an apply that never comes)."""
        try:
            outcome: bool | None = step()
        except Exception:  # logged with its stack; the records stay pending
            log.exception("events: online apply failed")
            return False
        return outcome

    def _applied(self) -> WalPosition:
        return max(self._applied_at, self._committed())

    def _mark_applied(self, position: WalPosition) -> None:
        with self._cond:
            self._applied_at = max(self._applied_at, position)
            self._settle()
            self._cond.notify_all()

    def _settle(self) -> None:
        """Answer the asyncio waiters whose position is applied (True) or whose attempt failed
        (False), and record the ack-to-applied lag of every ingest now applied (condition
        held)."""
        applied, now = self._applied(), time.monotonic()
        while self._acked and self._acked[0][0] <= applied:
            self.lag_s.append(now - self._acked.popleft()[1])
        waiting = []
        for entry in self._futures:
            position, started, loop, future = entry
            if future.done():
                continue  # timed out
            if position <= applied or self._last_failed > started or self._stopping:
                loop.call_soon_threadsafe(_resolve, future, position <= applied)
            else:
                waiting.append(entry)
        self._futures = waiting


def _resolve(future: asyncio.Future[bool], applied: bool) -> None:
    if not future.done():  # a waiter that timed out has cancelled it
        future.set_result(applied)


__all__ = ["APPLY_ERRORS", "ApplyLoop", "OnlineUpdate"]
