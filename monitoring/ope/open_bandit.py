"""Validate the off-policy estimators on the real Open Bandit logs (ZOZOTOWN sample).

Each campaign (all, men, women) was logged twice: under a uniform-random policy and under
Bernoulli Thompson Sampling (BTS). We estimate BTS's click rate from the random log and check
it against the click rate BTS really had in its own log.

The evaluation policy is BTS's action distribution over item × position taken from its own
log: the mean logged ``propensity_score`` of each (item, position), normalised per position
(items BTS never showed at a position get probability 0). It is context-free, so the reward
model of DR uses item and position only. Positions are 1–3; rewards are clicks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
from pydantic import BaseModel
from scipy import stats
from tqdm import tqdm

from monitoring.ope.estimators import ESTIMATORS, Estimate, LoggedBandit, estimate
from persona.loaders.open_bandit import CAMPAIGNS, POLICIES

#: Slots of a ZOZOTOWN recommendation, as logged.
POSITIONS: Final[tuple[int, ...]] = (1, 2, 3)
#: The columns OPE reads from a log.
OPE_COLUMNS: Final[tuple[str, ...]] = ("item_id", "position", "click", "propensity_score")
#: The estimator whose interval the validation is judged by (lowest variance without a model).
HEADLINE_ESTIMATOR: Final[str] = "snips"


class CampaignValidation(BaseModel):
    """BTS's click rate estimated from the random log, next to the one BTS observed.

    Rates are clicks per impression (0.0042 = 0.42%). ``relative_error`` is
    ``estimate / observed - 1`` per estimator; ``covered`` says whether the observed rate lies
    inside that estimator's interval.
    """

    campaign: str
    n_items: int
    n_rounds_logged: int
    n_rounds_target: int
    observed_clicks: int
    observed_ctr: float
    observed_ci_low: float
    observed_ci_high: float
    logging_ctr: float
    estimates: list[Estimate]
    covered: dict[str, bool]
    relative_error: dict[str, float]

    def estimate_of(self, name: str) -> Estimate:
        """The estimate named ``name`` (ips, snips or dr)."""
        for item in self.estimates:
            if item.name == name:
                return item
        raise KeyError(f"estimator {name!r} was not run for campaign {self.campaign}")


def log_path(source: Path, policy: str, campaign: str) -> Path:
    """``source/<policy>/<campaign>/<campaign>.csv``, after checking policy and campaign."""
    if policy not in POLICIES:
        raise ValueError(f"policy: {policy!r} is not one of {', '.join(POLICIES)}")
    if campaign not in CAMPAIGNS:
        raise ValueError(f"campaign: {campaign!r} is not one of {', '.join(CAMPAIGNS)}")
    return source / policy / campaign / f"{campaign}.csv"


def item_count(source: Path, campaign: str) -> int:
    """Number of items of a campaign: rows of its ``item_context.csv`` (random log folder)."""
    path = log_path(source, "random", campaign).with_name("item_context.csv")
    if not path.is_file():
        raise FileNotFoundError(f"Open Bandit item list {path} does not exist")
    items = pd.read_csv(path, usecols=lambda c: c == "item_id")
    if "item_id" not in items.columns or items.empty:
        raise ValueError(f"{path}: column item_id missing or empty")
    return int(items["item_id"].max()) + 1


def read_open_bandit_log(source: Path, policy: str, campaign: str, n_items: int) -> pd.DataFrame:
    """One log's item_id, position (1–3), click (0/1) and propensity_score, checked."""
    path = log_path(source, policy, campaign)
    if not path.is_file():
        raise FileNotFoundError(f"Open Bandit log {path} does not exist")
    header = pd.read_csv(path, nrows=0).columns
    missing = [c for c in OPE_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    log = pd.read_csv(path, usecols=list(OPE_COLUMNS))
    if log.empty:
        raise ValueError(f"{path}: the log has no rows")
    checks = {
        "item_id": log["item_id"].between(0, n_items - 1),
        "position": log["position"].isin(POSITIONS),
        "click": log["click"].isin((0, 1)),
        "propensity_score": (log["propensity_score"] > 0) & (log["propensity_score"] <= 1),
    }
    for column, ok in checks.items():
        if not ok.all():
            row = int(np.flatnonzero(~ok.to_numpy())[0])
            raise ValueError(
                f"{path}: column {column} has {int((~ok).sum())} invalid value(s), first at row "
                f"{row}: {log[column].iloc[row]!r}"
            )
    return log


def evaluation_policy_from_log(log: pd.DataFrame, n_items: int) -> np.ndarray:
    """A policy's action distribution per position (len(POSITIONS) × n_items, rows sum to 1).

    The mean logged propensity of each (position, item), normalised per position.
    """
    means = log.groupby(["position", "item_id"])["propensity_score"].mean()
    table = means.unstack(fill_value=0.0).reindex(
        index=list(POSITIONS), columns=range(n_items), fill_value=0.0
    )
    totals = table.sum(axis=1)
    if (totals <= 0).any():
        empty = [int(p) for p in totals.index[totals <= 0]]
        raise ValueError(f"position: the policy's log never shows position(s) {empty}")
    return table.div(totals, axis=0).to_numpy()


def logged_bandit_from_log(log: pd.DataFrame, n_items: int) -> LoggedBandit:
    """The log's rounds as a :class:`LoggedBandit` (actions = item ids, rewards = clicks)."""
    return LoggedBandit(
        actions=log["item_id"].to_numpy(dtype=np.int64),
        rewards=log["click"].to_numpy(dtype=float),
        propensities=log["propensity_score"].to_numpy(dtype=float),
        positions=log["position"].to_numpy(dtype=np.int64),
        n_actions=n_items,
    )


def validate_campaign(
    source: Path,
    campaign: str,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    n_bootstrap: int = 2000,
    seed: int = 0,
    confidence_level: float = 0.95,
) -> CampaignValidation:
    """Estimate BTS's click rate on ``campaign`` from the random log; compare with BTS's log."""
    n_items = item_count(source, campaign)
    random_log = read_open_bandit_log(source, "random", campaign, n_items)
    bts_log = read_open_bandit_log(source, "bts", campaign, n_items)
    policy = evaluation_policy_from_log(bts_log, n_items)
    logged = logged_bandit_from_log(random_log, n_items)
    target = policy[random_log["position"].to_numpy() - POSITIONS[0]]
    estimates = estimate(
        logged,
        target,
        estimators=estimators,
        n_bootstrap=n_bootstrap,
        confidence_level=confidence_level,
        seed=seed,
    )
    clicks, impressions = int(bts_log["click"].sum()), len(bts_log)
    interval = stats.binomtest(clicks, impressions).proportion_ci(
        confidence_level=confidence_level, method="wilson"
    )
    observed = clicks / impressions
    return CampaignValidation(
        campaign=campaign,
        n_items=n_items,
        n_rounds_logged=len(random_log),
        n_rounds_target=impressions,
        observed_clicks=clicks,
        observed_ctr=observed,
        observed_ci_low=float(interval.low),
        observed_ci_high=float(interval.high),
        logging_ctr=float(random_log["click"].mean()),
        estimates=estimates,
        covered={e.name: e.covers(observed) for e in estimates},
        relative_error={
            e.name: (e.value / observed - 1) if observed > 0 else float("nan") for e in estimates
        },
    )


def validate_on_open_bandit(
    source: Path,
    campaigns: Sequence[str] = CAMPAIGNS,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    n_bootstrap: int = 2000,
    seed: int = 0,
    confidence_level: float = 0.95,
    progress: bool = False,
) -> list[CampaignValidation]:
    """:func:`validate_campaign` for each campaign (same seed each), with an optional bar."""
    if not campaigns:
        raise ValueError("campaign: give at least one of " + ", ".join(CAMPAIGNS))
    return [
        validate_campaign(
            source,
            campaign,
            estimators=estimators,
            n_bootstrap=n_bootstrap,
            seed=seed,
            confidence_level=confidence_level,
        )
        for campaign in tqdm(campaigns, desc="Open Bandit campaigns", disable=not progress)
    ]
