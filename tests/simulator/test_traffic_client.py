"""The traffic client against a scripted HTTP server: 429s are waited out (Retry-After) and
counted, 5xx, timeouts and refused connections are counted errors, and every call adds up."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web

from persona.simulator.traffic.client import (
    DEFAULT_RETRY_AFTER_S,
    ApiClient,
    CallStats,
    retry_after_seconds,
)


def port_in_range() -> int:
    for port in range(8790, 8800):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 8790-8799")


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("0.25") == 0.25
    assert retry_after_seconds(None) == DEFAULT_RETRY_AFTER_S
    assert retry_after_seconds("soon") == DEFAULT_RETRY_AFTER_S
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    assert 1.0 < retry_after_seconds(later) <= 3.0
    assert retry_after_seconds("100000") == 30.0  # capped


async def _scenario(port: int) -> tuple[CallStats, list]:
    calls = {"limited": 0}

    async def limited(request: web.Request) -> web.Response:
        calls["limited"] += 1
        if calls["limited"] <= 2:
            return web.json_response(
                {"detail": "slow down"}, status=429, headers={"Retry-After": "0.05"}
            )
        return web.json_response({"ok": True})

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"detail": "boom"}, status=503)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({"ok": True})

    async def refused(request: web.Request) -> web.Response:
        return web.json_response({"detail": "bad"}, status=422)

    app = web.Application()
    app.router.add_post("/limited", limited)
    app.router.add_post("/broken", broken)
    app.router.add_post("/slow", slow)
    app.router.add_post("/refused", refused)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stats = CallStats()
    try:
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = ApiClient(f"http://127.0.0.1:{port}", session, max_retries=5)
            answers = [
                await api.post("/limited", {}, "k", stats),
                await api.post("/broken", {}, "k", stats),
                await api.post("/slow", {}, "k", stats),
                await api.post("/refused", {}, "k", stats),
            ]
            gone = ApiClient("http://127.0.0.1:9", session)  # nothing listens on port 9
            answers.append(await gone.post("/x", {}, "k", stats))
            stingy = ApiClient(f"http://127.0.0.1:{port}", session, max_retries=0)
            calls["limited"] = 0
            answers.append(await stingy.post("/limited", {}, "k", stats))
    finally:
        await runner.cleanup()
    return stats, answers


def test_every_call_is_answered_or_counted() -> None:
    stats, answers = asyncio.run(_scenario(port_in_range()))
    assert answers[0] == {"ok": True}
    assert answers[1:] == [None] * 5
    assert stats.sent == 6
    assert stats.ok == 1
    assert stats.retries_429 == 2
    assert stats.retry_wait_s == pytest.approx(0.1)
    assert stats.errors == {
        "http_503": 1,
        "timeout": 1,
        "http_422": 1,
        "connection": 1,
        "429_retries_exhausted": 1,
    }
    assert stats.sent == stats.ok + stats.failed
