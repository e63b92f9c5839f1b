"""The buffered producer (issue #3): ``producer.send`` of 100-byte values through to the log
from one and from four Python threads, and group commit with ``fsync="always"``, each next to
its reference measured in the same run.

* ``producer-send``: ``send`` N values then ``flush()`` (everything is in the log when the
  round ends), next to ``topic.append`` of the same values (the synchronous path).
* ``producer-send-4-threads``: the same N values split over 4 threads (each sends its share,
  then flushes), next to the 1-thread figure measured again in this group.
* ``group-commit``: store with ``fsync="always"``, 4 threads each doing ``send`` + ``flush``
  in a loop: every ``flush`` is a commit (the message is on disk when it returns). The
  reference is the issue's "one serial writer doing append + fdatasync on the same disk": a
  loop of ``os.write`` (appending a length-prefixed record to a file) + ``os.fdatasync``.
  tidelog's own serial ``topic.append`` with fdatasync is a second, stricter reference: it
  is faster than the plain loop (its segment is preallocated, so a sync commits no file size
  change), which leaves group commit less to gain. Figures are the time per commit
  (``ns/call``), so "3x the commits/s" is a ratio of at most 1/3.

Every round uses a fresh topic and a new producer (made in the untimed set-up, where the
previous round's producer is closed, its topic checked to hold every message and deleted).
"""

from __future__ import annotations

import os
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.python.reference import PyLog
from benches.support import SCALE, VALUE_BYTES, Measured, make_values, ns_per, per_second, record

VALUE = make_values(1)[0]
ROUNDS = SCALE.rounds
QUICK = SCALE.name == "quick"
THREADS = 4
#: Messages sent per round (fsync "never").
SENDS = 50_000 if QUICK else 500_000
#: Messages per round of the pure-Python queue + writer-thread analogue.
PY_SENDS = 5_000 if QUICK else 100_000
#: send + flush loops per thread and round (fsync "always").
COMMITS_PER_THREAD = 40 if QUICK else 250
#: appends (or write + fdatasync) per round of the serial references.
SERIAL_COMMITS = 100 if QUICK else 1_000

SEND_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 1_500_000, "text": ">= 1,500,000 msgs/s"},
]
THREADS_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 1_500_000, "text": ">= 1,500,000 msgs/s"},
    {"of": "ratio", "op": ">=", "value": 1.0, "text": "no worse than 1 thread (ratio >= 1)"},
]
GROUP_COMMIT_TARGETS: list[dict[str, Any]] = [
    {
        "of": "ratio",
        "op": "<=",
        "value": 1 / 3,
        "text": ">= 3x the serial writer's commits/s (time per commit ratio <= 0.333)",
    },
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def store(bench_root: Path) -> Iterator[tidelog.Store]:
    """A store with ``fsync="never"``; each round gets a fresh topic in it."""
    with tidelog.open(bench_root / "producer-store", fsync="never") as s:
        yield s


@pytest.fixture(scope="module")
def durable_store(bench_root: Path) -> Iterator[tidelog.Store]:
    """A store with ``fsync="always"`` on the same disk."""
    with tidelog.open(bench_root / "producer-durable", fsync="always") as s:
        yield s


class Rounds:
    """Per round, a fresh one-partition topic and (optionally) a new producer.

    :meth:`next` closes the previous round's producer, checks its topic holds ``expect``
    messages, deletes it, and creates the next ones. :meth:`finish` does the same for the
    last round. Producer ``stats()`` of every round are kept.
    """

    def __init__(
        self, store: tidelog.Store, prefix: str, expect: int, *, producer: bool = True
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.expect = expect
        self.with_producer = producer
        self.count = 0
        self.topic: tidelog.Topic | None = None
        self.producer: tidelog.Producer | None = None
        self.stats: list[dict[str, Any]] = []

    def next(self) -> tuple[tidelog.Topic, tidelog.Producer | None]:
        """Finishes the previous round and returns the next round's topic and producer."""
        self.finish()
        self.topic = self.store.create_topic(f"{self.prefix}-{self.count}", partitions=1)
        self.count += 1
        if self.with_producer:
            self.producer = self.store.producer()
        return self.topic, self.producer

    def finish(self) -> None:
        """Closes and checks the current round's producer and topic, then deletes the topic."""
        if self.producer is not None:
            self.stats.append(self.producer.stats())
            self.producer.close()
            self.producer = None
        if self.topic is not None:
            end = self.topic.end_offset(0)
            assert end == self.expect, f"{self.topic.name} holds {end} messages, not {self.expect}"
            self.store.delete_topic(self.topic.name)
            self.topic = None

    def producer_stats(self) -> dict[str, float]:
        """Backpressure counters of the producers, averaged per round."""
        n = max(len(self.stats), 1)
        return {
            "producer_high_watermark_hits_per_round": sum(
                s["high_watermark_hits"] for s in self.stats
            )
            / n,
            "producer_blocked_s_per_round": sum(s["blocked_seconds"] for s in self.stats) / n,
        }


Args = tuple[tuple[Any, ...], dict[str, Any]]


def run(benchmark: Any, target: Callable[..., Any], setup: Callable[[], Args]) -> dict[str, float]:
    """Runs ``target`` for ``ROUNDS`` rounds (plus one warm-up) after a per-round setup.

    Returns the process's resource usage per timed round (setup excluded; CPU time counts
    every thread of the process, the producer's native writer thread included).
    """
    measured = Measured(target)
    benchmark.pedantic(measured, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    return measured.per_call()


# --------------------------------------------------------------------------- loops


def send_loop(producer: tidelog.Producer, topic: str, value: bytes, n: int) -> None:
    """``n`` sends, then one flush: everything sent is in the log when this returns."""
    send = producer.send
    for _ in range(n):
        send(topic, value)
    producer.flush()


def in_threads(target: Callable[..., Any], threads: int, *args: Any) -> None:
    """Runs ``target(*args)`` in ``threads`` new threads and waits for all of them.

    An exception in a thread fails the round (it is re-raised here).
    """
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=guarded) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def send_threads(producer: tidelog.Producer, topic: str, value: bytes, n: int) -> None:
    """``n`` sends split over ``THREADS`` threads, each flushing after its share."""
    in_threads(send_loop, THREADS, producer, topic, value, n // THREADS)


def commit_loop(producer: tidelog.Producer, topic: str, value: bytes, n: int) -> None:
    """``n`` commits: send one message, then wait for it to be on disk."""
    send, flush = producer.send, producer.flush
    for _ in range(n):
        send(topic, value)
        flush()


def commit_threads(producer: tidelog.Producer, topic: str, value: bytes, n: int) -> None:
    """``commit_loop`` in ``THREADS`` threads at once (``n`` commits each)."""
    in_threads(commit_loop, THREADS, producer, topic, value, n)


def append_loop(append: Callable[[bytes], Any], value: bytes, n: int) -> None:
    """``n`` synchronous appends."""
    for _ in range(n):
        append(value)


_PREFIX = struct.Struct("<I")


def fdatasync_loop(fd: int, value: bytes, n: int) -> None:
    """``n`` times: append one length-prefixed record with ``os.write``, then fdatasync."""
    record_bytes = _PREFIX.pack(len(value)) + value
    write, sync = os.write, os.fdatasync
    for _ in range(n):
        write(fd, record_bytes)
        sync(fd)


class PyProducer:
    """The Python analogue of a buffered producer: ``queue.Queue`` + a writer thread that
    drains it in batches of up to 4,096 into a :class:`PyLog` (page cache, no fsync).
    """

    def __init__(self, path: Path, capacity: int = 65_536) -> None:
        self.path = path
        self.queue: queue.Queue[bytes | None] = queue.Queue(capacity)
        self.log = PyLog(path)
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def send(self, value: bytes) -> None:
        """Enqueues one value (blocks while the queue is full)."""
        self.queue.put(value)

    def flush(self) -> None:
        """Waits until every value sent so far is written to the file."""
        self.queue.join()

    def close(self) -> None:
        """Flushes, stops the writer thread and closes the file."""
        self.queue.put(None)
        self.thread.join()
        self.log.close()

    def _write(self) -> None:
        q, log = self.queue, self.log
        while True:
            first = q.get()
            batch: list[bytes] = []
            stop = first is None
            if first is not None:
                batch.append(first)
            while not stop and len(batch) < 4096:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                log.append_batch(batch)
                log.flush()
            for _ in range(len(batch) + (1 if stop else 0)):
                q.task_done()
            if stop:
                return


def py_send_loop(producer: PyProducer, value: bytes, n: int) -> None:
    """``n`` sends, then one flush (the :class:`PyProducer` counterpart of ``send_loop``)."""
    send = producer.send
    for _ in range(n):
        send(value)
    producer.flush()


# --------------------------------------------------------------------------- send

SEND_WHAT = f"{SENDS:,} x send(topic, {VALUE_BYTES} B) + flush() per round"


def _send(benchmark: Any, store: tidelog.Store, prefix: str, threads: int) -> dict[str, Any]:
    """Runs the send benchmark with 1 or ``THREADS`` threads; returns the extra_info."""
    rounds = Rounds(store, prefix, SENDS)
    loop = send_loop if threads == 1 else send_threads

    def setup() -> Args:
        topic, producer = rounds.next()
        return (producer, topic.name, VALUE, SENDS), {}

    usage = run(benchmark, loop, setup)
    rounds.finish()
    return {"ns_per_msg": ns_per(benchmark, SENDS), **rounds.producer_stats(), **usage}


@pytest.mark.benchmark(group="producer-send")
def test_producer_send_tidelog(benchmark: Any, store: tidelog.Store) -> None:
    extra = _send(benchmark, store, "send-1", 1)
    record(
        benchmark,
        figure="producer-send",
        title="producer.send, 1 thread, through to the log",
        role="tidelog",
        unit="msgs/s",
        work=SENDS,
        what=SEND_WHAT + ", default options (buffer 65,536, linger 1 ms)",
        targets=SEND_TARGETS,
        extra=extra,
    )


@pytest.mark.benchmark(group="producer-send")
def test_producer_send_reference(benchmark: Any, store: tidelog.Store) -> None:
    rounds = Rounds(store, "send-ref", SENDS, producer=False)

    def setup() -> Args:
        topic, _ = rounds.next()
        return (topic.append, VALUE, SENDS), {}

    usage = run(benchmark, append_loop, setup)
    rounds.finish()
    record(
        benchmark,
        figure="producer-send",
        title="topic.append, 1 thread (synchronous)",
        role="reference",
        unit="msgs/s",
        work=SENDS,
        what=f"{SENDS:,} x topic.append({VALUE_BYTES} B) per round",
        extra={"ns_per_msg": ns_per(benchmark, SENDS), **usage},
    )


@pytest.mark.benchmark(group="producer-send")
def test_producer_send_python_analogue(benchmark: Any, bench_dir: Path) -> None:
    producers: list[PyProducer] = []
    count = [0]

    def setup() -> Args:
        for p in producers:
            p.close()
            size = p.path.stat().st_size
            assert size == PY_SENDS * (VALUE_BYTES + 4), size
            p.path.unlink()
        producers.clear()
        count[0] += 1
        producers.append(PyProducer(bench_dir / f"pylog-{count[0]}"))
        return (producers[0], VALUE, PY_SENDS), {}

    usage = run(benchmark, py_send_loop, setup)
    for p in producers:
        p.close()
    record(
        benchmark,
        figure="producer-send-python",
        title="Python analogue: queue.Queue + writer thread + PyLog, 1 thread",
        role="variant",
        unit="msgs/s",
        work=PY_SENDS,
        what=f"{PY_SENDS:,} x put({VALUE_BYTES} B) + join() per round, writer batches <= 4,096",
        extra={"ns_per_msg": ns_per(benchmark, PY_SENDS), **usage},
    )


@pytest.mark.benchmark(group="producer-send-4-threads")
def test_producer_send_threads_tidelog(benchmark: Any, store: tidelog.Store) -> None:
    extra = _send(benchmark, store, "send-4", THREADS)
    record(
        benchmark,
        figure="producer-send-4-threads",
        title=f"producer.send, {THREADS} threads, total",
        role="tidelog",
        unit="msgs/s",
        work=SENDS,
        what=SEND_WHAT.replace(" per round", f" per round, split over {THREADS} threads"),
        targets=THREADS_TARGETS,
        extra=extra,
    )


@pytest.mark.benchmark(group="producer-send-4-threads")
def test_producer_send_threads_reference(benchmark: Any, store: tidelog.Store) -> None:
    extra = _send(benchmark, store, "send-1b", 1)
    record(
        benchmark,
        figure="producer-send-4-threads",
        title="producer.send, 1 thread (measured again in this group)",
        role="reference",
        unit="msgs/s",
        work=SENDS,
        what=SEND_WHAT,
        extra=extra,
    )


# --------------------------------------------------------------------------- group commit

GROUP_COMMITS = THREADS * COMMITS_PER_THREAD


@pytest.mark.benchmark(group="group-commit")
def test_group_commit_tidelog(benchmark: Any, durable_store: tidelog.Store) -> None:
    rounds = Rounds(durable_store, "commit-4", GROUP_COMMITS)

    def setup() -> Args:
        topic, producer = rounds.next()
        return (producer, topic.name, VALUE, COMMITS_PER_THREAD), {}

    usage = run(benchmark, commit_threads, setup)
    rounds.finish()
    record(
        benchmark,
        figure="group-commit",
        title=f'fsync="always": {THREADS} threads x (send + flush), time per commit',
        role="tidelog",
        unit="ns/call",
        work=GROUP_COMMITS,
        what=f"{THREADS} threads x {COMMITS_PER_THREAD:,} x (send({VALUE_BYTES} B) + flush()) "
        "per round",
        targets=GROUP_COMMIT_TARGETS,
        extra={
            "commits_per_s": per_second(benchmark, GROUP_COMMITS),
            **rounds.producer_stats(),
            **usage,
        },
    )


@pytest.mark.benchmark(group="group-commit")
def test_group_commit_reference(benchmark: Any, durable_store: tidelog.Store) -> None:
    rounds = Rounds(durable_store, "commit-serial", SERIAL_COMMITS, producer=False)

    def setup() -> Args:
        topic, _ = rounds.next()
        return (topic.append, VALUE, SERIAL_COMMITS), {}

    usage = run(benchmark, append_loop, setup)
    rounds.finish()
    record(
        benchmark,
        figure="group-commit",
        title='fsync="always": serial topic.append (fdatasync each), time per commit',
        role="second-reference",
        unit="ns/call",
        work=SERIAL_COMMITS,
        what=f"{SERIAL_COMMITS:,} x topic.append({VALUE_BYTES} B) per round, one thread",
        extra={"commits_per_s": per_second(benchmark, SERIAL_COMMITS), **usage},
    )


@pytest.mark.benchmark(group="group-commit")
def test_group_commit_one_thread(benchmark: Any, durable_store: tidelog.Store) -> None:
    rounds = Rounds(durable_store, "commit-1", SERIAL_COMMITS)

    def setup() -> Args:
        topic, producer = rounds.next()
        return (producer, topic.name, VALUE, SERIAL_COMMITS), {}

    usage = run(benchmark, commit_loop, setup)
    rounds.finish()
    record(
        benchmark,
        figure="group-commit-1-thread",
        title='fsync="always": 1 thread x (send + flush), time per commit',
        role="variant",
        unit="ns/call",
        work=SERIAL_COMMITS,
        what=f"{SERIAL_COMMITS:,} x (send({VALUE_BYTES} B) + flush()) per round",
        extra={"commits_per_s": per_second(benchmark, SERIAL_COMMITS), **usage},
    )


@pytest.mark.benchmark(group="group-commit")
def test_group_commit_serial_file_writer(benchmark: Any, bench_dir: Path) -> None:
    fds: list[int] = []
    count = [0]

    def setup() -> Args:
        for fd in fds:
            os.close(fd)
        fds.clear()
        path = bench_dir / f"fdatasync-{count[0]}"
        if count[0]:
            (bench_dir / f"fdatasync-{count[0] - 1}").unlink()
        count[0] += 1
        fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
        return (fds[0], VALUE, SERIAL_COMMITS), {}

    usage = run(benchmark, fdatasync_loop, setup)
    for fd in fds:
        os.close(fd)
    record(
        benchmark,
        figure="group-commit",
        title="serial writer: os.write (append) + os.fdatasync per record, time per commit",
        role="reference",
        unit="ns/call",
        work=SERIAL_COMMITS,
        what=f"{SERIAL_COMMITS:,} x (os.write(4 + {VALUE_BYTES} B) + fdatasync) per round, "
        "appending to a new file",
        extra={"commits_per_s": per_second(benchmark, SERIAL_COMMITS), **usage},
    )
