"""tidelog.aio: the synchronous semantics, through coroutines, on both loops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import tidelog
import tidelog.aio

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def test_open_send_flush_and_consume(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            await store.create_topic("orders", partitions=3)
            await store.create_topic("other", partitions=1)
            assert await store.topics() == ["orders", "other"]
            async with store.producer(name="api") as producer:
                metas = [
                    await producer.send("orders", b"v%d" % i, key=b"k%d" % (i % 5))
                    for i in range(300)
                ]
                assert all(m.accepted for m in metas)
                extra = producer.send_nowait("other", b"x", key=b"k0")
                assert extra.accepted and await extra == (0, 0)
                last = await metas[-1]  # written: (partition, offset)
                assert last == (metas[-1].partition, metas[-1].offset)
                assert producer.stats()["written"] == 301
                assert await producer.flush(timeout=5.0)
                with pytest.raises(TypeError, match="timeout"):
                    await producer.flush(timeout="1")  # type: ignore[arg-type]
                with pytest.raises(tidelog.InvalidConfigError, match="timeout"):
                    await producer.flush(timeout=-1.0)
            async with store.consumer("orders", group="billing") as consumer:
                got: list[tidelog.Message] = []
                async for msg in consumer:
                    got.append(msg)
                    if len(got) == 300:
                        break
                await consumer.commit()
                assert sum((await consumer.committed()).values()) == 300
                assert await consumer.lag() == {0: 0, 1: 0, 2: 0}
        values = sorted(m.value or b"" for m in got)
        assert values == sorted(b"v%d" % i for i in range(300))
        # Per key, in send order.
        for k in range(5):
            mine = [m.value for m in got if m.key == b"k%d" % k]
            assert mine == [b"v%d" % i for i in range(300) if i % 5 == k]

    run(main())
    with tidelog.open(tmp_path) as store:
        assert sum(store.topic("orders").end_offset(p) for p in range(3)) == 300


def test_awaitable_open_and_closing_twice(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        store = await tidelog.aio.open(tmp_path)
        assert not store.closed
        await store.close()
        await store.close()
        assert store.closed

    run(main())


def test_poll_times_out_empty_and_checks_arguments_as_sync(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            consumer = await store.consumer("t", group="g")
            assert await consumer.poll(timeout=0.05) == []
            assert await consumer.poll(timeout=0) == []
            with pytest.raises(tidelog.InvalidConfigError):
                await consumer.poll(timeout=-1)
            with pytest.raises(TypeError, match="timeout"):
                await consumer.poll(timeout="1")  # type: ignore[arg-type]
            with pytest.raises(tidelog.InvalidConfigError):
                await consumer.poll(max_messages=0)
            with pytest.raises(TypeError, match="max_messages"):
                await consumer.poll(max_messages=1.5)  # type: ignore[arg-type]

    run(main())


def test_a_waiting_poll_wakes_on_an_append_from_another_thread(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("t", partitions=2)
            consumer = await store.consumer("t", group="g")
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, lambda: loop.run_in_executor(None, topic.append, b"x"))
            started = time.monotonic()
            msgs = await consumer.poll(timeout=30.0)
            assert [m.value for m in msgs] == [b"x"]
            # Woken by the append, not by the timeout.
            assert time.monotonic() - started < 25.0

    run(main())


def test_at_least_once_commits_on_the_next_poll(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("t", partitions=1)
            for i in range(10):
                topic.append(b"%d" % i, partition=0)
            consumer = await store.consumer("t", group="g", max_poll_messages=4)
            first = await consumer.poll()
            assert [m.offset for m in first] == [0, 1, 2, 3]
            assert await consumer.committed() == {}
            await consumer.poll()
            assert await consumer.committed() == {0: 4}
            await consumer.close()
            assert consumer.closed
            again = await store.consumer("t", group="g")
            assert [m.offset for m in await again.poll()] == list(range(8, 10))

    run(main())


def test_at_most_once_commits_before_handing_out(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("t", partitions=1)
            for i in range(3):
                topic.append(b"%d" % i, partition=0)
            consumer = await store.consumer("t", group="g", delivery="at-most-once")
            msgs = await consumer.poll()
            assert len(msgs) == 3
            assert await consumer.committed() == {0: 3}

    run(main())


def test_exactly_once_through_an_async_transaction(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            src = await store.create_topic("in", partitions=1)
            await store.create_topic("out", partitions=1)
            for i in range(6):
                src.append(b"%d" % i, partition=0)
            consumer = await store.consumer("in", group="eo", delivery="exactly-once")
            producer = await store.producer(name="xform")
            msgs = await consumer.poll(max_messages=3)
            async with store.transaction(producer, consumer) as tx:
                for m in msgs:
                    await tx.send("out", (m.value or b"") + b"!")
            assert await consumer.committed() == {0: 3}
            # An aborted step: nothing visible, the consumer rewinds.
            msgs = await consumer.poll(max_messages=3)
            with pytest.raises(RuntimeError):
                async with store.transaction(producer, consumer) as tx:
                    await tx.send("out", b"never")
                    raise RuntimeError("boom")
            assert tx.done
            assert await consumer.committed() == {0: 3}
            again = await consumer.poll(max_messages=3)
            assert [m.offset for m in again] == [m.offset for m in msgs]
            async with store.transaction(producer, consumer) as tx:
                for m in again:
                    await tx.send("out", (m.value or b"") + b"!")
            reader = await store.consumer("out", group="reader")
            out = await reader.poll(timeout=1.0)
            assert [m.value for m in out] == [b"%d!" % i for i in range(6)]

    run(main())


def test_a_transaction_needs_an_exactly_once_consumer(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            consumer = await store.consumer("t", group="g")
            producer = await store.producer(name="p")
            with pytest.raises(tidelog.InvalidConfigError, match="exactly-once"):
                store.transaction(producer, consumer)
            with pytest.raises(TypeError, match="producer"):
                store.transaction(producer.native, None)  # type: ignore[arg-type]

    run(main())


def test_seek_pause_resume(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("t", partitions=2)
            for i in range(4):
                topic.append(b"%d" % i, partition=i % 2)
            consumer = await store.consumer("t", group="g")
            assert consumer.assignment() == [0, 1]
            consumer.pause(0)
            assert consumer.paused() == [0]
            assert {m.partition for m in await consumer.poll()} == {1}
            consumer.resume(0)
            consumer.seek(1, 0)
            assert sorted((m.partition, m.offset) for m in await consumer.poll()) == [
                (0, 0),
                (0, 1),
                (1, 0),
                (1, 1),
            ]
            with pytest.raises(tidelog.OffsetOutOfRangeError):
                consumer.seek(0, 99)

    run(main())


def test_async_for_after_a_seek_skips_what_was_fetched_before(tmp_path: Path, run: Run) -> None:
    """``async for`` takes fetched messages itself (not through ``next_nowait``): a seek
    must drop the ones it made stale there too, not only in the synchronous consumer."""

    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("t", partitions=2)
            for i in range(10):
                topic.append(b"%d" % i, partition=0)
                topic.append(b"%d" % i, partition=1)
            consumer = await store.consumer("t", group="g")
            it = aiter(consumer)
            first = await anext(it)  # fetches both partitions' messages at once
            assert first.offset == 0
            consumer.seek(first.partition, 0)
            seen = [await anext(it) for _ in range(20)]
            for p in (0, 1):
                assert [m.offset for m in seen if m.partition == p] == list(range(10))
            await consumer.close()

    run(main())


def test_async_for_then_close_commits_only_what_it_handed_out(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("t", partitions=1)
            for i in range(10):
                topic.append(b"%d" % i)
            consumer = await store.consumer("t", group="g")
            async for message in consumer:
                if message.offset == 2:
                    break
            await consumer.close()
            again = await store.consumer("t", group="g")
            assert [m.offset for m in await again.poll(timeout=1.0)] == list(range(3, 10))
            await again.close()

    run(main())


def test_on_full_raise_and_shed_behave_as_sync(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            # max_lag with a group that never commits keeps the pressure on.
            await store.consumer("t", group="slow")
            raising = await store.producer(on_full="raise", max_lag=5, linger_ms=0)
            with pytest.raises(tidelog.BackpressureError):
                for _ in range(10_000):
                    await raising.send("t", b"x")
                    await asyncio.sleep(0.001)
            shedding = await store.producer(on_full="shed", max_lag=5, linger_ms=0)
            dropped = 0
            for _ in range(200):
                result = await shedding.send("t", b"x", priority=0)
                dropped += not result.accepted
                await asyncio.sleep(0.001)
            assert dropped > 0
            assert shedding.stats()["dropped"].get(0, 0) >= dropped

    run(main())


def test_a_blocked_send_waits_for_a_commit_then_goes_on(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            group = await store.consumer("t", group="slow")
            producer = await store.producer(max_lag=5, linger_ms=0, block_timeout=0.2)
            sent = 0
            with pytest.raises(tidelog.BackpressureError, match="low watermark"):
                for _ in range(10_000):
                    await producer.send("t", b"x")
                    sent += 1
                    await asyncio.sleep(0.001)
            unbounded = await store.producer(max_lag=5, linger_ms=0)
            with pytest.raises(tidelog.BackpressureError, match="await send"):
                for _ in range(10_000):
                    unbounded.send_nowait("t", b"x")
                    await asyncio.sleep(0.001)
            while True:
                blocked = asyncio.create_task(unbounded.send("t", b"late"))
                await asyncio.sleep(0.2)
                if not blocked.done():
                    break  # suspended, while the loop runs this test
                await blocked
            while not blocked.done():
                msgs = await group.poll(timeout=0.05)
                if msgs:
                    await group.commit()
            assert (await blocked).accepted

    run(main())


def test_work_queue_acquire_ack_release_and_iterate(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("jobs", partitions=2)
            for i in range(20):
                topic.append(b"%d" % i, partition=i % 2)
            queue = await store.work_queue("jobs", group="w", lock_timeout=30.0)
            job = await queue.acquire(timeout=1.0)
            assert job is not None and job.delivery_count == 1
            await queue.release(job)
            seen: dict[bytes, int] = {}
            async for job in queue:
                seen[job.value or b""] = job.delivery_count
                await queue.ack(job)
                if len(seen) == 20:
                    break
            assert sorted(seen) == sorted(b"%d" % i for i in range(20))
            assert max(seen.values()) <= 2
            await queue.flush()
            assert await queue.acquire(timeout=0.05) is None
            batch = await queue.acquire_many(10, timeout=0.05)
            assert batch == []
            topic.append(b"late", partition=0)
            more = await queue.acquire_many(10, timeout=5.0)
            assert [j.value for j in more] == [b"late"]
            await queue.reject(more[0])
            await queue.close()
            assert queue.closed

    run(main())


def test_a_waiting_acquire_wakes_on_an_append(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("jobs", partitions=1)
            queue = await store.work_queue("jobs", group="w")
            loop = asyncio.get_running_loop()
            loop.call_later(0.1, lambda: loop.run_in_executor(None, topic.append, b"x"))
            job = await queue.acquire(timeout=30.0)
            assert job is not None and job.value == b"x"

    run(main())


def test_closing_the_store_closes_its_members(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        store = await tidelog.aio.open(tmp_path)
        await store.create_topic("t", partitions=1)
        producer = await store.producer()
        consumer = await store.consumer("t", group="g")
        queue = await store.work_queue("t", group="w")
        await producer.send("t", b"x")
        await store.close()
        assert producer.closed and consumer.closed and queue.closed
        with pytest.raises(tidelog.StoreClosedError):
            await producer.send("t", b"y")

    run(main())
    with tidelog.open(tmp_path) as store:
        assert store.topic("t").end_offset(0) == 1


def test_members_are_made_when_awaited(tmp_path: Path, run: Run) -> None:
    """A member constructor's result is awaited once (as on Kafka, where making a member is
    a round trip), or entered with ``async with``; a member's call on it says so."""

    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            making = store.consumer("t", group="g")
            with pytest.raises(AttributeError, match=r"await store\.consumer"):
                making.poll  # noqa: B018  # the mistake: a call on the unawaited member
            consumer = await making
            assert isinstance(consumer, tidelog.aio.Consumer)
            with pytest.raises(RuntimeError, match="awaited"):
                await making
            producer, queue = await asyncio.gather(
                asyncio.create_task(store.producer()), store.work_queue("t", group="w")
            )
            assert isinstance(producer, tidelog.aio.Producer)
            assert isinstance(queue, tidelog.aio.WorkQueue)
            async with store.consumer("t", group="h") as entered:
                assert not entered.closed
            assert entered.closed
        assert consumer.closed and producer.closed and queue.closed

    run(main())
