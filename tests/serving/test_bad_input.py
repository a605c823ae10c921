"""Bad input a fuzzer does not reliably produce, sent over real HTTP to the single-process
server: oversized bodies, a batch one over the limit, unknown apps and products, strings built
to inject into Redis keys, logs or SQL, broken API key headers. Each gets a 4xx with a reason,
never a 5xx. And request context (device, time of day) cannot buy past consent or KYC."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import duckdb
import pytest
import requests

from persona.layout import DataLayout, parquet_glob
from serving.api import MAX_EVENTS_PER_BATCH
from serving.catalogue import Catalogue
from tests.serving.conftest import KEYS
from tests.serving.stack_builders import LiveServer

pytestmark = pytest.mark.slow

#: Strings built to escape a Redis key, a log line, a path, a SQL literal or a glob.
INJECTIONS = [
    "card_debit'; DROP TABLE events; --",
    "' OR '1'='1",
    'card"debit',
    "card_debit\nINFO forged log line",
    "card_debit\r\nX-Injected: 1",
    "card_debit\x00",
    "persona:contact:*",
    "card_*",
    "card_{debit}",
    "card?debit",
    "card[debit]",
    "../../etc/passwd",
    "..",
    "card debit",
    "card/debit",
    "card\\debit",
    "čárka_ünïcode",
    "card_debit\u202e",
    "x" * 65,
    "y" * 100_000,
    "",
    "-leading-dash",
    ":leading-colon",
]


def reason_of(answer: requests.Response) -> str:
    """The refusal's reason (and the fields' problems), asserting the body carries one."""
    body = answer.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    return " ".join([body["error"], *body.get("problems", [])])


def post(live: LiveServer, path: str, body: Any, app: str = "rib") -> requests.Response:
    return requests.post(
        f"{live.url}{path}", json=body, headers={"X-API-Key": KEYS[app]}, timeout=30
    )


def refused(answer: requests.Response, status: int = 422) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text[:500])
    return reason_of(answer)


def test_an_oversized_body_is_refused_with_413_before_it_is_read(
    live_server: LiveServer,
) -> None:
    event = {"customer_id": 1, "app": "rib", "event_type": "login", "event_id": "e" * 60}
    body = json.dumps({"events": [event] * 50_000}).encode()  # about 5 MB
    assert len(body) > 4_000_000
    headers = {"X-API-Key": KEYS["rib"], "Content-Type": "application/json"}
    declared = requests.post(f"{live_server.url}/v1/events", data=body, headers=headers, timeout=60)
    assert "limit" in refused(declared, 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        for start in range(0, len(body), 1 << 16):
            yield body[start : start + (1 << 16)]

    streamed = requests.post(
        f"{live_server.url}/v1/recommendations", data=chunks(), headers=headers, timeout=60
    )
    assert streamed.request.headers.get("Transfer-Encoding") == "chunked"
    assert "limit" in refused(streamed, 413)


def test_a_batch_one_over_the_limit_is_refused_naming_the_limit(live_server: LiveServer) -> None:
    event = {"customer_id": live_server.customer_ids[0], "app": "rib", "event_type": "login"}
    reason = refused(
        post(live_server, "/v1/events", {"events": [event] * (MAX_EVENTS_PER_BATCH + 1)})
    )
    assert str(MAX_EVENTS_PER_BATCH) in reason.replace(",", ""), reason
    empty = refused(post(live_server, "/v1/events", {"events": []}))
    assert "events" in empty


@pytest.mark.parametrize("app", ["atm", "RIB", "rib ", "", "rib\n", "imobile'--", "*"])
def test_unknown_apps_are_refused(live_server: LiveServer, app: str) -> None:
    customer = live_server.customer_ids[0]
    reason = refused(
        post(live_server, "/v1/recommendations", {"customer_id": customer, "app": app})
    )
    assert "app" in reason
    events = {"events": [{"customer_id": customer, "app": app, "event_type": "login"}]}
    assert "app" in refused(post(live_server, "/v1/events", events))
    if app:  # an empty path segment is another route (404)
        config = requests.get(
            f"{live_server.url}/v1/apps/{quote(app, safe='')}/config",
            headers={"X-API-Key": KEYS["rib"]},
            timeout=30,
        )
        assert "app" in refused(config)


def test_unknown_products_are_refused_naming_them(live_server: LiveServer) -> None:
    customer = live_server.customer_ids[0]
    events = [
        {
            "customer_id": customer,
            "app": "rib",
            "event_type": "click",
            "product_id": "card_unicorn",
        },
        {
            "customer_id": customer,
            "app": "rib",
            "event_type": "click",
            "product_id": live_server.product_ids[0],
        },
    ]
    reason = refused(post(live_server, "/v1/events", {"events": events}))
    assert "card_unicorn" in reason and live_server.product_ids[0] not in reason


@pytest.mark.parametrize("field", ["product_id", "event_id", "request_id"])
def test_injection_strings_in_event_ids_are_refused(live_server: LiveServer, field: str) -> None:
    customer = live_server.customer_ids[0]
    for value in INJECTIONS:
        event = {
            "customer_id": customer,
            "app": "rib",
            "event_type": "click",
            "product_id": live_server.product_ids[0],
            field: value,
        }
        answer = post(live_server, "/v1/events", {"events": [event]})
        # A 100 KB id may be refused by size first; either way a 4xx with a reason.
        assert answer.status_code in (413, 422), (field, value[:40], answer.text[:300])
        assert reason_of(answer)


@pytest.mark.parametrize(
    "customer_id",
    [
        "1; DROP TABLE customers",
        "1 OR 1=1",
        "*",
        "1\n2",
        0,
        -1,
        2**53 + 1,
        2**63,
        1.5,
        None,
        [1],
        {},
    ],
)
def test_customer_ids_that_are_not_bank_ids_are_refused(
    live_server: LiveServer, customer_id: object
) -> None:
    reason = refused(
        post(live_server, "/v1/recommendations", {"customer_id": customer_id, "app": "rib"})
    )
    assert "customer_id" in reason


@pytest.mark.parametrize(
    ("context", "words"),
    [
        ({"timestamp": "0001-01-01T00:00:00+01:00"}, "range"),  # before year 1 in UTC
        ({"timestamp": "2026-01-01T10:00:00"}, "timezone"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, "future"),
        ({"timestamp": "yesterday'; --"}, "timestamp"),
        ({"device": "toaster"}, "device"),
        ({"device": "web", "fingerprint": "x"}, "fingerprint"),
    ],
)
def test_bad_request_context_is_refused(
    live_server: LiveServer, context: dict[str, str], words: str
) -> None:
    body = {"customer_id": live_server.customer_ids[0], "app": "rib", "context": context}
    assert words in refused(post(live_server, "/v1/recommendations", body))
    events = [{"customer_id": live_server.customer_ids[0], "app": "rib", "event_type": "login"}]
    if "timestamp" in context:
        events[0]["timestamp"] = context["timestamp"]
        assert "timestamp" in refused(post(live_server, "/v1/events", {"events": events}))


@pytest.mark.parametrize(("k", "words"), [(0, "k"), (51, "k"), (21, "at most 20"), ("5; --", "k")])
def test_k_outside_the_apps_limits_is_refused(
    live_server: LiveServer, k: object, words: str
) -> None:
    body = {"customer_id": live_server.customer_ids[0], "app": "rib", "k": k}
    assert words in refused(post(live_server, "/v1/recommendations", body))


@pytest.mark.parametrize(
    "request_id",
    [
        *(s for s in INJECTIONS if s and len(s) < 1000),
        "../../metrics",
        "%2e%2e%2fhealthz",
        "0" * 31,
        "A" * 32,
        "0" * 33,
        "0" * 8_000,
    ],
)
def test_injection_strings_in_audit_request_ids_are_refused(
    live_server: LiveServer, request_id: str
) -> None:
    answer = requests.get(
        f"{live_server.url}/v1/audit/{quote(request_id, safe='')}",
        headers={"X-API-Key": KEYS["rib"]},
        timeout=30,
    )
    # 422 from the id pattern; 404 where the decoded path is no longer the audit route.
    assert answer.status_code in (404, 422), (request_id[:40], answer.text[:300])
    assert reason_of(answer)


def raw_request(live: LiveServer, api_key: bytes, body: bytes) -> tuple[int, bytes, bytes]:
    """One POST /v1/recommendations written byte by byte (clients refuse to send such headers)."""
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/recommendations HTTP/1.1\r\nHost: persona\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            + b"Content-Length: %d\r\nX-API-Key: %s\r\n\r\n" % (len(body), api_key)
            + body
        )
        reply = b""
        while chunk := connection.recv(1 << 16):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head, payload


@pytest.mark.parametrize(
    ("api_key", "status", "reason"),
    [
        (b"k" * 10_240, 401, b"invalid API key"),  # 10 KB
        (b"\xff\xfe\xfd", 401, b"invalid API key"),  # not UTF-8
        (b"demo-rib-key' OR '1'='1", 401, b"invalid API key"),
        (b"demo-rib-key*", 401, b"invalid API key"),
        (b" demo-rib-key ", 401, b"invalid API key"),  # padded: not the key
        (b"demo-cib-key", 403, b"belongs to app 'cib'"),  # a real key of another app
        # Broken HTTP: the server's protocol layer refuses these before the app sees them.
        (b"demo-rib-key\nX-Forged: 1", 400, b"Invalid HTTP request"),
        (b"demo\x00rib", 400, b"Invalid HTTP request"),
        # A second request smuggled after the headers is read as the (invalid) body.
        (b"demo-rib-key\r\n\r\nGET /metrics HTTP/1.1", 422, b"JSON decode error"),
    ],
)
def test_broken_api_key_headers_get_a_4xx_with_a_reason(
    live_server: LiveServer, api_key: bytes, status: int, reason: bytes
) -> None:
    body = json.dumps({"customer_id": live_server.customer_ids[0], "app": "rib"}).encode()
    got, head, payload = raw_request(live_server, api_key, body)
    assert got == status, (got, head[:200], payload[:300])
    assert reason in payload, payload[:300]  # 400: uvicorn's own reason, in plain text
    assert b"persona_" not in payload  # nothing smuggled was answered
    if status in (401, 403):
        assert api_key.strip() not in payload  # a key is never echoed back


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"", "application/json"),
        (b"{", "application/json"),
        (b'{"customer_id": 1, "app": "rib"', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[]", "application/json"),
        (b"null", "application/json"),
        (b'{"customer_id": 1, "app": "rib"}', "text/plain"),
        (b"customer_id=1&app=rib", "application/x-www-form-urlencoded"),
        (b'{"customer_id": 1e400, "app": "rib"}', "application/json"),
        (b'{"customer_id": NaN, "app": "rib"}', "application/json"),
        (b"[" * 10_000 + b"]" * 10_000, "application/json"),
    ],
)
def test_malformed_bodies_get_a_4xx_with_a_reason(
    live_server: LiveServer, data: bytes, content_type: str
) -> None:
    for path in ("/v1/recommendations", "/v1/events"):
        answer = requests.post(
            f"{live_server.url}{path}",
            data=data,
            headers={"X-API-Key": KEYS["rib"], "Content-Type": content_type},
            timeout=30,
        )
        assert 400 <= answer.status_code < 500, (path, answer.status_code, answer.text[:300])
        assert reason_of(answer)


def test_unknown_routes_and_methods_get_a_reason(live_server: LiveServer) -> None:
    for method, path, status in [
        ("GET", "/v1/recommendations", 405),
        ("DELETE", "/v1/events", 405),
        ("GET", "/v2/recommendations", 404),
        ("GET", "/v1/audit/", 404),
        ("POST", "/v1/apps/rib/config", 405),
    ]:
        answer = requests.request(
            method, f"{live_server.url}{path}", headers={"X-API-Key": KEYS["rib"]}, timeout=30
        )
        assert answer.status_code == status, (method, path, answer.status_code)
        assert reason_of(answer)


def test_request_context_cannot_buy_past_consent_or_kyc(live_server: LiveServer) -> None:
    """The same customers asked from every device at hours across the day: no marketing offer
    without marketing consent, no product above their KYC level, whatever the context says."""
    catalogue = Catalogue.from_data_dir(live_server.args.data_dir)
    glob = parquet_glob(DataLayout(live_server.args.data_dir).clean_table("customers"))
    with duckdb.connect() as con:
        rows = con.sql(
            f"SELECT customer_id, kyc_level FROM read_parquet('{glob}') "
            "WHERE customer_type = 'retail' AND NOT consent_marketing ORDER BY kyc_level, customer_id LIMIT 4"
        ).fetchall()
    assert len(rows) == 4
    now = datetime.now(UTC)
    served = 0
    for customer_id, kyc_level in rows:
        for device in ("web", "ios", "android"):
            for hours_ago, offset in ((0, 0), (5, 14), (13, -12), (23, 5), (24 * 200, -3)):
                local = timezone(timedelta(hours=offset))
                when = (now - timedelta(hours=hours_ago)).astimezone(local)
                for app in ("rib", "imobile"):
                    body = {
                        "customer_id": customer_id,
                        "app": app,
                        "k": 10,
                        "context": {"device": device, "timestamp": when.isoformat()},
                    }
                    answer = post(live_server, "/v1/recommendations", body, app)
                    assert answer.status_code == 200, answer.text
                    for item in answer.json()["items"]:
                        product = catalogue[item["product_id"]]
                        assert not product.is_marketing_offer, (customer_id, device, item)
                        assert product.min_kyc_level <= kyc_level, (customer_id, device, item)
                        served += 1
    assert served > 0
