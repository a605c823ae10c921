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
        # Both depend only on (app, segment): computed once, not per request.
        self._scope: dict[str, list[str]] = {}
        self._by_prior: dict[tuple[str, str], list[tuple[float, str]]] = {}

    def in_scope(self, app: str, app_config: AppConfig) -> list[str]:
        scope = self._scope.get(app)
        if scope is None:
            allowed = set(app_config.allowed_categories)
            scope = [
                p.product_id
                for p in self.catalogue.products.values()
                if app in p.apps and p.category in allowed
            ]
            self._scope[app] = scope
        return scope

    def _prior_order(
        self, app: str, app_config: AppConfig, segment: str, prior: dict[str, float]
    ) -> list[tuple[float, str]]:
        """The app's products by prior score, best first: (-score, product_id) pairs."""
        key = (app, segment)
        order = self._by_prior.get(key)
        if order is None:
            order = sorted((-prior.get(pid, 0.0), pid) for pid in self.in_scope(app, app_config))
            self._by_prior[key] = order
        return order

    def retrieve(self, customer: CustomerView, app: str, app_config: AppConfig) -> Retrieved:
        prior, source = self.priors.scores_for(customer.segment)
        co: dict[str, tuple[float, str]] = {}
        for interaction in reversed(customer.sequence[-RECENT_SEEDS:]):
            if interaction.event_type == "dismiss":
                continue
            for neighbour, strength in self.priors.co_interest.get(interaction.product_id, ()):
                if strength > co.get(neighbour, (0.0, ""))[0]:
                    co[neighbour] = (strength, interaction.product_id)
        order = self._prior_order(app, app_config, customer.segment or "", prior)
        only_prior = [f"retrieved:{source}"]
        if co:  # boosted products move up; everything else keeps the cached prior order
            order = sorted(
                (neg - CO_INTEREST_WEIGHT * co[pid][0], pid) if pid in co else (neg, pid)
                for neg, pid in order
            )
        scored = [
            Candidate(
                product_id=pid,
                score=-neg,
                reasons=(*only_prior, f"retrieved:co_interest:{co[pid][1]}")
                if pid in co and co[pid][0] > 0
                else (only_prior[0],),
            )
            for neg, pid in order[: self.max_candidates]
        ]
        return Retrieved(scored, source)
