"""Writing example sets: split, count, hash the source snapshot, save with the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

import duckdb
import numpy as np

from persona.layout import DataLayout
from training.examples import SPLITS, ExampleSet, Manifest, Vocabulary
from training.sets.dense import Standardiser
from training.sets.rows import ExampleRows
from training.snapshot import data_snapshot_hash


def concat_rows(parts: list[ExampleRows]) -> ExampleRows:
    """Stack row blocks (every block must have the same optional columns set)."""
    fields = vars(parts[0]).keys()
    out: dict[str, object] = {}
    for name in fields:
        values = [getattr(p, name) for p in parts]
        if all(v is None for v in values):
            out[name] = None
        elif isinstance(values[0], list):
            out[name] = [x for v in values for x in v]
        else:
            out[name] = np.concatenate(values, axis=0)
    return ExampleRows(**out)  # type: ignore[arg-type]


def snapshot_of(data_dir: Path) -> str:
    """Hash of the clean canonical tables an example set was built from."""
    return data_snapshot_hash([DataLayout(data_dir).clean])


def write_example_set(
    example_set: ExampleSet, rows: ExampleRows, vocabulary: Vocabulary, manifest: Manifest
) -> Manifest:
    tables = {}
    counts = {}
    for split in SPLITS:
        part = rows.take(rows.split == split)
        tables[split] = part.to_arrow()
        counts[split] = len(part)
    manifest = manifest.model_copy(update={"rows": counts})
    example_set.write(tables, vocabulary, manifest)
    return manifest


#: The feature service whose views every example set's context comes from, and its version.
FEATURE_SERVICE: Final = ("ranker_v1", "1")
#: A next-item decision happens just before the event it predicts: features at ``t - 1 µs``.
JUST_BEFORE: Final = np.timedelta64(1, "us")


def finish_next_item_set(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    out_dir: Path,
    rows: ExampleRows,
    vocabulary: Vocabulary,
    *,
    dataset: str,
    max_len: int,
    seed: int,
    use_features: bool,
    notes: list[str],
) -> Manifest:
    """Join point-in-time context (just before each target) when features exist, then write."""
    from training.sets.context import point_in_time_context

    feature_service: str | None = None
    version: str | None = None
    if use_features:
        context = point_in_time_context(
            con,
            data_dir,
            rows.customer_id,
            rows.event_timestamp - JUST_BEFORE,
            tuple(vocabulary.product_ids()[1:]),
        )
        rows.segment = context.segment
        names = context.names
        scaler = Standardiser.fit(context.dense[rows.split == "train"])
        rows.context_dense = scaler.apply(context.dense)
        feature_service, version = FEATURE_SERVICE
    else:
        names = []
        scaler = Standardiser(np.zeros(0, np.float32), np.ones(0, np.float32))
        rows.context_dense = np.zeros((len(rows), 0), np.float32)
        notes = [*notes, "no feature tables: sequence-only examples"]
    return write_with_manifest(
        data_dir,
        out_dir,
        rows,
        vocabulary,
        dataset=dataset,
        kind="next_item",
        max_len=max_len,
        dense_features=names,
        scaler=scaler,
        feature_service=(feature_service, version) if feature_service else None,
        seed=seed,
        notes=notes,
    )


def write_with_manifest(
    data_dir: Path,
    out_dir: Path,
    rows: ExampleRows,
    vocabulary: Vocabulary,
    *,
    dataset: str,
    kind: Literal["next_item", "impressions"],
    max_len: int,
    dense_features: list[str],
    scaler: Standardiser,
    feature_service: tuple[str, str] | None,
    seed: int,
    notes: list[str],
) -> Manifest:
    """Describe ``rows`` in a manifest (vocabularies read off the rows) and write the set."""
    manifest = Manifest(
        dataset=dataset,
        kind=kind,
        max_len=max_len,
        n_items=vocabulary.size,
        dense_features=dense_features,
        dense_mean=scaler.mean.tolist(),
        dense_std=scaler.std.tolist(),
        apps=sorted(set(rows.app.tolist())),
        segments=sorted(set(rows.segment.tolist())),
        devices=sorted({d for d in rows.device.tolist() if d is not None}),
        feature_service=feature_service[0] if feature_service else None,
        feature_service_version=feature_service[1] if feature_service else None,
        data_snapshot=snapshot_of(data_dir),
        seed=seed,
        rows={},
        notes=notes,
    )
    return write_example_set(ExampleSet(out_dir), rows, vocabulary, manifest)
