"""tidelog.aio, second round: offsets from ``await meta``, blocked time, prefetched jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import tidelog
import tidelog.aio
from tidelog import _core

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def test_blocked_async_senders_count_in_blocked_seconds(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            await store.consumer("t", group="slow")  # never commits: max_lag keeps pressure on
            producer = await store.producer(max_lag=5, linger_ms=0, block_timeout=0.1)
            with pytest.raises(tidelog.BackpressureError, match="low watermark"):
                for _ in range(10_000):
                    await producer.send("t", b"x")
                    await asyncio.sleep(0.001)
            after_timeout = producer.stats()["blocked_seconds"]
            assert after_timeout > 0
            # A cancelled blocked send counts the time it waited too.
            unbounded = await store.producer(max_lag=5, linger_ms=0)
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
            queue = await store.work_queue("jobs", group="w")
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


def _stored(store: tidelog.aio.Store, topic: str) -> dict[tuple[int, int], bytes]:
    """Every message of ``topic`` by (partition, offset)."""
    t = store.sync.topic(topic)
    out: dict[tuple[int, int], bytes] = {}
    for p in range(t.partitions):
        for m in t.read(p, 0):
            out[(p, m.offset)] = bytes(m.value or b"")
    return out


def test_await_meta_gives_the_partition_and_offset_written(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            topic = await store.create_topic("t", partitions=3)
            producer = await store.producer(max_batch_messages=16)
            other = await store.producer()
            metas = []
            for i in range(1500):
                value = b"a%d" % i
                meta = await producer.send("t", value, key=b"k%d" % (i % 7))
                assert meta.partition == _core.partition_for_key(b"k%d" % (i % 7), 3)
                metas.append((value, meta))
                # Other writers between them: the offsets are not consecutive.
                if i % 3 == 0:
                    topic.append(b"x", partition=i % 3)
                if i % 5 == 0:
                    await other.send("t", b"y", partition=(i + 1) % 3)
                if i % 10 == 0:
                    producer.native.send("t", b"z", partition=i % 3)
            stored = None
            for value, meta in reversed(metas):
                partition, offset = await meta
                assert (partition, offset) == (meta.partition, meta.offset)
                assert meta.written_at() == (partition, offset)
                stored = stored or _stored(store, "t")
                assert stored[(partition, offset)] == value
            assert len({(m.partition, m.offset) for _, m in metas}) == len(metas)
            # The awaitable of a send runs as a task too.
            task = asyncio.create_task(producer.send("t", b"task", partition=1))
            future = asyncio.ensure_future(producer.send("t", b"future", partition=1))
            gathered = await asyncio.gather(producer.send("t", b"gathered", partition=2))
            written = [await (await task), await (await future), await gathered[0]]
            stored = _stored(store, "t")
            assert [stored[w] for w in written] == [b"task", b"future", b"gathered"]
            await producer.close()
            await other.close()

    run(main())


def test_send_done_behaves_as_a_finished_coroutine(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            await store.create_topic("t", partitions=1)
            producer = await store.producer()
            done = producer.send("t", b"v")
            assert asyncio.iscoroutine(done)
            with pytest.raises(StopIteration) as stopped:
                done.send(None)
            meta = stopped.value.value
            assert isinstance(meta, tidelog.aio.SendResult)
            with pytest.raises(RuntimeError, match="already awaited"):
                await done  # awaited once, as a finished coroutine is
            with pytest.raises(ValueError, match="boom"):
                done.throw(ValueError("boom"))
            with pytest.raises(KeyError):
                done.throw(KeyError)
            with pytest.raises(TypeError):
                done.throw(1)  # type: ignore[call-overload]
            assert done.close() is None
            assert await meta == (0, 0)
            with pytest.raises(TypeError):
                type(done)()  # type: ignore[unused-coroutine]  # only a send makes one
            with pytest.raises(TypeError):
                type(done).extra = 1  # type: ignore[attr-defined]
            # The message is in the buffer once send() returned: cancelling a task made
            # around its (already over) awaitable does not take it back.
            task = asyncio.ensure_future(producer.send("t", b"w"))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await producer.flush()
            assert [bytes(m.value or b"") for m in (await store.topic("t")).read(0, 0)] == [
                b"v",
                b"w",
            ]
            with pytest.raises(TypeError, match="value"):
                producer.send("t", "not bytes")  # type: ignore[arg-type,unused-coroutine]
            await producer.close()

    run(main())


def test_await_meta_of_a_shed_message_raises(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            await store.consumer("t", group="slow")  # never commits: max_lag keeps pressure on
            shedding = await store.producer(on_full="shed", max_lag=5, linger_ms=0)
            metas = []
            for _ in range(200):
                metas.append(await shedding.send("t", b"x", priority=0))
                await asyncio.sleep(0.001)
            refused = [m for m in metas if not m.accepted]
            assert refused
            with pytest.raises(tidelog.BackpressureError, match="dropped"):
                await refused[0]
            written = [await m for m in metas if m.accepted and m.offset is not None]
            assert written == [(0, o) for o in range(len(written))]

    run(main())


def test_await_meta_of_a_failed_write_raises(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            producer = await store.producer(linger_ms=60_000)  # nothing written until a flush
            first = await producer.send("t", b"a")
            second = await producer.send("t", b"b")
            await store.delete_topic("t")
            with pytest.raises(tidelog.TopicNotFoundError):
                await first  # the writer's failure, reported once
            with pytest.raises(tidelog.TidelogError, match="write failed"):
                await second
            await producer.close()

    run(main())


def test_cancelled_awaits_of_sends_and_metas_lose_nothing(tmp_path: Path, run: Run) -> None:
    """Random cancellations of blocked sends and of awaits of their metas: every send
    that returned is written once, at the offset its meta gives, in send order."""
    import random

    rng = random.Random(1515)

    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            group = await store.consumer("t", group="g")
            # Blocks (and holds messages back) until g commits.
            producer = await store.producer(max_lag=3, buffer_messages=4, linger_ms=0)

            async def drain() -> None:
                while True:
                    if await group.poll(timeout=0.01):
                        await group.commit()
                    await asyncio.sleep(rng.uniform(0, 0.03))

            drainer = asyncio.create_task(drain())
            sent: list[tuple[bytes, tidelog.aio.SendResult]] = []
            cancelled = 0
            for i in range(1000):
                value = b"%d" % i
                if sent and rng.random() < 0.3:
                    # Mostly recent ones, which the lag bound still holds back.
                    meta = sent[-1 - min(len(sent) - 1, int(rng.expovariate(0.3)))][1]
                    call: Any = asyncio.ensure_future(_await(meta))
                else:
                    call = asyncio.ensure_future(producer.send("t", value))
                await asyncio.sleep(rng.uniform(0, 0.002))
                call.cancel()
                try:
                    result = await call
                except asyncio.CancelledError:
                    cancelled += 1
                    continue
                if isinstance(result, tidelog.aio.SendResult):
                    sent.append((value, result))
            try:
                assert cancelled > 100, "the cancellations must land while waiting"
                for _, meta in sent:
                    _, offset = await meta
                    assert meta.offset == offset
            finally:
                drainer.cancel()
            stored = _stored(store, "t")
            assert len(stored) == len(sent)  # nothing half sent by a cancelled send
            assert [stored[(0, m.offset or 0)] for _, m in sent] == [v for v, _ in sent]
            assert [m.offset for _, m in sent] == list(range(len(sent)))
            assert producer.stats()["blocked_seconds"] > 0
            await producer.close()

    run(main())


async def _await(meta: tidelog.aio.SendResult) -> tuple[int, int]:
    return await meta
