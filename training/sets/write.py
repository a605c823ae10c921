"""Writing example sets: split, count, hash the source snapshot, save with the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from persona.layout import DataLayout
from training.examples import SPLITS, ExampleSet, Manifest, Vocabulary
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
