"""Business-rule guardrails, checked per arm on what was really served, against the customers'
true attributes (not serving's view of them): no marketing offer without consent, no product
the customer may not have (type, age, income, KYC, suitability) or already holds, none outside
the app's scope, contact caps per simulated day and week never exceeded, no product shown again
inside its dismissal cooldown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from persona import domain
from persona.simulator.traffic.population import Population
from serving.config import load_apps, read_yaml
from serving.rules import RuleSet

CHECKS = (
    "no_marketing_consent",
    "ineligible",
    "already_held",
    "outside_app_scope",
    "product_day_cap",
    "product_week_cap",
    "customer_day_cap",
    "customer_week_cap",
    "dismissal_cooldown",
)


class ArmGuardrails(BaseModel):
    variant: str
    impressions: int
    customers: int
    violations: dict[str, int]
    max_seen: dict[str, int]  # largest count per product/customer per day and week

    @property
    def held(self) -> bool:
        return not any(self.violations.values())


def check_guardrails(items: pd.DataFrame, pop: Population, config_dir: Path) -> list[ArmGuardrails]:
    """One :class:`ArmGuardrails` per variant of the served-items ledger ``items``."""
    rules = read_yaml(config_dir / "rules.yaml", RuleSet)
    assert isinstance(rules, RuleSet)
    apps = load_apps(config_dir / "apps.yaml").apps
    cap = rules.contact_policy
    catalogue = pop.catalogue
    index = {pid: i for i, pid in enumerate(catalogue.product_ids)}
    frame = items.copy()
    frame["row"] = pop.rows_of(frame["customer_id"].to_numpy())
    frame["p"] = [index[x] for x in frame["product_id"]]
    frame["week"] = frame["day"] // 7
    marketing = np.array([p.is_marketing_offer for p in catalogue.products])
    in_scope = {
        app: np.array(
            [
                app in p.apps and p.category in apps[app].allowed_categories
                for p in catalogue.products
            ]
        )
        for app in domain.APPS
        if app in apps
    }
    frame["v_no_marketing_consent"] = marketing[frame["p"]] & ~pop.consent_marketing[frame["row"]]
    frame["v_ineligible"] = ~pop.eligible[frame["row"], frame["p"]]
    frame["v_already_held"] = frame["held_when_served"].astype(bool)
    frame["v_outside_app_scope"] = [
        not in_scope[a][p] for a, p in zip(frame["app"], frame["p"], strict=True)
    ]
    cooldown = _shown_in_cooldown(frame, rules.contact_policy.dismissal_cooldown_days)
    frame["v_dismissal_cooldown"] = cooldown
    out = []
    for variant, arm in frame.groupby("variant", sort=True):
        counts = {
            "product_day_cap": arm.groupby(["customer_id", "day", "product_id"]).size(),
            "product_week_cap": arm.groupby(["customer_id", "week", "product_id"]).size(),
            "customer_day_cap": arm.groupby(["customer_id", "day"]).size(),
            "customer_week_cap": arm.groupby(["customer_id", "week"]).size(),
        }
        limits = {
            "product_day_cap": cap.max_impressions_per_product_per_day,
            "product_week_cap": cap.max_impressions_per_product_per_week,
            "customer_day_cap": cap.max_impressions_per_customer_per_day,
            "customer_week_cap": cap.max_impressions_per_customer_per_week,
        }
        violations = {c: int(arm[f"v_{c}"].sum()) for c in CHECKS if f"v_{c}" in arm}
        for name, series in counts.items():
            violations[name] = int((series > limits[name]).sum())
        out.append(
            ArmGuardrails(
                variant=str(variant),
                impressions=len(arm),
                customers=int(arm["customer_id"].nunique()),
                violations={c: violations[c] for c in CHECKS},
                max_seen={n: int(s.max()) if len(s) else 0 for n, s in counts.items()},
            )
        )
    return out


def _shown_in_cooldown(frame: pd.DataFrame, cooldown_days: float) -> np.ndarray:
    """Per served item: was the product dismissed by this customer on an earlier simulated day
    less than ``cooldown_days`` before?"""
    dismissed = frame.loc[frame["dismissed"], ["customer_id", "product_id", "day"]]
    if dismissed.empty:
        return np.zeros(len(frame), dtype=bool)
    first = dismissed.groupby(["customer_id", "product_id"])["day"].apply(list).to_dict()
    flags = np.zeros(len(frame), dtype=bool)
    for i, (c, p, d) in enumerate(
        zip(frame["customer_id"], frame["product_id"], frame["day"], strict=True)
    ):
        days = first.get((c, p))
        if days and any(0 < d - x < cooldown_days for x in days):
            flags[i] = True
    return flags
