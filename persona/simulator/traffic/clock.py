"""The simulated clock's midnight for serving's contact policy.

Serving counts impressions per customer and product in Redis hashes keyed by the *real* UTC
day and ISO week. A traffic run compresses many simulated days into minutes of one real day,
so at each simulated midnight the run ends the day for the counters: it deletes the day
hashes (and, every seven simulated days, the week hashes). Dismissals are kept: serving's
cooldown (days of real time) then holds for the rest of the run.
"""

from __future__ import annotations

from typing import Final

import redis

from serving.contact_policy import KEY_PREFIX

_BATCH: Final = 1_000


def _delete_matching(client: redis.Redis, pattern: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=_BATCH):
        batch.append(key)
        if len(batch) >= _BATCH:
            deleted += int(client.delete(*batch))
            batch = []
    if batch:
        deleted += int(client.delete(*batch))
    return deleted


def end_contact_day(client: redis.Redis, *, end_week: bool) -> int:
    """Delete the day counters (and the week counters with ``end_week``); returns how many."""
    deleted = _delete_matching(client, f"{KEY_PREFIX}:*:day:*")
    if end_week:
        deleted += _delete_matching(client, f"{KEY_PREFIX}:*:week:*")
    return deleted
