"""The events engine: group commit, the online apply thread, and batch apply on real Feast.

Group commit is checked with a slowed, recording fsync (so concurrent writers really overlap)
and with a real multi-threaded writer killed by SIGKILL. The online apply runs against a real
Feast repo (the crafted bank's definitions) in the shared Redis, under a project and customer
ids no other test uses.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from persona.features.store import OnlineStoreChoice, apply_definitions, open_store
from persona.settings import PersonaSettings
from persona.validation import validate_dataset
from serving import event_wal
from serving.catalogue import Catalogue
from serving.contact_policy import ContactCounters
from serving.event_apply import APPLY_ERRORS, ApplyLoop
from serving.event_wal import ONLINE_CURSOR, WalPosition, WriteAheadLog
from serving.events import EventProcessor
from serving.settings import ServingArgs
from tests.features.conftest import VALIDATION_NOW, crafted_tables, write_raw
from tests.serving.test_event_log import REPO_ROOT, logged_ids, make_event

REDIS_URL = os.environ.get("PERSONA_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = datetime(2026, 11, 24, 10, tzinfo=UTC)


# --- group commit ---------------------------------------------------------------------------


def slow_recording_datasync(
    monkeypatch: pytest.MonkeyPatch, synced: dict[str, int], delay_s: float = 0.002
) -> None:
    """Make every data fsync slow (writers pile up behind it) and record, per segment file,
    the size it made durable."""
    real = event_wal._datasync

    def datasync(fd: int) -> None:
        size = os.fstat(fd).st_size
        time.sleep(delay_s)
        real(fd)
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        synced[name] = max(synced.get(name, 0), size)

    monkeypatch.setattr(event_wal, "_datasync", datasync)


def test_concurrent_appends_share_fsyncs_and_none_returns_before_its_bytes_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: dict[str, int] = {}
    slow_recording_datasync(monkeypatch, synced)
    wal = WriteAheadLog(tmp_path, "a", segment_max_bytes=32 * 1024)
    early: list[str] = []
    appends = 0
    lock = threading.Lock()

    def writer(thread: int) -> None:
        nonlocal appends
        for i in range(40):
            _, end = wal.append([make_event(i * 3 + j, tag=f"t{thread}") for j in range(3)])
            # Rotation fsyncs the old segment whole, so only the current one is checked here.
            segment = event_wal._segment_name(end.segment)
            if end.segment == wal.end_position().segment and synced.get(segment, 0) < end.offset:
                early.append(f"{segment}@{end.offset}")
            with lock:
                appends += 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert early == []
    assert appends == 320
    assert wal.fsyncs < appends / 2, f"{wal.fsyncs} fsyncs for {appends} appends: no grouping"
    wal.close()
    with WriteAheadLog(tmp_path, "a") as reopened:
        records, _ = reopened.pending(ONLINE_CURSOR, 10_000)
    assert sorted(r["event_id"] for r in records) == sorted(
        f"t{t}-{i}" for t in range(8) for i in range(120)
    )


def test_a_failed_fsync_acknowledges_nothing_and_refuses_every_later_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WriteAheadLog(tmp_path, "a")
    wal.append([make_event(0)])

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(event_wal, "_datasync", broken)
    with pytest.raises(OSError, match="Input/output"):
        wal.append([make_event(1)])
    assert [r["event_id"] for r in wal.pending(ONLINE_CURSOR, 10)[0]] == ["e-0"]
    monkeypatch.undo()  # even a healthy disk now: the kernel may have dropped the pages
    with pytest.raises(OSError, match="earlier write or fsync failed"):
        wal.append([make_event(2)])
    wal.close()


THREADED_WRITER = textwrap.dedent(
    """
    import sys
    import threading
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from serving.event_wal import WriteAheadLog

    wal = WriteAheadLog(Path(sys.argv[1]), "doomed", segment_max_bytes=40_000)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    out = threading.Lock()

    def writer(thread):
        for n in range(100_000):
            ids = [f"w{thread}-{n}-{j}" for j in range(5)]
            wal.append([
                {"event_id": i, "customer_id": 1, "app": "rib", "event_type": "login",
                 "event_timestamp": start + timedelta(seconds=n)}
                for i in ids
            ])
            with out:
                print(" ".join(ids), flush=True)

    for t in range(6):
        threading.Thread(target=writer, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_events_acked_by_concurrent_writers_survive_sigkill(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", THREADED_WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    assert process.stdout is not None
    acked: list[str] = []
    try:
        for line in process.stdout:
            acked += line.split()
            if len(acked) >= 3_000:
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    with WriteAheadLog(tmp_path, "doomed") as wal:
        records, _ = wal.pending(ONLINE_CURSOR, 1_000_000)
    stored = [r["event_id"] for r in records]
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored)


# --- the apply loop -------------------------------------------------------------------------


class FakeLog:
    """A WAL stand-in: an end position that ingests push and a step that applies up to it."""

    def __init__(self, outcome: Callable[[], bool] = lambda: True, delay_s: float = 0.0):
        self.end = WalPosition(1, 0)
        self.applied_to = WalPosition(1, 0)
        self.outcome, self.delay_s = outcome, delay_s
        self.steps = 0

    def append(self) -> WalPosition:
        self.end = WalPosition(1, self.end.offset + 10)
        return self.end

    def step(self, applied: Callable[[WalPosition], None]) -> bool | None:
        if self.applied_to >= self.end:
            return None
        self.steps += 1
        time.sleep(self.delay_s)
        if not self.outcome():
            return False
        target = self.end
        applied(target)
        self.applied_to = target
        return True

    def loop(self, retry_s: float = 0.05) -> ApplyLoop:
        return ApplyLoop(
            self.step, lambda: self.applied_to, lambda: self.applied_to < self.end, retry_s
        )


def test_the_apply_loop_answers_waiters_once_their_position_is_applied() -> None:
    fake = FakeLog(delay_s=0.01)
    loop = fake.loop()
    loop.start()
    try:
        ends = [fake.append() for _ in range(20)]
        loop.wake(acked=ends[-1])
        assert all(loop.wait_applied(end, 5.0) for end in ends)
        assert fake.steps < 20  # one step took what several ingests appended
        assert len(loop.lag_s) == 1
        assert asyncio.run(loop.wait_applied_async(ends[-1], 0.0)) is True  # already applied
    finally:
        loop.stop()


def test_a_failed_apply_answers_false_at_once_and_is_retried() -> None:
    healthy = threading.Event()
    fake = FakeLog(outcome=healthy.is_set)
    loop = fake.loop(retry_s=0.05)
    loop.start()
    try:
        end = fake.append()
        started = time.monotonic()
        loop.wake(acked=end)
        assert loop.wait_applied(end, 5.0) is False
        assert time.monotonic() - started < 1.0  # the failure, not the timeout, answered
        healthy.set()  # Redis is back: the retry timer applies it without a new ingest
        deadline = time.monotonic() + 5
        while fake.applied_to < end and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.applied_to == end
    finally:
        loop.stop()


def test_async_waiters_are_answered_without_blocking_the_event_loop() -> None:
    fake = FakeLog(delay_s=0.02)
    loop = fake.loop()
    loop.start()

    async def many() -> list[bool]:
        async def one() -> bool:
            end = fake.append()
            loop.wake(acked=end)
            return await loop.wait_applied_async(end, 5.0)

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            for _ in range(5):
                await asyncio.sleep(0.005)
                ticks += 1

        results = await asyncio.gather(*[one() for _ in range(30)], ticker())
        assert ticks == 5
        return [bool(r) for r in results[:30]]

    try:
        assert asyncio.run(many()) == [True] * 30
        assert asyncio.run(loop.wait_applied_async(fake.end, 0.5)) is True
    finally:
        loop.stop()


# --- online apply on real Feast and Redis ------------------------------------------------------


@pytest.fixture(scope="module")
def feature_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crafted bank's offline tables (what Feast's definitions are applied over)."""
    from persona.features.build import build_features

    root = tmp_path_factory.mktemp("events_bank")
    write_raw(root, crafted_tables())
    assert validate_dataset(root, now=VALIDATION_NOW, progress=False).passed
    build_features(root, progress=False)
    return root


def serving_args(feature_tables: Path, data_dir: Path, redis_url: str = REDIS_URL) -> ServingArgs:
    """A serving data dir with a freshly applied Feast project of its own (no rows yet)."""
    project = f"ev_{uuid.uuid4().hex[:10]}"
    settings = PersonaSettings(
        data_dir=data_dir, online_store="redis", redis_url=REDIS_URL, feast_project=project
    )
    apply_definitions(
        open_store(settings, OnlineStoreChoice("redis", "test", REDIS_URL)), feature_tables
    )
    return ServingArgs(
        data_dir=data_dir, online_store="redis", redis_url=redis_url, feast_project=project
    )


@pytest.fixture
def processor_factory(
    feature_tables: Path, tmp_path: Path
) -> Iterator[Callable[..., EventProcessor]]:
    made: list[EventProcessor] = []

    def make(name: str = "p", **kwargs: Any) -> EventProcessor:
        args = serving_args(feature_tables, tmp_path / name, kwargs.pop("redis_url", REDIS_URL))
        processor = EventProcessor(
            args, f"events-{name}", Catalogue.from_data_dir(feature_tables), **kwargs
        )
        made.append(processor)
        return processor

    yield make
    for processor in made:
        processor.close()


def fresh_customers(n: int) -> list[int]:
    base = uuid.uuid4().int % 10**12 + 10**12  # ids no other test (or run) touches
    return [base + i for i in range(n)]


def session(customers: list[int], shift: int = 0) -> list[dict[str, Any]]:
    """Events of ``customers``: impressions, clicks, dismissals (one product twice), purchases,
    logins; several in the same second, one late (before the others)."""
    products = ["card_a", "card_b", "loan_a", "deposit_a", "insurance_b"]
    events: list[dict[str, Any]] = []
    for n, customer in enumerate(customers):
        for i in range(24):
            kind = ["impression", "click", "impression", "dismiss", "purchase", "login"][i % 6]
            moment = T0 + timedelta(milliseconds=250 * i + 7 * n)
            if i == 19:
                moment = T0 - timedelta(minutes=5)  # a late click
            event: dict[str, Any] = {
                "event_id": f"{customer}-{shift}-{i}",
                "customer_id": customer + shift,
                "app": "rib",
                "event_type": kind,
                "event_timestamp": moment,
            }
            if kind != "login":
                event["product_id"] = products[(i + n) % len(products)]
            events.append(event)
    return events


def retrying(apply: Callable[[], object]) -> None:
    """Serving's Redis timeouts are 0.2 s; a shared CI Redis can stall longer: retry a few times
    (an apply that failed is retried as a whole, as the apply thread does)."""
    for _ in range(4):
        try:
            if apply() is not False:
                return
        except APPLY_ERRORS:
            pass
        time.sleep(0.5)
    raise AssertionError("online apply kept failing")


def online_state(processor: EventProcessor, customers: list[int]) -> list[dict[str, Any]]:
    """What serving reads back: sequence and holdings (Feast) and the contact counters."""
    features = [
        "customer_sequence:seq_product_ids",
        "customer_sequence:seq_event_types",
        "customer_sequence:seq_timestamps",
        "customer_sequence:seq_length",
        "customer_holdings:held_product_ids",
        "customer_holdings:n_holdings",
        "customer_holdings:held_card",
    ]
    rows = processor.store.get_online_features(
        features=features, entity_rows=[{"customer_id": c} for c in customers]
    ).to_dict()
    counters = ContactCounters(redis.Redis.from_url(REDIS_URL))
    out = []
    for i, customer in enumerate(customers):
        contact = counters.read(customer, (T0 + timedelta(minutes=1)).timestamp())
        out.append(
            {
                **{k: rows[k][i] for k in rows if k != "customer_id"},
                "today": contact.product_today,
                "week": contact.product_week,
                "dismissed": contact.dismissed_at_s,
            }
        )
    return out


@pytest.mark.redis
@pytest.mark.slow
def test_one_batch_leaves_the_online_state_one_event_at_a_time_would(
    processor_factory: Callable[..., EventProcessor],
) -> None:
    customers = fresh_customers(4)
    offset = 10**6  # the second run's customers: same events, other ids (counters are global)
    one_by_one = processor_factory("single")
    batched = processor_factory("batch")

    one_by_one.wal.append(session(customers))
    while records_and_end := one_by_one.wal.pending(ONLINE_CURSOR, 1):
        if not records_and_end[0]:
            break
        retrying(lambda: one_by_one.online.apply(records_and_end[0]))
        one_by_one.wal.commit(ONLINE_CURSOR, records_and_end[1])
    batched.wal.append(session(customers, shift=offset))
    retrying(batched.apply_online)
    assert batched.wal.pending(ONLINE_CURSOR, 1)[0] == []

    single = online_state(one_by_one, customers)
    batch = online_state(batched, [c + offset for c in customers])
    assert single == batch
    first = single[0]
    # 12 product interactions per customer (4 clicks, 4 dismissals, 4 purchases), every one
    # kept, the late one first: a second update in the same second is not dropped by Feast.
    assert first["seq_length"] == 12
    assert first["seq_timestamps"] == sorted(first["seq_timestamps"])
    assert first["seq_timestamps"][0] == int((T0 - timedelta(minutes=5)).timestamp())
    assert first["n_holdings"] == len(first["held_product_ids"]) >= 1
    assert sum(first["today"].values()) == 8 and first["dismissed"]


@pytest.mark.redis
@pytest.mark.slow
def test_concurrent_ingests_are_applied_online_and_logged_exactly_once(
    processor_factory: Callable[..., EventProcessor],
) -> None:
    processor = processor_factory()
    customers = fresh_customers(6)
    answers: list[tuple[list[str], bool]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        mine = session(customers[n : n + 1])
        for start in range(0, len(mine), 4):
            answer = processor.ingest(mine[start : start + 4])
            with lock:
                answers.append(answer)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 36 and all(applied for _, applied in answers)
    assert processor.wal.fsyncs <= 36
    assert [s["seq_length"] for s in online_state(processor, customers)] == [12] * 6
    assert processor.flush() == 144 and processor.flush() == 0
    ids = logged_ids(processor.args.live_event_log)
    assert sorted(ids) == sorted(i for ids_, _ in answers for i in ids_)


@pytest.mark.redis
@pytest.mark.slow
def test_async_ingest_and_no_wait_ingest(
    processor_factory: Callable[..., EventProcessor],
) -> None:
    processor = processor_factory(online_wait_s=0.0)
    customers = fresh_customers(3)
    ids, _ = processor.ingest(session(customers[:1]))
    assert len(ids) == 24  # durable; the apply follows without the request waiting for it

    async def ingest_all() -> list[tuple[list[str], bool]]:
        return list(
            await asyncio.gather(
                *[processor.ingest_async(session([c]), wait_online_s=5.0) for c in customers[1:]]
            )
        )

    assert [applied for _, applied in asyncio.run(ingest_all())] == [True, True]
    assert processor.applier.wait_applied(processor.wal.end_position(), 5.0)
    assert [s["seq_length"] for s in online_state(processor, customers)] == [12] * 3


@pytest.mark.redis
@pytest.mark.slow
def test_redis_down_answers_durable_but_not_applied_without_waiting(
    processor_factory: Callable[..., EventProcessor],
) -> None:
    processor = processor_factory(redis_url="redis://127.0.0.1:1/0", online_wait_s=120.0)
    started = time.monotonic()
    ids, applied = processor.ingest(session(fresh_customers(1))[:6])
    assert len(ids) == 6 and not applied
    # The failed attempt answered (after redis-py's own connection retries), not the wait.
    assert time.monotonic() - started < 60.0
    assert len(processor.wal.pending(ONLINE_CURSOR, 100)[0]) == 6  # kept for the retry
