"""The durable event path: write-ahead log, Parquet event log, orphan takeover.

Real files under tmp_path, real Parquet read back with DuckDB and pyarrow.dataset, a real
subprocess killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pytest

from persona.layout import parquet_glob
from persona.schemas import EVENTS
from serving.event_log import EventLogWriter, flush_to_event_log, part_file_name
from serving.event_wal import (
    EVENT_LOG_CURSOR,
    ONLINE_CURSOR,
    ORIGIN,
    WalLockedError,
    WalPosition,
    WriteAheadLog,
    adopt_orphans,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY_ONE = datetime(2025, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC)


def make_event(i: int, *, tag: str = "e", days: int = 0) -> dict[str, Any]:
    """A canonical impression event; every third one is a login with nulls."""
    timestamp = DAY_ONE + timedelta(days=days, microseconds=i)
    if i % 3 == 2:
        return {
            "event_id": f"{tag}-{i}",
            "customer_id": 1 + i % 50,
            "app": "rib",
            "event_type": "login",
            "event_timestamp": timestamp,
        }
    return {
        "event_id": f"{tag}-{i}",
        "customer_id": 1 + i % 50,
        "product_id": f"prod_{i % 7}",
        "app": "imobile",
        "event_type": "impression",
        "event_timestamp": timestamp,
        "request_id": f"req-{i // 10}",
        "position": 1 + i % 10,
        "amount": None,
        "propensity": 0.125,
        "model_version": "sasrec:3",
        "variant": "B",
        "device": "ios",
    }


def read_log(event_log_dir: Path) -> list[tuple[Any, ...]]:
    """Every row of the event log, ordered by event_id, columns in canonical order."""
    columns = ", ".join(EVENTS.column_names)
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT {columns} FROM read_parquet(?, hive_partitioning=false) ORDER BY event_id",
            [parquet_glob(event_log_dir)],
        ).fetchall()


def logged_ids(event_log_dir: Path) -> list[str]:
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT event_id FROM read_parquet(?, hive_partitioning=false)",
            [parquet_glob(event_log_dir)],
        ).fetchall()
    return [row[0] for row in rows]


def expected_row(event: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(event.get(name) for name in EVENTS.column_names)


def drain(wal: WriteAheadLog, cursor: str) -> list[dict[str, Any]]:
    """Consume and commit everything pending on ``cursor`` (what the online applier does)."""
    records, position = wal.pending(cursor, 1_000_000)
    wal.commit(cursor, position)
    return records


# --- round trip -----------------------------------------------------------------------------


def test_append_flush_round_trip_gives_the_canonical_rows(tmp_path: Path) -> None:
    events = [make_event(i, days=i % 3) for i in range(30)]
    log_dir = tmp_path / "event_log"
    with WriteAheadLog(tmp_path / "wal", "replica-a") as wal:
        start, end = wal.append(events[:10])
        assert start == WalPosition(1, 0) and end > start
        wal.append(events[10:])
        assert flush_to_event_log(wal, log_dir, "replica-a", 1000) == 30
        assert flush_to_event_log(wal, log_dir, "replica-a", 1000) == 0

    assert read_log(log_dir) == sorted(map(expected_row, events))
    dataset = ds.dataset(log_dir, format="parquet")
    assert dataset.schema == EVENTS.arrow_schema()
    assert dataset.count_rows() == 30
    # Partitioned by the UTC date of event_timestamp (23:59:59.999999 + i µs crosses midnight).
    folders = sorted(p.name for p in log_dir.iterdir())
    assert folders == [f"event_date=2025-03-0{d}" for d in (1, 2, 3, 4)]
    for folder in log_dir.iterdir():
        for part in folder.glob("*.parquet"):
            dates = ds.dataset(part).to_table().column("event_timestamp").to_pylist()
            assert {t.date().isoformat() for t in dates} == {folder.name.split("=")[1]}


def test_pending_returns_encoded_records_and_commit_persists_across_reopen(
    tmp_path: Path,
) -> None:
    with WriteAheadLog(tmp_path, "a") as wal:
        wal.append([make_event(0), make_event(1)])
        records, position = wal.pending(ONLINE_CURSOR, 1)
        assert [r["event_id"] for r in records] == ["e-0"]
        assert records[0]["event_timestamp"] == (DAY_ONE - datetime(1970, 1, 1, tzinfo=UTC)) // (
            timedelta(microseconds=1)
        )
        wal.commit(ONLINE_CURSOR, position)
    with WriteAheadLog(tmp_path, "a") as wal:
        assert wal.position(ONLINE_CURSOR) == position
        assert wal.position(EVENT_LOG_CURSOR) == ORIGIN
        assert [r["event_id"] for r in wal.pending(ONLINE_CURSOR, 10)[0]] == ["e-1"]
        assert len(wal.pending(EVENT_LOG_CURSOR, 10)[0]) == 2


# --- crashes --------------------------------------------------------------------------------


def test_torn_tail_line_is_ignored_and_overwritten(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "a") as wal:
        _, end = wal.append([make_event(i) for i in range(3)])
    segment = tmp_path / "a" / "segment-000001.jsonl"
    with open(segment, "ab") as file:  # a crash mid-append: half a line, never acknowledged
        file.write(b'{"event_id":"torn","customer_id":1,"app":"ri')

    with WriteAheadLog(tmp_path, "a") as wal:
        records, position = wal.pending(EVENT_LOG_CURSOR, 100)
        assert [r["event_id"] for r in records] == ["e-0", "e-1", "e-2"]
        assert position == end == wal.end_position()
        wal.append([make_event(3)])
        records, _ = wal.pending(EVENT_LOG_CURSOR, 100)
        assert [r["event_id"] for r in records] == ["e-0", "e-1", "e-2", "e-3"]
        assert flush_to_event_log(wal, tmp_path / "log") == 4
    assert b"torn" not in segment.read_bytes()


def test_replay_after_crash_between_parquet_and_commit_writes_no_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [make_event(i, days=i // 50) for i in range(100)]  # two dates, in order
    log_dir = tmp_path / "log"
    wal = WriteAheadLog(tmp_path / "wal", "a")
    wal.append(events)

    def crash(cursor: str, position: WalPosition) -> None:
        raise RuntimeError("process died before the cursor commit")

    monkeypatch.setattr(wal, "commit", crash)
    with pytest.raises(RuntimeError):
        flush_to_event_log(wal, log_dir)
    assert len(logged_ids(log_dir)) == 100  # the Parquet made it, the cursor did not
    wal.close()

    # The replay takes smaller batches than the lost attempt: its rows must not survive twice.
    with WriteAheadLog(tmp_path / "wal", "a") as wal:
        assert wal.position(EVENT_LOG_CURSOR) == ORIGIN
        written = [flush_to_event_log(wal, log_dir, max_rows=30) for _ in range(5)]
    assert written == [30, 30, 30, 10, 0]
    assert sorted(logged_ids(log_dir)) == sorted(e["event_id"] for e in events)
    assert read_log(log_dir) == sorted(map(expected_row, events))


def test_replay_rewrites_the_same_file_names(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    with WriteAheadLog(tmp_path / "wal", "a") as wal:
        wal.append([make_event(i) for i in range(5)])
        EventLogWriter(log_dir)._write_batch("a", ORIGIN, wal.pending(EVENT_LOG_CURSOR, 5)[0])
        first = sorted(p.relative_to(log_dir) for p in log_dir.rglob("*.parquet"))
        assert EventLogWriter(log_dir).flush(wal) == 5
        second = sorted(p.relative_to(log_dir) for p in log_dir.rglob("*.parquet"))
    assert first == second and first[0].name == part_file_name("a", ORIGIN)
    assert len(logged_ids(log_dir)) == 5


# --- segments -------------------------------------------------------------------------------


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("segment-*.jsonl"))


def test_segments_rotate_and_are_deleted_once_both_cursors_pass(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    events = [make_event(i) for i in range(60)]
    with WriteAheadLog(tmp_path / "wal", "a", segment_max_bytes=2_000) as wal:
        for i in range(0, 60, 3):
            wal.append(events[i : i + 3])
        directory = tmp_path / "wal" / "a"
        segments = segment_files(directory)
        assert len(segments) >= 5
        assert all((directory / s).stat().st_size <= 2_000 for s in segments)

        while flush_to_event_log(wal, log_dir, max_rows=7):
            pass
        assert segment_files(directory) == segments  # "online" has not passed any yet

        online = drain(wal, ONLINE_CURSOR)
        assert [r["event_id"] for r in online] == [e["event_id"] for e in events]
        assert segment_files(directory) == segments[-1:]  # only the current one is kept
        assert wal.pending(EVENT_LOG_CURSOR, 10)[0] == []

        wal.append([make_event(100)])
        assert [r["event_id"] for r in drain(wal, ONLINE_CURSOR)] == ["e-100"]
        assert flush_to_event_log(wal, log_dir) == 1
    assert sorted(logged_ids(log_dir)) == sorted([e["event_id"] for e in events] + ["e-100"])


def test_a_new_segment_is_deleted_only_after_the_slower_cursor_passes_it(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "a", segment_max_bytes=600) as wal:
        for i in range(6):
            wal.append([make_event(i)])
        before = segment_files(tmp_path / "a")
        _, position = wal.pending(ONLINE_CURSOR, 2)
        wal.commit(ONLINE_CURSOR, position)
        drain(wal, EVENT_LOG_CURSOR)
        after = segment_files(tmp_path / "a")
        assert len(before) > 2 and after == before[position.segment - 1 :]


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customer_id": None}, "customer_id"),
        ({"event_timestamp": datetime(2025, 3, 1)}, "event_timestamp"),  # naive
        ({"app": "fax"}, "app"),
        ({"position": 70_000}, "position"),
        ({"customer_id": "7"}, "customer_id"),
        ({"propensity": float("nan")}, "propensity"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_record_is_refused_naming_the_field_and_nothing_is_written(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    bad = make_event(1) | change
    with WriteAheadLog(tmp_path, "a") as wal:
        with pytest.raises(ValueError, match=field):
            wal.append([make_event(0), bad])
        assert wal.pending(EVENT_LOG_CURSOR, 10)[0] == []
        assert wal.end_position() == WalPosition(1, 0)


def test_a_missing_required_column_is_refused(tmp_path: Path) -> None:
    event = make_event(0)
    del event["event_type"]
    with WriteAheadLog(tmp_path, "a") as wal, pytest.raises(ValueError, match="event_type"):
        wal.append([event])


def test_bad_cursor_use_is_refused(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, "a") as wal:
        _, end = wal.append([make_event(0)])
        with pytest.raises(ValueError, match="cursor 'feast'"):
            wal.pending("feast", 10)
        with pytest.raises(ValueError, match="beyond the WAL end"):
            wal.commit(ONLINE_CURSOR, WalPosition(end.segment, end.offset + 1))
        wal.commit(ONLINE_CURSOR, end)
        with pytest.raises(ValueError, match="before cursor 'online'"):
            wal.commit(ONLINE_CURSOR, ORIGIN)
        with pytest.raises(ValueError, match="owner"):
            flush_to_event_log(wal, tmp_path / "log", owner="b")


# --- ownership ------------------------------------------------------------------------------


def test_a_second_writer_on_one_owner_is_refused(tmp_path: Path) -> None:
    first = WriteAheadLog(tmp_path, "a")
    with pytest.raises(WalLockedError, match="locked"):
        WriteAheadLog(tmp_path, "a")
    assert issubclass(WalLockedError, BlockingIOError)
    first.close()
    with pytest.raises(ValueError, match="closed"):
        first.append([make_event(0)])
    WriteAheadLog(tmp_path, "a").close()


def test_orphans_are_adopted_flushed_applied_and_retired(tmp_path: Path) -> None:
    root, log_dir = tmp_path / "wal", tmp_path / "log"
    live = WriteAheadLog(root, "live")
    dead = WriteAheadLog(root, "dead")
    dead.append([make_event(i, tag="dead") for i in range(20)])
    assert adopt_orphans(root, "live") == []  # "dead" still holds its lock
    dead.close()
    assert adopt_orphans(root, "live") == ["dead"]
    assert adopt_orphans(root, "dead") == []  # its own dir is never an orphan; "live" is held

    with WriteAheadLog(root, "dead") as orphan:
        assert adopt_orphans(root, "live") == []  # now held by the adopter
        assert flush_to_event_log(orphan, log_dir, "dead") == 20
        with pytest.raises(ValueError, match="cursor 'online'"):
            orphan.retire()
        assert len(drain(orphan, ONLINE_CURSOR)) == 20
        orphan.retire()
        assert orphan.closed
    assert not (root / "dead").exists()
    assert adopt_orphans(root, "live") == []
    assert sorted(logged_ids(log_dir)) == sorted(f"dead-{i}" for i in range(20))
    live.close()


# --- concurrency and real crashes ------------------------------------------------------------


def test_eight_threads_appending_concurrently_are_flushed_exactly_once(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    wal = WriteAheadLog(tmp_path / "wal", "a", segment_max_bytes=64 * 1024)
    flushed: list[int] = []
    done = threading.Event()

    def producer(thread: int) -> None:
        for i in range(500):
            wal.append([make_event(i, tag=f"t{thread}", days=i % 2)])

    def flusher() -> None:  # flushes while producers append, as serving does
        while not done.is_set():
            flushed.append(flush_to_event_log(wal, log_dir, max_rows=300))
            time.sleep(0.005)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
    consumer = threading.Thread(target=flusher)
    consumer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    consumer.join()
    while flushed[-1] or not flushed:
        flushed.append(flush_to_event_log(wal, log_dir))
    drain(wal, ONLINE_CURSOR)
    wal.close()

    ids = logged_ids(log_dir)
    assert sum(flushed) == len(ids) == 4000
    assert sorted(ids) == sorted(f"t{t}-{i}" for t in range(8) for i in range(500))
    assert len(segment_files(tmp_path / "wal" / "a")) == 1


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path

    from serving.event_wal import WriteAheadLog

    wal = WriteAheadLog(Path(sys.argv[1]), "doomed", segment_max_bytes=50_000)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    acked = 0
    while True:
        batch = [
            {
                "event_id": f"k-{acked + j}",
                "customer_id": 1 + j,
                "app": "nli",
                "event_type": "txn",
                "event_timestamp": start + timedelta(seconds=acked + j),
                "amount": 12.5,
            }
            for j in range(7)
        ]
        wal.append(batch)
        acked += len(batch)
        print(f"acked {acked}", flush=True)
    """
)


def test_events_acked_before_sigkill_are_in_the_log_after_adoption(tmp_path: Path) -> None:
    root, log_dir = tmp_path / "wal", tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    assert process.stdout is not None
    acked = 0
    try:
        for line in process.stdout:
            acked = int(line.split()[1])
            if acked >= 700:
                break
        process.send_signal(signal.SIGKILL)
        rest, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, errors
    for line in rest.splitlines():  # acknowledged after our last read, before the kill
        acked = max(acked, int(line.split()[1]))
    assert acked >= 700

    assert adopt_orphans(root, "survivor") == ["doomed"]
    with WriteAheadLog(root, "doomed") as orphan:
        while flush_to_event_log(orphan, log_dir, "doomed", max_rows=250):
            pass
        drain(orphan, ONLINE_CURSOR)
        orphan.retire()

    ids = logged_ids(log_dir)
    assert len(ids) == len(set(ids))  # exactly once
    assert {f"k-{i}" for i in range(acked)} <= set(ids)
