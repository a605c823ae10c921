"""One chunk of customers through the whole window, one day at a time, vectorised over customers.

Per day, in order: term deposits mature (00:00), money moves (salary/pension early morning,
card debits and business receivables through the day), customers log in, the logging policy
shows a slate per login, and the hidden model decides clicks, dismissals, applications and
purchases a few seconds to minutes after the impression. Nothing happens after 23:30, so no
timestamp leaves its day and none passes the end of the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

import numpy as np
import pyarrow as pa

from persona import domain
from persona.simulator.catalogue import Catalogue, eligible
from persona.simulator.config import SimulationConfig
from persona.simulator.customers import CustomerBlock, generate_customers
from persona.simulator.encoding import US_PER_DAY, US_PER_SECOND, day_start_us
from persona.simulator.events import EventBuffer
from persona.simulator.ground_truth import PreferenceModel, traits_table
from persona.simulator.holdings import HoldingsLedger, initial_holdings
from persona.simulator.logging_policy import LoggingPolicy

_US_PER_HOUR: Final = 3600 * US_PER_SECOND
#: Relative login intensity per hour 00..22 (daytime peaks: morning, lunch, evening).
_RETAIL_HOURS: Final = np.array(
    [0.3, 0.15, 0.08, 0.05, 0.05, 0.15, 0.5, 1.3, 2.2, 2.6, 2.4, 2.3, 2.9, 2.7, 2.1, 1.9, 1.9,
     2.1, 2.5, 3.0, 3.2, 2.6, 1.5]
)  # fmt: skip
_CORPORATE_HOURS: Final = np.array(
    [0.02, 0.01, 0.01, 0.01, 0.01, 0.05, 0.3, 1.2, 3.0, 3.6, 3.5, 3.2, 2.2, 2.8, 3.3, 3.2, 2.8,
     2.0, 1.0, 0.5, 0.3, 0.2, 0.1]
)  # fmt: skip
_HOUR_CDF: Final = {
    False: np.cumsum(_RETAIL_HOURS) / _RETAIL_HOURS.sum(),
    True: np.cumsum(_CORPORATE_HOURS) / _CORPORATE_HOURS.sum(),
}
_APP: Final = {name: i for i, name in enumerate(domain.APPS)}
_WEB: Final = domain.DEVICES.index("web")
_CREDIT_CATEGORIES: Final = (
    domain.BANK_CATEGORIES.index("card"),
    domain.BANK_CATEGORIES.index("loan"),
)


@dataclass
class ChunkOutput:
    """What one chunk produced, still as arrays (turned into Arrow by :meth:`tables`)."""

    chunk_index: int
    block: CustomerBlock
    ledger: HoldingsLedger
    events: EventBuffer

    def tables(self, catalogue: Catalogue) -> dict[str, pa.Table]:
        return {
            "customers": self.block.to_arrow(),
            "holdings": self.ledger.to_arrow(catalogue),
            "events": self.events.to_arrow(
                chunk_index=self.chunk_index,
                customer_ids=self.block.customer_id,
                product_ids=catalogue.product_ids,
            ),
            "customer_traits": traits_table(self.block.customer_id, self.block.traits),
        }


def chunk_rngs(seed: int, chunk_index: int) -> tuple[np.random.Generator, ...]:
    """Independent streams for customers, initial holdings and daily events of one chunk."""
    children = np.random.SeedSequence([seed, chunk_index]).spawn(3)
    return tuple(np.random.default_rng(s) for s in children)


def _daytime_us(rng: np.random.Generator, corporate: np.ndarray) -> np.ndarray:
    """Offsets within a day (µs) with realistic hour peaks; always before 23:00."""
    u = rng.random(len(corporate))
    hour = np.where(
        corporate,
        np.searchsorted(_HOUR_CDF[True], u * _HOUR_CDF[True][-1]),
        np.searchsorted(_HOUR_CDF[False], u * _HOUR_CDF[False][-1]),
    )
    hour = np.minimum(hour, len(_RETAIL_HOURS) - 1)
    return hour * _US_PER_HOUR + (rng.random(len(corporate)) * _US_PER_HOUR).astype(np.int64)


def _seconds_us(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    return (rng.uniform(low, high, n) * US_PER_SECOND).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _days_since_last_pay_day(pay_day: np.ndarray, start: date) -> np.ndarray:
    """Days from the last salary/pension credit before the window to its first day (365 when
    the customer has no monthly income)."""
    previous_month_days = (start.replace(day=1) - timedelta(days=1)).day
    pay_day = pay_day.astype(np.int32)  # int8 would overflow below
    since = np.where(
        pay_day <= start.day, start.day - pay_day, start.day + previous_month_days - pay_day
    )
    return np.where(pay_day > 0, since, 365).astype(np.float32)


def simulate_chunk(
    config: SimulationConfig,
    chunk_index: int,
    catalogue: Catalogue,
    model: PreferenceModel,
    policy: LoggingPolicy,
) -> ChunkOutput:
    """Simulate customers ``chunk_index * chunk_size + 1 ..`` over the whole window."""
    first = chunk_index * config.chunk_size
    n = min(config.chunk_size, config.customers - first)
    if n <= 0:
        raise ValueError(f"chunk_index: {chunk_index} is past the last chunk")
    rng_customers, rng_holdings, rng = chunk_rngs(config.seed, chunk_index)
    start_us = day_start_us(config.start_date)
    block = generate_customers(
        rng_customers, first + 1, n, config.corporate_share, config.start_date
    )
    can_buy = eligible(
        catalogue,
        is_corporate=block.is_corporate,
        age=block.age,
        income_index=block.income,
        kyc_level=block.kyc,
        risk_index=block.risk,
    )
    ledger = initial_holdings(
        rng_holdings,
        customer_ids=block.customer_id,
        traits=block.traits,
        eligible=can_buy,
        relationship_us=block.relationship_us,
        catalogue=catalogue,
        model=model,
        window_start_us=start_us,
        days=config.days,
    )
    loop = _DailyLoop(config, catalogue, model, policy, block, can_buy, ledger, rng, start_us)
    for day in range(config.days):
        loop.run_day(day)
    return ChunkOutput(chunk_index, block, ledger, loop.events)


class _DailyLoop:
    """Per-chunk state (holdings, fatigue, recency of salary and maturity) and one day's step."""

    def __init__(
        self,
        config: SimulationConfig,
        catalogue: Catalogue,
        model: PreferenceModel,
        policy: LoggingPolicy,
        block: CustomerBlock,
        can_buy: np.ndarray,
        ledger: HoldingsLedger,
        rng: np.random.Generator,
        start_us: int,
    ) -> None:
        n = len(block)
        self.config = config
        self.catalogue = catalogue
        self.model = model
        self.policy = policy
        self.block = block
        self.can_buy = can_buy
        self.ledger = ledger
        self.rng = rng
        self.start_us = start_us
        self.events = EventBuffer()
        #: Decayed count of recent impressions per (customer, product): the fatigue state.
        self.fatigue = np.zeros((n, catalogue.size), dtype=np.float32)
        self.days_since_salary = _days_since_last_pay_day(block.pay_day, config.start_date)
        self.days_since_maturity = np.full(n, 365.0, dtype=np.float32)
        self.next_request = 0
        self.is_credit = np.isin(catalogue.category_index, _CREDIT_CATEGORIES)
        self.fatigue_decay = np.float32(model.params.fatigue_decay_per_day)

    def run_day(self, day: int) -> None:
        today = self.config.start_date + timedelta(days=day)
        day_us = self.start_us + day * US_PER_DAY
        self._mature(day)
        salary_today = self._money(today.day, day_us)
        self._sessions(today, day_us, salary_today)
        self.fatigue *= self.fatigue_decay
        self.days_since_salary += 1.0
        self.days_since_maturity += 1.0

    def _mature(self, day: int) -> None:
        for maturity in self.ledger.maturities.pop(day, []):
            self.ledger.held[maturity.customer, maturity.product] = False
            self.days_since_maturity[maturity.customer] = 0.0

    def _money(self, day_of_month: int, day_us: int) -> np.ndarray:
        """Transactions of the day; returns the bool mask of customers paid a salary/pension."""
        b, rng = self.block, self.rng
        n = len(b)
        paid = b.pay_day == day_of_month
        who = np.flatnonzero(paid)
        self.events.add(
            customer=who,
            event_type="txn",
            app=b.primary_app[who],
            ts=day_us + (rng.random(len(who)) * 6 * _US_PER_HOUR).astype(np.int64),
            amount=np.round(b.monthly_income[who] * rng.lognormal(0.0, 0.02, len(who)), 2),
        )
        self.days_since_salary[who] = 0.0
        for rate, scale, sign, sd in (
            (b.credit_rate, b.credit_scale, 1.0, 0.6),
            (b.spend_rate, b.spend_scale, -1.0, 0.8),
        ):
            counts = rng.poisson(rate)
            who = np.repeat(np.arange(n), counts)
            amount = sign * np.maximum(scale[who] * rng.lognormal(0.0, sd, len(who)), 0.01)
            self.events.add(
                customer=who,
                event_type="txn",
                app=b.primary_app[who],
                ts=day_us + _daytime_us(rng, b.is_corporate[who]),
                amount=np.round(amount, 2),
            )
        return paid

    def _sessions(self, today: date, day_us: int, salary_today: np.ndarray) -> None:
        b, rng, cat = self.block, self.rng, self.catalogue
        weekend = today.weekday() >= 5
        day_factor = np.where(b.is_corporate, 0.3, 0.85) if weekend else 1.0
        p_login = b.login_rate * day_factor * np.where(salary_today, 1.3, 1.0)
        who = np.flatnonzero(rng.random(len(b)) < p_login)
        m = len(who)
        if m == 0:
            return
        cum = np.cumsum(b.app_weights[who], axis=1)
        app = (rng.random(m)[:, None] * cum[:, -1:] > cum).sum(axis=1).astype(np.int64)
        mobile = b.mobile_device[who]
        device = np.where(app == _APP["imobile"], mobile, _WEB)
        device = np.where((app == _APP["nli"]) & (rng.random(m) < 0.6), mobile, device)
        login_ts = day_us + _daytime_us(rng, b.is_corporate[who])
        self.events.add(customer=who, event_type="login", app=app, ts=login_ts, device=device)

        held = self.ledger.held[who]
        allowed = self.policy.allowed(
            cat,
            app=app,
            is_corporate=b.is_corporate[who],
            held=held,
            consent_marketing=b.consent_marketing[who],
        )
        slates = self.policy.sample(rng, allowed, self.config.slate_size)
        request = self.next_request + np.arange(m)
        self.next_request += m
        row, slot = np.nonzero(slates.valid)  # row-major: a slate's impressions stay together
        cust = who[row]
        product = slates.product[row, slot]
        position = slot + 1
        imp_ts = login_ts[row] + _seconds_us(rng, 1.0, 4.0, m)[row]
        shared = {
            "app": app[row],
            "device": device[row],
            "request": request[row],
            "position": position,
            "product": product,
        }
        self.events.add(
            customer=cust,
            event_type="impression",
            ts=imp_ts,
            propensity=slates.propensity[row, slot],
            **shared,
        )

        # The hidden model decides what happens next.
        fatigue_prior = self.fatigue[cust, product]
        logit = self.model.logit(
            b.traits[cust],
            product,
            np.datetime64(today, "D"),
            held=held[row],
            recent_impressions=fatigue_prior,
            days_since_salary=self.days_since_salary[cust],
            days_since_maturity=self.days_since_maturity[cust],
        )
        self.fatigue[cust, product] += 1.0
        p_click = self.model.click_probability(logit, position)
        clicked = rng.random(len(cust)) < p_click
        personal = logit - self.model.click_bias[product]
        params = self.model.params

        def outcome(mask: np.ndarray, event_type: str, ts: np.ndarray) -> None:
            sel = np.flatnonzero(mask)
            self.events.add(
                customer=cust[sel],
                event_type=event_type,
                ts=ts[sel],
                **{name: values[sel] for name, values in shared.items()},
            )

        click_ts = imp_ts + _seconds_us(rng, 2.0, 120.0, len(cust))
        outcome(clicked, "click", click_ts)
        p_dismiss = _sigmoid(
            params.dismiss_intercept
            + params.dismiss_fatigue_slope * fatigue_prior
            - params.dismiss_affinity_slope * personal
        )
        dismissed = ~clicked & (rng.random(len(cust)) < p_dismiss)
        outcome(dismissed, "dismiss", imp_ts + _seconds_us(rng, 2.0, 60.0, len(cust)))
        applied = clicked & (
            rng.random(len(cust)) < _sigmoid(params.apply_intercept + params.apply_slope * personal)
        )
        apply_ts = click_ts + _seconds_us(rng, 30.0, 600.0, len(cust))
        outcome(applied, "apply", apply_ts)
        approval = np.where(self.is_credit[product], params.approval_credit, params.approval_other)
        bought = applied & self.can_buy[cust, product] & (rng.random(len(cust)) < approval)
        buy_ts = apply_ts + _seconds_us(rng, 5.0, 300.0, len(cust))
        outcome(bought, "purchase", buy_ts)
        self._open_holdings(cust[bought], product[bought], buy_ts[bought])

    def _open_holdings(self, customer: np.ndarray, product: np.ndarray, opened: np.ndarray) -> None:
        if len(customer) == 0:
            return
        self.ledger.held[customer, product] = True
        closed = self.ledger.schedule_term_maturities(
            self.rng,
            self.catalogue,
            customer,
            product,
            opened,
            self.start_us,
            self.config.days,
        )
        self.ledger.add(customer, product, opened, closed)
