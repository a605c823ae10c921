"""Refuse request bodies over a size limit with ``413`` and a reason, before they are read
into memory: by ``Content-Length`` when the caller sends one, else while the chunks arrive."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` while the body streams in: an HTTPException, so the framework's
    body parsing passes it on as a 413 instead of wrapping it in a 400."""

    def __init__(self, reason: str):
        super().__init__(status_code=413, detail=reason)


class BodySizeLimit:
    """Pure ASGI middleware (no buffering, so streaming bodies are counted as they come)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(send, 400, "Content-Length is not a number")
                    return
                if declared > self.max_bytes:
                    await self._refuse(send, 413, self._reason(declared))
                    return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self._reason(received))
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as error:  # the app did not turn it into a response itself
            if not started:
                await self._refuse(send, 413, str(error.detail))

    def _reason(self, size: int) -> str:
        return f"request body of {size}+ bytes is over the limit of {self.max_bytes} bytes"

    @staticmethod
    async def _refuse(send: Send, status: int, reason: str) -> None:
        body = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
