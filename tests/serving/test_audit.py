"""The decision audit log on the real Redis: records are readable as soon as they are written
(queued or stored), reach Redis with their TTL, and go to the local file when Redis is gone."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from serving.audit import AUDIT_TTL_S, AuditLog, audit_key

REDIS_URL = os.environ.get("PERSONA_REDIS_URL", "redis://127.0.0.1:6379/0")
pytestmark = pytest.mark.redis


def record(app: str = "rib") -> dict[str, object]:
    return {"request_id": uuid.uuid4().hex, "app": app, "served": [{"product_id": "card_gold"}]}


def test_written_records_are_readable_at_once_and_stored_with_their_ttl(tmp_path: Path) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    audit = AuditLog(client, tmp_path)
    records = [record() for _ in range(500)]
    for r in records:
        audit.write(r)
        assert audit.read(str(r["request_id"])) == r  # queued or already stored
    deadline = time.monotonic() + 10
    last = str(records[-1]["request_id"])
    while client.get(audit_key(last)) is None:
        assert time.monotonic() < deadline, "the writer never stored the records"
        time.sleep(0.01)
    audit.close()
    for r in records:
        key = audit_key(str(r["request_id"]))
        assert json.loads(client.get(key) or b"null") == r
        assert 0 < client.ttl(key) <= AUDIT_TTL_S
    assert not list(tmp_path.glob("audit-*.jsonl"))


def test_records_go_to_the_local_file_when_redis_is_unreachable(tmp_path: Path) -> None:
    unreachable = redis.Redis(
        port=1, socket_connect_timeout=0.05, socket_timeout=0.05, retry=Retry(NoBackoff(), 0)
    )
    audit = AuditLog(unreachable, tmp_path)
    records = [record("cib") for _ in range(20)]
    for r in records:
        audit.write(r)
    audit.close()
    lines = [
        json.loads(x) for f in tmp_path.glob("audit-*.jsonl") for x in f.read_text().splitlines()
    ]
    assert sorted(lines, key=str) == sorted(records, key=str)
