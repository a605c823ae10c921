"""Who opens which app, on which device and when, on one simulated day (the daily loop's
login model: each customer's login rate, lower on weekends for companies and higher on pay
day, the app by the customer's app mix, the device by app, the hour by customer type)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from persona import domain
from persona.simulator.daily_loop import _daytime_us
from persona.simulator.traffic.population import Population

_APP = {name: i for i, name in enumerate(domain.APPS)}
_WEB = domain.DEVICES.index("web")


@dataclass(frozen=True)
class Sessions:
    """One row per session, ordered by time: customer row, app and device indices, when."""

    rows: np.ndarray  # (m,) int64 rows of the population
    app: np.ndarray  # (m,) int64 index into domain.APPS
    device: np.ndarray  # (m,) int64 index into domain.DEVICES
    at: list[datetime]  # (m,) UTC

    def __len__(self) -> int:
        return len(self.rows)


def daily_sessions(
    pop: Population, day: date, rng: np.random.Generator, customers: np.ndarray | None = None
) -> Sessions:
    """The sessions of ``day`` (at most one per customer, as in the daily loop); ``customers``
    (row indices) restricts who may log in."""
    pool = np.arange(len(pop.customer_id)) if customers is None else np.asarray(customers)
    corporate = pop.is_corporate[pool]
    weekend = day.weekday() >= 5
    day_factor = np.where(corporate, 0.3, 0.85) if weekend else 1.0
    salary_today = pop.pay_day[pool] == day.day
    p_login = pop.login_rate[pool] * day_factor * np.where(salary_today, 1.3, 1.0)
    who = pool[rng.random(len(pool)) < p_login]
    m = len(who)
    cum = np.cumsum(pop.app_weights[who], axis=1)
    app = (rng.random(m)[:, None] * cum[:, -1:] > cum).sum(axis=1).astype(np.int64)
    mobile = pop.mobile_device[who].astype(np.int64)
    device = np.where(app == _APP["imobile"], mobile, _WEB)
    device = np.where((app == _APP["nli"]) & (rng.random(m) < 0.6), mobile, device)
    offset_us = _daytime_us(rng, pop.is_corporate[who])
    order = np.argsort(offset_us, kind="stable")
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    at = [midnight + timedelta(microseconds=int(us)) for us in offset_us[order]]
    return Sessions(who[order], app[order], device[order], at)
