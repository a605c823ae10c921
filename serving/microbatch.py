"""Batch concurrent calls in one asyncio loop, like ``serve.batch`` (which only runs inside a
Serve replica): the single-process server's ranking uses it so its model also sees batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """``await batcher(item)``: items arriving within ``wait_s`` of the first (or until
    ``max_batch_size``) go to ``handle`` together; each caller gets its own result.

    ``wait_s = 0`` batches without waiting: the batch runs on the loop's next turn with every
    item queued by then. A lone request pays no wait; under load, requests that reach ranking
    while the previous batch computes form the next one (batches grow with load by
    themselves)."""

    def __init__(
        self,
        handle: Callable[[list[Item]], list[Result]],
        max_batch_size: int,
        wait_s: float,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: must be >= 1, got {max_batch_size}")
        self.handle = handle
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flush: asyncio.Handle | None = None

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch_size:
            self._run()
        elif self._flush is None:
            self._flush = (
                loop.call_later(self.wait_s, self._run)
                if self.wait_s > 0
                else loop.call_soon(self._run)
            )
        return await future

    def _run(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            results = self.handle([item for item, _ in batch])
        except Exception as error:  # noqa: BLE001 — every waiting caller gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
