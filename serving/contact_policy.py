"""Cross-app contact counters in Redis: impressions per product and customer per day and week,
and dismissal cooldowns. Every replica of every app reads and writes the same keys, so a cap set
in the mobile app holds in internet banking."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from serving.rules import ContactState

KEY_PREFIX = "persona:contact"
_ALL = "_all"
_DAY_TTL_S = 2 * 86_400
_WEEK_TTL_S = 8 * 86_400
#: Dismissals are kept longer than any sensible cooldown.
_DISMISSAL_TTL_S = 180 * 86_400


def _day(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y%m%d")


def _week(ts_s: float) -> str:
    year, week, _ = datetime.fromtimestamp(ts_s, UTC).isocalendar()
    return f"{year}W{week:02d}"


@dataclass(frozen=True)
class ContactEvent:
    customer_id: int
    product_id: str
    event_type: str  # impression or dismiss
    timestamp_s: float


class ContactCounters:
    """Reads and updates the counters; every read is one pipelined round trip."""

    def __init__(self, client: redis.Redis):
        self.client = client

    @staticmethod
    def _keys(customer_id: int, ts_s: float) -> tuple[str, str, str]:
        base = f"{KEY_PREFIX}:{customer_id}"
        return f"{base}:day:{_day(ts_s)}", f"{base}:week:{_week(ts_s)}", f"{base}:dismissed"

    def read(self, customer_id: int, now_s: float) -> ContactState:
        """The customer's counters now; raises ``redis.RedisError`` when Redis is unreachable."""
        day, week, dismissed = self._keys(customer_id, now_s)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(day)
        pipe.hgetall(week)
        pipe.hgetall(dismissed)
        day_counts, week_counts, dismissals = pipe.execute()

        def ints(raw: dict[bytes, bytes]) -> dict[str, int]:
            return {k.decode(): int(v) for k, v in raw.items()}

        today, this_week = ints(day_counts), ints(week_counts)
        return ContactState(
            available=True,
            product_today=today,
            product_week=this_week,
            customer_today=today.pop(_ALL, 0),
            customer_week=this_week.pop(_ALL, 0),
            dismissed_at_s={k.decode(): float(v) for k, v in dismissals.items()},
        )

    def record(self, events: Iterable[ContactEvent]) -> int:
        """Count impressions and remember dismissals (the rules version in force decides how long
        a dismissal cools a product down); one round trip for the batch."""
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for e in events:
            day, week, dismissed = self._keys(e.customer_id, e.timestamp_s)
            if e.event_type == "impression":
                for key, ttl in ((day, _DAY_TTL_S), (week, _WEEK_TTL_S)):
                    pipe.hincrby(key, e.product_id, 1)
                    pipe.hincrby(key, _ALL, 1)
                    pipe.expire(key, ttl)
                n += 1
            elif e.event_type == "dismiss":
                pipe.hset(dismissed, e.product_id, f"{e.timestamp_s:.3f}")
                pipe.expire(dismissed, _DISMISSAL_TTL_S)
                n += 1
        if n:
            pipe.execute()
        return n
