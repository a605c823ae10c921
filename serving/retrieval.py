"""Retrieval: which products the ranker sees for this customer in this app.

The app's scope first (products offered in the app, categories the app's config allows), then
candidates scored by the customer's segment prior (global prior for new customers) plus
co-interest with their recent interactions, capped at ``max_candidates``. Eligibility proper is
the rules stage's job, so every removal is audited in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.catalogue import Catalogue
from serving.config import AppConfig
from serving.customer import CustomerView
from serving.priors import Priors
from serving.rules import Candidate

#: How many of the latest interactions seed co-interest candidates.
RECENT_SEEDS = 5
#: Weight of the co-interest signal against the prior share.
CO_INTEREST_WEIGHT = 0.5


@dataclass(frozen=True)
class Retrieved:
    candidates: list[Candidate]  # best prior first; Candidate.score is the prior score
    source: str  # segment_prior or global_prior


class Retriever:
    def __init__(self, catalogue: Catalogue, priors: Priors, max_candidates: int = 200):
        self.catalogue = catalogue
        self.priors = priors
        self.max_candidates = max_candidates

    def in_scope(self, app: str, app_config: AppConfig) -> list[str]:
        allowed = set(app_config.allowed_categories)
        return [
            p.product_id
            for p in self.catalogue.products.values()
            if app in p.apps and p.category in allowed
        ]

    def retrieve(self, customer: CustomerView, app: str, app_config: AppConfig) -> Retrieved:
        prior, source = self.priors.scores_for(customer.segment)
        co: dict[str, tuple[float, str]] = {}
        for interaction in reversed(customer.sequence[-RECENT_SEEDS:]):
            if interaction.event_type == "dismiss":
                continue
            for neighbour, strength in self.priors.co_interest.get(interaction.product_id, ()):
                if strength > co.get(neighbour, (0.0, ""))[0]:
                    co[neighbour] = (strength, interaction.product_id)
        scored: list[Candidate] = []
        for pid in self.in_scope(app, app_config):
            strength, seed = co.get(pid, (0.0, ""))
            reasons = [f"retrieved:{source}"]
            if strength > 0:
                reasons.append(f"retrieved:co_interest:{seed}")
            score = prior.get(pid, 0.0) + CO_INTEREST_WEIGHT * strength
            scored.append(Candidate(product_id=pid, score=score, reasons=tuple(reasons)))
        scored.sort(key=lambda c: (-c.score, c.product_id))
        return Retrieved(scored[: self.max_candidates], source)
