"""Work queues across SIGKILL: held messages are redelivered, acks survive (20 rounds)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import tidelog
from tidelog.queue_journal import COMPACT_BYTES, queue_files, read_state
from tidelog.queue_state import QueueState

pytestmark = pytest.mark.crash

# Acquires messages and holds them forever (until SIGKILL).
HOLDER = r"""
import sys, time, tidelog
with tidelog.open(sys.argv[1]) as store:
    queue = store.work_queue("jobs", group="g", lock_timeout=0.5)
    for _ in range(int(sys.argv[2])):
        job = queue.acquire(timeout=5)
        print(f"{job.partition}:{job.offset}", flush=True)
    print("held", flush=True)
    time.sleep(60)
"""

# Acks everything it gets and prints "partition:offset:delivery_count" once the ack is durable.
# Mode "one": acquire() + ack() (a batch of one: the ack is written before ack returns).
# Mode "many": acquire_many(50) + ack() each (buffered; the batch's last ack writes them all).
WORKER = r"""
import sys, tidelog
with tidelog.open(sys.argv[1]) as store:
    queue = store.work_queue("jobs", group="g", lock_timeout=0.5)
    idle, mode = 0, sys.argv[3]
    while idle < int(sys.argv[2]):
        if mode == "one":
            job = queue.acquire(timeout=0.2)
            jobs = [] if job is None else [job]
        else:
            jobs = queue.acquire_many(50, timeout=0.2)
        if not jobs:
            idle += 1
            continue
        idle = 0
        for job in jobs:
            queue.ack(job)
        print("\n".join(f"{j.partition}:{j.offset}:{j.delivery_count}" for j in jobs), flush=True)
"""


def _state(store_dir: Path) -> QueueState:
    state = read_state(queue_files(store_dir, "jobs", "g"), 2)
    assert state is not None
    return state


def _worker(store_dir: Path, idle_rounds: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(store_dir), str(idle_rounds), mode],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_messages_of_a_killed_member_are_redelivered(tmp_path: Path) -> None:
    """Three member processes; one is SIGKILLed holding messages."""
    store_dir = tmp_path / "store"
    n = 300
    with tidelog.open(store_dir) as store:
        topic = store.create_topic("jobs", partitions=2)
        for i in range(n):
            topic.append(b"%d" % i, partition=i % 2)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store_dir), "5"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    held = set()
    for line in holder.stdout:
        if line.strip() == "held":
            break
        part, off = line.split(":")
        held.add((int(part), int(off)))
    assert len(held) == 5
    workers = [_worker(store_dir, 10, mode) for mode in ("one", "many")]
    time.sleep(0.1)
    os.kill(holder.pid, signal.SIGKILL)  # dies holding 5 messages
    holder.wait()
    holder.stdout.close()
    acked: Counter[tuple[int, int]] = Counter()
    counts: dict[tuple[int, int], int] = {}
    for w in workers:
        out, _ = w.communicate(timeout=30)
        assert w.returncode == 0
        for line in out.splitlines():
            p, o, c = (int(x) for x in line.split(":"))
            acked[(p, o)] += 1
            counts[(p, o)] = c
    expected = {(i % 2, i // 2) for i in range(n)}
    assert set(acked) == expected and set(acked.values()) == {1}
    for key in held:
        assert counts[key] == 2, f"{key} was redelivered after the lock timeout"
    state = _state(store_dir)
    assert state.acked == n and state.dead_lettered == state.archived == state.skipped == 0
    assert [p.acked_below for p in state.partitions] == [n // 2, n // 2]
    assert not any(p.leases or p.done for p in state.partitions)


def test_acknowledgements_survive_sigkill(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        topic = store.create_topic("jobs", partitions=2)
        n = 40_000
        for i in range(n):
            topic.append(b"%d" % i, partition=i % 2)
    rng = random.Random(11)
    acked: set[tuple[int, int]] = set()
    for round_ in range(20):
        child = _worker(store_dir, 1000, "one" if round_ % 2 else "many")
        assert child.stdout is not None
        time.sleep(rng.uniform(0.1, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for line in child.stdout.read().splitlines():
            try:
                p, o, _ = (int(x) for x in line.split(":"))
            except ValueError:
                continue  # cut short by the kill
            # Printed once durable: a message acknowledged before is never delivered again.
            assert (p, o) not in acked, f"{(p, o)} was delivered again after its ack"
            acked.add((p, o))
        child.stdout.close()
        if not acked and not queue_files(store_dir, "jobs", "g").lock.exists():
            continue  # killed before it joined the queue (a slow start on a loaded machine)
        state = _state(store_dir)
        lost = [k for k in acked if not state.partitions[k[0]].finished(k[1])]
        assert not lost, f"acknowledged messages were lost: {lost[:5]}"
        finished = sum(p.acked_below + p.done_count() for p in state.partitions)
        assert state.acked == finished, "every finished message was acknowledged once"
    assert acked, "the workers made progress"
    # Nothing unacknowledged was lost: draining the queue finishes every message exactly once.
    with (
        tidelog.open(store_dir) as store,
        store.work_queue("jobs", group="g", lock_timeout=0.5) as queue,
    ):
        while jobs := queue.acquire_many(500, timeout=1.0):
            for job in jobs:
                assert (job.partition, job.offset) not in acked
            queue.ack_many(jobs)
    state = _state(store_dir)
    assert state.acked == n and [p.acked_below for p in state.partitions] == [n // 2, n // 2]
    # The journal was compacted into snapshots along the way (SIGKILLs included).
    files = queue_files(store_dir, "jobs", "g")
    assert files.snapshot.exists() and files.size_bytes() < 4 * COMPACT_BYTES
