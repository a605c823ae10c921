"""The simulated bank's product catalogue: fixed, readable, and the same for every seed.

Every fact here is public (it is what the ``products`` table says). What customers *really*
think of each product lives in :mod:`persona.simulator.ground_truth`, never here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np
import pyarrow as pa

from persona import domain
from persona.layout import conform
from persona.schemas import PRODUCTS

_RETAIL: Final = ("retail",)
_CORPORATE: Final = ("corporate",)
_BOTH: Final = ("retail", "corporate")
_RIB_MOBILE: Final = ("rib", "imobile")
_INSURANCE_APPS: Final = ("nli", "imobile")


@dataclass(frozen=True)
class Product:
    """One catalogue entry, with the columns of the ``products`` table."""

    product_id: str
    category: str
    name: str
    apps: tuple[str, ...]
    customer_types: tuple[str, ...]
    min_age: int
    min_income_band: str | None
    min_kyc_level: int
    risk_class: int
    margin_weight: float
    is_marketing_offer: bool
    #: Days until a term product matures (0 = no maturity). Used for term deposits.
    term_days: int = 0


def _p(
    product_id: str,
    category: str,
    name: str,
    apps: tuple[str, ...],
    customer_types: tuple[str, ...],
    min_age: int,
    min_income_band: str | None,
    min_kyc_level: int,
    risk_class: int,
    margin_weight: float,
    is_marketing_offer: bool,
    term_days: int = 0,
) -> Product:
    return Product(
        product_id,
        category,
        name,
        apps,
        customer_types,
        min_age,
        min_income_band,
        min_kyc_level,
        risk_class,
        margin_weight,
        is_marketing_offer,
        term_days,
    )


#: The catalogue, grouped by category. Corporate products live in cib (a few also in the
#: mobile app); insurance lives mostly in the insurance app (nli) and the mobile app.
PRODUCTS_CATALOGUE: Final[tuple[Product, ...]] = (
    # cards
    _p("card_debit", "card", "Debit Card", _RIB_MOBILE, _RETAIL, 18, None, 1, 1, 0.5, False),
    _p("card_student", "card", "Student Credit Card", _RIB_MOBILE, _RETAIL, 18, None, 1, 2, 1.0, True),
    _p("card_secured", "card", "Secured Credit Card", _RIB_MOBILE, _RETAIL, 18, None, 1, 2, 0.8, False),
    _p("card_classic", "card", "Classic Credit Card", _RIB_MOBILE, _RETAIL, 21, "lower_middle", 2, 2, 1.5, True),
    _p("card_cashback", "card", "Cashback Credit Card", _RIB_MOBILE, _RETAIL, 21, "middle", 2, 2, 1.8, True),
    _p("card_travel", "card", "Travel Rewards Card", _RIB_MOBILE, _RETAIL, 21, "middle", 2, 2, 2.0, True),
    _p("card_gold", "card", "Gold Credit Card", _RIB_MOBILE, _RETAIL, 25, "upper_middle", 2, 2, 2.4, True),
    _p("card_platinum", "card", "Platinum Credit Card", _RIB_MOBILE, _RETAIL, 25, "high", 3, 2, 3.0, True),
    _p("card_corporate", "card", "Corporate Card", ("cib", "imobile"), _CORPORATE, 18, None, 2, 2, 2.2, True),
    _p("card_business_debit", "card", "Business Debit Card", ("cib", "imobile"), _CORPORATE, 18, None, 2, 1, 0.6, False),
    # loans
    _p("loan_personal", "loan", "Personal Loan", _RIB_MOBILE, _RETAIL, 21, "lower_middle", 2, 3, 2.5, True),
    _p("loan_home", "loan", "Home Loan", _RIB_MOBILE, _RETAIL, 25, "middle", 2, 2, 3.5, True),
    _p("loan_home_equity", "loan", "Home Equity Loan", ("rib",), _RETAIL, 30, "middle", 2, 3, 2.8, False),
    _p("loan_car", "loan", "Car Loan", _RIB_MOBILE, _RETAIL, 21, "lower_middle", 2, 2, 2.6, True),
    _p("loan_student", "loan", "Student Loan", _RIB_MOBILE, _RETAIL, 18, None, 1, 2, 1.2, False),
    _p("loan_overdraft", "loan", "Arranged Overdraft", _RIB_MOBILE, _RETAIL, 18, "low", 2, 3, 2.0, False),
    _p("loan_business_term", "loan", "Business Term Loan", ("cib",), _CORPORATE, 18, None, 2, 3, 3.2, False),
    _p("loan_working_capital", "loan", "Working Capital Facility", ("cib",), _CORPORATE, 18, None, 2, 3, 3.0, True),
    # deposits
    _p("dep_current", "deposit", "Current Account", _RIB_MOBILE, _RETAIL, 18, None, 1, 1, 0.4, False),
    _p("dep_savings", "deposit", "Savings Account", _RIB_MOBILE, _RETAIL, 18, None, 1, 1, 0.8, False),
    _p("dep_kids_savings", "deposit", "Children's Savings Account", _RIB_MOBILE, _RETAIL, 25, None, 1, 1, 0.7, True),
    _p("dep_term_3m", "deposit", "3-Month Term Deposit", _RIB_MOBILE, _RETAIL, 18, None, 2, 1, 1.0, False, 91),
    _p("dep_term_6m", "deposit", "6-Month Term Deposit", _RIB_MOBILE, _RETAIL, 18, None, 2, 1, 1.1, False, 182),
    _p("dep_term_12m", "deposit", "12-Month Term Deposit", _RIB_MOBILE, _RETAIL, 18, None, 2, 1, 1.2, True, 365),
    _p("dep_term_24m", "deposit", "24-Month Term Deposit", _RIB_MOBILE, _RETAIL, 18, None, 2, 1, 1.3, False, 730),
    _p("dep_retirement", "deposit", "Retirement Savings Account", _RIB_MOBILE, _RETAIL, 40, "lower_middle", 2, 1, 1.6, True),
    _p("dep_corporate_current", "deposit", "Business Current Account", ("cib",), _CORPORATE, 18, None, 2, 1, 0.8, False),
    _p("dep_corporate_term", "deposit", "Business Term Deposit", ("cib",), _CORPORATE, 18, None, 2, 1, 1.2, False, 182),
    # insurance
    _p("ins_home", "insurance", "Home Insurance", _INSURANCE_APPS, _RETAIL, 18, None, 1, 1, 2.2, False),
    _p("ins_motor", "insurance", "Motor Insurance", _INSURANCE_APPS, _RETAIL, 18, None, 1, 1, 2.0, False),
    _p("ins_travel", "insurance", "Travel Insurance", ("nli", "imobile", "rib"), _RETAIL, 18, None, 1, 1, 1.6, False),
    _p("ins_life", "insurance", "Life Insurance", _INSURANCE_APPS, _RETAIL, 18, "lower_middle", 2, 1, 2.8, True),
    _p("ins_health", "insurance", "Health Insurance", _INSURANCE_APPS, _RETAIL, 18, None, 2, 1, 2.4, False),
    _p("ins_payment_protection", "insurance", "Payment Protection Insurance", ("nli", "rib"), _RETAIL, 18, None, 1, 1, 1.8, False),
    _p("ins_pet", "insurance", "Pet Insurance", _INSURANCE_APPS, _RETAIL, 18, None, 1, 1, 1.2, True),
    _p("ins_business", "insurance", "Business Insurance", ("cib", "nli"), _CORPORATE, 18, None, 2, 1, 2.6, True),
    # investments
    _p("inv_money_market", "investment", "Money Market Fund", ("rib", "imobile", "cib"), _BOTH, 18, None, 2, 1, 1.0, False),
    _p("inv_bond_fund", "investment", "Bond Fund", _RIB_MOBILE, _RETAIL, 18, None, 2, 2, 1.4, False),
    _p("inv_balanced_fund", "investment", "Balanced Fund", _RIB_MOBILE, _RETAIL, 18, "lower_middle", 2, 3, 1.8, True),
    _p("inv_equity_fund", "investment", "Equity Fund", _RIB_MOBILE, _RETAIL, 18, "middle", 2, 4, 2.2, True),
    _p("inv_index_etf", "investment", "Index ETF Savings Plan", _RIB_MOBILE, _RETAIL, 18, None, 2, 4, 1.0, False),
    _p("inv_emerging_markets", "investment", "Emerging Markets Fund", ("rib",), _RETAIL, 18, "upper_middle", 3, 5, 2.4, False),
    _p("inv_pension_plan", "investment", "Private Pension Plan", _RIB_MOBILE, _RETAIL, 18, "lower_middle", 2, 2, 2.0, True),
    _p("inv_brokerage", "investment", "Brokerage Account", _RIB_MOBILE, _RETAIL, 18, "middle", 3, 5, 1.5, False),
    # payments
    _p("pay_fx_transfer", "payment", "International Transfers", ("rib", "imobile", "cib"), _BOTH, 18, None, 2, 1, 1.2, False),
    _p("pay_standing_order", "payment", "Standing Orders", _RIB_MOBILE, _RETAIL, 18, None, 1, 1, 0.3, False),
    _p("pay_mobile_wallet", "payment", "Mobile Wallet", ("imobile",), _RETAIL, 18, None, 1, 1, 0.6, True),
    _p("pay_bill_autopay", "payment", "Bill Autopay", _RIB_MOBILE, _RETAIL, 18, None, 1, 1, 0.4, False),
    _p("pay_payroll", "payment", "Payroll Service", ("cib", "imobile"), _CORPORATE, 18, None, 2, 1, 1.6, True),
    _p("pay_pos_terminal", "payment", "POS Terminal", ("cib",), _CORPORATE, 18, None, 2, 1, 1.4, True),
    _p("pay_cash_management", "payment", "Cash Management", ("cib",), _CORPORATE, 18, "upper_middle", 3, 1, 2.0, False),
)  # fmt: skip


@dataclass(frozen=True)
class Catalogue:
    """The catalogue as column arrays indexed by product position (0..P-1), for vectorised use."""

    products: tuple[Product, ...] = PRODUCTS_CATALOGUE

    @property
    def size(self) -> int:
        return len(self.products)

    @cached_property
    def product_ids(self) -> tuple[str, ...]:
        return tuple(p.product_id for p in self.products)

    def index_of(self, product_ids: list[str] | tuple[str, ...] | np.ndarray) -> np.ndarray:
        """Catalogue positions of ``product_ids``; an unknown id raises ``ValueError``."""
        lookup = {pid: i for i, pid in enumerate(self.product_ids)}
        unknown = sorted({str(p) for p in product_ids if p not in lookup})
        if unknown:
            raise ValueError(f"product_ids: unknown product(s) {', '.join(unknown[:5])}")
        return np.fromiter((lookup[p] for p in product_ids), dtype=np.int64, count=len(product_ids))

    @cached_property
    def category_index(self) -> np.ndarray:
        """(P,) int8: index into :data:`persona.domain.BANK_CATEGORIES`."""
        return np.array(
            [domain.BANK_CATEGORIES.index(p.category) for p in self.products], dtype=np.int8
        )

    @cached_property
    def app_allowed(self) -> np.ndarray:
        """(4, P) bool: may product p be shown in app a (order of :data:`domain.APPS`)."""
        return np.array([[app in p.apps for p in self.products] for app in domain.APPS], dtype=bool)

    @cached_property
    def type_allowed(self) -> np.ndarray:
        """(2, P) bool: may product p be offered to customer type t (retail, corporate)."""
        return np.array(
            [[t in p.customer_types for p in self.products] for t in domain.CUSTOMER_TYPES],
            dtype=bool,
        )

    @cached_property
    def min_age(self) -> np.ndarray:
        return np.array([p.min_age for p in self.products], dtype=np.float32)

    @cached_property
    def min_income_index(self) -> np.ndarray:
        """(P,) int8: the lowest income band index allowed (0 when there is no minimum)."""
        return np.array(
            [
                0 if p.min_income_band is None else domain.INCOME_BANDS.index(p.min_income_band)
                for p in self.products
            ],
            dtype=np.int8,
        )

    @cached_property
    def min_kyc_level(self) -> np.ndarray:
        return np.array([p.min_kyc_level for p in self.products], dtype=np.int8)

    @cached_property
    def risk_class(self) -> np.ndarray:
        return np.array([p.risk_class for p in self.products], dtype=np.int8)

    @cached_property
    def margin_weight(self) -> np.ndarray:
        return np.array([p.margin_weight for p in self.products], dtype=np.float64)

    @cached_property
    def is_marketing_offer(self) -> np.ndarray:
        return np.array([p.is_marketing_offer for p in self.products], dtype=bool)

    @cached_property
    def term_days(self) -> np.ndarray:
        return np.array([p.term_days for p in self.products], dtype=np.int32)

    def category_mask(self, category: str) -> np.ndarray:
        """(P,) bool: products of one bank category."""
        return self.category_index == domain.BANK_CATEGORIES.index(category)

    def to_arrow(self) -> pa.Table:
        """The ``products`` table, conformed to :data:`persona.schemas.PRODUCTS`."""
        columns = {
            "product_id": [p.product_id for p in self.products],
            "category": [p.category for p in self.products],
            "name": [p.name for p in self.products],
            "apps": [list(p.apps) for p in self.products],
            "customer_types": [list(p.customer_types) for p in self.products],
            "min_age": [p.min_age for p in self.products],
            "min_income_band": [p.min_income_band for p in self.products],
            "min_kyc_level": [p.min_kyc_level for p in self.products],
            "risk_class": [p.risk_class for p in self.products],
            "margin_weight": [p.margin_weight for p in self.products],
            "is_marketing_offer": [p.is_marketing_offer for p in self.products],
        }
        return conform(pa.table(columns), PRODUCTS)


def eligible(
    catalogue: Catalogue,
    *,
    is_corporate: np.ndarray,
    age: np.ndarray,
    income_index: np.ndarray,
    kyc_level: np.ndarray,
    risk_index: np.ndarray,
) -> np.ndarray:
    """(n, P) bool: may each customer be sold each product (type, age, income, KYC, suitability).

    ``age`` is in years (NaN for corporate clients, which have no age); suitability allows risk
    classes up to the risk profile index + 2, as :data:`persona.domain.RISK_CLASSES` says.
    """
    type_ok = catalogue.type_allowed[is_corporate.astype(np.int64)]
    age_ok = np.isnan(age)[:, None] | (age[:, None] >= catalogue.min_age[None, :])
    income_ok = income_index[:, None] >= catalogue.min_income_index[None, :]
    kyc_ok = kyc_level[:, None] >= catalogue.min_kyc_level[None, :]
    risk_ok = catalogue.risk_class[None, :] <= (risk_index[:, None] + 2)
    return type_ok & age_ok & income_ok & kyc_ok & risk_ok
