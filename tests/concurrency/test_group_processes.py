"""Consumer groups across real processes: one member is SIGKILLed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
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


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_survivors_take_over_a_killed_members_partitions(tmp_path: Path, delivery: str) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        topic = store.create_topic("jobs", partitions=6)
        for i in range(TOTAL):
            topic.append(b"%d" % i, partition=i % 6)
    outs = [tmp_path / f"member{i}.txt" for i in range(3)]
    members = [
        subprocess.Popen(
            [sys.executable, "-c", MEMBER, str(store_dir), delivery, str(out), "1.0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    for m in members:
        assert m.stdout is not None and m.stdout.readline().strip() == "joined"
    time.sleep(0.3)
    os.kill(members[0].pid, signal.SIGKILL)
    for m in members[1:]:
        assert m.wait(timeout=60) == 0
    members[0].wait()
    for m in members:
        assert m.stdout is not None
        m.stdout.close()
    seen: Counter[tuple[int, int]] = Counter()
    for out in outs:
        for line in out.read_text().splitlines():
            p, o = map(int, line.split())
            seen[(p, o)] += 1
    expected = {(i % 6, i // 6) for i in range(TOTAL)}
    if delivery == "at-least-once":
        assert set(seen) == expected, "every message processed at least once"
    else:
        assert all(count == 1 for count in seen.values()), "at-most-once: never twice"
        assert set(seen) <= expected
    with tidelog.open(store_dir) as store:
        survivors = store.groups()["workers"]["jobs"]
        assert survivors["members"] == {}, "everyone left or expired"
