"""The in-process cost of a consumer's way from a wake-up to ``poll`` returning (issue 19).

Usage: ``python benches/python/poll_wake_path.py [COUNT] [group|doorbell|poll0]``

The cross-process latency benchmark (``test_bench_consumer.py``, ``latency-spin-*``) needs a
free core for each side; this measures the consumer's own share of it in one process, where
a loaded machine disturbs it far less:

* ``group``: a group member (``spin_us=0``) in ``poll(500, 1.0)`` whose topic's ``wait`` is
  replaced by one that appends a message (as another process would) and takes the clock;
  the clock is taken again once ``poll`` returned and the values were read
  (``[m.value or b"" for m in ...]``, as the latency consumer does);
* ``doorbell``: the same for the raw ``ticket`` / ``read_batch`` / ``values()`` loop a
  consumer is built on (the floor);
* ``poll0``: a whole ``poll(500, 0)`` that finds one message waiting, including the commit
  of what the previous poll returned.

Prints one JSON line: percentiles in µs over COUNT messages after 2,000 warm-up ones, and
the cycle collections that ran meanwhile.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# Before numpy loads, as in benches/conftest.py: its OpenBLAS threads spin after use (~4% of
# the samples of a `perf record` of this script; the timings did not move).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import tidelog

VALUE = b"\0" * 100
WARMUP = 2000
clock = time.perf_counter_ns


class WakingTopic:
    """A consumer's topic whose ``wait`` appends a message and returns at once."""

    def __init__(self, topic: tidelog.Topic, send: Callable[[bytes], Any]) -> None:
        self._topic = topic
        self.ticket = topic.ticket
        self.read_batch = topic.read_batch
        self.read_messages = topic.read_messages
        self.end_offset = topic.end_offset
        self.start_offset = topic.start_offset
        self.send = send
        self.woken = 0

    def wait(self, ticket: int, timeout: float | None = None, spin_us: int | None = None) -> bool:
        """Appends one message, notes when, and reports that the doorbell rang."""
        self.send(VALUE)
        self.woken = clock()
        return True

    def wait_messages(
        self,
        ticket: int,
        partition: int,
        offset: int,
        max_messages: int,
        timeout: float | None = None,
        spin_us: int | None = None,
    ) -> tuple[list[tidelog.Message], int, int] | None:
        """Appends one message, notes when, then the real call (which finds it rang)."""
        self.send(VALUE)
        self.woken = clock()
        return self._topic.wait_messages(ticket, partition, offset, max_messages, timeout, spin_us)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._topic, name)


class Collections:
    """Counts the cycle collector's runs while installed."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            self.count += 1


def group(store: tidelog.Store, topic: tidelog.Topic, lat: np.ndarray[Any, Any]) -> None:
    """Wake-up to ``poll`` returning, in a group member."""
    consumer = store.consumer("t", group="g", start="latest", spin_us=0)
    waking = WakingTopic(topic, topic.append)
    consumer._topic = waking  # type: ignore[assignment]
    poll = consumer.poll
    for i in range(-WARMUP, len(lat)):
        [m.value or b"" for m in poll(500, 1.0)]
        if i >= 0:
            lat[i] = clock() - waking.woken
    consumer.close()


def doorbell(topic: tidelog.Topic, lat: np.ndarray[Any, Any]) -> None:
    """Wake-up to the values, in the raw ticket / read_batch / values loop."""
    ticket, read, send = topic.ticket, topic.read_batch, topic.append
    position = topic.end_offset(0)
    i, woken = -WARMUP, 0
    while i < len(lat):
        ticket()
        batch = read(0, position, max_messages=500)
        if len(batch):
            position = batch.next_offset
            [v or b"" for v in batch.values()]
            if i >= 0:
                lat[i] = clock() - woken
            i += 1
        else:
            send(VALUE)
            woken = clock()


def poll0(store: tidelog.Store, topic: tidelog.Topic, lat: np.ndarray[Any, Any]) -> None:
    """A whole ``poll(500, 0)`` finding one message (and committing the previous one)."""
    consumer = store.consumer("t", group="g", start="latest", spin_us=0)
    poll, send = consumer.poll, topic.append
    for i in range(-WARMUP, len(lat)):
        send(VALUE)
        started = clock()
        [m.value or b"" for m in poll(500, 0)]
        if i >= 0:
            lat[i] = clock() - started
    consumer.close()


def main(argv: list[str]) -> None:
    """Runs one mode and prints its figures."""
    count = int(argv[0]) if argv else 20_000
    mode = argv[1] if len(argv) > 1 else "group"
    root = tempfile.mkdtemp(prefix="poll-wake-")
    collections = Collections()
    try:
        with tidelog.open(root + "/store", fsync="never") as store:
            topic = store.create_topic("t", partitions=1)
            lat = np.zeros(count, dtype=np.int64)
            gc.callbacks.append(collections)
            if mode == "group":
                group(store, topic, lat)
            elif mode == "doorbell":
                doorbell(topic, lat)
            elif mode == "poll0":
                poll0(store, topic, lat)
            else:
                raise SystemExit(f"unknown mode {mode!r}")
            gc.callbacks.remove(collections)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    q = np.percentile(lat / 1e3, [50, 90, 99, 99.9])
    names = ["p50_us", "p90_us", "p99_us", "p999_us"]
    figures = {name: round(float(x), 3) for name, x in zip(names, q, strict=True)}
    print(json.dumps({"mode": mode, "messages": count, **figures, "gc_runs": collections.count}))


if __name__ == "__main__":
    main(sys.argv[1:])
