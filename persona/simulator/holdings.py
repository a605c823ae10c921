"""Holdings: what customers own at the start, what they buy, and term deposits that mature."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa

from persona import domain
from persona.layout import conform
from persona.schemas import HOLDINGS
from persona.simulator.catalogue import Catalogue
from persona.simulator.encoding import US_PER_DAY, decode, timestamps
from persona.simulator.ground_truth import PreferenceModel

#: Order in which initial holdings are drawn, so that e.g. a home loan can raise the chance of
#: home insurance (sequential effects only flow from products drawn earlier).
_DRAW_ORDER: Final = ("deposit", "loan", "card", "insurance", "investment", "payment")
#: Share of maturing term deposits that are paid out (closed); the rest roll over (stay open).
CLOSE_AT_MATURITY: Final = 0.7


@dataclass
class Maturity:
    """Term deposits that mature on one simulated day and are paid out (closed)."""

    customer: np.ndarray  # int64 row in the chunk
    product: np.ndarray  # int64 catalogue index


@dataclass
class HoldingsLedger:
    """Every holding row of a chunk plus the live ``held`` matrix the daily loop reads."""

    held: np.ndarray  # (n, P) bool, currently open holdings
    customer_ids: np.ndarray  # int64 ids of the chunk's rows (to write the table)
    _customer: list[np.ndarray] = field(default_factory=list)
    _product: list[np.ndarray] = field(default_factory=list)
    _opened: list[np.ndarray] = field(default_factory=list)
    _closed: list[np.ndarray] = field(default_factory=list)
    #: Day index (0-based in the window) -> maturities paid out that day.
    maturities: dict[int, list[Maturity]] = field(default_factory=lambda: defaultdict(list))

    def add(
        self,
        customer: np.ndarray,
        product: np.ndarray,
        opened_us: np.ndarray,
        closed_us: np.ndarray,
    ) -> None:
        """Record holdings (``closed_us`` = -1 while open at the end of the window)."""
        self._customer.append(customer.astype(np.int64))
        self._product.append(product.astype(np.int64))
        self._opened.append(opened_us.astype(np.int64))
        self._closed.append(closed_us.astype(np.int64))

    def schedule_term_maturities(
        self,
        rng: np.random.Generator,
        catalogue: Catalogue,
        customer: np.ndarray,
        product: np.ndarray,
        opened_us: np.ndarray,
        window_start_us: int,
        days: int,
    ) -> np.ndarray:
        """closed_at (µs, -1 = open) of new holdings; schedules pay-outs inside the window.

        A term deposit matures ``term_days`` after opening, at 00:00 UTC of that day. Inside the
        window it is paid out (closed) with probability :data:`CLOSE_AT_MATURITY`.
        """
        term = catalogue.term_days[product].astype(np.int64)
        opened_day = (opened_us - window_start_us) // US_PER_DAY
        maturity_day = opened_day + term
        closes = (term > 0) & (maturity_day < days) & (rng.random(len(product)) < CLOSE_AT_MATURITY)
        closed_us = np.where(closes, window_start_us + maturity_day * US_PER_DAY, -1)
        for day in np.unique(maturity_day[closes]):
            sel = closes & (maturity_day == day)
            self.maturities[int(day)].append(Maturity(customer[sel], product[sel]))
        return closed_us

    def to_arrow(self, catalogue: Catalogue) -> pa.Table:
        customer = np.concatenate(self._customer) if self._customer else np.zeros(0, np.int64)
        product = np.concatenate(self._product) if self._product else np.zeros(0, np.int64)
        opened = np.concatenate(self._opened) if self._opened else np.zeros(0, np.int64)
        closed = np.concatenate(self._closed) if self._closed else np.zeros(0, np.int64)
        table = pa.table(
            {
                "customer_id": self.customer_ids[customer],
                "product_id": decode(product, catalogue.product_ids),
                "opened_at": timestamps(opened),
                "closed_at": timestamps(np.maximum(closed, 0), null=closed < 0),
            }
        )
        return conform(table, HOLDINGS)


def initial_holdings(
    rng: np.random.Generator,
    *,
    customer_ids: np.ndarray,
    traits: np.ndarray,
    eligible: np.ndarray,
    relationship_us: np.ndarray,
    catalogue: Catalogue,
    model: PreferenceModel,
    window_start_us: int,
    days: int,
) -> HoldingsLedger:
    """Holdings open at the start of the window, drawn from the hidden model.

    P(hold p) = sigmoid(hold_bias + scale * traits·attributes + sequential effects of products
    drawn earlier), restricted to products the customer is eligible for. Opened between the
    relationship start and the window start; term deposits are opened within one term before
    the window, so some mature inside it.
    """
    n = len(customer_ids)
    held = np.zeros((n, catalogue.size), dtype=bool)
    order = [
        int(p)
        for category in _DRAW_ORDER
        for p in np.flatnonzero(catalogue.category_index == domain.BANK_CATEGORIES.index(category))
    ]
    for p in order:
        logit = (
            model.initial_holding_logit(traits, p)
            + held.astype(np.float32) @ model.sequential[:, p]
        )
        held[:, p] = eligible[:, p] & (rng.random(n) < 1.0 / (1.0 + np.exp(-logit)))

    customer, product = np.nonzero(held)
    span = window_start_us - US_PER_DAY - relationship_us[customer]  # opened >= 1 day before start
    opened = relationship_us[customer] + (rng.random(len(customer)) * span).astype(np.int64)
    term_us = catalogue.term_days[product].astype(np.int64) * US_PER_DAY
    is_term = term_us > 0
    # Term deposits: opened within one term before the window (never before the relationship).
    earliest = np.maximum(relationship_us[customer], window_start_us - term_us)
    term_opened = earliest + (rng.random(len(customer)) * (window_start_us - earliest)).astype(
        np.int64
    )
    opened = np.where(is_term, term_opened, opened)

    ledger = HoldingsLedger(held=held, customer_ids=customer_ids)
    closed = ledger.schedule_term_maturities(
        rng, catalogue, customer, product, opened, window_start_us, days
    )
    ledger.add(customer, product, opened, closed)
    return ledger
