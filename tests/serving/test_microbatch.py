"""The in-process batcher the colocated ranking uses."""

from __future__ import annotations

import asyncio
import time

import pytest

from serving.microbatch import MicroBatcher


def test_concurrent_calls_share_batches_and_each_gets_its_own_result() -> None:
    seen: list[int] = []

    def handle(items: list[int]) -> list[int]:
        seen.append(len(items))
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(handle, max_batch_size=4, wait_s=0)

    async def run() -> list[int]:
        return list(await asyncio.gather(*(batcher(i) for i in range(10))))

    assert asyncio.run(run()) == [i * 10 for i in range(10)]
    assert seen == [4, 4, 2]


def test_a_lone_call_does_not_wait_and_a_timed_batcher_waits_for_company() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda xs: xs, max_batch_size=8, wait_s=0)
    timed: MicroBatcher[int, int] = MicroBatcher(lambda xs: [len(xs)] * len(xs), 8, wait_s=0.05)

    async def run() -> tuple[float, list[int]]:
        started = time.perf_counter()
        await batcher(1)
        lone = time.perf_counter() - started

        async def late(i: int) -> int:
            await asyncio.sleep(0.01 * i)
            return await timed(i)

        return lone, list(await asyncio.gather(*(late(i) for i in range(3))))

    lone, sizes = asyncio.run(run())
    assert lone < 0.01
    assert sizes == [3, 3, 3]  # arrivals 0, 10 and 20 ms apart fell in one 50 ms window


def test_a_failing_batch_fails_every_caller_in_it() -> None:
    def handle(items: list[int]) -> list[int]:
        raise RuntimeError("model broke")

    batcher: MicroBatcher[int, int] = MicroBatcher(handle, max_batch_size=4, wait_s=0)

    async def run() -> list[object]:
        return list(await asyncio.gather(*(batcher(i) for i in range(3)), return_exceptions=True))

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(run()))
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(handle, max_batch_size=0, wait_s=0)
