"""Point-in-time context of decision points: dense features, segment, holdings, consent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from persona.features.build import feature_table_path
from persona.features.catalog import CUSTOMER_SEGMENT
from training.examples import NO_SEGMENT
from training.sets.dense import CUSTOMER_VIEWS, DenseEncoder
from training.sets.point_in_time import join_point_in_time


@dataclass(frozen=True)
class Context:
    dense: np.ndarray  # (n, D) float32, not yet standardised
    names: list[str]
    segment: np.ndarray  # (n,) object
    held: list[list[str]]  # products held at the decision time
    customer_type: np.ndarray  # (n,) object (None when unknown)
    consent_marketing: np.ndarray  # (n,) bool


def features_available(data_dir: Path) -> bool:
    return all(feature_table_path(data_dir, v.name).exists() for v in CUSTOMER_VIEWS)


def point_in_time_context(
    con: duckdb.DuckDBPyConnection,
    data_dir: Path,
    customer_ids: np.ndarray,
    decision_times: np.ndarray,
    product_ids: tuple[str, ...],
) -> Context:
    """Join the customer views of the feature service at each decision time and encode them."""
    entities = pa.table(
        {
            "row_id": np.arange(len(customer_ids), dtype=np.int64),
            "customer_id": customer_ids.astype(np.int64),
            "event_timestamp": pa.array(decision_times.astype("datetime64[us]")),
        }
    )
    rows = join_point_in_time(con, entities, data_dir, (*CUSTOMER_VIEWS, CUSTOMER_SEGMENT))
    encoder = DenseEncoder(product_ids)
    segment = np.asarray(
        [s if s is not None else NO_SEGMENT for s in rows.column("segment_id").to_pylist()],
        dtype=object,
    )
    consent = rows.column("consent_marketing").fill_null(False).to_numpy(zero_copy_only=False)
    return Context(
        dense=encoder.raw(rows),
        names=encoder.feature_names(),
        segment=segment,
        held=[list(h or []) for h in rows.column("held_product_ids").to_pylist()],
        customer_type=np.asarray(rows.column("customer_type").to_pylist(), dtype=object),
        consent_marketing=np.asarray(consent, dtype=bool),
    )
