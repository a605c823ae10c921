"""Cross-app contact counters in Redis: impressions per product and customer per day and week,
and dismissal cooldowns. Every replica of every app reads and writes the same keys, so a cap set
in the mobile app holds in internet banking."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import redis

from serving.rules import ContactState

KEY_PREFIX = "persona:contact"
_ALL = "_all"
_DAY_TTL_S = 2 * 86_400
_WEEK_TTL_S = 8 * 86_400
#: Dismissals are kept longer than any sensible cooldown.
_DISMISSAL_TTL_S = 180 * 86_400
_DAY_S = 86_400
#: Most hash keys one increment script call touches (bounds how long it holds Redis).
_KEYS_PER_SCRIPT = 500
#: HINCRBY every (field, by) pair of each key, then EXPIRE the key: a whole batch of counter
#: updates in one command, atomic like the MULTI it runs in. KEYS[i]: a counter hash; ARGV per
#: key, in order: its TTL in seconds, its number of pairs n, then n (field, by) pairs.
_INCREMENT_SCRIPT = """
local a = 1
for _, key in ipairs(KEYS) do
  local ttl, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    redis.call('HINCRBY', key, ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  redis.call('EXPIRE', key, ttl)
end
return #KEYS
"""


@lru_cache(maxsize=64)
def _day_and_week(day_number: int) -> tuple[str, str]:
    """The day key (``YYYYMMDD``) and ISO week key (``YYYYWww``) of a UTC day since epoch; cached
    because a batch of events spans a day or two."""
    day = datetime.fromtimestamp(day_number * _DAY_S, UTC)
    year, week, _ = day.isocalendar()
    return day.strftime("%Y%m%d"), f"{year}W{week:02d}"


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
        # Registering talks to nobody: the script is loaded (once) by the first pipeline using it.
        self._increment = client.register_script(_INCREMENT_SCRIPT)

    @staticmethod
    def _keys(customer_id: int, ts_s: float) -> tuple[str, str, str]:
        base = f"{KEY_PREFIX}:{customer_id}"
        day, week = _day_and_week(int(ts_s // _DAY_S))
        return f"{base}:day:{day}", f"{base}:week:{week}", f"{base}:dismissed"

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
        a dismissal cools a product down); one round trip for the batch, all or nothing."""
        pipe = self.client.pipeline(transaction=True)
        n = self.record_into(pipe, events)
        if n:
            pipe.execute()
        return n

    def record_into(self, pipe: redis.client.Pipeline, events: Iterable[ContactEvent]) -> int:
        """Queue the batch's counter updates on ``pipe`` (a redis pipeline the caller executes);
        returns how many events count. Increments are summed per key and field and applied by
        one script call per :data:`_KEYS_PER_SCRIPT` keys, each key's TTL set once: the same end
        state as one HINCRBY + EXPIRE per event, in a few commands."""
        increments: dict[str, dict[str, int]] = {}
        dismissals: dict[str, dict[str, str]] = {}
        ttls: dict[str, int] = {}
        n = 0
        for e in events:
            if e.event_type == "impression":
                day, week, _ = self._keys(e.customer_id, e.timestamp_s)
                for key, ttl in ((day, _DAY_TTL_S), (week, _WEEK_TTL_S)):
                    fields = increments.setdefault(key, {})
                    fields[e.product_id] = fields.get(e.product_id, 0) + 1
                    fields[_ALL] = fields.get(_ALL, 0) + 1
                    ttls[key] = ttl
                n += 1
            elif e.event_type == "dismiss":
                dismissed = f"{KEY_PREFIX}:{e.customer_id}:dismissed"
                # The latest dismissal in event order wins, as with one HSET per event.
                dismissals.setdefault(dismissed, {})[e.product_id] = f"{e.timestamp_s:.3f}"
                n += 1
        keys = list(increments)
        for start in range(0, len(keys), _KEYS_PER_SCRIPT):
            chunk = keys[start : start + _KEYS_PER_SCRIPT]
            args: list[str | int] = []
            for key in chunk:
                args += [ttls[key], len(increments[key])]
                for field, count in increments[key].items():
                    args += [field, count]
            self._increment(keys=chunk, args=args, client=pipe)
        for key, at in dismissals.items():
            pipe.hset(key, mapping=at)
            pipe.expire(key, _DISMISSAL_TTL_S)
        return n
