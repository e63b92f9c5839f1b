"""Consumer child process of the producer-to-consumer latency benchmark.

Usage: ``python latency_consumer.py MODE STORE TOPIC COUNT OUT [PIPE_FD | SPIN_US]``

Every message value starts with the sender's ``time.perf_counter_ns()`` as a signed
little-endian int64 (CLOCK_MONOTONIC on Linux: one clock for every process of the machine);
the stamp ``-1`` marks warm-up messages, which are not measured. The child blocks for
messages, subtracts each stamp from its own ``perf_counter_ns()`` taken when the messages
reached it, and stops after ``COUNT`` measured messages.

Modes (how the child waits):

* ``group``: ``store.consumer(TOPIC, group=..., start="latest", spin_us=SPIN_US)``, blocked
  in ``poll(500)`` (at-least-once: every poll commits what the previous one returned);
* ``doorbell``: no group, the raw loop a consumer is built on: ``ticket()``,
  ``read_batch(0, position)``, ``wait(ticket, spin_us=SPIN_US)`` when there is nothing new;
* ``idle``: a ``group`` member with ``spin_us=SPIN_US`` polling a topic nobody writes to for
  ``COUNT`` milliseconds; ``done`` reports its CPU time over that span (``OUT`` stays empty);
* ``aio`` / ``aio-uvloop``: a ``tidelog.aio`` group member (``spin_us=SPIN_US``: its loop's
  waker thread spins that long before sleeping) awaiting ``poll(500)`` in an asyncio (or
  uvloop) event loop, woken through the store's waker and its eventfd;
* ``pipe``: no tidelog at all: blocked in ``os.read`` on the pipe ``PIPE_FD`` that the parent
  writes the same 100-byte values to (the floor of a cross-process wake-up).

Protocol on stdout: ``ready`` once waiting, ``warm`` at the first warm-up message, then
``done {json}`` with this process's CPU time and context switches over the measured part.
The latencies (int64 ns, arrival order) are written to ``OUT``.
"""

from __future__ import annotations

import array
import json
import os
import resource
import struct
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import tidelog

STAMP = struct.Struct("<q")
VALUE_BYTES = 100
GROUP = "latency"
#: Longest a child runs, whatever happens to its parent (seconds).
LIFETIME_S = 600.0


def say(line: str) -> None:
    """One line to the parent."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def group_batches(store: tidelog.Store, topic: str, spin_us: int) -> Iterator[Iterable[bytes]]:
    """Values as a group member's ``poll`` hands them out."""
    consumer = store.consumer(topic, group=GROUP, start="latest", spin_us=spin_us)
    say("ready")
    poll = consumer.poll
    try:
        while True:
            yield [m.value or b"" for m in poll(500, 1.0)]
    finally:
        consumer.close()


def doorbell_batches(
    store: tidelog.Store, topic_name: str, spin_us: int
) -> Iterator[Iterable[bytes]]:
    """Values read by the raw ticket / read_batch / wait loop of one partition."""
    topic = store.topic(topic_name)
    position = topic.end_offset(0)
    ticket, read, wait = topic.ticket, topic.read_batch, topic.wait
    say("ready")
    while True:
        t = ticket()
        batch = read(0, position, max_messages=500)
        if len(batch):
            position = batch.next_offset
            yield [v or b"" for v in batch.values()]
        else:
            wait(t, 1.0, spin_us)


def idle_usage(store: tidelog.Store, topic: str, spin_us: int, span_s: float) -> dict[str, float]:
    """CPU time of a group member polling an idle topic for ``span_s`` seconds."""
    consumer = store.consumer(topic, group=GROUP, start="latest", spin_us=spin_us)
    say("ready")
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    received = 0
    while (left := span_s - (time.monotonic() - start)) > 0:
        received += len(consumer.poll(500, left))
    after = resource.getrusage(resource.RUSAGE_SELF)
    consumer.close()
    return {
        "idle_s": time.monotonic() - start,
        "cpu_user_s": after.ru_utime - before.ru_utime,
        "cpu_sys_s": after.ru_stime - before.ru_stime,
        "voluntary_ctx_switches": after.ru_nvcsw - before.ru_nvcsw,
        "involuntary_ctx_switches": after.ru_nivcsw - before.ru_nivcsw,
        "received": received,
    }


def pipe_batches(fd: int) -> Iterator[Iterable[bytes]]:
    """100-byte values read from a pipe."""
    pending = b""
    say("ready")
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        data = pending + chunk
        whole = len(data) - len(data) % VALUE_BYTES
        pending = data[whole:]
        yield [data[i : i + VALUE_BYTES] for i in range(0, whole, VALUE_BYTES)]


class Meter:
    """Latencies of the first ``count`` measured messages, and this process's usage meanwhile."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.lat: array.array[int] = array.array("q")
        self.warm = False
        self.deadline = time.monotonic() + LIFETIME_S
        self.before = resource.getrusage(resource.RUSAGE_SELF)

    def take(self, batch: Iterable[bytes], now: int) -> bool:
        """Counts a batch that reached this process at ``now``; True once done."""
        add, unpack = self.lat.append, STAMP.unpack_from
        for value in batch:
            stamp = unpack(value)[0]
            if stamp >= 0:
                add(now - stamp)
            elif not self.warm:
                self.warm = True
                say("warm")
                self.before = resource.getrusage(resource.RUSAGE_SELF)
        return len(self.lat) >= self.count or time.monotonic() > self.deadline

    def result(self) -> tuple[array.array[int], dict[str, float]]:
        """The latencies and the usage since the first warm-up message."""
        after = resource.getrusage(resource.RUSAGE_SELF)
        before = self.before
        usage = {
            "cpu_user_s": after.ru_utime - before.ru_utime,
            "cpu_sys_s": after.ru_stime - before.ru_stime,
            "voluntary_ctx_switches": after.ru_nvcsw - before.ru_nvcsw,
            "involuntary_ctx_switches": after.ru_nivcsw - before.ru_nivcsw,
            "minor_faults": after.ru_minflt - before.ru_minflt,
            "received": len(self.lat),
        }
        return self.lat, usage


def measure(
    batches: Iterator[Iterable[bytes]], count: int
) -> tuple[array.array[int], dict[str, float]]:
    """Latencies of the first ``count`` measured messages, and this process's usage meanwhile."""
    meter = Meter(count)
    clock: Callable[[], int] = time.perf_counter_ns
    for batch in batches:
        if meter.take(batch, clock()):
            break
    return meter.result()


def aio_measure(
    path: str, topic: str, count: int, loop: str, spin_us: int
) -> tuple[array.array[int], dict[str, float]]:
    """:func:`measure` with an async group member waiting in an event loop (``tidelog.aio``)."""
    import asyncio

    import tidelog.aio

    async def run() -> tuple[array.array[int], dict[str, float]]:
        async with tidelog.aio.open(path, fsync="never") as store:
            consumer = await store.consumer(topic, group=GROUP, start="latest", spin_us=spin_us)
            say("ready")
            meter = Meter(count)
            clock: Callable[[], int] = time.perf_counter_ns
            poll = consumer.poll
            while True:
                messages = await poll(500, 1.0)
                if meter.take([m.value or b"" for m in messages], clock()):
                    break
            await consumer.close()
            return meter.result()

    if loop == "uvloop":
        import uvloop

        return uvloop.run(run())
    return asyncio.run(run())


def main(argv: list[str]) -> int:
    """Runs the consumer until ``COUNT`` measured messages arrived."""
    mode, path, topic, count, out = argv[0], argv[1], argv[2], int(argv[3]), argv[4]
    store: tidelog.Store | None = None
    spin_us = int(argv[5]) if len(argv) > 5 and mode != "pipe" else 0
    if mode in ("aio", "aio-uvloop"):
        loop = "uvloop" if mode == "aio-uvloop" else ""
        lat, usage = aio_measure(path, topic, count, loop, spin_us)
        with open(out, "wb") as f:
            lat.tofile(f)
        say("done " + json.dumps(usage))
        return 0
    if mode == "idle":
        with tidelog.open(path, fsync="never") as idle_store:
            usage = idle_usage(idle_store, topic, spin_us, count / 1000)
        open(out, "wb").close()
        say("done " + json.dumps(usage))
        return 0
    if mode == "pipe":
        batches = pipe_batches(int(argv[5]))
    else:
        store = tidelog.open(path, fsync="never")
        if mode == "group":
            batches = group_batches(store, topic, spin_us)
        elif mode == "doorbell":
            batches = doorbell_batches(store, topic, spin_us)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    try:
        lat, usage = measure(batches, count)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        if store is not None:
            store.close()
    with open(out, "wb") as f:
        lat.tofile(f)
    say("done " + json.dumps(usage))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
