"""The bank's vocabulary: apps, product categories, event types. One place for each fact."""

from __future__ import annotations

from typing import Final

#: The four apps that call the platform: retail internet banking, corporate internet banking,
#: the insurance app (nli) and the mobile app.
APPS: Final[tuple[str, ...]] = ("rib", "cib", "nli", "imobile")

#: Product categories of the bank's catalogue. ``other`` exists only for catalogues loaded from
#: non-bank data sets (Amazon Games, Open Bandit) whose items have no bank category.
BANK_CATEGORIES: Final[tuple[str, ...]] = (
    "card",
    "loan",
    "deposit",
    "insurance",
    "investment",
    "payment",
)
CATEGORIES: Final[tuple[str, ...]] = (*BANK_CATEGORIES, "other")

#: Events that involve a product the customer was offered or acted on.
PRODUCT_INTERACTIONS: Final[tuple[str, ...]] = ("click", "apply", "purchase", "dismiss")
EVENT_TYPES: Final[tuple[str, ...]] = ("impression", *PRODUCT_INTERACTIONS, "login", "txn")

#: Positive feedback, strongest last.
POSITIVE_FEEDBACK: Final[tuple[str, ...]] = ("click", "apply", "purchase")

CUSTOMER_TYPES: Final[tuple[str, ...]] = ("retail", "corporate")
AGE_BANDS: Final[tuple[str, ...]] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
#: Income bands are ordinal: index 0 is the lowest. Eligibility compares indices.
INCOME_BANDS: Final[tuple[str, ...]] = ("low", "lower_middle", "middle", "upper_middle", "high")
RISK_PROFILES: Final[tuple[str, ...]] = ("conservative", "balanced", "growth", "aggressive")
LIFE_STAGES: Final[tuple[str, ...]] = (
    "student",
    "young_professional",
    "family",
    "established",
    "pre_retirement",
    "retired",
    "business",
)
CITY_TIERS: Final[tuple[str, ...]] = ("metro", "urban", "town", "rural")
OCCUPATIONS: Final[tuple[str, ...]] = (
    "salaried",
    "self_employed",
    "student",
    "retired",
    "business_owner",
    "unemployed",
)
#: KYC levels: 0 = none, 1 = basic (simplified due diligence), 2 = standard, 3 = enhanced.
KYC_LEVELS: Final[tuple[int, ...]] = (0, 1, 2, 3)
#: Product risk classes 1 (capital safe) .. 5 (speculative); suitability compares with the
#: customer's risk profile index + 2 (conservative may hold up to class 2, aggressive up to 5).
RISK_CLASSES: Final[tuple[int, ...]] = (1, 2, 3, 4, 5)
DEVICES: Final[tuple[str, ...]] = ("web", "ios", "android")
