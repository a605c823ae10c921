"""The HTTP contract: request and response bodies of ``/v1/recommendations`` and ``/v1/events``.

Strict models (unknown fields refused) so a typo in a caller's payload is an error with the
field's name, never a silently ignored value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from persona import domain

App = Literal["rib", "cib", "nli", "imobile"]
Device = Literal["web", "ios", "android"]
EventType = Literal["impression", "click", "apply", "purchase", "dismiss", "login", "txn"]
#: Clock skew tolerated on event and request timestamps.
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_EVENTS_PER_BATCH = 1_000
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=256)


def _not_in_future(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamp needs a timezone (e.g. 2026-11-26T10:00:00Z)")
    if value - datetime.now(UTC) > MAX_CLOCK_SKEW:
        raise ValueError("timestamp is in the future")
    try:
        return value.astimezone(UTC)
    except OverflowError as error:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("timestamp is out of range in UTC") from error


class RequestContext(_Body):
    device: Device = "web"
    timestamp: datetime | None = Field(
        default=None, description="When the customer opened the app (default: now)."
    )

    _check_time = field_validator("timestamp")(_not_in_future)


class RecommendationRequest(_Body):
    customer_id: int = Field(ge=1, le=2**53, description="The bank's customer id.")
    app: App
    k: int | None = Field(
        default=None, ge=1, le=50, description="Items wanted (default: the app's default_k)."
    )
    context: RequestContext = Field(default_factory=RequestContext)
    explain: bool = Field(
        default=False, description="Also return the features and stages that shaped the answer."
    )


class RecommendedItem(BaseModel):
    product_id: str
    score: float
    rank: int
    reasons: list[str]
    propensity: float | None = Field(
        default=None, description="Probability the serving policy put this item in this slot."
    )


class RecommendationResponse(BaseModel):
    request_id: str
    items: list[RecommendedItem]
    model_version: str
    variant: str
    experiment: str | None
    variant_probability: float
    feature_service: str
    rules_version: str
    degraded: bool
    degraded_reasons: list[str]
    latency_ms: float
    explain: dict[str, object] | None = None


class EventIn(_Body):
    event_id: str | None = Field(
        default=None, pattern=_ID, description="Caller's id; makes retries idempotent downstream."
    )
    customer_id: int = Field(ge=1, le=2**53)
    app: App
    event_type: EventType
    product_id: str | None = Field(default=None, pattern=_ID)
    timestamp: datetime | None = Field(default=None, description="When it happened (default: now).")
    request_id: str | None = Field(default=None, pattern=_ID)
    position: int | None = Field(default=None, ge=1, le=100)
    amount: float | None = Field(default=None, ge=-1e9, le=1e9)
    device: Device | None = None

    _check_time = field_validator("timestamp")(_not_in_future)

    @model_validator(mode="after")
    def _product_events_name_a_product(self) -> EventIn:
        if self.event_type in ("impression", *domain.PRODUCT_INTERACTIONS) and not self.product_id:
            raise ValueError(f"product_id is required for {self.event_type} events")
        return self


class EventBatch(_Body):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


class EventAck(BaseModel):
    accepted: int
    durable: bool = Field(
        description="Every accepted event is on disk (fsynced) before this reply."
    )
    online_applied: bool = Field(
        description="Features and contact counters already updated (else the worker retries)."
    )
    event_ids: list[str]


def new_request_id() -> str:
    return uuid4().hex
