"""The events engine: validated events are written to the replica's write-ahead log (fsynced)
before they are acknowledged, then applied online (contact counters, the customer's behaviour
sequence and holdings in the feature store, cache invalidation) and flushed to the Parquet event
log by a background worker. Whatever cannot be applied now (Redis down) stays pending in the WAL
and is retried; a dead replica's WAL is adopted and drained by a live one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import pandas as pd
import redis

from persona import domain
from persona.features.catalog import SEQUENCE_LENGTH
from serving.audit import audit_key
from serving.catalogue import Catalogue
from serving.contact_policy import ContactCounters, ContactEvent
from serving.event_log import EventLogWriter
from serving.event_wal import WalLockedError, WriteAheadLog, adopt_orphans
from serving.features import INVALIDATION_CHANNEL, serving_repo_config
from serving.settings import ServingArgs

log = logging.getLogger(__name__)

ONLINE_CURSOR: Final = "online"
APPLY_BATCH: Final = 5_000
_SEQUENCE_FEATURES: Final = [
    "customer_sequence:seq_product_ids",
    "customer_sequence:seq_event_types",
    "customer_sequence:seq_timestamps",
]
_HOLDINGS_FEATURES: Final = ["customer_holdings:held_product_ids"]


def _seconds(event: dict[str, Any]) -> float:
    return int(event["event_timestamp"]) / 1e6


class EventProcessor:
    """One replica's event path. Thread-safe; ``ingest`` is the only call on the request path."""

    def __init__(self, args: ServingArgs, owner: str, catalogue: Catalogue):
        from feast import FeatureStore

        self.args = args
        self.catalogue = catalogue
        self.wal_root = args.serving_dir / "wal"
        self.wal = WriteAheadLog(self.wal_root, owner)
        self.writer = EventLogWriter(args.live_event_log)
        self.client = (
            redis.Redis.from_url(args.redis_url, socket_timeout=0.2, socket_connect_timeout=0.2)
            if args.online_store == "redis"
            else None
        )
        self.counters = ContactCounters(self.client) if self.client is not None else None
        self.store = FeatureStore(
            config=serving_repo_config(args.persona_settings(), args.online_store, 0.2)
        )
        self._online_lock = threading.Lock()

    # -- request path --------------------------------------------------------------------

    def ingest(self, events: list[dict[str, Any]]) -> tuple[list[str], bool]:
        """Durably log ``events`` (canonical EVENTS records), then try to apply them online.
        Returns (event ids, applied online now). Raises ValueError for an invalid record."""
        self._fill_from_audit(events)
        self.wal.append(events)
        return [e["event_id"] for e in events], self.apply_online()

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
        """Apply every pending record of ``wal`` (default: own) online; False if the store or
        Redis failed (the records stay pending and the worker retries)."""
        wal = wal or self.wal
        with self._online_lock:
            while True:
                records, position = wal.pending(ONLINE_CURSOR, APPLY_BATCH)
                if not records:
                    return True
                try:
                    self._apply(records)
                except (redis.RedisError, OSError, ConnectionError) as error:
                    log.warning("events: online apply deferred (%s)", error)
                    return False
                wal.commit(ONLINE_CURSOR, position)

    def _apply(self, records: list[dict[str, Any]]) -> None:
        if self.counters is not None:
            self.counters.record(
                ContactEvent(r["customer_id"], r["product_id"], r["event_type"], _seconds(r))
                for r in records
                if r["event_type"] in ("impression", "dismiss") and r.get("product_id")
            )
        interactions = [
            r
            for r in records
            if r["event_type"] in domain.PRODUCT_INTERACTIONS and r.get("product_id")
        ]
        if interactions:
            self._push_sequences(interactions)
        purchases = [r for r in records if r["event_type"] == "purchase" and r.get("product_id")]
        if purchases:
            self._write_holdings(purchases)
        if interactions and self.client is not None:
            ids = sorted({str(r["customer_id"]) for r in interactions})
            self.client.publish(INVALIDATION_CHANNEL, ",".join(ids))

    def _read(self, features: list[str], customer_ids: list[int]) -> dict[str, list[Any]]:
        return self.store.get_online_features(
            features=features, entity_rows=[{"customer_id": c} for c in customer_ids]
        ).to_dict()

    def _push_sequences(self, interactions: list[dict[str, Any]]) -> None:
        from feast.data_source import PushMode

        from feature_repo.definitions import INTERACTION_PUSH_SOURCE

        customers = sorted({int(r["customer_id"]) for r in interactions})
        current = self._read(_SEQUENCE_FEATURES, customers)
        rows = []
        for i, customer_id in enumerate(customers):
            known = list(
                zip(
                    current["seq_product_ids"][i] or [],
                    current["seq_event_types"][i] or [],
                    current["seq_timestamps"][i] or [],
                    strict=False,
                )
            )
            new = [
                (r["product_id"], r["event_type"], int(_seconds(r)))
                for r in interactions
                if int(r["customer_id"]) == customer_id
            ]
            merged = sorted(set(known) | set(new), key=lambda t: (t[2], t[0], t[1]))[
                -SEQUENCE_LENGTH:
            ]
            rows.append(
                {
                    "customer_id": customer_id,
                    "seq_product_ids": [m[0] for m in merged],
                    "seq_event_types": [m[1] for m in merged],
                    "seq_timestamps": [m[2] for m in merged],
                    "seq_length": len(merged),
                    "event_timestamp": datetime.fromtimestamp(max(m[2] for m in merged), UTC),
                }
            )
        self.store.push(INTERACTION_PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE)

    def _write_holdings(self, purchases: list[dict[str, Any]]) -> None:
        customers = sorted({int(r["customer_id"]) for r in purchases})
        current = self._read(_HOLDINGS_FEATURES, customers)
        rows = []
        for i, customer_id in enumerate(customers):
            held = set(current["held_product_ids"][i] or [])
            bought = [r for r in purchases if int(r["customer_id"]) == customer_id]
            held |= {r["product_id"] for r in bought}
            row: dict[str, Any] = {
                "customer_id": customer_id,
                "held_product_ids": sorted(held),
                "n_holdings": len(held),
                "event_timestamp": datetime.fromtimestamp(max(_seconds(r) for r in bought), UTC),
            }
            for category in domain.CATEGORIES:
                row[f"held_{category}"] = sum(
                    1
                    for p in held
                    if p in self.catalogue and self.catalogue[p].category == category
                )
            rows.append(row)
        self.store.write_to_online_store("customer_holdings", pd.DataFrame(rows))

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
    """Flushes and applies on an interval in a daemon thread; adopts orphans every minute."""

    def __init__(self, processor: EventProcessor, interval_s: float):
        self.processor = processor
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events-worker", daemon=True)
        self._last_adopt = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.processor.flush()
                self.processor.apply_online()
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
