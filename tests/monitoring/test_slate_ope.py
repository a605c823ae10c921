"""Cascade IPS for slates (monitoring.ope.slates) against the truth of a known click model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.ope.slates import slate_ope, slate_weights

ITEMS = [f"p{i}" for i in range(12)]
CATEGORY = {p: f"c{i % 4}" for i, p in enumerate(ITEMS)}
CAP, K = 2, 4
QUALITY = dict(zip(ITEMS, np.linspace(0.02, 0.30, len(ITEMS)), strict=True))


def fill(order: list[str], epsilon: float, rng: np.random.Generator) -> list[tuple[str, float]]:
    """Serving's slot filling: best open item w.p. 1-ε, else a uniform open one."""
    chosen: list[tuple[str, float]] = []
    counts: dict[str, int] = {}
    remaining = list(order)
    while remaining and len(chosen) < K:
        open_items = [p for p in remaining if counts.get(CATEGORY[p], 0) < CAP]
        explore = rng.random() < epsilon
        pick = open_items[rng.integers(len(open_items))] if explore else open_items[0]
        p = epsilon / len(open_items) + (1 - epsilon) * (pick == open_items[0])
        chosen.append((pick, p))
        counts[CATEGORY[pick]] = counts.get(CATEGORY[pick], 0) + 1
        remaining.remove(pick)
    return chosen


def click(item: str, position: int, rng: np.random.Generator) -> int:
    return int(rng.random() < QUALITY[item] * position**-0.6)


def logged(n: int, seed: int, epsilon: float = 0.3) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    rng = np.random.default_rng(seed)
    impressions, requests, contexts = [], [], []
    for r in range(n):
        eligible = list(rng.choice(ITEMS, size=8, replace=False))  # logging order: random
        target = sorted(eligible, key=lambda p: -QUALITY[p])  # target: the best first
        contexts.append((eligible, target))
        requests.append({"request_id": f"r{r}", "eligible": eligible, "target_ranked": target})
        for pos, (item, p) in enumerate(fill(eligible, epsilon, rng), start=1):
            impressions.append(
                {
                    "request_id": f"r{r}",
                    "position": pos,
                    "product_id": item,
                    "propensity": round(p, 6),
                    "reward": click(item, pos, rng),
                }
            )
    return pd.DataFrame(impressions), pd.DataFrame(requests), contexts


def target_truth(contexts: list, epsilon: float, seed: int) -> float:
    """The target policy's expected clicks per impression on the same requests (exact
    expectation of clicks given the drawn slates, averaged over 5 draws per request)."""
    rng = np.random.default_rng(seed)
    clicks = shown = 0.0
    for _, target in contexts:
        for _ in range(5):
            for pos, (item, _) in enumerate(fill(target, epsilon, rng), start=1):
                clicks += QUALITY[item] * pos**-0.6
                shown += 1
    return clicks / shown


@pytest.fixture(scope="module")
def log() -> tuple[pd.DataFrame, pd.DataFrame, list]:
    return logged(4000, seed=0)


def test_estimate_covers_the_target_truth_and_moves_away_from_the_log(log) -> None:
    impressions, requests, contexts = log
    result = slate_ope(
        impressions,
        requests,
        category=CATEGORY,
        diversity_cap=CAP,
        logging_epsilon=0.3,
        target_epsilon=0.05,
        n_bootstrap=400,
        seed=1,
    )
    truth = target_truth(contexts, 0.05, seed=2)
    logged_ctr = impressions["reward"].mean()
    snips = next(e for e in result.estimates if e.name == "snips")
    assert result.propensity_mismatches == 0
    assert result.skipped_requests == 0
    assert snips.covers(truth), (snips, truth)
    assert truth > 1.5 * logged_ctr  # the target really is better ...
    assert snips.value > logged_ctr  # ... and the estimate says so, not the log's own CTR
    assert 0 < result.effective_sample_size < result.impressions


def test_weights_are_cascade_products_and_bad_propensities_are_caught(log) -> None:
    impressions, requests, _ = log
    first = impressions[impressions["request_id"] == "r0"]
    weighted, counts = slate_weights(
        first,
        requests,
        category=CATEGORY,
        diversity_cap=CAP,
        logging_epsilon=0.3,
        target_epsilon=0.05,
    )
    assert counts["mismatches"] == 0
    np.testing.assert_allclose(
        weighted["logging"].to_numpy(), np.cumprod(first.sort_values("position")["propensity"])
    )
    assert (np.diff(weighted["target"].to_numpy()) <= 0).all()  # products of probabilities
    broken = impressions.assign(propensity=impressions["propensity"] * 0.5)
    _, counts = slate_weights(
        broken.head(40),
        requests,
        category=CATEGORY,
        diversity_cap=CAP,
        logging_epsilon=0.3,
        target_epsilon=0.05,
    )
    assert counts["mismatches"] > 0
