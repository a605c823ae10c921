"""The rules engine on a crafted catalogue: each rule removes what it should, with its name and
the rules version; exploration propensities are the exact slot probabilities."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from serving.catalogue import Catalogue, ProductInfo
from serving.config import AppConfig, AppRateLimits, RateLimit
from serving.customer import CustomerView, Interaction
from serving.rules import Candidate, ContactState, RuleEngine, RuleSet

APP = AppConfig(
    api_key_sha256=["0" * 64],
    allowed_categories=["card", "loan", "deposit", "investment"],
    rate_limit=AppRateLimits(
        recommendations=RateLimit(per_second=100, burst=100),
        events=RateLimit(per_second=1000, burst=1000),
    ),
)


def product(pid: str, category: str = "card", **overrides: object) -> ProductInfo:
    facts: dict[str, object] = {
        "product_id": pid,
        "category": category,
        "name": pid,
        "apps": frozenset({"rib", "imobile"}),
        "customer_types": frozenset({"retail"}),
        "min_age": 18,
        "min_income_index": -1,
        "min_kyc_level": 1,
        "risk_class": 1,
        "is_marketing_offer": False,
    }
    facts.update(overrides)
    return ProductInfo(**facts)  # type: ignore[arg-type]


CATALOGUE = Catalogue(
    {
        p.product_id: p
        for p in [
            product("plain_card"),
            product("gold_card", min_income_index=3, is_marketing_offer=True),
            product("senior_saver", "deposit", min_age=55),
            product("kyc_loan", "loan", min_kyc_level=3, risk_class=2),
            product("risky_fund", "investment", risk_class=5),
            product("promo_card", is_marketing_offer=True),
            product("corporate_card", customer_types=frozenset({"corporate"})),
            product("nli_only", "card", apps=frozenset({"nli"})),
            product("payment_thing", "payment"),
            product("held_card"),
            product("card_b"),
            product("card_c"),
        ]
    }
)


def customer(**overrides: object) -> CustomerView:
    facts: dict[str, object] = {
        "customer_id": 7,
        "known": True,
        "customer_type": "retail",
        "age_band": "25-34",
        "income_band_index": 1,
        "kyc_level": 2,
        "risk_profile": "balanced",
        "consent_marketing": False,
        "held": frozenset({"held_card"}),
        "sequence": (Interaction("plain_card", "click", 1),),
    }
    facts.update(overrides)
    return CustomerView(**facts)  # type: ignore[arg-type]


def ranked(*ids: str) -> list[Candidate]:
    return [Candidate(pid, 1.0 - i / 100, ("ranked:test",)) for i, pid in enumerate(ids)]


def engine(**rules: object) -> RuleEngine:
    return RuleEngine(RuleSet.model_validate({"version": "t1", **rules}), CATALOGUE)


def test_each_hard_rule_removes_its_product_with_name_and_version() -> None:
    outcome = engine(suitability={"applies_to": ["investment", "loan"]}).apply(
        customer(), ranked(*CATALOGUE.ids()), "rib", APP, ContactState(available=True), k=20
    )
    removed = {r.product_id: r.rule for r in outcome.removed}
    assert removed == {
        "gold_card": "min_income",
        "senior_saver": "min_age",
        "kyc_loan": "kyc_level",
        "risky_fund": "suitability",
        "promo_card": "no_marketing_consent",
        "corporate_card": "customer_type",
        "nli_only": "not_offered_in_app",
        "payment_thing": "category_not_allowed_in_app",
        "held_card": "already_held",
        "plain_card": "diversity",  # max 2 cards: card_b and card_c rank above it
    }
    assert all(r.rules_version == "t1" for r in outcome.removed)
    assert [c.product_id for c in outcome.kept] == ["card_b", "card_c"]
    for item in outcome.kept:
        assert "ranked:test" in item.reasons and "eligible:retail" in item.reasons
        assert "service_offer" in item.reasons


def test_unknown_customer_gets_only_what_needs_no_knowledge() -> None:
    outcome = engine().apply(
        CustomerView.unknown(9),
        ranked(*CATALOGUE.ids()),
        "rib",
        APP,
        ContactState.unavailable(),
        k=20,
    )
    assert outcome.kept == []  # no customer type known: nothing is eligible
    assert {r.rule for r in outcome.removed} >= {"customer_type"}


def test_marketing_consent_lets_marketing_offers_through_with_a_reason() -> None:
    outcome = engine().apply(
        customer(consent_marketing=True),
        ranked("promo_card"),
        "rib",
        APP,
        ContactState(available=True),
        k=5,
    )
    assert [c.product_id for c in outcome.kept] == ["promo_card"]
    assert "consent:marketing" in outcome.kept[0].reasons


@pytest.mark.parametrize(
    ("contact", "rule"),
    [
        (
            ContactState(available=True, product_today={"promo_card": 3}),
            "frequency_cap_product_day",
        ),
        (
            ContactState(available=True, product_week={"promo_card": 8}),
            "frequency_cap_product_week",
        ),
        (ContactState(available=True, customer_today=30), "frequency_cap_customer"),
        (
            ContactState(available=True, dismissed_at_s={"promo_card": 1_000.0}),
            "dismissal_cooldown",
        ),
        (ContactState.unavailable(), "contact_policy_unavailable"),
    ],
)
def test_contact_policy(contact: ContactState, rule: str) -> None:
    outcome = engine().apply(
        customer(consent_marketing=True),
        ranked("promo_card"),
        "rib",
        APP,
        contact,
        k=5,
        now_s=2_000.0,
    )
    assert outcome.kept == []
    assert outcome.removed[0].rule == rule


def test_dismissal_cooldown_ends_after_the_configured_days() -> None:
    contact = ContactState(available=True, dismissed_at_s={"plain_card": 0.0})
    rules = engine(contact_policy={"dismissal_cooldown_days": 1})
    kept = rules.apply(
        customer(), ranked("plain_card"), "rib", APP, contact, k=5, now_s=86_401.0
    ).kept
    assert [c.product_id for c in kept] == ["plain_card"]


def test_without_counters_the_cooldown_holds_for_dismissals_in_the_online_sequence() -> None:
    """Redis counters unreachable: the customer's recent dismissals still keep a product away
    (from the online sequence), older ones have cooled down, marketing is withheld."""
    day = 86_400
    dismissed = customer(
        sequence=(
            Interaction("plain_card", "dismiss", 10 * day),
            Interaction("card_b", "dismiss", 1 * day),  # 19 days before now: cooled down
            Interaction("card_b", "click", 2 * day),
        ),
        consent_marketing=True,
    )
    outcome = engine(contact_policy={"dismissal_cooldown_days": 14}).apply(
        dismissed,
        ranked("plain_card", "card_b", "promo_card"),
        "rib",
        APP,
        ContactState.unavailable(),
        k=5,
        now_s=20 * day,
    )
    assert [c.product_id for c in outcome.kept] == ["card_b"]
    assert {r.product_id: r.rule for r in outcome.removed} == {
        "plain_card": "dismissal_cooldown",
        "promo_card": "contact_policy_unavailable",
    }


def test_blocked_products_are_never_shown() -> None:
    outcome = engine(blocked_products=["plain_card"]).apply(
        customer(), ranked("plain_card", "card_b"), "rib", APP, ContactState(available=True), k=5
    )
    assert [c.product_id for c in outcome.kept] == ["card_b"]
    assert outcome.removed[0].rule == "blocked_product"


def test_exploration_propensities_match_observed_slot_frequencies() -> None:
    """ε-greedy slot filling: propensity = (1-ε)[top] + ε/|open|, checked by simulation."""
    rules = engine(diversity={"max_per_category": 5})
    items = ranked("plain_card", "card_b", "card_c")
    counts: Counter[tuple[int, str]] = Counter()
    claimed: dict[tuple[int, str], set[float]] = {}
    n = 20_000
    rng = random.Random(0)
    for _ in range(n):
        kept = rules.apply(
            customer(),
            items,
            "rib",
            APP,
            ContactState(available=True),
            k=1,
            exploration=0.3,
            rng=rng,
        ).kept
        for slot, item in enumerate(kept):
            counts[(slot, item.product_id)] += 1
            claimed.setdefault((slot, item.product_id), set()).add(item.propensity or 0.0)
    assert claimed[(0, "plain_card")] == {round(0.7 + 0.1, 6)}
    assert claimed[(0, "card_b")] == {0.1}
    for key, propensities in claimed.items():
        (p,) = propensities
        assert abs(counts[key] / n - p) < 0.015, (key, counts[key] / n, p)
    no_exploration = rules.apply(
        customer(), items, "rib", APP, ContactState(available=True), k=3
    ).kept
    assert [c.propensity for c in no_exploration] == [1.0, 1.0, 1.0]
