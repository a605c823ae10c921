"""The ground-truth oracle as a ranker: items ordered by the simulator's true click probability.

Benchmarks put it beside the models on the same held-out requests: no model can know more
than this about what a simulated customer wants. It lives in the simulator package because
only the simulator may read the hidden preference model (``tests/simulator`` enforces it).

The oracle knows each customer's latent traits, the products held at the request time (the
sequential term) and the calendar (seasonal terms). It leaves out the short-lived state the
simulator tracks internally (fatigue from recent impressions, days since salary or a matured
deposit), so it is a strong but not a perfect upper reference.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from persona.layout import DataLayout
from persona.simulator.ground_truth import GroundTruth


class GroundTruthRanker:
    """Implements ``training.ranker.Ranker`` (and ``click_probability``) from the hidden truth."""

    def __init__(self, data_dir: Path, product_ids_by_index: list[str], name: str = "oracle"):
        self.name = name
        self.truth = GroundTruth.load(data_dir)
        self.product_ids = np.asarray(product_ids_by_index, dtype=object)  # index 0 = padding
        self.model_index = np.full(len(product_ids_by_index), -1, dtype=np.int64)
        self.model_index[1:] = self.truth.product_index(list(product_ids_by_index[1:]))
        holdings = pq.read_table(DataLayout(data_dir).clean_table("holdings"))
        self._held: dict[int, list[tuple[int, np.int64, np.int64]]] = defaultdict(list)
        opened = holdings.column("opened_at").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
        closed = (
            holdings.column("closed_at")
            .cast(pa.timestamp("us"))
            .cast(pa.int64())
            .fill_null(np.iinfo(np.int64).max)
            .to_numpy()
        )
        products = self.truth.product_index(holdings.column("product_id").to_pylist())
        for c, p, o, e in zip(
            holdings.column("customer_id").to_numpy(), products, opened, closed, strict=True
        ):
            self._held[int(c)].append((int(p), o, e))

    def _held_matrix(self, customer_ids: np.ndarray, at_us: np.ndarray) -> np.ndarray:
        held = np.zeros((len(customer_ids), self.truth.model.size), dtype=bool)
        for r, (c, t) in enumerate(zip(customer_ids, at_us, strict=True)):
            for p, opened, closed in self._held.get(int(c), ()):
                if opened <= t < closed:
                    held[r, p] = True
        return held

    def click_probability(self, batch: object, items: np.ndarray) -> np.ndarray:
        customer_ids = np.asarray(batch.customer_id)  # type: ignore[attr-defined]
        times = np.asarray(batch.event_timestamp).astype("datetime64[us]")  # type: ignore[attr-defined]
        b, c = items.shape
        held = self._held_matrix(customer_ids, times.astype(np.int64))
        flat_items = np.where(items > 0, items, 1).reshape(-1)
        rows = np.repeat(np.arange(b), c)
        probability = self.truth.click_probability(
            customer_ids[rows],
            self.product_ids[flat_items].tolist(),
            times[rows],
            position=1,
            held=held[rows],
        )
        return np.where(items > 0, probability.reshape(b, c), 0.0)

    def score(self, batch: object, items: np.ndarray) -> np.ndarray:
        return self.click_probability(batch, items)
