"""The write-ahead log of served events: accepted events are never lost.

One serving process owns one WAL directory, ``ROOT/<owner>/``, and holds an exclusive
``fcntl.flock`` on its ``lock`` file for as long as it lives::

    ROOT/<owner>/lock                   flock'ed by the live owner (released when it dies)
    ROOT/<owner>/segment-000001.jsonl   append-only, one canonical event per JSON line
    ROOT/<owner>/cursor-<name>.json     how far consumer <name> has durably got

:meth:`WriteAheadLog.append` returns only after the records are written and ``fsync``'ed, so an
acknowledged event survives a crash of the process or the machine. Concurrent appends share one
``fsync`` (group commit): each writer writes its lines, then whichever writer syncs next covers
every line written so far, and the others return without a sync of their own once the durable
end has passed their lines. A failed ``fsync`` poisons the log (every later append raises):
after one, the kernel may have dropped the dirty pages, so a retry could "succeed" without the
data. Consumers (the Parquet event
log, the online store) read with :meth:`WriteAheadLog.pending` from their named cursor and
:meth:`WriteAheadLog.commit` once their own output is durable: delivery is at least once, and
consumers that write idempotently (see :mod:`serving.event_log`) make it exactly once. Segments
every cursor has passed are deleted.

When a process dies its lock is released; :func:`adopt_orphans` lists such owners so a live
process can open their WAL, drain it, and :meth:`WriteAheadLog.retire` it.
"""

from __future__ import annotations

import fcntl
import json
import math
import numbers
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import pyarrow as pa

from persona.schemas import EVENTS, ColumnSpec

#: Default size at which the WAL starts a new segment, bytes.
DEFAULT_SEGMENT_MAX_BYTES: Final = 64 * 1024 * 1024
#: The cursors the serving layer consumes the WAL with.
EVENT_LOG_CURSOR: Final = "event_log"
ONLINE_CURSOR: Final = "online"
SERVING_CURSORS: Final[tuple[str, ...]] = (EVENT_LOG_CURSOR, ONLINE_CURSOR)

LOCK_FILE: Final = "lock"
#: Data (and the size needed to read it back) to disk; plain fsync where there is no fdatasync.
_datasync: Final[Callable[[int], None]] = getattr(os, "fdatasync", os.fsync)
_SEGMENT_RE: Final = re.compile(r"^segment-(\d{6,})\.jsonl$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_INT_BOUNDS: Final[dict[pa.DataType, tuple[int, int]]] = {
    pa.int8(): (-(2**7), 2**7 - 1),
    pa.int16(): (-(2**15), 2**15 - 1),
    pa.int32(): (-(2**31), 2**31 - 1),
    pa.int64(): (-(2**63), 2**63 - 1),
}


class WalLockedError(BlockingIOError):
    """The WAL directory is locked by another live WriteAheadLog (this or another process)."""


@dataclass(frozen=True, order=True)
class WalPosition:
    """A point in the WAL: byte ``offset`` into segment number ``segment``.

    Positions order as the records do; ``WalPosition(0, 0)`` is before every record.
    """

    segment: int
    offset: int


ORIGIN: Final = WalPosition(0, 0)


# --- records --------------------------------------------------------------------------------


def _timestamp_us(name: str, value: object) -> int:
    """A timezone-aware datetime (or integer microseconds) as microseconds since epoch, UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name}: naive datetime {value!r}; give a timezone-aware one (UTC)")
        return (value - _EPOCH) // _ONE_US
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise ValueError(
        f"{name}: expected a timezone-aware datetime or integer microseconds, got {value!r}"
    )


def _column_encoder(spec: ColumnSpec) -> Callable[[object], object]:
    """A function that checks one non-null value of ``spec`` and returns its JSON form."""
    name, kind = spec.name, spec.type
    if pa.types.is_timestamp(kind):
        return lambda value: _timestamp_us(name, value)
    if pa.types.is_string(kind):

        def encode_string(value: object) -> object:
            if not isinstance(value, str):
                raise ValueError(f"{name}: expected a string, got {value!r}")
            return value

        return encode_string
    if pa.types.is_integer(kind):
        low, high = _INT_BOUNDS[kind]

        def encode_int(value: object) -> object:
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise ValueError(f"{name}: expected an integer, got {value!r}")
            number = int(value)
            if not low <= number <= high:
                raise ValueError(f"{name}: {number} does not fit {kind}")
            return number

        return encode_int
    if pa.types.is_floating(kind):

        def encode_float(value: object) -> object:
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name}: {value!r} is not a finite number")
            return float(value)

        return encode_float
    raise TypeError(f"no WAL encoding for column {name!r} of type {kind}")  # schema changed


def _event_encoders() -> dict[str, tuple[ColumnSpec, Callable[[object], object]]]:
    return {spec.name: (spec, _column_encoder(spec)) for spec in EVENTS.columns}


def encode_event(
    record: dict[str, Any],
    encoders: dict[str, tuple[ColumnSpec, Callable[[object], object]]] | None = None,
) -> dict[str, object]:
    """Check one event against the canonical EVENTS schema; return its JSON-ready form.

    Every EVENTS column is emitted in schema order; nullable columns may be absent (null);
    ``event_timestamp`` becomes integer microseconds since epoch, UTC. Raises ValueError naming
    the bad field for a missing required column, an unknown key, a wrong type or a value outside
    the column's allowed values.
    """
    if not isinstance(record, dict):
        raise ValueError(f"an event must be a dict, got {type(record).__name__}")
    encoders = encoders if encoders is not None else _event_encoders()
    unknown = [key for key in record if key not in encoders]
    if unknown:
        raise ValueError(f"unknown event field(s) {', '.join(map(repr, unknown))}")
    encoded: dict[str, object] = {}
    for name, (spec, encode) in encoders.items():
        value = record.get(name)
        if value is None:
            if not spec.nullable:
                raise ValueError(f"{name}: required event field is missing or null")
            encoded[name] = None
            continue
        encoded[name] = encode(value)
        if spec.allowed is not None and value not in spec.allowed:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(map(str, spec.allowed))}")
    return encoded


# --- the log --------------------------------------------------------------------------------


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{kind} {name!r}: use letters, digits, '.', '_' or '-' (max 128)")
    return name


def fsync_dir(path: Path) -> None:
    """Make a directory entry (a created, renamed or deleted file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(number: int) -> str:
    return f"segment-{number:06d}.jsonl"


def _segment_numbers(directory: Path) -> list[int]:
    found = []
    for path in directory.iterdir():
        match = _SEGMENT_RE.match(path.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def _lock_owner_dir(directory: Path) -> int:
    """Open and exclusively flock ``directory/lock``; the returned fd holds the lock.

    Raises WalLockedError if a live WriteAheadLog holds it. Retries if the lock file was
    replaced between open and flock (a concurrent :meth:`WriteAheadLog.retire`).
    """
    lock_path = directory / LOCK_FILE
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WalLockedError(
                f"WAL {directory} is locked by another live writer; two processes never "
                "share one WAL"
            ) from None
        try:
            same_file = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return fd
        os.close(fd)  # we locked a retired (unlinked) lock file: take the new one
        directory.mkdir(parents=True, exist_ok=True)


class WriteAheadLog:
    """An append-only, fsync'ed JSON-lines log of canonical events, owned by one process.

    ``root/owner/`` is created if missing and flock'ed for the life of the object (raises
    :class:`WalLockedError` if another live object holds it). ``cursors`` names the consumers;
    a segment is deleted once every one of them has committed past it. ``segment_max_bytes``:
    a new segment starts when an append would take the current one past this size (bytes).
    Thread-safe.
    """

    def __init__(
        self,
        root: Path,
        owner: str,
        segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES,
        *,
        cursors: tuple[str, ...] = SERVING_CURSORS,
    ) -> None:
        if not cursors:
            raise ValueError("cursors: a WAL needs at least one cursor, or nothing ever frees it")
        if len(set(cursors)) != len(cursors):
            raise ValueError(f"cursors: duplicate names in {cursors}")
        if segment_max_bytes <= 0:
            raise ValueError(f"segment_max_bytes: must be positive, got {segment_max_bytes}")
        self.root = Path(root)
        self.owner = _check_name("owner", owner)
        self.cursors = tuple(_check_name("cursor", c) for c in cursors)
        self.segment_max_bytes = segment_max_bytes
        self.directory = self.root / owner
        self._encoders = _event_encoders()
        # Lock order: _sync_lock, then _append_lock, then _state_lock.
        # _append_lock serialises writes to the segment; _sync_lock elects the one writer that
        # fsyncs for everyone waiting; _state_lock guards the segment list, ends and cursors.
        self._append_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._failed: OSError | None = None
        self.fsyncs = 0  # data fsyncs so far (group commit makes this < appends under load)

        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _lock_owner_dir(self.directory)
        try:
            self._segments = _segment_numbers(self.directory)
            if not self._segments:
                self._segments = [1]
                self._create_segment(1)
            self._truncate_torn_tail(self._segments[-1])
            current = self._segments[-1]
            self._fd = self._open_segment(current)
            # _written: after the last line written (maybe not yet durable); _end: after the
            # last durable line, the only part consumers see.
            self._written = WalPosition(current, os.fstat(self._fd).st_size)
            self._end = self._written
            self._committed = {c: self._load_cursor(c) for c in self.cursors}
        except BaseException:
            self._release_lock()
            raise

    # -- lifecycle --

    def close(self) -> None:
        """Close the current segment and release the owner lock (idempotent)."""
        with self._append_lock:
            if self._lock_fd is None:
                return
            os.close(self._fd)
            self._release_lock()

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    def retire(self) -> None:
        """Delete this WAL's directory and close it; every cursor must be at the end.

        Used on an adopted orphan once it has been flushed and applied. Raises ValueError
        (naming the cursor) if any cursor still has pending records.
        """
        with self._append_lock:
            self._require_open()
            for cursor in self.cursors:
                records, _ = self.pending(cursor, 1)
                if records:
                    raise ValueError(f"cursor {cursor!r}: pending records remain; drain it first")
            os.close(self._fd)
            for path in self.directory.iterdir():
                if path.name != LOCK_FILE and (
                    _SEGMENT_RE.match(path.name) or path.name.startswith("cursor-")
                ):
                    path.unlink()
            # Unlink the lock last, while still holding it: an adopter that opened the old lock
            # file sees it replaced after its flock and starts a fresh, empty WAL instead.
            (self.directory / LOCK_FILE).unlink()
            self.directory.rmdir()
            fsync_dir(self.root)
            self._release_lock()

    # -- writing --

    def append(self, records: list[dict[str, Any]]) -> tuple[WalPosition, WalPosition]:
        """Durably append canonical event records; returns (start, end) positions.

        All records are validated first (ValueError naming the field; nothing is written), then
        written as one JSON line each and fsync'ed before this returns; concurrent appends share
        one fsync. ``event_timestamp`` is stored as integer microseconds since epoch, UTC.
        Raises OSError if the write or the fsync failed (nothing of this call is acknowledged).
        """
        lines = [
            json.dumps(encode_event(r, self._encoders), separators=(",", ":"), allow_nan=False)
            for r in records
        ]
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        with self._append_lock:
            self._require_open()
            self._require_healthy()
            if not data:
                return self._end, self._end
            if self._written.offset > 0 and (
                self._written.offset + len(data) > self.segment_max_bytes
            ):
                self._rotate()
            start = self._written
            self._write_all(data, start.offset)
            end = WalPosition(start.segment, start.offset + len(data))
            self._written = end
        self._sync_through(end)
        return start, end

    def _write_all(self, data: bytes, offset: int) -> None:
        """Write ``data`` at the end of the current segment (append lock held); on failure cut
        the segment back to ``offset`` so no partial line is left for the next writer."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            try:
                os.ftruncate(self._fd, offset)
            except OSError as error:
                self._failed = error  # a partial line stays: refuse every later append
            raise

    def _sync_through(self, end: WalPosition) -> None:
        """Return once everything before ``end`` is fsync'ed: by this call, or by the call
        that held the sync lock while this one waited (group commit)."""
        with self._sync_lock:
            with self._state_lock:
                if self._end >= end:
                    return  # another writer's fsync covered these lines
            with self._append_lock:
                self._require_open()
                self._require_healthy()
                target = self._written
                # A duplicate stays valid if a rotation closes the segment meanwhile.
                fd = os.dup(self._fd)
            try:
                _datasync(fd)  # the file size is synced too: the appended lines are readable
            except OSError as error:
                self._failed = error
                raise
            finally:
                os.close(fd)
            self.fsyncs += 1
            with self._state_lock:
                self._end = max(self._end, target)

    def end_position(self) -> WalPosition:
        """The position after the last durable (acknowledged) record."""
        with self._state_lock:
            return self._end

    # -- reading --

    def position(self, cursor: str) -> WalPosition:
        """The committed position of ``cursor``."""
        self._require_cursor(cursor)
        with self._state_lock:
            return self._committed[cursor]

    def pending(self, cursor: str, limit: int) -> tuple[list[dict[str, Any]], WalPosition]:
        """Up to ``limit`` records after ``cursor``'s committed position, and the position after
        the last one returned (pass it to :meth:`commit` once they are durably consumed).

        Records are dicts of the EVENTS columns with ``event_timestamp`` in integer microseconds
        since epoch, UTC. Only acknowledged records are returned; a torn last line is ignored.
        """
        self._require_open()
        self._require_cursor(cursor)
        if limit <= 0:
            raise ValueError(f"limit: must be positive, got {limit}")
        with self._state_lock:
            position = self._committed[cursor]
            end = self._end
            segments = [s for s in self._segments if s >= position.segment]
        records: list[dict[str, Any]] = []
        for segment in segments:
            offset = position.offset if segment == position.segment else 0
            stop = end.offset if segment == end.segment else None
            offset = self._read_segment(segment, offset, stop, limit, records)
            position = WalPosition(segment, offset)
            if len(records) >= limit or segment == end.segment:
                break
            # Whole segment read and a later one exists: stand at the next one's start, so
            # this segment can be deleted once committed.
            if segment != segments[-1]:
                position = WalPosition(segments[segments.index(segment) + 1], 0)
        return records, position

    def _read_segment(
        self, segment: int, offset: int, stop: int | None, limit: int, out: list[dict[str, Any]]
    ) -> int:
        """Append complete records from ``segment`` (bytes ``offset``..``stop``, or to its end)
        to ``out`` until ``out`` holds ``limit``; returns the offset after the last one taken."""
        path = self._segment_path(segment)
        with open(path, "rb") as file:
            file.seek(offset)
            remaining = None if stop is None else stop - offset
            while len(out) < limit and (remaining is None or remaining > 0):
                line = file.readline() if remaining is None else file.readline(remaining)
                if not line.endswith(b"\n"):
                    break  # end of data, or a torn line that was never acknowledged
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} at byte {offset}: corrupt WAL record") from error
                offset += len(line)
                if remaining is not None:
                    remaining -= len(line)
        return offset

    def commit(self, cursor: str, position: WalPosition) -> None:
        """Durably record that ``cursor`` has consumed everything before ``position``.

        Writes the cursor file atomically (temp file, fsync, rename), then deletes segments that
        every cursor has passed. Raises ValueError for an unknown cursor, a position beyond the
        end, or one before the cursor's committed position.
        """
        self._require_open()
        self._require_cursor(cursor)
        with self._state_lock:
            if position > self._end:
                raise ValueError(f"position: {position} is beyond the WAL end {self._end}")
            if position < self._committed[cursor]:
                raise ValueError(
                    f"position: {position} is before cursor {cursor!r}'s committed "
                    f"{self._committed[cursor]}"
                )
            if position == self._committed[cursor]:
                return
            path = self._cursor_path(cursor)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as file:
                json.dump({"segment": position.segment, "offset": position.offset}, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
            fsync_dir(self.directory)
            self._committed[cursor] = position
            self._delete_passed_segments()

    # -- internals --

    def _segment_path(self, number: int) -> Path:
        return self.directory / _segment_name(number)

    def _cursor_path(self, cursor: str) -> Path:
        return self.directory / f"cursor-{cursor}.json"

    def _require_open(self) -> None:
        if self._lock_fd is None:
            raise ValueError(f"WAL {self.directory} is closed")

    def _require_healthy(self) -> None:
        if self._failed is not None:
            raise OSError(
                f"WAL {self.directory}: an earlier write or fsync failed ({self._failed}); "
                "nothing more is accepted until the process restarts and re-reads the log"
            )

    def _require_cursor(self, cursor: str) -> None:
        if cursor not in self.cursors:
            raise ValueError(f"cursor {cursor!r} is not one of {', '.join(self.cursors)}")

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _create_segment(self, number: int) -> None:
        with open(self._segment_path(number), "xb") as file:
            os.fsync(file.fileno())
        fsync_dir(self.directory)

    def _truncate_torn_tail(self, number: int) -> None:
        """Cut a partial last line (a crash mid-append: never acknowledged) so appends after it
        start on a fresh line."""
        path = self._segment_path(number)
        with open(path, "r+b") as file:
            size = file.seek(0, os.SEEK_END)
            if size == 0:
                return
            # Search backwards for the last newline, a block at a time.
            keep = 0
            position = size
            while position > 0:
                block = min(65536, position)
                position -= block
                file.seek(position)
                newline = file.read(block).rfind(b"\n")
                if newline >= 0:
                    keep = position + newline + 1
                    break
            if keep != size:
                file.truncate(keep)
                os.fsync(file.fileno())

    def _open_segment(self, number: int) -> int:
        return os.open(self._segment_path(number), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def _rotate(self) -> None:
        """Start the next segment (caller holds the append lock). The old one is fsync'ed first,
        so everything written before the rotation is durable and the durable end moves on."""
        number = self._written.segment + 1
        try:
            _datasync(self._fd)
        except OSError as error:
            self._failed = error
            raise
        self._create_segment(number)
        os.close(self._fd)
        self._fd = self._open_segment(number)
        self._written = WalPosition(number, 0)
        with self._state_lock:
            self._segments.append(number)
            self._end = self._written

    def _load_cursor(self, cursor: str) -> WalPosition:
        path = self._cursor_path(cursor)
        if not path.exists():
            return ORIGIN
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return WalPosition(int(stored["segment"]), int(stored["offset"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: unreadable cursor file") from error

    def _delete_passed_segments(self) -> None:
        """Delete segments before every cursor's segment, never the current one (state lock
        held)."""
        oldest_needed = min(self._committed.values()).segment
        passed = [s for s in self._segments if s < oldest_needed and s != self._end.segment]
        if not passed:
            return
        for number in passed:
            self._segment_path(number).unlink(missing_ok=True)
        self._segments = [s for s in self._segments if s not in passed]
        fsync_dir(self.directory)


# --- orphans --------------------------------------------------------------------------------


def adopt_orphans(root: Path, own_owner: str) -> list[str]:
    """Owners under ``root`` (other than ``own_owner``) whose WAL no live process holds.

    Their process died, so their acknowledged events await a consumer: open each with
    ``WriteAheadLog(root, owner)`` (which takes the lock; it raises WalLockedError if another
    adopter was quicker), flush and apply its pending records, then ``retire()`` it.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        path.name
        for path in root.iterdir()
        if path.name != own_owner and path.is_dir() and _is_unlocked_wal(path)
    )


def _is_unlocked_wal(directory: Path) -> bool:
    """True if ``directory`` is a WAL whose lock can be taken right now (probed, not held)."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)
