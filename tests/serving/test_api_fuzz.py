"""Schemathesis over every operation of the live server's own OpenAPI spec, over real HTTP.

The single-process server (the FastAPI app and service the Serve ingress runs) serves a small
real bank. Cases are generated from ``/openapi.json`` in both of schemathesis's modes: positive
(schema-valid) and negative (schema-violating). Random bodies would almost all stop at the API
key, so most cases carry the key of the app they name (``own``), and some another app's key,
none, or the generated one; half of the positive bodies get real customer and product ids, and
audit reads get request ids the server really issued, so cases reach the rules, the model, the
event log and the audit store rather than only the validators.

Checked on every case: no 5xx; every 4xx is a JSON body with an ``error`` reason (429 also with
``Retry-After``); a 2xx only for a caller holding the key of the app it asks about; a 200
conforms to the operation's response schema and content type. The figure (cases, operations,
statuses) is printed in pytest's summary and written as JSON where ``PERSONA_FUZZ_REPORT``
names a path:

    PERSONA_FUZZ_REPORT=bench/results/api_fuzz.json .venv/bin/pytest tests/serving/test_api_fuzz.py
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, response_schema_conformance
from schemathesis.core.failures import FailureGroup

from tests.figures import record_figure
from tests.serving.conftest import KEYS
from tests.serving.fuzz_report import FuzzReport
from tests.serving.stack_builders import LiveServer

pytestmark = pytest.mark.slow

#: Hypothesis examples per operation and mode (fewer where the operation has less to vary).
EXAMPLES = {GenerationMode.POSITIVE: 140, GenerationMode.NEGATIVE: 60}
#: An operation with neither parameters nor a body (health, metrics) has one case to send.
EXAMPLES_WITHOUT_INPUT = 3
#: Every operation of the spec must have been called at least this often.
MIN_CASES_PER_OPERATION = 1
#: The product interactions that need a product id (serving.api.EventIn).
PRODUCT_EVENTS = ("impression", "click", "apply", "purchase", "dismiss")


@dataclass(frozen=True)
class Caller:
    """How one case is sent: which key, and which real ids replace generated ones."""

    key: str  # own | other | missing | generated
    customer: int | None  # index into the bank's customers, None: keep the generated id
    product: int | None  # index into the catalogue (or the issued request ids)


CALLERS = st.builds(
    Caller,
    key=st.sampled_from(["own"] * 7 + ["other", "missing", "generated"]),
    customer=st.none() | st.integers(0, 100_000),
    product=st.none() | st.integers(0, 100_000),
)


def _app_of(case: Any) -> str | None:
    """The app a case names (path parameter, body, or first event), if a known one."""
    candidates: list[object] = [(case.path_parameters or {}).get("app")]
    body = case.body
    if isinstance(body, dict):
        candidates.append(body.get("app"))
        events = body.get("events")
        if isinstance(events, list):
            candidates += [e.get("app") for e in events if isinstance(e, dict)]
    return next((a for a in candidates if isinstance(a, str) and a in KEYS), None)


def _realistic(body: dict[str, Any], caller: Caller, live: LiveServer) -> dict[str, Any]:
    """The same body with real customer and product ids and, for events, one app per batch."""
    body = copy.deepcopy(body)
    assert caller.customer is not None
    customer = live.customer_ids[caller.customer % len(live.customer_ids)]
    if "customer_id" in body:
        body["customer_id"] = customer
    events = body.get("events")
    if isinstance(events, list) and events and all(isinstance(e, dict) for e in events):
        app = events[0].get("app", "rib")
        for i, event in enumerate(events):
            event["app"] = app
            event["customer_id"] = customer
            if caller.product is not None and (
                event.get("product_id") is not None or event.get("event_type") in PRODUCT_EVENTS
            ):
                event["product_id"] = live.product_ids[(caller.product + i) % len(live.product_ids)]
    return body


class Fuzzer:
    def __init__(self, live: LiveServer, report: FuzzReport):
        self.live = live
        self.report = report
        self.session = requests.Session()
        self.issued: list[tuple[str, str]] = []  # (request_id, app) the server answered

    def send(self, case: Any, caller: Caller, mode: GenerationMode) -> None:
        operation = case.operation
        declares_key = any(p.name == "X-API-Key" for p in operation.iter_parameters())
        positive = mode is GenerationMode.POSITIVE
        if positive and isinstance(case.body, dict) and caller.customer is not None:
            case.body = _realistic(case.body, caller, self.live)
        app = _app_of(case)
        path = case.path_parameters or {}
        if positive and "request_id" in path and self.issued and caller.product is not None:
            request_id, app = self.issued[caller.product % len(self.issued)]
            case.path_parameters = {**path, "request_id": request_id}
        headers = dict(case.headers or {})
        if declares_key:
            own = app or "rib"
            if caller.key == "own":
                headers["X-API-Key"] = KEYS[own]
            elif caller.key == "other":
                headers["X-API-Key"] = KEYS[next(a for a in KEYS if a != own)]
            elif caller.key == "missing":
                headers.pop("X-API-Key", None)
        case.headers = headers
        response = case.call(base_url=self.live.url, session=self.session, timeout=30)
        status = response.status_code
        self.report.record(operation.label, mode.value, status)
        problems = self.problems(case, caller, response, declares_key)
        if problems:
            curl = case.as_curl_command(base_url=self.live.url)
            self.report.failures.append(f"{operation.label} → {status}: {problems}\n    {curl}")
        if status == 200 and operation.path == "/v1/recommendations":
            self.issued.append((response.json()["request_id"], case.body["app"]))

    def problems(self, case: Any, caller: Caller, response: Any, declares_key: bool) -> str:
        status = response.status_code
        if status >= 500:
            return f"server error: {response.text[:300]}"
        if 400 <= status < 500:
            try:
                body = response.json()
            except ValueError:
                return f"a {status} without a JSON body: {response.text[:200]!r}"
            if not (
                isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
            ):
                return f"a {status} without an error reason: {body!r:.200}"
            if status == 429 and "retry-after" not in {k.lower() for k in response.headers}:
                return "a 429 without Retry-After"
            return ""
        if not 200 <= status < 300:
            return f"unexpected status {status}"
        if declares_key and caller.key != "own":
            return f"a {status} for a caller without the app's key ({caller.key})"
        try:
            case.validate_response(
                response, checks=[response_schema_conformance, content_type_conformance]
            )
        except FailureGroup as failures:
            return "; ".join(f.title for f in failures.exceptions)
        return ""


def _run_operation(fuzzer: Fuzzer, operation: Any, mode: GenerationMode) -> None:
    has_input = bool(list(operation.iter_parameters())) or bool(operation.body)

    @settings(
        max_examples=EXAMPLES[mode] if has_input else EXAMPLES_WITHOUT_INPUT,
        derandomize=True,  # the same cases on every run and machine
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # every failure is collected, none shrunk
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), caller=CALLERS)
    def fuzz(case: Any, caller: Caller) -> None:
        fuzzer.send(case, caller, mode)

    try:
        fuzz()
    except Unsatisfiable:
        # Nothing to violate (an operation without parameters or body has no negative case).
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_every_operation_survives_schemathesis(live_server: LiveServer) -> None:
    started = time.perf_counter()
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/v1/recommendations", "/v1/events", "/v1/audit/{request_id}"} <= {
        op.path for op in operations
    }
    report = FuzzReport(seed="hypothesis derandomize=True")
    fuzzer = Fuzzer(live_server, report)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_operation(fuzzer, operation, mode)
    report.wall_s = time.perf_counter() - started
    record_figure(
        "schemathesis",
        cases=report.cases,
        operations=len(report.operations),
        server_errors=report.server_errors,
        failed_checks=len(report.failures),
        statuses=dict(sorted(report.statuses.items())),
        wall_s=round(report.wall_s),
    )
    report.write_if_asked()

    assert requests.get(f"{live_server.url}/readyz", timeout=10).status_code == 200
    for operation in operations:
        assert sum(report.operations.get(operation.label, {}).values()) >= (
            MIN_CASES_PER_OPERATION
        ), operation.label
    statuses = report.statuses
    # The cases reached the service, not only the validators and the key check.
    assert statuses[200] >= 100 and statuses[422] >= 100 and statuses[401] > 0, statuses
    assert report.server_errors == 0 and not report.failures, (
        report.summary_line() + "\n" + "\n".join(report.failures[:20])
    )
