"""Consumer groups (issue #4): consuming through a group, offset commits, and the
producer-to-consumer latency across two processes, each next to its reference measured in the
same run.

* ``consume``: a group member doing ``poll(500)`` (at-least-once: every poll commits what the
  previous one returned, one commit at the end) over a partition of 100-byte messages, next
  to the raw ``read_batch(500)`` loop the member is built on (no group, no commits).
* ``commit-never`` / ``commit-always``: ``consumer.commit({0: offset})`` in a loop, as time
  per commit; next to a bare ``os.write`` of a commit-sized record to a file (page cache) and
  a bare ``os.write`` + ``os.fdatasync`` loop on the same disk.
* ``latency-p50`` / ``latency-p99``: a sender here appends 100-byte values stamped with
  ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, comparable across processes) every
  ``INTERVAL_US`` µs; a consumer process (``latency_consumer.py``) blocked in ``poll`` takes
  its clock when the messages reach it. The reference is the same with a pipe instead of
  tidelog (the floor of a cross-process wake-up on this machine); a variant is the raw
  ``ticket`` / ``read_batch`` / ``wait`` loop without a group. Both percentiles of a system
  come from one run (the test that runs second reuses the histogram of the first); the whole
  histogram is saved in ``extra_info``. The consumer sleeps on the doorbell at once
  (``spin_us=0``, the path before issue 19).
* ``latency-spin-p50`` / ``latency-spin-p99``: the same with the consumer spinning up to
  ``SPIN_ON_US`` µs on the doorbell before sleeping (issue 19), next to the pipe, in the same
  run; ``latency-spin-sweep`` adds the p50 of other ``spin_us`` values (how the default was
  chosen), and ``idle-cpu-spin`` the CPU time a spinning member takes over ``IDLE_S`` s of a
  topic nobody writes to (it must stay near 0: the spin ends, the member sleeps).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
import tidelog

from benches.support import (
    BATCH_VALUES,
    SCALE,
    VALUE_BYTES,
    Measured,
    Role,
    Rusage,
    Unit,
    make_buffer,
    ns_per,
    per_second,
    record,
    rusage,
)

ROUNDS = SCALE.rounds
QUICK = SCALE.name == "quick"
#: Messages consumed per round (all of the source partition).
CONSUME_MSGS = 50_000 if QUICK else 1_000_000
POLL = 500
#: commit() calls per round, fsync "never" and "always".
COMMITS = 2_000 if QUICK else 20_000
DURABLE_COMMITS = 50 if QUICK else 500
#: Measured messages of each latency run, the paced warm-up before them, and the pace.
LATENCY_MSGS = 5_000 if QUICK else 100_000
LATENCY_WARMUP = 500 if QUICK else 5_000
INTERVAL_US = 40
#: ``spin_us`` of the spinning consumer: as long as the sender's pauses (its schedule restarts
#: once it is 1 ms late), so the consumer does not sleep while messages come. With 100 µs, a
#: little over the 40 µs gap, it slept before 1-2 messages in a thousand (the sender's own
#: wake-ups ran late), and while its core idled the scheduler could move the sender onto
#: it: both then shared one core for milliseconds (perf: ~900 preemptions of the consumer by
#: the sender in one run), slow messages all along. p99 median of 8 runs: 26.4 µs at 100,
#: 17.6 µs at 1000 (``benches/results/s21``). The other values the sweep measures (p50 as
#: its figure, every percentile in ``extra_info``).
SPIN_ON_US = 1000
SPIN_SWEEP_US = (10, 20, 50, 100)
#: How long the idle member polls a silent topic.
IDLE_S = 10.0
#: The latency figures are in microseconds; ``benches/report.py`` prints unknown units as is
#: (``support.Unit`` lists the units it computes from round times, which these are not).
MICROSECONDS = cast(Unit, "µs")

CONSUME_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 2_000_000, "text": ">= 2,000,000 msgs/s"},
]
#: Issue 14's target (issue 4's was <= 5,000 ns).
COMMIT_NEVER_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<=", "value": 1_000, "text": "<= 1,000 ns (>= 1,000,000 commits/s)"},
]
COMMIT_ALWAYS_TARGETS: list[dict[str, Any]] = [
    {"of": "ratio", "op": "<=", "value": 2.0, "text": "within 2x of bare fdatasync"},
]
P50_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 100, "text": "p50 < 100 µs"},
]
P99_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 2_000, "text": "p99 < 2 ms"},
]

Args = tuple[tuple[Any, ...], dict[str, Any]]


def run(
    benchmark: Any,
    target: Callable[..., Any],
    setup: Callable[[], Args],
    rounds: int = ROUNDS,
) -> dict[str, float]:
    """Runs ``target`` for ``rounds`` rounds (plus one warm-up) after a per-round setup.

    Returns the process's resource usage per timed round (setup excluded).
    """
    measured = Measured(target)
    benchmark.pedantic(measured, setup=setup, rounds=rounds, warmup_rounds=1)
    return measured.per_call()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def store(bench_root: Path) -> Iterator[tidelog.Store]:
    """A store with ``fsync="never"`` holding the partition consumed by every round."""
    with tidelog.open(bench_root / "consumer-store", fsync="never") as s:
        topic = s.create_topic("source", partitions=1)
        buffer, lengths = make_buffer()
        for _ in range(CONSUME_MSGS // BATCH_VALUES):
            topic.append_batch(buffer, lengths=lengths, partition=0)
        assert topic.end_offset(0) == CONSUME_MSGS
        yield s


@pytest.fixture(scope="module")
def durable_store(bench_root: Path) -> Iterator[tidelog.Store]:
    """A store with ``fsync="always"`` on the same disk, with a message for every offset
    committed (a commit past the end offset is refused)."""
    with tidelog.open(bench_root / "consumer-durable", fsync="always") as s:
        values = [b"x" * VALUE_BYTES] * DURABLE_COMMITS
        s.create_topic("source", partitions=1).append_batch(values, partition=0)
        yield s


@pytest.fixture(scope="module")
def latency_root(bench_root: Path) -> Path:
    """Where the latency runs keep their stores (shared by the tests of one run)."""
    path = bench_root / "latency"
    path.mkdir(exist_ok=True)
    return path


class Members:
    """Per round, a new member of a new group (the previous member is closed first)."""

    def __init__(self, store: tidelog.Store, prefix: str, **options: Any) -> None:
        self.store = store
        self.prefix = prefix
        self.options = options
        self.count = 0
        self.current: tidelog.Consumer | None = None
        self.checks: list[Callable[[tidelog.Consumer], None]] = []

    def next(self) -> tidelog.Consumer:
        """Closes the previous member (after the checks) and joins the next group."""
        self.finish()
        self.current = self.store.consumer(
            "source", group=f"{self.prefix}-{self.count}", **self.options
        )
        self.count += 1
        return self.current

    def finish(self) -> None:
        """Checks and closes the current member."""
        if self.current is not None:
            for check in self.checks:
                check(self.current)
            self.current.close()
            self.current = None


# --------------------------------------------------------------------------- consume


def consume_loop(consumer: tidelog.Consumer, n: int) -> None:
    """Polls batches of ``POLL`` until ``n`` messages arrived, then commits the last batch."""
    poll = consumer.poll
    got = 0
    while got < n:
        got += len(poll(POLL))
    consumer.commit()


def consume_values_loop(consumer: tidelog.Consumer, n: int) -> None:
    """:func:`consume_loop`, also reading every message's value (as an application would)."""
    poll = consumer.poll
    got = 0
    while got < n:
        for m in poll(POLL):
            m.value  # noqa: B018 - the access is what is measured
            got += 1
    consumer.commit()


def read_batch_loop(topic: tidelog.Topic, n: int) -> None:
    """The fetch a member is built on: ``read_batch(500)`` into a list of Message objects."""
    read = topic.read_batch
    position = 0
    got = 0
    while got < n:
        batch = read(0, position, max_messages=POLL)
        got += len(list(batch))
        position = batch.next_offset


def read_values_loop(topic: tidelog.Topic, n: int) -> None:
    """``read_batch(500).values()``: the values only, no Message objects."""
    read = topic.read_batch
    position = 0
    got = 0
    while got < n:
        batch = read(0, position, max_messages=POLL)
        got += len(batch.values())
        position = batch.next_offset


CONSUME_WHAT = (
    f"{CONSUME_MSGS:,} msgs of {VALUE_BYTES} B per round, a new group per round, "
    f"{CONSUME_MSGS // POLL:,} commits per round"
)


def _committed_all(consumer: tidelog.Consumer) -> None:
    assert consumer.committed() == {0: CONSUME_MSGS}, consumer.committed()


def _consume(benchmark: Any, store: tidelog.Store, prefix: str, loop: Callable[..., Any]) -> Any:
    members = Members(store, prefix, delivery="at-least-once", max_poll_messages=POLL)
    members.checks.append(_committed_all)
    usage = run(benchmark, loop, lambda: ((members.next(), CONSUME_MSGS), {}))
    members.finish()
    return {"ns_per_msg": ns_per(benchmark, CONSUME_MSGS), **usage}


@pytest.mark.benchmark(group="consume")
def test_consume_tidelog(benchmark: Any, store: tidelog.Store) -> None:
    extra = _consume(benchmark, store, "consume", consume_loop)
    record(
        benchmark,
        figure="consume",
        title="group member: poll(500) + commit per poll (at-least-once)",
        role="tidelog",
        unit="msgs/s",
        work=CONSUME_MSGS,
        what=CONSUME_WHAT,
        targets=CONSUME_TARGETS,
        extra=extra,
    )


@pytest.mark.benchmark(group="consume")
def test_consume_reference(benchmark: Any, store: tidelog.Store) -> None:
    topic = store.topic("source")
    usage = run(benchmark, read_batch_loop, lambda: ((topic, CONSUME_MSGS), {}))
    record(
        benchmark,
        figure="consume",
        title="no group: read_batch(500) -> list of Message",
        role="reference",
        unit="msgs/s",
        work=CONSUME_MSGS,
        what=f"{CONSUME_MSGS:,} msgs of {VALUE_BYTES} B per round, no commits",
        extra={"ns_per_msg": ns_per(benchmark, CONSUME_MSGS), **usage},
    )


@pytest.mark.benchmark(group="consume")
def test_consume_reading_values(benchmark: Any, store: tidelog.Store) -> None:
    extra = _consume(benchmark, store, "consume-values", consume_values_loop)
    record(
        benchmark,
        figure="consume-values",
        title="group member: poll(500) + commit per poll, reading every m.value",
        role="variant",
        unit="msgs/s",
        work=CONSUME_MSGS,
        what=CONSUME_WHAT,
        extra=extra,
    )


@pytest.mark.benchmark(group="consume")
def test_consume_values_floor(benchmark: Any, store: tidelog.Store) -> None:
    topic = store.topic("source")
    usage = run(benchmark, read_values_loop, lambda: ((topic, CONSUME_MSGS), {}))
    record(
        benchmark,
        figure="consume-values-floor",
        title="no group: read_batch(500).values() (bytes, no Message objects)",
        role="variant",
        unit="msgs/s",
        work=CONSUME_MSGS,
        what=f"{CONSUME_MSGS:,} msgs of {VALUE_BYTES} B per round, no commits",
        extra={"ns_per_msg": ns_per(benchmark, CONSUME_MSGS), **usage},
    )


# --------------------------------------------------------------------------- commit

#: The record one ``commit({0: offset})`` appends (version 3 of docs/FORMAT.md, "Consumer
#: offsets", no metadata).
COMMIT_RECORD = struct.pack("<HqqH", 3, 1, 12_345, 0)
COMMIT_KEY = b"commit-floor\0source\0%016x\0%d" % (1 << 60, 0)


def commit_loop(consumer: tidelog.Consumer, n: int) -> None:
    """``n`` commits of partition 0, each a new offset."""
    commit = consumer.commit
    for i in range(n):
        commit({0: i})


def write_loop(fd: int, data: bytes, n: int) -> None:
    """``n`` appends of ``data`` with ``os.write`` (page cache, no fsync)."""
    write = os.write
    for _ in range(n):
        write(fd, data)


def fdatasync_loop(fd: int, data: bytes, n: int) -> None:
    """``n`` times: append ``data`` with ``os.write``, then fdatasync."""
    write, sync = os.write, os.fdatasync
    for _ in range(n):
        write(fd, data)
        sync(fd)


def append_key_loop(append: Callable[..., Any], data: bytes, n: int) -> None:
    """``n`` keyed appends to partition 0: the storage floor of a commit record."""
    for _ in range(n):
        append(data, key=COMMIT_KEY, partition=0)


class FreshFiles:
    """A new append-only file per round (the previous one closed and deleted)."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self.count = 0
        self.fd: int | None = None

    def next(self) -> int:
        """Opens the next file and returns its descriptor."""
        self.finish()
        self.fd = os.open(
            self.directory / f"{self.prefix}-{self.count}",
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o644,
        )
        self.count += 1
        return self.fd

    def finish(self) -> None:
        """Closes and deletes the current file."""
        if self.fd is not None:
            os.close(self.fd)
            (self.directory / f"{self.prefix}-{self.count - 1}").unlink()
            self.fd = None


def _commit_members(store: tidelog.Store, prefix: str, n: int) -> Members:
    members = Members(store, prefix, lease_seconds=600.0)

    def committed_last(consumer: tidelog.Consumer) -> None:
        assert consumer.committed() == {0: n - 1}, consumer.committed()

    members.checks.append(committed_last)
    return members


@pytest.mark.benchmark(group="commit-never")
def test_commit_never_tidelog(benchmark: Any, store: tidelog.Store) -> None:
    members = _commit_members(store, "commit", COMMITS)
    usage = run(benchmark, commit_loop, lambda: ((members.next(), COMMITS), {}))
    members.finish()
    record(
        benchmark,
        figure="commit-never",
        title='consumer.commit({0: offset}), fsync="never", time per commit',
        role="tidelog",
        unit="ns/call",
        work=COMMITS,
        what=f"{COMMITS:,} commits per round, one member of a new group per round",
        targets=COMMIT_NEVER_TARGETS,
        extra={"commits_per_s": per_second(benchmark, COMMITS), **usage},
    )


@pytest.mark.benchmark(group="commit-never")
def test_commit_never_reference(benchmark: Any, bench_dir: Path) -> None:
    files = FreshFiles(bench_dir, "commit-write")
    usage = run(benchmark, write_loop, lambda: ((files.next(), COMMIT_RECORD, COMMITS), {}))
    files.finish()
    record(
        benchmark,
        figure="commit-never",
        title=f"bare os.write of a {len(COMMIT_RECORD)} B commit record (page cache)",
        role="reference",
        unit="ns/call",
        work=COMMITS,
        what=f"{COMMITS:,} os.write per round to a new file",
        extra={"commits_per_s": per_second(benchmark, COMMITS), **usage},
    )


@pytest.mark.benchmark(group="commit-never")
def test_commit_never_append_floor(benchmark: Any, store: tidelog.Store) -> None:
    topic = store.create_topic("commit-floor", partitions=8)
    usage = run(benchmark, append_key_loop, lambda: ((topic.append, COMMIT_RECORD, COMMITS), {}))
    store.delete_topic("commit-floor")
    record(
        benchmark,
        figure="commit-append-floor",
        title="floor: topic.append(same record, key=..., partition=0)",
        role="variant",
        unit="ns/call",
        work=COMMITS,
        what=f"{COMMITS:,} keyed appends of {len(COMMIT_RECORD)} B per round",
        extra={"commits_per_s": per_second(benchmark, COMMITS), **usage},
    )


@pytest.mark.benchmark(group="commit-always")
def test_commit_always_tidelog(benchmark: Any, durable_store: tidelog.Store) -> None:
    members = _commit_members(durable_store, "commit", DURABLE_COMMITS)
    usage = run(benchmark, commit_loop, lambda: ((members.next(), DURABLE_COMMITS), {}))
    members.finish()
    record(
        benchmark,
        figure="commit-always",
        title='consumer.commit({0: offset}), fsync="always", time per commit',
        role="tidelog",
        unit="ns/call",
        work=DURABLE_COMMITS,
        what=f"{DURABLE_COMMITS:,} commits per round, one member of a new group per round",
        targets=COMMIT_ALWAYS_TARGETS,
        extra={"commits_per_s": per_second(benchmark, DURABLE_COMMITS), **usage},
    )


@pytest.mark.benchmark(group="commit-always")
def test_commit_always_reference(benchmark: Any, durable_store: tidelog.Store) -> None:
    # A directory next to the durable store: the same file system and disk.
    directory = Path(durable_store.path).parent / "commit-fdatasync"
    directory.mkdir(exist_ok=True)
    files = FreshFiles(directory, "fdatasync")
    usage = run(
        benchmark,
        fdatasync_loop,
        lambda: ((files.next(), COMMIT_RECORD, DURABLE_COMMITS), {}),
    )
    files.finish()
    record(
        benchmark,
        figure="commit-always",
        title=f"bare os.write ({len(COMMIT_RECORD)} B) + os.fdatasync (same disk)",
        role="reference",
        unit="ns/call",
        work=DURABLE_COMMITS,
        what=f"{DURABLE_COMMITS:,} x (write + fdatasync) per round, appending to a new file",
        extra={"commits_per_s": per_second(benchmark, DURABLE_COMMITS), **usage},
    )


# --------------------------------------------------------------------------- latency

CHILD = Path(__file__).with_name("latency_consumer.py")
STAMP = struct.Struct("<q")
PAD = b"\0" * (VALUE_BYTES - STAMP.size)
TOPIC = "latency"
#: Percentiles reported (and the keys they are saved under).
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
#: Histogram bins: 10 per decade, upper edges from 1 µs to 10 s.
HIST_EDGES_US = [round(10 ** (i / 10), 3) for i in range(71)]
#: How long the sender waits for the child at each step before failing the benchmark.
STEP_TIMEOUT_S = 60.0


@contextlib.contextmanager
def timer_slack(ns: int) -> Iterator[None]:
    """Sets this thread's timer slack (Linux ``prctl``), so ``time.sleep`` of a few tens of
    microseconds ends within a few microseconds of its deadline instead of 50 µs late.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        old = int(libc.prctl(30, 0, 0, 0, 0))  # PR_GET_TIMERSLACK
        ok = int(libc.prctl(29, ns, 0, 0, 0)) == 0  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        ok = False
    try:
        yield
    finally:
        if ok:
            libc.prctl(29, old, 0, 0, 0)


class ChildLines:
    """Lines from the child's stdout, read with a timeout (no buffering ahead)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.pending = b""

    def ready(self, timeout: float) -> bool:
        """Whether a whole line is available within ``timeout`` seconds."""
        if b"\n" in self.pending:
            return True
        if select.select([self.fd], [], [], timeout)[0]:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise RuntimeError(f"the consumer process exited ({self.proc.wait()})")
            self.pending += chunk
        return b"\n" in self.pending

    def expect(self, word: str, timeout: float = STEP_TIMEOUT_S) -> str:
        """The next line, which must start with ``word``; returns the rest of it."""
        deadline = time.monotonic() + timeout
        while not self.ready(max(0.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the consumer process did not say {word!r} in {timeout} s")
        line, _, self.pending = self.pending.partition(b"\n")
        text = line.decode()
        if not text.startswith(word):
            raise RuntimeError(f"the consumer process said {text!r}, expected {word!r}")
        return text[len(word) :].strip()


def paced_send(send: Callable[[bytes], Any], count: int, interval_ns: int, stamped: bool) -> int:
    """Sends ``count`` values, one every ``interval_ns`` (sleeping in between).

    A value is stamped with ``perf_counter_ns()`` just before it is handed to ``send`` (or
    with -1, a warm-up message). When the sender itself falls more than 1 ms behind its
    schedule (it was preempted), the schedule restarts from now instead of catching up in a
    burst, which would measure queueing. Returns how many times that happened.
    """
    clock, pack, sleep = time.perf_counter_ns, STAMP.pack, time.sleep
    warm_value = pack(-1) + PAD
    restarts = 0
    due = clock()
    for _ in range(count):
        wait = due - clock()
        if wait > 0:
            sleep(wait * 1e-9)
        elif wait < -1_000_000:
            due = clock()
            restarts += 1
        send(pack(clock()) + PAD if stamped else warm_value)
        due += interval_ns
    return restarts


@dataclass
class LatencyRun:
    """One latency run: the latencies (ns, arrival order) and how it went."""

    mode: str
    latencies_ns: npt.NDArray[np.int64]
    send_s: float
    sender: Rusage
    child: dict[str, float]
    restarts: int

    def percentiles_us(self) -> dict[str, float]:
        """p50 / p90 / p99 / p999, max and mean, in microseconds."""
        lat = self.latencies_ns / 1e3
        if not len(lat):
            return {}
        out = {k: float(np.percentile(lat, q)) for k, q in PERCENTILES.items()}
        out["max"] = float(lat.max())
        out["mean"] = float(lat.mean())
        return out

    def histogram(self) -> dict[str, Any]:
        """Counts per bin (10 per decade); ``le_us`` is each bin's upper edge, inclusive."""
        lat = self.latencies_ns / 1e3
        edges = np.array([0.0, *HIST_EDGES_US, np.inf])
        counts, _ = np.histogram(lat, bins=edges)
        return {
            "le_us": [*HIST_EDGES_US, "inf"],
            "count": [int(c) for c in counts],
            "bins": "10 per decade; bin i counts latencies in (le_us[i-1], le_us[i]] µs",
        }

    def extra(self) -> dict[str, Any]:
        """Everything saved in ``extra_info``."""
        n = max(len(self.latencies_ns), 1)
        child_cpu = self.child.get("cpu_user_s", 0.0) + self.child.get("cpu_sys_s", 0.0)
        return {
            "mode": self.mode,
            "messages": len(self.latencies_ns),
            "interval_us_target": INTERVAL_US,
            "interval_us_achieved": self.send_s / n * 1e6,
            "sender_schedule_restarts": self.restarts,
            "latency_us": self.percentiles_us(),
            "histogram": self.histogram(),
            "consumer_cpu_us_per_msg": child_cpu / n * 1e6,
            "consumer_blocking_waits_per_msg": self.child.get("voluntary_ctx_switches", 0) / n,
            "consumer_preempted_per_msg": self.child.get("involuntary_ctx_switches", 0) / n,
            "consumer_minor_faults_per_msg": self.child.get("minor_faults", 0) / n,
            "sender_cpu_us_per_msg": (self.sender.user_s + self.sender.sys_s) / n * 1e6,
            "sender_minor_faults_per_msg": self.sender.minflt / n,
            "consumer_usage": self.child,
        }


def latency_run(mode: str, directory: Path, spin_us: int = 0) -> LatencyRun:
    """Starts the consumer child in ``mode``, sends the paced messages, collects latencies."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"{mode}.latencies"
    args = [sys.executable, str(CHILD), mode, str(directory / "store"), TOPIC]
    args += [str(LATENCY_MSGS), str(out)]
    if mode != "pipe":
        args.append(str(spin_us))
    store: tidelog.Store | None = None
    pipe_fds: tuple[int, int] | None = None
    send: Callable[[bytes], Any]
    if mode == "pipe":
        pipe_fds = os.pipe()
        args.append(str(pipe_fds[0]))
        write_fd = pipe_fds[1]

        def send(value: bytes) -> None:
            os.write(write_fd, value)

    else:
        store = tidelog.open(directory / "store", fsync="never")
        send = store.create_topic(TOPIC, partitions=1, exist_ok=True).append
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, pass_fds=pipe_fds[:1] if pipe_fds else ())
    try:
        if pipe_fds:
            os.close(pipe_fds[0])
        lines = ChildLines(proc)
        lines.expect("ready")
        warm_value = STAMP.pack(-1) + PAD
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not lines.ready(0.001):  # until the first message reached the consumer
            send(warm_value)
            if time.monotonic() > deadline:
                raise RuntimeError("no warm-up message reached the consumer")
        lines.expect("warm")
        interval_ns = INTERVAL_US * 1000
        with timer_slack(1000):
            paced_send(send, LATENCY_WARMUP, interval_ns, stamped=False)
            start = time.perf_counter()
            with rusage() as sender:
                restarts = paced_send(send, LATENCY_MSGS, interval_ns, stamped=True)
            send_s = time.perf_counter() - start
        child = json.loads(lines.expect("done"))
        if proc.wait(STEP_TIMEOUT_S) != 0:
            raise RuntimeError(f"the consumer process failed ({proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if pipe_fds:
            os.close(pipe_fds[1])
        if store is not None:
            store.close()
    latencies = np.fromfile(out, dtype=np.int64)
    out.unlink()
    assert len(latencies) == LATENCY_MSGS, f"{len(latencies)} of {LATENCY_MSGS} arrived"
    return LatencyRun(mode, latencies, send_s, sender, child, restarts)


#: Runs already made in this session, by mode and spin: each is measured once and gives both
#: figures.
_RUNS: dict[tuple[str, int], LatencyRun] = {}


def _latency(
    benchmark: Any,
    directory: Path,
    mode: str,
    *,
    figure: str,
    percentile: str,
    title: str,
    role: Role,
    targets: list[dict[str, Any]] | None = None,
    spin_us: int = 0,
) -> None:
    key = (mode, spin_us)
    reused = key in _RUNS

    def measure() -> LatencyRun:
        if key not in _RUNS:
            _RUNS[key] = latency_run(mode, directory / f"{mode}-spin{spin_us}", spin_us)
        return _RUNS[key]

    result: LatencyRun = benchmark.pedantic(measure, rounds=1, iterations=1, warmup_rounds=0)
    extra = {**result.extra(), "spin_us": spin_us}
    source = "reused from the other percentile's test (one run)" if reused else "measured here"
    record(
        benchmark,
        figure=figure,
        title=title,
        role=role,
        unit=MICROSECONDS,
        work=len(result.latencies_ns),
        value=extra["latency_us"][percentile],
        what=f"{LATENCY_MSGS:,} msgs of {VALUE_BYTES} B, one every {INTERVAL_US} µs after "
        f"{LATENCY_WARMUP:,} warm-up msgs; histogram {source}",
        targets=targets,
        extra=extra,
    )


GROUP_TITLE = "{p} latency, append -> consumer process blocked in poll(500) (group)"
SPIN_TITLE = "{p} latency, append -> consumer process in poll(500) (group, spin_us={spin})"
PIPE_TITLE = "{p} latency, os.write -> process blocked in os.read on a pipe"


@pytest.mark.benchmark(group="latency-p50")
def test_latency_p50_tidelog(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "group",
        figure="latency-p50",
        percentile="p50",
        title=GROUP_TITLE.format(p="p50"),
        role="tidelog",
        targets=P50_TARGETS,
    )


@pytest.mark.benchmark(group="latency-p50")
def test_latency_p50_reference(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "pipe",
        figure="latency-p50",
        percentile="p50",
        title=PIPE_TITLE.format(p="p50"),
        role="reference",
    )


@pytest.mark.benchmark(group="latency-p99")
def test_latency_p99_tidelog(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "group",
        figure="latency-p99",
        percentile="p99",
        title=GROUP_TITLE.format(p="p99"),
        role="tidelog",
        targets=P99_TARGETS,
    )


@pytest.mark.benchmark(group="latency-p99")
def test_latency_p99_reference(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "pipe",
        figure="latency-p99",
        percentile="p99",
        title=PIPE_TITLE.format(p="p99"),
        role="reference",
    )


@pytest.mark.benchmark(group="latency-breakdown")
def test_latency_doorbell(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "doorbell",
        figure="latency-doorbell-p50",
        percentile="p50",
        title="p50 latency, append -> process in ticket/read_batch/wait (no group)",
        role="variant",
    )


SPIN_P50_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 3, "text": "p50 < 3 µs"},
]
SPIN_P99_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 20, "text": "p99 < 20 µs"},
]


@pytest.mark.benchmark(group="latency-spin-p50")
def test_latency_spin_p50_tidelog(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "group",
        figure="latency-spin-p50",
        percentile="p50",
        title=SPIN_TITLE.format(p="p50", spin=SPIN_ON_US),
        role="tidelog",
        targets=SPIN_P50_TARGETS,
        spin_us=SPIN_ON_US,
    )


@pytest.mark.benchmark(group="latency-spin-p50")
def test_latency_spin_p50_reference(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "pipe",
        figure="latency-spin-p50",
        percentile="p50",
        title=PIPE_TITLE.format(p="p50"),
        role="reference",
    )


@pytest.mark.benchmark(group="latency-spin-p50")
def test_latency_spin_p50_off(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "group",
        figure="latency-spin-p50",
        percentile="p50",
        title=SPIN_TITLE.format(p="p50", spin=0),
        role="second-reference",
    )


@pytest.mark.benchmark(group="latency-spin-p99")
def test_latency_spin_p99_tidelog(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "group",
        figure="latency-spin-p99",
        percentile="p99",
        title=SPIN_TITLE.format(p="p99", spin=SPIN_ON_US),
        role="tidelog",
        targets=SPIN_P99_TARGETS,
        spin_us=SPIN_ON_US,
    )


@pytest.mark.benchmark(group="latency-spin-p99")
def test_latency_spin_p99_reference(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "pipe",
        figure="latency-spin-p99",
        percentile="p99",
        title=PIPE_TITLE.format(p="p99"),
        role="reference",
    )


@pytest.mark.benchmark(group="latency-spin-p99")
def test_latency_spin_p99_off(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "group",
        figure="latency-spin-p99",
        percentile="p99",
        title=SPIN_TITLE.format(p="p99", spin=0),
        role="second-reference",
    )


@pytest.mark.benchmark(group="latency-spin-sweep")
@pytest.mark.parametrize("spin_us", SPIN_SWEEP_US)
def test_latency_spin_sweep(benchmark: Any, latency_root: Path, spin_us: int) -> None:
    _latency(
        benchmark,
        latency_root,
        "group",
        figure=f"latency-spin{spin_us}-p50",
        percentile="p50",
        title=SPIN_TITLE.format(p="p50", spin=spin_us),
        role="variant",
        spin_us=spin_us,
    )


def idle_run(directory: Path, spin_us: int) -> dict[str, float]:
    """CPU time of a consumer child with ``spin_us`` polling a silent topic for ``IDLE_S``."""
    directory.mkdir(parents=True, exist_ok=True)
    with tidelog.open(directory / "store", fsync="never") as store:
        store.create_topic(TOPIC, partitions=1, exist_ok=True)
    out = directory / "idle.out"
    args = [sys.executable, str(CHILD), "idle", str(directory / "store"), TOPIC]
    args += [str(int(IDLE_S * 1000)), str(out), str(spin_us)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE)
    try:
        lines = ChildLines(proc)
        lines.expect("ready")
        usage: dict[str, float] = json.loads(lines.expect("done", IDLE_S + STEP_TIMEOUT_S))
        if proc.wait(STEP_TIMEOUT_S) != 0:
            raise RuntimeError(f"the consumer process failed ({proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    out.unlink(missing_ok=True)
    return usage


@pytest.mark.benchmark(group="idle-cpu-spin")
@pytest.mark.parametrize("spin_us", [SPIN_ON_US, 0])
def test_idle_cpu_spin(benchmark: Any, latency_root: Path, spin_us: int) -> None:
    usage = benchmark.pedantic(
        lambda: idle_run(latency_root / f"idle-spin{spin_us}", spin_us),
        rounds=1,
        iterations=1,
        warmup_rounds=0,
    )
    cpu_ms = (usage["cpu_user_s"] + usage["cpu_sys_s"]) * 1000
    targets = [{"of": "value", "op": "<", "value": 50, "text": "< 50 ms (0.5% of a core)"}]
    record(
        benchmark,
        figure="idle-cpu-spin",
        title=f"CPU of a consumer (spin_us={spin_us}) polling an idle topic for {IDLE_S:g} s",
        role="tidelog" if spin_us else "reference",
        unit="ms",
        work=1,
        value=cpu_ms,
        what=f"poll(500, timeout) in a loop for {IDLE_S:g} s, nothing appended",
        targets=targets if spin_us else None,
        extra={"spin_us": spin_us, "consumer_usage": usage},
    )


@pytest.mark.benchmark(group="latency-breakdown")
def test_latency_doorbell_spin(benchmark: Any, latency_root: Path) -> None:
    _latency(
        benchmark,
        latency_root,
        "doorbell",
        figure="latency-doorbell-spin-p50",
        percentile="p50",
        title=f"p50 latency, append -> process in ticket/read_batch/wait(spin_us={SPIN_ON_US})",
        role="variant",
        spin_us=SPIN_ON_US,
    )
