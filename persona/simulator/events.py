"""The event log of one chunk: collected as integer-coded arrays, turned into Arrow at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa

from persona import domain
from persona.layout import conform
from persona.schemas import EVENTS
from persona.simulator.encoding import decode, prefixed_ids, timestamps
from persona.simulator.logging_policy import MODEL_VERSION, VARIANT

EVENT_CODE: Final = {name: i for i, name in enumerate(domain.EVENT_TYPES)}
#: Event ids are ``ev<chunk * ID_STRIDE + row>``: unique across a run of < ID_STRIDE rows/chunk.
ID_STRIDE: Final = 10_000_000_000

_COLUMNS: Final = (
    "customer",
    "product",
    "app",
    "event_type",
    "ts",
    "request",
    "position",
    "amount",
    "propensity",
    "device",
)
_NULL: Final = {
    "product": -1,
    "request": -1,
    "position": 0,
    "amount": np.nan,
    "propensity": np.nan,
    "device": -1,
}
_DTYPES: Final = {
    "customer": np.int32,
    "product": np.int16,
    "app": np.int8,
    "event_type": np.int8,
    "ts": np.int64,
    "request": np.int64,
    "position": np.int16,
    "amount": np.float64,
    "propensity": np.float64,
    "device": np.int8,
}


@dataclass
class EventBuffer:
    """Appends batches of events (one array per column, all the same length)."""

    _parts: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {name: [] for name in _COLUMNS}
    )
    rows: int = 0

    def add(self, *, customer: np.ndarray, event_type: str, **columns: np.ndarray) -> None:
        """Add ``len(customer)`` events of one type; omitted nullable columns are null.

        ``customer`` is the row in the chunk; ``ts`` µs since the epoch; ``request`` the
        chunk-local request number; ``app``, ``device``, ``product`` integer codes.
        """
        n = len(customer)
        if n == 0:
            return
        unknown = set(columns) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"columns: unknown event column(s) {', '.join(sorted(unknown))}")
        for required in ("app", "ts"):
            if required not in columns:
                raise ValueError(f"{required}: every event needs it")
        values = {"customer": customer, "event_type": np.full(n, EVENT_CODE[event_type]), **columns}
        for name in _COLUMNS:
            if name in values:
                array = np.broadcast_to(np.asarray(values[name], dtype=_DTYPES[name]), (n,))
            else:
                array = np.full(n, _NULL[name], dtype=_DTYPES[name])
            self._parts[name].append(array)
        self.rows += n

    def column(self, name: str) -> np.ndarray:
        parts = self._parts[name]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=_DTYPES[name])

    def to_arrow(
        self, *, chunk_index: int, customer_ids: np.ndarray, product_ids: tuple[str, ...]
    ) -> pa.Table:
        """The ``events`` table of this chunk (ids unique across chunks)."""
        if self.rows >= ID_STRIDE:
            raise ValueError(f"chunk_size: a chunk produced {self.rows} events, too many")
        base = chunk_index * ID_STRIDE
        request = self.column("request")
        position = self.column("position")
        logged = request >= 0
        table = pa.table(
            {
                "event_id": prefixed_ids("ev", base + np.arange(self.rows, dtype=np.int64)),
                "customer_id": customer_ids[self.column("customer")],
                "product_id": decode(self.column("product"), product_ids),
                "app": decode(self.column("app"), domain.APPS),
                "event_type": decode(self.column("event_type"), domain.EVENT_TYPES),
                "event_timestamp": timestamps(self.column("ts")),
                "request_id": prefixed_ids("rq", base + request, null=~logged),
                "position": pa.array(position, mask=position == 0),
                "amount": pa.array(self.column("amount"), from_pandas=True),
                "propensity": pa.array(self.column("propensity"), from_pandas=True),
                "model_version": decode(np.where(logged, 0, -1), (MODEL_VERSION,)),
                "variant": decode(np.where(logged, 0, -1), (VARIANT,)),
                "device": decode(self.column("device"), domain.DEVICES),
            }
        )
        return conform(table, EVENTS)
