"""Stability: refit on bootstrap samples, predict every customer, compare with the reference.

The adjusted Rand index (ARI, scikit-learn) is 1 for identical partitions and about 0 for
chance agreement, and ignores how segments are numbered. A segmentation is stable when the
mean ARI of each customer type with more than one segment reaches ``params.min_ari``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np
import pandas as pd
from pydantic import BaseModel
from rich.progress import Progress
from sklearn.metrics import adjusted_rand_score

from segmentation.features import FEATURE_NAMES, SegmentationMatrix
from segmentation.fit import (
    SegmentationModel,
    compute_threads,
    sample_rows,
    segmentation_pipeline,
)
from segmentation.params import SegmentationParams

#: Seed streams, so the final stability check never reuses the refits that chose k.
SELECTION_STREAM: Final = 0
STABILITY_STREAM: Final = 1


def bootstrap_refits(
    features: pd.DataFrame,
    k: int,
    params: SegmentationParams,
    bootstraps: int,
    stream: int = STABILITY_STREAM,
) -> Iterator[np.ndarray]:
    """Labels of every row of ``features`` from each of ``bootstraps`` refits.

    Refit ``b`` draws ``len(features)`` rows with replacement from a generator seeded with
    ``[params.seed, stream, b]``, which also seeds the refit's PCA and k-means, and fits the
    whole pipeline (scalers, PCA, k-means).
    """
    values = features[list(FEATURE_NAMES)]
    for b in range(bootstraps):
        rng = np.random.default_rng([params.seed, stream, b])
        rows = rng.integers(0, len(values), size=len(values))
        refit_seed = int(rng.integers(0, 2**31 - 1))
        pipe = segmentation_pipeline(k, params, len(values), refit_seed)
        pipe.fit(values.iloc[rows])
        yield pipe.predict(values)


def bootstrap_ari(
    features: pd.DataFrame,
    reference: np.ndarray,
    k: int,
    params: SegmentationParams,
    bootstraps: int,
    stream: int = STABILITY_STREAM,
) -> list[float]:
    """ARI between ``reference`` labels of ``features`` and each bootstrap refit's labels."""
    if len(reference) != len(features):
        raise ValueError("reference: one label per feature row is needed")
    with compute_threads(len(features)):
        return [
            float(adjusted_rand_score(reference, labels))
            for labels in bootstrap_refits(features, k, params, bootstraps, stream)
        ]


class TypeStability(BaseModel):
    customer_type: str
    k: int
    customers: int
    ari: list[float]
    ari_mean: float
    ari_min: float


class StabilityReport(BaseModel):
    """Bootstrap ARI per customer type (and over all customers, segment ids compared)."""

    version: str
    bootstraps: int
    seed: int
    min_ari: float
    per_type: dict[str, TypeStability]
    overall_ari: list[float]
    overall_mean: float
    overall_min: float
    #: Mean ARI of the least stable type with more than one segment.
    worst_type_mean: float
    stable: bool


def measure_stability(
    matrix: SegmentationMatrix,
    model: SegmentationModel,
    *,
    bootstraps: int | None = None,
    progress: bool = False,
) -> StabilityReport:
    """Refit each customer type's chosen model ``bootstraps`` times (default ``params.bootstraps``).

    Types larger than ``params.sample_size`` are measured on a seeded sample of that size.
    """
    params = model.params
    n_boot = bootstraps or params.bootstraps
    per_type: dict[str, TypeStability] = {}
    overall_ref: list[np.ndarray] = []
    overall_boot: list[list[np.ndarray]] = [[] for _ in range(n_boot)]
    with (
        compute_threads(min(matrix.n_customers, params.sample_size)),
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task("bootstrap stability", total=n_boot * len(model.types))
        for customer_type, type_model in model.types.items():
            features = sample_rows(matrix.of_type(customer_type), params.sample_size, params.seed)
            reference = type_model.assign(features)
            overall_ref.append(reference)
            if type_model.k == 1:
                for b in range(n_boot):
                    overall_boot[b].append(reference)
                bar.advance(task, n_boot)
                continue
            scores = []
            refits = bootstrap_refits(features, type_model.k, params, n_boot)
            for b, predicted in enumerate(refits):
                scores.append(float(adjusted_rand_score(reference, predicted)))
                # Prefix with the type so the overall ARI compares segments, not label numbers.
                overall_boot[b].append(np.asarray([f"{customer_type}:{x}" for x in predicted]))
                bar.advance(task)
            per_type[customer_type] = TypeStability(
                customer_type=customer_type,
                k=type_model.k,
                customers=len(features),
                ari=[round(s, 4) for s in scores],
                ari_mean=round(float(np.mean(scores)), 4),
                ari_min=round(float(np.min(scores)), 4),
            )
    reference_all = np.concatenate(overall_ref)
    overall = [
        float(adjusted_rand_score(reference_all, np.concatenate(parts))) for parts in overall_boot
    ]
    worst = min((s.ari_mean for s in per_type.values()), default=1.0)
    return StabilityReport(
        version=model.version,
        bootstraps=n_boot,
        seed=params.seed,
        min_ari=params.min_ari,
        per_type=per_type,
        overall_ari=[round(s, 4) for s in overall],
        overall_mean=round(float(np.mean(overall)), 4),
        overall_min=round(float(np.min(overall)), 4),
        worst_type_mean=worst,
        stable=worst >= params.min_ari,
    )
