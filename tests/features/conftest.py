"""A small crafted bank, validated and turned into offline features, shared by feature tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from persona import domain
from persona.features.build import build_features
from persona.layout import DataLayout, write_table
from persona.schemas import CUSTOMERS, EVENTS, HOLDINGS, PRODUCTS
from persona.validation import validate_dataset

START = datetime(2026, 3, 1, tzinfo=UTC)
N_CUSTOMERS = 12
N_DAYS = 120
PRODUCTS_BY_CATEGORY = {c: [f"{c}_a", f"{c}_b"] for c in domain.BANK_CATEGORIES}
PRODUCT_IDS = [p for ids in PRODUCTS_BY_CATEGORY.values() for p in ids]
#: Validation runs "now" after the crafted window so nothing is in the future.
VALIDATION_NOW = START + timedelta(days=N_DAYS + 30)


def crafted_tables(seed: int = 11) -> dict[str, pa.Table]:
    """Random but seeded events over 120 days, plus two hand-placed edge cases for customer 1."""
    rng = np.random.default_rng(seed)
    customers = pa.table(
        {
            "customer_id": list(range(1, N_CUSTOMERS + 1)),
            "created_at": [START - timedelta(days=400)] * N_CUSTOMERS,
            "customer_type": ["retail"] * N_CUSTOMERS,
            "age_band": ["25-34"] * N_CUSTOMERS,
            "income_band": ["middle"] * N_CUSTOMERS,
            "city_tier": ["metro"] * N_CUSTOMERS,
            "occupation": ["salaried"] * N_CUSTOMERS,
            "life_stage": ["family"] * N_CUSTOMERS,
            "risk_profile": ["balanced"] * N_CUSTOMERS,
            "kyc_level": [2] * N_CUSTOMERS,
            "consent_marketing": [True] * N_CUSTOMERS,
            "consent_data_sharing": [False] * N_CUSTOMERS,
            "apps_enrolled": [["rib", "imobile"]] * N_CUSTOMERS,
            "relationship_start": [START - timedelta(days=500)] * N_CUSTOMERS,
        }
    )
    products = pa.table(
        {
            "product_id": PRODUCT_IDS,
            "category": [p.rsplit("_", 1)[0] for p in PRODUCT_IDS],
            "name": [p.replace("_", " ") for p in PRODUCT_IDS],
            "apps": [list(domain.APPS)] * len(PRODUCT_IDS),
            "customer_types": [["retail"]] * len(PRODUCT_IDS),
            "min_age": [18] * len(PRODUCT_IDS),
            "min_income_band": [None] * len(PRODUCT_IDS),
            "min_kyc_level": [1] * len(PRODUCT_IDS),
            "risk_class": [2] * len(PRODUCT_IDS),
            "margin_weight": [1.0] * len(PRODUCT_IDS),
            "is_marketing_offer": [True] * len(PRODUCT_IDS),
        }
    )
    n = 1_500
    kinds = rng.choice(["login", "txn", "impression", "click", "apply", "purchase", "dismiss"], n)
    seconds = rng.integers(0, N_DAYS * 86_400, n)
    rows = {
        "event_id": [f"e{i}" for i in range(n)],
        "customer_id": rng.integers(1, N_CUSTOMERS + 1, n).tolist(),
        "product_id": [
            None if k in ("login", "txn") else PRODUCT_IDS[int(rng.integers(len(PRODUCT_IDS)))]
            for k in kinds
        ],
        "app": rng.choice(list(domain.APPS), n).tolist(),
        "event_type": kinds.tolist(),
        "event_timestamp": [START + timedelta(seconds=int(s)) for s in seconds],
        "request_id": [None] * n,
        "position": [1 if k == "impression" else None for k in kinds],
        "amount": [float(rng.normal(0, 500)) if k == "txn" else None for k in kinds],
        "propensity": [None] * n,
        "model_version": [None] * n,
        "variant": [None] * n,
        "device": ["web"] * n,
    }
    # Edge cases around a day boundary: 23:59:59 on day 9 counts for the day-10 snapshot,
    # 00:00:01 on day 10 does not.
    day10 = START + timedelta(days=10)
    for event_id, ts in (
        ("edge-before", day10 - timedelta(seconds=1)),
        ("edge-after", day10 + timedelta(seconds=1)),
    ):
        for column, value in (
            ("event_id", event_id),
            ("customer_id", 1),
            ("product_id", "card_a"),
            ("app", "rib"),
            ("event_type", "click"),
            ("event_timestamp", ts),
            ("request_id", None),
            ("position", None),
            ("amount", None),
            ("propensity", None),
            ("model_version", None),
            ("variant", None),
            ("device", "web"),
        ):
            rows[column].append(value)
    events = pa.table(rows)
    holdings = pa.table(
        {
            "customer_id": [1, 1, 2, 3],
            "product_id": ["loan_a", "card_b", "deposit_a", "card_a"],
            "opened_at": [
                START - timedelta(days=30),
                START + timedelta(days=20),
                START + timedelta(days=5),
                START + timedelta(days=50),
            ],
            "closed_at": [START + timedelta(days=60), None, START + timedelta(days=35), None],
        }
    )
    return {"customers": customers, "products": products, "events": events, "holdings": holdings}


def write_raw(root: Path, tables: dict[str, pa.Table]) -> None:
    layout = DataLayout(root)
    schemas = {"customers": CUSTOMERS, "products": PRODUCTS, "events": EVENTS, "holdings": HOLDINGS}
    for name, table in tables.items():
        write_table(layout.raw_table(name), table, schemas[name])


@pytest.fixture(scope="session")
def crafted_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw → validated → offline features, built once for the feature tests."""
    root = tmp_path_factory.mktemp("crafted_bank")
    write_raw(root, crafted_tables())
    report = validate_dataset(root, now=VALIDATION_NOW, progress=False)
    assert report.passed, report.model_dump_json(indent=1)
    build_features(root, progress=False)
    return root
