"""Business rules: eligibility, suitability, consent, contact policy, diversity, reason codes.

The rules are data (``rules.yaml``, versioned, hot-reloaded); this module is the one engine that
applies them. Every item kept carries the reason codes that let it through; every item removed
is recorded with the rule, a detail and the rules version, for the audit log.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import Field

from persona import domain
from serving.catalogue import Catalogue, ProductInfo
from serving.config import AppConfig, ConfigError, _Strict, read_yaml
from serving.customer import CustomerView

log = logging.getLogger(__name__)


class Eligibility(_Strict):
    exclude_held: bool = True


class Suitability(_Strict):
    applies_to: list[str] = Field(default_factory=lambda: list(domain.BANK_CATEGORIES))
    max_risk_class: dict[str, int] = Field(
        default_factory=lambda: {p: i + 2 for i, p in enumerate(domain.RISK_PROFILES)}
    )
    unknown_profile_max_risk_class: int = Field(default=1, ge=1, le=5)


class Consent(_Strict):
    marketing_requires_consent: bool = True


class ContactPolicy(_Strict):
    """Caps count impressions across all four apps (Redis counters shared by every replica)."""

    max_impressions_per_product_per_day: int = Field(default=3, ge=0)
    max_impressions_per_product_per_week: int = Field(default=8, ge=0)
    max_impressions_per_customer_per_day: int = Field(default=30, ge=0)
    max_impressions_per_customer_per_week: int = Field(default=120, ge=0)
    dismissal_cooldown_days: float = Field(default=14.0, ge=0)
    #: When the counters cannot be read: drop marketing offers (safe) or serve without caps.
    when_unavailable: str = Field(default="drop_marketing", pattern=r"^(drop_marketing|allow)$")


class Diversity(_Strict):
    max_per_category: int = Field(default=2, ge=1)


class RuleSet(_Strict):
    version: str = Field(min_length=1, max_length=64)
    eligibility: Eligibility = Eligibility()
    suitability: Suitability = Suitability()
    consent: Consent = Consent()
    contact_policy: ContactPolicy = ContactPolicy()
    diversity: Diversity = Diversity()
    blocked_products: list[str] = Field(
        default_factory=list,
        description="Withdrawn products: never shown, whatever the model says.",
    )


def _dismissals(customer: CustomerView) -> dict[str, float]:
    """Product -> latest dismissal time in the customer's online interaction sequence."""
    latest: dict[str, float] = {}
    for interaction in customer.sequence:
        if interaction.event_type == "dismiss":
            previous = latest.get(interaction.product_id, 0.0)
            latest[interaction.product_id] = max(previous, float(interaction.timestamp_s))
    return latest


@dataclass(frozen=True)
class ContactState:
    """What the contact policy needs for one customer, read from the cross-app counters."""

    available: bool
    product_today: dict[str, int] = field(default_factory=dict)
    product_week: dict[str, int] = field(default_factory=dict)
    customer_today: int = 0
    customer_week: int = 0
    dismissed_at_s: dict[str, float] = field(default_factory=dict)

    @classmethod
    def unavailable(cls) -> ContactState:
        return cls(available=False)


@dataclass(frozen=True)
class Candidate:
    """A ranked product on its way through the rules."""

    product_id: str
    score: float
    reasons: tuple[str, ...] = ()
    propensity: float | None = None


@dataclass(frozen=True)
class Removal:
    product_id: str
    rule: str
    detail: str
    rules_version: str


@dataclass(frozen=True)
class RuleOutcome:
    kept: list[Candidate]
    removed: list[Removal]
    rules_version: str


_ProfileRules = tuple[tuple[str, str] | None, tuple[str, str] | None]
#: Distinct (app, customer profile) tables kept per engine before starting afresh.
_PROFILE_CACHE_SIZE = 4096


class RuleEngine:
    """Applies one :class:`RuleSet` (immutable: reloading builds a new engine)."""

    def __init__(self, rules: RuleSet, catalogue: Catalogue):
        self.rules = rules
        self.catalogue = catalogue
        unknown = sorted(set(rules.blocked_products) - set(catalogue.products))
        if unknown:
            log.warning("rules %s block unknown products %s", rules.version, unknown)
        self._by_profile: dict[tuple[object, ...], dict[str, _ProfileRules]] = {}

    def hard_rule(
        self, product: ProductInfo, customer: CustomerView, app: str, app_config: AppConfig
    ) -> tuple[str, str] | None:
        """The first eligibility/suitability/consent rule ``product`` fails, as (rule, detail),
        or None when it passes them all."""
        before_held, after_held = self._profile_rules(product, customer, app, app_config)
        if before_held is not None:
            return before_held
        if self.rules.eligibility.exclude_held and product.product_id in customer.held:
            return "already_held", "customer already holds it"
        return after_held

    def _profile_rules(
        self, product: ProductInfo, customer: CustomerView, app: str, app_config: AppConfig
    ) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
        """The rules that depend on the product, the app and the customer's profile only (not on
        what they hold), checked before and after the held-product rule. Few profiles exist
        (type, age band, income, KYC, risk profile, consent), so results are memoised per
        engine (one rules version) and profile: the request path does dictionary lookups."""
        key = (
            app,
            customer.customer_type,
            customer.age_band,
            customer.income_band_index,
            customer.kyc_level,
            customer.risk_profile,
            customer.consent_marketing,
        )
        table = self._by_profile.get(key)
        if table is None:
            if len(self._by_profile) >= _PROFILE_CACHE_SIZE:
                self._by_profile.clear()
            table = self._by_profile[key] = {}
        found = table.get(product.product_id)
        if found is None:
            found = table[product.product_id] = (
                self._rules_before_held(product, customer, app, app_config),
                self._rules_after_held(product, customer),
            )
        return found

    def _rules_before_held(
        self, product: ProductInfo, customer: CustomerView, app: str, app_config: AppConfig
    ) -> tuple[str, str] | None:
        if product.product_id in self.rules.blocked_products:
            return "blocked_product", "withdrawn in this rules version"
        if app not in product.apps:
            return "not_offered_in_app", f"{product.product_id} is not offered in {app}"
        if product.category not in app_config.allowed_categories:
            return "category_not_allowed_in_app", f"{product.category} not allowed in {app}"
        if customer.customer_type is None or customer.customer_type not in product.customer_types:
            return (
                "customer_type",
                f"needs {sorted(product.customer_types)}, customer is {customer.customer_type}",
            )
        age = customer.age_floor
        if product.min_age > 18 and (age is None or age < product.min_age):
            return "min_age", f"needs age ≥ {product.min_age}, band {customer.age_band}"
        if product.min_income_index >= 0 and customer.income_band_index < product.min_income_index:
            return "min_income", (
                f"needs income ≥ {domain.INCOME_BANDS[product.min_income_index]}, "
                f"index {customer.income_band_index}"
            )
        if customer.kyc_level < product.min_kyc_level:
            return "kyc_level", f"needs KYC ≥ {product.min_kyc_level}, has {customer.kyc_level}"
        return None

    def _rules_after_held(
        self, product: ProductInfo, customer: CustomerView
    ) -> tuple[str, str] | None:
        limit = self._risk_limit(customer)
        if product.category in self.rules.suitability.applies_to and product.risk_class > limit:
            return "suitability", (
                f"risk class {product.risk_class} > {limit} for {customer.risk_profile or 'unknown'} profile"
            )
        if (
            self.rules.consent.marketing_requires_consent
            and product.is_marketing_offer
            and not customer.consent_marketing
        ):
            return "no_marketing_consent", "marketing offer without marketing consent"
        return None

    def _risk_limit(self, customer: CustomerView) -> int:
        s = self.rules.suitability
        if customer.risk_profile is None:
            return s.unknown_profile_max_risk_class
        return s.max_risk_class.get(customer.risk_profile, s.unknown_profile_max_risk_class)

    def _contact_rule(
        self, product: ProductInfo, contact: ContactState, now_s: float
    ) -> tuple[str, str] | None:
        policy = self.rules.contact_policy
        dismissed = contact.dismissed_at_s.get(product.product_id)
        until = None if dismissed is None else dismissed + policy.dismissal_cooldown_days * 86_400
        if until is not None and until > now_s:
            return (
                "dismissal_cooldown",
                f"dismissed; cooling down for {(until - now_s) / 86400:.1f} more days",
            )
        if not contact.available:
            if policy.when_unavailable == "drop_marketing" and product.is_marketing_offer:
                return "contact_policy_unavailable", "counters unreachable: marketing withheld"
            return None
        # .get: a cap of 0 (a product paused) is reached before its first impression.
        today = contact.product_today.get(product.product_id, 0)
        if today >= policy.max_impressions_per_product_per_day:
            return "frequency_cap_product_day", (
                f"shown {today} times today (cap {policy.max_impressions_per_product_per_day})"
            )
        week = contact.product_week.get(product.product_id, 0)
        if week >= policy.max_impressions_per_product_per_week:
            return "frequency_cap_product_week", (
                f"shown {week} times this week (cap {policy.max_impressions_per_product_per_week})"
            )
        return None

    def apply(
        self,
        customer: CustomerView,
        ranked: list[Candidate],
        app: str,
        app_config: AppConfig,
        contact: ContactState,
        k: int,
        *,
        exploration: float = 0.0,
        rng: random.Random | None = None,
        now_s: float | None = None,
    ) -> RuleOutcome:
        """Filter ``ranked`` (best first) and fill at most ``k`` slots, with reason codes.

        Slots are filled in order: with probability ``1 - exploration`` the best remaining
        eligible item whose category is under the diversity cap, else one of those drawn
        uniformly. Each item's ``propensity`` is the probability this process put it in its
        slot, so off-policy evaluation can reweight what was shown.
        """
        now_s = time.time() if now_s is None else now_s
        version = self.rules.version
        policy = self.rules.contact_policy
        removed: list[Removal] = []
        eligible: list[tuple[Candidate, ProductInfo]] = []
        customer_capped = contact.available and (
            contact.customer_today >= policy.max_impressions_per_customer_per_day
            or contact.customer_week >= policy.max_impressions_per_customer_per_week
        )
        if not contact.available:
            # The counters' dismissals are out of reach; the online sequence carries the
            # customer's recent ones, so the cooldown still holds for those.
            contact = replace(contact, dismissed_at_s=_dismissals(customer))
        for candidate in ranked:
            product = self.catalogue.products.get(candidate.product_id)
            if product is None:
                removed.append(
                    Removal(candidate.product_id, "unknown_product", "not in catalogue", version)
                )
                continue
            failed = self.hard_rule(product, customer, app, app_config)
            if failed is None and customer_capped:
                failed = (
                    "frequency_cap_customer",
                    f"{contact.customer_today} today / {contact.customer_week} this week across apps",
                )
            if failed is None:
                failed = self._contact_rule(product, contact, now_s)
            if failed is not None:
                removed.append(Removal(candidate.product_id, failed[0], failed[1], version))
                continue
            eligible.append((candidate, product))

        kept, capped = self._fill_slots(eligible, k, exploration, rng or random.Random(0))
        chosen = {c.product_id for c in kept}
        cap = self.rules.diversity.max_per_category
        removed += [
            Removal(pid, "diversity", f"already {cap} {category} items in the slate", version)
            for pid, category in capped.items()
            if pid not in chosen
        ]
        kept = [
            Candidate(
                product_id=c.product_id,
                score=c.score,
                propensity=c.propensity,
                reasons=(
                    *c.reasons,
                    *self._reasons(self.catalogue[c.product_id], customer, contact),
                ),
            )
            for c in kept
        ]
        return RuleOutcome(kept=kept, removed=removed, rules_version=version)

    def _fill_slots(
        self,
        eligible: list[tuple[Candidate, ProductInfo]],
        k: int,
        exploration: float,
        rng: random.Random,
    ) -> tuple[list[Candidate], dict[str, str]]:
        cap = self.rules.diversity.max_per_category
        per_category: dict[str, int] = {}
        remaining = list(eligible)
        kept: list[Candidate] = []
        capped: dict[str, str] = {}  # product -> category, skipped for diversity at some slot
        while remaining and len(kept) < k:
            open_items = []
            for candidate, product in remaining:
                if per_category.get(product.category, 0) >= cap:
                    capped[product.product_id] = product.category
                else:
                    open_items.append((candidate, product))
            if not open_items:
                break
            top = open_items[0]
            explore = exploration > 0 and rng.random() < exploration
            pick = open_items[rng.randrange(len(open_items))] if explore else top
            share = exploration / len(open_items)
            propensity = share + (1.0 - exploration if pick is top else 0.0)
            candidate, product = pick
            reasons = candidate.reasons + (("exploration_slot",) if pick is not top else ())
            kept.append(
                Candidate(candidate.product_id, candidate.score, reasons, round(propensity, 6))
            )
            per_category[product.category] = per_category.get(product.category, 0) + 1
            remaining.remove(pick)
        return kept, capped

    def _reasons(
        self, product: ProductInfo, customer: CustomerView, contact: ContactState
    ) -> tuple[str, ...]:
        reasons = [f"eligible:{customer.customer_type}"]
        if product.category in self.rules.suitability.applies_to:
            reasons.append(
                f"suitable:risk_class={product.risk_class}<={self._risk_limit(customer)}"
            )
        reasons.append("consent:marketing" if product.is_marketing_offer else "service_offer")
        if contact.available:
            cap = self.rules.contact_policy.max_impressions_per_product_per_day
            reasons.append(
                f"contact:{contact.product_today.get(product.product_id, 0)}/{cap}_today"
            )
        return tuple(reasons)


class RulesProvider:
    """The current :class:`RuleEngine`, re-read when ``rules.yaml`` changes (checked at most every
    ``check_interval_s``). A broken edit is refused and logged; the last good version stays."""

    def __init__(self, path: Path, catalogue: Catalogue, check_interval_s: float = 0.5):
        self.path = Path(path)
        self.catalogue = catalogue
        self.check_interval_s = check_interval_s
        self._lock = threading.Lock()
        self._engine = RuleEngine(self._read(), catalogue)
        self._mtime = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> float:
        return self.path.stat().st_mtime_ns if self.path.exists() else 0.0

    def _read(self) -> RuleSet:
        rules = read_yaml(self.path, RuleSet)
        assert isinstance(rules, RuleSet)
        return rules

    def engine(self) -> RuleEngine:
        now = time.monotonic()
        if now - self._checked >= self.check_interval_s:
            with self._lock:
                self._checked = now
                mtime = self._stat()
                if mtime != self._mtime:
                    self._mtime = mtime
                    try:
                        self._engine = RuleEngine(self._read(), self.catalogue)
                        log.info("rules reloaded: version %s", self._engine.rules.version)
                    except ConfigError as error:
                        log.error(
                            "rules reload refused, keeping %s: %s",
                            self._engine.rules.version,
                            error,
                        )
        return self._engine
