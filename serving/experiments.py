"""Experiment assignment: sticky, by hashing (salt, customer id); no state to store or lose."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from serving.config import Experiment, ExperimentsConfig, Variant

#: When an app runs no experiment, every customer gets this single arm.
DEFAULT_VARIANT = Variant(name="default", weight=1.0)


@dataclass(frozen=True)
class Assignment:
    experiment: str | None
    variant: Variant
    probability: float  # the chance a customer lands in this arm (for propensities)


def unit_interval(salt: str, customer_id: int) -> float:
    """A uniform number in [0, 1) fixed by (salt, customer id): SHA-256, first 8 bytes."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(customer_id: int, name: str, experiment: Experiment) -> Assignment:
    """The customer's arm of ``experiment``: holdout first, then variants by weight."""
    u = unit_interval(experiment.salt, customer_id)
    if experiment.holdout > 0 and u < experiment.holdout:
        assert experiment.holdout_variant is not None  # the config validator guarantees it
        return Assignment(name, experiment.holdout_variant, experiment.holdout)
    # Rescale the rest of [holdout, 1) to [0, 1) and walk the cumulative weights.
    rest = 1.0 - experiment.holdout
    v = (u - experiment.holdout) / rest
    total = sum(variant.weight for variant in experiment.variants)
    cumulative = 0.0
    for variant in experiment.variants:
        cumulative += variant.weight / total
        if v < cumulative:
            return Assignment(name, variant, rest * variant.weight / total)
    last = experiment.variants[-1]
    return Assignment(name, last, rest * last.weight / total)


class ExperimentRouter:
    """Experiments per app (``apps.yaml`` names the experiment; ``experiments.yaml`` defines it)."""

    def __init__(self, experiments: ExperimentsConfig, app_experiments: dict[str, str | None]):
        self.experiments = experiments
        self.app_experiments = app_experiments

    def assign(self, app: str, customer_id: int) -> Assignment:
        name = self.app_experiments.get(app)
        if name is None:
            return Assignment(None, DEFAULT_VARIANT, 1.0)
        return assign(customer_id, name, self.experiments.experiments[name])
