"""``spin_us`` of async consumers and work-queue members: the loop's waker thread spins for them.

Bad values get errors naming ``spin_us``; a spinning member still hands out every message
exactly once when its waits are cancelled at random points (while the waker thread spins, as
it spins, or after it gave up); the loop keeps running while the waker thread spins. (What the
spin costs an idle member is a benchmark, ``aio-idle-cpu-spin`` in
``benches/python/test_aio_bench.py``, not a test.)
"""

from __future__ import annotations

import asyncio
import random
import select
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import tidelog
import tidelog.aio
from tidelog import _core

Run = Callable[[Coroutine[Any, Any, Any]], Any]
ROUNDS = 400
#: The longest spin there is: the waker thread is still spinning at almost every cancellation.
SPIN_US = _core.MAX_SPIN_US


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, tidelog.InvalidConfigError, "spin_us must be between 0 and 10000, got -1"),
        (_core.MAX_SPIN_US + 1, tidelog.InvalidConfigError, "spin_us must be between 0"),
        (1.5, TypeError, "spin_us must be int, got float"),
        ("10", TypeError, "spin_us must be int, got str"),
        (True, TypeError, "spin_us must be int, got bool"),
    ],
)
def test_bad_spin_us_is_refused_with_its_name(
    tmp_path: Path, run: Run, value: object, error: type[Exception], match: str
) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            with pytest.raises(error, match=match):
                await store.consumer("t", group="g", spin_us=value)  # type: ignore[arg-type]
            with pytest.raises(error, match=match):
                await store.work_queue("t", group="w", spin_us=value)  # type: ignore[arg-type]
            # Nothing was left joined: a good member takes every partition.
            consumer = await store.consumer("t", group="g", spin_us=0)
            assert consumer.assignment() == [0]
            await consumer.close()

    run(main())


def test_the_native_watch_checks_spin_us(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        bell = _core.Bell.topic(store.create_topic("t", partitions=1))
        waker = _core.Waker()
        try:
            with pytest.raises(tidelog.InvalidConfigError, match="spin_us"):
                waker.watch(bell, bell.ticket(), -1)
            with pytest.raises(tidelog.InvalidConfigError, match="spin_us"):
                waker.watch(bell, bell.ticket(), _core.MAX_SPIN_US + 1)
            with pytest.raises(TypeError, match="spin_us"):
                waker.watch(bell, bell.ticket(), 2.0)  # type: ignore[arg-type]
        finally:
            waker.close()


def test_a_spinning_watch_fires_for_an_append_and_then_sleeps(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=1)
        bell = _core.Bell.topic(topic)
        waker = _core.Waker()
        try:
            for spin_us in (SPIN_US, 1, 0):
                ticket = bell.ticket()
                waker.watch(bell, ticket, spin_us)
                assert not select.select([waker.fileno()], [], [], 0.05)[0]
                topic.append(b"x", partition=0)
                assert select.select([waker.fileno()], [], [], 10.0)[0], spin_us
                waker.drain()
        finally:
            waker.close()


def _feed_from_a_thread(
    topic: tidelog.Topic, total: int, seed: int
) -> tuple[threading.Thread, list[BaseException]]:
    """Appends ``total`` messages from another thread at random moments (0-3 ms apart)."""
    errors: list[BaseException] = []

    def feed() -> None:
        rng = random.Random(seed)
        try:
            for i in range(total):
                topic.append(b"%d" % i, partition=i % topic.partitions)
                time.sleep(rng.uniform(0, 0.003))
        except BaseException as e:  # reported by the test
            errors.append(e)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread, errors


async def _outcome(task: asyncio.Task[Any]) -> Any:
    try:
        return await task
    except asyncio.CancelledError:
        return None


def test_cancelled_spinning_polls_hand_out_each_message_once(tmp_path: Path, run: Run) -> None:
    rng = random.Random(19)

    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("t", partitions=2)
            consumer = await store.consumer("t", group="g", max_poll_messages=5, spin_us=SPIN_US)
            total = 300
            feeder, errors = _feed_from_a_thread(topic, total, 20)
            got: list[tidelog.Message] = []
            cancelled = 0
            for _ in range(ROUNDS):
                if rng.random() < 0.5:
                    call: Coroutine[Any, Any, Any] = consumer.poll(
                        max_messages=rng.randint(1, 5), timeout=rng.uniform(0, 0.02)
                    )
                else:
                    call = consumer.__anext__()
                task = asyncio.create_task(call)
                # Mostly within the waker's 10 ms spin, sometimes at once or after it.
                await asyncio.sleep(rng.choice((0, rng.uniform(0, 0.003), 0.012)))
                task.cancel()
                result = await _outcome(task)
                if result is None:
                    cancelled += 1
                elif isinstance(result, list):
                    got.extend(result)
                else:
                    got.append(result)
            await asyncio.to_thread(feeder.join)
            assert not errors
            while len(got) < total:
                more = await consumer.poll(timeout=5.0)
                assert more, f"only {len(got)} of {total} messages came"
                got.extend(more)
            assert await consumer.poll(timeout=0.05) == []
            assert cancelled > ROUNDS // 10, "the cancellations must land while waiting"
            seen = [(m.partition, m.offset) for m in got]
            assert len(seen) == len(set(seen)) == total
            for p in range(2):
                offsets = [o for q, o in seen if q == p]
                assert offsets == list(range(len(offsets)))
            await consumer.commit()
            assert await consumer.committed() == {p: topic.end_offset(p) for p in range(2)}

    run(main())


def test_cancelled_spinning_acquires_hold_no_job(tmp_path: Path, run: Run) -> None:
    rng = random.Random(21)

    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            topic = await store.create_topic("jobs", partitions=2)
            queue = await store.work_queue(
                "jobs", group="w", lock_timeout=600.0, prefetch=4, spin_us=SPIN_US
            )
            total = 200
            feeder, errors = _feed_from_a_thread(topic, total, 22)
            done: list[tidelog.Job] = []
            cancelled = 0
            for _ in range(ROUNDS):
                if rng.random() < 0.5:
                    call: Coroutine[Any, Any, Any] = queue.acquire(timeout=rng.uniform(0, 0.02))
                else:
                    call = queue.__anext__()
                task = asyncio.create_task(call)
                await asyncio.sleep(rng.choice((0, rng.uniform(0, 0.003), 0.012)))
                task.cancel()
                job = await _outcome(task)
                if job is None:
                    cancelled += 1
                    continue
                await queue.ack(job)
                done.append(job)
            await asyncio.to_thread(feeder.join)
            assert not errors
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


def test_the_loop_runs_while_the_waker_thread_spins(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path) as store:
            await store.create_topic("t", partitions=1)
            consumer = await store.consumer("t", group="g", spin_us=SPIN_US)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            try:
                # Each wait starts a 10 ms spin of the waker thread; the loop's thread keeps
                # running the ticker meanwhile (it would not, were the loop's thread spinning
                # or blocked).
                for _ in range(5):
                    before = ticks
                    assert await consumer.poll(timeout=0.005) == []
                    assert ticks > before, "the loop did not run while the consumer waited"
            finally:
                task.cancel()
                await _outcome(task)
            await consumer.close()

    run(main())
