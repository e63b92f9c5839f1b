"""Crash torture: rounds of worker processes SIGKILLed at random moments, then checked.

Every round forks one worker process per selected kind (two for ``scratch``), lets them
work on one shared store, and SIGKILLs each (with its whole process group) at its own random
moment. Workers report every acknowledged thing to the parent over a pipe, one line each and
only after the call returned. The parent then opens the store and checks it against
everything ever acknowledged:

- ``append``, ``batch``, ``buffer``, ``producer``, ``fork``: every acknowledged message is
  present exactly once, in order per partition and writer, and where it was acknowledged (an
  offset is never reused: a message acknowledged at offset o is still at o rounds later);
  batches are whole; nothing unreadable; a killed writer leaves at most its one call in
  flight unacknowledged.
- ``commit``: a consumer group's committed offsets never move back and cover every
  acknowledged commit.
- ``queue``: an acknowledged work-queue job is never handed out again and is finished in
  the queue's state.
- ``txn``: exactly-once consume-transform-produce: every committed input's outputs are
  present exactly once, the committed offset is never visible while its outputs are not,
  and once the dead producers' transactions are finished, outputs and input offsets are
  both there or neither.
- ``fork``: a worker with a store open forks children (multiprocessing, fork start method)
  that open the store afresh and append while the worker does; half of them also close the
  store they inherited, as a tidy user might.
- ``scratch``: a writer appends to a scratch topic that another process deletes and
  creates again: no call is acknowledged into a deleted topic, and the topic created again
  never holds messages written before it was created.
- ``compact``: on a compacted topic with small segments and a short
  ``delete_retention_ms``, a writer appends keyed values and tombstones (``topic.append``),
  a named producer sends them (``Producer.send``, through its ring buffer), a third process
  compacts over and over (the writers' background cleaners too) and a fourth reads the
  whole topic again and again. The oracle is the newest acknowledged write of each key:
  the topic's newest record of every key is that write or a newer one the writer attempted
  (an expired tombstone may leave the key out altogether), the records of a key rise with
  the offsets, an acknowledged offset holds its write until a newer write of its key
  replaces it, ``latest()`` agrees with a full read, no rewritten file or swap manifest is
  left behind, and the reader saw offsets rise and records keep their offsets.

Run ``python tests/torture/torture.py --rounds 1000`` (``make torture ROUNDS=1000``); it
prints totals per kind and exits 1 on any violation. Workers reuse the store's public API
only; reading helpers come from ``tests/crash``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tidelog
from tidelog.queue_journal import queue_files, read_state

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crash"))
from test_kill_writer import read_partition

KINDS = [
    "append",
    "batch",
    "buffer",
    "producer",
    "commit",
    "queue",
    "txn",
    "fork",
    "scratch",
    "compact",
]
# Shared by every process: settings that shape files must agree between processes.
SETTINGS: dict[str, Any] = {"segment_bytes": 1 << 20, "max_message_bytes": 64 << 10}
LOG_PARTS = 3  # "log": written by append, batch, buffer, producer and fork; read by commit
JOB_PARTS = 2  # "jobs": the work queue's topic, fed by the parent
IN_PARTS = 2  # "in" -> "out": the transformer's input (fed by the parent) and output
SCRATCH_PARTS = 2
KV_PARTS = 2  # "kv": the compacted topic of the ``compact`` kind
KV_KEYS = 40  # keys per writer role; each role has its own (one writer per key at a time)
# Small segments, so compaction always has sealed ones; tombstones go soon after.
KV_SETTINGS: dict[str, Any] = {
    "cleanup_policy": "compact",
    "segment_bytes": 4096,
    "delete_retention_ms": 200,
}
KV_ROLES = {"kv-append": b"a", "kv-producer": b"p"}  # writer role -> its keys' prefix
JOBS_PER_ROUND = 120
INPUTS_PER_ROUND = 40
# A worker's writer ids: wid // WID_BLOCK names the worker (round and kind), the rest its
# forked children.
WID_BLOCK = 1000
VIOLATIONS = (
    "lost",
    "duplicated",
    "corrupted",
    "moved",
    "misordered",
    "phantom",
    "commit_back",
    "redelivered",
    "visibility",
    "stale",
    "crashed",
)


# -- workers (forked children) ----------------------------------------------------------


@dataclass
class Worker:
    """What a forked worker knows: where to work and how to report."""

    kind: str
    role: str
    store_dir: str
    wid: int
    seed: int
    fsync: str
    fd: int
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def report(self, line: str) -> None:
        """One line to the parent: a single write under PIPE_BUF, so lines never mix."""
        os.write(self.fd, (line + "\n").encode())

    def open(self) -> tidelog.Store:
        return tidelog.open(
            self.store_dir,
            fsync=self.fsync,  # type: ignore[arg-type]
            fsync_interval_ms=5,
            **SETTINGS,
        )


def pace(w: Worker) -> None:
    """Bursts of calls with short pauses: kills land mid-burst and mid-roll alike, and a
    long run stays within a few GB."""
    if w.rng.randrange(8):
        time.sleep(0.0005)


def value(wid: int, seq: int, i: int, n: int, rng: random.Random, extra: bytes = b"") -> bytes:
    head = b"%d:%d:%d:%d:%s" % (wid, seq, i, n, extra)
    return head + bytes([97 + (seq + i) % 26]) * rng.randrange(0, 120)


def work_append(w: Worker) -> None:
    """Single appends: to a chosen partition, or by key (with headers)."""
    store = w.open()  # referenced while the worker lives: a dropped store closes
    topic = store.topic("log")
    w.report("R")
    for seq in itertools.count():
        v = value(w.wid, seq, 0, 1, w.rng)
        if w.rng.randrange(2):
            p, off = topic.append(v, partition=w.rng.randrange(LOG_PARTS))
        else:
            p, off = topic.append(v, key=b"k%d" % seq, headers={"seq": b"%d" % seq})
        w.report(f"A {w.wid} {seq} {p} {off} 1")
        pace(w)


def work_batch(w: Worker) -> None:
    """append_batch of a list of values."""
    store = w.open()  # referenced while the worker lives: a dropped store closes
    topic = store.topic("log")
    w.report("R")
    for seq in itertools.count():
        n = w.rng.randrange(1, 20)
        values = [value(w.wid, seq, i, n, w.rng) for i in range(n)]
        p, off = topic.append_batch(values, partition=w.rng.randrange(LOG_PARTS))
        w.report(f"A {w.wid} {seq} {p} {off} {n}")
        pace(w)


def work_buffer(w: Worker) -> None:
    """append_batch of one buffer and numpy lengths; some over 32 KB (written from the
    buffer, the head last), some of same-size values."""
    store = w.open()  # referenced while the worker lives: a dropped store closes
    topic = store.topic("log")
    w.report("R")
    for seq in itertools.count():
        n = w.rng.randrange(1, 12) if w.rng.randrange(10) else w.rng.randrange(180, 300)
        parts = [value(w.wid, seq, i, n, w.rng) for i in range(n)]
        if w.rng.randrange(3) == 0:
            parts = [x[:140].ljust(140, b"=") for x in parts]
        lengths = np.array([len(x) for x in parts], dtype=np.int64)
        p, off = topic.append_batch(
            b"".join(parts), lengths=lengths, partition=w.rng.randrange(LOG_PARTS)
        )
        w.report(f"A {w.wid} {seq} {p} {off} {n}")
        pace(w)


def work_producer(w: Worker) -> None:
    """A named idempotent producer: sends, then flush; message ``seq`` goes to partition
    ``seq % LOG_PARTS``, so one ack line covers every message up to a sequence number."""
    store = w.open()
    producer = store.producer(
        name="torture", linger_ms=w.rng.choice([0.0, 1.0, 5.0]), buffer_messages=4096
    )
    w.report("R")
    seq = 0
    while True:
        for _ in range(w.rng.randrange(1, 200)):
            producer.send("log", value(w.wid, seq, 0, 1, w.rng), partition=seq % LOG_PARTS)
            seq += 1
        assert producer.flush()
        w.report(f"P {w.wid} {seq - 1}")
        pace(w)


def work_commit(w: Worker) -> None:
    """An at-least-once member of group "cg" on "log", committing as it goes."""
    store = w.open()
    consumer = store.consumer("log", group="cg", lease_seconds=0.3)
    w.report("R")
    delivered: dict[int, int] = {}
    while True:
        msgs = consumer.poll(max_messages=w.rng.randrange(1, 300), timeout=0.05)
        for m in msgs:
            delivered[m.partition] = max(delivered.get(m.partition, 0), m.offset + 1)
        if not msgs:
            continue
        try:
            if w.rng.randrange(2):
                consumer.commit()
                done = dict(delivered)
            else:
                done = {m.partition: m.offset + 1 for m in msgs}
                consumer.commit(done)
        except tidelog.RebalanceError:
            continue
        w.report("C " + " ".join(f"{p}:{o}" for p, o in sorted(done.items())))


def work_queue(w: Worker) -> None:
    """A member of work queue "wq" on "jobs": acquires one or many, acks (some released)."""
    store = w.open()
    queue = store.work_queue("jobs", group="wq", lock_timeout=0.5)
    w.report("R")
    while True:
        start = time.monotonic_ns()
        if w.rng.randrange(2):
            job = queue.acquire(timeout=0.05)
            jobs = [] if job is None else [job]
        else:
            jobs = queue.acquire_many(w.rng.randrange(1, 60), timeout=0.05)
        for j in jobs:
            w.report(f"D {j.partition} {j.offset} {j.delivery_count} {start}")
        acked, released = [], False
        try:
            if len(jobs) > 1 and w.rng.randrange(3) == 0:
                queue.ack_many(jobs)
                acked = jobs
            else:
                for j in jobs:
                    if w.rng.randrange(20) == 0:
                        queue.release(j)
                        released = True
                    else:
                        queue.ack(j)
                        acked.append(j)
                if released:
                    # The batch's last settlement was a release: the acks wait for a flush.
                    queue.flush()
        except tidelog.LockLostError:
            continue  # held too long: not acknowledged
        done = time.monotonic_ns()
        for j in acked:
            w.report(f"Q {j.partition} {j.offset} {done}")


class Abandon(Exception):
    """Raised inside a transaction to abort it."""


def work_txn(w: Worker) -> None:
    """Exactly-once consume-transform-produce from "in" to "out" (two outputs per input,
    one to each partition of "out"); one transaction per poll, a few aborted on purpose."""
    store = w.open()
    if w.rng.randrange(2):
        consumer = store.consumer("in", group="xg", delivery="exactly-once", lease_seconds=0.3)
        producer = store.producer(name="xg", linger_ms=0)
    else:
        producer = store.producer(name="xg", linger_ms=0)
        consumer = store.consumer("in", group="xg", delivery="exactly-once", lease_seconds=0.3)
    w.report("R")
    while True:
        msgs = consumer.poll(max_messages=w.rng.randrange(1, 6), timeout=0.05)
        if not msgs:
            continue
        try:
            with store.transaction(producer, consumer) as tx:
                for m in msgs:
                    tx.send("out", (m.value or b"") + b":a", partition=0)
                    tx.send("out", (m.value or b"") + b":b", partition=1)
                if w.rng.randrange(10) == 0:
                    raise Abandon
        except Abandon:
            continue
        except tidelog.RebalanceError:
            continue
        done: dict[int, int] = {}
        for m in msgs:
            done[m.partition] = max(done.get(m.partition, 0), m.offset + 1)
        w.report("T " + " ".join(f"{p}:{o}" for p, o in sorted(done.items())))


def fork_child(w: Worker, inherited: tidelog.Store, wid: int, close_inherited: int) -> None:
    """Runs in a child forked from a worker that has the store open: opens its own, and
    may close the inherited one (before its own work, or after), as a tidy user would."""
    try:
        w.wid = wid
        w.rng = random.Random(w.seed + wid)
        if close_inherited == 1:
            close_quietly(inherited)
        with w.open() as store:
            topic = store.topic("log")
            for seq in range(w.rng.randrange(1, 80)):
                n = w.rng.randrange(1, 6)
                values = [value(wid, seq, i, n, w.rng) for i in range(n)]
                p, off = topic.append_batch(values, partition=w.rng.randrange(LOG_PARTS))
                w.report(f"A {wid} {seq} {p} {off} {n}")
                pace(w)
        if close_inherited == 2:
            close_quietly(inherited)
    except BaseException:
        w.report("E fork child " + traceback.format_exc().replace("\n", " | "))
        raise


def close_quietly(inherited: tidelog.Store) -> None:
    # A store inherited through fork may refuse to be used at all.
    with contextlib.suppress(tidelog.TidelogError):
        inherited.close()


def work_fork(w: Worker) -> None:
    """Appends while children forked from this process append through their own store.

    Half of the workers keep their ``Topic`` for their whole life; the others look it up
    for every call, so no ``Topic`` is referenced when they fork (then a child's close of
    the inherited store is the last reference it sees)."""
    store = w.open()
    held = store.topic("log") if w.rng.randrange(2) else None
    ctx = multiprocessing.get_context("fork")
    w.report("R")
    seq = 0
    for k in range(1, WID_BLOCK):
        child = ctx.Process(target=fork_child, args=(w, store, w.wid + k, w.rng.randrange(3)))
        child.start()
        for _ in range(w.rng.randrange(1, 100)):
            n = w.rng.randrange(1, 6)
            values = [value(w.wid, seq, i, n, w.rng) for i in range(n)]
            topic = held or store.topic("log")
            p, off = topic.append_batch(values, partition=w.rng.randrange(LOG_PARTS))
            del topic
            w.report(f"A {w.wid} {seq} {p} {off} {n}")
            seq += 1
            pace(w)
        child.join()
        if child.exitcode != 0:
            w.report(f"E fork child {w.wid + k} exited with {child.exitcode}")


def work_scratch_writer(w: Worker) -> None:
    """Appends to "scratch" (deleted and created again by another process); each value
    carries the time its call started."""
    store = w.open()
    w.report("R")
    topic: tidelog.Topic | None = None
    for seq in itertools.count():
        while topic is None:
            try:
                topic = store.topic("scratch")
            except tidelog.TopicNotFoundError:
                time.sleep(0.001)
        start = time.monotonic_ns()
        n = w.rng.randrange(1, 4)
        values = [value(w.wid, seq, i, n, w.rng, b"%d:" % start) for i in range(n)]
        try:
            if n == 1:
                p, off = topic.append(values[0], partition=w.rng.randrange(SCRATCH_PARTS))
            else:
                p, off = topic.append_batch(values, partition=w.rng.randrange(SCRATCH_PARTS))
        except tidelog.TopicNotFoundError:
            topic = None
            continue
        w.report(f"S {w.wid} {seq} {p} {off} {n} {start} {time.monotonic_ns()}")
        time.sleep(0.0005)


def work_scratch_deleter(w: Worker) -> None:
    """Deletes "scratch" and creates it again, over and over."""
    store = w.open()
    w.report("R")
    while True:
        time.sleep(w.rng.uniform(0.005, 0.04))
        w.report(f"X ds {time.monotonic_ns()}")
        with contextlib.suppress(tidelog.TopicNotFoundError):
            store.delete_topic("scratch")
        w.report(f"X dd {time.monotonic_ns()}")
        time.sleep(w.rng.uniform(0.0, 0.01))
        w.report(f"X cs {time.monotonic_ns()}")
        store.create_topic("scratch", SCRATCH_PARTS, exist_ok=True)
        w.report(f"X cd {time.monotonic_ns()}")


def open_kv(w: Worker) -> tidelog.Store:
    """A store whose background cleaner looks at "kv" often (it competes with the
    compactor's explicit compactions)."""
    return tidelog.open(
        w.store_dir,
        fsync=w.fsync,  # type: ignore[arg-type]
        fsync_interval_ms=5,
        cleaner_interval_ms=w.rng.choice([20, 100, None]),
        min_cleanable_dirty_ratio=0.1,
        **SETTINGS,
    )


def kv_write(w: Worker, seq: int) -> tuple[bytes, bytes | None, dict[str, bytes], str]:
    """The ``seq``-th write of worker ``w``: its key, value (None: a tombstone), headers
    (naming the write, so a tombstone says which one it is) and intent line."""
    prefix = KV_ROLES[w.role]
    k = w.rng.randrange(KV_KEYS)
    ident = b"%d:%d" % (w.wid, seq)
    tomb = w.rng.randrange(5) == 0
    v = None if tomb else ident + b":" + bytes([97 + seq % 26]) * w.rng.randrange(0, 100)
    key = prefix + b"%d" % k
    return key, v, {"id": ident}, f"I {key.decode()} {w.wid} {seq} {int(tomb)}"


def work_kv_append(w: Worker) -> None:
    """Keyed values and tombstones, one ``topic.append`` each."""
    store = open_kv(w)
    topic = store.topic("kv")
    w.report("R")
    for seq in itertools.count():
        key, v, headers, intent = kv_write(w, seq)
        w.report(intent)
        p, off = topic.append(v, key=key, headers=headers)
        w.report(f"K {key.decode()} {w.wid} {seq} {p} {off}")
        pace(w)


def work_kv_producer(w: Worker) -> None:
    """Keyed values and tombstones through a named producer's ring buffer; one ack line
    after each flush covers every send before it."""
    store = open_kv(w)
    producer = store.producer(name="kv", linger_ms=w.rng.choice([0.0, 1.0]), buffer_messages=1024)
    w.report("R")
    seq = 0
    while True:
        for _ in range(w.rng.randrange(1, 60)):
            key, v, headers, intent = kv_write(w, seq)
            w.report(intent)
            producer.send("kv", v, key=key, headers=headers)
            seq += 1
        assert producer.flush()
        w.report(f"F {w.wid} {seq - 1}")
        pace(w)


def work_kv_compactor(w: Worker) -> None:
    """Compacts "kv" over and over, sometimes paced (so a kill lands mid-rewrite)."""
    store = open_kv(w)
    topic = store.topic("kv")
    w.report("R")
    while True:
        paced = w.rng.randrange(3) == 0
        topic.compact(bytes_per_second=200_000 if paced else None)
        time.sleep(w.rng.choice([0.0, 0.002, 0.01]))


def work_kv_reader(w: Worker) -> None:
    """Reads "kv" from its start again and again: offsets rise, the records of a key
    rise, and an offset read twice holds the same write. Violations are reported."""
    store = open_kv(w)
    topic = store.topic("kv")
    w.report("R")
    seen: dict[tuple[int, int], tuple[bytes | None, bytes]] = {}
    while True:
        for p in range(KV_PARTS):
            prev = -1
            newest: dict[bytes | None, tuple[int, int]] = {}
            for m in topic.read(p, offset=topic.start_offset(p)):
                ident = m.headers.get("id", b"")
                if m.offset <= prev:
                    w.report(f"V kv/{p}: offset {m.offset} after {prev}")
                prev = m.offset
                before = seen.setdefault((p, m.offset), (m.key, ident))
                if before != (m.key, ident):
                    w.report(f"V kv/{p}/{m.offset}: {before} read earlier, now {m.key!r} {ident!r}")
                try:
                    wid, seq = map(int, ident.split(b":"))
                except ValueError:
                    w.report(f"V kv/{p}/{m.offset}: no write id in {m.headers}")
                    continue
                if newest.get(m.key, (-1, -1)) >= (wid, seq):
                    w.report(f"V kv/{p}/{m.offset}: {m.key!r} {wid}:{seq} after {newest[m.key]}")
                newest[m.key] = (wid, seq)
        pace(w)


WORK: dict[str, Callable[[Worker], None]] = {
    "append": work_append,
    "batch": work_batch,
    "buffer": work_buffer,
    "producer": work_producer,
    "commit": work_commit,
    "queue": work_queue,
    "txn": work_txn,
    "fork": work_fork,
    "scratch-writer": work_scratch_writer,
    "scratch-deleter": work_scratch_deleter,
    "kv-append": work_kv_append,
    "kv-producer": work_kv_producer,
    "kv-compactor": work_kv_compactor,
    "kv-reader": work_kv_reader,
}


def run_worker(w: Worker) -> None:
    """The body of a forked worker: never returns."""
    code = 0
    try:
        os.setpgid(0, 0)
        # Dispositions inherited from the parent (say, SIGINT ignored under nohup) must not
        # change how a worker dies.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        WORK[w.role](w)
    except BaseException:
        code = 1
        with contextlib.suppress(OSError):
            w.report("E " + traceback.format_exc().replace("\n", " | "))
    os._exit(code)


# -- the parent: rounds and checks --------------------------------------------------------


@dataclass
class Child:
    pid: int
    role: str
    kind: str
    wid: int
    fd: int
    kill_at: float = 0.0
    killed: bool = False
    buffer: bytes = b""
    lines: list[str] = field(default_factory=list)
    status: int | None = None


@dataclass
class LogAck:
    wid: int
    seq: int
    partition: int
    offset: int
    count: int


@dataclass
class Totals:
    """Counts per kind: acknowledged things and every kind of violation."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    def add(self, kind: str, what: str, n: int = 1, detail: str | None = None) -> None:
        self.counts.setdefault(kind, Counter())[what] += n
        if detail is not None and what != "acknowledged" and len(self.details) < 50:
            self.details.append(f"{kind}: {what}: {detail}"[:400])

    def violations(self) -> int:
        return sum(c[v] for c in self.counts.values() for v in VIOLATIONS)


@dataclass
class State:
    """Everything the parent learned over the rounds."""

    rounds: int = 0
    wid_kind: dict[int, str] = field(default_factory=dict)  # worker (wid // WID_BLOCK)
    # "log": verified end per partition, newest sequence per (writer, partition), and
    # anchors (partition, offset, value head) of acknowledged batches, re-read later.
    log_end: list[int] = field(default_factory=lambda: [0] * LOG_PARTS)
    log_last: dict[tuple[int, int], int] = field(default_factory=dict)
    anchors: list[tuple[int, int, bytes]] = field(default_factory=list)
    recent_anchors: list[tuple[int, int, bytes]] = field(default_factory=list)
    # "commit": the committed offsets seen so far (a floor) per partition.
    commit_floor: dict[int, int] = field(default_factory=dict)
    # "queue": acknowledged jobs and when their ack returned.
    acked_jobs: dict[tuple[int, int], int] = field(default_factory=dict)
    # "txn": inputs fed, outputs seen per "out" partition, committed offsets floor.
    inputs: int = 0
    out_end: list[int] = field(default_factory=lambda: [0, 0])
    out_seen: list[set[int]] = field(default_factory=lambda: [set(), set()])
    txn_floor: dict[int, int] = field(default_factory=dict)
    # "scratch": the deleter's events (what, time) and the writers' acks since the
    # current incarnation began.
    scratch_events: list[tuple[str, int]] = field(default_factory=list)
    scratch_acks: list[tuple[int, int, int, int, int, int, int]] = field(default_factory=list)
    # "compact": every write attempted, (key, (wid, seq)) -> tombstone; the newest
    # acknowledged write of each key; where acknowledged appends were written.
    kv_attempted: dict[tuple[str, tuple[int, int]], bool] = field(default_factory=dict)
    kv_acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    kv_offsets: dict[tuple[int, int], tuple[str, tuple[int, int]]] = field(default_factory=dict)
    kv_records: int = 0  # records and offsets of "kv" at the last check
    kv_offsets_total: int = 0


def open_store(store_dir: Path) -> tidelog.Store:
    return tidelog.open(store_dir, **SETTINGS)


def setup(store_dir: Path, state: State) -> None:
    with open_store(store_dir) as store:
        store.create_topic("log", LOG_PARTS)
        store.create_topic("jobs", JOB_PARTS)
        store.create_topic("in", IN_PARTS)
        store.create_topic("out", 2)
        state.scratch_events.append(("cs", time.monotonic_ns()))
        store.create_topic("scratch", SCRATCH_PARTS)
        state.scratch_events.append(("cd", time.monotonic_ns()))
        store.create_topic("kv", KV_PARTS, **KV_SETTINGS)


def feed(store_dir: Path, state: State, kinds: set[str]) -> None:
    """Work for this round's queue members and transformer."""
    with open_store(store_dir) as store:
        if "queue" in kinds:
            jobs = store.topic("jobs")
            for i in range(JOBS_PER_ROUND):
                jobs.append(b"job-%d" % i, partition=i % JOB_PARTS)
        if "txn" in kinds:
            ins = store.topic("in")
            for _ in range(INPUTS_PER_ROUND):
                # Input g is at offset g // IN_PARTS of partition g % IN_PARTS.
                ins.append(b"%d" % state.inputs, partition=state.inputs % IN_PARTS)
                state.inputs += 1


def spawn(
    store_dir: Path,
    state: State,
    kinds: list[str],
    rng: random.Random,
    fsyncs: list[str],
    children: list[Child],
) -> None:
    """Forks the round's workers into ``children`` (the caller's, so that whatever
    interrupts the round finds every worker there to kill)."""
    roles = [
        (k, r)
        for k in kinds
        for r in (
            ["scratch-writer", "scratch-deleter"]
            if k == "scratch"
            else [*KV_ROLES, "kv-compactor", "kv-reader"]
            if k == "compact"
            else [k]
        )
    ]
    # Ctrl-C is held back while forking: a worker forked but not yet listed would outlive
    # the run.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        for i, (kind, role) in enumerate(roles):
            worker_no = state.rounds * 16 + i
            wid = worker_no * WID_BLOCK
            state.wid_kind[worker_no] = kind
            r, wfd = os.pipe()
            fsync = rng.choice(fsyncs)
            pid = os.fork()
            if pid == 0:
                os.close(r)
                for c in children:
                    os.close(c.fd)
                run_worker(
                    Worker(kind, role, str(store_dir), wid, rng.randrange(1 << 30), fsync, wfd)
                )
            with contextlib.suppress(OSError):  # the worker did it first (or already died)
                os.setpgid(pid, pid)
            os.close(wfd)
            os.set_blocking(r, False)
            children.append(Child(pid, role, kind, wid, r))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def pump(children: list[Child], timeout: float) -> None:
    """Reads what the workers wrote, for up to ``timeout`` seconds."""
    fds = {c.fd: c for c in children if c.fd >= 0}
    if not fds:
        time.sleep(timeout)
        return
    ready, _, _ = select.select(list(fds), [], [], max(timeout, 0.0))
    for fd in ready:
        c = fds[fd]
        data = os.read(fd, 1 << 16)
        if not data:
            os.close(fd)
            c.fd = -1
            continue
        c.buffer += data
        *lines, c.buffer = c.buffer.split(b"\n")
        c.lines.extend(x.decode() for x in lines)


def run_round(
    store_dir: Path,
    state: State,
    kinds: list[str],
    rng: random.Random,
    window: float,
    fsyncs: list[str],
) -> list[Child]:
    children: list[Child] = []
    try:
        spawn(store_dir, state, kinds, rng, fsyncs, children)
        now = time.monotonic()
        if rng.random() < 0.1:
            # Killed anywhere from start-up on (opening the store, joining, taking over).
            for c in children:
                c.kill_at = now + rng.uniform(0.0, 0.05)
        else:
            deadline = now + 60
            while not all(("R" in c.lines) or c.fd < 0 for c in children):
                if time.monotonic() > deadline:
                    raise SystemExit("workers did not start within 60 s")
                pump(children, 0.05)
            now = time.monotonic()
            for c in children:
                c.kill_at = now + rng.uniform(0.0, window)
        while not all(c.killed for c in children):
            now = time.monotonic()
            for c in children:
                if not c.killed and now >= c.kill_at:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(c.pid, signal.SIGKILL)
                    c.killed = True
            pending = [c.kill_at - now for c in children if not c.killed]
            pump(children, min(pending, default=0.0))
    finally:
        for c in children:
            if not c.killed:  # interrupted: no worker outlives the round
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.pid, signal.SIGKILL)
    for c in children:
        _, c.status = os.waitpid(c.pid, 0)
    while any(c.fd >= 0 for c in children):
        pump(children, 1.0)
    return children


# -- checks ---------------------------------------------------------------------------------


def parse_log_value(v: bytes) -> tuple[int, int, int, int] | None:
    try:
        wid, seq, i, n = (int(x) for x in v.split(b":", 4)[:4])
    except ValueError:
        return None
    return wid, seq, i, n


def read_from(topic: tidelog.Topic, p: int, offset: int) -> Iterator[tuple[int, bytes]]:
    while True:
        batch = topic.read_batch(p, offset, max_messages=50_000)
        if len(batch) == 0:
            return
        yield from zip(batch.offsets.tolist(), batch.values(), strict=True)
        offset = batch.next_offset


def kind_of(state: State, wid: int) -> str:
    return state.wid_kind.get(wid // WID_BLOCK, "unknown")


def scan_log(
    state: State,
    totals: Totals,
    p: int,
    messages: Iterator[tuple[int, bytes]],
    live: set[int],
    found: dict[tuple[int, int], tuple[int, int, int]],
) -> int:
    """Checks the messages of "log" partition ``p`` in offset order; returns the end."""
    pending: tuple[int, int, int, int, int] | None = None  # wid, seq, next i, n, offset
    end = state.log_end[p]
    for offset, v in messages:
        end = offset + 1
        parsed = parse_log_value(v)
        if parsed is None:
            totals.add("log", "corrupted", detail=f"partition {p} offset {offset}: {v[:40]!r}")
            pending = None
            continue
        wid, seq, i, n = parsed
        kind = kind_of(state, wid)
        if pending is not None:
            pw, ps, pi, _, po = pending
            if (wid, seq, i) != (pw, ps, pi):
                totals.add(
                    kind_of(state, pw), "corrupted", detail=f"batch {pw}:{ps} at {p}/{po} cut short"
                )
                pending = None
        if pending is None and i != 0:
            totals.add(
                kind, "corrupted", detail=f"{p}/{offset}: record {i} of {wid}:{seq} starts a batch"
            )
            continue
        if i == 0:
            last = state.log_last.get((wid, p), -1)
            where = f"{wid}:{seq} at {p}/{offset}"
            if (wid, seq) in found or seq == last:
                totals.add(kind, "duplicated", detail=f"{where} stored again")
            elif seq < last:
                totals.add(kind, "misordered", detail=f"{where} after {wid}:{last}")
            elif wid // WID_BLOCK not in live:
                totals.add(kind, "duplicated", detail=f"{where}: its writer died rounds ago")
            state.log_last[(wid, p)] = max(last, seq)
            found[(wid, seq)] = (p, offset, n)
            pending = (wid, seq, 1, n, offset)
        else:
            pending = (wid, seq, i + 1, n, pending[4] if pending else offset)
        if pending is not None and pending[2] == pending[3]:
            pending = None
    if pending is not None:
        totals.add(
            kind_of(state, pending[0]),
            "corrupted",
            detail=f"batch {pending[0]}:{pending[1]} cut at the end of {p}",
        )
    return end


def check_log(
    store: tidelog.Store, state: State, totals: Totals, children: list[Child], rng: random.Random
) -> None:
    topic = store.topic("log")
    live = {c.wid // WID_BLOCK for c in children}
    found: dict[tuple[int, int], tuple[int, int, int]] = {}
    for p in range(LOG_PARTS):
        end = topic.end_offset(p)
        if end < state.log_end[p]:
            totals.add(
                "log",
                "lost",
                state.log_end[p] - end,
                f"partition {p} end went back from {state.log_end[p]} to {end}",
            )
            state.log_end[p] = end
        state.log_end[p] = scan_log(
            state, totals, p, read_from(topic, p, state.log_end[p]), live, found
        )
    acks: list[LogAck] = []
    produced: dict[int, int] = {}
    for c in children:
        for line in c.lines:
            if line.startswith("A "):
                wid, seq, p, off, n = map(int, line.split()[1:])
                acks.append(LogAck(wid, seq, p, off, n))
            elif line.startswith("P "):
                wid, upto = map(int, line.split()[1:])
                produced[wid] = max(produced.get(wid, -1), upto)
    acked: set[tuple[int, int]] = set()
    for a in acks:
        kind = kind_of(state, a.wid)
        totals.add(kind, "acknowledged", a.count)
        acked.add((a.wid, a.seq))
        at = found.get((a.wid, a.seq))
        if at is None:
            totals.add(kind, "lost", a.count, f"{a} not found")
        elif at != (a.partition, a.offset, a.count):
            totals.add(kind, "moved", a.count, f"{a} found at {at}")
        else:
            head = b"%d:%d:0:" % (a.wid, a.seq)
            state.recent_anchors.append((a.partition, a.offset, head))
    for wid, upto in produced.items():
        totals.add("producer", "acknowledged", upto + 1)
        for seq in range(upto + 1):
            acked.add((wid, seq))
            at = found.get((wid, seq))
            if at is None:
                totals.add("producer", "lost", detail=f"message {wid}:{seq} not found")
            elif at[0] != seq % LOG_PARTS:
                totals.add("producer", "moved", detail=f"message {wid}:{seq} in partition {at[0]}")
    # A writer killed mid-call may leave that one call stored unacknowledged; a producer
    # may leave whatever it had buffered.
    extra = Counter(wid for wid, seq in found if (wid, seq) not in acked)
    for wid, n in extra.items():
        kind = kind_of(state, wid)
        if kind != "producer" and n > 1:
            totals.add(kind, "phantom", n - 1, f"writer {wid}: {n} unacknowledged batches stored")
    # Offsets are never reused: acknowledged batches of earlier rounds are still where
    # they were acknowledged.
    sample = rng.sample(state.anchors, min(len(state.anchors), 200))
    for p, off, head in sample:
        batch = topic.read_batch(p, off, max_messages=1)
        if len(batch) != 1 or not (batch.values()[0] or b"").startswith(head):
            got = batch.values()[:1]
            totals.add("log", "moved", detail=f"{p}/{off} should start with {head!r}, got {got!r}")
    state.anchors.extend(state.recent_anchors)
    state.recent_anchors.clear()
    if len(state.anchors) > 20_000:
        state.anchors = rng.sample(state.anchors, 10_000)


def check_log_full(store: tidelog.Store, state: State, totals: Totals) -> None:
    """Reads "log" from its start: dense offsets, whole batches, order per writer."""
    topic = store.topic("log")
    for p in range(LOG_PARTS):
        if topic.start_offset(p) != 0:
            totals.add("log", "lost", detail=f"partition {p} starts at {topic.start_offset(p)}")
        count = 0
        last: dict[int, int] = {}
        expect: tuple[int, int, int, int] | None = None
        # Streamed: a long run's log does not fit in memory as Python objects.
        for off, v in read_from(topic, p, topic.start_offset(p)):
            if off != count:
                totals.add("log", "corrupted", detail=f"partition {p}: offset {off} after {count}")
                count = off
            count += 1
            parsed = parse_log_value(v)
            if parsed is None:
                totals.add("log", "corrupted", detail=f"{p}/{off} unreadable in the full pass")
                expect = None
                continue
            wid, seq, i, n = parsed
            if expect is not None and (wid, seq, i, n) != expect:
                totals.add(
                    kind_of(state, expect[0]),
                    "corrupted",
                    detail=f"{p}/{off}: expected record {expect}",
                )
            if i == 0:
                if seq <= last.get(wid, -1):
                    totals.add(
                        kind_of(state, wid),
                        "misordered",
                        detail=f"full pass: {wid}:{seq} at {p}/{off}",
                    )
                last[wid] = seq
            expect = (wid, seq, i + 1, n) if i + 1 < n else None
        if count != state.log_end[p]:
            totals.add(
                "log",
                "lost",
                abs(state.log_end[p] - count),
                f"partition {p} holds {count} messages, {state.log_end[p]} verified",
            )


def check_commits(
    store: tidelog.Store, state: State, totals: Totals, children: list[Child]
) -> None:
    committed = committed_of(store, "cg", "log")
    end = {p: store.topic("log").end_offset(p) for p in range(LOG_PARTS)}
    for p, o in committed.items():
        floor = state.commit_floor.get(p, 0)
        if o < floor:
            totals.add("commit", "commit_back", detail=f"partition {p}: {o} after {floor}")
        if o > end[p]:
            totals.add(
                "commit", "corrupted", detail=f"partition {p}: committed {o} past the end {end[p]}"
            )
    for c in children:
        for line in c.lines:
            if line.startswith("C "):
                totals.add("commit", "acknowledged")
                for kv in line.split()[1:]:
                    p, o = map(int, kv.split(":"))
                    if committed.get(p, 0) < o:
                        totals.add(
                            "commit",
                            "lost",
                            detail=f"acknowledged commit {p}:{o}, committed {committed}",
                        )
                    state.commit_floor[p] = max(state.commit_floor.get(p, 0), o)
    for p, o in committed.items():
        state.commit_floor[p] = max(state.commit_floor.get(p, 0), o)


def check_queue(
    state: State, totals: Totals, children: list[Child], store_dir: Path, rng: random.Random
) -> None:
    delivered: list[tuple[int, int, int]] = []
    new: list[tuple[int, int]] = []
    for c in children:
        for line in c.lines:
            if line.startswith("D "):
                p, o, _, start = map(int, line.split()[1:])
                delivered.append((p, o, start))
            elif line.startswith("Q "):
                p, o, done = map(int, line.split()[1:])
                totals.add("queue", "acknowledged")
                if (p, o) in state.acked_jobs:
                    totals.add("queue", "duplicated", detail=f"job {p}/{o} acknowledged twice")
                state.acked_jobs[(p, o)] = done
                new.append((p, o))
    for p, o, start in delivered:
        acked_at = state.acked_jobs.get((p, o))
        if acked_at is not None and start > acked_at:
            totals.add("queue", "redelivered", detail=f"job {p}/{o} handed out after its ack")
    queue_state = read_state(queue_files(store_dir, "jobs", "wq"), JOB_PARTS)
    if queue_state is None:
        if state.acked_jobs:
            totals.add("queue", "lost", len(state.acked_jobs), "the queue's state is gone")
        return
    older = rng.sample(list(state.acked_jobs), min(200, len(state.acked_jobs)))
    for p, o in {*new, *older}:
        if not queue_state.partitions[p].finished(o):
            totals.add("queue", "lost", detail=f"acknowledged job {p}/{o} is not finished")


def committed_of(store: tidelog.Store, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets as any process sees them now."""
    topics = store.groups().get(group)
    info = topics.get(topic) if topics is not None else None
    return dict(info["committed"]) if info is not None else {}


def read_outputs(store: tidelog.Store, state: State, totals: Totals) -> None:
    out = store.topic("out")
    for q, suffix in ((0, b":a"), (1, b":b")):
        offset = state.out_end[q]
        while True:
            batch = out.read_batch(q, offset, max_messages=50_000)
            for v in (v or b"" for v in batch.values()):
                g = v.removesuffix(suffix)
                if g == v or not g.isdigit():
                    totals.add("txn", "corrupted", detail=f"out/{q}: {v!r}")
                    continue
                if int(g) in state.out_seen[q]:
                    totals.add("txn", "duplicated", detail=f"input {int(g)} twice in out/{q}")
                state.out_seen[q].add(int(g))
            if batch.next_offset == offset:
                break
            offset = batch.next_offset
        state.out_end[q] = offset


def check_txn(store: tidelog.Store, state: State, totals: Totals, children: list[Child]) -> None:
    # As the store stands after the kill, before anyone finishes the dead producer's
    # transaction: a visible committed offset vouches for visible outputs.
    committed = committed_of(store, "xg", "in")
    read_outputs(store, state, totals)
    for p, o in committed.items():
        for g in range(p + max(0, o - 400) * IN_PARTS, o * IN_PARTS, IN_PARTS):
            for q in (0, 1):
                if g not in state.out_seen[q]:
                    totals.add(
                        "txn",
                        "visibility",
                        detail=f"input {p}/{g // IN_PARTS} committed, its output not in out/{q}",
                    )
    store.abort_orphaned_transactions()
    committed = committed_of(store, "xg", "in")
    read_outputs(store, state, totals)
    for p, o in committed.items():
        floor = state.txn_floor.get(p, 0)
        if o < floor:
            totals.add("txn", "commit_back", detail=f"in/{p}: {o} after {floor}")
        state.txn_floor[p] = max(floor, o)
    for c in children:
        for line in c.lines:
            if line.startswith("T "):
                pairs = [tuple(map(int, kv.split(":"))) for kv in line.split()[1:]]
                totals.add("txn", "acknowledged")
                for p, o in pairs:
                    if committed.get(p, 0) < o:
                        totals.add(
                            "txn",
                            "lost",
                            detail=f"committed transaction up to {p}:{o}, offsets {committed}",
                        )
    # Both or neither: exactly the inputs below the committed offsets have outputs.
    expected = sum(committed.values())
    for q in (0, 1):
        if len(state.out_seen[q]) != expected:
            totals.add(
                "txn",
                "lost" if len(state.out_seen[q]) < expected else "phantom",
                detail=f"out/{q}: {len(state.out_seen[q])} inputs' outputs, {committed} committed",
            )
    for p, o in committed.items():
        for g in range(p + max(0, o - 200) * IN_PARTS, o * IN_PARTS, IN_PARTS):
            for q in (0, 1):
                if g not in state.out_seen[q]:
                    totals.add(
                        "txn", "lost", detail=f"input {g} committed without its output in out/{q}"
                    )


def check_scratch(
    store: tidelog.Store, state: State, totals: Totals, children: list[Child]
) -> None:
    for c in children:
        for line in c.lines:
            if line.startswith("X "):
                _, what, at = line.split()
                state.scratch_events.append((what, int(at)))
            elif line.startswith("S "):
                ack = tuple(map(int, line.split()[1:]))
                state.scratch_acks.append(ack)  # type: ignore[arg-type]
                totals.add("scratch", "acknowledged", ack[4])
    events = sorted(state.scratch_events, key=lambda e: e[1])
    last_cs = max(t for what, t in events if what == "cs")
    last_cd = max((t for what, t in events if what == "cd"), default=0)
    deleting_since = max((t for what, t in events if what == "ds"), default=0)
    alive = last_cd > deleting_since  # the current incarnation was created and not deleted
    # An acknowledged write whose whole call fell between a delete and the next creation
    # went into a deleted topic.
    gaps: list[tuple[int, int]] = []
    gap_start: int | None = None
    for what, t in events:
        if what == "dd":
            gap_start = t
        elif what == "cs" and gap_start is not None:
            gaps.append((gap_start, t))
            gap_start = None
    if gap_start is not None:
        gaps.append((gap_start, 1 << 62))
    for wid, seq, p, off, n, start, done in state.scratch_acks:
        if any(a <= start and done <= b for a, b in gaps):
            totals.add(
                "scratch",
                "lost",
                n,
                f"{wid}:{seq} acknowledged at {p}/{off} while the topic was deleted",
            )
    found: dict[tuple[int, int], tuple[int, int, int]] = {}
    try:
        topic = store.topic("scratch")
    except tidelog.TopicNotFoundError:
        topic = None
    except tidelog.TidelogError as e:
        totals.add("scratch", "corrupted", detail=f"the scratch topic cannot be opened: {e}")
        topic = None
    if topic is not None:
        for p in range(topic.partitions):
            try:
                messages = list(zip(*read_partition(topic, p), strict=True))
            except tidelog.TidelogError as e:
                totals.add("scratch", "corrupted", detail=f"scratch/{p} cannot be read: {e}")
                continue
            for offset, v in messages:
                parts = v.split(b":", 5)
                try:
                    wid, seq, i, n, start = (int(x) for x in parts[:5])
                except ValueError:
                    totals.add("scratch", "corrupted", detail=f"scratch/{p}/{offset}: {v[:40]!r}")
                    continue
                if start < last_cs:
                    totals.add(
                        "scratch",
                        "stale",
                        detail=f"{wid}:{seq} at {p}/{offset} was written before the topic was",
                    )
                if i == 0:
                    if (wid, seq) in found:
                        totals.add("scratch", "duplicated", detail=f"{wid}:{seq} twice")
                    found[(wid, seq)] = (p, offset, n)
    if alive and topic is not None:
        for wid, seq, p, off, n, start, _ in state.scratch_acks:
            if start > last_cd and found.get((wid, seq)) != (p, off, n):
                totals.add(
                    "scratch",
                    "lost",
                    n,
                    f"{wid}:{seq} acknowledged at {p}/{off}, found {found.get((wid, seq))}",
                )
    # Only acks of the current incarnation can be checked again later.
    state.scratch_acks = [a for a in state.scratch_acks if a[5] > last_cd and alive]


def kv_learn(state: State, totals: Totals, children: list[Child]) -> None:
    """Takes in the round's attempted and acknowledged writes of "kv"."""
    for c in children:
        intents: dict[int, tuple[str, tuple[int, int]]] = {}  # this worker's, by seq
        for line in c.lines:
            if line.startswith("I "):
                key, wid, seq, tomb = line.split()[1:]
                ident = (int(wid), int(seq))
                state.kv_attempted[(key, ident)] = tomb == "1"
                intents[ident[1]] = (key, ident)
            elif line.startswith("K "):
                key, wid, seq, p, off = line.split()[1:]
                ident = (int(wid), int(seq))
                kv_ack(state, totals, key, ident)
                state.kv_offsets[(int(p), int(off))] = (key, ident)
            elif line.startswith("F "):
                _, upto = map(int, line.split()[1:])
                for n in range(upto + 1):
                    if n in intents:
                        kv_ack(state, totals, *intents.pop(n))
            elif line.startswith("V "):
                totals.add("compact", "corrupted", detail=f"reader: {line[2:]}")


def kv_ack(state: State, totals: Totals, key: str, ident: tuple[int, int]) -> None:
    totals.add("compact", "acknowledged")
    state.kv_acked[key] = max(state.kv_acked.get(key, ident), ident)


def check_compact(
    store: tidelog.Store, state: State, totals: Totals, children: list[Child], store_dir: Path
) -> None:
    kv_learn(state, totals, children)
    topic = store.topic("kv")
    for part in (store_dir / "topics" / "kv").iterdir():
        if part.is_dir():
            left = [f.name for f in part.iterdir() if f.name.endswith(".cleaned")]
            left += [f.name for f in part.iterdir() if f.name == "compaction.swap"]
            if left:
                totals.add("compact", "corrupted", detail=f"left in {part.name}: {left}")
    # The newest record of each key, from a full read.
    newest: dict[str, tuple[tuple[int, int], bool, bytes | None]] = {}
    present: dict[tuple[int, int], tuple[str, tuple[int, int]]] = {}
    records = offsets = 0
    for p in range(KV_PARTS):
        prev = -1
        offsets += topic.end_offset(p) - topic.start_offset(p)
        for m in topic.read(p, offset=topic.start_offset(p)):
            records += 1
            where = f"kv/{p}/{m.offset}"
            if m.offset <= prev:
                totals.add("compact", "misordered", detail=f"{where} after {prev}")
            prev = m.offset
            try:
                key = (m.key or b"").decode()
                wid, seq = map(int, m.headers["id"].split(b":"))
            except (KeyError, ValueError, UnicodeDecodeError):
                totals.add("compact", "corrupted", detail=f"{where}: {m.key!r} {m.headers}")
                continue
            ident = (wid, seq)
            tomb = state.kv_attempted.get((key, ident))
            if tomb is None:
                totals.add("compact", "phantom", detail=f"{where}: {key} {ident} never written")
                continue
            if tomb != (m.value is None) or (
                m.value is not None and not m.value.startswith(b"%d:%d:" % ident)
            ):
                totals.add("compact", "corrupted", detail=f"{where}: {key} {ident} {m.value!r}")
            before = newest.get(key)
            if before is not None and before[0] >= ident:
                totals.add(
                    "compact", "misordered", detail=f"{where}: {key} {ident} after {before[0]}"
                )
            newest[key] = (ident, m.value is None, m.value)
            present[(p, m.offset)] = (key, ident)
    state.kv_records, state.kv_offsets_total = records, offsets

    last_tombstone: dict[str, tuple[int, int]] = {}
    for (k, i), t in state.kv_attempted.items():
        if t:
            last_tombstone[k] = max(last_tombstone.get(k, i), i)

    def superseded(key: str, ident: tuple[int, int]) -> bool:
        """A write no longer in the log is fine if a newer write of its key is, or if the
        key went with a tombstone at least as new (expired and compacted away)."""
        found = newest.get(key)
        if found is not None:
            return found[0] > ident
        return last_tombstone.get(key, (-1, -1)) >= ident

    for key, ident in state.kv_acked.items():
        found = newest.get(key)
        if (found is None and not superseded(key, ident)) or (
            found is not None and found[0] < ident
        ):
            totals.add("compact", "lost", detail=f"{key}: acknowledged {ident}, newest {found}")
        elif (
            found is not None and found[0] == ident and found[1] != state.kv_attempted[(key, ident)]
        ):
            totals.add("compact", "corrupted", detail=f"{key}: {ident} tombstone or not")
    for acked_at, (key, ident) in list(state.kv_offsets.items()):
        at = present.get(acked_at)
        if at is None:
            if not superseded(key, ident):
                totals.add("compact", "lost", detail=f"{key} {ident} at {acked_at} gone")
            else:
                del state.kv_offsets[acked_at]  # compacted away for good
        elif at != (key, ident):
            totals.add("compact", "moved", detail=f"{key} {ident} at {acked_at}: {at} there")
    latest = dict(topic.latest())
    expected = {k.encode(): v for k, (_, tomb, v) in newest.items() if not tomb}
    if latest != expected:
        wrong = sorted(set(latest.items()) ^ set(expected.items()))[:3]
        totals.add("compact", "corrupted", detail=f"latest() disagrees with a full read: {wrong}")


def check_children(state: State, totals: Totals, children: list[Child]) -> None:
    for c in children:
        for line in c.lines:
            if line.startswith("E "):
                totals.add(c.kind, "crashed", detail=line[:600])
        status = c.status or 0
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL:
            totals.add(c.kind, "crashed", detail=f"{c.role} died of signal {os.WTERMSIG(status)}")
        elif (
            os.WIFEXITED(status)
            and os.WEXITSTATUS(status) != 0
            and not any(x.startswith("E ") for x in c.lines)
        ):
            totals.add(c.kind, "crashed", detail=f"{c.role} exited with {os.WEXITSTATUS(status)}")


def check(
    store_dir: Path,
    state: State,
    totals: Totals,
    children: list[Child],
    kinds: set[str],
    rng: random.Random,
) -> None:
    check_children(state, totals, children)
    with open_store(store_dir) as store:
        if kinds & {"append", "batch", "buffer", "producer", "fork"}:
            check_log(store, state, totals, children, rng)
        if "commit" in kinds:
            check_commits(store, state, totals, children)
        if "queue" in kinds:
            check_queue(state, totals, children, store_dir, rng)
        if "txn" in kinds:
            check_txn(store, state, totals, children)
        if "scratch" in kinds:
            check_scratch(store, state, totals, children)
        if "compact" in kinds:
            check_compact(store, state, totals, children, store_dir)


def report(state: State, totals: Totals, kinds: list[str], wall: float) -> None:
    columns = ["acknowledged", *VIOLATIONS]
    print(f"{'kind':<10}" + "".join(f"{c:>13}" for c in columns))
    for kind in [*kinds, "log", "store"]:
        counts = totals.counts.get(kind, Counter())
        if kind in ("log", "store") and not counts:
            continue
        print(f"{kind:<10}" + "".join(f"{counts[c]:>13}" for c in columns))
    all_counts: Counter[str] = Counter()
    for c in totals.counts.values():
        all_counts.update(c)
    others = " ".join(f"{v}={all_counts[v]}" for v in VIOLATIONS[3:])
    print(
        f"TOTAL rounds={state.rounds} acknowledged={all_counts['acknowledged']} "
        f"lost={all_counts['lost']} duplicated={all_counts['duplicated']} "
        f"corrupted={all_counts['corrupted']} {others} wall={wall:.1f}s"
    )
    if state.kv_offsets_total:
        print(f"compact: kv holds {state.kv_records} records in {state.kv_offsets_total} offsets")
    for d in totals.details:
        print("  " + d)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated, of {','.join(KINDS)}"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="store directory (must not exist)")
    parser.add_argument("--window", type=float, default=0.3, help="kill within this many seconds")
    parser.add_argument(
        "--full-every", type=int, default=100, help="full read of the log every N rounds"
    )
    parser.add_argument(
        "--fsync",
        default="never,never,interval,always",
        help="each worker's fsync policy, drawn from this list",
    )
    parser.add_argument("--keep", action="store_true", help="keep the store directory")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f"unknown kinds {unknown}; choose from {','.join(KINDS)}")
    fsyncs = args.fsync.split(",")
    if not set(fsyncs) <= {"never", "interval", "always"}:
        parser.error(f"--fsync takes never, interval and always, got {args.fsync}")
    # Ctrl-C (even when started in the background, with SIGINT ignored) ends the run
    # between two checks and prints the totals so far.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"torture: {args.rounds} rounds of {','.join(kinds)}, seed {seed}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="tidelog-torture-")) if args.dir is None else args.dir
    store_dir = base / "store" if args.dir is None else base
    state, totals = State(), Totals()
    started = time.monotonic()
    setup(store_dir, state)
    log_kinds = {"append", "batch", "buffer", "producer", "fork"} & set(kinds)
    interrupted = False
    try:
        for r in range(args.rounds):
            state.rounds = r
            try:
                feed(store_dir, state, set(kinds))
                children = run_round(store_dir, state, kinds, rng, args.window, fsyncs)
                check(store_dir, state, totals, children, set(kinds), rng)
                if log_kinds and ((r + 1) % args.full_every == 0 or r + 1 == args.rounds):
                    with open_store(store_dir) as store:
                        check_log_full(store, state, totals)
            except tidelog.TidelogError as e:
                # Damage the checks cannot read past: later rounds would only repeat it.
                totals.add("store", "corrupted", detail=f"round {r}: stopped, {e}")
                break
            state.rounds = r + 1
            if (r + 1) % 50 == 0:
                elapsed = time.monotonic() - started
                print(f"  round {r + 1}: {totals.violations()} violations, {elapsed:.0f} s")
                sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"interrupted in round {state.rounds}: its checks are left out")
        interrupted = True
    finally:
        report(state, totals, kinds, time.monotonic() - started)
        if not args.keep and totals.violations() == 0:
            shutil.rmtree(base if args.dir is None else store_dir, ignore_errors=True)
        elif args.dir is None:
            print(f"store kept in {store_dir}")
    return 1 if totals.violations() else 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
