"""One customer as the online store knows them at request time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from persona import domain
from persona.features.catalog import SEQUENCE_LENGTH

#: Lower bound (years) of each age band; eligibility compares it with a product's minimum age.
AGE_BAND_FLOOR: dict[str, int] = {
    band: int(band.split("-")[0].rstrip("+")) for band in domain.AGE_BANDS
}


@dataclass(frozen=True)
class Interaction:
    product_id: str
    event_type: str
    timestamp_s: int


@dataclass(frozen=True)
class CustomerView:
    """Online features of one customer. ``known`` is False when the store has no profile (a new
    customer, or the store is unreachable): every rule then takes its conservative branch."""

    customer_id: int
    known: bool
    customer_type: str | None = None
    age_band: str | None = None
    income_band_index: int = -1
    kyc_level: int = 0
    risk_profile: str | None = None
    consent_marketing: bool = False
    apps_enrolled: frozenset[str] = frozenset()
    held: frozenset[str] = frozenset()
    segment: str = "unknown"
    sequence: tuple[Interaction, ...] = ()
    #: The raw feature vector (feature name -> value), for models that encode it themselves.
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def age_floor(self) -> int | None:
        return AGE_BAND_FLOOR.get(self.age_band) if self.age_band else None

    @classmethod
    def unknown(cls, customer_id: int) -> CustomerView:
        return cls(customer_id=customer_id, known=False)

    @classmethod
    def from_online(cls, customer_id: int, values: dict[str, Any]) -> CustomerView:
        """Build from a ``customer_context`` feature vector (names without view prefixes)."""
        known = values.get("customer_type") is not None
        ids = list(values.get("seq_product_ids") or [])
        types = list(values.get("seq_event_types") or [])
        times = list(values.get("seq_timestamps") or [])
        sequence = tuple(
            Interaction(str(p), str(t), int(s)) for p, t, s in zip(ids, types, times, strict=False)
        )[-SEQUENCE_LENGTH:]
        income = values.get("income_band_index")
        return cls(
            customer_id=customer_id,
            known=known,
            customer_type=values.get("customer_type"),
            age_band=values.get("age_band"),
            income_band_index=int(income) if income is not None else -1,
            kyc_level=int(values.get("kyc_level") or 0),
            risk_profile=values.get("risk_profile"),
            consent_marketing=bool(values.get("consent_marketing") or False),
            apps_enrolled=frozenset(values.get("apps_enrolled") or ()),
            held=frozenset(values.get("held_product_ids") or ()),
            segment=values.get("segment_id") or "unknown",
            sequence=sequence,
            raw=dict(values),
        )
