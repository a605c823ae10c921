"""Synthetic customers: correlated demographics, hidden traits, apps and money habits.

Codes are indices into the :mod:`persona.domain` tuples, with -1 for a missing value
(corporate clients have no age band or occupation).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np
import pyarrow as pa

from persona import domain
from persona.layout import conform
from persona.schemas import CUSTOMERS
from persona.simulator import ground_truth
from persona.simulator.encoding import US_PER_DAY, day_start_us, decode, list_column, timestamps

_AGE_BAND_P: Final = np.array([0.12, 0.22, 0.22, 0.18, 0.14, 0.12])
_AGE_BAND_BOUNDS: Final = np.array([[18, 25], [25, 35], [35, 45], [45, 55], [55, 65], [65, 90]])
#: P(occupation | age band); columns follow domain.OCCUPATIONS
#: (salaried, self_employed, student, retired, business_owner, unemployed).
_OCCUPATION_P: Final = np.array(
    [
        [0.38, 0.04, 0.45, 0.00, 0.01, 0.12],
        [0.70, 0.10, 0.04, 0.00, 0.06, 0.10],
        [0.70, 0.13, 0.00, 0.00, 0.10, 0.07],
        [0.68, 0.14, 0.00, 0.01, 0.11, 0.06],
        [0.55, 0.12, 0.00, 0.20, 0.08, 0.05],
        [0.06, 0.05, 0.00, 0.85, 0.03, 0.01],
    ]
)
_CITY_P: Final = np.array([0.30, 0.35, 0.22, 0.13])
_CORPORATE_CITY_P: Final = np.array([0.45, 0.35, 0.15, 0.05])
_CORPORATE_SIZE_P: Final = np.array([0.15, 0.25, 0.30, 0.20, 0.10])
_CORPORATE_RISK_P: Final = np.array([0.30, 0.40, 0.20, 0.10])
#: Income score effects; the score is cut into the five income bands.
_INCOME_BY_OCCUPATION: Final = np.array([0.0, 0.2, -1.6, -0.5, 0.9, -1.8])
_INCOME_BY_AGE_BAND: Final = np.array([-0.6, -0.1, 0.25, 0.4, 0.3, -0.1])
_INCOME_BY_CITY: Final = np.array([0.35, 0.1, -0.15, -0.4])
_INCOME_CUTS: Final = np.array([-1.0, -0.3, 0.35, 1.0])
_RISK_CUTS: Final = np.array([-0.7, 0.2, 0.9])
#: Monthly salary (currency units) by income band; retail card spend scale by band.
_SALARY_BY_BAND: Final = np.array([900.0, 1600.0, 2600.0, 4200.0, 8000.0])
_SPEND_BY_BAND: Final = np.array([35.0, 50.0, 70.0, 100.0, 160.0])
_RECEIVABLES_BY_SIZE: Final = np.array([2_000.0, 5_000.0, 12_000.0, 30_000.0, 80_000.0])
_SALARY_DAYS: Final = np.array([1, 15, 25, 28])
_SALARY_DAYS_P: Final = np.array([0.20, 0.15, 0.35, 0.30])
_PENSION_DAYS: Final = np.array([1, 10])
_APP: Final = {name: i for i, name in enumerate(domain.APPS)}
_OCC: Final = {name: i for i, name in enumerate(domain.OCCUPATIONS)}
_LIFE: Final = {name: i for i, name in enumerate(domain.LIFE_STAGES)}


@dataclass
class CustomerBlock:
    """One chunk of customers as column arrays (row i is customer ``customer_id[i]``)."""

    customer_id: np.ndarray  # int64
    is_corporate: np.ndarray  # bool
    age: np.ndarray  # float32 years, NaN for corporate
    age_band: np.ndarray  # int8 code
    income: np.ndarray  # int8 code (company size band for corporate clients)
    city: np.ndarray  # int8 code
    occupation: np.ndarray  # int8 code
    life_stage: np.ndarray  # int8 code
    risk: np.ndarray  # int8 code
    kyc: np.ndarray  # int8 level
    consent_marketing: np.ndarray  # bool
    consent_data_sharing: np.ndarray  # bool
    apps: np.ndarray  # (n, 4) bool, domain.APPS order
    created_us: np.ndarray  # int64 µs since epoch
    relationship_us: np.ndarray  # int64 µs since epoch
    traits: np.ndarray  # (n, 8) float32 hidden latent traits
    # Behaviour (rates per day, amounts in currency units).
    login_rate: np.ndarray  # float32
    app_weights: np.ndarray  # (n, 4) float32, zero where not enrolled
    primary_app: np.ndarray  # int8 app code used for transaction events
    mobile_device: np.ndarray  # int8 index into domain.DEVICES (ios or android)
    pay_day: np.ndarray  # int8 day of month of the salary/pension credit, 0 = none
    monthly_income: np.ndarray  # float32
    spend_rate: np.ndarray  # float32 debits per day
    spend_scale: np.ndarray  # float32 median debit
    credit_rate: np.ndarray  # float32 irregular credits per day (self-employed, corporate)
    credit_scale: np.ndarray  # float32 median irregular credit

    def __len__(self) -> int:
        return len(self.customer_id)

    def to_arrow(self) -> pa.Table:
        """The ``customers`` table for this block."""
        table = pa.table(
            {
                "customer_id": self.customer_id,
                "created_at": timestamps(self.created_us),
                "customer_type": decode(self.is_corporate.astype(np.int8), domain.CUSTOMER_TYPES),
                "age_band": decode(self.age_band, domain.AGE_BANDS),
                "income_band": decode(self.income, domain.INCOME_BANDS),
                "city_tier": decode(self.city, domain.CITY_TIERS),
                "occupation": decode(self.occupation, domain.OCCUPATIONS),
                "life_stage": decode(self.life_stage, domain.LIFE_STAGES),
                "risk_profile": decode(self.risk, domain.RISK_PROFILES),
                "kyc_level": self.kyc,
                "consent_marketing": self.consent_marketing,
                "consent_data_sharing": self.consent_data_sharing,
                "apps_enrolled": list_column(self.apps, domain.APPS),
                "relationship_start": timestamps(self.relationship_us),
            }
        )
        return conform(table, CUSTOMERS)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of ``probs`` (n, k), or n draws from one (k,) row given as (n, k)."""
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cumulative[:, -1:]
    return (u > cumulative).sum(axis=1).astype(np.int8)


def generate_customers(
    rng: np.random.Generator, first_id: int, n: int, corporate_share: float, window_start: date
) -> CustomerBlock:
    """``n`` customers with ids ``first_id..first_id+n-1``, all created before ``window_start``."""
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    corp = rng.random(n) < corporate_share

    # Retail demographics, drawn for everyone and masked for corporate clients afterwards.
    band = _categorical(rng, np.broadcast_to(_AGE_BAND_P, (n, 6)))
    lo, hi = _AGE_BAND_BOUNDS[band, 0], _AGE_BAND_BOUNDS[band, 1]
    age = (lo + rng.random(n) * (hi - lo)).astype(np.float32)
    occupation = _categorical(rng, _OCCUPATION_P[band])
    city = np.where(
        corp,
        _categorical(rng, np.broadcast_to(_CORPORATE_CITY_P, (n, 4))),
        _categorical(rng, np.broadcast_to(_CITY_P, (n, 4))),
    ).astype(np.int8)
    income_score = (
        _INCOME_BY_OCCUPATION[occupation]
        + _INCOME_BY_AGE_BAND[band]
        + _INCOME_BY_CITY[city]
        + rng.normal(0.0, 0.7, n)
    )
    income = np.searchsorted(_INCOME_CUTS, income_score).astype(np.int8)
    life_stage = _life_stage(rng, band, occupation)
    risk_score = -0.02 * (age - 40.0) + 0.3 * income - 0.6 + rng.normal(0.0, 0.8, n)
    risk = np.searchsorted(_RISK_CUTS, risk_score).astype(np.int8)

    if corp.any():
        m = int(corp.sum())
        income[corp] = _categorical(rng, np.broadcast_to(_CORPORATE_SIZE_P, (m, 5)))
        risk[corp] = _categorical(rng, np.broadcast_to(_CORPORATE_RISK_P, (m, 4)))
        age[corp] = np.nan
        band[corp] = -1
        occupation[corp] = -1
        life_stage[corp] = _LIFE["business"]

    traits = ground_truth.draw_traits(
        rng,
        is_corporate=corp,
        age=age,
        income_index=income,
        risk_index=risk,
        city_index=city,
        occupation_index=occupation,
        life_stage_index=life_stage,
    )
    digital = traits[:, ground_truth.TRAITS.index("digital_affinity")]
    affluence = traits[:, ground_truth.TRAITS.index("affluence")]
    home = traits[:, ground_truth.TRAITS.index("home_family")]

    kyc = _kyc_levels(rng, corp, occupation, income)
    consent_marketing = rng.random(n) < _sigmoid(0.6 + 0.3 * digital)
    consent_data_sharing = rng.random(n) < _sigmoid(0.3 * digital)
    apps = _apps_enrolled(rng, corp, digital, home, affluence, age)
    relationship_us, created_us = _tenure(rng, corp, age, window_start)

    # Behaviour: how often they log in, where, and how money moves.
    login_rate = np.where(corp, 0.18 * np.exp(0.3 * digital), 0.075 * np.exp(0.35 * digital))
    app_weights = apps * np.stack(
        [
            np.full(n, 1.5),
            np.full(n, 4.0),
            np.full(n, 0.7),
            2.5 * np.exp(0.4 * digital),
        ],
        axis=1,
    )
    primary_app = np.where(
        corp,
        _APP["cib"],
        np.where(
            apps[:, _APP["imobile"]],
            _APP["imobile"],
            np.where(apps[:, _APP["rib"]], _APP["rib"], _APP["nli"]),
        ),
    ).astype(np.int8)
    ios = rng.random(n) < _sigmoid(-0.2 + 0.5 * affluence)
    mobile_device = np.where(ios, domain.DEVICES.index("ios"), domain.DEVICES.index("android"))

    salaried = (occupation == _OCC["salaried"]) & ~corp
    retired = (occupation == _OCC["retired"]) & ~corp
    pay_day = np.zeros(n, dtype=np.int8)
    pay_day[salaried] = rng.choice(_SALARY_DAYS, size=int(salaried.sum()), p=_SALARY_DAYS_P)
    pay_day[retired] = rng.choice(_PENSION_DAYS, size=int(retired.sum()))
    monthly_income = _SALARY_BY_BAND[income] * rng.lognormal(0.0, 0.25, n)
    monthly_income = np.where(retired, 0.6 * monthly_income, monthly_income)
    self_employed = np.isin(occupation, (_OCC["self_employed"], _OCC["business_owner"])) & ~corp
    credit_rate = np.where(corp, 0.45, np.where(self_employed, 0.08, 0.0))
    credit_scale = np.where(corp, _RECEIVABLES_BY_SIZE[income], monthly_income / 2.5)
    spend_rate = np.where(corp, 0.6, 0.12 * np.exp(0.2 * affluence))
    spend_scale = np.where(corp, 0.15 * _RECEIVABLES_BY_SIZE[income], _SPEND_BY_BAND[income])

    f32 = np.float32
    return CustomerBlock(
        customer_id=ids,
        is_corporate=corp,
        age=age,
        age_band=band,
        income=income,
        city=city,
        occupation=occupation,
        life_stage=life_stage,
        risk=risk,
        kyc=kyc,
        consent_marketing=consent_marketing,
        consent_data_sharing=consent_data_sharing,
        apps=apps,
        created_us=created_us,
        relationship_us=relationship_us,
        traits=traits,
        login_rate=np.clip(login_rate, 0.005, 0.8).astype(f32),
        app_weights=app_weights.astype(f32),
        primary_app=primary_app,
        mobile_device=mobile_device.astype(np.int8),
        pay_day=pay_day,
        monthly_income=monthly_income.astype(f32),
        spend_rate=spend_rate.astype(f32),
        spend_scale=spend_scale.astype(f32),
        credit_rate=credit_rate.astype(f32),
        credit_scale=credit_scale.astype(f32),
    )


def _life_stage(rng: np.random.Generator, band: np.ndarray, occupation: np.ndarray) -> np.ndarray:
    """Life stage from age band and occupation (students and retirees by occupation)."""
    u = rng.random(len(band))
    yp, fam, est = _LIFE["young_professional"], _LIFE["family"], _LIFE["established"]
    by_band = np.select(
        [band == 0, band == 1, band == 2, band == 3, band == 4],
        [
            np.where(u < 0.85, yp, fam),
            np.where(u < 0.55, yp, fam),
            np.where(u < 0.65, fam, est),
            np.where(u < 0.40, fam, est),
            np.where(u < 0.80, _LIFE["pre_retirement"], est),
        ],
        default=_LIFE["retired"],
    )
    stage = np.where(occupation == _OCC["student"], _LIFE["student"], by_band)
    stage = np.where(occupation == _OCC["retired"], _LIFE["retired"], stage)
    return stage.astype(np.int8)


def _kyc_levels(
    rng: np.random.Generator, corp: np.ndarray, occupation: np.ndarray, income: np.ndarray
) -> np.ndarray:
    """KYC: standard (2) for most; basic (1) more often for students; enhanced (3) when rich."""
    u = rng.random(len(corp))
    student = occupation == _OCC["student"]
    basic_cut = 0.02 + 0.10 + 0.25 * student
    enhanced_cut = 1.0 - (0.04 + 0.05 * income)
    kyc = np.full(len(corp), 2, dtype=np.int8)
    kyc[u < basic_cut] = 1
    kyc[u < 0.02] = 0
    kyc[u > enhanced_cut] = 3
    kyc[corp] = np.where(rng.random(int(corp.sum())) < 0.3, 3, 2)
    return kyc


def _apps_enrolled(
    rng: np.random.Generator,
    corp: np.ndarray,
    digital: np.ndarray,
    home: np.ndarray,
    affluence: np.ndarray,
    age: np.ndarray,
) -> np.ndarray:
    """(n, 4) bool apps: corporate -> cib (+ imobile sometimes); retail -> rib/imobile/nli mix."""
    n = len(corp)
    older = np.nan_to_num(age, nan=0.0) >= 45
    apps = np.zeros((n, 4), dtype=bool)
    apps[:, _APP["imobile"]] = rng.random(n) < _sigmoid(0.6 + 1.2 * digital)
    apps[:, _APP["rib"]] = rng.random(n) < _sigmoid(0.4 - 0.7 * digital + 0.4 * older)
    apps[:, _APP["nli"]] = rng.random(n) < _sigmoid(-1.3 + 0.7 * home + 0.3 * affluence)
    none = ~apps.any(axis=1)
    apps[none & (digital > 0), _APP["imobile"]] = True
    apps[none & (digital <= 0), _APP["rib"]] = True
    apps[corp] = False
    apps[corp, _APP["cib"]] = True
    apps[corp, _APP["imobile"]] = rng.random(int(corp.sum())) < _sigmoid(-1.0 + 0.8 * digital[corp])
    return apps


def _tenure(
    rng: np.random.Generator, corp: np.ndarray, age: np.ndarray, window_start: date
) -> tuple[np.ndarray, np.ndarray]:
    """(relationship_start, created_at) in µs, both before ``window_start``, start <= created."""
    n = len(corp)
    max_years = np.where(corp, 40.0, np.clip(np.nan_to_num(age, nan=40.0) - 18.0, 0.1, 40.0))
    tenure_days = 30.0 + np.minimum(rng.exponential(6 * 365.0, n), max_years * 365.0)
    start_us = day_start_us(window_start)
    relationship = start_us - (tenure_days * US_PER_DAY).astype(np.int64)
    # The digital record may be created later than the relationship began (e.g. branch first),
    # but always at least a day before the window.
    lag_days = rng.random(n) * np.minimum(tenure_days - 1.0, 730.0)
    created = relationship + (lag_days * US_PER_DAY).astype(np.int64)
    return relationship, created
