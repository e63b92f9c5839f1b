"""tidelog.aio, second round: offsets from ``await meta``, blocked time, prefetched jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import tidelog
import tidelog.aio

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def test_blocked_async_senders_count_in_blocked_seconds(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            store.consumer("t", group="slow")  # never commits: max_lag keeps pressure on
            producer = store.producer(max_lag=5, linger_ms=0, block_timeout=0.1)
            with pytest.raises(tidelog.BackpressureError, match="low watermark"):
                for _ in range(10_000):
                    await producer.send("t", b"x")
                    await asyncio.sleep(0.001)
            after_timeout = producer.stats()["blocked_seconds"]
            assert after_timeout > 0
            # A cancelled blocked send counts the time it waited too.
            unbounded = store.producer(max_lag=5, linger_ms=0)
            while True:
                task = asyncio.ensure_future(unbounded.send("t", b"x"))
                await asyncio.sleep(0.05)
                if not task.done():
                    break
                await task
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert unbounded.stats()["blocked_seconds"] > 0
            metrics = store.sync.metrics()
            assert any(p["blocked_seconds"] > 0 for p in metrics["producers"].values())

    run(main())


def test_acquire_many_hands_out_prefetched_jobs_first(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("jobs", partitions=1)
            for i in range(50):
                topic.append(b"%d" % i, partition=0)
            queue = store.work_queue("jobs", group="w")
            taken = [await queue.__anext__() for _ in range(4)]  # batches of 1, 2, 4
            assert [j.offset for j in taken] == [0, 1, 2, 3]
            prefetched = queue.stats()["member"]["prefetched"]
            assert prefetched > 0
            jobs = await queue.acquire_many(prefetched, timeout=0)
            # The prefetched jobs, as they were acquired: not given back and taken again.
            assert [(j.offset, j.delivery_count) for j in jobs] == [
                (4 + i, 1) for i in range(prefetched)
            ]
            assert queue.stats()["member"]["prefetched"] == 0
            more = await queue.acquire_many(3, timeout=0)
            assert [(j.offset, j.delivery_count) for j in more] == [
                (4 + prefetched + i, 1) for i in range(3)
            ]
            await queue.ack_many([*taken, *jobs, *more])
            await queue.close()

    run(main())
