"""The Parquet event log of served events: the WAL's ``event_log`` cursor, exactly once.

Pending WAL records become a table with exactly the canonical EVENTS schema, written under
``event_log_dir/event_date=YYYY-MM-DD/`` (UTC date of ``event_timestamp``, as every canonical
events table is partitioned). A file's name comes from the owner and the WAL position the batch
starts at, ``part-<owner>-<segment>-<offset>.parquet``: if the process dies after writing the
Parquet but before committing the cursor, the replay starts at the same position and replaces
the same files, so every acknowledged event lands in the log exactly once.
"""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from persona.layout import conform
from persona.schemas import EVENTS
from serving.event_wal import EVENT_LOG_CURSOR, WalPosition, WriteAheadLog, fsync_dir

#: Most rows one flush takes from the WAL (bounds memory; call flush again for the rest).
DEFAULT_FLUSH_ROWS: Final = 100_000
_US_PER_DAY: Final = 86_400 * 1_000_000
_EPOCH: Final = date(1970, 1, 1)


def events_table(records: list[dict[str, Any]]) -> pa.Table:
    """WAL records (``event_timestamp`` in integer microseconds, UTC) as a canonical EVENTS
    table; ValueError naming the column if a record lacks one."""
    columns: dict[str, pa.Array] = {}
    for spec in EVENTS.columns:
        try:
            values = [record[spec.name] for record in records]
        except KeyError:
            raise ValueError(f"{spec.name}: missing from a WAL record") from None
        if pa.types.is_timestamp(spec.type):
            columns[spec.name] = pa.array(values, pa.int64()).cast(spec.type)
        else:
            columns[spec.name] = pa.array(values, spec.type)
    return conform(pa.table(columns), EVENTS)


def part_file_name(owner: str, start: WalPosition) -> str:
    """The Parquet file name of the batch of ``owner``'s WAL that starts at ``start``."""
    return f"part-{owner}-{start.segment:06d}-{start.offset:012d}.parquet"


class EventLogWriter:
    """Flushes WALs into the Parquet event log under ``event_log_dir`` (created on first write).

    Several owners may flush into one directory concurrently: their file names differ.
    """

    def __init__(self, event_log_dir: Path) -> None:
        self.event_log_dir = Path(event_log_dir)

    def flush(self, wal: WriteAheadLog, max_rows: int = DEFAULT_FLUSH_ROWS) -> int:
        """Write up to ``max_rows`` pending records of ``wal``'s ``event_log`` cursor as
        Parquet (durably), then commit the cursor; returns the number of rows written."""
        if max_rows <= 0:
            raise ValueError(f"max_rows: must be positive, got {max_rows}")
        start = wal.position(EVENT_LOG_CURSOR)
        records, end = wal.pending(EVENT_LOG_CURSOR, max_rows)
        if records:
            self._write_batch(wal.owner, start, records)
        if end != start:
            wal.commit(EVENT_LOG_CURSOR, end)
        return len(records)

    def _write_batch(self, owner: str, start: WalPosition, records: list[dict[str, Any]]) -> None:
        table = events_table(records)
        name = part_file_name(owner, start)
        # A replay may split dates differently (or take fewer rows) than the attempt it repeats:
        # drop everything that attempt left before writing, so no row is in the log twice.
        if self.event_log_dir.is_dir():
            for stale in [
                *self.event_log_dir.glob(f"*/{name}"),
                *self.event_log_dir.glob(f"*/.{name}.tmp"),
            ]:
                stale.unlink(missing_ok=True)
        days: dict[int, list[int]] = defaultdict(list)
        for row, record in enumerate(records):
            days[record["event_timestamp"] // _US_PER_DAY].append(row)
        for day, rows in sorted(days.items()):
            folder = self.event_log_dir / f"{EVENTS.partition_by}={_EPOCH + timedelta(days=day)}"
            _write_durably(table.take(rows), folder, name)


def _write_durably(table: pa.Table, folder: Path, name: str) -> None:
    """Write ``folder/name`` whole or not at all (temp file, fsync, rename, fsync folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    # A leading dot hides a half-written file from DuckDB's *.parquet glob and pyarrow.dataset.
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as file:
        pq.write_table(table, file, compression="zstd")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, folder / name)
    fsync_dir(folder)
    fsync_dir(folder.parent)


def flush_to_event_log(
    wal: WriteAheadLog,
    event_log_dir: Path,
    owner: str | None = None,
    max_rows: int = DEFAULT_FLUSH_ROWS,
) -> int:
    """Flush up to ``max_rows`` pending ``event_log`` records of ``wal`` into ``event_log_dir``;
    returns rows written. ``owner``, if given, must be ``wal.owner`` (file names use it)."""
    if owner is not None and owner != wal.owner:
        raise ValueError(f"owner: {owner!r} is not the WAL's owner {wal.owner!r}")
    return EventLogWriter(event_log_dir).flush(wal, max_rows)
