"""asyncio (issue 15): ``tidelog.aio`` next to the synchronous API, measured in the same run.

* ``aio-send``: ``await producer.send`` of 100-byte values from one task, then ``await
  flush()``, next to the synchronous ``producer.send`` + ``flush()`` of the same values (the
  reference); the target is a ratio of at least 0.9. A uvloop variant is reported too. Both
  also record ``paired_ratio`` (and ``paired_ratio_cpu``, by process CPU time): the median
  per-round ratio to a synchronous round run just before each async round, steadier than
  the ratio of the two tests' medians when other jobs share the machine.
* ``aio-consume``: ``async for msg in consumer`` with ``await consumer.commit()`` every 500
  messages over a partition, next to the synchronous ``for msg in consumer`` with a commit
  every 500 (the reference).
* ``aio-latency-p50`` / ``-p99``: the cross-process latency run of ``test_bench_consumer.py``
  with the consumer process awaiting ``poll(500)`` in an asyncio loop (mode ``aio``), next
  to the synchronous member blocked in ``poll`` (mode ``group``, the same run's figure);
  both with ``spin_us=0`` (sleep at once).
* ``aio-latency-spin-p50`` / ``-p99``: the same with ``spin_us=SPIN_ON_US`` for both members:
  the synchronous member spins in its own thread, the async member's loop waker thread
  spins for it (the loop's thread never spins).
* ``aio-idle-cpu``: the CPU time of a process whose async consumer waits for ``IDLE_S``
  seconds on an empty topic (as a percentage of one core), next to a process whose
  synchronous consumer does the same; ``aio-idle-cpu-spin`` is the async consumer with
  ``spin_us=SPIN_ON_US`` (it spins once per wait, then sleeps).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import tidelog
import tidelog.aio
import uvloop

from benches.python import test_bench_consumer as consumer_bench
from benches.support import (
    BATCH_VALUES,
    SCALE,
    VALUE_BYTES,
    Measured,
    Paired,
    Unit,
    make_buffer,
    make_values,
    ns_per,
    record,
)

VALUE = make_values(1)[0]
ROUNDS = SCALE.rounds
QUICK = SCALE.name == "quick"
SENDS = 50_000 if QUICK else 500_000
CONSUME_MSGS = 50_000 if QUICK else 1_000_000
COMMIT_EVERY = 500
IDLE_S = 2.0 if QUICK else 10.0
PERCENT = cast(Unit, "% of a core")
#: The default ``spin_us`` of consumers (both APIs).
_SPIN_US = cast(int, tidelog._core.WAIT_DEFAULTS["spin_us"])
#: ``spin_us`` of the spinning members here, the setting these figures have had since they
#: were first measured (the synchronous member's own targets in ``test_bench_consumer.py``
#: spin longer, to outlast the sender's pauses).
SPIN_ON_US = 100

SEND_TARGETS: list[dict[str, Any]] = [
    {"of": "ratio", "op": ">=", "value": 0.9, "text": ">= 90% of the sync send's msgs/s"},
]
CONSUME_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 2_000_000, "text": ">= 2,000,000 msgs/s"},
]
P50_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 30, "text": "p50 < 30 µs"},
]
P99_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 200, "text": "p99 < 200 µs"},
]
IDLE_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 1.0, "text": "< 1% of one core"},
]


class Loops:
    """One event loop of each kind for the whole module (a round runs to completion in it)."""

    def __init__(self) -> None:
        self.loops = {"asyncio": asyncio.new_event_loop(), "uvloop": uvloop.new_event_loop()}

    def run(self, kind: str, coro: Awaitable[Any]) -> Any:
        return self.loops[kind].run_until_complete(coro)

    def close(self) -> None:
        for loop in self.loops.values():
            loop.close()


@pytest.fixture(scope="module")
def loops() -> Iterator[Loops]:
    made = Loops()
    yield made
    made.close()


@pytest.fixture(scope="module")
def store(bench_root: Path) -> Iterator[tidelog.Store]:
    """A store with ``fsync="never"`` and the partition every consume round reads."""
    with tidelog.open(bench_root / "aio-store", fsync="never") as s:
        topic = s.create_topic("source", partitions=1)
        buffer, lengths = make_buffer()
        for _ in range(CONSUME_MSGS // BATCH_VALUES):
            topic.append_batch(buffer, lengths=lengths, partition=0)
        yield s


def _rounds(benchmark: Any, target: Callable[..., Any], setup: Callable[[], Any]) -> Any:
    measured = Measured(target)
    benchmark.pedantic(measured, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    return measured.per_call()


# --------------------------------------------------------------------------- send


class Topics:
    """A fresh topic per round (the previous one checked to hold every message)."""

    def __init__(self, store: tidelog.Store, prefix: str) -> None:
        self.store, self.prefix, self.count = store, prefix, 0

    def next(self) -> str:
        if self.count:
            previous = f"{self.prefix}-{self.count - 1}"
            assert self.store.topic(previous).end_offset(0) == SENDS
            self.store.delete_topic(previous)
        name = f"{self.prefix}-{self.count}"
        self.store.create_topic(name, partitions=1)
        self.count += 1
        return name


def sync_send(producer: tidelog.Producer, topic: str) -> None:
    send, value = producer.send, VALUE
    for _ in range(SENDS):
        send(topic, value)
    producer.flush()


async def async_send(producer: tidelog.aio.Producer, topic: str) -> None:
    send, value = producer.send, VALUE
    for _ in range(SENDS):
        await send(topic, value)
    await producer.flush()


async def nowait_send(producer: tidelog.aio.Producer, topic: str) -> None:
    """The documented hot loop: ``send_nowait``, awaiting ``send`` only under pressure."""
    send, value = producer.send_nowait, VALUE
    for _ in range(SENDS):
        try:
            send(topic, value)
        except tidelog.BackpressureError:
            await producer.send(topic, value)


SEND_WHAT = f"{SENDS:,} msgs of {VALUE_BYTES} B per round, then flush(), a new topic per round"


@pytest.mark.benchmark(group="aio-send")
def test_aio_send_reference(benchmark: Any, store: tidelog.Store) -> None:
    topics = Topics(store, "sync-send")
    with store.producer() as producer:
        usage = _rounds(benchmark, sync_send, lambda: ((producer, topics.next()), {}))
    record(
        benchmark,
        figure="aio-send",
        title="sync producer.send + flush()",
        role="reference",
        unit="msgs/s",
        work=SENDS,
        what=SEND_WHAT,
        extra={"ns_per_msg": ns_per(benchmark, SENDS), **usage},
    )


@pytest.mark.benchmark(group="aio-send")
@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_aio_send_tidelog(benchmark: Any, store: tidelog.Store, loops: Loops, kind: str) -> None:
    topics = Topics(store, f"aio-send-{kind}")
    astore = tidelog.aio.Store(store)
    producer = loops.run(kind, astore.producer())
    reference = store.producer()
    paired = Paired(
        Topics(store, f"aio-send-paired-{kind}").next, lambda t: sync_send(reference, t)
    )

    def one_round(topic: str) -> None:
        loops.run(kind, async_send(producer, topic))

    def setup() -> Any:
        paired.run()
        return (topics.next(),), {}

    measured = Measured(one_round)
    benchmark.pedantic(measured, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    reference.close()
    usage = {**measured.per_call(), **paired.ratios(benchmark, measured)}
    loops.run(kind, producer.close())
    record(
        benchmark,
        figure="aio-send" if kind == "asyncio" else "aio-send-uvloop",
        title=f"await producer.send + await flush() ({kind} loop)",
        role="tidelog" if kind == "asyncio" else "variant",
        unit="msgs/s",
        work=SENDS,
        what=SEND_WHAT,
        targets=SEND_TARGETS if kind == "asyncio" else None,
        extra={"ns_per_msg": ns_per(benchmark, SENDS), **usage},
    )


@pytest.mark.benchmark(group="aio-send")
def test_aio_send_nowait(benchmark: Any, store: tidelog.Store, loops: Loops) -> None:
    topics = Topics(store, "aio-send-nowait")
    astore = tidelog.aio.Store(store)
    producer = loops.run("asyncio", astore.producer())

    async def one(topic: str) -> None:
        await nowait_send(producer, topic)
        await producer.flush()

    def one_round(topic: str) -> None:
        loops.run("asyncio", one(topic))

    usage = _rounds(benchmark, one_round, lambda: ((topics.next(),), {}))
    loops.run("asyncio", producer.close())
    record(
        benchmark,
        figure="aio-send-nowait",
        title="send_nowait, await send() only under pressure, + await flush() (asyncio)",
        role="variant",
        unit="msgs/s",
        work=SENDS,
        what=SEND_WHAT,
        extra={"ns_per_msg": ns_per(benchmark, SENDS), **usage},
    )


# --------------------------------------------------------------------------- consume


def sync_consume(consumer: tidelog.Consumer) -> None:
    commit = consumer.commit
    for got, _ in enumerate(consumer, 1):
        if got % COMMIT_EVERY == 0:
            commit()
            if got == CONSUME_MSGS:
                break
    assert consumer.committed() == {0: CONSUME_MSGS}
    consumer.close()


async def async_consume(consumer: tidelog.aio.Consumer) -> None:
    commit, got = consumer.commit, 0
    async for _ in consumer:
        got += 1
        if got % COMMIT_EVERY == 0:
            await commit()
            if got == CONSUME_MSGS:
                break
    assert await consumer.committed() == {0: CONSUME_MSGS}
    await consumer.close()


CONSUME_WHAT = (
    f"{CONSUME_MSGS:,} msgs of {VALUE_BYTES} B per round, a commit every {COMMIT_EVERY}, "
    "a new group per round"
)


@pytest.mark.benchmark(group="aio-consume")
def test_aio_consume_reference(benchmark: Any, store: tidelog.Store) -> None:
    groups = iter(range(1_000_000))

    def setup() -> Any:
        return (store.consumer("source", group=f"sync-{next(groups)}"),), {}

    usage = _rounds(benchmark, sync_consume, setup)
    record(
        benchmark,
        figure="aio-consume",
        title=f"sync: for msg in consumer, commit() every {COMMIT_EVERY}",
        role="reference",
        unit="msgs/s",
        work=CONSUME_MSGS,
        what=CONSUME_WHAT,
        extra={"ns_per_msg": ns_per(benchmark, CONSUME_MSGS), **usage},
    )


@pytest.mark.benchmark(group="aio-consume")
@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_aio_consume_tidelog(benchmark: Any, store: tidelog.Store, loops: Loops, kind: str) -> None:
    astore = tidelog.aio.Store(store)
    groups = iter(range(1_000_000))

    def one_round(consumer: tidelog.aio.Consumer) -> None:
        loops.run(kind, async_consume(consumer))

    def setup() -> Any:
        consumer = loops.run(kind, astore.consumer("source", group=f"aio-{kind}-{next(groups)}"))
        return (consumer,), {}

    usage = _rounds(benchmark, one_round, setup)
    record(
        benchmark,
        figure="aio-consume" if kind == "asyncio" else "aio-consume-uvloop",
        title=f"async for msg in consumer, await commit() every {COMMIT_EVERY} ({kind} loop)",
        role="tidelog" if kind == "asyncio" else "variant",
        unit="msgs/s",
        work=CONSUME_MSGS,
        what=CONSUME_WHAT,
        targets=CONSUME_TARGETS if kind == "asyncio" else None,
        extra={"ns_per_msg": ns_per(benchmark, CONSUME_MSGS), **usage},
    )


# --------------------------------------------------------------------------- latency

AIO_TITLE = "{p} latency, append -> consumer process awaiting poll(500) in an asyncio loop"


@pytest.fixture(scope="module")
def latency_root(bench_root: Path) -> Path:
    path = bench_root / "aio-latency"
    path.mkdir(exist_ok=True)
    return path


@pytest.mark.benchmark(group="aio-latency")
@pytest.mark.parametrize("percentile", ["p50", "p99"])
def test_aio_latency_reference(benchmark: Any, latency_root: Path, percentile: str) -> None:
    consumer_bench._latency(
        benchmark,
        latency_root,
        "group",
        figure=f"aio-latency-{percentile}",
        percentile=percentile,
        title=consumer_bench.GROUP_TITLE.format(p=percentile),
        role="reference",
    )


@pytest.mark.benchmark(group="aio-latency")
@pytest.mark.parametrize("percentile", ["p50", "p99"])
def test_aio_latency_tidelog(benchmark: Any, latency_root: Path, percentile: str) -> None:
    consumer_bench._latency(
        benchmark,
        latency_root,
        "aio",
        figure=f"aio-latency-{percentile}",
        percentile=percentile,
        title=AIO_TITLE.format(p=percentile),
        role="tidelog",
        targets=P50_TARGETS if percentile == "p50" else P99_TARGETS,
    )


AIO_SPIN_TITLE = (
    "{p} latency, append -> consumer process awaiting poll(500) in an asyncio loop "
    "(spin_us={spin}, spun by the waker thread)"
)


@pytest.mark.benchmark(group="aio-latency-spin")
@pytest.mark.parametrize("percentile", ["p50", "p99"])
def test_aio_latency_spin_reference(benchmark: Any, latency_root: Path, percentile: str) -> None:
    consumer_bench._latency(
        benchmark,
        latency_root,
        "group",
        figure=f"aio-latency-spin-{percentile}",
        percentile=percentile,
        title=consumer_bench.SPIN_TITLE.format(p=percentile, spin=SPIN_ON_US),
        role="reference",
        spin_us=SPIN_ON_US,
    )


@pytest.mark.benchmark(group="aio-latency-spin")
@pytest.mark.parametrize("percentile", ["p50", "p99"])
def test_aio_latency_spin_tidelog(benchmark: Any, latency_root: Path, percentile: str) -> None:
    consumer_bench._latency(
        benchmark,
        latency_root,
        "aio",
        figure=f"aio-latency-spin-{percentile}",
        percentile=percentile,
        title=AIO_SPIN_TITLE.format(p=percentile, spin=SPIN_ON_US),
        role="tidelog",
        targets=P50_TARGETS if percentile == "p50" else P99_TARGETS,
        spin_us=SPIN_ON_US,
    )


# --------------------------------------------------------------------------- idle

IDLE_CHILD = r"""
import asyncio, json, sys, time
import tidelog, tidelog.aio
mode, path, seconds, spin_us = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

def measured(wait):
    cpu, wall = time.process_time(), time.monotonic()
    got = wait()
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall, "got": got}

if mode == "sync":
    with tidelog.open(path) as store:
        consumer = store.consumer("idle", group="sync", spin_us=spin_us)
        consumer.poll(timeout=0)
        out = measured(lambda: len(consumer.poll(timeout=seconds)))
else:
    async def main():
        async with tidelog.aio.open(path) as store:
            consumer = await store.consumer("idle", group="aio", spin_us=spin_us)
            await consumer.poll(timeout=0)
            cpu, wall = time.process_time(), time.monotonic()
            got = len(await consumer.poll(timeout=seconds))
            return {"cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall,
                    "got": got}
    out = asyncio.run(main())
print(json.dumps(out), flush=True)
"""


def idle_run(mode: str, directory: Path, spin_us: int) -> dict[str, float]:
    with tidelog.open(directory) as s:
        s.create_topic("idle", partitions=4, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", IDLE_CHILD, mode, str(directory), str(IDLE_S), str(spin_us)],
        capture_output=True,
        text=True,
        timeout=IDLE_S + 120,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["got"] == 0
    result["percent_of_a_core"] = result["cpu_s"] / result["wall_s"] * 100
    return result


@pytest.mark.benchmark(group="aio-idle")
@pytest.mark.parametrize("mode", ["sync", "aio", "aio-spin"])
def test_aio_idle_cpu(benchmark: Any, bench_root: Path, mode: str) -> None:
    spin_us = SPIN_ON_US if mode == "aio-spin" else _SPIN_US

    def measure() -> dict[str, float]:
        return idle_run(mode.removesuffix("-spin"), bench_root / "aio-idle", spin_us)

    started = time.monotonic()
    result = benchmark.pedantic(measure, rounds=1, iterations=1, warmup_rounds=0)
    record(
        benchmark,
        figure="aio-idle-cpu-spin" if mode == "aio-spin" else "aio-idle-cpu",
        title=f"{'sync' if mode == 'sync' else 'async'} consumer (spin_us={spin_us}) waiting "
        f"{IDLE_S:g} s on an empty topic: process CPU time",
        role="reference" if mode == "sync" else "tidelog",
        unit=PERCENT,
        work=1,
        value=result["percent_of_a_core"],
        what=f"one poll(timeout={IDLE_S:g}) on 4 empty partitions, CPU time of the whole "
        f"process over the wait ({time.monotonic() - started:.1f} s with start-up)",
        targets=None if mode == "sync" else IDLE_TARGETS,
        extra={**result, "spin_us": spin_us},
    )
