"""Cancelling a waiting async call at random points loses, skips and repeats nothing.

Each test runs 1,000 rounds: a call starts, is cancelled after a random delay (often while
it waits, sometimes after it finished), and whatever it returned when it did finish is
counted. At the end every message must have been handed out exactly once, in order per
partition, and every send that returned must be in the log exactly once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import tidelog
import tidelog.aio

Run = Callable[[Coroutine[Any, Any, Any]], Any]
ROUNDS = 1000


async def _feed(topic: tidelog.Topic, total: int, rng: random.Random) -> None:
    """Appends ``total`` messages at random moments (so consumers often wait)."""
    for i in range(total):
        topic.append(b"%d" % i, partition=i % topic.partitions)
        await asyncio.sleep(rng.uniform(0, 0.003))


async def _outcome(task: asyncio.Task[Any]) -> Any:
    """The task's result, or None if the cancellation landed."""
    try:
        return await task
    except asyncio.CancelledError:
        return None


def test_cancelled_polls_and_iterations_hand_out_each_message_once(
    tmp_path: Path, run: Run
) -> None:
    rng = random.Random(15)

    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("t", partitions=3)
            consumer = await store.consumer("t", group="g", max_poll_messages=7)
            total = 600
            feeder = asyncio.create_task(_feed(topic, total, rng))
            got: list[tidelog.Message] = []
            cancelled = 0
            for _ in range(ROUNDS):
                if rng.random() < 0.5:
                    call: Coroutine[Any, Any, Any] = consumer.poll(
                        max_messages=rng.randint(1, 7), timeout=rng.uniform(0, 0.01)
                    )
                else:
                    call = consumer.__anext__()
                task = asyncio.create_task(call)
                await asyncio.sleep(rng.uniform(0, 0.002))
                task.cancel()
                result = await _outcome(task)
                if result is None:
                    cancelled += 1
                elif isinstance(result, list):
                    got.extend(result)
                else:
                    got.append(result)
            await feeder
            while len(got) < total:
                more = await consumer.poll(timeout=5.0)
                assert more, f"only {len(got)} of {total} messages came"
                got.extend(more)
            assert await consumer.poll(timeout=0.05) == []
            assert cancelled > ROUNDS // 10, "the cancellations must land while waiting"
            seen = [(m.partition, m.offset) for m in got]
            assert len(seen) == len(set(seen)) == total
            for p in range(3):
                offsets = [o for q, o in seen if q == p]
                assert offsets == list(range(len(offsets)))
            await consumer.commit()
            assert await consumer.committed() == {p: topic.end_offset(p) for p in range(3)}

    run(main())


def test_cancelled_acquires_hold_no_job(tmp_path: Path, run: Run) -> None:
    rng = random.Random(16)

    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("jobs", partitions=2)
            queue = await store.work_queue("jobs", group="w", lock_timeout=600.0, prefetch=4)
            total = 500
            feeder = asyncio.create_task(_feed(topic, total, rng))
            done: list[tidelog.Job] = []
            cancelled = 0
            for _ in range(ROUNDS):
                pick = rng.random()
                if pick < 0.4:
                    call: Coroutine[Any, Any, Any] = queue.acquire(timeout=rng.uniform(0, 0.01))
                elif pick < 0.7:
                    call = queue.acquire_many(rng.randint(1, 5), timeout=rng.uniform(0, 0.01))
                else:
                    call = queue.__anext__()
                task = asyncio.create_task(call)
                await asyncio.sleep(rng.uniform(0, 0.002))
                task.cancel()
                result = await _outcome(task)
                if result is None:
                    cancelled += 1
                    continue
                jobs = result if isinstance(result, list) else [result]
                for job in jobs:
                    if job is not None:
                        await queue.ack(job)
                        done.append(job)
            await feeder
            while len(done) < total:
                job = await queue.acquire(timeout=5.0)
                assert job is not None, f"only {len(done)} of {total} jobs came"
                await queue.ack(job)
                done.append(job)
            assert cancelled > ROUNDS // 10
            assert await queue.acquire(timeout=0.05) is None
            seen = [(j.partition, j.offset) for j in done]
            assert len(seen) == len(set(seen)) == total
            # A job a cancelled call had taken would come back only after its lock expired.
            assert {j.delivery_count for j in done} == {1}

    run(main())


def test_cancelled_blocked_sends_and_flushes_write_exactly_what_returned(
    tmp_path: Path, run: Run
) -> None:
    rng = random.Random(17)

    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            group = await store.consumer("t", group="slow", max_poll_messages=3)
            stop = asyncio.Event()

            async def slow_commits() -> None:
                # The group moves a little at a time, so senders block and unblock.
                while not stop.is_set():
                    if await group.poll(timeout=0.005):
                        await group.commit()
                    await asyncio.sleep(rng.uniform(0.004, 0.012))

            committer = asyncio.create_task(slow_commits())
            producer = await store.producer(max_lag=8, linger_ms=0)
            sent: list[bytes] = []
            cancelled = 0
            for i in range(ROUNDS):
                value = b"%d" % i
                call: Coroutine[Any, Any, Any]
                call = producer.flush() if rng.random() < 0.1 else producer.send("t", value)
                task = asyncio.create_task(call)
                await asyncio.sleep(rng.uniform(0, 0.002))
                task.cancel()
                result = await _outcome(task)
                if result is None:
                    cancelled += 1
                elif isinstance(result, tidelog.aio.SendResult):
                    sent.append(value)
            stop.set()
            await committer
            await group.close()
            await producer.close()
            assert cancelled > ROUNDS // 10
            assert producer.stats()["high_watermark_hits"] > 0, "sends must have blocked"
            reader = await store.consumer("t", group="check")
            log: list[bytes] = []
            while batch := await reader.poll(timeout=0.2):
                log.extend(m.value or b"" for m in batch)
            assert log == sent

    run(main())
