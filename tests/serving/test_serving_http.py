"""The serving graph over real HTTP: Ray Serve, a real Redis, Feast, a registered model."""

from __future__ import annotations

import time
from typing import Any

import duckdb
import pytest
import requests

from persona.layout import DataLayout, parquet_glob
from tests.serving.conftest import KEYS, ServingStack

pytestmark = [pytest.mark.slow]


def recommend(stack: ServingStack, customer_id: int, app: str, **extra: Any) -> requests.Response:
    body = {"customer_id": customer_id, "app": app, **extra}
    return requests.post(
        f"{stack.url}/v1/recommendations", json=body, headers={"X-API-Key": KEYS[app]}, timeout=30
    )


def send_events(stack: ServingStack, app: str, events: list[dict[str, Any]]) -> requests.Response:
    return requests.post(
        f"{stack.url}/v1/events", json={"events": events}, headers={"X-API-Key": KEYS[app]}, timeout=30
    )


def customers(stack: ServingStack, where: str, limit: int = 5) -> list[int]:
    glob = parquet_glob(DataLayout(stack.data_dir).clean_table("customers"))
    with duckdb.connect() as con:
        rows = con.sql(
            f"SELECT customer_id FROM read_parquet('{glob}') WHERE {where} "
            f"ORDER BY customer_id LIMIT {limit}"
        ).fetchall()
    assert rows, f"no customer matches {where}"
    return [int(r[0]) for r in rows]


def test_every_app_gets_ranked_items_with_reason_codes(serving_stack: ServingStack) -> None:
    retail = customers(serving_stack, "customer_type = 'retail' AND consent_marketing AND kyc_level >= 2")
    corporate = customers(serving_stack, "customer_type = 'corporate'")
    for app in ("rib", "nli", "imobile", "cib"):
        ids = corporate if app == "cib" else retail
        got = [recommend(serving_stack, c, app) for c in ids]
        assert all(r.status_code == 200 for r in got), [r.text for r in got]
        bodies = [r.json() for r in got]
        with_items = [b for b in bodies if b["items"]]
        assert with_items, f"{app}: no customer got any item: {bodies}"
        for body in bodies:
            assert body["degraded"] is False, body
            assert body["feature_service"] == "ranker_v1"
            ranks = [i["rank"] for i in body["items"]]
            assert ranks == list(range(1, len(ranks) + 1))
            for item in body["items"]:
                assert any(r.startswith("eligible:") for r in item["reasons"]), item
                assert any(r.startswith("ranked:") for r in item["reasons"]), item
                assert 0 < item["propensity"] <= 1
