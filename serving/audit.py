"""The decision audit log: per request id, what was served (with variant, model and
propensities) and every candidate the rules removed, with rule and rules version.

Redis (7 days) for lookups by request id and for joining impressions back to what was served;
a local JSON-lines file takes the records while Redis is unreachable, so none is lost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Final

import redis
from pydantic_core import to_json

log = logging.getLogger(__name__)

AUDIT_TTL_S: Final = 7 * 86_400
KEY_PREFIX: Final = "persona:audit"


def audit_key(request_id: str) -> str:
    return f"{KEY_PREFIX}:{request_id}"


class AuditLog:
    """Decision records off the request path: ``write`` encodes and queues; one writer thread
    drains everything queued in one pipelined round trip (so Redis latency never adds to a
    response, and batches grow with load). ``read`` sees queued records too. Records Redis
    does not take go to the local file, none is dropped."""

    def __init__(self, client: redis.Redis | None, fallback_dir: Path):
        self.client = client
        self.fallback_dir = Path(fallback_dir)
        self._file_lock = threading.Lock()
        self._pending: dict[str, str] = {}
        self._in_flight: dict[str, str] = {}  # taken by the writer, not yet acknowledged
        self._wake = threading.Condition()
        self._stop = False
        self._writer: threading.Thread | None = None

    def write(self, record: dict[str, Any]) -> None:
        """Queue one decision for Redis (or write it to the file on the embedded store)."""
        # pydantic-core's encoder (Rust): the same compact JSON, several times faster here.
        payload = to_json(record, fallback=str).decode()
        if self.client is None:
            self._to_file([payload])
            return
        with self._wake:
            self._pending[record["request_id"]] = payload
            self._wake.notify()
        if self._writer is None:
            self._start_writer()

    def read(self, request_id: str) -> dict[str, Any] | None:
        with self._wake:
            queued = self._pending.get(request_id) or self._in_flight.get(request_id)
        if queued is not None:
            return json.loads(queued)
        if self.client is None:
            return None
        raw = self.client.get(audit_key(request_id))
        return json.loads(raw) if isinstance(raw, bytes | str) and raw else None

    def flush(self) -> int:
        """Write everything queued now (tests, shutdown); returns how many records."""
        with self._wake:
            batch, self._pending = self._pending, {}
            self._in_flight.update(batch)
        self._store(batch)
        return len(batch)

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._writer is not None:
            self._writer.join(timeout=5)
        self.flush()

    def _start_writer(self) -> None:
        with self._wake:
            if self._writer is not None:
                return
            self._writer = threading.Thread(target=self._drain, name="audit-writer", daemon=True)
        self._writer.start()

    def _drain(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._pending or self._stop)
                if self._stop:
                    return
                batch, self._pending = self._pending, {}
                self._in_flight.update(batch)
            self._store(batch)

    def _store(self, batch: dict[str, str]) -> None:
        try:
            self._store_batch(batch)
        finally:
            with self._wake:
                for request_id in batch:
                    self._in_flight.pop(request_id, None)

    def _store_batch(self, batch: dict[str, str]) -> None:
        if not batch:
            return
        if self.client is not None:
            try:
                pipe = self.client.pipeline(transaction=False)
                for request_id, payload in batch.items():
                    pipe.set(audit_key(request_id), payload, ex=AUDIT_TTL_S)
                pipe.execute()
                return
            except (redis.RedisError, OSError) as error:
                log.warning("audit: Redis unavailable (%s); writing to the local file", error)
        self._to_file(list(batch.values()))

    def _to_file(self, payloads: list[str]) -> None:
        self.fallback_dir.mkdir(parents=True, exist_ok=True)
        with self._file_lock, (self.fallback_dir / f"audit-{os.getpid()}.jsonl").open("a") as f:
            f.write("".join(p + "\n" for p in payloads))
