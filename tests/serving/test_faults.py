"""Faults against the real stack under load: Ray Serve (two ingress replicas) over HTTP, a
test-owned Redis, Feast, a registered model. Each test breaks one thing while client threads
keep calling, and records what every request got (tests/figures.py prints the figures)."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import requests
import yaml

from serving.catalogue import Catalogue
from serving.settings import Budgets, ServingArgs
from tests.figures import record_figure
from tests.serving.conftest import KEYS, RedisServer, free_port
from tests.serving.load import LoadLoop, Outcome, timed_post
from tests.serving.stack_builders import build_served_bank, customers_where
from training.registry import ModelRegistry

pytestmark = [pytest.mark.slow]

#: cib's recommendation bucket in this stack: small, so a test can drain it.
CIB_LIMIT = {"per_second": 2, "burst": 5}
BUDGETS = Budgets(features_ms=150, ranking_ms=800, total_ms=1000)
#: Two ingress replicas, so one can be killed while the other answers.
INGRESS = {"num_replicas": 2}


@dataclass
class FaultStack:
    url: str
    args: ServingArgs
    redis: RedisServer
    data_dir: Path

    def customers(self, where: str, limit: int = 40) -> list[int]:
        found = customers_where(self.data_dir, where, limit)
        assert found, where
        return found

    def recommend(self, customer_id: int, app: str = "rib") -> requests.Response:
        return requests.post(
            f"{self.url}/v1/recommendations",
            json={"customer_id": customer_id, "app": app},
            headers={"X-API-Key": KEYS[app]},
            timeout=30,
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    import ray

    from serving.runner import start_serving, stop_serving

    root = tmp_path_factory.mktemp("fault_bank")
    server = RedisServer(free_port(), root)
    server.start()
    args = build_served_bank(root, server).model_copy(update={"budgets": BUDGETS})
    apps = yaml.safe_load(args.apps_file.read_text())
    apps["apps"]["cib"]["rate_limit"]["recommendations"] = CIB_LIMIT
    args.apps_file.write_text(yaml.safe_dump(apps))
    if not ray.is_initialized():
        ray.init(include_dashboard=False, num_cpus=3, configure_logging=False, log_to_driver=False)
    url = start_serving(args, port=free_port(), quiet=True, deployment_options={"Ingress": INGRESS})
    yield FaultStack(url, args, server, root)
    stop_serving()
    server.stop()


def get(stack: FaultStack, path: str, app: str | None) -> requests.Response:
    headers = {"X-API-Key": KEYS[app]} if app else {}
    return requests.get(f"{stack.url}{path}", headers=headers, timeout=30)


def test_rate_limits_are_per_app_shared_by_replicas_and_answer_429_with_retry_after(
    stack: FaultStack,
) -> None:
    corporate = stack.customers("customer_type = 'corporate'", 5)
    retail = stack.customers("customer_type = 'retail'", 5)
    time.sleep(CIB_LIMIT["burst"] / CIB_LIMIT["per_second"])  # a full bucket to start
    started = time.monotonic()
    answers = [stack.recommend(corporate[i % len(corporate)], "cib") for i in range(20)]
    elapsed = time.monotonic() - started
    accepted = [a for a in answers if a.status_code == 200]
    throttled = [a for a in answers if a.status_code == 429]
    assert len(accepted) + len(throttled) == len(answers), [a.status_code for a in answers]
    # One bucket for both replicas: per-replica buckets would have let 2 x burst through.
    allowed = CIB_LIMIT["burst"] + CIB_LIMIT["per_second"] * elapsed
    assert CIB_LIMIT["burst"] <= len(accepted) <= allowed + 1, (len(accepted), elapsed)
    refusal = throttled[0]
    assert int(refusal.headers["Retry-After"]) >= 1
    assert "rate limit of app 'cib'" in refusal.json()["error"]
    # Another app's bucket is untouched.
    assert all(stack.recommend(c, "rib").status_code == 200 for c in retail)
    time.sleep(int(refusal.headers["Retry-After"]))
    assert stack.recommend(corporate[0], "cib").status_code == 200
    record_figure(
        "security: cib limited to 2/s, burst 5, two replicas",
        sent=len(answers),
        accepted=len(accepted),
        refused_429=len(throttled),
        seconds=round(elapsed, 2),
        retry_after=refusal.headers["Retry-After"],
    )


def test_an_app_cannot_read_or_act_for_another_app(stack: FaultStack) -> None:
    retail = stack.customers("customer_type = 'retail'", 3)[0]
    served = stack.recommend(retail, "rib").json()
    checked = 0
    for own in KEYS:
        config = get(stack, f"/v1/apps/{own}/config", own)
        assert config.status_code == 200, config.text
        assert "api_key_sha256" not in config.text and "salt" not in config.text
        assert get(stack, f"/v1/apps/{own}/rules", own).json()["rules_version"]
        for other in set(KEYS) - {own}:
            for path in (f"/v1/apps/{other}/config", f"/v1/apps/{other}/rules"):
                refused = get(stack, path, own)
                assert refused.status_code == 403, (own, path, refused.text)
                assert f"belongs to app {own!r}" in refused.json()["error"]
            acting = requests.post(
                f"{stack.url}/v1/recommendations",
                json={"customer_id": retail, "app": other},
                headers={"X-API-Key": KEYS[own]},
                timeout=30,
            )
            assert acting.status_code == 403, acting.text
            checked += 3
        if own != "rib":
            assert get(stack, f"/v1/audit/{served['request_id']}", own).status_code == 404
            checked += 1
    assert get(stack, f"/v1/audit/{served['request_id']}", "rib").status_code == 200
    for path in ("/v1/apps/rib/config", "/v1/apps/rib/rules", f"/v1/audit/{served['request_id']}"):
        assert get(stack, path, None).status_code == 401
    record_figure("security: cross-app reads and writes refused", attempts=checked, allowed=0)


def test_logs_and_metrics_name_customers_only_by_pseudonym(
    stack: FaultStack, tmp_path: Path
) -> None:
    """The single-process server (the same service as a replica) logging at INFO to a file:
    requests, refusals, events and a Redis hang; no raw customer id or feature value in any
    line, and the access log follows each customer by a stable pseudonym."""
    import re

    from persona.pseudonym import pseudonymiser_for
    from serving.single_process import single_process_command

    ids = [c for c in stack.customers("customer_type = 'retail'", 200) if c > 30][-12:]
    port = free_port()
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as sink:
        server = subprocess.Popen(
            single_process_command(stack.args, "127.0.0.1", port, log_level="DEBUG"),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: ready(base, server), 120, "the single-process server")
            for customer_id in ids:
                for app in ("rib", "imobile"):
                    body = {"customer_id": customer_id, "app": app, "explain": True}
                    requests.post(
                        f"{base}/v1/recommendations",
                        json=body,
                        headers={"X-API-Key": KEYS[app]},
                        timeout=30,
                    )
            requests.post(  # refused: another app's key
                f"{base}/v1/recommendations",
                json={"customer_id": ids[0], "app": "nli"},
                headers={"X-API-Key": KEYS["rib"]},
                timeout=30,
            )
            stack.redis.pause()
            try:
                requests.post(
                    f"{base}/v1/recommendations",
                    json={"customer_id": ids[1], "app": "rib"},
                    headers={"X-API-Key": KEYS["rib"]},
                    timeout=30,
                )
            finally:
                stack.redis.resume()
            metrics = requests.get(f"{base}/metrics", timeout=30).text
        finally:
            server.terminate()
            server.wait(timeout=60)
    lines = [
        re.sub(r"^\S+ \S+ ", "", line)  # the timestamp
        for line in log_file.read_text().splitlines()
    ]
    pseudonym = pseudonymiser_for(stack.data_dir)
    access = [line for line in lines if "persona.access" in line]
    assert len(access) >= 2 * len(ids), len(access)
    for customer_id in ids:
        raw = re.compile(rf"(?<![\w.]){customer_id}(?![\w.])")
        assert not [line for line in lines if raw.search(line)], customer_id
        assert not raw.search(metrics), customer_id
        assert sum(f"customer={pseudonym(customer_id)}" in line for line in access) >= 2
    glob = str(stack.data_dir / "features" / "customer_behaviour" / "**" / "*.parquet")
    with duckdb.connect() as con:
        amounts = con.sql(
            f"SELECT * EXCLUDE (customer_id, event_timestamp) FROM read_parquet('{glob}') "
            f"WHERE customer_id IN ({','.join(map(str, ids))})"
        ).fetchall()
    distinctive = {
        f"{v:.2f}" for row in amounts for v in row if isinstance(v, float) and abs(v) >= 100
    }
    text = "\n".join(lines)
    assert distinctive and not [v for v in distinctive if v in text]
    record_figure(
        "privacy: server log at DEBUG; requests, a refusal and a Redis hang",
        requests=2 * len(ids) + 2,
        log_lines=len(lines),
        access_lines=len(access),
        raw_customer_ids_found=0,
        feature_values_checked=len(distinctive),
    )


def ready(base: str, server: subprocess.Popen[bytes]) -> bool:
    assert server.poll() is None, f"the server exited with {server.returncode}"
    try:
        return requests.get(f"{base}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def recommendation_call(stack: FaultStack, ids: list[int], retries: int = 0):  # type: ignore[no-untyped-def]
    """A client call for LoadLoop: a random customer in rib; ``retries`` more tries on no
    answer or a 5xx (the apps' client policy for this idempotent read)."""

    def call(session: requests.Session, index: int, sequence: int) -> Outcome:
        rng = random.Random(index * 1_000_003 + sequence)
        body = {"customer_id": rng.choice(ids), "app": "rib"}
        tries = 0
        while True:
            tries += 1
            status, payload, latency = timed_post(
                session, f"{stack.url}/v1/recommendations", body, KEYS["rib"]
            )
            if (status == 0 or status >= 500) and tries <= retries:
                continue
            break
        payload = payload or {}
        return Outcome(
            at=time.monotonic(),
            status=status,
            latency_s=latency,
            degraded=bool(payload.get("degraded")),
            reasons=tuple(payload.get("degraded_reasons") or ()),
            payload={"tries": tries},
        )

    return call


def wait_for(predicate, timeout_s: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` held (polled every 50 ms); fails after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def healthy(stack: FaultStack, customer_id: int) -> bool:
    answer = stack.recommend(customer_id)
    return answer.status_code == 200 and not answer.json()["degraded"]


def test_redis_outage_under_load_degrades_without_errors_and_recovers_without_restart(
    stack: FaultStack,
) -> None:
    ids = stack.customers("customer_type = 'retail'", 60)
    wait_for(lambda: healthy(stack, ids[0]), 30, "healthy before the outage")
    with LoadLoop(recommendation_call(stack, ids), clients=4) as load:
        time.sleep(2.0)
        stack.redis.snapshot()
        down_at = time.monotonic()
        stack.redis.stop()
        time.sleep(4.0)
        back_at = time.monotonic()
        stack.redis.start()
        recovery_s = wait_for(lambda: healthy(stack, ids[-1]), 30, "full service after Redis")
        time.sleep(2.0)
        end = time.monotonic()
    outcomes = load.snapshot()
    statuses = Counter(o.status for o in outcomes)
    assert set(statuses) == {200}, statuses  # no 5xx, no dropped connection, before/during/after
    during = load.between(down_at + 0.2, back_at)
    assert len(during) >= 8, len(during)
    assert all(o.degraded for o in during), [o.reasons for o in during if not o.degraded]
    recovered = load.between(end - 1.0, end)
    assert recovered and not any(o.degraded for o in recovered), [o.reasons for o in recovered]
    record_figure(
        "fault: Redis stopped for 4 s under 4 clients",
        requests=len(outcomes),
        during_outage=len(during),
        degraded_during_outage=f"{sum(o.degraded for o in during) / len(during):.0%}",
        non_200=sum(n for s, n in statuses.items() if s != 200),
        p99_ms_during=round(1e3 * sorted(o.latency_s for o in during)[int(0.99 * len(during))]),
        full_service_s_after_restart=round(recovery_s, 2),
    )


def test_events_flooded_during_a_redis_outage_are_all_in_the_event_log(stack: FaultStack) -> None:
    from ray import serve

    ids = stack.customers("customer_type = 'retail'", 50)
    products = Catalogue.from_data_dir(stack.data_dir).ids()[:5]
    per_batch = 250

    def flood(session: requests.Session, index: int, sequence: int) -> Outcome:
        prefix = f"flood-{index}-{sequence}"
        events = [
            {
                "event_id": f"{prefix}-{i}",
                "customer_id": ids[(sequence + i) % len(ids)],
                "app": "rib",
                "event_type": "impression",
                "product_id": products[i % len(products)],
            }
            for i in range(per_batch)
        ]
        status, _, latency = timed_post(
            session, f"{stack.url}/v1/events", {"events": events}, KEYS["rib"], timeout_s=30
        )
        acked = [e["event_id"] for e in events] if status == 200 else []
        return Outcome(time.monotonic(), status, latency, payload=acked)

    stack.redis.snapshot()
    stack.redis.stop()
    try:
        with LoadLoop(flood, clients=4) as load:
            time.sleep(4.0)
    finally:
        stack.redis.start()
    outcomes = load.snapshot()
    acked = {event_id for o in outcomes for event_id in o.payload}
    statuses = Counter(o.status for o in outcomes)
    assert statuses[200] == len(outcomes), (statuses, [o.payload for o in outcomes[:1]])
    assert len(acked) >= 2_000, len(acked)
    serve.get_deployment_handle("EventsStage", app_name="persona").flush.remote().result(
        timeout_s=120
    )
    glob = str(stack.args.live_event_log / "**" / "*.parquet")
    with duckdb.connect() as con:
        [(stored, distinct)] = con.sql(
            f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{glob}') "
            "WHERE event_id LIKE 'flood-%'"
        ).fetchall()
    assert stored == distinct == len(acked), (stored, distinct, len(acked))
    record_figure(
        "fault: event flood while Redis is down (4 s, 4 clients, 250 a batch)",
        batches=len(outcomes),
        events_acked=len(acked),
        events_in_log=stored,
        duplicates=stored - distinct,
        non_200=len(outcomes) - statuses[200],
    )


def test_a_killed_ingress_replica_loses_no_request(stack: FaultStack) -> None:
    import ray
    from ray import serve

    ids = stack.customers("customer_type = 'retail'", 60)
    replicas = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if "#Ingress#" in actor["name"]
    ]
    assert len(replicas) == 2, replicas
    with LoadLoop(recommendation_call(stack, ids, retries=2), clients=4) as load:
        time.sleep(1.5)
        victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
        killed_at = time.monotonic()
        ray.kill(victim, no_restart=True)
        time.sleep(4.0)
    outcomes = load.snapshot()
    statuses = Counter(o.status for o in outcomes)
    retried = sum(o.payload["tries"] > 1 for o in outcomes)
    assert statuses == {200: len(outcomes)}, statuses  # every request answered, some on a retry
    assert load.between(killed_at + 1.0, time.monotonic()), "no request after the kill"
    record_figure(
        "fault: one of two ingress replicas killed under 4 clients",
        requests=len(outcomes),
        answered=statuses[200],
        needed_a_retry=retried,
        lost=len(outcomes) - statuses[200],
        replicas_running_after=serve.status()
        .applications["persona"]
        .deployments["Ingress"]
        .replica_states.get("RUNNING", 0),
    )


def test_a_hung_dependency_trips_the_budget_and_the_fallback_answers(stack: FaultStack) -> None:
    ids = stack.customers("customer_type = 'retail'", 80)[-20:]
    wait_for(lambda: healthy(stack, ids[0]), 30, "healthy before the hang")
    stack.redis.pause()
    try:
        answers = []
        for customer_id in ids[1:9]:  # not ids[0]: its features are cached
            started = time.perf_counter()
            answer = stack.recommend(customer_id)
            answers.append((answer, time.perf_counter() - started))
    finally:
        stack.redis.resume()
    for answer, _ in answers:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["degraded"], body
        assert any(
            r.startswith(("features_unavailable", "pipeline_timeout"))
            for r in body["degraded_reasons"]
        ), body
    slowest = max(seconds for _, seconds in answers)
    # The budget bounds the server's time; the rest is HTTP through Serve's proxy.
    assert slowest < BUDGETS.total_ms / 1e3 + 1.0, slowest
    wait_for(lambda: healthy(stack, ids[-1]), 30, "full service after the hang")
    record_figure(
        "fault: Redis hung (SIGSTOP) while requests arrive",
        requests=len(answers),
        answered_degraded=sum(a.json()["degraded"] for a, _ in answers),
        slowest_ms=round(slowest * 1e3),
        total_budget_ms=BUDGETS.total_ms,
        reasons=sorted({r.split(":")[0] for a, _ in answers for r in a.json()["degraded_reasons"]}),
    )


def ranked_answer(stack: FaultStack, customer_id: int, tries: int = 10) -> dict[str, object]:
    """An answer that went through ranking (on a loaded machine an answer can be a budget
    fallback, which says nothing about the model being served)."""
    for _ in range(tries):
        body = stack.recommend(customer_id).json()
        if not body["degraded"]:
            return body  # type: ignore[no-any-return]
    raise AssertionError(f"{tries} answers in a row were degraded: {body['degraded_reasons']}")


def reload_models(stack: FaultStack, reload: int) -> None:
    from ray import serve

    from serving.app import build_app
    from serving.runner import APP_NAME

    user_config = {"model_name": "persona-ranker", "pinned_versions": [], "reload": reload}
    serve.run(
        build_app(stack.args, {"Ingress": {**INGRESS, "user_config": user_config}}),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
    )


def test_an_incompatible_or_corrupt_model_is_refused_and_the_previous_keeps_serving(
    stack: FaultStack,
) -> None:
    registry = ModelRegistry(stack.data_dir / "registry")
    good = registry.serving_version("persona-ranker", "rib")
    assert good is not None
    customer_id = next(
        c
        for c in stack.customers("customer_type = 'retail'", 80)
        if stack.recommend(c).json()["variant"] == "transformer"
    )
    before = ranked_answer(stack, customer_id)["model_version"]
    assert before == f"persona-ranker@v{good.version}"
    source = registry.load_dir("persona-ranker", good.version)
    refused = []
    try:
        for reload, fault in enumerate(("wrong_feature_service", "corrupt_weights"), start=1):
            broken = stack.data_dir / f"model_{fault}"
            shutil.copytree(source, broken)
            if fault == "wrong_feature_service":
                manifest = (broken / "manifest.json").read_text()
                (broken / "manifest.json").write_text(
                    manifest.replace('"ranker_v1"', '"ranker_v0_retired"')
                )
            else:
                for weights in broken.glob("*.pt"):
                    weights.write_bytes(weights.read_bytes()[:100])
            version = registry.register_run(
                model_name="persona-ranker",
                model_dir=broken,
                config={"fault": fault},
                metrics={},
                feature_service="ranker_v1",
                feature_service_version="1",
                data_snapshot="test",
                seed=0,
                dataset="serving-test",
            ).version
            for app in KEYS:
                registry.mark_serving("persona-ranker", version, app)
            # As operations reload a model: a new user_config, which Serve hands to every
            # replica's reconfigure() without restarting it.
            reload_models(stack, reload)
            for _ in range(6):  # whichever replica answers
                ready = requests.get(f"{stack.url}/readyz", timeout=30).json()
                assert f"persona-ranker@v{version}" in ready["models"]["errors"], ready
                after = ranked_answer(stack, customer_id)
                assert after["model_version"] == before, (fault, after)
            refused.append(fault)
    finally:  # the registry as it was (the module's last test: no redeploy needed)
        for app in KEYS:
            registry.mark_serving("persona-ranker", good.version, app)
    record_figure(
        "fault: incompatible and corrupt model versions registered as serving",
        refused=refused,
        still_serving=before,
    )
