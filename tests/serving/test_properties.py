"""Properties, checked by hypothesis over generated inputs (no server):

* the HTTP request models accept exactly what their documented bounds allow, refuse anything
  else with a ``ValidationError`` (never another exception), refuse unknown fields, and refuse
  ids built to inject into keys, logs, paths or SQL;
* the rules engine never lets through what a rule forbids (consent, KYC, held products,
  suitability, diversity, contact caps), whatever the customer, candidates, contact state, app,
  ``k``, time and exploration, and keeps exactly what a plain reading of the rules keeps;
* experiment assignment is a pure, sticky function of (salt, customer id), into a configured
  arm, reported with its true probability and split as weighted;
* the loaders' path guard accepts exactly the paths that resolve under its roots.

Every test is derandomised: the same examples on every run and machine.
"""

from __future__ import annotations

import os
import random
import re
import string
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from persona import domain
from persona.loaders.errors import PathOutsideRootsError
from persona.loaders.paths import ensure_within_roots
from serving.api import (
    MAX_CLOCK_SKEW,
    MAX_EVENTS_PER_BATCH,
    EventBatch,
    EventIn,
    RecommendationRequest,
)
from serving.catalogue import Catalogue, ProductInfo
from serving.config import (
    DEFAULT_CONFIG_DIR,
    AppConfig,
    Experiment,
    ExperimentsConfig,
    load_apps,
)
from serving.customer import AGE_BAND_FLOOR, CustomerView
from serving.experiments import DEFAULT_VARIANT, ExperimentRouter, assign, unit_interval
from serving.rules import Candidate, ContactState, RuleEngine, RuleOutcome, RuleSet

PROPERTY = settings(derandomize=True, database=None, deadline=None)

# -- validation -----------------------------------------------------------------------------

#: What an id may hold (serving.api's pattern, restated as sets): a letter or digit, then up
#: to 63 of letters, digits and ``_ . : -``.
ID_FIRST = frozenset(string.ascii_letters + string.digits)
ID_REST = ID_FIRST | frozenset("_.:-")
ID_FIELDS = ("event_id", "product_id", "request_id")
#: Characters that would let an id escape a Redis key or glob, a log line, a path or a SQL
#: literal: none may ever appear in an accepted id.
INJECTION_CHARS = "*?[]{}\n\r\x00\t '\";/\\%$`|&<>=()!#,~+@^"
INJECTIONS = [
    "x'; DROP TABLE events; --",
    "' OR '1'='1",
    "card\nINFO forged",
    "card\r\nX-Injected: 1",
    "card\x00",
    "persona:contact:*",
    "card_*",
    "card_{debit}",
    "../../etc/passwd",
    "..",
    "a/b",
    "čárka",
    "card\u202e",
    "card\n",
    "x" * 65,
    "",
]


def id_allowed(value: str) -> bool:
    """The documented id rule, written independently of the regex."""
    return 1 <= len(value) <= 64 and value[0] in ID_FIRST and all(c in ID_REST for c in value[1:])


TIMEZONES = st.none() | st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23.9), max_value=timedelta(hours=23.9))
)
DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=TIMEZONES
)
NEAR_NOW = st.builds(
    lambda delta, tz: (datetime.now(UTC) + delta).astimezone(tz),
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(minutes=15)),
    st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-12), max_value=timedelta(hours=14))
    ),
)
TIMESTAMPS = st.one_of(
    DATETIMES,
    NEAR_NOW,
    DATETIMES.map(lambda d: d.isoformat()),
    st.sampled_from(["2026-01-01T10:00:00", "0001-01-01T00:00:00+01:00", "now", "", "1e9"]),
    st.integers(-(2**40), 2**40),
)
IDS = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}", fullmatch=True),
    st.text(max_size=70),
    st.text(alphabet=sorted(ID_REST | set(INJECTION_CHARS)), max_size=70),
    st.sampled_from(INJECTIONS),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
CUSTOMER_IDS = st.one_of(
    st.integers(-3, 2**64),
    st.sampled_from([0, 1, 2**53, 2**53 + 1]),
    st.floats(),
    st.text(max_size=12),
    st.booleans(),
)
APPS = st.one_of(st.sampled_from([*domain.APPS, "atm", "RIB", "rib ", ""]), st.text(max_size=8))


def fields(options: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts holding any subset of these fields, each drawn from its strategy."""
    return st.fixed_dictionaries({}, optional=options)


REQUESTS = fields(
    {
        "customer_id": CUSTOMER_IDS,
        "app": APPS,
        "k": st.none() | st.integers(-2, 60) | JSON,
        "explain": st.booleans() | JSON,
        "context": fields(
            {"device": st.sampled_from([*domain.DEVICES, "toaster"]), "timestamp": TIMESTAMPS}
        )
        | JSON,
    }
)
EVENTS = fields(
    {
        "customer_id": CUSTOMER_IDS,
        "app": APPS,
        "event_type": st.sampled_from([*domain.EVENT_TYPES, "teleport"]),
        "event_id": st.none() | IDS,
        "product_id": st.none() | IDS,
        "request_id": st.none() | IDS,
        "timestamp": st.none() | TIMESTAMPS,
        "position": st.none() | st.integers(-2, 105),
        "amount": st.none() | st.floats(),
        "device": st.none() | st.sampled_from([*domain.DEVICES, "fax"]),
    }
)


def parse(model: type[BaseModel], payload: object) -> BaseModel | None:
    """The parsed model, or None when refused; any exception but ValidationError escapes."""
    try:
        return model.model_validate(payload)
    except ValidationError:
        return None


def check_timestamp(value: datetime | None) -> None:
    if value is not None:
        assert value.utcoffset() == timedelta(0), value  # normalised to UTC
        assert value <= datetime.now(UTC) + MAX_CLOCK_SKEW, value


def check_event(event: EventIn) -> None:
    assert type(event.customer_id) is int and 1 <= event.customer_id <= 2**53
    assert event.app in domain.APPS and event.event_type in domain.EVENT_TYPES
    for name in ID_FIELDS:
        value = getattr(event, name)
        assert value is None or id_allowed(value), (name, value)
        assert value is None or not set(value) & set(INJECTION_CHARS), (name, value)
    if event.event_type in ("impression", *domain.PRODUCT_INTERACTIONS):
        assert event.product_id
    assert event.position is None or 1 <= event.position <= 100
    assert event.amount is None or -1e9 <= event.amount <= 1e9
    check_timestamp(event.timestamp)


@settings(PROPERTY, max_examples=300)
@given(payload=REQUESTS | JSON)
@example(
    payload={"customer_id": 1, "app": "rib", "context": {"timestamp": "0001-01-01T00:00:00+01:00"}}
)
@example(payload={"customer_id": 2**53 + 1, "app": "rib"})
def test_recommendation_requests_accept_only_what_the_contract_allows(payload: object) -> None:
    request = parse(RecommendationRequest, payload)
    if request is None:
        return
    assert isinstance(request, RecommendationRequest)
    assert type(request.customer_id) is int and 1 <= request.customer_id <= 2**53
    assert request.app in domain.APPS
    assert request.k is None or 1 <= request.k <= 50
    assert request.context.device in domain.DEVICES
    check_timestamp(request.context.timestamp)


@settings(PROPERTY, max_examples=300)
@given(payload=EVENTS | JSON)
@example(payload={"customer_id": 1, "app": "rib", "event_type": "login", "event_id": "abc\n"})
@example(
    payload={
        "customer_id": 1,
        "app": "rib",
        "event_type": "login",
        "timestamp": "0001-01-01T00:00:00+05:00",
    }
)
def test_events_accept_only_what_the_contract_allows(payload: object) -> None:
    event = parse(EventIn, payload)
    if event is not None:
        assert isinstance(event, EventIn)
        check_event(event)


VALID_EVENT = {"customer_id": 7, "app": "rib", "event_type": "click", "product_id": "card_debit"}


@settings(PROPERTY, max_examples=200)
@given(field=st.sampled_from(ID_FIELDS), value=IDS)
@example(field="product_id", value="card\n")
@example(field="event_id", value="a" * 64)
def test_an_id_is_accepted_exactly_when_the_documented_rule_allows_it(
    field: str, value: str
) -> None:
    event = parse(EventIn, {**VALID_EVENT, field: value})
    assert (event is not None) == id_allowed(value), (field, value)


@settings(PROPERTY, max_examples=200)
@given(
    field=st.sampled_from(ID_FIELDS),
    prefix=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_]{0,20}", fullmatch=True),
    bad=st.sampled_from(INJECTION_CHARS) | st.characters(min_codepoint=128),
    suffix=st.text(max_size=10),
)
def test_ids_carrying_an_injection_character_are_refused_naming_the_field(
    field: str, prefix: str, bad: str, suffix: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        EventIn.model_validate({**VALID_EVENT, field: prefix + bad + suffix})
    assert any(error["loc"] == (field,) for error in refused.value.errors())


@settings(PROPERTY, max_examples=100)
@given(
    model_and_body=st.sampled_from(
        [
            (RecommendationRequest, {"customer_id": 7, "app": "rib"}),
            (EventIn, VALID_EVENT),
            (EventBatch, {"events": [VALID_EVENT]}),
        ]
    ),
    name=st.text(min_size=1, max_size=20),
    value=JSON,
)
def test_unknown_fields_are_refused(
    model_and_body: tuple[type[BaseModel], dict[str, Any]], name: str, value: object
) -> None:
    model, body = model_and_body
    if name in model.model_fields:
        return
    with pytest.raises(ValidationError) as refused:
        model.model_validate({**body, name: value})
    assert [e["type"] for e in refused.value.errors()] == ["extra_forbidden"]


@settings(PROPERTY, max_examples=25)
@given(n=st.integers(0, MAX_EVENTS_PER_BATCH + 50))
@example(n=MAX_EVENTS_PER_BATCH)
@example(n=MAX_EVENTS_PER_BATCH + 1)
@example(n=0)
def test_a_batch_holds_one_to_the_limit_of_events(n: int) -> None:
    batch = parse(EventBatch, {"events": [VALID_EVENT] * n})
    assert (batch is not None) == (1 <= n <= MAX_EVENTS_PER_BATCH), n


# -- rules ------------------------------------------------------------------------------------

POOL = [f"p{i}" for i in range(10)]
#: The rules a request's context must never change: the customer's and the product's facts.
HARD_RULES = {
    "blocked_product",
    "not_offered_in_app",
    "category_not_allowed_in_app",
    "customer_type",
    "min_age",
    "min_income",
    "kyc_level",
    "already_held",
    "suitability",
    "no_marketing_consent",
}
SHIPPED_APP = load_apps(DEFAULT_CONFIG_DIR / "apps.yaml").apps["rib"]
NOW_S = 2_000_000_000.0


@st.composite
def product_facts(draw: st.DrawFn, product_id: str) -> ProductInfo:
    """A product open to everyone but for a few drawn restrictions, so that slates are not
    empty and every rule still meets products it must refuse."""
    strict = draw(
        st.sets(st.sampled_from(["apps", "types", "age", "income", "kyc", "risk"]), max_size=3)
    )
    return ProductInfo(
        product_id=product_id,
        category=draw(st.sampled_from(domain.BANK_CATEGORIES)),
        name="product",
        apps=draw(st.frozensets(st.sampled_from(domain.APPS), min_size=1))
        if "apps" in strict
        else frozenset(domain.APPS),
        customer_types=draw(st.frozensets(st.sampled_from(domain.CUSTOMER_TYPES), min_size=1))
        if "types" in strict
        else frozenset(domain.CUSTOMER_TYPES),
        min_age=draw(st.sampled_from([21, 30, 55, 65])) if "age" in strict else 18,
        min_income_index=draw(st.integers(0, len(domain.INCOME_BANDS) - 1))
        if "income" in strict
        else -1,
        min_kyc_level=draw(st.sampled_from(domain.KYC_LEVELS[1:])) if "kyc" in strict else 0,
        risk_class=draw(st.sampled_from(domain.RISK_CLASSES[1:])) if "risk" in strict else 1,
        is_marketing_offer=draw(st.booleans()),
    )


CATALOGUES = st.tuples(*(product_facts(pid) for pid in POOL)).map(list)
RULESETS = st.builds(
    lambda held, categories, limits, unknown, consent, caps, cooldown, unavailable, cap, blocked: (
        RuleSet.model_validate(
            {
                "version": "prop",
                "eligibility": {"exclude_held": held},
                "suitability": {
                    "applies_to": categories,
                    "max_risk_class": dict(zip(domain.RISK_PROFILES, limits, strict=True)),
                    "unknown_profile_max_risk_class": unknown,
                },
                "consent": {"marketing_requires_consent": consent},
                "contact_policy": {
                    "max_impressions_per_product_per_day": caps[0],
                    "max_impressions_per_product_per_week": caps[1],
                    "max_impressions_per_customer_per_day": caps[2],
                    "max_impressions_per_customer_per_week": caps[3],
                    "dismissal_cooldown_days": cooldown,
                    "when_unavailable": unavailable,
                },
                "diversity": {"max_per_category": cap},
                "blocked_products": blocked,
            }
        )
    ),
    st.booleans(),
    st.lists(st.sampled_from(domain.BANK_CATEGORIES), unique=True),
    st.lists(st.integers(1, 5), min_size=4, max_size=4).map(sorted),
    st.integers(1, 5),
    st.sampled_from([True, True, False]),
    st.tuples(
        st.sampled_from([3, 3, 1, 0]),
        st.sampled_from([8, 8, 2, 0]),
        st.sampled_from([30, 30, 5, 0]),
        st.sampled_from([120, 120, 20, 0]),
    ),
    st.sampled_from([0.0, 1.0, 14.0]),
    st.sampled_from(["drop_marketing", "allow"]),
    st.integers(1, 3),
    st.lists(st.sampled_from(POOL), unique=True, max_size=2),
)


@st.composite
def customer_views(draw: st.DrawFn) -> CustomerView:
    """A customer every product suits but for a few drawn gaps (consent always drawn)."""
    gaps = draw(
        st.sets(
            st.sampled_from(["type", "age", "income", "kyc", "risk", "unknown", "held"]),
            max_size=3,
        )
    )
    return CustomerView(
        customer_id=draw(st.integers(1, 2**53)),
        known="unknown" not in gaps,
        customer_type=draw(st.sampled_from([None, "corporate"]))
        if "type" in gaps
        else draw(st.sampled_from(domain.CUSTOMER_TYPES)),
        age_band=draw(st.sampled_from([None, *domain.AGE_BANDS[:3]])) if "age" in gaps else "65+",
        income_band_index=draw(st.integers(-1, 2)) if "income" in gaps else 4,
        kyc_level=draw(st.sampled_from(domain.KYC_LEVELS[:3])) if "kyc" in gaps else 3,
        risk_profile=draw(st.sampled_from([None, *domain.RISK_PROFILES[:2]]))
        if "risk" in gaps
        else "aggressive",
        consent_marketing=draw(st.booleans()),
        held=draw(st.frozensets(st.sampled_from([*POOL, "not_in_catalogue"]), max_size=3))
        if "held" in gaps
        else frozenset(),
    )


CUSTOMERS = customer_views()
COUNTS = st.dictionaries(st.sampled_from(POOL), st.sampled_from([0, 1, 2, 3, 9]), max_size=3)
CONTACTS = st.one_of(
    st.just(ContactState.unavailable()),
    st.builds(
        ContactState,
        available=st.just(True),
        product_today=COUNTS,
        product_week=COUNTS,
        customer_today=st.sampled_from([0, 1, 4, 29, 31]),
        customer_week=st.sampled_from([0, 10, 119, 121]),
        dismissed_at_s=st.dictionaries(
            st.sampled_from(POOL),
            st.integers(0, 30 * 86_400).map(lambda ago: NOW_S - ago),
            max_size=2,
        ),
    ),
)
CANDIDATES = st.tuples(
    st.permutations([*POOL, "ghost"]), st.sampled_from([len(POOL) + 1, 8, 5, 3, 1])
).map(
    lambda drawn: [
        Candidate(pid, 1.0 - i / 100, ("ranked:test",))
        for i, pid in enumerate(drawn[0][: drawn[1]])
    ]
)
ALLOWED = st.just(list(domain.BANK_CATEGORIES)) | st.lists(
    st.sampled_from(domain.BANK_CATEGORIES), min_size=1, unique=True
)


def refusals(
    product: ProductInfo,
    customer: CustomerView,
    rules: RuleSet,
    app: str,
    app_config: AppConfig,
    contact: ContactState,
) -> set[str]:
    """Every rule ``product`` breaks for ``customer``: the rules read plainly, one by one."""
    broken = set()
    if product.product_id in rules.blocked_products:
        broken.add("blocked_product")
    if app not in product.apps:
        broken.add("not_offered_in_app")
    if product.category not in app_config.allowed_categories:
        broken.add("category_not_allowed_in_app")
    if customer.customer_type not in product.customer_types:
        broken.add("customer_type")
    floor = AGE_BAND_FLOOR.get(customer.age_band or "")
    if product.min_age > 18 and (floor is None or floor < product.min_age):
        broken.add("min_age")
    if customer.income_band_index < product.min_income_index:
        broken.add("min_income")
    if customer.kyc_level < product.min_kyc_level:
        broken.add("kyc_level")
    if rules.eligibility.exclude_held and product.product_id in customer.held:
        broken.add("already_held")
    suitability = rules.suitability
    limit = suitability.max_risk_class.get(
        customer.risk_profile or "", suitability.unknown_profile_max_risk_class
    )
    if product.category in suitability.applies_to and product.risk_class > limit:
        broken.add("suitability")
    if (
        rules.consent.marketing_requires_consent
        and product.is_marketing_offer
        and not customer.consent_marketing
    ):
        broken.add("no_marketing_consent")
    policy = rules.contact_policy
    if not contact.available:
        if policy.when_unavailable == "drop_marketing" and product.is_marketing_offer:
            broken.add("contact_policy_unavailable")
        return broken
    pid = product.product_id
    if (
        contact.customer_today >= policy.max_impressions_per_customer_per_day
        or contact.customer_week >= policy.max_impressions_per_customer_per_week
    ):
        broken.add("frequency_cap_customer")
    dismissed = contact.dismissed_at_s.get(pid)
    if dismissed is not None and dismissed + policy.dismissal_cooldown_days * 86_400 > NOW_S:
        broken.add("dismissal_cooldown")
    if contact.product_today.get(pid, 0) >= policy.max_impressions_per_product_per_day:
        broken.add("frequency_cap_product_day")
    if contact.product_week.get(pid, 0) >= policy.max_impressions_per_product_per_week:
        broken.add("frequency_cap_product_week")
    return broken


def greedy_slate(eligible: list[ProductInfo], k: int, cap: int) -> list[str]:
    """Best first, skipping a category once it has ``cap`` items, up to ``k``."""
    slate: list[str] = []
    per_category: Counter[str] = Counter()
    for product in eligible:
        if len(slate) < k and per_category[product.category] < cap:
            slate.append(product.product_id)
            per_category[product.category] += 1
    return slate


@settings(PROPERTY, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    catalogue=CATALOGUES,
    rules=RULESETS,
    customer=CUSTOMERS,
    candidates=CANDIDATES,
    contact=CONTACTS,
    app=st.sampled_from(domain.APPS),
    allowed=ALLOWED,
    k=st.integers(1, 12),
    exploration=st.sampled_from([0.0, 0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**32),
)
def test_the_rules_never_let_through_what_a_rule_forbids(
    catalogue: list[ProductInfo],
    rules: RuleSet,
    customer: CustomerView,
    candidates: list[Candidate],
    contact: ContactState,
    app: str,
    allowed: list[str],
    k: int,
    exploration: float,
    seed: int,
) -> None:
    facts = {p.product_id: p for p in catalogue}
    app_config = SHIPPED_APP.model_copy(update={"allowed_categories": allowed})
    engine = RuleEngine(rules, Catalogue(facts))
    outcome = engine.apply(
        customer,
        candidates,
        app,
        app_config,
        contact,
        k,
        exploration=exploration,
        rng=random.Random(seed),
        now_s=NOW_S,
    )
    kept = [c.product_id for c in outcome.kept]
    asked = {c.product_id for c in candidates}
    assert len(kept) <= k and len(set(kept)) == len(kept) and set(kept) <= asked
    assert not set(kept) & {r.product_id for r in outcome.removed}
    per_category = Counter(facts[pid].category for pid in kept)
    assert max(per_category.values(), default=0) <= rules.diversity.max_per_category
    for item in outcome.kept:
        product = facts[item.product_id]
        assert not refusals(product, customer, rules, app, app_config, contact), item
        # The named properties, stated outright as well.
        assert customer.kyc_level >= product.min_kyc_level
        assert customer.consent_marketing or not (
            product.is_marketing_offer and rules.consent.marketing_requires_consent
        )
        assert not (rules.eligibility.exclude_held and product.product_id in customer.held)
        assert (
            "ranked:test" in item.reasons and f"eligible:{customer.customer_type}" in item.reasons
        )
        assert ("consent:marketing" in item.reasons) == product.is_marketing_offer
        assert ("service_offer" in item.reasons) == (not product.is_marketing_offer)
        assert any(r.startswith("contact:") for r in item.reasons) == contact.available
        assert item.propensity is not None and 0 < item.propensity <= 1
    for removal in outcome.removed:
        assert removal.rules_version == "prop"
        if removal.product_id == "ghost":
            assert removal.rule == "unknown_product"
        elif removal.rule != "diversity":
            broken = refusals(facts[removal.product_id], customer, rules, app, app_config, contact)
            assert removal.rule in broken, (removal, broken)
    eligible = [
        facts[c.product_id]
        for c in candidates
        if c.product_id in facts
        and not refusals(facts[c.product_id], customer, rules, app, app_config, contact)
    ]
    if exploration == 0:
        assert kept == greedy_slate(eligible, k, rules.diversity.max_per_category)
    else:  # a random eligible item in some slots, but as many items as the greedy slate
        assert len(kept) == len(greedy_slate(eligible, k, rules.diversity.max_per_category))


def hard_verdicts(outcome: RuleOutcome) -> set[tuple[str, str]]:
    return {(r.product_id, r.rule) for r in outcome.removed if r.rule in HARD_RULES}


@settings(PROPERTY, max_examples=80)
@given(
    catalogue=CATALOGUES,
    rules=RULESETS,
    customers=st.lists(CUSTOMERS, min_size=2, max_size=5),
    candidates=CANDIDATES,
    contacts=st.lists(CONTACTS, min_size=2, max_size=2),
    app=st.sampled_from(domain.APPS),
    allowed=ALLOWED,
    times=st.lists(st.floats(-30 * 86_400, 30 * 86_400), min_size=2, max_size=2),
    explorations=st.lists(st.sampled_from([0.0, 0.1, 0.5]), min_size=2, max_size=2),
)
def test_request_context_never_changes_a_consent_or_kyc_verdict(
    catalogue: list[ProductInfo],
    rules: RuleSet,
    customers: list[CustomerView],
    candidates: list[Candidate],
    contacts: list[ContactState],
    app: str,
    allowed: list[str],
    times: list[float],
    explorations: list[float],
) -> None:
    """The same customer asked at another time, with another contact state and another
    exploration draw (what a request's context can change), through an engine that has served
    other customers since (its per-profile memo warm): every hard-rule verdict is the same as a
    fresh engine's."""
    facts = Catalogue({p.product_id: p for p in catalogue})
    app_config = SHIPPED_APP.model_copy(update={"allowed_categories": allowed})
    warm = RuleEngine(rules, facts)
    for customer in customers:
        fresh = RuleEngine(rules, facts).apply(
            customer, candidates, app, app_config, contacts[0], 50, now_s=NOW_S
        )
        for contact, shift, exploration in zip(contacts, times, explorations, strict=True):
            again = warm.apply(
                customer,
                candidates,
                app,
                app_config,
                contact,
                50,
                exploration=exploration,
                rng=random.Random(int(shift)),
                now_s=NOW_S + shift,
            )
            assert hard_verdicts(again) == hard_verdicts(fresh), customer


# -- experiments ------------------------------------------------------------------------------

VARIANT_NAMES = ["control", "transformer", "priors", "v4", "v5"]


@st.composite
def experiments(draw: st.DrawFn) -> Experiment:
    n = draw(st.integers(1, len(VARIANT_NAMES)))
    holdout = draw(st.sampled_from([0.0, 0.05]) | st.floats(0.0, 0.9))
    return Experiment.model_validate(
        {
            "salt": draw(st.text(string.printable, min_size=4, max_size=24)),
            "holdout": holdout,
            "holdout_variant": {"name": "holdout", "weight": 1, "policy": "segment_priors"}
            if holdout > 0
            else None,
            "variants": [
                {"name": name, "weight": draw(st.floats(0.01, 100.0))} for name in VARIANT_NAMES[:n]
            ],
        }
    )


def share(experiment: Experiment, name: str) -> float:
    """The configured share of an arm: the holdout, then the rest by weight."""
    if name == "holdout":
        return experiment.holdout
    total = sum(v.weight for v in experiment.variants)
    weight = next(v.weight for v in experiment.variants if v.name == name)
    return (1 - experiment.holdout) * weight / total


CUSTOMER_ID = st.integers(1, 2**63 - 1)


@settings(PROPERTY, max_examples=200)
@given(
    experiment=experiments(),
    customer_id=CUSTOMER_ID,
    names=st.lists(st.text(), min_size=2, max_size=2),
)
def test_assignment_is_a_pure_function_of_salt_and_customer(
    experiment: Experiment, customer_id: int, names: list[str]
) -> None:
    first = assign(customer_id, names[0], experiment)
    copy = Experiment.model_validate(experiment.model_dump())
    again = assign(customer_id, names[1], copy)  # another name, a rebuilt config: same arm
    assert (again.variant, again.probability) == (first.variant, first.probability)
    arms = [*experiment.variants, *([experiment.holdout_variant] if experiment.holdout else [])]
    assert first.variant in arms
    assert first.probability == pytest.approx(share(experiment, first.variant.name))
    assert 0 <= unit_interval(experiment.salt, customer_id) < 1


@settings(PROPERTY, max_examples=200)
@given(
    experiment=experiments(),
    customer_id=CUSTOMER_ID,
    more_holdout=st.floats(0.0, 0.9),
    new_weights=st.lists(st.floats(0.01, 100.0), min_size=5, max_size=5),
    scale=st.floats(0.01, 100.0),
)
def test_holdout_membership_and_scaled_weights_are_stable(
    experiment: Experiment,
    customer_id: int,
    more_holdout: float,
    new_weights: list[float],
    scale: float,
) -> None:
    """Raising the holdout only moves customers into it; reweighting the variants never moves
    anyone into or out of the holdout; scaling every weight alike moves no one."""
    before = assign(customer_id, "e", experiment)
    in_holdout = before.variant.name == "holdout"
    raised = min(0.95, experiment.holdout + more_holdout)
    bigger = experiment.model_copy(
        update={
            "holdout": raised,
            "holdout_variant": experiment.holdout_variant
            or DEFAULT_VARIANT.model_copy(update={"name": "holdout"}),
        }
    )
    if in_holdout:
        assert assign(customer_id, "e", bigger).variant.name == "holdout"
    reweighted = experiment.model_copy(
        update={
            "variants": [
                v.model_copy(update={"weight": w})
                for v, w in zip(experiment.variants, new_weights, strict=False)
            ]
        }
    )
    assert (assign(customer_id, "e", reweighted).variant.name == "holdout") == in_holdout
    scaled = experiment.model_copy(
        update={
            "variants": [
                v.model_copy(update={"weight": v.weight * scale}) for v in experiment.variants
            ]
        }
    )
    assert assign(customer_id, "e", scaled).variant.name == before.variant.name


@settings(PROPERTY, max_examples=20)
@given(experiment=experiments(), start=st.integers(1, 2**40))
def test_shares_over_many_customers_match_the_configured_split(
    experiment: Experiment, start: int
) -> None:
    n = 4_000
    counts = Counter(assign(c, "e", experiment).variant.name for c in range(start, start + n))
    arms = [v.name for v in experiment.variants] + (["holdout"] if experiment.holdout else [])
    assert set(counts) <= set(arms)
    for arm in arms:
        p = share(experiment, arm)
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(counts[arm] - n * p) <= 5 * sigma + 1, (arm, counts[arm], n * p)


@settings(PROPERTY, max_examples=100)
@given(app=st.sampled_from(domain.APPS), customer_id=CUSTOMER_ID, experiment=experiments())
def test_the_router_assigns_per_app_or_serves_the_default(
    app: str, customer_id: int, experiment: Experiment
) -> None:
    router = ExperimentRouter(
        ExperimentsConfig(experiments={"exp": experiment}),
        {a: ("exp" if a in ("rib", "imobile") else None) for a in domain.APPS},
    )
    got = router.assign(app, customer_id)
    if app in ("rib", "imobile"):
        assert got == assign(customer_id, "exp", experiment)
    else:
        assert (got.experiment, got.variant, got.probability) == (None, DEFAULT_VARIANT, 1.0)


# -- loaders' path guard ----------------------------------------------------------------------

SEGMENTS = ["inside", "file.csv", "link_out", "link_in", "loop", "..", ".", "data", "data_evil"]
SEGMENTS += ["outside", "to_root", "missing", "data_link"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base/{data (the root), data_evil (a look-alike sibling), outside, data_link -> data};
    in data: inside/file.csv, link_out -> ../outside, link_in -> inside, loop -> loop;
    in outside: to_root -> ../data/inside."""
    base = tmp_path_factory.mktemp("roots").resolve()
    for folder in ("data/inside", "data_evil", "outside"):
        (base / folder).mkdir(parents=True)
    (base / "data/inside/file.csv").write_text("a,b\n")
    (base / "data/link_out").symlink_to("../outside")
    (base / "data/link_in").symlink_to("inside")
    (base / "data/loop").symlink_to("loop")
    (base / "outside/to_root").symlink_to("../data/inside")
    (base / "data_link").symlink_to("data")
    return base


def real_path(path: str) -> str | None:
    """Where ``path`` (absolute) leads, symlinks followed one by one (None: a loop)."""
    resolved, remaining, hops = "/", [p for p in path.split("/") if p], 0
    while remaining:
        part = remaining.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(candidate)
            resolved = "/" if target.startswith("/") else resolved
            remaining = [p for p in target.split("/") if p] + remaining
        else:
            resolved = candidate
    return resolved


def is_under(path: str, root: str) -> bool:
    """Component-wise: ``/x/data_evil`` is not under ``/x/data``."""
    return (path.rstrip("/") + "/").startswith(root.rstrip("/") + "/")


@settings(PROPERTY, max_examples=250)
@given(
    start=st.sampled_from(["data", "data_link", "data_evil", "outside", ".", "data/inside"]),
    segments=st.lists(st.sampled_from(SEGMENTS), max_size=6),
    root_name=st.sampled_from(["data", "data_link"]),
)
@example(start="data", segments=["..", "data_evil", "x"], root_name="data")
@example(start="data", segments=["link_out"], root_name="data")
@example(start="outside", segments=["to_root", "file.csv"], root_name="data")
@example(start="data", segments=["loop", "x"], root_name="data")
def test_the_path_guard_accepts_exactly_the_paths_under_its_roots(
    tree: Path, start: str, segments: list[str], root_name: str
) -> None:
    path = os.path.join(tree, start, *segments)
    root = str(tree / root_name)
    lands = real_path(path)
    real_root = real_path(root)
    assert real_root is not None
    if lands is None:  # a symlink loop: refused, or resolved to a place under the root
        try:
            got = ensure_within_roots(Path(path), [Path(root)])
        except PathOutsideRootsError:
            return
        assert is_under(str(got), real_root), got
    elif is_under(lands, real_root):
        assert ensure_within_roots(Path(path), [Path(root)]) == Path(lands)
    else:
        with pytest.raises(PathOutsideRootsError, match=re.escape(str(Path(path)))):
            ensure_within_roots(Path(path), [Path(root)])


@settings(PROPERTY, max_examples=50)
@given(path=st.sampled_from(["/", "/etc/passwd", "/tmp", "~", "~/x", "/proc/self/root"]))
def test_absolute_paths_outside_the_roots_are_refused(tree: Path, path: str) -> None:
    with pytest.raises(PathOutsideRootsError):
        ensure_within_roots(Path(path), [tree / "data"])
    with pytest.raises(PathOutsideRootsError, match="no data roots"):
        ensure_within_roots(tree / "data" / "inside", [])
