"""Work queues (issue #6): acquire + ack throughput, one member and four member processes, and
the size of a queue's state after 10,000,000 acknowledged messages, each next to a reference
measured in the same run.

* ``workqueue``: one member, ``for job in queue: job.value; queue.ack(job)`` over a partition
  of 100-byte messages (a new queue per round); the reference is a consumer-group member
  doing the same over the same data (``poll(500)``, reading every value, committing per poll):
  the stream way of consuming it, which needs no per-message state. Variant: the batch API
  (``acquire_many(1000)`` + ``ack_many``).
* ``workqueue-4-procs``: four member processes share one queue over the same partition; the
  figure is the total (all messages / time from the go until the last member exited, each
  member exiting as soon as it finds the queue drained). The reference is one member process
  in the same harness; the variant is four processes each draining a queue of its own (a
  quarter of the messages, nothing shared): what the machine allows four processes without
  any shared queue state. ``value_cpu`` is the messages per CPU-second of the members
  (their own CPU time from the go to their exit), which the machine's other load does not
  change: equal figures mean the members do not contend. Target (issue 14): 4 processes at
  least 2x one member.
* ``workqueue-state``: the bytes a queue's state takes on disk after 10,000,000 acknowledged
  messages, simulated with the range records four members would write (batches of 1,000
  acquired and acknowledged out of order, one message in 1,000 released and redelivered).
  The reference is every byte appended to the journal over the run: what the state would
  take without snapshots and compaction.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import tidelog
from tidelog.queue_journal import QueueJournal, queue_files
from tidelog.queue_state import ACK, ACQUIRE, RELEASE, Op

from benches.support import (
    BATCH_VALUES,
    SCALE,
    VALUE_BYTES,
    Measured,
    Unit,
    make_buffer,
    ns_per,
    record,
)

ROUNDS = max(3, SCALE.rounds // 3)
QUICK = SCALE.name == "quick"
#: Messages taken per round (all of the source partition).
MSGS = 50_000 if QUICK else 1_000_000
MEMBERS = 4
#: Messages of each of the separate queues' topics (the variant of the processes figure).
QUARTER = MSGS // BATCH_VALUES // MEMBERS * BATCH_VALUES
#: Acknowledged messages whose state size is measured.
STATE_MSGS = 200_000 if QUICK else 10_000_000
KIB = cast(Unit, "KiB")

ONE_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 300_000, "text": ">= 300,000 msgs/s"},
]
PROCS_TARGETS: list[dict[str, Any]] = [
    {"of": "ratio", "op": ">=", "value": 2.0, "text": "4 processes at least 2x one in total"},
]
STATE_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 1024, "text": "< 1 MiB after 10 M acks"},
]


@pytest.fixture(scope="module")
def store_dir(bench_root: Path) -> Iterator[Path]:
    """A store (fsync "never") holding the partition every round takes."""
    path = bench_root / "workqueue-store"
    with tidelog.open(path, fsync="never") as s:
        topic = s.create_topic("source", partitions=1)
        buffer, lengths = make_buffer()
        for _ in range(MSGS // BATCH_VALUES):
            topic.append_batch(buffer, lengths=lengths, partition=0)
        for q in range(MEMBERS):
            topic = s.create_topic(f"quarter-{q}", partitions=1)
            for _ in range(QUARTER // BATCH_VALUES):
                topic.append_batch(buffer, lengths=lengths, partition=0)
    yield path


class Rounds:
    """Per round, a new queue (or group) name, so each round takes every message."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"


def _run(benchmark: Any, target: Callable[..., Any], setup: Callable[[], Any]) -> dict[str, float]:
    measured = Measured(target)
    benchmark.pedantic(measured, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    return measured.per_call()


# --------------------------------------------------------------------------- one member


def iterate_and_ack(queue: tidelog.WorkQueue, n: int) -> None:
    """``for job in queue: job.value; queue.ack(job)`` until ``n`` jobs were acked."""
    ack = queue.ack
    for got, job in enumerate(queue, 1):
        job.value  # noqa: B018 - the access is what an application does
        ack(job)
        if got == n:
            break
    queue.close()
    assert queue.acks_lost == 0


def batches_and_ack_many(queue: tidelog.WorkQueue, n: int) -> None:
    """``acquire_many(1000)`` + ``ack_many`` until ``n`` jobs were acked."""
    got = 0
    while got < n:
        jobs = queue.acquire_many(1000, timeout=0)
        for job in jobs:
            job.value  # noqa: B018
        queue.ack_many(jobs)
        got += len(jobs)
    queue.close()


def consume_and_commit(consumer: tidelog.Consumer, n: int) -> None:
    """A consumer-group member reading every value, committing per poll."""
    got = 0
    while got < n:
        for m in consumer.poll(500):
            m.value  # noqa: B018
            got += 1
    consumer.close()


WHAT = f"{MSGS:,} msgs of {VALUE_BYTES} B per round, a new queue per round, fsync never"


@pytest.mark.benchmark(group="workqueue")
def test_workqueue_iterate_tidelog(benchmark: Any, store_dir: Path) -> None:
    names = Rounds("iter")
    with tidelog.open(store_dir) as store:

        def setup() -> Any:
            return (store.work_queue("source", group=names.next()), MSGS), {}

        usage = _run(benchmark, iterate_and_ack, setup)
        stats = store.stats()["work_queues"]["iter-1"]["source"]
        assert stats["acked"] == MSGS and stats["lag"] == 0
    record(
        benchmark,
        figure="workqueue",
        title="work queue, 1 member: for job in queue + ack(job)",
        role="tidelog",
        unit="msgs/s",
        work=MSGS,
        what=WHAT,
        targets=ONE_TARGETS,
        extra={"ns_per_msg": ns_per(benchmark, MSGS), **usage},
    )


@pytest.mark.benchmark(group="workqueue")
def test_workqueue_iterate_reference(benchmark: Any, store_dir: Path) -> None:
    names = Rounds("group")
    with tidelog.open(store_dir) as store:

        def setup() -> Any:
            consumer = store.consumer("source", group=names.next(), max_poll_messages=500)
            return (consumer, MSGS), {}

        usage = _run(benchmark, consume_and_commit, setup)
    record(
        benchmark,
        figure="workqueue",
        title="consumer group, 1 member: poll(500) + commit per poll",
        role="reference",
        unit="msgs/s",
        work=MSGS,
        what=f"{MSGS:,} msgs of {VALUE_BYTES} B per round, a new group per round",
        extra={"ns_per_msg": ns_per(benchmark, MSGS), **usage},
    )


@pytest.mark.benchmark(group="workqueue")
def test_workqueue_batch_variant(benchmark: Any, store_dir: Path) -> None:
    names = Rounds("many")
    with tidelog.open(store_dir) as store:

        def setup() -> Any:
            return (store.work_queue("source", group=names.next()), MSGS), {}

        usage = _run(benchmark, batches_and_ack_many, setup)
    record(
        benchmark,
        figure="workqueue",
        title="work queue, 1 member: acquire_many(1000) + ack_many",
        role="variant",
        unit="msgs/s",
        work=MSGS,
        what=WHAT,
        extra={"ns_per_msg": ns_per(benchmark, MSGS), **usage},
    )


# --------------------------------------------------------------------------- processes

# A member process: joins the queue on topic argv[3], says "ready", waits for "go", takes jobs
# until it finds none available (the queue is drained: every job left is held by another
# member, and none is ever released here), prints how many it acknowledged and the CPU
# seconds it used since the go (the store closed too: all of its work).
MEMBER = r"""
import sys, time, tidelog
store = tidelog.open(sys.argv[1])
queue = store.work_queue(sys.argv[3], group=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
cpu = time.process_time()
n = 0
ack = queue.ack
for job in queue.jobs(idle_timeout=0):
    job.value
    ack(job)
    n += 1
queue.close()
store.close()
print(n, time.process_time() - cpu, flush=True)
"""


def start_members(
    store_dir: Path, group: str, count: int, *, separate: bool = False
) -> list[subprocess.Popen[str]]:
    """``count`` member processes, joined and waiting for the go.

    With ``separate``, each on a queue of its own (topic ``quarter-<i>``).
    """
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                MEMBER,
                str(store_dir),
                group,
                f"quarter-{i}" if separate else "source",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    return procs


def go_and_wait(procs: list[subprocess.Popen[str]], n: int, cpu: list[float]) -> None:
    """Starts the members and waits until they drained the queue and exited.

    Appends the members' CPU seconds (summed) to ``cpu``.
    """
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    total, seconds = 0, 0.0
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0
        acked, used = out.split()
        total += int(acked)
        seconds += float(used)
    assert total == n, f"{total} acknowledged, expected {n}"
    cpu.append(seconds)


def _processes(
    benchmark: Any, store_dir: Path, count: int, prefix: str, *, separate: bool = False
) -> dict[str, float]:
    names = Rounds(prefix)
    n = QUARTER * count if separate else MSGS
    cpu: list[float] = []
    usage = _run(
        benchmark,
        go_and_wait,
        lambda: ((start_members(store_dir, names.next(), count, separate=separate), n, cpu), {}),
    )
    # The work is done by the member processes: their CPU time, not this process's (the
    # warmup round's left out).
    member_cpu = statistics.median(cpu[-ROUNDS:])
    usage["per_round_cpu_s_median"] = member_cpu
    return {"member_cpu_ns_per_msg": member_cpu / n * 1e9, **usage}


@pytest.mark.benchmark(group="workqueue-4-procs")
def test_workqueue_processes_tidelog(benchmark: Any, store_dir: Path) -> None:
    extra = _processes(benchmark, store_dir, MEMBERS, "procs4")
    record(
        benchmark,
        figure="workqueue-4-procs",
        title=f"work queue, {MEMBERS} member processes: jobs() + ack(job), total",
        role="tidelog",
        unit="msgs/s",
        work=MSGS,
        what=f"{MSGS:,} msgs of {VALUE_BYTES} B shared by {MEMBERS} processes per round "
        "(timed from the go to the last exit; value_cpu: msgs per member CPU-second)",
        targets=PROCS_TARGETS,
        extra=extra,
    )


@pytest.mark.benchmark(group="workqueue-4-procs")
def test_workqueue_processes_reference(benchmark: Any, store_dir: Path) -> None:
    extra = _processes(benchmark, store_dir, 1, "procs1")
    record(
        benchmark,
        figure="workqueue-4-procs",
        title="work queue, 1 member process: jobs() + ack(job)",
        role="reference",
        unit="msgs/s",
        work=MSGS,
        what=f"{MSGS:,} msgs of {VALUE_BYTES} B, one process per round (same harness)",
        extra=extra,
    )


@pytest.mark.benchmark(group="workqueue-4-procs")
def test_workqueue_processes_separate_queues(benchmark: Any, store_dir: Path) -> None:
    extra = _processes(benchmark, store_dir, MEMBERS, "separate4", separate=True)
    record(
        benchmark,
        figure="workqueue-4-procs",
        title=f"{MEMBERS} processes, each draining a queue of its own (nothing shared)",
        role="variant",
        unit="msgs/s",
        work=QUARTER * MEMBERS,
        what=f"{QUARTER:,} msgs of {VALUE_BYTES} B per process, {MEMBERS} queues per "
        "round (same harness): the ceiling without any shared queue state",
        extra=extra,
    )


# --------------------------------------------------------------------------- state size


def simulate_acks(journal: QueueJournal, n: int, seed: int = 6) -> int:
    """Writes the records of ``n`` messages acquired and acknowledged by four members.

    Batches of 1,000 are acquired in turn by four members and each batch is acknowledged in
    two runs, the later half first; one message in 1,000 is released and acknowledged with
    the next batch (a redelivery). Returns the bytes appended to the journal.
    """
    rng = random.Random(seed)
    members = [f"member-{i}" for i in range(MEMBERS)]
    written = journal.bytes_written
    start = 0
    redeliver: list[int] = []
    expires = int(time.time() * 1000) + 30_000
    while start < n:
        member = members[(start // 1000) % MEMBERS]
        end = min(n, start + 1000)
        with journal.locked():
            ops: list[Op] = [(ACQUIRE, 0, start, end, expires, 1)]
            ops += [(ACQUIRE, 0, o, o + 1, expires, 2) for o in redeliver]
            journal.write(member, ops)
        mid = (start + end) // 2
        retry = rng.randrange(start, end)
        acks: list[Op] = [(ACK, 0, o, o + 1, 0, 0) for o in redeliver]
        acks += [(ACK, 0, mid, end, 0, 0)]
        acks += [(ACK, 0, start, retry, 0, 0), (RELEASE, 0, retry, retry + 1, 0, 1)]
        acks += [(ACK, 0, retry + 1, mid, 0, 0)] if retry + 1 < mid else []
        redeliver = [retry] if retry < mid else []
        if retry >= mid:  # the release fell in the already-acked half: nothing to redo
            acks = [op for op in acks if op[0] != RELEASE]
        with journal.locked():
            journal.write(member, acks)
        start = end
    if redeliver:
        with journal.locked():
            journal.write(members[0], [(ACQUIRE, 0, redeliver[0], redeliver[0] + 1, expires, 2)])
            journal.write(members[0], [(ACK, 0, redeliver[0], redeliver[0] + 1, 0, 0)])
    return journal.bytes_written - written


@pytest.mark.benchmark(group="workqueue-state")
def test_workqueue_state_size(benchmark: Any, bench_root: Path) -> None:
    sizes: list[int] = []
    appended: list[int] = []
    runs = Rounds("state")

    def one_run() -> None:
        files = queue_files(bench_root / "workqueue-state", "source", runs.next())
        journal = QueueJournal(files, 1)
        appended.append(simulate_acks(journal, STATE_MSGS))
        journal.close()
        sizes.append(files.size_bytes())
        state = QueueJournal(files, 1).state
        assert state.acked == STATE_MSGS and state.partitions[0].acked_below == STATE_MSGS

    benchmark.pedantic(one_run, rounds=1, warmup_rounds=0)
    record(
        benchmark,
        figure="workqueue-state",
        title=f"work queue state on disk after {STATE_MSGS:,} acks (snapshot + journal)",
        role="tidelog",
        unit=KIB,
        work=STATE_MSGS,
        value=sizes[-1] / 1024,
        what=f"{STATE_MSGS:,} acks by 4 simulated members in batches of 1,000",
        targets=STATE_TARGETS,
        extra={"state_bytes": sizes[-1], "journal_bytes_appended": appended[-1]},
    )
    benchmark.extra_info["reference_bytes"] = appended[-1]


@pytest.mark.benchmark(group="workqueue-state")
def test_workqueue_state_size_reference(benchmark: Any, bench_root: Path) -> None:
    appended: list[int] = []
    runs = Rounds("state-ref")

    def one_run() -> None:
        files = queue_files(bench_root / "workqueue-state", "source", runs.next())
        journal = QueueJournal(files, 1)
        journal.compact = lambda: None  # type: ignore[method-assign]  # never compact
        appended.append(simulate_acks(journal, STATE_MSGS))
        journal.close()

    benchmark.pedantic(one_run, rounds=1, warmup_rounds=0)
    record(
        benchmark,
        figure="workqueue-state",
        title="the same journal never compacted (every record kept)",
        role="reference",
        unit=KIB,
        work=STATE_MSGS,
        value=appended[-1] / 1024,
        what=f"{STATE_MSGS:,} acks by 4 simulated members in batches of 1,000",
    )
