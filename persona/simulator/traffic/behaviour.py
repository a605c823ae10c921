"""What a simulated customer does with a served slate: the hidden model of the daily loop.

Same terms as :mod:`persona.simulator.daily_loop`: the click logit (traits, holdings,
sequential effects, salary and maturity recency, season, minus fatigue from recent
impressions), examination by position, then dismissal, application and purchase. Every served
item adds one to the customer's fatigue for that product (decayed once a day by
:func:`end_of_day`). Deterministic given the random generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from persona.simulator.traffic.population import Population

_CREDIT = ("card", "loan")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Outcomes:
    """Per served item (rows aligned with the inputs of :func:`respond`)."""

    p_click: np.ndarray  # true click probability (position included)
    clicked: np.ndarray
    dismissed: np.ndarray
    applied: np.ndarray
    purchased: np.ndarray


def true_logit(pop: Population, rows: np.ndarray, products: np.ndarray, day: date) -> np.ndarray:
    """(n,) the hidden click logit (before position) of product ``products[i]`` for customer row
    ``rows[i]`` on ``day`` given the current state (holdings, fatigue, recency)."""
    return pop.model.logit(
        pop.traits[rows],
        products,
        np.datetime64(day, "D"),
        held=pop.held[rows],
        recent_impressions=pop.fatigue[rows, products],
        days_since_salary=pop.days_since_salary[rows],
        days_since_maturity=pop.days_since_maturity[rows],
    )


def respond(
    pop: Population,
    rows: np.ndarray,
    products: np.ndarray,
    positions: np.ndarray,
    day: date,
    rng: np.random.Generator,
) -> Outcomes:
    """Draw the outcomes of showing ``products`` at ``positions`` (1-based) to customer rows
    ``rows``, then update the state: fatigue +1 per shown item, purchases become holdings.
    A customer's items must come in one call (their fatigue is read before any is added)."""
    rows = np.asarray(rows, dtype=np.int64)
    products = np.asarray(products, dtype=np.int64)
    model, params = pop.model, pop.model.params
    fatigue_prior = pop.fatigue[rows, products].copy()
    logit = true_logit(pop, rows, products, day)
    p_click = model.click_probability(logit, np.asarray(positions))
    n = len(rows)
    clicked = rng.random(n) < p_click
    personal = logit - model.click_bias[products]
    p_dismiss = _sigmoid(
        params.dismiss_intercept
        + params.dismiss_fatigue_slope * fatigue_prior
        - params.dismiss_affinity_slope * personal
    )
    dismissed = ~clicked & (rng.random(n) < p_dismiss)
    applied = clicked & (
        rng.random(n) < _sigmoid(params.apply_intercept + params.apply_slope * personal)
    )
    is_credit = np.isin(np.asarray(pop.model.categories)[products], _CREDIT)
    approval = np.where(is_credit, params.approval_credit, params.approval_other)
    purchased = applied & pop.eligible[rows, products] & (rng.random(n) < approval)
    np.add.at(pop.fatigue, (rows, products), 1.0)
    pop.held[rows[purchased], products[purchased]] = True
    return Outcomes(p_click, clicked, dismissed, applied, purchased)


def start_of_day(pop: Population, day: date) -> None:
    """Salaries and pensions credited on ``day`` (before anyone logs in)."""
    pop.days_since_salary[pop.pay_day == day.day] = 0.0


def end_of_day(pop: Population) -> None:
    """Fatigue decays, recency counters age by one day (as in the daily loop)."""
    pop.fatigue *= np.float32(pop.model.params.fatigue_decay_per_day)
    pop.days_since_salary += 1.0
    pop.days_since_maturity += 1.0
