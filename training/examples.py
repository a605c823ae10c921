"""Example sets: the labelled examples every model trains and is evaluated on, as Parquet.

An example set is a folder::

    train.parquet  valid.parquet  test.parquet   one row per decision point (schema below)
    vocabulary.json                                item index <-> product id, category
    manifest.json                                  how the set was built (:class:`Manifest`)

One row is one decision point: the customer's history strictly before ``event_timestamp``, the
context known at that time (point-in-time features), and what happened next.

* ``history`` / ``history_types``: the last ``max_len`` product interactions, oldest first,
  **left-padded with 0** (item indices are 1..n_items; 0 is padding).
* ``targets``: per history position, the next item to predict there (0 = no loss). Train rows
  of next-item sets use every position (SASRec training); impression sets put the clicked item
  in the last slot only.
* ``target``: the held-out positive item ranked by the evaluation protocols (valid/test rows).
* ``sampled_negatives``: 100 items the customer never touched, drawn once with the set's seed,
  so every model ranks exactly the same candidates (the SASRec paper's protocol).
* ``candidates``: the items eligible at this decision (empty list = the whole catalogue).
* ``shown`` / ``shown_labels`` / ``shown_positions`` / ``shown_propensities``: for sets built from
  logged impressions, the slate the logging policy showed and whether each item was clicked.
* ``context_dense``: standardised numeric point-in-time features (names in the manifest).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from persona import domain

SPLITS: Final[tuple[str, ...]] = ("train", "valid", "test")
Split = Literal["train", "valid", "test"]
#: Interaction kinds in ``history_types``: code = position + 1 (0 = padding).
INTERACTION_TYPES: Final[tuple[str, ...]] = domain.PRODUCT_INTERACTIONS
#: Apps in ``app``: the bank's four, or ``none`` for data sets without apps.
NO_APP: Final = "none"
NO_SEGMENT: Final = "unknown"
NO_DEVICE: Final = "unknown"


def interaction_type_code(event_type: str) -> int:
    """1-based code of an interaction kind in ``history_types``."""
    return INTERACTION_TYPES.index(event_type) + 1


def example_schema(max_len: int, n_dense: int) -> pa.Schema:
    """The Parquet schema of every split (fixed-size lists keep batches rectangular)."""
    return pa.schema(
        [
            pa.field("customer_id", pa.int64(), nullable=False),
            pa.field("event_timestamp", pa.timestamp("us"), nullable=False),
            pa.field("app", pa.string(), nullable=False),
            pa.field("segment", pa.string(), nullable=False),
            pa.field("device", pa.string(), nullable=False),
            pa.field("request_hour", pa.int8(), nullable=False),
            pa.field("request_day_of_week", pa.int8(), nullable=False),
            pa.field("history", pa.list_(pa.int32(), max_len), nullable=False),
            pa.field("history_types", pa.list_(pa.int8(), max_len), nullable=False),
            pa.field("targets", pa.list_(pa.int32(), max_len), nullable=False),
            pa.field("target", pa.int32(), nullable=False),
            pa.field("sampled_negatives", pa.list_(pa.int32()), nullable=False),
            pa.field("candidates", pa.list_(pa.int32()), nullable=False),
            pa.field("shown", pa.list_(pa.int32()), nullable=False),
            pa.field("shown_labels", pa.list_(pa.int8()), nullable=False),
            pa.field("shown_positions", pa.list_(pa.int16()), nullable=False),
            pa.field("shown_propensities", pa.list_(pa.float32()), nullable=False),
            pa.field("context_dense", pa.list_(pa.float32(), max(n_dense, 1)), nullable=False),
        ]
    )


class Item(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=1)
    product_id: str
    category: str


class Vocabulary(BaseModel):
    """Item index (1..n) <-> product id; index 0 is padding. Sorted by product id."""

    items: list[Item]

    @classmethod
    def from_products(cls, product_ids: list[str], categories: list[str]) -> Vocabulary:
        pairs = sorted(zip(product_ids, categories, strict=True))
        return cls(
            items=[Item(index=i + 1, product_id=p, category=c) for i, (p, c) in enumerate(pairs)]
        )

    @property
    def size(self) -> int:
        return len(self.items)

    def index_of(self) -> dict[str, int]:
        return {item.product_id: item.index for item in self.items}

    def product_ids(self) -> list[str]:
        """Product id per index, with "" at padding index 0."""
        return ["", *(item.product_id for item in self.items)]

    def categories(self) -> list[str]:
        """Category per index, with "" at padding index 0."""
        return ["", *(item.category for item in self.items)]


class Manifest(BaseModel):
    """How an example set was built: enough to rebuild it and to refuse a mismatched model."""

    dataset: str
    kind: Literal["next_item", "impressions"]
    max_len: int = Field(ge=1)
    n_items: int = Field(ge=1)
    dense_features: list[str]
    dense_mean: list[float]
    dense_std: list[float]
    apps: list[str]
    segments: list[str]
    devices: list[str]
    feature_service: str | None
    feature_service_version: str | None
    data_snapshot: str = Field(description="hash of the canonical data the set was built from")
    seed: int
    rows: dict[str, int]
    notes: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class ExampleBatch:
    """A batch of example rows as numpy arrays (what models score)."""

    customer_id: np.ndarray  # (B,) int64
    event_timestamp: np.ndarray  # (B,) datetime64[us]
    app: np.ndarray  # (B,) str
    segment: np.ndarray  # (B,) str
    device: np.ndarray  # (B,) str
    request_hour: np.ndarray  # (B,) int8
    request_day_of_week: np.ndarray  # (B,) int8
    history: np.ndarray  # (B, L) int64, 0 = padding, oldest first
    history_types: np.ndarray  # (B, L) int64
    targets: np.ndarray  # (B, L) int64
    target: np.ndarray  # (B,) int64
    context_dense: np.ndarray  # (B, D) float32
    sampled_negatives: list[np.ndarray]
    candidates: list[np.ndarray]
    shown: list[np.ndarray]
    shown_labels: list[np.ndarray]
    shown_positions: list[np.ndarray]
    shown_propensities: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.customer_id)

    @classmethod
    def from_table(cls, table: pa.Table) -> ExampleBatch:
        def fixed(name: str, dtype: type) -> np.ndarray:
            column = table.column(name).combine_chunks()
            width = column.type.list_size
            return column.flatten().to_numpy().reshape(len(table), width).astype(dtype)

        def ragged(name: str) -> list[np.ndarray]:
            return [np.asarray(v, dtype=None) for v in table.column(name).to_pylist()]

        def strings(name: str) -> np.ndarray:
            return np.asarray(table.column(name).to_pylist(), dtype=object)

        return cls(
            customer_id=table.column("customer_id").to_numpy(),
            event_timestamp=table.column("event_timestamp").to_numpy(),
            app=strings("app"),
            segment=strings("segment"),
            device=strings("device"),
            request_hour=table.column("request_hour").to_numpy(),
            request_day_of_week=table.column("request_day_of_week").to_numpy(),
            history=fixed("history", np.int64),
            history_types=fixed("history_types", np.int64),
            targets=fixed("targets", np.int64),
            target=table.column("target").to_numpy().astype(np.int64),
            context_dense=fixed("context_dense", np.float32),
            sampled_negatives=ragged("sampled_negatives"),
            candidates=ragged("candidates"),
            shown=ragged("shown"),
            shown_labels=ragged("shown_labels"),
            shown_positions=ragged("shown_positions"),
            shown_propensities=ragged("shown_propensities"),
        )


class ExampleSet:
    """An example set on disk (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def vocabulary_path(self) -> Path:
        return self.root / "vocabulary.json"

    def split_path(self, split: Split) -> Path:
        return self.root / f"{split}.parquet"

    def exists(self) -> bool:
        return self.manifest_path.exists() and all(self.split_path(s).exists() for s in SPLITS)

    def manifest(self) -> Manifest:
        if not self.manifest_path.exists():
            raise FileNotFoundError(
                f"examples: no example set at {self.root} (manifest.json missing)"
            )
        return Manifest.model_validate_json(self.manifest_path.read_text())

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.model_validate_json(self.vocabulary_path.read_text())

    def read(self, split: Split) -> pa.Table:
        return pq.read_table(self.split_path(split))

    def batches(self, split: Split, batch_size: int) -> Iterator[ExampleBatch]:
        parquet = pq.ParquetFile(self.split_path(split))
        for record_batch in parquet.iter_batches(batch_size=batch_size):
            yield ExampleBatch.from_table(pa.Table.from_batches([record_batch]))

    def write(
        self,
        splits: dict[str, pa.Table],
        vocabulary: Vocabulary,
        manifest: Manifest,
    ) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            schema = example_schema(manifest.max_len, len(manifest.dense_features))
            pq.write_table(splits[split].cast(schema), self.split_path(split), row_group_size=8192)
        self.vocabulary_path.write_text(vocabulary.model_dump_json(indent=1))
        self.manifest_path.write_text(manifest.model_dump_json(indent=2))


def write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
