"""Model selection: how many segments per customer type.

For each k in the allowed range: k-means' silhouette (higher is better separated), a Gaussian
mixture's BIC on the same components (lower is better; reported beside it) and the mean
bootstrap ARI (how reproducible the partition is). The silhouette alone often prefers a k whose
partition moves from one refit to the next on this kind of data (continuous traits, no crisp
clusters), and an unstable segment id is useless to retrieval and reports. So the rule is:

1. near-best = every k whose silhouette is within ``near_best_silhouette`` of the best;
2. the near-best k with the highest silhouette whose mean ARI reaches ``min_ari`` plus
   ``selection_margin`` (so the independent final check clears ``min_ari``);
3. else the stable k with the highest silhouette over the whole range;
4. else fewer segments: the largest stable k below the range, down to 2;
5. else one segment for the type (its customers still share the type's priors).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel
from rich.progress import Progress
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture

from segmentation.features import FEATURE_NAMES, SegmentationMatrix
from segmentation.fit import compute_threads, representation, sample_rows
from segmentation.params import SegmentationParams
from segmentation.stability import SELECTION_STREAM, bootstrap_ari

#: Silhouette on at most this many points (its cost grows with the square of the sample).
SILHOUETTE_SAMPLE = 5_000


class KPoint(BaseModel):
    k: int
    silhouette: float
    bic: float
    inertia: float
    ari_mean: float
    ari_min: float
    sizes: list[int]


class TypeSelection(BaseModel):
    customer_type: str
    customers: int
    sample: int
    curve: list[KPoint]
    chosen_k: int
    silhouette_best_k: int | None
    bic_best_k: int | None
    near_best: list[int]
    reason: str


class Selection(BaseModel):
    """The k curve and choice of every customer type."""

    method: str
    params: SegmentationParams
    per_type: dict[str, TypeSelection]

    @property
    def chosen_k(self) -> dict[str, int]:
        return {t: s.chosen_k for t, s in self.per_type.items()}


def k_range(customers: int, params: SegmentationParams) -> list[int]:
    """Allowed k for a type of ``customers``: ``k_min..k_max``, capped at customers // min size.

    A small type whose cap falls below ``k_min`` may still split in 2..cap; below 2× the
    minimum segment size it is one segment (empty range).
    """
    cap = customers // params.min_segment_customers
    if cap < 2:
        return []
    return list(range(min(params.k_min, cap), min(params.k_max, cap) + 1))


def select_type(
    matrix: SegmentationMatrix,
    customer_type: str,
    params: SegmentationParams,
    bar: Progress | None = None,
) -> TypeSelection:
    """The k curve of one customer type and the k the rule above picks."""
    features = matrix.of_type(customer_type)
    ks = k_range(len(features), params)
    if not ks:
        return TypeSelection(
            customer_type=customer_type,
            customers=len(features),
            sample=len(features),
            curve=[],
            chosen_k=1,
            silhouette_best_k=None,
            bic_best_k=None,
            near_best=[],
            reason=(
                f"{len(features)} customers < 2 × min_segment_customers "
                f"({params.min_segment_customers}): one segment"
            ),
        )
    sample = sample_rows(features, params.sample_size, params.seed)
    space = representation(params.components, len(sample), params.seed)
    points = space.fit_transform(sample[list(FEATURE_NAMES)])
    task = bar.add_task(f"choosing k: {customer_type}", total=len(ks)) if bar else None
    curve = []
    for k in ks:
        curve.append(k_point(points, sample, k, params))
        if bar is not None and task is not None:
            bar.advance(task)
    chosen, near, reason = choose_k(curve, params)
    if chosen is None:
        # Nothing in the range is reproducible: fewer, broader segments, down to one.
        chosen = 1
        required = params.min_ari + params.selection_margin
        fallback = f"no k ≥ 2 reaches mean ARI {required:.2f}: one segment"
        for k in range(min(ks) - 1, 1, -1):
            point = k_point(points, sample, k, params)
            curve.insert(0, point)
            if point.ari_mean >= required:
                chosen = k
                fallback = f"k={k} is the largest stable k below (mean ARI {point.ari_mean:.3f})"
                break
        reason = f"{reason}; {fallback}"
    return TypeSelection(
        customer_type=customer_type,
        customers=len(features),
        sample=len(sample),
        curve=curve,
        chosen_k=chosen,
        silhouette_best_k=max(curve, key=lambda p: (p.silhouette, -p.k)).k,
        bic_best_k=min(curve, key=lambda p: (p.bic, p.k)).k,
        near_best=near,
        reason=reason,
    )


def space_kmeans(points: np.ndarray, k: int, params: SegmentationParams) -> KMeans:
    """Seeded k-means fitted on already-projected ``points``."""
    return KMeans(n_clusters=k, n_init=params.n_init, random_state=params.seed).fit(points)


def choose_k(curve: list[KPoint], params: SegmentationParams) -> tuple[int | None, list[int], str]:
    """Rules 1-3 of this module: (k or None when no k is stable, near-best ks, reasoning)."""
    required = params.min_ari + params.selection_margin
    best = max(p.silhouette for p in curve)
    by_silhouette = sorted(curve, key=lambda p: (-p.silhouette, p.k))
    near = [p for p in by_silhouette if p.silhouette >= best - params.near_best_silhouette]
    near_ks = sorted(p.k for p in near)
    top = by_silhouette[0]
    for p in near:
        if p.ari_mean >= required:
            if p.k == top.k:
                why = f"best silhouette {p.silhouette:.3f} and stable (mean ARI {p.ari_mean:.3f})"
            else:
                why = (
                    f"k={top.k} has the best silhouette ({top.silhouette:.3f}) but mean ARI "
                    f"{top.ari_mean:.3f} < {required:.2f}; k={p.k} is near-best "
                    f"({p.silhouette:.3f}) and stable (mean ARI {p.ari_mean:.3f})"
                )
            return p.k, near_ks, why
    for p in by_silhouette:
        if p.ari_mean >= required:
            return (
                p.k,
                near_ks,
                f"no near-best k (silhouette ≥ {best - params.near_best_silhouette:.3f}) is "
                f"stable; k={p.k} is the best-separated stable one (silhouette "
                f"{p.silhouette:.3f}, mean ARI {p.ari_mean:.3f})",
            )
    steadiest = max(curve, key=lambda p: (p.ari_mean, p.silhouette))
    return (
        None,
        near_ks,
        f"no k in {curve[0].k}..{curve[-1].k} reaches mean ARI {required:.2f} "
        f"(best: k={steadiest.k}, {steadiest.ari_mean:.3f})",
    )


def k_point(points: np.ndarray, sample: pd.DataFrame, k: int, params: SegmentationParams) -> KPoint:
    """Silhouette, BIC, inertia and selection-bootstrap ARI of ``k`` segments."""
    kmeans = space_kmeans(points, k, params)
    labels = kmeans.labels_
    silhouette = silhouette_score(
        points, labels, sample_size=min(SILHOUETTE_SAMPLE, len(points)), random_state=params.seed
    )
    mixture = GaussianMixture(k, covariance_type="full", random_state=params.seed)
    bic = mixture.fit(points).bic(points)
    ari = bootstrap_ari(sample, labels, k, params, params.selection_bootstraps, SELECTION_STREAM)
    return KPoint(
        k=k,
        silhouette=round(float(silhouette), 4),
        bic=round(float(bic), 1),
        inertia=round(float(kmeans.inertia_), 2),
        ari_mean=round(float(np.mean(ari)), 4),
        ari_min=round(float(np.min(ari)), 4),
        sizes=sorted(np.bincount(labels, minlength=k).tolist(), reverse=True),
    )


def select_k(
    matrix: SegmentationMatrix, params: SegmentationParams, *, progress: bool = False
) -> Selection:
    """Choose k for every customer type of ``matrix``."""
    with (
        compute_threads(min(matrix.n_customers, params.sample_size)),
        Progress(disable=not progress, transient=True) as bar,
    ):
        per_type = {t: select_type(matrix, t, params, bar) for t in matrix.customer_types()}
    return Selection(
        method=(
            "k-means on PCA components of group-weighted, log-compressed, standardised "
            "features; k by silhouette, the most stable of the near-best (bootstrap ARI)"
        ),
        params=params,
        per_type=per_type,
    )
