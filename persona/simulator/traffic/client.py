"""The apps' HTTP client: every request is answered or counted as an error, never dropped.

``429 Too Many Requests`` is waited out (its ``Retry-After``, seconds or an HTTP date) and
retried, each retry counted; a 5xx, a timeout, a refused connection or another 4xx is a
counted error of that call. ``sent == ok + errors`` always holds per endpoint.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from pydantic import BaseModel, Field

#: Wait when a 429 carries no usable Retry-After, seconds.
DEFAULT_RETRY_AFTER_S = 1.0
#: Longest single wait we honour, seconds (a longer Retry-After is capped).
MAX_RETRY_AFTER_S = 30.0


class CallStats(BaseModel):
    """What happened to the calls of one endpoint."""

    sent: int = 0
    ok: int = 0
    retries_429: int = 0
    retry_wait_s: float = 0.0
    errors: dict[str, int] = Field(default_factory=dict)  # kind -> count
    error_samples: list[str] = Field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {detail[:300]}")


def retry_after_seconds(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return DEFAULT_RETRY_AFTER_S
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER_S
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class ApiClient:
    """POSTs JSON to one serving base URL with the calling app's key."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        max_retries: int = 50,
    ):
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.max_retries = max_retries

    async def post(
        self, path: str, payload: dict[str, Any], api_key: str, stats: CallStats
    ) -> dict[str, Any] | None:
        """The JSON answer, or None after counting the error in ``stats``."""
        stats.sent += 1
        url = f"{self.base_url}{path}"
        headers = {"X-API-Key": api_key}
        retries = 0
        while True:
            try:
                async with self.session.post(url, json=payload, headers=headers) as answer:
                    if answer.status == 429:
                        if retries >= self.max_retries:
                            stats.error("429_retries_exhausted", await answer.text())
                            return None
                        wait = retry_after_seconds(answer.headers.get("Retry-After"))
                        retries += 1
                        stats.retries_429 += 1
                        stats.retry_wait_s += wait
                        await asyncio.sleep(wait)
                        continue
                    if answer.status >= 500:
                        stats.error(f"http_{answer.status}", await answer.text())
                        return None
                    if answer.status >= 400:
                        stats.error(f"http_{answer.status}", await answer.text())
                        return None
                    body: dict[str, Any] = await answer.json()
                    stats.ok += 1
                    return body
            except TimeoutError as error:
                stats.error("timeout", repr(error))
                return None
            except aiohttp.ClientError as error:
                stats.error("connection", repr(error))
                return None
