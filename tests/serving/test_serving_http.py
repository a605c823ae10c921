"""The serving graph over real HTTP: Ray Serve, a real Redis, Feast, a registered model."""

from __future__ import annotations

import time
from typing import Any

import duckdb
import pytest
import requests

from persona.layout import DataLayout, parquet_glob
from tests.serving.conftest import KEYS, ServingStack
from tests.serving.stack_builders import customers_where

pytestmark = [pytest.mark.slow]


def recommend(stack: ServingStack, customer_id: int, app: str, **extra: Any) -> requests.Response:
    body = {"customer_id": customer_id, "app": app, **extra}
    return requests.post(
        f"{stack.url}/v1/recommendations", json=body, headers={"X-API-Key": KEYS[app]}, timeout=30
    )


def send_events(stack: ServingStack, app: str, events: list[dict[str, Any]]) -> requests.Response:
    return requests.post(
        f"{stack.url}/v1/events",
        json={"events": events},
        headers={"X-API-Key": KEYS[app]},
        timeout=30,
    )


def customers(stack: ServingStack, where: str, limit: int = 5) -> list[int]:
    found = customers_where(stack.data_dir, where, limit)
    assert found, f"no customer matches {where}"
    return found


def test_every_app_gets_ranked_items_with_reason_codes(serving_stack: ServingStack) -> None:
    retail = customers(
        serving_stack, "customer_type = 'retail' AND consent_marketing AND kyc_level >= 2"
    )
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


def marketing_products(stack: ServingStack) -> set[str]:
    glob = parquet_glob(DataLayout(stack.data_dir).clean_table("products"))
    with duckdb.connect() as con:
        rows = con.sql(
            f"SELECT product_id FROM read_parquet('{glob}') WHERE is_marketing_offer"
        ).fetchall()
    return {r[0] for r in rows}


def test_no_marketing_offer_reaches_a_customer_without_consent(serving_stack: ServingStack) -> None:
    marketing = marketing_products(serving_stack)
    refused = 0
    for customer_id in customers(
        serving_stack, "NOT consent_marketing AND customer_type = 'retail'", 15
    ):
        for app in ("rib", "imobile"):
            body = recommend(serving_stack, customer_id, app, explain=True, k=10).json()
            assert not {i["product_id"] for i in body["items"]} & marketing, body
            refused += sum(r["rule"] == "no_marketing_consent" for r in body["explain"]["removed"])
    assert refused > 0  # the rule actually had offers to refuse


def test_a_frequency_cap_reached_in_one_app_holds_in_another(serving_stack: ServingStack) -> None:
    customer_id = customers(
        serving_stack, "customer_type = 'retail' AND consent_marketing AND kyc_level >= 2", 40
    )[-1]
    first = recommend(serving_stack, customer_id, "rib", k=10).json()
    shown = [i["product_id"] for i in first["items"]]
    assert shown, first
    target = shown[0]
    impressions = [
        {
            "customer_id": customer_id,
            "app": "rib",
            "event_type": "impression",
            "product_id": target,
            "request_id": first["request_id"],
        }
        for _ in range(3)  # rules.yaml: max 3 impressions per product per day
    ]
    ack = send_events(serving_stack, "rib", impressions)
    assert ack.status_code == 200 and ack.json()["online_applied"], ack.text
    after = recommend(serving_stack, customer_id, "imobile", k=10, explain=True).json()
    assert target not in [i["product_id"] for i in after["items"]]
    rules = {r["product_id"]: r["rule"] for r in after["explain"]["removed"]}
    assert rules.get(target) == "frequency_cap_product_day", after["explain"]["removed"]


def test_a_click_changes_the_next_responses_features(serving_stack: ServingStack) -> None:
    customer_id = customers(serving_stack, "customer_type = 'retail' AND consent_marketing", 60)[-1]
    before = recommend(serving_stack, customer_id, "rib", explain=True).json()  # now cached
    product = before["explain"]["ranked"][-1]
    ack = send_events(
        serving_stack,
        "rib",
        [
            {
                "customer_id": customer_id,
                "app": "rib",
                "event_type": "click",
                "product_id": product,
            },
            {
                "customer_id": customer_id,
                "app": "rib",
                "event_type": "dismiss",
                "product_id": product,
            },
        ],
    )
    assert ack.status_code == 200, ack.text
    after = recommend(serving_stack, customer_id, "rib", explain=True).json()
    assert after["explain"]["sequence"][-2:] == [f"click:{product}", f"dismiss:{product}"], (
        before["explain"]["sequence"],
        after["explain"]["sequence"],
    )
    removed = {r["product_id"]: r["rule"] for r in after["explain"]["removed"]}
    assert removed.get(product) in (
        "dismissal_cooldown",
        "already_held",
        "suitability",
        "no_marketing_consent",
        "min_income",
        "min_age",
        "kyc_level",
        "customer_type",
        "not_offered_in_app",
    )
    assert product not in [i["product_id"] for i in after["items"]]


def test_variants_are_sticky_and_served_by_their_arm(serving_stack: ServingStack) -> None:
    seen: dict[int, set[str]] = {}
    arms: dict[str, set[str]] = {}
    for customer_id in customers(serving_stack, "customer_type = 'retail'", 40):
        for _ in range(2):
            body = recommend(serving_stack, customer_id, "rib").json()
            seen.setdefault(customer_id, set()).add(body["variant"])
            arms.setdefault(body["variant"], set()).add(body["model_version"])
            assert body["experiment"] == "ranker_vs_priors"
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {"control", "transformer"} <= set(arms), arms
    assert arms["transformer"] == {"persona-ranker@v1"}
    assert all(m.endswith("_prior") for m in arms["control"]), arms


@pytest.mark.parametrize(
    ("body", "key_app", "status", "reason"),
    [
        ({"customer_id": 1, "app": "atm"}, "rib", 422, "app"),
        ({"app": "rib"}, "rib", 422, "customer_id"),
        ({"customer_id": 1, "app": "rib", "k": 0}, "rib", 422, "k"),
        ({"customer_id": 1, "app": "rib", "k": 51}, "rib", 422, "k"),
        ({"customer_id": 1, "app": "imobile", "k": 15}, "imobile", 422, "at most 10"),
        ({"customer_id": 1, "app": "rib", "colour": "red"}, "rib", 422, "colour"),
        ({"customer_id": -4, "app": "rib"}, "rib", 422, "customer_id"),
        ({"customer_id": 1, "app": "rib"}, "cib", 403, "belongs to app 'cib'"),
        ({"customer_id": 1, "app": "rib"}, None, 401, "X-API-Key"),
        ({"customer_id": 1, "app": "rib"}, "wrong", 401, "invalid API key"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_reason(
    serving_stack: ServingStack, body: dict[str, Any], key_app: str | None, status: int, reason: str
) -> None:
    headers = {} if key_app is None else {"X-API-Key": KEYS.get(key_app, "not-a-key")}
    answer = requests.post(
        f"{serving_stack.url}/v1/recommendations", json=body, headers=headers, timeout=30
    )
    assert answer.status_code == status, answer.text
    assert reason in answer.text


def test_bad_events_are_refused_with_a_reason(serving_stack: ServingStack) -> None:
    cases = [
        (
            [{"customer_id": 1, "app": "rib", "event_type": "click", "product_id": "card_unicorn"}],
            "card_unicorn",
        ),
        ([{"customer_id": 1, "app": "rib", "event_type": "click"}], "product_id is required"),
        (
            [
                {
                    "customer_id": 1,
                    "app": "rib",
                    "event_type": "teleport",
                    "product_id": "card_debit",
                }
            ],
            "event_type",
        ),
        (
            [
                {
                    "customer_id": 1,
                    "app": "rib",
                    "event_type": "login",
                    "timestamp": "2099-01-01T00:00:00Z",
                }
            ],
            "future",
        ),
        ([{"customer_id": 1, "app": "rib", "event_type": "login"}] * 1001, "events"),
    ]
    for events, reason in cases:
        answer = send_events(serving_stack, "rib", events)
        assert answer.status_code == 422, answer.text
        assert reason in answer.text, answer.text


def test_accepted_events_reach_the_parquet_event_log_with_what_was_served(
    serving_stack: ServingStack,
) -> None:
    from ray import serve

    customer_id = customers(serving_stack, "customer_type = 'retail' AND consent_marketing", 80)[-1]
    served = recommend(serving_stack, customer_id, "rib").json()
    assert served["items"], served
    events = [
        {
            "event_id": f"log-test-{i}",
            "customer_id": customer_id,
            "app": "rib",
            "event_type": "impression",
            "product_id": item["product_id"],
            "request_id": served["request_id"],
        }
        for i, item in enumerate(served["items"])
    ]
    assert send_events(serving_stack, "rib", events).status_code == 200
    handle = serve.get_deployment_handle("EventsStage", app_name="persona")
    handle.flush.remote().result(timeout_s=30)
    glob = str(serving_stack.args.live_event_log / "**" / "*.parquet")
    with duckdb.connect() as con:
        rows = con.sql(
            f"SELECT event_id, variant, model_version, propensity, position FROM read_parquet('{glob}') "
            "WHERE event_id LIKE 'log-test-%' ORDER BY event_id"
        ).fetchall()
    assert len(rows) == len(events)
    for _event_id, variant, model_version, propensity, position in rows:
        assert variant == served["variant"] and model_version == served["model_version"], rows
        assert propensity is not None and position is not None, rows


def test_audit_log_is_kept_per_request_and_per_app(serving_stack: ServingStack) -> None:
    customer_id = customers(serving_stack, "NOT consent_marketing AND customer_type = 'retail'", 3)[
        0
    ]
    served = recommend(serving_stack, customer_id, "rib").json()
    own = requests.get(
        f"{serving_stack.url}/v1/audit/{served['request_id']}",
        headers={"X-API-Key": KEYS["rib"]},
        timeout=30,
    )
    assert own.status_code == 200, own.text
    record = own.json()
    assert record["rules_version"] == served["rules_version"]
    assert record["removed"] and all(
        {"product_id", "rule", "rules_version"} <= r.keys() for r in record["removed"]
    )
    other = requests.get(
        f"{serving_stack.url}/v1/audit/{served['request_id']}",
        headers={"X-API-Key": KEYS["nli"]},
        timeout=30,
    )
    assert other.status_code == 404


def test_rules_reload_changes_behaviour_without_restart(serving_stack: ServingStack) -> None:
    import yaml

    customer_id = customers(serving_stack, "customer_type = 'retail' AND consent_marketing", 20)[-1]
    before = recommend(serving_stack, customer_id, "rib").json()
    assert before["items"], before
    blocked = before["items"][0]["product_id"]
    path = serving_stack.args.rules_file
    original = path.read_text()
    rules = yaml.safe_load(original)
    rules["version"] = "test-reload-2"
    rules["blocked_products"] = [blocked]
    try:
        path.write_text(yaml.safe_dump(rules))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = recommend(serving_stack, customer_id, "rib", explain=True).json()
            if after["rules_version"] == "test-reload-2":
                break
            time.sleep(0.3)
        assert after["rules_version"] == "test-reload-2"
        assert blocked not in [i["product_id"] for i in after["items"]]
        assert {"product_id": blocked, "rule": "blocked_product"}.items() <= next(
            r for r in after["explain"]["removed"] if r["product_id"] == blocked
        ).items()
        path.write_text("version: [broken")  # a broken edit is refused; the last good version stays
        time.sleep(1.0)
        assert (
            recommend(serving_stack, customer_id, "rib").json()["rules_version"] == "test-reload-2"
        )
    finally:
        path.write_text(original)


def test_reconfigure_switches_model_versions_without_restart(serving_stack: ServingStack) -> None:
    from ray import serve

    from tests.serving.conftest import register_model
    from training.examples import ExampleSet

    customer_id = next(
        c
        for c in customers(serving_stack, "customer_type = 'retail'", 60)
        if recommend(serving_stack, c, "rib").json()["variant"] == "transformer"
    )
    register_model(
        serving_stack.data_dir,
        ExampleSet(serving_stack.data_dir / "examples"),
        serving_stack.registry,
        seed=1,
    )
    holder = "Ingress" if serving_stack.args.placement == "colocated" else "RankingStage"
    handle = serve.get_deployment_handle(holder, app_name="persona")
    handle.reconfigure.remote({"model_name": "persona-ranker", "reload": 1}).result(timeout_s=60)
    body = recommend(serving_stack, customer_id, "rib").json()
    assert body["model_version"] == "persona-ranker@v2", body


def test_metrics_show_requests_stages_and_fallbacks(serving_stack: ServingStack) -> None:
    text = requests.get(f"{serving_stack.url}/metrics", timeout=30).text
    for name in (
        "persona_requests_total",
        "persona_stage_seconds_bucket",
        "persona_feature_cache_total",
        "persona_request_seconds_bucket",
        "persona_rule_removals_total",
    ):
        assert name in text, name
    assert 'stage="ranking"' in text and 'stage="features"' in text


def test_every_placement_serves_the_same_decisions(serving_stack: ServingStack) -> None:
    """The fused and graph placements (as extra Serve apps) and the single-process server
    answer the same customers with the same ranked items as the colocated default (requests
    with an exploration slot excepted: those are random by design)."""
    import subprocess

    from ray import serve

    from serving.app import build_app
    from serving.single_process import single_process_command
    from tests.serving.conftest import free_port

    args = serving_stack.args
    for placement in ("fused", "graph"):
        serve.run(
            build_app(args.model_copy(update={"placement": placement})),
            name=f"persona-{placement}",
            route_prefix=f"/{placement}",
            blocking=False,
        )
    port = free_port()
    server = subprocess.Popen(single_process_command(args, "127.0.0.1", port))
    bases = {
        "fused": f"{serving_stack.url}/fused",
        "graph": f"{serving_stack.url}/graph",
        "local": f"http://127.0.0.1:{port}",
    }
    try:
        for placement, base in bases.items():
            deadline = time.monotonic() + 180
            while True:
                try:
                    ready = requests.get(f"{base}/readyz", timeout=5)
                    if ready.status_code == 200:
                        assert ready.json()["placement"] == placement
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, f"{placement} never became ready"
                time.sleep(0.5)
        compared = dict.fromkeys(bases, 0)
        for customer_id in customers(serving_stack, "customer_type = 'retail'", 12):
            reference = recommend(serving_stack, customer_id, "rib").json()
            for placement, base in bases.items():
                other = requests.post(
                    f"{base}/v1/recommendations",
                    json={"customer_id": customer_id, "app": "rib"},
                    headers={"X-API-Key": KEYS["rib"]},
                    timeout=30,
                ).json()
                assert (other["variant"], other["model_version"]) == (
                    reference["variant"],
                    reference["model_version"],
                ), (placement, other)
                explored = any(
                    "exploration_slot" in i["reasons"]
                    for i in (*other["items"], *reference["items"])
                )
                if not explored:
                    assert [i["product_id"] for i in other["items"]] == [
                        i["product_id"] for i in reference["items"]
                    ], (placement, customer_id)
                    compared[placement] += 1
        assert min(compared.values()) >= 3, compared
    finally:
        server.terminate()
        server.wait(timeout=30)
        for placement in ("fused", "graph"):
            serve.delete(f"persona-{placement}")


def test_priors_are_shares_and_co_interest_never_points_at_itself(
    serving_stack: ServingStack,
) -> None:
    from serving.priors import Priors

    priors = Priors.load(serving_stack.args.serving_dir)
    assert sum(priors.global_scores.values()) == pytest.approx(1.0)
    assert priors.segment_scores
    for scores in priors.segment_scores.values():
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-6)
    for product, neighbours in priors.co_interest.items():
        assert product not in [n for n, _ in neighbours]
        strengths = [s for _, s in neighbours]
        assert strengths == sorted(strengths, reverse=True) and all(0 < s <= 1 for s in strengths)


def test_redis_down_gives_degraded_answers_not_errors(serving_stack: ServingStack) -> None:
    """Last in the module: stops the test-owned Redis."""
    marketing = marketing_products(serving_stack)
    ids = customers(serving_stack, "customer_type = 'retail' AND consent_marketing", 200)[-10:]
    serving_stack.redis.stop()
    for customer_id in ids:
        answer = recommend(serving_stack, customer_id, "rib")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["degraded"] is True, body
        assert any(
            r.startswith(("features_unavailable", "contact_policy_unavailable", "pipeline_"))
            for r in body["degraded_reasons"]
        ), body
        assert not {i["product_id"] for i in body["items"]} & marketing
    ack = send_events(
        serving_stack,
        "rib",
        [{"customer_id": ids[0], "app": "rib", "event_type": "click", "product_id": "card_debit"}],
    )
    assert ack.status_code == 200 and ack.json()["durable"] and not ack.json()["online_applied"], (
        ack.text
    )
    text = requests.get(f"{serving_stack.url}/metrics", timeout=30).text
    assert "persona_fallbacks_total" in text
