"""Off-policy estimators: what a target policy's mean reward per round would have been, from
rounds logged under another policy with known propensities.

- **IPS** (inverse propensity scoring): mean of ``w_i * r_i`` with ``w_i = pi_target(a_i) /
  pi_logging(a_i)``; unbiased, high variance.
- **SNIPS** (self-normalised IPS): ``sum(w_i r_i) / sum(w_i)``; slightly biased, much lower
  variance when the weights' mean strays from 1.
- **DR** (doubly robust): a reward model's expected reward under the target policy plus the
  IPS-weighted residual of the logged reward, ``sum_a pi(a) q(a) + w_i (r_i - q(a_i))``; the
  reward model is cross-fitted (each round is predicted by a model that never saw it).

Intervals come from one seeded bootstrap over rounds (scipy's vectorised ``bootstrap``,
percentile method); every estimator is computed on the same resamples. Rewards are in the
log's own unit (a click rate when rewards are clicks).

``logged_bandit_from_tables`` turns any log with an action, reward and propensity column (the
serving event log, a CSV) plus a target-policy table into the arrays the estimators need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import sparse, stats
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold

#: Estimators in the order they are reported.
ESTIMATORS: Final[tuple[str, ...]] = ("ips", "snips", "dr")
#: Row sums of a target distribution may differ from 1 by this much (float rounding).
PROBABILITY_TOLERANCE: Final[float] = 1e-6
MIN_BOOTSTRAP: Final[int] = 100


@dataclass(frozen=True, eq=False)
class LoggedBandit:
    """Rounds logged under a known policy.

    ``actions``: index of the shown action (0 .. n_actions-1) per round; ``rewards``: the outcome
    (e.g. click 0/1); ``propensities``: the logging policy's probability of that action in that
    round, in (0, 1]; ``positions``: optional slot of the action (any integers), a feature of
    the reward model; ``context``: optional numeric features per round (n_rounds × d), also for
    the reward model only. ``n_actions`` defaults to the largest action + 1.
    """

    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    positions: np.ndarray | None = None
    context: np.ndarray | None = None
    n_actions: int | None = None

    def __post_init__(self) -> None:
        actions = _vector("actions", self.actions)
        n_rounds = len(actions)
        if n_rounds == 0:
            raise ValueError("actions: the log has no rounds")
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions: must be integer action indices, got {actions.dtype}")
        if actions.min() < 0:
            raise ValueError("actions: negative action index")
        n_actions = int(actions.max()) + 1 if self.n_actions is None else int(self.n_actions)
        if actions.max() >= n_actions:
            raise ValueError(
                f"actions: index {int(actions.max())} outside 0..{n_actions - 1} (n_actions)"
            )
        rewards = _numeric("rewards", self.rewards, n_rounds)
        propensities = _numeric("propensities", self.propensities, n_rounds)
        bad = (propensities <= 0) | (propensities > 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"propensities: must lie in (0, 1]; {int(bad.sum())} do not, first at round "
                f"{row} ({propensities[row]})"
            )
        positions = None
        if self.positions is not None:
            positions = _vector("positions", self.positions)
            _same_length("positions", positions, n_rounds)
            if not np.issubdtype(positions.dtype, np.integer):
                raise ValueError(f"positions: must be integers, got {positions.dtype}")
        context = None
        if self.context is not None:
            context = np.asarray(self.context, dtype=float)
            if context.ndim != 2 or context.shape[0] != n_rounds:
                raise ValueError(
                    f"context: must have shape (n_rounds={n_rounds}, d), got {context.shape}"
                )
            if not np.isfinite(context).all():
                raise ValueError("context: contains NaN or infinite values")
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "propensities", propensities)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "context", context)
        object.__setattr__(self, "n_actions", n_actions)

    @property
    def n_rounds(self) -> int:
        return len(self.actions)


class Estimate(BaseModel):
    """One estimator's value of the target policy's mean reward per round, with its interval."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    ci_low: float
    ci_high: float
    standard_error: float
    confidence_level: float
    n_rounds: int
    n_bootstrap: int

    def covers(self, value: float) -> bool:
        """Whether ``value`` lies inside the interval (bounds included)."""
        return self.ci_low <= value <= self.ci_high


def target_of_logged(logged: LoggedBandit, target_probabilities: np.ndarray) -> np.ndarray:
    """The target policy's probability of each round's logged action (n_rounds,).

    ``target_probabilities`` is either that vector already or each round's full distribution
    over actions (n_rounds × n_actions, rows summing to 1).
    """
    target = _checked_target(logged, target_probabilities)
    if target.ndim == 1:
        return target
    return target[np.arange(logged.n_rounds), logged.actions]


def importance_weights(logged: LoggedBandit, target_probabilities: np.ndarray) -> np.ndarray:
    """``pi_target(a_i) / pi_logging(a_i)`` per round."""
    return target_of_logged(logged, target_probabilities) / logged.propensities


def cross_fitted_reward_model(
    logged: LoggedBandit, *, n_folds: int = 5, seed: int = 0, regularisation: float = 1.0
) -> np.ndarray:
    """Expected reward of every action in every round (n_rounds × n_actions), cross-fitted.

    Rounds are split into ``n_folds`` seeded folds; each fold is predicted by a model fitted on
    the others. The model is an L2-regularised logistic regression (binary rewards) or ridge
    regression (other rewards) on one-hot action, one-hot position and the standardised
    context: additive action and position effects shrunk towards the mean reward, a smoothed
    CTR per (action, position) that stays sane with few clicks per action.
    """
    if n_folds < 2 or n_folds > logged.n_rounds:
        raise ValueError(f"n_folds: must be between 2 and n_rounds ({logged.n_rounds})")
    assert logged.n_actions is not None
    n_rounds, n_actions = logged.n_rounds, logged.n_actions
    binary = bool(np.isin(logged.rewards, (0.0, 1.0)).all())
    observed = _design(logged, logged.actions)
    predictions = np.empty((n_rounds, n_actions))
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train, held_out in folds.split(np.zeros(n_rounds)):
        y = logged.rewards[train]
        # Every action of every held-out round, action-major so reshaping gives round × action.
        every_action = _design(
            logged,
            np.repeat(np.arange(n_actions), len(held_out)),
            rounds=np.tile(held_out, n_actions),
        )
        if np.unique(y).size == 1:
            scores = np.full(every_action.shape[0], y[0])
        elif binary:
            model = LogisticRegression(C=regularisation, solver="newton-cholesky", max_iter=200)
            model.fit(observed[train], y)
            scores = model.predict_proba(every_action)[:, 1]
        else:
            regression = Ridge(alpha=1.0 / regularisation)
            regression.fit(observed[train], y)
            scores = regression.predict(every_action)
        predictions[held_out] = scores.reshape(n_actions, len(held_out)).T
    return predictions


def estimate(
    logged: LoggedBandit,
    target_probabilities: np.ndarray,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    n_bootstrap: int = 2000,
    confidence_level: float = 0.95,
    seed: int = 0,
    reward_predictions: np.ndarray | None = None,
    n_folds: int = 5,
) -> list[Estimate]:
    """Estimate the target policy's mean reward per round with each of ``estimators``.

    ``target_probabilities``: per round, the target policy's probability of the logged action
    (n_rounds,) or its whole distribution over actions (n_rounds × n_actions; needed by
    ``dr``). ``reward_predictions`` (n_rounds × n_actions) replaces the cross-fitted reward
    model of ``dr``. Intervals: percentile bootstrap over rounds with ``n_bootstrap`` seeded
    resamples, the same resamples for every estimator.
    """
    names = list(estimators)
    unknown = sorted(set(names) - set(ESTIMATORS))
    if unknown or not names:
        raise ValueError(f"estimators: {unknown or names} not among {', '.join(ESTIMATORS)}")
    if n_bootstrap < MIN_BOOTSTRAP:
        raise ValueError(f"n_bootstrap: must be at least {MIN_BOOTSTRAP}, got {n_bootstrap}")
    if not 0 < confidence_level < 1:
        raise ValueError(f"confidence_level: must lie in (0, 1), got {confidence_level}")
    if logged.n_rounds < 2:
        raise ValueError("actions: the bootstrap needs at least 2 rounds")
    target = _checked_target(logged, target_probabilities)
    weights = importance_weights(logged, target)
    terms: list[np.ndarray] = []
    for name in names:
        if name == "ips":
            terms.append(weights * logged.rewards)
        elif name == "snips":
            terms += [weights * logged.rewards, weights]
        else:
            terms.append(
                doubly_robust_terms(logged, target, reward_predictions, n_folds=n_folds, seed=seed)
            )
    layout = [2 if name == "snips" else 1 for name in names]

    def statistic(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        values, i = [], 0
        for width in layout:
            if width == 2:
                values.append(arrays[i].sum(axis=axis) / arrays[i + 1].sum(axis=axis))
            else:
                values.append(arrays[i].mean(axis=axis))
            i += width
        return np.stack(values)

    point = statistic(*terms)
    result = stats.bootstrap(
        tuple(terms),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_bootstrap,
        confidence_level=confidence_level,
        method="percentile",
        batch=max(1, 2_000_000 // logged.n_rounds),  # about 16 MB of indices per batch
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return [
        Estimate(
            name=name,
            value=float(point[k]),
            ci_low=float(low[k]),
            ci_high=float(high[k]),
            standard_error=float(result.standard_error[k]),
            confidence_level=confidence_level,
            n_rounds=logged.n_rounds,
            n_bootstrap=n_bootstrap,
        )
        for k, name in enumerate(names)
    ]


def doubly_robust_terms(
    logged: LoggedBandit,
    target_probabilities: np.ndarray,
    reward_predictions: np.ndarray | None = None,
    *,
    n_folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Per-round doubly robust values ``sum_a pi(a) q(a) + w (r - q(a_logged))`` (n_rounds,)."""
    target = _checked_target(logged, target_probabilities)
    if target.ndim != 2:
        raise ValueError(
            "target_probabilities: dr needs each round's distribution over actions, shape "
            f"(n_rounds, n_actions={logged.n_actions}), not only the logged action's"
        )
    if reward_predictions is None:
        reward_predictions = cross_fitted_reward_model(logged, n_folds=n_folds, seed=seed)
    predictions = np.asarray(reward_predictions, dtype=float)
    if predictions.shape != target.shape:
        raise ValueError(
            f"reward_predictions: shape {predictions.shape} differs from target_probabilities' "
            f"{target.shape}"
        )
    rows = np.arange(logged.n_rounds)
    weights = target[rows, logged.actions] / logged.propensities
    direct = (target * predictions).sum(axis=1)
    return direct + weights * (logged.rewards - predictions[rows, logged.actions])


def logged_bandit_from_tables(
    logged: pd.DataFrame,
    target: pd.DataFrame,
    *,
    action_column: str = "action",
    reward_column: str = "reward",
    propensity_column: str = "propensity",
    target_column: str = "probability",
    position_column: str | None = None,
    round_column: str | None = None,
    context_columns: Sequence[str] = (),
) -> tuple[LoggedBandit, np.ndarray]:
    """A :class:`LoggedBandit` and each round's target distribution from two tables.

    ``logged``: one row per round with the action shown (any ids), the reward and the logging
    propensity. ``target``: the target policy's probability of each action (``target_column``)
    per key: per ``round_column`` (an id both tables carry) if given, else per
    ``position_column`` if given, else one distribution for every round. Actions a key does
    not list get probability 0; each key's probabilities must sum to 1.
    """
    if round_column is not None:
        keys = [round_column]
    elif position_column is not None and position_column in target.columns:
        keys = [position_column]
    else:
        keys = []
    _require_columns(
        "logged",
        logged,
        [action_column, reward_column, propensity_column, *keys, *context_columns],
    )
    if position_column is not None:
        _require_columns("logged", logged, [position_column])
    _require_columns("target", target, [action_column, target_column, *keys])
    for name, frame, column in (
        ("logged", logged, action_column),
        ("target", target, action_column),
    ):
        if frame[column].isna().any():
            raise ValueError(f"{name}.{column}: contains missing actions")
    if logged.empty:
        raise ValueError("logged: the table has no rows")
    actions = pd.Index(pd.unique(pd.concat([logged[action_column], target[action_column]])))
    probabilities = pd.to_numeric(target[target_column], errors="coerce").to_numpy(dtype=float)
    if np.isnan(probabilities).any() or (probabilities < 0).any() or (probabilities > 1).any():
        raise ValueError(f"target.{target_column}: probabilities must be numbers in [0, 1]")
    if target.duplicated([*keys, action_column]).any():
        raise ValueError(
            f"target: more than one row per ({', '.join([*keys, action_column])}); "
            "each action may appear once per key"
        )
    if keys:
        key_index = pd.Index(pd.unique(target[keys[0]]))
        round_keys = key_index.get_indexer(logged[keys[0]])
        if (round_keys < 0).any():
            missing = _plain(logged[keys[0]].to_numpy()[round_keys < 0][0])
            raise ValueError(f"target.{keys[0]}: no target distribution for {missing!r}")
        table_rows = key_index.get_indexer(target[keys[0]])
    else:
        key_index, round_keys = pd.Index([0]), np.zeros(len(logged), dtype=int)
        table_rows = np.zeros(len(target), dtype=int)
    table = np.zeros((len(key_index), len(actions)))
    table[table_rows, actions.get_indexer(target[action_column])] = probabilities
    sums = table.sum(axis=1)
    off = np.abs(sums - 1) > PROBABILITY_TOLERANCE
    if off.any():
        key = _plain(key_index[int(np.flatnonzero(off)[0])])
        raise ValueError(
            f"target.{target_column}: probabilities of {key!r} sum to {sums[off][0]:.6f}, not 1"
        )
    positions = None
    if position_column is not None:
        position_values = pd.to_numeric(logged[position_column], errors="coerce")
        if position_values.isna().any():
            raise ValueError(f"logged.{position_column}: positions must be integers")
        positions = position_values.to_numpy().astype(np.int64)
    context = None
    if context_columns:
        context = logged[list(context_columns)].apply(pd.to_numeric, errors="coerce").to_numpy()
        if np.isnan(context).any():
            raise ValueError(
                f"logged: context columns {', '.join(context_columns)} must be numeric, no gaps"
            )
    bandit = LoggedBandit(
        actions=actions.get_indexer(logged[action_column]).astype(np.int64),
        rewards=_table_numbers("logged", logged, reward_column),
        propensities=_table_numbers("logged", logged, propensity_column),
        positions=positions,
        context=context,
        n_actions=len(actions),
    )
    return bandit, table[round_keys]


def _design(
    logged: LoggedBandit, actions: np.ndarray, rounds: np.ndarray | None = None
) -> sparse.csr_matrix:
    """Reward-model features of (round, action) pairs: one-hot action, position, context."""
    assert logged.n_actions is not None
    rounds = np.arange(logged.n_rounds) if rounds is None else rounds
    n = len(actions)
    blocks = [_one_hot(actions, logged.n_actions)]
    if logged.positions is not None:
        levels, codes = np.unique(logged.positions, return_inverse=True)
        blocks.append(_one_hot(codes[rounds], len(levels)))
    if logged.context is not None:
        context = logged.context
        scale = context.std(axis=0)
        scaled = (context - context.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
        blocks.append(sparse.csr_matrix(scaled[rounds]))
    design = sparse.hstack(blocks, format="csr")
    assert design.shape[0] == n
    return design


def _one_hot(codes: np.ndarray, width: int) -> sparse.csr_matrix:
    n = len(codes)
    return sparse.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, width))


def _checked_target(logged: LoggedBandit, target_probabilities: np.ndarray) -> np.ndarray:
    target = np.asarray(target_probabilities, dtype=float)
    expected = f"(n_rounds={logged.n_rounds},) or (n_rounds, n_actions={logged.n_actions})"
    if target.ndim not in (1, 2) or target.shape[0] != logged.n_rounds:
        raise ValueError(f"target_probabilities: shape {target.shape}, expected {expected}")
    if target.ndim == 2 and target.shape[1] != logged.n_actions:
        raise ValueError(f"target_probabilities: shape {target.shape}, expected {expected}")
    if not np.isfinite(target).all() or (target < 0).any() or (target > 1).any():
        raise ValueError("target_probabilities: must be probabilities in [0, 1], no NaN")
    if target.ndim == 2:
        off = np.abs(target.sum(axis=1) - 1) > PROBABILITY_TOLERANCE
        if off.any():
            raise ValueError(
                f"target_probabilities: {int(off.sum())} rows do not sum to 1, first round "
                f"{int(np.flatnonzero(off)[0])}"
            )
    return target


def _vector(field: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{field}: must be one value per round (1-D), got shape {array.shape}")
    return array


def _numeric(field: str, values: np.ndarray, n_rounds: int) -> np.ndarray:
    array = _vector(field, values)
    _same_length(field, array, n_rounds)
    try:
        array = array.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: must be numbers") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{field}: contains NaN or infinite values")
    return array


def _same_length(field: str, values: np.ndarray, n_rounds: int) -> None:
    if len(values) != n_rounds:
        raise ValueError(f"{field}: {len(values)} values for {n_rounds} rounds (actions)")


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (so messages read ``1``, not ``np.int64(1)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _require_columns(name: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")


def _table_numbers(name: str, frame: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    if values.isna().any():
        raise ValueError(f"{name}.{column}: must be numbers, no gaps")
    return values.to_numpy(dtype=float)
