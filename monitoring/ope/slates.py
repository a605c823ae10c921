"""Off-policy evaluation of a slate policy from another slate policy's served log.

Serving fills a slate slot by slot: with probability ``1 - ε`` the best remaining eligible
item under the diversity cap, else one of those *open* items uniformly; each served item's
``propensity`` is that slot's probability given the slots before it. Both arms of an
experiment see the same open set for the same prefix (same candidates, same rules), so the
target policy's probability of the logged item given the logged prefix is exact:
``ε_t / |open| + (1 - ε_t) · [item is the target ranker's best open item]``.

The estimator is the cascade (reward-interaction) IPS: slot ``j``'s click is weighted by the
product of the target/logging ratios of slots ``1..j``. It is unbiased when a slot's click
depends on the items at and above it, which holds for position-based and cascade click
models; IPS and SNIPS come from :func:`monitoring.ope.estimators.estimate` (seeded bootstrap
over impressions). Inputs are the baseline arm's served log alone plus the target ranker's
order of each logged request's candidates (what it would have ranked, not what it served).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel

from monitoring.ope.estimators import Estimate, LoggedBandit, estimate

#: Logged and recomputed logging propensities may differ by serving's rounding (6 digits).
_PROPENSITY_TOLERANCE = 2e-6


class SlateOpe(BaseModel):
    estimates: list[Estimate]
    requests: int
    impressions: int
    skipped_requests: int  # no target ranking for the request
    propensity_mismatches: int  # logged propensity != recomputed (a broken assumption)
    effective_sample_size: float
    target_matches_logged_share: float  # slots where the target's best open item was shown


def _open_items(
    eligible: list[str], prefix: list[str], category: Mapping[str, str], cap: int
) -> list[str]:
    counts: dict[str, int] = {}
    for p in prefix:
        counts[category[p]] = counts.get(category[p], 0) + 1
    chosen = set(prefix)
    return [p for p in eligible if p not in chosen and counts.get(category[p], 0) < cap]


def slate_weights(
    impressions: pd.DataFrame,
    requests: pd.DataFrame,
    *,
    category: Mapping[str, str],
    diversity_cap: int,
    logging_epsilon: float,
    target_epsilon: float,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per logged impression: the cascade logging and target probabilities.

    ``impressions``: request_id, position, product_id, propensity, reward. ``requests``:
    request_id, ``eligible`` (candidates that passed every rule but diversity, in the logging
    ranker's order) and ``target_ranked`` (the target ranker's order of the candidates)."""
    by_request = requests.set_index("request_id")
    rows = []
    counts = {"skipped": 0, "mismatches": 0, "matches": 0, "slots": 0}
    for request_id, slate in impressions.sort_values("position").groupby("request_id", sort=True):
        if request_id not in by_request.index:
            counts["skipped"] += 1
            continue
        info = by_request.loc[request_id]
        eligible, target = list(info["eligible"]), info["target_ranked"]
        if target is None or len(target) == 0:
            counts["skipped"] += 1
            continue
        target_order = {p: i for i, p in enumerate(target)}
        prefix: list[str] = []
        log_cum, target_cum = 1.0, 1.0
        for item in slate.itertuples(index=False):
            open_items = _open_items(eligible, prefix, category, diversity_cap)
            if item.product_id not in open_items:  # the log disagrees with the candidates
                counts["mismatches"] += 1
                break
            share = 1.0 / len(open_items)
            logging_top = open_items[0]
            p_log = logging_epsilon * share + (1 - logging_epsilon) * (
                item.product_id == logging_top
            )
            if abs(p_log - float(item.propensity)) > _PROPENSITY_TOLERANCE:
                counts["mismatches"] += 1
            target_top = min(open_items, key=lambda p: target_order.get(p, len(target_order)))
            is_target = item.product_id == target_top
            p_target = target_epsilon * share + (1 - target_epsilon) * is_target
            counts["matches"] += int(is_target)
            counts["slots"] += 1
            log_cum *= float(item.propensity)
            target_cum *= p_target
            rows.append(
                {
                    "request_id": request_id,
                    "position": item.position,
                    "product_id": item.product_id,
                    "reward": float(item.reward),
                    "logging": log_cum,
                    "target": target_cum,
                }
            )
            prefix.append(item.product_id)
    return pd.DataFrame(rows), counts


def slate_ope(
    impressions: pd.DataFrame,
    requests: pd.DataFrame,
    *,
    category: Mapping[str, str],
    diversity_cap: int,
    logging_epsilon: float,
    target_epsilon: float,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> SlateOpe:
    """The target policy's click rate per impression (IPS, SNIPS) with bootstrap intervals."""
    weighted, counts = slate_weights(
        impressions,
        requests,
        category=category,
        diversity_cap=diversity_cap,
        logging_epsilon=logging_epsilon,
        target_epsilon=target_epsilon,
    )
    if weighted.empty:
        raise ValueError("impressions: no logged slate could be reweighted")
    actions = pd.factorize(weighted["product_id"])[0].astype(np.int64)
    logged = LoggedBandit(
        actions=actions,
        rewards=weighted["reward"].to_numpy(),
        propensities=weighted["logging"].to_numpy(),
        positions=weighted["position"].to_numpy().astype(np.int64),
    )
    estimates = estimate(
        logged,
        weighted["target"].to_numpy(),
        estimators=("ips", "snips"),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    w = weighted["target"].to_numpy() / weighted["logging"].to_numpy()
    return SlateOpe(
        estimates=estimates,
        requests=int(weighted["request_id"].nunique()),
        impressions=len(weighted),
        skipped_requests=counts["skipped"],
        propensity_mismatches=counts["mismatches"],
        effective_sample_size=float(w.sum() ** 2 / (w**2).sum()),
        target_matches_logged_share=counts["matches"] / max(counts["slots"], 1),
    )
