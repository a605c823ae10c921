"""Closed-loop HTTP load for fault tests: a few client threads send requests until stopped and
keep every outcome (status, degraded, latency, time), so a test can say what happened to each
request sent while it broke something."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

#: (session, thread index, sequence number) -> one outcome
Call = Callable[[requests.Session, int, int], "Outcome"]


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() when the answer came
    status: int  # HTTP status; 0 = no answer (connection refused, reset, timeout)
    latency_s: float
    degraded: bool = False
    reasons: tuple[str, ...] = ()
    payload: Any = None  # what the call wants to keep (e.g. the event ids it had acknowledged)


def timed_post(
    session: requests.Session, url: str, body: dict[str, Any], key: str, timeout_s: float = 10.0
) -> tuple[int, dict[str, Any] | None, float]:
    started = time.perf_counter()
    try:
        answer = session.post(url, json=body, headers={"X-API-Key": key}, timeout=timeout_s)
    except requests.RequestException:
        return 0, None, time.perf_counter() - started
    try:
        payload = answer.json()
    except ValueError:
        payload = None
    return answer.status_code, payload, time.perf_counter() - started


@dataclass
class LoadLoop:
    call: Call
    clients: int = 4
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LoadLoop:
        for index in range(self.clients):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        with requests.Session() as session:
            for sequence in itertools.count():
                if self._stop.is_set():
                    return
                outcome = self.call(session, index, sequence)
                with self._lock:
                    self.outcomes.append(outcome)

    def between(self, start: float, end: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if start <= o.at <= end]

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)
