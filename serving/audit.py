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

log = logging.getLogger(__name__)

AUDIT_TTL_S: Final = 7 * 86_400
KEY_PREFIX: Final = "persona:audit"


def audit_key(request_id: str) -> str:
    return f"{KEY_PREFIX}:{request_id}"


class AuditLog:
    def __init__(self, client: redis.Redis | None, fallback_dir: Path):
        self.client = client
        self.fallback_dir = Path(fallback_dir)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> str:
        """Store one decision; returns where it went (``redis`` or ``file``)."""
        payload = json.dumps(record, separators=(",", ":"), default=str)
        if self.client is not None:
            try:
                self.client.set(audit_key(record["request_id"]), payload, ex=AUDIT_TTL_S)
                return "redis"
            except (redis.RedisError, OSError) as error:
                log.warning("audit: Redis unavailable (%s); writing to the local file", error)
        self.fallback_dir.mkdir(parents=True, exist_ok=True)
        with self._lock, (self.fallback_dir / f"audit-{os.getpid()}.jsonl").open("a") as f:
            f.write(payload + "\n")
        return "file"

    def read(self, request_id: str) -> dict[str, Any] | None:
        if self.client is None:
            return None
        raw = self.client.get(audit_key(request_id))
        return json.loads(raw) if isinstance(raw, bytes | str) and raw else None
