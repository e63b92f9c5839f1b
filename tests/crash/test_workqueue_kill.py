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
from tidelog.workqueue import WORK_QUEUES_TOPIC

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

# Acks everything it gets; prints "partition:offset:delivery_count" after each ack.
WORKER = r"""
import sys, tidelog
with tidelog.open(sys.argv[1]) as store:
    queue = store.work_queue("jobs", group="g", lock_timeout=0.5)
    idle = 0
    while idle < int(sys.argv[2]):
        job = queue.acquire(timeout=0.2)
        if job is None:
            idle += 1
            continue
        idle = 0
        queue.ack(job)
        print(f"{job.partition}:{job.offset}:{job.delivery_count}", flush=True)
"""


def _ack_records(store: tidelog.Store) -> Counter[tuple[int, int]]:
    """(partition, offset) -> how many ACK records the queue's log holds."""
    log = store.topic(WORK_QUEUES_TOPIC)
    acks: Counter[tuple[int, int]] = Counter()
    for p in range(log.partitions):
        for msg in log.read(p, 0):
            if msg.key == b"g\0jobs" and msg.value[0] == 2:
                acks[
                    (
                        int.from_bytes(msg.value[1:5], "little"),
                        int.from_bytes(msg.value[5:13], "little"),
                    )
                ] += 1
    return acks


def test_messages_of_a_killed_member_are_redelivered(tmp_path: Path) -> None:
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
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(store_dir), "10"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
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
    with tidelog.open(store_dir) as store:
        assert set(_ack_records(store).values()) == {1}
        with store.work_queue("jobs", group="g") as queue:
            stats = queue.stats()
            assert stats["acked"] == n and stats["backlog"] == 0 and stats["in_flight"] == 0
            assert {p["acked_below"] for p in stats["partitions"].values()} == {n // 2}


def test_acknowledgements_survive_sigkill(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        topic = store.create_topic("jobs", partitions=2)
        n = 40_000
        for i in range(n):
            topic.append(b"%d" % i, partition=i % 2)
    rng = random.Random(11)
    acked: set[tuple[int, int]] = set()
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(store_dir), "1000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        time.sleep(rng.uniform(0.1, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for line in child.stdout.read().splitlines():
            try:
                p, o, _ = (int(x) for x in line.split(":"))
            except ValueError:
                continue  # cut short by the kill
            acked.add((p, o))
        child.stdout.close()
        with tidelog.open(store_dir) as store:
            acks = _ack_records(store)
            assert set(acks.values()) <= {1}, "a message was acknowledged twice"
            assert acked <= set(acks), "an acknowledged message was lost"
            with store.work_queue("jobs", group="g", lock_timeout=0.5) as queue:
                stats = queue.stats()
                assert stats["acked"] == len(acks)
    assert acked, "the workers made progress"
    # Nothing unacknowledged was lost: draining the queue finishes every message exactly once.
    with tidelog.open(store_dir) as store:
        with store.work_queue("jobs", group="g", lock_timeout=0.5) as queue:
            while (job := queue.acquire(timeout=1.0)) is not None:
                queue.ack(job)
            assert queue.stats()["acked"] == n
        acks = _ack_records(store)
        assert set(acks) == {(i % 2, i // 2) for i in range(n)} and set(acks.values()) == {1}
