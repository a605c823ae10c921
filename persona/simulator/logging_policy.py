"""The logging policy: how the bank chose what to show before any model existed.

It is deliberately simple and *not* personalised beyond hard rules: a fixed score per product
(category popularity prior + margin), Plackett–Luce sampling of a slate without replacement
among the products that are allowed for this request. Allowed = shown in the app, offered to
the customer type, not already held, and marketing offers only with marketing consent.

**Propensity** (what ``events.propensity`` holds for an impression): the probability that the
policy puts that product at that slot *given the products already placed above it*::

    propensity(slot j) = exp(s_j) / Σ_{allowed i not in slots 1..j-1} exp(s_i)

so the slate's probability is the product of its impressions' propensities, and the first
slot's propensity is the ordinary softmax over the allowed products. It is always in (0, 1].
Sampling uses the Gumbel-top-k trick (score + Gumbel noise, best k), which draws exactly the
sequential softmax without replacement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from persona import domain
from persona.simulator.catalogue import Catalogue

MODEL_VERSION: Final = "logging_policy_v1"
VARIANT: Final = "logged"

#: Log-popularity prior per bank category (what the bank believed sold).
_CATEGORY_PRIOR: Final = {
    "card": 0.3,
    "loan": -0.2,
    "deposit": 0.0,
    "insurance": 0.2,
    "investment": -0.3,
    "payment": -0.1,
}
_MARGIN_COEF: Final = 0.5


@dataclass(frozen=True)
class Slates:
    """Sampled slates for m requests: product (m, k), valid (m, k) and propensity (m, k)."""

    product: np.ndarray  # int64 catalogue index (undefined where not valid)
    valid: np.ndarray  # bool: False when fewer than k products were allowed
    propensity: np.ndarray  # float64 in (0, 1] where valid


@dataclass(frozen=True, eq=False)
class LoggingPolicy:
    scores: np.ndarray  # (P,) float64 logit per product

    @classmethod
    def default(cls, catalogue: Catalogue) -> LoggingPolicy:
        prior = np.array(
            [_CATEGORY_PRIOR[domain.BANK_CATEGORIES[c]] for c in catalogue.category_index]
        )
        return cls(scores=prior + _MARGIN_COEF * catalogue.margin_weight)

    def allowed(
        self,
        catalogue: Catalogue,
        *,
        app: np.ndarray,
        is_corporate: np.ndarray,
        held: np.ndarray,
        consent_marketing: np.ndarray,
    ) -> np.ndarray:
        """(m, P) bool: products this policy may show for each request."""
        mask = catalogue.app_allowed[app] & catalogue.type_allowed[is_corporate.astype(np.int64)]
        mask &= ~held
        mask &= consent_marketing[:, None] | ~catalogue.is_marketing_offer[None, :]
        return mask

    def sample(self, rng: np.random.Generator, allowed: np.ndarray, k: int) -> Slates:
        """Draw one slate of up to ``k`` products per row of ``allowed`` (see module docstring)."""
        m, num_products = allowed.shape
        logits = np.where(allowed, self.scores[None, :], -np.inf)
        perturbed = logits + rng.gumbel(size=(m, num_products))
        k_eff = min(k, num_products)
        top = np.argpartition(-perturbed, k_eff - 1, axis=1)[:, :k_eff]
        rows = np.arange(m)[:, None]
        order = np.argsort(-perturbed[rows, top], axis=1, kind="stable")
        product = top[rows, order]
        valid = allowed[rows, product]

        weights = np.where(allowed, np.exp(self.scores - self.scores.max())[None, :], 0.0)
        chosen = np.where(valid, weights[rows, product], 0.0)
        remaining = weights.sum(axis=1, keepdims=True) - np.cumsum(chosen, axis=1) + chosen
        with np.errstate(invalid="ignore", divide="ignore"):
            propensity = np.where(valid, chosen / remaining, np.nan)
        # Rounding can push the last remaining item a hair above 1.
        propensity = np.minimum(propensity, 1.0)
        return Slates(product=product.astype(np.int64), valid=valid, propensity=propensity)
