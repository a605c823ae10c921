"""The segmentation model: per customer type, log-compress → standardise → PCA → k-means.

Retail and corporate customers are segmented separately. The type is known for certain, and
the bank treats the two as different markets: corporate products are offered only to
corporate customers and in other apps, so a segment mixing both would give retrieval priors
that the eligibility rules then throw away. Kept as a feature instead, the type's bimodal
column dominates the distances and the silhouette rewards the trivial split.

Each feature group (RFM, category interactions, app mix, holdings) is standardised and
weighted ``1/sqrt(columns)`` so every group carries the same total variance, whatever its
width; k-means then runs on the leading principal components, where the bootstrap refits
agree far better than on the raw 21 columns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import joblib
import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from segmentation.features import (
    FEATURE_NAMES,
    GROUPS,
    LOG_COMPRESSED_GROUPS,
    SegmentationMatrix,
    features_of,
)
from segmentation.params import SegmentationParams

#: Below this many rows per fit, one BLAS/OpenMP thread is faster: thread start-up and spinning
#: cost more than the arithmetic on a few thousand rows (20× slower on a busy 2-core box).
SINGLE_THREAD_BELOW: Final = 200_000
MODEL_FILE: Final = "model.joblib"
MODEL_JSON: Final = "model.json"
ALGORITHM: Final = "kmeans"


def compute_threads(rows: int) -> threadpool_limits:
    """A context limiting BLAS/OpenMP to one thread for small fits (library default otherwise)."""
    return threadpool_limits(limits=1 if rows < SINGLE_THREAD_BELOW else None)


def representation(components: int, n_samples: int, seed: int) -> Pipeline:
    """Log-compress counts, standardise, weight the groups equally, project on PCA components."""
    groups = []
    weights = {}
    for group in GROUPS:
        columns = features_of(group)
        steps: list[tuple[str, object]] = []
        if group in LOG_COMPRESSED_GROUPS:
            steps.append(("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")))
        steps.append(("standardise", StandardScaler()))
        groups.append((group, Pipeline(steps), columns))
        weights[group] = 1.0 / float(np.sqrt(len(columns)))
    n_components = max(1, min(components, len(FEATURE_NAMES), n_samples))
    return Pipeline(
        [
            ("groups", ColumnTransformer(groups, transformer_weights=weights)),
            ("pca", PCA(n_components=n_components, random_state=seed)),
        ]
    )


def segmentation_pipeline(
    k: int, params: SegmentationParams, n_samples: int, seed: int
) -> Pipeline:
    """The full pipeline for ``k`` segments: :func:`representation` then seeded k-means."""
    pipe = representation(params.components, n_samples, seed)
    pipe.steps.append(("kmeans", KMeans(n_clusters=k, n_init=params.n_init, random_state=seed)))
    return pipe


@dataclass
class TypeModel:
    """The fitted model of one customer type; ``pipeline`` is None when the type is one segment."""

    customer_type: str
    k: int
    pipeline: Pipeline | None
    #: k-means label → segment id (segments numbered by size, largest first).
    segment_of_label: dict[int, str]

    def assign(self, features: pd.DataFrame) -> np.ndarray:
        """Segment ids for rows of :data:`FEATURE_NAMES` (same units as the matrix)."""
        if self.pipeline is None:
            return np.full(len(features), self.segment_of_label[0], dtype=object)
        labels = self.pipeline.predict(features[list(FEATURE_NAMES)])
        return np.asarray([self.segment_of_label[int(x)] for x in labels], dtype=object)


@dataclass
class SegmentationModel:
    """Fitted segmentation: one :class:`TypeModel` per customer type, a version and its inputs."""

    version: str
    snapshot_at: datetime
    data_fingerprint: str
    params: SegmentationParams
    types: dict[str, TypeModel] = field(default_factory=dict)

    @property
    def k_total(self) -> int:
        return sum(t.k for t in self.types.values())

    @property
    def segment_ids(self) -> list[str]:
        return [s for t in self.types.values() for s in t.segment_of_label.values()]

    def assign(self, matrix: SegmentationMatrix) -> pd.Series:
        """Segment id of every customer of ``matrix`` (index customer_id)."""
        unknown = sorted(set(matrix.customer_types()) - set(self.types))
        if unknown:
            raise ValueError(
                f"customer_type: {unknown} not seen when segmentation {self.version} was fitted"
            )
        out = pd.Series(index=matrix.features.index, dtype=object, name="segment_id")
        for customer_type, model in self.types.items():
            rows = matrix.customers["customer_type"] == customer_type
            if rows.any():
                out[rows] = model.assign(matrix.features[rows])
        return out

    def save(self, folder: Path) -> Path:
        """Write ``model.joblib`` (the fitted pipelines) and ``model.json`` (readable summary)."""
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, folder / MODEL_FILE)
        summary = {
            "version": self.version,
            "algorithm": ALGORITHM,
            "snapshot_at": self.snapshot_at.isoformat(),
            "data_fingerprint": self.data_fingerprint,
            "params": self.params.model_dump(),
            "features": list(FEATURE_NAMES),
            "types": {
                name: {
                    "k": t.k,
                    "segments": list(t.segment_of_label.values()),
                    "centroids_pca": (
                        t.pipeline.named_steps["kmeans"].cluster_centers_.round(6).tolist()
                        if t.pipeline is not None
                        else None
                    ),
                    "explained_variance_ratio": (
                        t.pipeline.named_steps["pca"].explained_variance_ratio_.round(6).tolist()
                        if t.pipeline is not None
                        else None
                    ),
                }
                for name, t in self.types.items()
            },
        }
        (folder / MODEL_JSON).write_text(json.dumps(summary, indent=2))
        return folder / MODEL_FILE

    @classmethod
    def load(cls, folder: Path) -> SegmentationModel:
        path = Path(folder) / MODEL_FILE
        if not path.exists():
            raise FileNotFoundError(f"version: no {MODEL_FILE} in {folder}")
        model = joblib.load(path)
        if not isinstance(model, cls):
            raise ValueError(f"version: {path} does not hold a segmentation model")
        return model


def sample_rows(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """At most ``size`` rows, drawn without replacement with ``seed`` (all rows, in order, if fewer)."""
    if len(frame) <= size:
        return frame
    rng = np.random.default_rng(seed)
    return frame.iloc[np.sort(rng.choice(len(frame), size=size, replace=False))]


def fit_type(
    features: pd.DataFrame, customer_type: str, k: int, params: SegmentationParams
) -> TypeModel:
    """Fit the chosen ``k`` for one customer type on all its customers; number segments by size."""
    if k == 1:
        return TypeModel(customer_type, 1, None, {0: f"{customer_type}-1"})
    pipe = segmentation_pipeline(k, params, len(features), params.seed)
    labels = pipe.fit_predict(features[list(FEATURE_NAMES)])
    sizes = np.bincount(labels, minlength=k)
    centroids = pipe.named_steps["kmeans"].cluster_centers_
    # Largest first; equal sizes by centroid so the numbering never depends on k-means' order.
    order = sorted(range(k), key=lambda c: (-sizes[c], tuple(np.round(centroids[c], 9))))
    return TypeModel(
        customer_type,
        k,
        pipe,
        {int(label): f"{customer_type}-{rank + 1}" for rank, label in enumerate(order)},
    )


def segmentation_version(
    k_total: int, fingerprint: str, params: SegmentationParams, ks: dict[str, int]
) -> str:
    """``kmeans-k<total>-<10 hex>``: hash of the data snapshot, the parameters and the chosen k."""
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(json.dumps(params.model_dump(), sort_keys=True).encode())
    digest.update(json.dumps(ks, sort_keys=True).encode())
    return f"{ALGORITHM}-k{k_total}-{digest.hexdigest()[:10]}"


def fit_segmentation(
    matrix: SegmentationMatrix, chosen_k: dict[str, int], params: SegmentationParams
) -> SegmentationModel:
    """Fit one model per customer type with the k chosen for it."""
    missing = sorted(set(matrix.customer_types()) - set(chosen_k))
    if missing:
        raise ValueError(f"chosen_k: no k for customer type(s) {missing}")
    with compute_threads(matrix.n_customers):
        types = {t: fit_type(matrix.of_type(t), t, chosen_k[t], params) for t in sorted(chosen_k)}
    k_total = sum(m.k for m in types.values())
    fingerprint = matrix.fingerprint()
    return SegmentationModel(
        version=segmentation_version(k_total, fingerprint, params, chosen_k),
        snapshot_at=matrix.snapshot_at,
        data_fingerprint=fingerprint,
        params=params,
        types=types,
    )
