"""Consumer groups across real processes: one member is SIGKILLed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import tidelog

MEMBER = r"""
import sys, time, tidelog
store_dir, delivery, out_path, lease = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
with tidelog.open(store_dir) as store, open(out_path, "a", buffering=1) as out:
    consumer = store.consumer("jobs", group="workers", delivery=delivery, lease_seconds=lease,
                              max_poll_messages=20)
    print("joined", flush=True)
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 2.0:
        messages = consumer.poll(timeout=0.2)
        if messages:
            idle_since = time.monotonic()
        for m in messages:
            out.write(f"{m.partition} {m.offset}\n")
            time.sleep(0.002)  # slow work, so the kill lands mid-stream
    consumer.close()
"""

TOTAL = 600


def run_three_kill_one(
    tmp_path: Path, args: Callable[[Path, int], list[str]], ready: str, timeout: float
) -> Counter[tuple[int, int]]:
    """Runs three member processes (``python -c`` with ``args(out, i)``: each writes the
    ``partition offset`` of what it handed out to ``out`` and prints ``ready`` once
    started), SIGKILLs the first 0.3 s later, waits for the others to end cleanly, and
    returns how many times each message was handed out."""
    outs = [tmp_path / f"member{i}.txt" for i in range(3)]
    members = [
        subprocess.Popen([sys.executable, "-c", *args(out, i)], stdout=subprocess.PIPE, text=True)
        for i, out in enumerate(outs)
    ]
    for m in members:
        assert m.stdout is not None and m.stdout.readline().strip() == ready
    time.sleep(0.3)
    os.kill(members[0].pid, signal.SIGKILL)
    for m in members[1:]:
        assert m.wait(timeout=timeout) == 0
    members[0].wait()
    for m in members:
        assert m.stdout is not None
        m.stdout.close()
    seen: Counter[tuple[int, int]] = Counter()
    for out in outs:
        for line in out.read_text().splitlines():
            p, o = map(int, line.split())
            seen[(p, o)] += 1
    return seen


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_survivors_take_over_a_killed_members_partitions(tmp_path: Path, delivery: str) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        topic = store.create_topic("jobs", partitions=6)
        for i in range(TOTAL):
            topic.append(b"%d" % i, partition=i % 6)
    seen = run_three_kill_one(
        tmp_path, lambda out, _: [MEMBER, str(store_dir), delivery, str(out), "1.0"], "joined", 60
    )
    expected = {(i % 6, i // 6) for i in range(TOTAL)}
    if delivery == "at-least-once":
        assert set(seen) == expected, "every message processed at least once"
    else:
        assert all(count == 1 for count in seen.values()), "at-most-once: never twice"
        assert set(seen) <= expected
    with tidelog.open(store_dir) as store:
        survivors = store.groups()["workers"]["jobs"]
        assert survivors["members"] == {}, "everyone left or expired"


HOLDER = r"""
import sys, tidelog
store_dir = sys.argv[1]
with tidelog.open(store_dir) as store:
    consumer = store.consumer("jobs", group="workers", delivery="at-most-once", lease_seconds=60)
    it = iter(consumer)
    m = next(it)  # fetches (and commits past) every partition's messages, hands out one
    print(m.partition, m.offset, flush=True)
    print("held", flush=True)
    command = sys.stdin.readline().split()  # another member took a partition meanwhile
    if command[0] == "pause":
        consumer.pause(int(command[1]))
        while consumer.ready_messages:
            m = next(it)
            print(m.partition, m.offset, flush=True)
    consumer.close()
    print("closed", flush=True)
"""


@pytest.mark.parametrize("stop", ["close", "pause"])
def test_at_most_once_holder_in_another_process_gives_back_after_an_unseen_takeover(
    tmp_path: Path, stop: str
) -> None:
    """A member in another process holds fetched, committed-past messages when a member
    here takes one of its partitions; it has not polled since when it closes (or pauses that
    partition, hands out the rest and closes): what it never handed out goes to the member
    here, so every message goes out exactly once between them."""
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        topic = store.create_topic("jobs", partitions=2)
        for i in range(20):
            topic.append(b"%d" % i, partition=i % 2)
        with subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(store_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            assert holder.stdout is not None
            lines = []
            while (line := holder.stdout.readline().strip()) != "held":
                lines.append(line)
            member = store.consumer("jobs", group="workers", delivery="at-most-once")
            (moved,) = member.assignment()
            out, _ = holder.communicate(f"{stop} {moved}\n", timeout=60)
        assert holder.returncode == 0
        lines += out.splitlines()
        assert lines.pop() == "closed"
        handed = [tuple(map(int, line.split())) for line in lines]
        while got := member.poll(max_messages=100, timeout=0):
            handed += [(m.partition, m.offset) for m in got]
        member.close()
    assert sorted(handed) == [(p, o) for p in (0, 1) for o in range(10)]


CHURNER = r"""
import random, sys, time, tidelog
store_dir, out_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
with tidelog.open(store_dir) as store, open(out_path, "a", buffering=1) as out:
    def member():
        return store.consumer("jobs", group="workers", delivery="at-most-once",
                              lease_seconds=1.0, max_poll_messages=rng.randint(2, 10))
    def take(consumer, most):
        global idle_since
        for _ in range(most):
            m = consumer.next_nowait()
            if m is None:
                return
            idle_since = time.monotonic()
            out.write(f"{m.partition} {m.offset}\n")
    print("started", flush=True)
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 2.0:
        first = member()
        take(first, rng.randint(1, 8))
        second = member() if rng.random() < 0.7 else None  # a takeover first has not seen
        if second is not None and rng.random() < 0.5:
            take(second, 1 + len(second.ready_messages or ()))  # claims, hands out a fetch
        assigned = first.assignment()
        if assigned and rng.random() < 0.5:
            first.pause(rng.choice(assigned))
        first.close()
        if second is not None:
            take(second, rng.randint(0, 8))
            second.close()
"""


def test_at_most_once_members_that_stop_holding_messages_survive_a_kill(tmp_path: Path) -> None:
    """In three processes members join, hand out part of a fetch, often see a second member
    take partitions over (and sometimes hand out a fetch of them), pause or not, and close,
    again and again, so their give-backs race the others' claims of the partitions (under
    the group's lock, a file lock across processes); one process is SIGKILLed mid-stream,
    maybe holding the lock or between a give-back and its close. No message goes out
    twice."""
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        topic = store.create_topic("jobs", partitions=4)
        for i in range(TOTAL):
            topic.append(b"%d" % i, partition=i % 4)
    seen = run_three_kill_one(
        tmp_path, lambda out, seed: [CHURNER, str(store_dir), str(out), str(seed)], "started", 120
    )
    assert [m for m, count in seen.items() if count > 1] == [], "at-most-once: never twice"
    assert set(seen) <= {(i % 4, i // 4) for i in range(TOTAL)}
