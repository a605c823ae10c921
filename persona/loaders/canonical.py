"""Build canonical tables column by column, filling nullable columns the source lacks with nulls."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from persona import domain
from persona.loaders.errors import LoaderError
from persona.schemas import CUSTOMERS, PRODUCTS, TableSchema

#: A column (Arrow/NumPy array, list) or one scalar repeated on every row (tuple = list scalar).
ColumnValue: TypeAlias = (
    "pa.Array | pa.ChunkedArray | np.ndarray | list[Any] | tuple[Any, ...] | str | int | float"
    " | bool | datetime | None"
)


def build_table(schema: TableSchema, num_rows: int, values: Mapping[str, ColumnValue]) -> pa.Table:
    """A table of ``schema`` with ``num_rows`` rows.

    Each value is either a column (Arrow array, NumPy array or list of length ``num_rows``) or
    one scalar repeated on every row (a tuple is a list scalar, e.g. ``apps_enrolled``). A
    nullable column not given is all null; a non-nullable column not given is an error.
    """
    unknown = sorted(set(values) - set(schema.column_names))
    if unknown:
        raise LoaderError(f"{schema.name}: unknown column(s) {', '.join(unknown)}")
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for spec in schema.columns:
        if spec.name in values:
            arrays.append(_column(schema.name, spec.name, values[spec.name], spec.type, num_rows))
        elif spec.nullable:
            arrays.append(pa.nulls(num_rows, spec.type))
        else:
            raise LoaderError(f"{schema.name}: required column {spec.name!r} was not given")
    return pa.Table.from_arrays(arrays, schema=schema.arrow_schema())


def _column(
    table: str, name: str, value: ColumnValue, type_: pa.DataType, num_rows: int
) -> pa.Array | pa.ChunkedArray:
    if isinstance(value, pa.Array | pa.ChunkedArray | np.ndarray | list):
        array = value if isinstance(value, pa.Array | pa.ChunkedArray) else pa.array(value)
        if len(array) != num_rows:
            raise LoaderError(f"{table}.{name}: {len(array)} values for {num_rows} rows")
        return array.cast(type_)
    if isinstance(value, tuple):
        value = list(value)
    return pa.repeat(pa.scalar(value, type=type_), num_rows)


def unknown_customers(
    customer_ids: pa.Array | pa.ChunkedArray | np.ndarray,
    created_at: pa.Array | pa.ChunkedArray | datetime,
    *,
    apps_enrolled: ColumnValue,
    kyc_level: int = 0,
    extra: Mapping[str, ColumnValue] | None = None,
) -> pa.Table:
    """Retail customers of a non-bank source: demographics null, consents false.

    ``relationship_start`` equals ``created_at`` (the source knows no earlier relationship).
    Consents are false because nobody gave them: no marketing without consent.
    """
    values: dict[str, ColumnValue] = {
        "customer_id": customer_ids,
        "created_at": created_at,
        "relationship_start": created_at,
        "customer_type": "retail",
        "kyc_level": kyc_level,
        "consent_marketing": False,
        "consent_data_sharing": False,
        "apps_enrolled": apps_enrolled,
    }
    values.update(extra or {})
    return build_table(CUSTOMERS, len(customer_ids), values)


def other_products(product_ids: list[str], names: list[str]) -> pa.Table:
    """Catalogue items of a non-bank source: category 'other', shown in every app, no eligibility
    limits (min age 0, no income band, KYC 0), risk class 1, neutral margin weight 1.0, and not
    marketing offers (so consent rules do not hide them)."""
    return build_table(
        PRODUCTS,
        len(product_ids),
        {
            "product_id": product_ids,
            "name": names,
            "category": "other",
            "apps": domain.APPS,
            "customer_types": ("retail",),
            "min_age": 0,
            "min_kyc_level": 0,
            "risk_class": 1,
            "margin_weight": 1.0,
            "is_marketing_offer": False,
        },
    )


#: Notes every loader of a non-bank source repeats, so they are written once here.
NON_BANK_CUSTOMER_NOTE = (
    "customers: customer_type 'retail' (assumed), age/income/city/occupation/life stage/risk "
    "profile unknown (null), kyc_level 0, consents false (never given)"
)
NON_BANK_PRODUCT_NOTE = (
    "products: category 'other', offered in all four apps to retail customers, no eligibility "
    "limits, risk_class 1, margin_weight 1.0 (unknown), not marketing offers"
)
