"""The bank simulator: a seedable, streaming source of customers, products, holdings and events.

``simulate_bank(SimulationConfig(customers=..., days=..., seed=...), out_dir)`` writes the
canonical tables to ``DataLayout(out_dir).raw`` and the hidden preference model to
``DataLayout(out_dir).ground_truth``. Only this package may import
:mod:`persona.simulator.ground_truth`; ``training`` and ``serving`` must not (a test checks).
"""

from persona.simulator.catalogue import PRODUCTS_CATALOGUE, Catalogue, Product
from persona.simulator.config import DEFAULT_END_DATE, SimulationConfig, SimulationSummary
from persona.simulator.ground_truth import TRAITS, GroundTruth
from persona.simulator.logging_policy import MODEL_VERSION, VARIANT, LoggingPolicy
from persona.simulator.run import simulate_bank

__all__ = [
    "DEFAULT_END_DATE",
    "MODEL_VERSION",
    "PRODUCTS_CATALOGUE",
    "TRAITS",
    "VARIANT",
    "Catalogue",
    "GroundTruth",
    "LoggingPolicy",
    "Product",
    "SimulationConfig",
    "SimulationSummary",
    "simulate_bank",
]
