"""Per-app token buckets on the real Redis: shared by every replica, refusals say when to come
back, apps and endpoints are separate, and a Redis outage falls back to local buckets."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis

from serving.config import AppRateLimits, RateLimit
from serving.rate_limit import RateLimiter

REDIS_URL = os.environ.get("PERSONA_REDIS_URL", "redis://127.0.0.1:6379/0")
pytestmark = pytest.mark.redis


def limiter(app: str, per_second: float, burst: int, url: str = REDIS_URL) -> RateLimiter:
    client = redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.05)
    return RateLimiter(
        {(app, "recommendations"): RateLimit(per_second=per_second, burst=burst)}, client
    )


def fresh_app() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"  # bucket keys no other test touches


def test_a_burst_then_refusals_that_say_when_a_token_is_back() -> None:
    app = fresh_app()
    bucket = limiter(app, per_second=4, burst=3)
    verdicts = [bucket.take(app, "recommendations") for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert all(v.shared for v in verdicts)
    refused = verdicts[-1]
    assert 0 < refused.retry_after_s <= 0.25 + 0.01
    assert refused.retry_after_header == "1"  # whole seconds, rounded up
    time.sleep(refused.retry_after_s + 0.02)
    assert bucket.take(app, "recommendations").allowed


def test_replicas_share_one_bucket() -> None:
    app = fresh_app()
    replicas = [limiter(app, per_second=0.5, burst=6) for _ in range(3)]
    allowed = sum(replicas[i % 3].take(app, "recommendations").allowed for i in range(30))
    assert allowed == 6  # not 3 x 6: the bucket is in Redis


def test_apps_and_endpoints_have_their_own_buckets() -> None:
    a, b = fresh_app(), fresh_app()
    limit = RateLimit(per_second=0.1, burst=2)
    client = redis.Redis.from_url(REDIS_URL)
    shared = RateLimiter(
        {(a, "recommendations"): limit, (b, "recommendations"): limit, (a, "events"): limit},
        client,
    )
    assert [shared.take(a, "recommendations").allowed for _ in range(3)] == [True, True, False]
    assert shared.take(b, "recommendations").allowed
    assert shared.take(a, "events").allowed
    assert shared.take("unconfigured", "recommendations").allowed  # no limit configured


def test_a_batch_costs_its_size_and_one_larger_than_the_burst_is_refused_outright() -> None:
    app = fresh_app()
    events = RateLimiter(
        {(app, "events"): RateLimit(per_second=1, burst=100)}, redis.Redis.from_url(REDIS_URL)
    )
    assert events.take(app, "events", cost=60).allowed
    refused = events.take(app, "events", cost=60)
    assert not refused.allowed and 19 <= refused.retry_after_s <= 21
    with pytest.raises(ValueError, match="exceeds the burst"):
        events.take(app, "events", cost=101)


def test_without_redis_each_replica_still_limits_with_a_local_bucket() -> None:
    app = fresh_app()
    unreachable = limiter(app, per_second=1, burst=3, url="redis://127.0.0.1:1/0")
    verdicts = [unreachable.take(app, "recommendations") for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert not any(v.shared for v in verdicts)


def test_a_config_whose_event_burst_cannot_hold_a_full_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="largest batch"):
        AppRateLimits(
            recommendations=RateLimit(per_second=10, burst=10),
            events=RateLimit(per_second=10, burst=999),
        )


def test_the_config_limit_matches_the_api_batch_limit() -> None:
    from serving.api import MAX_EVENTS_PER_BATCH
    from serving.config import EVENT_BATCH_LIMIT

    assert EVENT_BATCH_LIMIT == MAX_EVENTS_PER_BATCH
