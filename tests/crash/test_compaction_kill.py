"""SIGKILL during compaction leaves the old or the new segments, never a mix.

A child appends keyed messages to a compacted topic with small segments and compacts over
and over (some rounds with a fault injected into the cleaner's renames and writes); the
parent SIGKILLs it at a random moment. After every kill the store is reopened: no rewritten
file or swap manifest is left, ``tidelog verify`` passes, every record read is one the child
attempted (values per key rise with the offsets), and every key's newest value is at least
the last one the child reported as written. A second test has another process read and
append while the child compacts: every record it reads is the one written at that offset,
and the newest value of every key is always there.

Each value is ``b"<key index>:<counter>"`` with the counter rising per key, so the parent
can check the order and the newest values from the log alone.
"""

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

KEYS = 12

CHILD = r"""
import sys, tidelog, random
from tidelog import _core
path, start, fault = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(start)
if fault != "none":
    op, where, skip = fault.split(",")
    # The cleaner stops dead at that call (a panic unwinds without any cleanup of ours),
    # as if killed there; the process then waits for its SIGKILL.
    _core._inject_fault(op, path_contains=where, skip=int(skip), times=1, panic=True)
with tidelog.open(path) as store:
    topic = store.topic("c")
    counter = start
    while True:
        for _ in range(rng.randint(1, 40)):
            k = rng.randrange(NKEYS)
            counter += 1
            topic.append(b"%d:%d" % (k, counter) + b"x" * rng.randint(0, 300), key=b"k%d" % k)
            print(k, counter, flush=True)
        try:
            topic.compact()
        except BaseException as e:
            print("compact stopped:", type(e).__name__, file=sys.stderr, flush=True)
            import time
            time.sleep(1000)
""".replace("NKEYS", str(KEYS))


def parse(value: bytes) -> tuple[int, int]:
    k, c = value.split(b"x", 1)[0].split(b":")
    return int(k), int(c)


def check(path: Path, acked: dict[int, int]) -> int:
    """Reopens and checks the store; returns the highest counter in it."""
    part = path / "topics" / "c" / "0"
    names = [p.name for p in part.iterdir()]
    with tidelog.open(path) as store:
        topic = store.topic("c")
        names = [p.name for p in part.iterdir()]
        assert not [n for n in names if n.endswith(".cleaned") or n == "compaction.swap"], names
        last: dict[int, int] = {}
        prev = -1
        for m in topic.read(0, offset=topic.start_offset(0)):
            assert m.offset > prev
            prev = m.offset
            assert m.value is not None
            k, c = parse(m.value)
            assert m.key == b"k%d" % k
            assert c > last.get(k, -1), "values of a key rise with the offsets"
            last[k] = c
        for k, c in acked.items():
            assert last.get(k, -1) >= c, f"key {k}: newest {last.get(k)} older than acked {c}"
        latest = {k: parse(v) for k, v in topic.latest()}
        assert {int(k[1:]): c for k, (_, c) in latest.items()} == last
    verify = subprocess.run(
        [sys.executable, "-m", "tidelog", "--dir", str(path), "verify"],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return max(last.values(), default=0)


FAULTS = [
    "none",
    "none",
    "rename,.log,0",
    "rename,.index,0",
    "rename,compaction.swap,0",
    "write,.cleaned,1",
    "rename,cleaner.checkpoint,0",
]


def test_sigkill_during_compaction_leaves_old_or_new_segments(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
    rng = random.Random(os.getpid())
    counter = 0
    acked: dict[int, int] = {}
    rounds = 14
    for i in range(rounds):
        fault = FAULTS[i % len(FAULTS)]
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(counter), fault],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.05, 0.6) if fault == "none" else 1.5)
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL
        if fault != "none":
            assert "compact stopped" in err, err
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                k, c = map(int, parts)
                acked[k] = max(acked.get(k, -1), c)
        counter = max(check(path, acked), counter) + 1_000_000
    # The store compacted at all: fewer records than were appended survive.
    with tidelog.open(path) as store:
        topic = store.topic("c")
        kept = sum(1 for _ in topic.read(0, offset=topic.start_offset(0)))
        assert kept < topic.end_offset(0) - topic.start_offset(0)


READER = r"""
import sys, tidelog
path = sys.argv[1]
with tidelog.open(path) as store:
    topic = store.topic("c")
    n = 0
    for round in range(60):
        for i in range(50):
            n += 1
            topic.append(b"%d:%d" % (i % 7, n), key=b"k%d" % (i % 7))
        # Whole read from the start while the other process compacts.
        prev, last = -1, {}
        for m in topic.read(0, offset=topic.start_offset(0)):
            assert m.offset > prev, (m.offset, prev)
            prev = m.offset
            k, c = map(int, m.value.split(b":"))
            assert m.key == b"k%d" % k
            assert c > last.get(k, -1)
            last[k] = c
        newest = {k: max(j for j in range(1, n + 1) if (j - 1) % 50 % 7 == k) for k in last}
        assert last == newest, last
        assert len(last) == 7
print("ok", flush=True)
"""

COMPACTOR = r"""
import sys, tidelog
with tidelog.open(sys.argv[1]) as store:
    topic = store.topic("c")
    while True:
        topic.compact()
"""


def test_another_process_reads_and_appends_during_compaction(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
    compactor = subprocess.Popen([sys.executable, "-c", COMPACTOR, str(path)])
    try:
        reader = subprocess.run(
            [sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=300
        )
    finally:
        compactor.send_signal(signal.SIGKILL)
        compactor.wait()
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.strip() == "ok"
    with tidelog.open(path) as store:
        topic = store.topic("c")
        assert len(dict(topic.latest())) == 7
        assert topic.compact()["segments_before"] >= 0
