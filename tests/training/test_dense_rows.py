"""Serving encodes online vectors with ``DenseEncoder.raw_rows``; training with ``raw`` over
Arrow tables. Any difference would be train/serve skew, so they must agree value for value."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from persona import domain
from persona.features.catalog import CUSTOMER_BEHAVIOUR, CUSTOMER_HOLDINGS, CUSTOMER_PROFILE
from training.sets.dense import DenseEncoder

_TYPES = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "string_list": pa.list_(pa.string()),
    "int64_list": pa.list_(pa.int64()),
}
COLUMNS = [
    c for view in (CUSTOMER_PROFILE, CUSTOMER_BEHAVIOUR, CUSTOMER_HOLDINGS) for c in view.columns
]
SCHEMA = pa.schema([pa.field(c.name, _TYPES[c.type]) for c in COLUMNS])
VOCABULARIES = {
    "customer_type": domain.CUSTOMER_TYPES,
    "age_band": domain.AGE_BANDS,
    "risk_profile": domain.RISK_PROFILES,
}


def random_row(rng: np.random.Generator, products: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for column in COLUMNS:
        if rng.random() < 0.15:
            row[column.name] = None
        elif column.type == "string":
            choices = VOCABULARIES.get(column.name, ("a", "b", "unseen"))
            row[column.name] = str(rng.choice([*choices, "unseen"]))
        elif column.type == "bool":
            row[column.name] = bool(rng.random() < 0.5)
        elif column.type == "int64":
            row[column.name] = int(rng.integers(-3, 10_000))
        elif column.type == "float64":
            row[column.name] = float(rng.normal(0, 5_000))
        elif column.type == "string_list":
            row[column.name] = [str(p) for p in rng.choice([*products, "gone"], 3)]
        else:
            row[column.name] = [int(x) for x in rng.integers(0, 9, 3)]
    return row


@pytest.mark.parametrize("catalogue_size", [12, 300])  # multi-hot holdings on, then off
def test_raw_rows_equals_raw_over_arrow(catalogue_size: int) -> None:
    products = tuple(f"p{i}" for i in range(catalogue_size))
    encoder = DenseEncoder(products)
    rng = np.random.default_rng(catalogue_size)
    rows = [random_row(rng, products) for _ in range(200)]
    rows.append(dict.fromkeys(SCHEMA.names))  # an unknown customer: every feature missing
    expected = encoder.raw(pa.Table.from_pylist(rows, schema=SCHEMA))
    got = encoder.raw_rows(rows)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got.shape[1] == len(encoder.feature_names())
