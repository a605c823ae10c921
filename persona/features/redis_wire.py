"""The Redis that a Feast repo config points at, and a raw pipelined connection for bulk loads.

Feast keeps its Redis address as a connection string (``host:port,db=N,password=…``); the
endpoint here is parsed by Feast's own parser so both sides always talk to the same server and
database. The raw connection exists because redis-py spends microseconds per command packing
arguments and parsing replies: a bulk load sends pre-built RESP buffers of tens of thousands of
commands and checks their replies a buffer at a time.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import hiredis
from feast import RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

#: Connection-string parameters the endpoint understands; anything else is refused.
_KNOWN_PARAMS: Final = frozenset(
    {"db", "password", "username", "ssl", "socket_timeout", "socket_connect_timeout"}
)
_RECV_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class RedisEndpoint:
    """Host, port, database and credentials of a standalone Redis."""

    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    @classmethod
    def from_repo_config(cls, config: RepoConfig) -> RedisEndpoint:
        online = config.online_store
        if not isinstance(online, RedisOnlineStoreConfig):
            raise ValueError(f"online store is {online.type!r}, not redis")
        nodes, params = RedisOnlineStore._parse_connection_string(online.connection_string)
        unknown = set(params) - _KNOWN_PARAMS
        if unknown:
            raise ValueError(f"unsupported Redis connection parameters: {sorted(unknown)}")
        password = params.get("password")
        username = params.get("username")
        return cls(
            host=str(nodes[0]["host"]),
            port=int(nodes[0]["port"]),
            db=int(params.get("db", 0)),
            username=None if username is None else str(username),
            password=None if password is None else str(password),
            ssl=bool(params.get("ssl", False)),
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments for ``redis.Redis`` / ``redis.asyncio.Redis`` (and their pools)."""
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "db": self.db}
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs


class RedisReplyError(RuntimeError):
    """Redis answered a pipelined command with an error."""


class RawRedisConnection:
    """One blocking socket speaking RESP2, for pipelines built as bytes by the caller."""

    def __init__(self, endpoint: RedisEndpoint, timeout_s: float = 60.0):
        self.endpoint = endpoint
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if endpoint.ssl:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=endpoint.host)
        self._sock = sock
        self._reader = hiredis.Reader()
        # Bytes received but not yet parsed. Invariant: the hiredis reader only ever holds bytes
        # of replies being parsed by read_replies, so the raw readers can work on this buffer.
        self._unparsed = b""
        self._outbox: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._sender: threading.Thread | None = None
        self._send_error: OSError | None = None
        try:
            if endpoint.password is not None:
                auth = [endpoint.password]
                if endpoint.username is not None:
                    auth.insert(0, endpoint.username)
                self.call("AUTH", *auth)
            if endpoint.db:
                self.call("SELECT", str(endpoint.db))
        except BaseException:
            sock.close()
            raise

    def __enter__(self) -> RawRedisConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(OSError):  # already closed by the peer
                self._sock.shutdown(socket.SHUT_RDWR)
            self._outbox.put(None)
            self._sender.join()
            self._sender = None
        self._sock.close()

    def send(self, payload: bytes | memoryview | Any) -> None:
        """Send pre-built RESP commands (anything exposing the buffer protocol), in order
        after any queued by :meth:`send_in_background`."""
        if self._sender is not None:
            self.send_in_background(payload)
        else:
            self._sock.sendall(payload)

    def send_in_background(self, payload: bytes | memoryview | Any) -> None:
        """Queue commands for a sender thread so the caller can prepare the next batch while
        Redis reads this one (``sendall`` blocks for as long as Redis takes to read)."""
        if self._send_error is not None:
            raise ConnectionError("sending to Redis failed") from self._send_error
        if self._sender is None:
            self._sender = threading.Thread(
                target=self._send_loop, name="redis-sender", daemon=True
            )
            self._sender.start()
        self._outbox.put(payload)

    def _send_loop(self) -> None:
        while (payload := self._outbox.get()) is not None:
            if self._send_error is not None:
                continue  # drain the queue; the reader side reports the failure
            try:
                self._sock.sendall(payload)
            except OSError as error:
                self._send_error = error

    def call(self, *args: str | bytes) -> Any:
        """One command, one reply (for set-up and small calls)."""
        self.send(pack_command(*args))
        return self.read_replies(1)[0]

    def _recv(self) -> bytes:
        if self._send_error is not None:
            raise ConnectionError("sending to Redis failed") from self._send_error
        chunk = self._sock.recv(_RECV_BYTES)
        if not chunk:
            raise ConnectionError(f"Redis at {self.endpoint.host}:{self.endpoint.port} closed")
        return chunk

    def _next_reply(self) -> Any:
        reply = self._reader.gets()
        while reply is False:
            self._reader.feed(self._recv())
            reply = self._reader.gets()
        if isinstance(reply, hiredis.ReplyError):
            raise RedisReplyError(str(reply))
        return reply

    def read_replies(self, count: int) -> list[Any]:
        """The next ``count`` replies, parsed; an error reply raises :class:`RedisReplyError`.

        After an error the connection is out of step with its commands: close it.
        """
        if self._unparsed:
            self._reader.feed(self._unparsed)
            self._unparsed = b""
        replies = [self._next_reply() for _ in range(count)]
        if self._reader.has_data():
            raise RedisReplyError("more replies than commands read; the pipeline is out of step")
        return replies

    def discard_line_replies(self, count: int) -> None:
        """Consume ``count`` one-line replies (``HSET``/``EXPIRE`` integers) without parsing
        each: count newlines in the raw bytes, raise on an error line among them."""
        if count <= 0:
            return
        data = self._unparsed
        lines = data.count(b"\n")
        parts = [data]
        while lines < count:
            chunk = self._recv()
            parts.append(chunk)
            lines += chunk.count(b"\n")
        data = b"".join(parts)
        end = -1
        for _ in range(count):
            end = data.index(b"\n", end + 1)
        mine, self._unparsed = data[: end + 1], data[end + 1 :]
        if mine.startswith(b"-") or b"\n-" in mine:
            at = 0 if mine.startswith(b"-") else mine.index(b"\n-") + 1
            raise RedisReplyError(mine[at : mine.index(b"\r\n", at)].decode(errors="replace"))

    def replies_equal(self, expected: bytes) -> bool:
        """True (and consumed) when the next replies are exactly ``expected``, byte for byte.

        Otherwise nothing is consumed. Meant for a common answer known in advance (all nils):
        any other answer to the same commands is at least as long, so this never waits for
        bytes that are not coming.
        """
        parts, have = [self._unparsed], len(self._unparsed)
        while have < len(expected):
            chunk = self._recv()
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if data.startswith(expected):
            self._unparsed = data[len(expected) :]
            return True
        self._unparsed = data
        return False


def pack_command(*args: str | bytes) -> bytes:
    """RESP2 encoding of one command."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(parts)
