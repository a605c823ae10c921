"""Numeric context features for models: point-in-time feature rows -> one float vector per row.

Counts and amounts are log-compressed, categories one-hot encoded over the bank's fixed
vocabularies (:mod:`persona.domain`), held products multi-hot encoded over the catalogue (when
it is small enough to be a feature), then every column is standardised with the **train** split's
mean and standard deviation, which the manifest keeps so serving encodes the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa

from persona import domain
from persona.features.catalog import CUSTOMER_BEHAVIOUR, CUSTOMER_HOLDINGS, CUSTOMER_PROFILE

#: Catalogues up to this size get one "holds product X" feature per product.
MAX_MULTI_HOT_ITEMS: Final = 256
_ONE_HOT: Final[dict[str, tuple[str, ...]]] = {
    "customer_type": domain.CUSTOMER_TYPES,
    "age_band": domain.AGE_BANDS,
    "city_tier": domain.CITY_TIERS,
    "occupation": domain.OCCUPATIONS,
    "life_stage": domain.LIFE_STAGES,
    "risk_profile": domain.RISK_PROFILES,
}
_PLAIN: Final[tuple[str, ...]] = (
    "income_band_index",
    "kyc_level",
    "consent_marketing",
    "consent_data_sharing",
)
_SIGNED_LOG: Final[frozenset[str]] = frozenset(
    c.name for c in CUSTOMER_BEHAVIOUR.columns if c.type == "float64"
)


def _log_compressed() -> tuple[str, ...]:
    behaviour = tuple(c.name for c in CUSTOMER_BEHAVIOUR.columns)
    holdings = tuple(c.name for c in CUSTOMER_HOLDINGS.columns if c.type == "int64")
    return behaviour + holdings


@dataclass(frozen=True)
class DenseEncoder:
    """Turns joined feature rows into (n, D) float32; fitted statistics standardise them."""

    product_ids: tuple[str, ...]  # catalogue in vocabulary order (index 1 first)

    @property
    def multi_hot(self) -> bool:
        return len(self.product_ids) <= MAX_MULTI_HOT_ITEMS

    def feature_names(self) -> list[str]:
        names = [f"{column}={value}" for column, values in _ONE_HOT.items() for value in values]
        names += list(_PLAIN)
        names += [f"log1p({c})" for c in _log_compressed()]
        if self.multi_hot:
            names += [f"holds={p}" for p in self.product_ids]
        names.append("has_profile")
        return names

    def raw(self, rows: pa.Table) -> np.ndarray:
        """(n, D) unstandardised features; missing values are 0 (and ``has_profile`` says so)."""
        n = rows.num_rows
        blocks: list[np.ndarray] = []
        for column, values in _ONE_HOT.items():
            got = np.asarray(rows.column(column).to_pylist(), dtype=object)
            blocks.append(np.stack([got == v for v in values], axis=1).astype(np.float32))
        for column in _PLAIN:
            blocks.append(_numeric(rows, column)[:, None])
        for column in _log_compressed():
            blocks.append(_compressed(column, _numeric(rows, column)))
        if self.multi_hot:
            index = {p: i for i, p in enumerate(self.product_ids)}
            held = np.zeros((n, len(self.product_ids)), dtype=np.float32)
            for r, products in enumerate(rows.column("held_product_ids").to_pylist()):
                for p in products or ():
                    if p in index:
                        held[r, index[p]] = 1.0
            blocks.append(held)
        has_profile = rows.column("customer_type").is_valid().to_numpy(zero_copy_only=False)
        blocks.append(has_profile.astype(np.float32)[:, None])
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def raw_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`raw` for feature rows as Python mappings (serving's online vectors), without
        building an Arrow table per call: the same matrix, value for value (a test holds it)."""
        n = len(rows)
        blocks: list[np.ndarray] = []
        for column, values in _ONE_HOT.items():
            got = [row.get(column) for row in rows]
            blocks.append(np.array([[g == v for v in values] for g in got], np.float32))
        for column in _PLAIN:
            blocks.append(_numeric_rows(rows, column)[:, None])
        for column in _log_compressed():
            blocks.append(_compressed(column, _numeric_rows(rows, column)))
        if self.multi_hot:
            index = {p: i for i, p in enumerate(self.product_ids)}
            held = np.zeros((n, len(self.product_ids)), dtype=np.float32)
            for r, row in enumerate(rows):
                for p in row.get("held_product_ids") or ():
                    if p in index:
                        held[r, index[p]] = 1.0
            blocks.append(held)
        has_profile = np.array([row.get("customer_type") is not None for row in rows], np.float32)
        blocks.append(has_profile[:, None])
        return np.concatenate(blocks, axis=1).astype(np.float32)


def _compressed(column: str, values: np.ndarray) -> np.ndarray:
    """(n, 1) log-compressed counts and amounts (signed for amounts that can be negative)."""
    if column in _SIGNED_LOG:
        return (np.sign(values) * np.log1p(np.abs(values)))[:, None]
    return np.log1p(np.maximum(values, 0.0))[:, None]


def _numeric_rows(rows: Sequence[Mapping[str, Any]], column: str) -> np.ndarray:
    """As :func:`_numeric`: float64 (booleans as 0/1, missing as 0), then float32."""
    values = [row.get(column) for row in rows]
    return np.array([0.0 if v is None else float(v) for v in values], np.float64).astype(np.float32)


def _numeric(rows: pa.Table, column: str) -> np.ndarray:
    array = rows.column(column)
    if pa.types.is_boolean(array.type):
        array = array.cast(pa.int8())
    return array.cast(pa.float64()).fill_null(0.0).to_numpy().astype(np.float32)


@dataclass(frozen=True)
class Standardiser:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardiser:
        mean = values.mean(axis=0) if len(values) else np.zeros(values.shape[1], np.float32)
        std = values.std(axis=0) if len(values) else np.ones(values.shape[1], np.float32)
        return cls(mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32))

    def apply(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)


CUSTOMER_VIEWS: Final = (CUSTOMER_PROFILE, CUSTOMER_BEHAVIOUR, CUSTOMER_HOLDINGS)
