"""tidelog.aio on both backends: ``tidelog.aio.open(path)`` and ``open("kafka://...")``.

Each test runs its coroutine with ``asyncio.run``; waits are bounded by ``PATIENCE`` so a
Kafka group that is slow to join fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import tidelog
import tidelog.aio

from conformance.test_api import PATIENCE, CommitWatch, FailNextCommit, read_eventually


class _Ticker:
    """Counts the event loop's turns from its start: a blocked loop stops counting."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._task.cancel()


async def _collect(consumer: Any, count: int) -> list[Any]:
    got: list[Any] = []

    async def take() -> None:
        async for msg in consumer:
            got.append(msg)
            if len(got) == count:
                return

    await asyncio.wait_for(take(), PATIENCE)
    return got


def test_aio_send_consume_commit(location: str) -> None:
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> list[bytes | None]:
        async with tidelog.aio.open(location) as store:
            await store.create_topic("orders", partitions=2)
            assert "orders" in await store.topics()
            async with store.producer() as producer:
                results = [
                    await producer.send("orders", b"v%d" % i, key=b"k%d" % (i % 3))
                    for i in range(20)
                ]
                assert all(r.accepted for r in results)
                written = [await r for r in results]  # (partition, offset) of each
                assert len(set(written)) == 20
                assert all(0 <= p < 2 and o >= 0 for p, o in written)
                extra = producer.send_nowait("orders", b"v20", key=b"k0")
                same = written[0][0]  # key k0's partition
                assert await extra == (same, max(o for p, o in written if p == same) + 1)
                assert await producer.flush(timeout=30.0)
                assert producer.stats()["written"] == 21
            async with store.consumer("orders", group=group) as consumer:
                got = await _collect(consumer, 21)
                await consumer.commit()
                assert sum((await consumer.committed()).values()) == 21
                assert await consumer.lag() == {0: 0, 1: 0}
            return [m.value for m in got]

    values = asyncio.run(main())
    assert sorted(v or b"" for v in values) == sorted(b"v%d" % i for i in range(21))


def test_aio_async_for_commits_only_what_it_handed_out(location: str) -> None:
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("iter", partitions=1)
            topic.append_batch([b"%d" % i for i in range(10)], partition=0)
            consumer = await store.consumer("iter", group=group)
            assert [m.offset for m in await _collect(consumer, 3)] == [0, 1, 2]
            await consumer.close()  # the rest of the fetch was not handed out
            async with store.consumer("iter", group=group) as again:
                assert await again.committed() == {0: 3}
                assert [m.offset for m in await _collect(again, 7)] == list(range(3, 10))

    asyncio.run(main())


def test_aio_waiting_poll_leaves_the_loop_running(location: str) -> None:
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> int:
        async with tidelog.aio.open(location) as store:
            await store.create_topic("idle")
            async with store.consumer("idle", group=group) as consumer:
                ticker = _Ticker()
                await asyncio.sleep(0)
                before = ticker.ticks
                assert await consumer.poll(timeout=0.5) == []
                during = ticker.ticks - before  # no await since the poll returned
                ticker.stop()
                return during

    assert asyncio.run(main()) > 0


def test_aio_cancelled_poll_loses_nothing(location: str) -> None:
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> list[bytes | None]:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("late")
            async with store.consumer("late", group=group) as consumer:
                waiting = asyncio.create_task(consumer.poll(timeout=5.0))
                await asyncio.sleep(0.2)
                waiting.cancel()
                topic.append_batch([b"a", b"b", b"c"], partition=0)
                got: list[Any] = []
                async with asyncio.timeout(PATIENCE):
                    while len(got) < 3:
                        got += await consumer.poll(timeout=0.5)
                return [m.value for m in got]

    assert asyncio.run(main()) == [b"a", b"b", b"c"]


def test_aio_transaction_commits_outputs(location: str) -> None:
    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            await store.create_topic("out")
            async with store.producer(name=f"tx-{uuid.uuid4().hex[:8]}") as producer:
                async with store.transaction(producer) as tx:
                    await tx.send("out", b"x", partition=0)
                    await tx.send("out", b"y", partition=0)
                assert tx.done
                try:
                    async with store.transaction(producer) as tx:
                        await tx.send("out", b"aborted", partition=0)
                        raise RuntimeError("abort it")
                except RuntimeError:
                    pass
            values = read_eventually(await store.topic("out"), 0, 2)
            assert [v for v in values if v is not None] == [b"x", b"y"]

    asyncio.run(main())


def test_aio_kafka_url_errors_are_tidelog_errors() -> None:
    async def main() -> None:
        try:
            await tidelog.aio.open("kafka://")
        except tidelog.InvalidConfigError as e:
            assert "kafka://" in str(e)
        else:
            raise AssertionError("a kafka:// URL without a host opened")

    asyncio.run(main())


def test_aio_max_lag_checks_without_blocking_the_loop(location: str) -> None:
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> int:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("bounded")
            topic.append(b"0", partition=0)
            async with store.consumer("bounded", group=group) as consumer:
                assert len(await _collect(consumer, 1)) == 1
                await consumer.commit()
                async with store.producer(max_lag=1000) as producer:
                    for i in range(50):  # well under the bound: never held back
                        assert (await producer.send("bounded", b"%d" % i, partition=0)).accepted
                    assert await producer.flush(timeout=PATIENCE)
            return topic.end_offset(0)

    assert asyncio.run(main()) == 51


def test_aio_pause_holds_back_what_was_already_fetched(location: str) -> None:
    """``async for`` and ``poll`` hand out none of a paused partition's fetched messages;
    after resume they come in order, each once, and commits never passed them."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("pz", partitions=2)
            for partition in (0, 1):
                topic.append_batch([b"%d" % i for i in range(10)], partition=partition)
            async with store.consumer("pz", group=group) as consumer:
                (first,) = await _collect(consumer, 1)
                p, q = first.partition, 1 - first.partition
                consumer.pause(p)
                others = await _collect(consumer, 10)
                assert [(m.partition, m.offset) for m in others] == [(q, i) for i in range(10)]
                assert await consumer.poll(timeout=0.5) == []
                await consumer.commit()
                assert await consumer.committed() == {p: 1, q: 10}
                consumer.resume(p)
                rest = await _collect(consumer, 9)
                assert [(m.partition, m.offset) for m in rest] == [(p, i) for i in range(1, 10)]
                assert await consumer.poll(timeout=0.5) == []
                await consumer.commit()
                assert await consumer.committed() == {p: 10, q: 10}

    asyncio.run(main())


def test_aio_a_closed_consumer_hands_out_nothing(location: str) -> None:
    """``async for`` and ``poll`` raise StoreClosedError once the consumer is closed, also
    while its last fetch still holds messages, which go to the next member (before, the
    local consumer went on handing them out and the Kafka one stopped iterating)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("cl")
            topic.append_batch([b"%d" % i for i in range(10)], partition=0)
            consumer = await store.consumer("cl", group=group)
            assert [m.offset for m in await _collect(consumer, 1)] == [0]
            await consumer.close()
            named = f"consumer of group {group!r} on topic 'cl' is closed"
            with pytest.raises(tidelog.StoreClosedError, match=named):
                await anext(consumer)
            with pytest.raises(tidelog.StoreClosedError, match=named):
                async for _ in consumer:
                    raise AssertionError("a closed consumer handed out a message")
            with pytest.raises(tidelog.StoreClosedError, match=named):
                await consumer.poll(timeout=0)
            async with store.consumer("cl", group=group) as again:
                assert [m.offset for m in await _collect(again, 9)] == list(range(1, 10))

    asyncio.run(main())


def test_aio_a_closed_consumer_answers_no_assignment_questions(location: str) -> None:
    """assignment() and paused() of a closed async member raise StoreClosedError, as its
    other calls do (before, both backends answered)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("cla")
            topic.append(b"a", partition=0)
            consumer = await store.consumer("cla", group=group)
            assert len(await _collect(consumer, 1)) == 1
            consumer.pause(0)
            await consumer.close()
            named = f"consumer of group {group!r} on topic 'cla' is closed"
            with pytest.raises(tidelog.StoreClosedError, match=named):
                consumer.assignment()
            with pytest.raises(tidelog.StoreClosedError, match=named):
                consumer.paused()
            with pytest.raises(tidelog.StoreClosedError, match=named):
                consumer.seek_to_timestamp(0)
            repr(consumer)  # still answers

    asyncio.run(main())


def test_aio_position_is_the_next_offset_handed_out(location: str) -> None:
    """position() is the offset of the next message ``async for`` hands out, not past the
    rest of its fetch (before, both backends gave the fetch position)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("pos", partitions=1)
            topic.append_batch([b"%d" % i for i in range(10)], partition=0)
            async with store.consumer("pos", group=group) as consumer:
                assert [m.offset for m in await _collect(consumer, 2)] == [0, 1]
                assert consumer.position(0) == 2
                consumer.seek(0, 5)
                assert consumer.position(0) == 5
                assert [m.offset for m in await _collect(consumer, 5)] == list(range(5, 10))
                assert consumer.position(0) == 10

    asyncio.run(main())


def test_aio_seek_out_of_range_is_refused(location: str) -> None:
    """An async seek() outside the partition raises OffsetOutOfRangeError naming the valid
    range and leaves the position alone. Locally seek() raises; on Kafka the range is a
    round trip away, so seek() returns at once and the next poll (or ``async for``) raises,
    its fetch thread having checked the range (before, Kafka accepted the seek and
    librdkafka reset the partition to ``start``, handing the messages out again)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("sko")
            topic.append_batch([b"a", b"b", b"c"], partition=0)
            async with store.consumer("sko", group=group) as consumer:
                assert [m.offset for m in await _collect(consumer, 3)] == [0, 1, 2]
                valid = "the log starts at offset 0 and the next offset is 3"
                for bad in (4, -1):
                    with pytest.raises(
                        tidelog.OffsetOutOfRangeError,
                        match=f"offset {bad} out of range for 'sko' partition 0: {valid}",
                    ):
                        consumer.seek(0, bad)  # local: raises here
                        await consumer.poll(timeout=0)  # kafka: the next poll raises
                with pytest.raises(tidelog.OffsetOutOfRangeError, match="offset 7 out of"):
                    consumer.seek(0, 7)
                    await anext(consumer)
                assert consumer.position(0) == 3
                topic.append(b"d", partition=0)
                assert [m.offset for m in await _collect(consumer, 1)] == [3]
                consumer.seek(0, 1)
                assert [m.offset for m in await _collect(consumer, 3)] == [1, 2, 3]

    asyncio.run(main())


@contextlib.asynccontextmanager
async def _two_partitions_read(location: str, name: str) -> AsyncIterator[tuple[Any, Any, Any]]:
    """A store with a new topic of two partitions holding one message each, and a consumer
    of a new group that has read both: its next poll waits (on Kafka, its fetch in a
    thread)."""
    async with tidelog.aio.open(location) as store:
        topic = await store.create_topic(name, partitions=2)
        for partition in (0, 1):
            topic.append(b"%d" % partition, partition=partition)
        async with store.consumer(name, group=f"aio-{uuid.uuid4().hex[:8]}") as consumer:
            assert len(await _collect(consumer, 2)) == 2
            yield store, topic, consumer


def test_aio_seek_leaves_the_loop_running_while_a_fetch_waits(location: str) -> None:
    """seek() returns at once while a poll's fetch waits (on Kafka, in a thread holding
    the member): before, it waited for that fetch to end, blocking the loop, so the waiting
    poll had already timed out when the message appended after the seek came."""

    async def main() -> None:
        async with _two_partitions_read(location, "sk") as (_, topic, consumer):
            ticker = _Ticker()
            waiting = asyncio.create_task(consumer.poll(timeout=10.0))
            await asyncio.sleep(0.5)  # the poll's fetch waits now
            consumer.seek(1, 0)
            before = ticker.ticks
            await asyncio.sleep(0)
            assert ticker.ticks > before  # the loop runs on while the fetch waits
            topic.append(b"late", partition=0)
            got = await waiting
            ticker.stop()
            # The waiting poll was still waiting when the message came; partition 1
            # reads from 0 again (on Kafka, once the fetch that waited has ended).
            assert (0, b"late") in [(m.partition, m.value) for m in got]
            if len(got) < 2:
                got += await _collect(consumer, 2 - len(got))
            assert sorted((m.partition, m.offset) for m in got) == [(0, 1), (1, 0)]

    asyncio.run(main())


def _blocking_calls(location: str, store: Any, consumer: Any) -> list[str]:
    """On kafka://, lists each call made from now on that would block the loop's thread:
    a broker round trip on it (the store's offset look-ups, the member's commits and
    committed offsets), a hand-out (``next_ready``, which takes the member's lock) while a
    fetch holds that lock in its thread, or any call on the member's confluent-kafka
    consumer while another thread is in one (confluent-kafka serializes a consumer's
    calls: the loop would wait for that thread's, a fetch for as long as librdkafka waits).
    Locally there is nothing to watch: the local consumer neither makes round trips nor
    fetches in threads."""
    found: list[str] = []
    if not location.startswith("kafka://"):
        return found
    loop_thread = threading.get_ident()
    fetching = [0]
    in_client = [0]  # calls on the confluent-kafka consumer under way in other threads
    counting = threading.Lock()

    def watch(obj: Any, name: str, blocks: Callable[[], bool]) -> None:
        real = getattr(obj, name)

        @functools.wraps(real)
        def watched(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == loop_thread and blocks():
                found.append(name)
            if name == "fetch":
                fetching[0] += 1
            try:
                return real(*args, **kwargs)
            finally:
                if name == "fetch":
                    fetching[0] -= 1

        setattr(obj, name, watched)

    class WatchedClient:
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            real = getattr(self._client, name)

            def watched(*args: Any, **kwargs: Any) -> Any:
                if threading.get_ident() == loop_thread:
                    if name in ("commit", "committed") or in_client[0]:
                        found.append(f"client.{name}")
                    return real(*args, **kwargs)
                with counting:
                    in_client[0] += 1
                try:
                    return real(*args, **kwargs)
                finally:
                    with counting:
                        in_client[0] -= 1

            return watched

    for name in ("watermarks", "offset_for_time"):
        watch(store.sync, name, lambda: True)
    watch(consumer.sync, "next_ready", lambda: fetching[0] > 0)
    watch(consumer.sync, "fetch", lambda: True)  # fetches run in threads
    consumer.sync._consumer = WatchedClient(consumer.sync._consumer)
    return found


def test_aio_async_for_leaves_the_loop_running_while_a_cancelled_poll_fetches(
    location: str,
) -> None:
    """``async for`` after a cancelled poll waits for that poll's fetch without blocking
    the loop (on Kafka the fetch goes on in its thread, holding the member: before, the
    next step took the member's lock on the loop's thread until the fetch ended)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("cx")
            async with store.consumer("cx", group=group) as consumer:
                blocking = _blocking_calls(location, store, consumer)
                waiting = asyncio.create_task(consumer.poll(timeout=10.0))
                await asyncio.sleep(0.5)  # the poll's fetch waits now
                waiting.cancel()
                ticker = _Ticker()
                following = asyncio.create_task(anext(consumer))
                await asyncio.sleep(0)
                before = ticker.ticks
                await asyncio.sleep(0)
                assert ticker.ticks > before  # the loop runs on while the fetch waits
                topic.append(b"late", partition=0)
                message = await asyncio.wait_for(following, PATIENCE)
                ticker.stop()
                assert (message.offset, message.value) == (0, b"late")
                assert blocking == []

    asyncio.run(main())


def test_aio_seek_to_timestamp_makes_no_round_trip_on_the_loop(location: str) -> None:
    """seek_to_timestamp() returns at once: on Kafka the offsets for the time are a broker
    round trip, made by the next fetch in its thread (before, on the loop's thread); the
    next step hands out from there (on Kafka, position() says -1, unknown, until then)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("tsk", partitions=2)
            for partition in (0, 1):
                for i, ts in enumerate([1000, 2000, 3000]):
                    topic.append(b"%d" % i, timestamp_ms=ts, partition=partition)
            async with store.consumer("tsk", group=group) as consumer:
                assert len(await _collect(consumer, 6)) == 6
                blocking = _blocking_calls(location, store, consumer)
                consumer.seek_to_timestamp(2000)
                got = await _collect(consumer, 4)
                assert sorted((m.partition, m.offset) for m in got) == [
                    (0, 1),
                    (0, 2),
                    (1, 1),
                    (1, 2),
                ]
                consumer.seek_to_timestamp(4000)  # past the last message: the end
                assert await consumer.poll(timeout=0.5) == []
                assert (consumer.position(0), consumer.position(1)) == (3, 3)
                assert blocking == []

    asyncio.run(main())


def test_aio_committed_and_lag_make_no_round_trip_on_the_loop(location: str) -> None:
    """``await consumer.committed()`` and ``await consumer.lag()`` ask the broker in a
    thread, after a fetch that waits there (on Kafka both are round trips: before, they
    were plain methods making them on the loop's thread, waiting there for the fetch too)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("lg", partitions=2)
            topic.append_batch([b"a", b"b", b"c"], partition=0)
            async with store.consumer("lg", group=group) as consumer:
                assert len(await _collect(consumer, 3)) == 3
                await consumer.commit()
                blocking = _blocking_calls(location, store, consumer)
                waiting = asyncio.create_task(consumer.poll(timeout=0.5))
                await asyncio.sleep(0.2)  # the poll's fetch waits now
                assert await consumer.committed() == {0: 3}
                assert await consumer.lag() == {0: 0, 1: 0}
                await waiting
                assert blocking == []

    asyncio.run(main())


def _store_round_trips(location: str, store: Any) -> list[str]:
    """On kafka://, lists each broker round trip of the store's own calls made from now on
    on the loop's thread: the synchronous store's topic look-ups, statistics and member
    constructors (a group join, a share group's configuration, a named producer's
    ``init_transactions``), and every admin request. Locally there is no broker."""
    found: list[str] = []
    if not location.startswith("kafka://"):
        return found
    loop_thread = threading.get_ident()
    sync = store.sync

    def watched(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(real)
        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == loop_thread:
                found.append(name)
            return real(*args, **kwargs)

        return call

    class WatchedAdmin:
        def __init__(self, admin: Any) -> None:
            self._admin = admin

        def __getattr__(self, name: str) -> Any:
            return watched(f"admin.{name}", getattr(self._admin, name))

    for name in ("topics", "topic", "stats", "producer", "consumer", "work_queue"):
        setattr(sync, name, watched(name, getattr(sync, name)))
    sync._admin = WatchedAdmin(sync._admin)
    return found


def test_aio_store_calls_make_no_round_trip_on_the_loop(location: str) -> None:
    """The store's topic look-ups, statistics and member constructors: on Kafka each is a
    round trip (metadata, a group join, a named producer's transactional id), made in a
    thread (before, ``topics()``, ``topic()``, ``stats()`` and the constructors were plain
    methods making them on the loop's thread)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("rt", partitions=2)
            topic.append(b"a", partition=0)
            blocking = _store_round_trips(location, store)
            assert "rt" in await store.topics()
            assert (await store.topic("rt")).partitions == 2
            assert "rt" in (await store.stats())["topics"]
            async with store.producer(name=f"p-{group}") as named:
                assert named.name == f"p-{group}"
            async with store.producer() as producer:
                await (await producer.send("rt", b"b", partition=1))
            async with store.consumer("rt", group=group) as consumer:
                got = await _collect(consumer, 2)
                assert sorted(m.value for m in got) == [b"a", b"b"]
            async with store.work_queue("rt", group=f"w-{group}") as queue:
                jobs = await queue.acquire_many(2, timeout=PATIENCE)
                assert jobs
                await queue.ack_many(jobs)
            assert blocking == []

    asyncio.run(main())


def test_aio_at_most_once_commits_off_the_loop(location: str) -> None:
    """An at-most-once member commits before it hands messages out, from poll and from
    ``async for``: on Kafka a round trip, made in the fetch's thread (before, on the loop's
    thread, blocking every task for its duration); what it did not hand out yet stays
    uncommitted, for the group's next member."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("amo")
            topic.append_batch([b"%d" % i for i in range(8)], partition=0)
            consumer = await store.consumer("amo", group=group, delivery="at-most-once")
            blocking = _blocking_calls(location, store, consumer)
            got: list[Any] = []
            async with asyncio.timeout(PATIENCE):
                while not got:  # until the member joined
                    got = await consumer.poll(max_messages=2, timeout=0.5)
            assert [m.offset for m in got] == [0, 1]
            assert await consumer.committed() == {0: 2}
            assert [m.offset for m in await _collect(consumer, 2)] == [2, 3]
            # Past what was handed out (a local member commits its whole fetch, and gives
            # back what it did not hand out when it closes).
            assert (await consumer.committed())[0] >= 4
            assert blocking == []
            await consumer.close()
            async with store.consumer("amo", group=group) as again:
                assert [m.offset for m in await _collect(again, 4)] == [4, 5, 6, 7]

    asyncio.run(main())


def test_aio_at_most_once_async_for_commits_once_per_fetch(location: str) -> None:
    """``async for`` on an at-most-once member commits past a whole fetch before handing
    out its first message (on Kafka in the fetch's thread), not once per message (before,
    kafka:// made a thread trip and a commit per message); no message is handed out before
    a commit past it, and closing gives back what was fetched and not handed out."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("amof")
            topic.append_batch([b"%d" % i for i in range(60)], partition=0)
            consumer = await store.consumer(
                "amof", group=group, delivery="at-most-once", max_poll_messages=10
            )
            watch = CommitWatch(consumer.sync)
            blocking = _blocking_calls(location, store, consumer)
            handed = 0

            async def take() -> None:
                nonlocal handed
                async for msg in consumer:
                    assert msg.offset == handed
                    assert watch.past[0] > msg.offset
                    handed += 1
                    if handed == 55:
                        return

            await asyncio.wait_for(take(), PATIENCE)
            assert watch.fetches >= 6  # at most ten messages a fetch
            assert watch.commits <= watch.fetches
            assert blocking == []
            await consumer.close()
            async with store.consumer("amof", group=group) as again:
                assert [m.offset for m in await _collect(again, 5)] == list(range(55, 60))

    asyncio.run(main())


def test_aio_at_most_once_poll_whose_commit_failed_keeps_its_messages(location: str) -> None:
    """An at-most-once poll whose commit past a fetch fails raises and hands none of it
    out; the next poll commits again and hands the fetch out from its first message, none
    lost and none twice (before, a local member had moved its position past them: lost)."""
    group = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("amocf")
            topic.append_batch([b"%d" % i for i in range(10)], partition=0)
            consumer = await store.consumer("amocf", group=group, delivery="at-most-once")
            failing = FailNextCommit(consumer.sync)
            async with asyncio.timeout(PATIENCE):
                with pytest.raises(tidelog.TidelogError):
                    while True:  # until the member joined and fetched
                        assert await consumer.poll(max_messages=4, timeout=0.5) == []
            assert failing.failed
            assert await consumer.committed() == {}
            # More to read, so that a poll that lost the fetch hands these out, not waits.
            topic.append_batch([b"%d" % i for i in range(10, 20)], partition=0)
            handed: list[Any] = []
            async with asyncio.timeout(PATIENCE):
                while len(handed) < 10:
                    handed += await consumer.poll(timeout=0.5)
            assert [m.offset for m in handed] == list(range(len(handed)))
            assert (await consumer.committed())[0] >= len(handed)
            await consumer.close()

    asyncio.run(main())


def test_aio_pause_resume_position_leave_the_loop_running_while_a_fetch_waits(
    location: str,
) -> None:
    """pause(), resume() and position() return at once while a poll's fetch waits (on
    Kafka in a thread, inside a confluent-kafka consumer call, which makes every other call
    on that consumer wait: before, each waited for the fetch to end on the loop's thread,
    so the waiting poll had timed out when the message appended after them came)."""

    async def main() -> None:
        async with _two_partitions_read(location, "prp") as (store, topic, consumer):
            blocking = _blocking_calls(location, store, consumer)
            waiting = asyncio.create_task(consumer.poll(timeout=10.0))
            await asyncio.sleep(0.5)  # the poll's fetch waits now
            consumer.pause(1)
            assert consumer.paused() == [1]
            assert (consumer.position(0), consumer.position(1)) == (1, 1)
            consumer.resume(1)
            topic.append(b"late", partition=0)
            got = await waiting
            assert [(m.partition, m.value) for m in got] == [(0, b"late")]
            consumer.pause(1)  # no fetch waits: applied at once
            topic.append(b"held", partition=1)
            assert await consumer.poll(timeout=0.5) == []
            consumer.resume(1)
            assert [m.value for m in await _collect(consumer, 1)] == [b"held"]
            assert blocking == []

    asyncio.run(main())


def test_aio_a_closed_work_queue_hands_out_nothing(location: str) -> None:
    """``async for`` and ``acquire`` on a closed work queue raise StoreClosedError naming
    the queue (before, a Kafka queue's ``async for`` stopped silently)."""

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("wq")
            topic.append(b"a", partition=0)
            queue = await store.work_queue("wq", group="w")
            job = await queue.acquire(timeout=PATIENCE)
            assert job is not None
            await queue.ack(job)
            await queue.close()
            named = "work queue 'w' is closed"
            with pytest.raises(tidelog.StoreClosedError, match=named):
                await anext(queue)
            with pytest.raises(tidelog.StoreClosedError, match=named):
                async for _ in queue:
                    raise AssertionError("a closed work queue handed out a job")
            with pytest.raises(tidelog.StoreClosedError, match=named):
                await queue.acquire(timeout=0)

    asyncio.run(main())


def test_aio_work_queue_settles_after_a_cancelled_flush(location: str) -> None:
    """ack() and close() right after a cancelled flush() (on Kafka a round trip its thread
    goes on making) wait for that thread: before, they called the share consumer while the
    thread was in it, which confluent-kafka refuses (ConcurrentModificationException). On
    Kafka the flush's call is held until the ack was tried, and every call on the share
    consumer made while another is under way is listed."""
    overlapping: list[str] = []
    inside, go = threading.Event(), threading.Event()
    under_way = [0]
    counting = threading.Lock()

    class HeldFlush:
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            real = getattr(self._client, name)

            def watched(*args: Any, **kwargs: Any) -> Any:
                with counting:
                    if under_way[0]:
                        overlapping.append(name)
                    under_way[0] += 1
                try:
                    if name == "commit_sync":
                        inside.set()
                        go.wait(PATIENCE)
                    return real(*args, **kwargs)
                finally:
                    with counting:
                        under_way[0] -= 1

            return watched

    async def main() -> None:
        async with tidelog.aio.open(location) as store:
            topic = await store.create_topic("wqf")
            topic.append_batch([b"a", b"b"], partition=0)
            queue = await store.work_queue("wqf", group="wf")
            jobs = await queue.acquire_many(2, timeout=PATIENCE)
            if len(jobs) < 2:
                jobs += await queue.acquire_many(2 - len(jobs), timeout=PATIENCE)
            await queue.ack(jobs[0])
            kafka = location.startswith("kafka://")
            if kafka:
                member: Any = queue.sync
                member._consumer = HeldFlush(member._consumer)
            flushing = asyncio.create_task(queue.flush())
            async with asyncio.timeout(PATIENCE):
                while kafka and not inside.is_set():  # its thread is in the share consumer
                    await asyncio.sleep(0.01)
            flushing.cancel()
            asyncio.get_running_loop().call_later(0.2, go.set)
            await queue.ack(jobs[1])
            go.set()
            await queue.close()

    asyncio.run(main())
    assert overlapping == []
