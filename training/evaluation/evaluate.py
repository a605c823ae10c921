"""Run a ranker over an example set's split and summarise its ranking and calibration quality.

:func:`evaluate` streams ``example_set.batches(split, batch_size)`` so the full-catalogue
protocol never holds more than one batch of (B, n_items) scores; it records per-example metrics
with each row's group labels (:func:`per_example_frame`, kept for paired significance tests) and
reduces them to overall and per-group means (:func:`summarise`). :func:`evaluate_pointwise`
checks click probabilities against the logged impressions (``shown`` / ``shown_labels``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel
from tqdm import tqdm

from training.evaluation.metrics import (
    CalibrationResult,
    calibration,
    metric_names,
    per_example_metrics,
    rank_counts,
)
from training.evaluation.protocols import (
    ProtocolName,
    build_candidates,
    check_protocol,
    pad_rows,
    rankable,
)
from training.examples import SPLITS, ExampleBatch, ExampleSet, Split
from training.ranker import ProbabilisticRanker, Ranker

#: One-value-per-row columns of an :class:`ExampleBatch` that results can be grouped by.
GROUPABLE: Final[tuple[str, ...]] = (
    "app",
    "segment",
    "device",
    "request_hour",
    "request_day_of_week",
)


class GroupMetrics(BaseModel):
    n: int
    metrics: dict[str, float | None]


class EvaluationResult(BaseModel):
    """One model on one split under one protocol. Metric means are None where undefined
    (e.g. ``auc`` when every row had a single candidate)."""

    model: str
    protocol: ProtocolName
    split: Split
    k: int
    n_examples: int
    n_skipped: int = 0  # rows the protocol could not rank (no target / nothing to rank against)
    metrics: dict[str, float | None]
    groups: dict[str, dict[str, GroupMetrics]]  # group column -> value -> n and metric means
    calibration: CalibrationResult | None = None


def take_rows(batch: ExampleBatch, rows: np.ndarray) -> ExampleBatch:
    """The sub-batch of ``rows`` (integer positions), every field sliced alike."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        values[field.name] = [value[i] for i in rows] if isinstance(value, list) else value[rows]
    return ExampleBatch(**values)


def _check_args(split: str, k: int, batch_size: int, group_by: Sequence[str]) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    unknown = [g for g in group_by if g not in GROUPABLE]
    if unknown:
        raise ValueError(f"group_by: unknown column(s) {unknown}; choose from {GROUPABLE}")


def _scores(ranker: Ranker, batch: ExampleBatch, items: np.ndarray, method: str) -> np.ndarray:
    scores = np.asarray(getattr(ranker, method)(batch, items), dtype=np.float64)
    if scores.shape != items.shape:
        raise ValueError(
            f"{method}: ranker {ranker.name!r} returned shape {scores.shape}, expected {items.shape}"
        )
    return scores


def per_example_frame(
    ranker: Ranker,
    example_set: ExampleSet,
    split: Split = "test",
    protocol: str = "sampled",
    k: int = 10,
    batch_size: int = 256,
    group_by: Sequence[str] = ("app", "segment"),
    progress: bool = False,
) -> tuple[pd.DataFrame, int]:
    """Per-example metrics (one frame row per ranked example) and the number of skipped rows.

    Columns: ``customer_id``, the ``group_by`` labels (as strings), ``rank``, ``ties``,
    ``n_candidates`` and the metrics of :func:`~training.evaluation.metrics.metric_names`.
    """
    check_protocol(protocol)
    _check_args(split, k, batch_size, group_by)
    n_items = example_set.manifest().n_items if protocol == "full" else None
    total = pq.ParquetFile(example_set.split_path(split)).metadata.num_rows
    parts: list[pd.DataFrame] = []
    skipped = 0
    with tqdm(total=total, disable=not progress, desc=f"{ranker.name}/{protocol}") as bar:
        for batch in example_set.batches(split, batch_size):
            bar.update(len(batch))
            keep = np.flatnonzero(rankable(protocol, batch))
            skipped += len(batch) - keep.size
            if keep.size == 0:
                continue
            rows = take_rows(batch, keep) if keep.size < len(batch) else batch
            items, target_col, valid = build_candidates(protocol, rows, n_items)
            counts = rank_counts(_scores(ranker, rows, items, "score"), target_col, valid)
            metrics = per_example_metrics(counts.rank, counts.n_candidates, k, counts.ties)
            columns: dict[str, object] = {"customer_id": rows.customer_id}
            columns |= {g: [str(v) for v in getattr(rows, g)] for g in group_by}
            columns |= {
                "rank": counts.rank,
                "ties": counts.ties,
                "n_candidates": counts.n_candidates,
            }
            parts.append(pd.DataFrame(columns | metrics))
    empty = pd.DataFrame(
        columns=["customer_id", *group_by, "rank", "ties", "n_candidates", *metric_names(k)]
    )
    return (pd.concat(parts, ignore_index=True) if parts else empty), skipped


def _means(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in names:
        values = frame[name].to_numpy(dtype=np.float64)
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if values.size else None
    return out


def summarise(
    frame: pd.DataFrame,
    *,
    model: str,
    protocol: str,
    split: Split,
    k: int,
    group_by: Sequence[str] = ("app", "segment"),
    n_skipped: int = 0,
) -> EvaluationResult:
    """Overall and per-group means of a :func:`per_example_frame` (NaN AUCs left out)."""
    names = metric_names(k)
    groups = {
        column: {
            str(value): GroupMetrics(n=len(part), metrics=_means(part, names))
            for value, part in frame.groupby(column, sort=True)
        }
        for column in group_by
    }
    return EvaluationResult(
        model=model,
        protocol=protocol,  # type: ignore[arg-type]  # validated by pydantic
        split=split,
        k=k,
        n_examples=len(frame),
        n_skipped=n_skipped,
        metrics=_means(frame, names),
        groups=groups,
    )


def evaluate(
    ranker: Ranker,
    example_set: ExampleSet,
    split: Split = "test",
    protocol: Literal["sampled", "full", "candidates"] = "sampled",
    k: int = 10,
    batch_size: int = 256,
    group_by: Sequence[str] = ("app", "segment"),
    progress: bool = False,
    calibrate: bool = True,
) -> EvaluationResult:
    """Rank every row's target under ``protocol`` and summarise NDCG@k, HR@k, MRR and AUC.

    Rows with ``target == 0`` (and rows with nothing to rank the target against under the
    protocol) are skipped and counted in ``n_skipped``. With ``calibrate`` and a
    :class:`ProbabilisticRanker`, the result also carries :func:`evaluate_pointwise`'s
    calibration when the split has logged impressions.
    """
    frame, skipped = per_example_frame(
        ranker, example_set, split, protocol, k, batch_size, group_by, progress
    )
    result = summarise(
        frame,
        model=ranker.name,
        protocol=protocol,
        split=split,
        k=k,
        group_by=group_by,
        n_skipped=skipped,
    )
    if calibrate and isinstance(ranker, ProbabilisticRanker):
        result.calibration = evaluate_pointwise(ranker, example_set, split, batch_size)
    return result


def _has_shown(example_set: ExampleSet, split: Split) -> bool:
    column = pq.read_table(example_set.split_path(split), columns=["shown"]).column("shown")
    return len(column) > 0 and pc.sum(pc.list_value_length(column)).as_py() > 0


def evaluate_pointwise(
    ranker: ProbabilisticRanker,
    example_set: ExampleSet,
    split: Split = "test",
    batch_size: int = 256,
    bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> CalibrationResult | None:
    """Click probabilities of every logged ``shown`` item against its ``shown_labels``.

    Every row with shown items counts, including rows without a click (``target == 0``): those
    are the negatives. Returns None when the split has no shown items (next-item sets).
    """
    _check_args(split, 1, batch_size, ())
    if not isinstance(ranker, ProbabilisticRanker):
        raise ValueError(f"ranker: {getattr(ranker, 'name', ranker)!r} has no click_probability")
    if not _has_shown(example_set, split):
        return None
    probabilities: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for batch in example_set.batches(split, batch_size):
        keep = np.flatnonzero([len(s) > 0 for s in batch.shown])
        if keep.size == 0:
            continue
        rows = take_rows(batch, keep)
        for i, (shown, clicked) in enumerate(zip(rows.shown, rows.shown_labels, strict=True)):
            if len(shown) != len(clicked):
                raise ValueError(
                    f"shown_labels: row {keep[i]} has {len(clicked)} labels for {len(shown)} items"
                )
        items = pad_rows(rows.shown)
        present = items > 0
        probabilities.append(_scores(ranker, rows, items, "click_probability")[present])
        labels.append(pad_rows(rows.shown_labels)[present])
    return calibration(np.concatenate(probabilities), np.concatenate(labels), bins, strategy)
