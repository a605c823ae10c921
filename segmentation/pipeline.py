"""One segmentation run: matrix → choose k → fit → stability → profiles → save → publish.

Everything a run produces lives in ``<data_dir>/segmentation/<version>/``: ``model.joblib``
and ``model.json``, ``selection.json``, ``stability.json``, ``profiles.json``,
``assignments.parquet``, ``summary.json`` and the report (``report.html``, two PNGs).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pandas as pd
from pydantic import BaseModel, TypeAdapter

from persona.features.store import OnlineStoreChoice
from persona.settings import PersonaSettings
from segmentation.features import read_segmentation_matrix
from segmentation.fit import fit_segmentation
from segmentation.params import SegmentationParams
from segmentation.profile import SegmentProfile, profile_segments
from segmentation.publish import (
    MaterializeResult,
    PublishResult,
    materialize_segments,
    publish_segments,
)
from segmentation.report import write_report
from segmentation.selection import Selection, select_k
from segmentation.stability import StabilityReport, measure_stability

SEGMENTATION_DIR: Final = "segmentation"
SUMMARY_FILE: Final = "summary.json"


class SegmentSummaryRow(BaseModel):
    segment_id: str
    name: str
    customer_type: str
    customers: int
    share: float


class SegmentationSummary(BaseModel):
    """What ``persona segment fit`` prints and ``summary.json`` keeps."""

    version: str
    folder: str
    snapshot_at: datetime
    fitted_at: datetime
    customers: int
    k_total: int
    chosen_k: dict[str, int]
    selection_reasons: dict[str, str]
    segments: list[SegmentSummaryRow]
    ari_mean_by_type: dict[str, float]
    ari_min_by_type: dict[str, float]
    ari_overall_mean: float
    stable: bool
    published: PublishResult | None
    materialized: MaterializeResult | None
    not_published_because: str | None
    report: str
    seconds: float


def segmentation_root(data_dir: Path) -> Path:
    """``<data_dir>/segmentation``: one folder per version below it."""
    return Path(data_dir) / SEGMENTATION_DIR


def run_segmentation(
    data_dir: Path,
    params: SegmentationParams | None = None,
    *,
    as_of: datetime | None = None,
    publish: bool = True,
    materialize: bool = True,
    settings: PersonaSettings | None = None,
    online_store: OnlineStoreChoice | None = None,
    progress: bool = True,
) -> SegmentationSummary:
    """Fit, check, profile, save and (when stable) publish a segmentation of ``data_dir``.

    An unstable segmentation (mean bootstrap ARI below ``params.min_ari`` for some customer
    type) is saved and reported but not published. ``materialize`` loads the published view
    into the online store of ``settings`` (default: ``PersonaSettings(data_dir=data_dir)``).
    """
    started = time.perf_counter()
    params = params or SegmentationParams()
    data_dir = Path(data_dir)
    target = settings or PersonaSettings(data_dir=data_dir)
    if materialize and target.data_dir.resolve() != data_dir.resolve():
        raise ValueError(
            f"settings.data_dir ({target.data_dir}) is not the data_dir segmented ({data_dir})"
        )
    matrix = read_segmentation_matrix(data_dir, as_of)
    selection = select_k(matrix, params, progress=progress)
    model = fit_segmentation(matrix, selection.chosen_k, params)
    segment_ids = model.assign(matrix)
    stability = measure_stability(matrix, model, progress=progress)
    profiles = profile_segments(data_dir, matrix, segment_ids)

    folder = segmentation_root(data_dir) / model.version
    model.save(folder)
    (folder / "selection.json").write_text(selection.model_dump_json(indent=2))
    (folder / "stability.json").write_text(stability.model_dump_json(indent=2))
    (folder / "profiles.json").write_text(json.dumps([p.model_dump() for p in profiles], indent=2))
    pd.DataFrame(
        {"customer_id": segment_ids.index, "segment_id": segment_ids.to_numpy(dtype=str)}
    ).to_parquet(folder / "assignments.parquet", index=False)
    paths = write_report(folder, model.version, selection, stability, profiles)

    published = materialized = None
    not_published = None
    if not publish:
        not_published = "publishing not asked for"
    elif not stability.stable:
        not_published = (
            f"unstable: mean bootstrap ARI {stability.worst_type_mean:.3f} < {params.min_ari}"
        )
    else:
        published = publish_segments(data_dir, segment_ids, model.version, matrix.snapshot_at)
        if materialize:
            materialized = materialize_segments(target, online_store)

    summary = SegmentationSummary(
        version=model.version,
        folder=str(folder),
        snapshot_at=matrix.snapshot_at,
        fitted_at=datetime.now(UTC),
        customers=matrix.n_customers,
        k_total=model.k_total,
        chosen_k=selection.chosen_k,
        selection_reasons={t: s.reason for t, s in selection.per_type.items()},
        segments=[
            SegmentSummaryRow(
                segment_id=p.segment_id,
                name=p.name,
                customer_type=p.customer_type,
                customers=p.customers,
                share=p.share,
            )
            for p in profiles
        ],
        ari_mean_by_type={t: s.ari_mean for t, s in stability.per_type.items()},
        ari_min_by_type={t: s.ari_min for t, s in stability.per_type.items()},
        ari_overall_mean=stability.overall_mean,
        stable=stability.stable,
        published=published,
        materialized=materialized,
        not_published_because=not_published,
        report=str(paths.html),
        seconds=round(time.perf_counter() - started, 2),
    )
    (folder / SUMMARY_FILE).write_text(summary.model_dump_json(indent=2))
    return summary


def version_folder(data_dir: Path, version: str | None = None) -> Path:
    """The folder of ``version``, or of the most recently fitted one when None."""
    root = segmentation_root(data_dir)
    if version is not None:
        folder = root / version
        if not (folder / SUMMARY_FILE).exists():
            known = sorted(p.parent.name for p in root.glob(f"*/{SUMMARY_FILE}"))
            raise FileNotFoundError(
                f"version: no segmentation {version!r} under {root}; known: {known or 'none'}"
            )
        return folder
    summaries = list(root.glob(f"*/{SUMMARY_FILE}"))
    if not summaries:
        raise FileNotFoundError(
            f"data_dir: no segmentation under {root}; run `persona segment fit` first"
        )
    latest = max(
        summaries,
        key=lambda p: SegmentationSummary.model_validate_json(p.read_text()).fitted_at,
    )
    return latest.parent


def load_run(
    folder: Path,
) -> tuple[SegmentationSummary, Selection, StabilityReport, list[SegmentProfile]]:
    """Read back a saved run's summary, selection, stability and profiles."""
    summary = SegmentationSummary.model_validate_json((folder / SUMMARY_FILE).read_text())
    selection = Selection.model_validate_json((folder / "selection.json").read_text())
    stability = StabilityReport.model_validate_json((folder / "stability.json").read_text())
    profiles = TypeAdapter(list[SegmentProfile]).validate_json(
        (folder / "profiles.json").read_text()
    )
    return summary, selection, stability, profiles
