"""Per-app rate limits: a token bucket in Redis, shared by every replica.

One Lua script refills and takes atomically on the server (Redis's clock, so replicas on hosts
with skewed clocks agree), and answers how long until the request would fit: the caller turns
that into ``429`` with ``Retry-After``. Buckets are keyed by app and endpoint; events cost one
token per event, recommendations one per request.

When Redis does not answer within its short timeout, each replica falls back to a local bucket
with the same rate (so an outage neither lifts the limit nor turns into errors) and retries
Redis after a pause, not on every request.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Final

import redis

from serving.config import RateLimit

KEY_PREFIX: Final = "persona:ratelimit"
#: After a Redis failure, use the local buckets this long before trying Redis again.
REDIS_RETRY_AFTER_S: Final = 1.0

# KEYS[1] bucket; ARGV[1] tokens per second, ARGV[2] burst, ARGV[3] cost.
# Returns {allowed (0/1), milliseconds until `cost` tokens are there}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    shared: bool  # decided by the Redis bucket (False: this replica's local fallback)

    @property
    def retry_after_header(self) -> str:
        """HTTP ``Retry-After`` is whole seconds: rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


class LocalBucket:
    """The same token bucket in process memory (thread-safe)."""

    def __init__(self, limit: RateLimit):
        self.limit = limit
        self.tokens = float(limit.burst)
        self.at = time.monotonic()
        self._lock = threading.Lock()

    def take(self, cost: int) -> tuple[bool, float]:
        with self._lock:
            now = time.monotonic()
            rate, burst = self.limit.per_second, self.limit.burst
            self.tokens = min(burst, self.tokens + (now - self.at) * rate)
            self.at = now
            if self.tokens >= cost:
                self.tokens -= cost
                return True, 0.0
            return False, (cost - self.tokens) / rate


class RateLimiter:
    """Buckets per (app, endpoint) from the apps' configured limits."""

    def __init__(
        self,
        limits: dict[tuple[str, str], RateLimit],
        client: redis.Redis | None,
    ):
        self.limits = limits
        self.client = client
        self._script = client.register_script(_TAKE) if client is not None else None
        self._local = {key: LocalBucket(limit) for key, limit in limits.items()}
        self._redis_down_until = 0.0

    def take(self, app: str, endpoint: str, cost: int = 1) -> Verdict:
        limit = self.limits.get((app, endpoint))
        if limit is None:
            return Verdict(True, 0.0, shared=False)
        if cost > limit.burst:
            # Can never fit: say so rather than ask the caller to retry forever.
            raise ValueError(f"{endpoint}: a cost of {cost} exceeds the burst of {limit.burst}")
        if self._script is not None and time.monotonic() >= self._redis_down_until:
            try:
                allowed, wait_ms = self._script(
                    keys=[f"{KEY_PREFIX}:{app}:{endpoint}"],
                    args=[limit.per_second, limit.burst, cost],
                )
                return Verdict(bool(allowed), int(wait_ms) / 1e3, shared=True)
            except (redis.RedisError, OSError):
                self._redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_S
        allowed, wait_s = self._local[(app, endpoint)].take(cost)
        return Verdict(allowed, wait_s, shared=False)
