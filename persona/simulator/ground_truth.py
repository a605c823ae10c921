"""The simulator's hidden preference model: what customers really want. Simulator-only.

Nothing outside :mod:`persona.simulator` may import this module (a test enforces it for
``training`` and ``serving``): models must learn preferences from logged behaviour, never read
them. Later oracle and A/B tooling reads it through :class:`GroundTruth`.

The model, in logit units::

    logit(c, p, t) = click_bias[p] + traits[c] · attributes[p]          (static affinity)
                   + Σ_q held[c, q] · sequential[q, p]                    (holding q raises p)
                   + salary_boost[p] · exp(-days_since_salary / 5)        (fresh salary → cards)
                   + maturity_boost[p] · exp(-days_since_maturity / 14)   (matured deposit → invest)
                   + seasonal[p](t)                                       (summer, December, month end)
                   - fatigue · recent_impressions[c, p]                   (decayed count of recent views)
    P(click | shown at position k) = examination(k) · sigmoid(logit),  examination(k) = k^-0.6

Traits are 8 latent dimensions (:data:`TRAITS`) drawn from the demographics plus noise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from persona import domain
from persona.layout import DataLayout
from persona.schemas import ColumnSpec, TableSchema
from persona.simulator.catalogue import Catalogue

#: The latent trait dimensions, in column order of every trait matrix.
TRAITS: Final[tuple[str, ...]] = (
    "affluence",
    "risk_appetite",
    "digital_affinity",
    "home_family",
    "travel",
    "saving",
    "credit_need",
    "business",
)
_T: Final = {name: i for i, name in enumerate(TRAITS)}

#: Hidden per-product truth: (click bias logit, initial-holding bias logit, trait weights).
_PRODUCT_TRUTH: Final[dict[str, tuple[float, float, dict[str, float]]]] = {
    "card_debit": (-3.0, 1.8, {"digital_affinity": 0.3, "affluence": -0.2}),
    "card_student": (-3.2, -3.0, {"credit_need": 0.5, "affluence": -0.8, "digital_affinity": 0.4}),
    "card_secured": (-3.8, -3.5, {"credit_need": 0.8, "affluence": -0.7}),
    "card_classic": (-3.2, -1.2, {"credit_need": 0.7, "affluence": 0.2}),
    "card_cashback": (-3.1, -1.8, {"credit_need": 0.5, "digital_affinity": 0.5, "affluence": 0.2}),
    "card_travel": (-3.3, -2.2, {"travel": 1.0, "affluence": 0.5}),
    "card_gold": (-3.4, -2.0, {"affluence": 0.9, "credit_need": 0.3}),
    "card_platinum": (-3.7, -2.8, {"affluence": 1.2, "travel": 0.4}),
    "card_corporate": (-3.0, -1.0, {"business": 0.4, "travel": 0.5, "credit_need": 0.3}),
    "card_business_debit": (-2.8, 0.5, {"business": 0.3, "digital_affinity": 0.3}),
    "loan_personal": (-3.5, -2.0, {"credit_need": 1.0, "affluence": -0.3}),
    "loan_home": (-3.8, -1.8, {"home_family": 1.2, "credit_need": 0.5, "affluence": 0.3}),
    "loan_home_equity": (-4.2, -3.5, {"home_family": 0.8, "credit_need": 0.6}),
    "loan_car": (-3.6, -2.3, {"credit_need": 0.7, "home_family": 0.4}),
    "loan_student": (-3.8, -3.0, {"credit_need": 0.8, "home_family": -0.8, "affluence": -0.6}),
    "loan_overdraft": (-3.4, -1.5, {"credit_need": 0.9, "affluence": -0.5}),
    "loan_business_term": (-3.5, -1.5, {"business": 0.6, "credit_need": 0.8}),
    "loan_working_capital": (-3.3, -1.2, {"business": 0.5, "credit_need": 0.9}),
    "dep_current": (-2.5, 3.2, {}),
    "dep_savings": (-3.0, -0.2, {"saving": 0.9}),
    "dep_kids_savings": (-3.4, -2.5, {"home_family": 1.1, "saving": 0.4}),
    "dep_term_3m": (-3.4, -3.0, {"saving": 0.8, "risk_appetite": -0.3}),
    "dep_term_6m": (-3.4, -2.8, {"saving": 0.9, "risk_appetite": -0.4}),
    "dep_term_12m": (-3.3, -2.4, {"saving": 1.0, "risk_appetite": -0.5, "affluence": 0.2}),
    "dep_term_24m": (-3.7, -3.0, {"saving": 1.0, "risk_appetite": -0.6, "affluence": 0.3}),
    "dep_retirement": (-3.6, -2.5, {"saving": 0.8, "home_family": 0.2}),
    "dep_corporate_current": (-2.5, 3.5, {}),
    "dep_corporate_term": (-3.2, -1.5, {"saving": 0.8, "affluence": 0.4}),
    "ins_home": (-3.6, -2.2, {"home_family": 1.0, "affluence": 0.3}),
    "ins_motor": (-3.4, -1.8, {"home_family": 0.4, "credit_need": 0.1}),
    "ins_travel": (-3.3, -2.5, {"travel": 1.2}),
    "ins_life": (-3.8, -2.0, {"home_family": 0.9, "saving": 0.3}),
    "ins_health": (-3.5, -2.2, {"affluence": 0.4, "home_family": 0.4}),
    "ins_payment_protection": (-4.0, -3.0, {"credit_need": 0.6, "risk_appetite": -0.3}),
    "ins_pet": (-3.9, -3.2, {"home_family": 0.6, "digital_affinity": 0.2}),
    "ins_business": (-3.2, -1.5, {"business": 0.6, "risk_appetite": -0.3}),
    "inv_money_market": (-3.5, -2.8, {"saving": 0.6, "affluence": 0.4, "business": 0.1}),
    "inv_bond_fund": (-3.8, -3.0, {"saving": 0.5, "affluence": 0.5, "risk_appetite": 0.1}),
    "inv_balanced_fund": (-3.7, -2.8, {"affluence": 0.6, "risk_appetite": 0.5, "saving": 0.3}),
    "inv_equity_fund": (-3.8, -3.0, {"affluence": 0.7, "risk_appetite": 1.0}),
    "inv_index_etf": (-3.6, -3.0, {"risk_appetite": 0.8, "digital_affinity": 0.6, "saving": 0.3}),
    "inv_emerging_markets": (-4.2, -4.0, {"risk_appetite": 1.4, "affluence": 0.5}),
    "inv_pension_plan": (-3.7, -2.2, {"saving": 0.7, "affluence": 0.4}),
    "inv_brokerage": (
        -4.0,
        -3.5,
        {"risk_appetite": 1.2, "digital_affinity": 0.5, "affluence": 0.4},
    ),
    "pay_fx_transfer": (-3.6, -2.5, {"travel": 0.9, "business": 0.4}),
    "pay_standing_order": (-3.3, -0.8, {"saving": 0.2}),
    "pay_mobile_wallet": (-3.0, -1.5, {"digital_affinity": 1.2}),
    "pay_bill_autopay": (-3.1, -1.0, {"home_family": 0.4, "digital_affinity": 0.3}),
    "pay_payroll": (-3.0, -0.8, {"business": 0.6}),
    "pay_pos_terminal": (-3.2, -1.5, {"business": 0.5, "digital_affinity": 0.2}),
    "pay_cash_management": (-3.5, -2.0, {"business": 0.6, "affluence": 0.5}),
}

#: Holding (or having bought) the first product raises the logit of the second by this much.
_SEQUENTIAL: Final[dict[tuple[str, str], float]] = {
    ("loan_home", "ins_home"): 1.8,
    ("loan_home", "ins_life"): 0.8,
    ("loan_home", "ins_payment_protection"): 0.6,
    ("loan_home", "loan_home_equity"): 0.6,
    ("loan_car", "ins_motor"): 1.8,
    ("loan_car", "ins_payment_protection"): 0.4,
    ("loan_personal", "ins_payment_protection"): 0.8,
    ("card_travel", "ins_travel"): 1.2,
    ("ins_travel", "card_travel"): 0.6,
    ("ins_travel", "pay_fx_transfer"): 0.6,
    ("dep_current", "card_debit"): 0.8,
    ("dep_current", "pay_bill_autopay"): 0.6,
    ("dep_current", "pay_standing_order"): 0.4,
    ("dep_current", "pay_mobile_wallet"): 0.5,
    ("card_classic", "card_gold"): 0.5,
    ("card_gold", "card_platinum"): 0.6,
    ("card_classic", "pay_mobile_wallet"): 0.4,
    ("dep_savings", "dep_term_12m"): 0.5,
    ("dep_savings", "inv_money_market"): 0.4,
    ("inv_balanced_fund", "inv_equity_fund"): 0.5,
    ("inv_equity_fund", "inv_brokerage"): 0.6,
    ("inv_index_etf", "inv_brokerage"): 0.5,
    ("dep_corporate_current", "pay_payroll"): 0.8,
    ("dep_corporate_current", "pay_cash_management"): 0.6,
    ("dep_corporate_current", "card_corporate"): 0.5,
    ("loan_business_term", "ins_business"): 1.0,
    ("pay_payroll", "pay_cash_management"): 0.5,
}

#: Credit cards a fresh salary credit makes attractive, and the logit boost on salary day.
_SALARY_BOOST: Final[dict[str, float]] = {
    "card_student": 0.5,
    "card_classic": 0.8,
    "card_cashback": 0.8,
    "card_travel": 0.6,
    "card_gold": 0.7,
    "card_platinum": 0.6,
}
_MATURITY_CATEGORY_BOOST: Final[dict[str, float]] = {"investment": 1.5, "deposit": 0.3}


@dataclass(frozen=True)
class ResponseParams:
    """Scalars of the response model (what happens after an impression)."""

    #: Logit penalty per unit of decayed recent impressions of the same product.
    fatigue_per_impression: float = 0.6
    #: Half-life (days) of an impression's contribution to fatigue.
    fatigue_half_life_days: float = 10.0
    #: examination(position) = position ** -examination_exponent.
    examination_exponent: float = 0.6
    salary_decay_days: float = 5.0
    maturity_decay_days: float = 14.0
    #: Seasonal logit shifts.
    summer_travel: float = 0.8
    pre_december_cards: float = 0.4
    month_end_saving: float = 0.25
    weekend_loans: float = -0.3
    #: P(apply | click) = sigmoid(apply_intercept + apply_slope * personal affinity).
    apply_intercept: float = -0.6
    apply_slope: float = 0.8
    #: P(approved | apply) for an eligible applicant; ineligible applicants are always declined.
    approval_credit: float = 0.75
    approval_other: float = 0.92
    #: P(dismiss | shown, not clicked) = sigmoid(intercept + fatigue_slope*fatigue - affinity_slope*affinity).
    dismiss_intercept: float = -3.0
    dismiss_fatigue_slope: float = 0.7
    dismiss_affinity_slope: float = 0.3
    #: Initial holdings: logit = hold_bias + hold_trait_scale * traits·attributes + sequential.
    hold_trait_scale: float = 0.9

    @property
    def fatigue_decay_per_day(self) -> float:
        return float(0.5 ** (1.0 / self.fatigue_half_life_days))


def _naive_utc(at: datetime) -> datetime:
    """A naive UTC datetime (aware ones are converted; naive ones are taken as UTC)."""
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True, eq=False)
class PreferenceModel:
    """Per-product hidden parameters over the catalogue order (P products, D = len(TRAITS))."""

    product_ids: tuple[str, ...]
    categories: tuple[str, ...]
    click_bias: np.ndarray  # (P,)
    hold_bias: np.ndarray  # (P,)
    attributes: np.ndarray  # (P, D)
    sequential: np.ndarray  # (P, P): row = held product, column = boosted product
    salary_boost: np.ndarray  # (P,)
    maturity_boost: np.ndarray  # (P,)
    summer: np.ndarray  # (P,) weight of the summer shift
    pre_december: np.ndarray  # (P,)
    month_end: np.ndarray  # (P,)
    weekend: np.ndarray  # (P,)
    params: ResponseParams = field(default_factory=ResponseParams)

    @classmethod
    def default(cls, catalogue: Catalogue) -> PreferenceModel:
        """The bank's fixed hidden preference model for ``catalogue``."""
        ids = catalogue.product_ids
        missing = sorted(set(ids) - set(_PRODUCT_TRUTH))
        if missing:
            raise ValueError(f"catalogue: no ground truth for product(s) {', '.join(missing)}")
        p_index = {pid: i for i, pid in enumerate(ids)}
        n = len(ids)
        attributes = np.zeros((n, len(TRAITS)), dtype=np.float32)
        click_bias = np.zeros(n, dtype=np.float32)
        hold_bias = np.zeros(n, dtype=np.float32)
        for i, pid in enumerate(ids):
            click_bias[i], hold_bias[i], weights = _PRODUCT_TRUTH[pid]
            for trait, w in weights.items():
                attributes[i, _T[trait]] = w
        sequential = np.zeros((n, n), dtype=np.float32)
        for (src, dst), boost in _SEQUENTIAL.items():
            sequential[p_index[src], p_index[dst]] = boost
        salary = np.array([_SALARY_BOOST.get(pid, 0.0) for pid in ids], dtype=np.float32)
        categories = tuple(p.category for p in catalogue.products)
        maturity = np.array(
            [_MATURITY_CATEGORY_BOOST.get(c, 0.0) for c in categories], dtype=np.float32
        )
        is_cat = {c: np.array([x == c for x in categories]) for c in domain.BANK_CATEGORIES}
        return cls(
            product_ids=ids,
            categories=categories,
            click_bias=click_bias,
            hold_bias=hold_bias,
            attributes=attributes,
            sequential=sequential,
            salary_boost=salary,
            maturity_boost=maturity,
            summer=np.clip(attributes[:, _T["travel"]], 0.0, None).astype(np.float32),
            pre_december=is_cat["card"].astype(np.float32),
            month_end=(is_cat["investment"] | is_cat["deposit"]).astype(np.float32),
            weekend=is_cat["loan"].astype(np.float32),
        )

    @property
    def size(self) -> int:
        return len(self.product_ids)

    def affinity(self, traits: np.ndarray, product_idx: np.ndarray) -> np.ndarray:
        """(n,) traits·attributes for row-aligned customers and products (no bias)."""
        return np.einsum("ij,ij->i", traits, self.attributes[product_idx]).astype(np.float32)

    def seasonal_logit(
        self, product_idx: np.ndarray, days: np.ndarray | np.datetime64
    ) -> np.ndarray:
        """(n,) seasonal shift for products on calendar days (``datetime64[D]``, broadcastable)."""
        days = np.asarray(days, dtype="datetime64[D]")
        month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
        day_of_month = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
        weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        p = self.params
        summer = np.isin(month, (6, 7, 8))
        pre_december = (month == 11) | ((month == 12) & (day_of_month <= 24))
        month_end = (day_of_month >= 25) | (day_of_month <= 2)
        weekend = weekday >= 5
        return (
            p.summer_travel * self.summer[product_idx] * summer
            + p.pre_december_cards * self.pre_december[product_idx] * pre_december
            + p.month_end_saving * self.month_end[product_idx] * month_end
            + p.weekend_loans * self.weekend[product_idx] * weekend
        ).astype(np.float32)

    def logit(
        self,
        traits: np.ndarray,
        product_idx: np.ndarray,
        days: np.ndarray | np.datetime64,
        *,
        held: np.ndarray | None,
        recent_impressions: np.ndarray | None,
        days_since_salary: np.ndarray | None,
        days_since_maturity: np.ndarray | None,
    ) -> np.ndarray:
        """(n,) click logit before position bias; see the module docstring for the terms.

        ``held`` is (n, P) bool (what each row's customer holds); ``recent_impressions`` is the
        decayed count of recent impressions of the row's product; ``days_since_*`` are days.
        ``None`` switches that term off (no holdings / no recent impressions / no recent event).
        """
        p = self.params
        logit = self.click_bias[product_idx] + self.affinity(traits, product_idx)
        logit = logit + self.seasonal_logit(product_idx, days)
        if held is not None:
            logit = logit + np.einsum(
                "ij,ij->i", held.astype(np.float32), self.sequential.T[product_idx]
            )
        if days_since_salary is not None:
            decay = np.exp(-np.asarray(days_since_salary, dtype=np.float32) / p.salary_decay_days)
            logit = logit + self.salary_boost[product_idx] * decay
        if days_since_maturity is not None:
            decay = np.exp(
                -np.asarray(days_since_maturity, dtype=np.float32) / p.maturity_decay_days
            )
            logit = logit + self.maturity_boost[product_idx] * decay
        if recent_impressions is not None:
            logit = logit - p.fatigue_per_impression * np.asarray(recent_impressions)
        return logit.astype(np.float32)

    def examination(self, position: np.ndarray | int) -> np.ndarray:
        """Probability that a slot is looked at: position ** -examination_exponent (1 at the top)."""
        pos = np.asarray(position, dtype=np.float32)
        if np.any(pos < 1):
            raise ValueError("position: must be >= 1")
        return pos ** (-self.params.examination_exponent)

    def click_probability(self, logit: np.ndarray, position: np.ndarray | int) -> np.ndarray:
        return (self.examination(position) * _sigmoid(logit)).astype(np.float32)

    def initial_holding_logit(self, traits: np.ndarray, product: int) -> np.ndarray:
        """(n,) logit of holding ``product`` at the start (sequential terms added by the caller)."""
        affinity = traits @ self.attributes[product]
        return (self.hold_bias[product] + self.params.hold_trait_scale * affinity).astype(
            np.float32
        )

    # -- persistence ------------------------------------------------------------------------

    def product_table(self) -> pa.Table:
        """Per-product vectors: bias, holding bias, trait weights and context weights."""
        columns: dict[str, object] = {
            "product_id": list(self.product_ids),
            "category": list(self.categories),
            "click_bias": self.click_bias,
            "hold_bias": self.hold_bias,
        }
        for i, trait in enumerate(TRAITS):
            columns[f"attr_{trait}"] = self.attributes[:, i]
        for name in ("salary_boost", "maturity_boost", "summer", "pre_december", "month_end"):
            columns[name] = getattr(self, name)
        columns["weekend"] = self.weekend
        return pa.table(columns)

    def sequential_table(self) -> pa.Table:
        src, dst = np.nonzero(self.sequential)
        return pa.table(
            {
                "held_product_id": [self.product_ids[i] for i in src],
                "boosted_product_id": [self.product_ids[j] for j in dst],
                "logit_boost": self.sequential[src, dst],
            }
        )

    @classmethod
    def from_tables(
        cls, products: pa.Table, sequential: pa.Table, params: ResponseParams
    ) -> PreferenceModel:
        ids = tuple(products.column("product_id").to_pylist())
        index = {pid: i for i, pid in enumerate(ids)}

        def col(name: str) -> np.ndarray:
            return products.column(name).to_numpy().astype(np.float32)

        seq = np.zeros((len(ids), len(ids)), dtype=np.float32)
        for src, dst, boost in zip(
            sequential.column("held_product_id").to_pylist(),
            sequential.column("boosted_product_id").to_pylist(),
            sequential.column("logit_boost").to_pylist(),
            strict=True,
        ):
            seq[index[src], index[dst]] = boost
        return cls(
            product_ids=ids,
            categories=tuple(products.column("category").to_pylist()),
            click_bias=col("click_bias"),
            hold_bias=col("hold_bias"),
            attributes=np.stack([col(f"attr_{t}") for t in TRAITS], axis=1),
            sequential=seq,
            salary_boost=col("salary_boost"),
            maturity_boost=col("maturity_boost"),
            summer=col("summer"),
            pre_december=col("pre_december"),
            month_end=col("month_end"),
            weekend=col("weekend"),
            params=params,
        )


# -- customer traits ------------------------------------------------------------------------

CUSTOMER_TRAITS = TableSchema(
    name="customer_traits",
    description="Hidden latent traits per customer (simulator ground truth).",
    primary_key=("customer_id",),
    columns=(
        ColumnSpec("customer_id", pa.int64(), min_value=1),
        *(ColumnSpec(t, pa.float32()) for t in TRAITS),
    ),
)


def draw_traits(
    rng: np.random.Generator,
    *,
    is_corporate: np.ndarray,
    age: np.ndarray,
    income_index: np.ndarray,
    risk_index: np.ndarray,
    city_index: np.ndarray,
    occupation_index: np.ndarray,
    life_stage_index: np.ndarray,
) -> np.ndarray:
    """(n, 8) float32 latent traits from the demographics plus Gaussian noise.

    Indices point into the :mod:`persona.domain` tuples (-1 for a missing value); ``age`` in
    years (NaN for corporate clients). Each trait is roughly standardised (mean ~0, sd ~1).
    """
    n = len(is_corporate)
    occ = {name: occupation_index == i for i, name in enumerate(domain.OCCUPATIONS)}
    life = {name: life_stage_index == i for i, name in enumerate(domain.LIFE_STAGES)}
    metro, rural = city_index == 0, city_index == 3
    urbanish = city_index <= 1
    age0 = np.where(np.isnan(age), 40.0, age)
    income = (income_index.astype(np.float32) - 2.0) / 1.2
    risk = (risk_index.astype(np.float32) - 1.5) / 1.1

    def noise(sd: float) -> np.ndarray:
        return rng.normal(0.0, sd, n).astype(np.float32)

    traits = np.empty((n, len(TRAITS)), dtype=np.float32)
    traits[:, _T["affluence"]] = 0.8 * income + 0.15 * metro + noise(0.5)
    traits[:, _T["risk_appetite"]] = 0.8 * risk + noise(0.5)
    traits[:, _T["digital_affinity"]] = (
        -0.045 * (age0 - 40.0) + 0.3 * urbanish - 0.3 * rural + noise(0.6)
    )
    traits[:, _T["home_family"]] = (
        1.2 * life["family"] + 0.5 * life["established"] - 0.8 * life["student"] + noise(0.6)
    )
    traits[:, _T["travel"]] = (
        0.4 * traits[:, _T["affluence"]] + 0.3 * life["young_professional"] + noise(0.7)
    )
    traits[:, _T["saving"]] = (
        0.02 * (age0 - 40.0)
        + 0.3 * (risk_index == 0)
        + 0.2 * traits[:, _T["affluence"]]
        + noise(0.6)
    )
    traits[:, _T["credit_need"]] = (
        0.6 * life["family"]
        + 0.4 * life["young_professional"]
        - 0.4 * life["retired"]
        - 0.3 * traits[:, _T["affluence"]]
        + noise(0.6)
    )
    traits[:, _T["business"]] = (
        -0.5 + 1.0 * (occ["self_employed"] | occ["business_owner"]) + noise(0.4)
    )
    # Corporate clients: a company has no family or age; it is all business.
    corp = is_corporate.astype(bool)
    if corp.any():
        m = int(corp.sum())
        traits[corp, _T["home_family"]] = -1.0 + rng.normal(0.0, 0.2, m)
        traits[corp, _T["business"]] = 1.0 + rng.normal(0.0, 0.5, m)
        traits[corp, _T["credit_need"]] = 0.3 + rng.normal(0.0, 0.7, m)
        traits[corp, _T["digital_affinity"]] = 0.3 + rng.normal(0.0, 0.6, m)
    return traits


def traits_table(customer_ids: np.ndarray, traits: np.ndarray) -> pa.Table:
    columns: dict[str, object] = {"customer_id": customer_ids.astype(np.int64)}
    for i, trait in enumerate(TRAITS):
        columns[trait] = traits[:, i]
    return pa.table(columns)


# -- persistence and the oracle ---------------------------------------------------------------

_PRODUCT_VECTORS_FILE: Final = "product_vectors.parquet"
_SEQUENTIAL_FILE: Final = "sequential_effects.parquet"
_PARAMS_FILE: Final = "response_params.json"


def write_model(model: PreferenceModel, data_dir: Path) -> None:
    """Write the product vectors, sequential effects and response scalars to ``ground_truth/``."""
    folder = DataLayout(data_dir).ground_truth
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(model.product_table(), folder / _PRODUCT_VECTORS_FILE)
    pq.write_table(model.sequential_table(), folder / _SEQUENTIAL_FILE)
    (folder / _PARAMS_FILE).write_text(json.dumps(asdict(model.params), indent=2) + "\n")


class GroundTruth:
    """The oracle: true click probabilities for (customer, product, time), from a data dir.

    Load it with :meth:`load` after a simulation. Customer ids unknown to the simulation raise
    ``ValueError``.
    """

    def __init__(self, model: PreferenceModel, customer_ids: np.ndarray, traits: np.ndarray):
        order = np.argsort(customer_ids, kind="stable")
        self.model = model
        self.customer_ids = np.asarray(customer_ids, dtype=np.int64)[order]
        self.traits = np.asarray(traits, dtype=np.float32)[order]
        self._product_index = {pid: i for i, pid in enumerate(model.product_ids)}

    @classmethod
    def load(cls, data_dir: Path) -> GroundTruth:
        folder = DataLayout(data_dir).ground_truth
        if not (folder / _PRODUCT_VECTORS_FILE).exists():
            raise ValueError(f"data_dir: no simulator ground truth under {folder}")
        params = ResponseParams(**json.loads((folder / _PARAMS_FILE).read_text()))
        model = PreferenceModel.from_tables(
            pq.read_table(folder / _PRODUCT_VECTORS_FILE),
            pq.read_table(folder / _SEQUENTIAL_FILE),
            params,
        )
        table = pq.read_table(folder / "customer_traits")
        traits = np.stack([table.column(t).to_numpy() for t in TRAITS], axis=1)
        return cls(model, table.column("customer_id").to_numpy(), traits)

    def product_index(self, product_ids: np.ndarray | list[str]) -> np.ndarray:
        unknown = sorted({str(p) for p in product_ids if p not in self._product_index})
        if unknown:
            raise ValueError(f"product_ids: unknown product(s) {', '.join(unknown[:5])}")
        return np.array([self._product_index[p] for p in product_ids], dtype=np.int64)

    def traits_of(self, customer_ids: np.ndarray | list[int]) -> np.ndarray:
        """(n, 8) latent traits of ``customer_ids``."""
        ids = np.asarray(customer_ids, dtype=np.int64)
        pos = np.searchsorted(self.customer_ids, ids)
        pos_clipped = np.minimum(pos, len(self.customer_ids) - 1)
        found = self.customer_ids[pos_clipped] == ids
        if not found.all():
            bad = ids[~found][:5].tolist()
            raise ValueError(f"customer_ids: unknown customer(s) {bad}")
        return self.traits[pos_clipped]

    def held_at(self, holdings: pa.Table, customer_ids: np.ndarray, at: datetime) -> np.ndarray:
        """(n, P) bool: which products each customer held at ``at`` per a ``holdings`` table."""
        ids = np.asarray(customer_ids, dtype=np.int64)
        at_us = np.datetime64(_naive_utc(at), "us").astype(np.int64)
        opened = holdings.column("opened_at").cast(pa.int64()).to_numpy()
        closed = holdings.column("closed_at").cast(pa.int64()).fill_null(np.iinfo(np.int64).max)
        active = (opened <= at_us) & (closed.to_numpy() > at_us)
        h_customers = holdings.column("customer_id").to_numpy()[active]
        h_products = self.product_index(holdings.column("product_id").to_numpy()[active])
        held = np.zeros((len(ids), self.model.size), dtype=bool)
        order = np.argsort(ids, kind="stable")
        pos = np.searchsorted(ids[order], h_customers)
        pos = np.minimum(pos, len(ids) - 1)
        match = ids[order][pos] == h_customers
        held[order[pos[match]], h_products[match]] = True
        return held

    def click_probability(
        self,
        customer_ids: np.ndarray | list[int],
        product_ids: np.ndarray | list[str],
        at: datetime | np.ndarray,
        *,
        position: int | np.ndarray = 1,
        held: np.ndarray | None = None,
        recent_impressions: np.ndarray | None = None,
        days_since_salary: np.ndarray | None = None,
        days_since_maturity: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n,) true P(click) of showing product i to customer i at time ``at`` and ``position``.

        Rows of ``customer_ids`` and ``product_ids`` align. ``at`` is one datetime or an array of
        ``datetime64``. Optional state (see :meth:`PreferenceModel.logit`); ``None`` means none
        (no holdings, no recent impressions, no recent salary or maturity). Use :meth:`held_at`
        to build ``held`` from the simulated holdings table.
        """
        ids = np.asarray(customer_ids, dtype=np.int64)
        products = self.product_index(product_ids)
        if len(ids) != len(products):
            raise ValueError("product_ids: must have as many rows as customer_ids")
        days: np.ndarray | np.datetime64
        if isinstance(at, datetime):
            days = np.datetime64(_naive_utc(at), "D")
        else:
            days = np.asarray(at).astype("datetime64[D]")
        logit = self.model.logit(
            self.traits_of(ids),
            products,
            days,
            held=held,
            recent_impressions=recent_impressions,
            days_since_salary=days_since_salary,
            days_since_maturity=days_since_maturity,
        )
        return self.model.click_probability(logit, position)
