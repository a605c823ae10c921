"""The closed loop for real at a tiny scale: a simulated bank prepared through the platform's
path (Feast in Redis db 9, a registered transformer, priors), the live single-process server
and its shadow started by the run, three simulated days of customers calling them, outcomes
back through /v1/events, then the analysis and its report."""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest
import redis

from persona.settings import PersonaSettings
from persona.simulator.traffic.guardrails import check_guardrails
from persona.simulator.traffic.population import load_population
from persona.simulator.traffic.prepare import BankSpec, prepare_bank
from persona.simulator.traffic.run import ITEMS_FILE, REQUESTS_FILE, TrafficConfig
from persona.simulator.traffic.session import TrafficOutcome, run_traffic_session
from serving.config import load_experiments
from serving.experiments import assign

REDIS_URL = "redis://127.0.0.1:6379/9"


def two_ports() -> tuple[int, int]:
    free = []
    for port in range(8760, 8790):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            free.append(port)
        if len(free) == 2:
            return free[0], free[1]
    pytest.skip("no two free ports in 8760-8789")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrafficOutcome]:
    root = tmp_path_factory.mktemp("traffic_live")
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = PersonaSettings(
        data_dir=root, online_store="redis", redis_url=REDIS_URL, feast_project="traffic_test"
    )
    spec = BankSpec(customers=400, days=30, seed=4, train=False, d_model=16, n_blocks=1)
    prepare_bank(spec, root, settings, progress=False)
    port, shadow_port = two_ports()
    outcome = run_traffic_session(
        root,
        root / "ab",
        TrafficConfig(days=3, seed=1, concurrency=4),
        settings,
        port=port,
        shadow_port=shadow_port,
        n_bootstrap=200,
        progress=False,
    )
    return root, outcome


@pytest.mark.slow
def test_every_request_and_event_is_accounted_for(run: tuple[Path, TrafficOutcome]) -> None:
    root, outcome = run
    acc, summary = outcome.report.accounting, outcome.summary
    assert summary.sessions > 50
    assert acc.requests_sent == summary.sessions
    assert acc.requests_sent == acc.responses + acc.request_errors
    assert acc.request_errors == 0
    assert acc.shadow_requests == summary.requests_by_variant["control"]
    assert acc.shadow_errors == 0
    assert acc.events_sent == acc.events_acknowledged == acc.events_in_log > 0
    items = pd.read_parquet(root / "ab" / ITEMS_FILE)
    assert acc.impressions_in_log == len(items) == summary.events_by_type["impression"]
    assert acc.impressions_without_arm == 0
    assert summary.events_by_type.get("click", 0) > 0


@pytest.mark.slow
def test_assignment_is_sticky_and_follows_the_hash(run: tuple[Path, TrafficOutcome]) -> None:
    root, _ = run
    requests = pd.read_parquet(root / "ab" / REQUESTS_FILE)
    assert set(requests["app"]) >= {"rib", "imobile"}  # every app runs the experiment now
    assert (requests["experiment"] == "ranker_vs_priors").all()
    arms = requests.groupby("customer_id")["variant"].nunique()
    assert (arms == 1).all()
    spec = load_experiments(root / "ab" / "config" / "experiment" / "experiments.yaml").experiments[
        "ranker_vs_priors"
    ]
    for customer, variant in requests.groupby("customer_id")["variant"].first().items():
        assert assign(int(customer), "ranker_vs_priors", spec).variant.name == variant
    assert set(requests["variant"]) == {"holdout", "control", "transformer"}


@pytest.mark.slow
def test_guardrails_hold_and_the_checker_catches_violations(
    run: tuple[Path, TrafficOutcome],
) -> None:
    root, outcome = run
    assert outcome.report.guardrails_held
    pop = load_population(root)
    items = pd.read_parquet(root / "ab" / ITEMS_FILE)
    marketing = {p.product_id for p in pop.catalogue.products if p.is_marketing_offer}
    no_consent = set(pop.customer_id[~pop.consent_marketing].tolist())
    served = items[items["customer_id"].isin(no_consent)]
    assert len(served) > 0  # customers without consent were served ...
    assert not served["product_id"].isin(marketing).any()  # ... never a marketing offer
    planted = items.copy()
    planted.loc[0, "customer_id"] = min(no_consent)
    planted.loc[0, "product_id"] = sorted(marketing)[0]
    repeat = pd.concat([planted, *[planted.iloc[[1]]] * 3], ignore_index=True)
    config_dir = root / "ab" / "config" / "experiment"
    found = {g.variant: g.violations for g in check_guardrails(repeat, pop, config_dir)}
    assert sum(v["no_marketing_consent"] for v in found.values()) >= 1
    assert sum(v["product_day_cap"] for v in found.values()) >= 1


@pytest.mark.slow
def test_analysis_writes_the_reports(run: tuple[Path, TrafficOutcome]) -> None:
    _, outcome = run
    for path in outcome.paths.values():
        assert path.stat().st_size > 0
    for path in outcome.report.readout.values():
        assert Path(path).stat().st_size > 0
    report = outcome.report
    assert set(report.ctr) == {"holdout", "control", "transformer"}
    assert any(lift.slice == "overall" and lift.variant == "transformer" for lift in report.lifts)
    assert any(lift.slice.startswith("app=") for lift in report.lifts)
    assert 0 <= report.srm_p_value <= 1
    assert report.ope_details["propensity_mismatches"] == 0
    assert {c.estimator for c in report.ope} == {"ips", "snips"}
    assert {r.variant for r in report.relevance} >= {"control", "transformer"}
    assert "ab_report.html" in outcome.paths["html"].name
