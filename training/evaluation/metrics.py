"""Ranking and calibration metrics, per example, in plain numpy (scikit-learn for calibration).

Ranking metrics start from where the held-out target lands among a row's valid candidates.
Ties are common (untrained models, popularity baselines with equal counts, constant scorers),
and breaking them by candidate position would reward whatever position the protocol gives the
target (it is column 0 in the sampled protocol). So ties are never broken: with ``g`` valid
candidates scored strictly above the target and ``t`` others scored equal to it, the target is
equally likely to sit at any of the discrete ranks ``g, g+1, ..., g+t``, and every metric here is
the **exact expectation over that uniform tie order** (the average of the metric over those
``t+1`` ranks). The summary rank is that expectation, ``g + t/2``, which makes a constant scorer
score exactly like a random ranking.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

#: Probabilities are clipped to [eps, 1 - eps] before the log loss, so one confident mistake
#: costs at most -log(1e-7) ≈ 16.1 nats instead of infinity.
LOG_LOSS_EPS = 1e-7


def metric_names(k: int) -> tuple[str, ...]:
    """The keys of :func:`per_example_metrics` (and of every metrics dict in this package)."""
    return (f"ndcg@{k}", f"hr@{k}", "mrr", "auc")


class RankCounts(NamedTuple):
    """Where each row's target sits among its valid candidates (all (B,) int64)."""

    greater: np.ndarray  # valid candidates scored strictly above the target
    ties: np.ndarray  # other valid candidates scored exactly like the target
    n_candidates: np.ndarray  # valid candidates, target included

    @property
    def rank(self) -> np.ndarray:
        """Expected 0-based rank under a uniformly random tie order: ``greater + ties / 2``."""
        return self.greater + 0.5 * self.ties


def rank_counts(scores: np.ndarray, target_col: np.ndarray, valid: np.ndarray) -> RankCounts:
    """Count, per row, the valid candidates above and tied with the target (see module doc)."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.asarray(valid)
    target_col = np.asarray(target_col)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected a (B, C) array, got shape {scores.shape}")
    if valid.shape != scores.shape or valid.dtype != np.bool_:
        raise ValueError(
            f"valid: expected a bool array of shape {scores.shape}, got {valid.dtype} {valid.shape}"
        )
    n_rows, n_cols = scores.shape
    if target_col.shape != (n_rows,) or not np.issubdtype(target_col.dtype, np.integer):
        raise ValueError(
            f"target_col: expected ({n_rows},) integers, got {target_col.dtype} {target_col.shape}"
        )
    if n_rows and (target_col.min() < 0 or target_col.max() >= n_cols):
        raise ValueError(f"target_col: columns must lie in [0, {n_cols})")
    rows = np.arange(n_rows)
    if not valid[rows, target_col].all():
        bad = int(np.flatnonzero(~valid[rows, target_col])[0])
        raise ValueError(f"valid: the target of row {bad} is not a valid candidate")
    nan_rows = np.flatnonzero((np.isnan(scores) & valid).any(axis=1))
    if nan_rows.size:
        raise ValueError(f"scores: row {int(nan_rows[0])} has NaN scores on valid candidates")
    target_score = scores[rows, target_col][:, None]
    greater = ((scores > target_score) & valid).sum(axis=1)
    ties = ((scores == target_score) & valid).sum(axis=1) - 1  # minus the target itself
    return RankCounts(
        greater=greater.astype(np.int64),
        ties=ties.astype(np.int64),
        n_candidates=valid.sum(axis=1).astype(np.int64),
    )


def target_rank(scores: np.ndarray, target_col: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among its valid candidates, ties counted half.

    ``rank = #valid strictly greater + 0.5 * #valid others equal``: the expected rank under a
    random tie order, so a constant scorer over C candidates gets (C - 1) / 2. Entries where
    ``valid`` is False never count. Returns (B,) float64.
    """
    return rank_counts(scores, target_col, valid).rank


def per_example_metrics(
    rank: np.ndarray,
    n_candidates: np.ndarray,
    k: int = 10,
    ties: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """NDCG@k, HR@k, MRR and per-row AUC for each example (one positive per row).

    ``rank`` is :func:`target_rank`'s expected rank and ``ties`` the number of other valid
    candidates tied with the target (:func:`rank_counts`); a fractional rank needs its ``ties``
    to be expanded exactly, so without ``ties`` every rank must be a whole number. With ties, the
    target occupies each discrete rank ``r`` in ``g .. g+t`` (``g = rank - t/2``) with
    probability ``1/(t+1)``, and:

    * ``ndcg@k`` = mean over r of ``1/log2(r+2)`` if ``r < k`` else 0 (the ideal DCG is 1);
    * ``hr@k``   = fraction of those r below k;
    * ``mrr``    = mean over r of ``1/(r+1)``;
    * ``auc``    = fraction of the other valid candidates ranked below the target, ties 0.5,
      i.e. ``1 - rank/(n-1)``; NaN for rows with a single candidate (nothing to compare with).
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    rank = np.asarray(rank, dtype=np.float64)
    n = np.asarray(n_candidates, dtype=np.int64)
    if rank.ndim != 1 or n.shape != rank.shape:
        raise ValueError(f"n_candidates: expected shape {rank.shape}, got {n.shape}")
    ties = np.zeros(rank.shape, np.int64) if ties is None else np.asarray(ties, dtype=np.int64)
    if ties.shape != rank.shape or (ties < 0).any():
        raise ValueError(f"ties: expected non-negative counts of shape {rank.shape}")
    greater_f = rank - 0.5 * ties
    greater = np.rint(greater_f).astype(np.int64)
    if not np.allclose(greater_f, greater, rtol=0, atol=1e-9):
        raise ValueError("rank: fractional ranks need their tie counts (pass ties=)")
    if (greater < 0).any() or (greater + ties > n - 1).any():
        raise ValueError("rank: must lie in [0, n_candidates - 1 - ties]")
    if rank.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return dict.fromkeys(metric_names(k), empty)

    span = (ties + 1).astype(np.float64)
    last = greater + ties  # the worst discrete rank in the tie
    untied = ties == 0

    # Cumulative discount D[j] = sum_{r<j} 1/log2(r+2): only ranks below k contribute.
    discount = 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)
    cum_discount = np.concatenate([[0.0], np.cumsum(discount)])
    tied_ndcg = (
        cum_discount[np.minimum(last + 1, k)] - cum_discount[np.minimum(greater, k)]
    ) / span
    exact_ndcg = np.where(greater < k, 1.0 / np.log2(greater + 2.0), 0.0)
    ndcg = np.where(untied, exact_ndcg, tied_ndcg)

    hr = np.clip(k - greater, 0, ties + 1) / span

    # Harmonic numbers H[j] = sum_{r<j} 1/(r+1), for the mean reciprocal rank over a tie.
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, int(last.max()) + 2))])
    mrr = np.where(untied, 1.0 / (greater + 1.0), (harmonic[last + 1] - harmonic[greater]) / span)

    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where(n > 1, 1.0 - rank / np.maximum(n - 1, 1), np.nan)

    ndcg_key, hr_key, mrr_key, auc_key = metric_names(k)
    return {ndcg_key: ndcg, hr_key: hr.astype(np.float64), mrr_key: mrr, auc_key: auc}


class ReliabilityPoint(BaseModel):
    """One non-empty bin of a reliability diagram."""

    model_config = ConfigDict(frozen=True)

    mean_predicted: float
    observed_rate: float
    count: int


class CalibrationResult(BaseModel):
    """How well pointwise click probabilities match observed clicks.

    ``ece`` is the expected calibration error: the count-weighted mean over non-empty bins of
    ``|mean predicted - observed rate|``. Bins are equal-frequency (``strategy="quantile"``) by
    default because click probabilities crowd near 0 and equal-width bins would put almost every
    impression into the first bin; ``"uniform"`` gives the classic equal-width ECE.
    """

    n: int
    bins: int
    strategy: Literal["quantile", "uniform"]
    ece: float
    brier: float
    log_loss: float
    auc: float | None  # pointwise ROC AUC; None when only one class is present
    mean_predicted: float
    observed_rate: float
    curve: list[ReliabilityPoint]


def calibration(
    probabilities: np.ndarray,
    labels: np.ndarray,
    bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> CalibrationResult:
    """ECE, Brier score, clipped log loss, pointwise AUC and the reliability curve."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if bins < 1:
        raise ValueError(f"bins: must be >= 1, got {bins}")
    if strategy not in ("quantile", "uniform"):
        raise ValueError(f"strategy: expected 'quantile' or 'uniform', got {strategy!r}")
    if p.size == 0:
        raise ValueError("probabilities: empty")
    if y.shape != p.shape:
        raise ValueError(f"labels: expected {p.size} labels, got {y.size}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities: must be finite and in [0, 1]")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: must be 0 or 1")
    y = y.astype(np.int64)

    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy=strategy)
    # calibration_curve returns no counts; bin exactly as it does (sklearn 1.9) to weight the ECE.
    if strategy == "quantile":
        edges = np.percentile(p, np.linspace(0, 100, bins + 1))
    else:
        edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=bins)
    counts = counts[counts > 0]
    if counts.size != observed.size:
        raise RuntimeError("calibration: bin counts disagree with sklearn's calibration_curve")
    ece = float(np.sum(counts / p.size * np.abs(predicted - observed)))

    clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else None
    return CalibrationResult(
        n=int(p.size),
        bins=bins,
        strategy=strategy,
        ece=ece,
        brier=float(brier_score_loss(y, p)),
        log_loss=float(log_loss(y, clipped, labels=[0, 1])),
        auc=auc,
        mean_predicted=float(p.mean()),
        observed_rate=float(y.mean()),
        curve=[
            ReliabilityPoint(mean_predicted=float(mp), observed_rate=float(o), count=int(c))
            for mp, o, c in zip(predicted, observed, counts, strict=True)
        ],
    )
