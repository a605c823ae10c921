"""Assemble example rows (numpy arrays) into an Arrow table of :func:`example_schema`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from training.examples import NO_DEVICE, example_schema


def _fixed(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    flat = pa.array(values.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _ragged(values: list[np.ndarray] | None, n: int, dtype: pa.DataType) -> pa.Array:
    if values is None:
        return pa.array([[] for _ in range(n)], type=pa.list_(dtype))
    return pa.array([np.asarray(v).tolist() for v in values], type=pa.list_(dtype))


@dataclass
class ExampleRows:
    """Columns of n example rows; optional ragged columns default to empty lists."""

    customer_id: np.ndarray
    event_timestamp: np.ndarray  # datetime64[us]
    app: np.ndarray
    segment: np.ndarray
    device: np.ndarray
    history: np.ndarray  # (n, L) int32
    history_types: np.ndarray  # (n, L) int8
    targets: np.ndarray  # (n, L) int32
    target: np.ndarray  # (n,) int32
    context_dense: np.ndarray  # (n, D) float32 (standardised)
    sampled_negatives: list[np.ndarray] | None = None
    candidates: list[np.ndarray] | None = None
    shown: list[np.ndarray] | None = None
    shown_labels: list[np.ndarray] | None = None
    shown_positions: list[np.ndarray] | None = None
    shown_propensities: list[np.ndarray] | None = None
    split: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))

    def __len__(self) -> int:
        return len(self.customer_id)

    def take(self, mask: np.ndarray) -> ExampleRows:
        index = np.flatnonzero(mask)

        def pick(v: object) -> object:
            if v is None:
                return None
            if isinstance(v, list):
                return [v[i] for i in index]
            assert isinstance(v, np.ndarray)
            return v[index] if len(v) else v

        return ExampleRows(**{name: pick(value) for name, value in vars(self).items()})

    def to_arrow(self) -> pa.Table:
        n = len(self)
        max_len = self.history.shape[1]
        dense = self.context_dense
        if dense.shape[1] == 0:
            dense = np.zeros((n, 1), dtype=np.float32)
        hours = self.event_timestamp.astype("datetime64[h]").astype(np.int64) % 24
        days = self.event_timestamp.astype("datetime64[D]").astype(np.int64)
        day_of_week = (days + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
        device = np.asarray([d if d is not None else NO_DEVICE for d in self.device], dtype=object)
        columns = {
            "customer_id": pa.array(self.customer_id.astype(np.int64)),
            "event_timestamp": pa.array(self.event_timestamp.astype("datetime64[us]")),
            "app": pa.array(self.app.tolist(), pa.string()),
            "segment": pa.array(self.segment.tolist(), pa.string()),
            "device": pa.array(device.tolist(), pa.string()),
            "request_hour": pa.array(hours.astype(np.int8)),
            "request_day_of_week": pa.array(day_of_week.astype(np.int8)),
            "history": _fixed(self.history.astype(np.int32), pa.int32()),
            "history_types": _fixed(self.history_types.astype(np.int8), pa.int8()),
            "targets": _fixed(self.targets.astype(np.int32), pa.int32()),
            "target": pa.array(self.target.astype(np.int32)),
            "sampled_negatives": _ragged(self.sampled_negatives, n, pa.int32()),
            "candidates": _ragged(self.candidates, n, pa.int32()),
            "shown": _ragged(self.shown, n, pa.int32()),
            "shown_labels": _ragged(self.shown_labels, n, pa.int8()),
            "shown_positions": _ragged(self.shown_positions, n, pa.int16()),
            "shown_propensities": _ragged(self.shown_propensities, n, pa.float32()),
            "context_dense": _fixed(dense.astype(np.float32), pa.float32()),
        }
        return pa.table(columns).cast(example_schema(max_len, dense.shape[1]))
