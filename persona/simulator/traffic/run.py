"""One traffic run: simulated days of sessions against the live endpoint, outcomes back as
events, and a ledger of everything sent and answered.

Per simulated day: salaries land, customers log in (:mod:`sessions`), each session calls
``POST /v1/recommendations`` (``explain`` on, for the eligible set), the baseline arm's
requests are also ranked by the shadow model server (off-policy evaluation), the hidden
model decides what each customer does with the slate (:mod:`behaviour`), impressions and
outcomes go to ``POST /v1/events`` (one app per batch, at most 1,000 events), and at midnight
fatigue decays and the contact counters' day ends (:mod:`clock`).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import numpy as np
import pandas as pd
import redis
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from persona import domain
from persona.simulator.traffic.behaviour import (
    end_of_day,
    respond,
    start_of_day,
    true_logit,
)
from persona.simulator.traffic.client import ApiClient, CallStats
from persona.simulator.traffic.clock import end_contact_day
from persona.simulator.traffic.population import Population
from persona.simulator.traffic.sessions import Sessions, daily_sessions

MAX_EVENTS_PER_BATCH: Final = 1_000
#: The arm whose requests the shadow ranker also answers (the off-policy evaluation's log).
BASELINE_ARM: Final = "control"
ITEMS_FILE: Final = "served_items.parquet"
REQUESTS_FILE: Final = "requests.parquet"


class TrafficConfig(BaseModel):
    """What a traffic run does. Seeded: the same seed gives the same sessions and the same
    draws; the server's exploration is seeded per request id, which it makes up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int = Field(14, ge=1, le=366, description="Simulated days of traffic.")
    seed: int = Field(0, ge=0, description="Seed of sessions and outcomes.")
    customers: int | None = Field(
        None, ge=1, description="Only the first N customers log in (default: all)."
    )
    concurrency: int = Field(8, ge=1, le=256, description="Requests in flight at once.")
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout, seconds.")
    max_retries: int = Field(50, ge=0, description="429 retries per request before an error.")
    shadow: bool = Field(True, description="Ask the shadow ranker about baseline requests.")


class TrafficSummary(BaseModel):
    """Counts that must add up, and what the run cost."""

    days: int
    first_day: str
    last_day: str
    sessions: int
    recommendations: CallStats
    shadow: CallStats
    events: CallStats
    events_sent: int
    events_acknowledged: int
    events_by_type: dict[str, int]
    impressions: int
    requests_by_variant: dict[str, int]
    empty_slates: int
    degraded_responses: int
    contact_keys_rolled: int
    wall_seconds: float
    requests_per_second: float


def _ndcg_at(gains_in_order: np.ndarray, k: int = 10) -> float:
    ideal = np.sort(gains_in_order)[::-1][:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = float((ideal * discounts[: len(ideal)]).sum())
    if idcg <= 0:
        return float("nan")
    top = gains_in_order[:k]
    return float((top * discounts[: len(top)]).sum()) / idcg


def _eligible_order(explain: dict[str, Any]) -> list[str]:
    """The ranked candidates that passed every rule but diversity, in the arm's order."""
    removed = {r["product_id"] for r in explain.get("removed", []) if r.get("rule") != "diversity"}
    return [p for p in explain.get("ranked", []) if p not in removed]


class _Day:
    """The answers of one simulated day, before outcomes."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, Any], dict[str, Any] | None]] = []


async def _serve_sessions(
    sessions: Sessions,
    pop: Population,
    api: ApiClient,
    shadow: ApiClient | None,
    keys: dict[str, str],
    stats: TrafficSummary,
    concurrency: int,
    bar: tqdm,
) -> _Day:
    day = _Day()
    limit = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        app = domain.APPS[int(sessions.app[i])]
        payload = {
            "customer_id": int(pop.customer_id[sessions.rows[i]]),
            "app": app,
            "context": {
                "device": domain.DEVICES[int(sessions.device[i])],
                "timestamp": sessions.at[i].isoformat(),
            },
            "explain": True,
        }
        async with limit:
            answer = await api.post(
                "/v1/recommendations", payload, keys[app], stats.recommendations
            )
            shadowed = None
            if answer is not None and shadow is not None and answer["variant"] == BASELINE_ARM:
                shadowed = await shadow.post(
                    "/v1/recommendations", payload, keys[app], stats.shadow
                )
        if answer is not None:
            day.answers.append((i, answer, shadowed))
        bar.update(1)

    await asyncio.gather(*(one(i) for i in range(len(sessions))))
    day.answers.sort(key=lambda x: x[0])
    return day


def _outcomes_and_events(
    day_index: int,
    sessions: Sessions,
    day: _Day,
    pop: Population,
    rng: np.random.Generator,
    items: list[dict[str, Any]],
    requests_out: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Draw what customers do, record the ledger rows, return the events to send."""
    date = pop.first_day + timedelta(days=day_index)
    index = {pid: i for i, pid in enumerate(pop.catalogue.product_ids)}
    rows, products, positions, owner = [], [], [], []
    for n, (i, answer, _) in enumerate(day.answers):
        for item in answer["items"]:
            rows.append(int(sessions.rows[i]))
            products.append(index[item["product_id"]])
            positions.append(int(item["rank"]))
            owner.append(n)
    # Relevance of each arm's ranking of the eligible products (hidden truth, before outcomes).
    ndcg: list[float] = []
    for i, answer, _ in day.answers:
        order = _eligible_order(answer.get("explain") or {})
        if not order:
            ndcg.append(float("nan"))
            continue
        row = np.full(len(order), sessions.rows[i])
        logit = true_logit(pop, row, np.array([index[p] for p in order]), date)
        ndcg.append(_ndcg_at(1.0 / (1.0 + np.exp(-logit.astype(np.float64)))))
    rows_a = np.array(rows, dtype=np.int64)
    products_a = np.array(products, dtype=np.int64)
    held_before = pop.held[rows_a, products_a].copy()
    outcome = respond(pop, rows_a, products_a, np.array(positions), date, rng)

    now = datetime.now(UTC)
    stamp = {
        "impression": now,
        "dismiss": now + timedelta(milliseconds=1),
        "click": now + timedelta(milliseconds=1),
        "apply": now + timedelta(milliseconds=2),
        "purchase": now + timedelta(milliseconds=3),
    }
    events: list[dict[str, Any]] = []
    for n, (i, answer, shadowed) in enumerate(day.answers):
        explain = answer.get("explain") or {}
        requests_out.append(
            {
                "request_id": answer["request_id"],
                "day": day_index,
                "sim_date": date.isoformat(),
                "at": sessions.at[i],
                "customer_id": int(pop.customer_id[sessions.rows[i]]),
                "app": domain.APPS[int(sessions.app[i])],
                "device": domain.DEVICES[int(sessions.device[i])],
                "variant": answer["variant"],
                "experiment": answer["experiment"],
                "variant_probability": answer["variant_probability"],
                "model_version": answer["model_version"],
                "degraded": bool(answer["degraded"]),
                "degraded_reasons": list(answer.get("degraded_reasons", [])),
                "n_items": len(answer["items"]),
                "ranked": list(explain.get("ranked", [])),
                "eligible": _eligible_order(explain),
                "shadow_ranked": list((shadowed or {}).get("explain", {}).get("ranked", []))
                if shadowed is not None
                else None,
                "truth_ndcg10": ndcg[n],
            }
        )
    for j in range(len(rows_a)):
        i, answer, _ = day.answers[owner[j]]
        item = answer["items"][positions[j] - 1]
        customer = int(pop.customer_id[rows_a[j]])
        app = domain.APPS[int(sessions.app[i])]
        base = {
            "customer_id": customer,
            "app": app,
            "product_id": item["product_id"],
            "request_id": answer["request_id"],
            "position": positions[j],
            "device": domain.DEVICES[int(sessions.device[i])],
        }
        kinds = ["impression"]
        kinds += ["click"] if outcome.clicked[j] else []
        kinds += ["dismiss"] if outcome.dismissed[j] else []
        kinds += ["apply"] if outcome.applied[j] else []
        kinds += ["purchase"] if outcome.purchased[j] else []
        for kind in kinds:
            events.append(
                {
                    **base,
                    "event_type": kind,
                    "event_id": f"{answer['request_id']}-{kind}-{positions[j]}",
                    "timestamp": stamp[kind].isoformat(),
                }
            )
        items.append(
            {
                "request_id": answer["request_id"],
                "day": day_index,
                "customer_id": customer,
                "app": app,
                "variant": answer["variant"],
                "position": positions[j],
                "product_id": item["product_id"],
                "propensity": item.get("propensity"),
                "exploration": "exploration_slot" in item.get("reasons", []),
                "held_when_served": bool(held_before[j]),
                "p_click_true": float(outcome.p_click[j]),
                "clicked": bool(outcome.clicked[j]),
                "dismissed": bool(outcome.dismissed[j]),
                "applied": bool(outcome.applied[j]),
                "purchased": bool(outcome.purchased[j]),
            }
        )
    return events


async def _send_events(
    events: list[dict[str, Any]], api: ApiClient, keys: dict[str, str], summary: TrafficSummary
) -> None:
    by_app: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_app.setdefault(e["app"], []).append(e)
    for app, batch_events in by_app.items():
        for start in range(0, len(batch_events), MAX_EVENTS_PER_BATCH):
            batch = batch_events[start : start + MAX_EVENTS_PER_BATCH]
            summary.events_sent += len(batch)
            for e in batch:
                summary.events_by_type[e["event_type"]] = (
                    summary.events_by_type.get(e["event_type"], 0) + 1
                )
            ack = await api.post("/v1/events", {"events": batch}, keys[app], summary.events)
            if ack is not None:
                summary.events_acknowledged += int(ack["accepted"])


async def run_traffic(
    pop: Population,
    config: TrafficConfig,
    *,
    url: str,
    shadow_url: str | None,
    keys: dict[str, str],
    redis_url: str,
    out_dir: Path,
    progress: bool = True,
) -> TrafficSummary:
    """Run ``config.days`` simulated days against ``url``; writes the ledger (served items and
    requests, Parquet) under ``out_dir`` and returns the summary."""
    started = time.perf_counter()
    last = pop.first_day + timedelta(days=config.days - 1)
    summary = TrafficSummary(
        days=config.days,
        first_day=pop.first_day.isoformat(),
        last_day=last.isoformat(),
        sessions=0,
        recommendations=CallStats(),
        shadow=CallStats(),
        events=CallStats(),
        events_sent=0,
        events_acknowledged=0,
        events_by_type={},
        impressions=0,
        requests_by_variant={},
        empty_slates=0,
        degraded_responses=0,
        contact_keys_rolled=0,
        wall_seconds=0.0,
        requests_per_second=0.0,
    )
    if last >= datetime.now(UTC).date():
        raise ValueError(
            f"days: the traffic would run to {last}, not before today; simulate a bank that "
            "ends earlier (--end-date) or run fewer days"
        )
    allowed = (
        None if config.customers is None else np.arange(min(config.customers, len(pop.customer_id)))
    )
    counters = redis.Redis.from_url(redis_url)
    items: list[dict[str, Any]] = []
    requests_out: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    connector = aiohttp.TCPConnector(limit=2 * config.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        api = ApiClient(url, session, max_retries=config.max_retries)
        shadow = (
            ApiClient(shadow_url, session, max_retries=config.max_retries)
            if shadow_url and config.shadow
            else None
        )
        bar = tqdm(desc="traffic", unit="request", disable=not progress)
        with bar:
            for day_index in range(config.days):
                date = pop.first_day + timedelta(days=day_index)
                seeds = np.random.SeedSequence([config.seed, day_index]).spawn(2)
                rng_sessions, rng_outcomes = (np.random.default_rng(s) for s in seeds)
                start_of_day(pop, date)
                sessions = daily_sessions(pop, date, rng_sessions, allowed)
                summary.sessions += len(sessions)
                bar.set_postfix_str(f"day {day_index + 1}/{config.days} {date}")
                day = await _serve_sessions(
                    sessions, pop, api, shadow, keys, summary, config.concurrency, bar
                )
                events = _outcomes_and_events(
                    day_index, sessions, day, pop, rng_outcomes, items, requests_out
                )
                await _send_events(events, api, keys, summary)
                end_of_day(pop)
                summary.contact_keys_rolled += end_contact_day(
                    counters, end_week=(day_index + 1) % 7 == 0
                )
    for r in requests_out:
        summary.requests_by_variant[r["variant"]] = (
            summary.requests_by_variant.get(r["variant"], 0) + 1
        )
        summary.empty_slates += r["n_items"] == 0
        summary.degraded_responses += r["degraded"]
    summary.impressions = len(items)
    summary.wall_seconds = round(time.perf_counter() - started, 2)
    summary.requests_per_second = round(summary.recommendations.sent / summary.wall_seconds, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(items).to_parquet(out_dir / ITEMS_FILE, index=False)
    pd.DataFrame(requests_out).to_parquet(out_dir / REQUESTS_FILE, index=False)
    (out_dir / "traffic_summary.json").write_text(summary.model_dump_json(indent=2))
    return summary
