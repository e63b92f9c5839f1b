"""Offset commits survive SIGKILL of the committing process (20 random kill rounds)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tidelog

pytestmark = pytest.mark.crash

COMMITTER = r"""
import sys, tidelog
with tidelog.open(sys.argv[1]) as store:
    consumer = store.consumer("t", group="g", lease_seconds=0.5)
    print("ready", flush=True)
    while True:
        messages = consumer.poll(max_messages=7, timeout=0.05)
        if not messages:
            continue
        consumer.commit()
        print(" ".join(f"{p}:{o}" for p, o in sorted(consumer.committed().items())), flush=True)
"""


def test_commits_survive_sigkill(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        topic = store.create_topic("t", partitions=2)
        for i in range(20_000):
            topic.append(b"%d" % i, partition=i % 2)
    rng = random.Random(7)
    last_acked: dict[int, int] = {}
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", COMMITTER, str(store_dir)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        # The kill lands while it commits, however slowly a loaded machine starts it.
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for line in child.stdout.read().splitlines():
            try:
                acked = {int(p): int(o) for p, o in (kv.split(":") for kv in line.split())}
            except ValueError:
                continue  # the kill cut this line short: that commit was not acknowledged
            last_acked.update(acked)
        child.stdout.close()
        with tidelog.open(store_dir) as store:
            consumer = store.consumer("t", group="check", start="latest")
            committed = store.groups()["g"]["t"]["committed"]
            consumer.close()
        for p, o in last_acked.items():
            assert committed.get(p, -1) >= o, f"acknowledged commit {p}:{o} lost: {committed}"
    assert last_acked, "the committer made progress"
