"""Cross-app contact counters on the real Redis: impressions counted per product, customer,
day and week whatever the app; dismissals remembered; reads are one consistent snapshot."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import pytest
import redis

from serving.contact_policy import ContactCounters, ContactEvent

REDIS_URL = os.environ.get("PERSONA_REDIS_URL", "redis://127.0.0.1:6379/0")
pytestmark = pytest.mark.redis


@pytest.fixture
def counters() -> ContactCounters:
    return ContactCounters(redis.Redis.from_url(REDIS_URL))


def test_impressions_count_per_day_and_week_and_dismissals_are_kept(
    counters: ContactCounters,
) -> None:
    customer = int(uuid.uuid4().int % 10**12) + 10**12  # a fresh id: keys no other test touches
    monday = datetime(2026, 11, 23, 9, tzinfo=UTC).timestamp()
    tuesday = monday + 86_400
    counters.record(
        [
            ContactEvent(customer, "card_gold", "impression", monday),
            ContactEvent(customer, "card_gold", "impression", tuesday),
            ContactEvent(customer, "loan_car", "impression", tuesday),
            ContactEvent(customer, "loan_car", "dismiss", tuesday),
            ContactEvent(customer, "card_gold", "click", tuesday),  # not a contact
        ]
    )
    state = counters.read(customer, tuesday + 60)
    assert state.available
    assert state.product_today == {"card_gold": 1, "loan_car": 1}
    assert state.product_week == {"card_gold": 2, "loan_car": 1}
    assert (state.customer_today, state.customer_week) == (2, 3)
    assert state.dismissed_at_s == {"loan_car": pytest.approx(tuesday)}
    next_week = counters.read(customer, monday + 7 * 86_400)
    assert next_week.product_week == {} and next_week.customer_week == 0


def test_unreachable_redis_raises_for_the_caller_to_degrade() -> None:
    dead = ContactCounters(redis.Redis(port=1, socket_connect_timeout=0.2))
    with pytest.raises(redis.ConnectionError):
        dead.read(1, 0.0)
