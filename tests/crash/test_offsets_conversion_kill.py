"""Converting a store's version 1 and 2 commit records survives SIGKILL (issue 14): a process
converting them is killed at random points, again and again; every reopen gives the same
offsets, and the last one finds the offsets topic converted and compacted.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tidelog
from tidelog import _core

pytestmark = pytest.mark.crash

OFFSETS = "__consumer_offsets"
GROUPS = 1500
PARTITIONS = 6

#: Opens the offsets table (which converts), saying when it starts.
CONVERTER = r"""
import sys, tidelog
from tidelog import _core
with tidelog.open(sys.argv[1], cleaner_interval_ms=None) as store:
    print("open", flush=True)
    _core.OffsetTable(store.native)
    print("done", flush=True)
"""


def _v2(incarnation: int, entries: dict[int, int]) -> bytes:
    out = struct.pack("<HqQI", 2, 3, incarnation, len(entries))
    return out + b"".join(struct.pack("<IqH", p, o, 0) for p, o in entries.items())


def _legacy_store(path: Path) -> dict[str, dict[int, int]]:
    """A store as the previous version left it; returns each group's newest commits."""
    expected: dict[str, dict[int, int]] = {}
    with tidelog.open(path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("t", partitions=PARTITIONS)
        for p in range(PARTITIONS):
            topic.append_batch([b"x"] * 100, partition=p)
        incarnation = topic.incarnation
        offsets = store.native.create_topic(OFFSETS, 8, exist_ok=True, internal=True)
        rng = random.Random(3)
        for g in range(GROUPS):
            group = f"group-{g}"
            partition = _core.partition_for_key(group.encode(), 8)
            newest = expected.setdefault(group, {})
            for _ in range(3):
                entries = {p: rng.randrange(1, 101) for p in rng.sample(range(PARTITIONS), 2)}
                offsets.append(
                    _v2(incarnation, entries), key=f"{group}\0t".encode(), partition=partition
                )
                newest.update(entries)
    return expected


def _committed(path: Path) -> tuple[dict[str, dict[int, int]], str]:
    with tidelog.open(path, cleaner_interval_ms=None) as store:
        table = _core.OffsetTable(store.native)
        incarnation = store.native.topic("t").incarnation
        got = {
            g: {p: o for p, (o, _, _) in table.committed(g, "t", incarnation).items()}
            for g, _ in table.groups()
        }
        return got, str(store.native.topic(OFFSETS).config["cleanup_policy"])


def test_a_conversion_killed_anywhere_reopens_to_the_same_offsets(tmp_path: Path) -> None:
    template = tmp_path / "template"
    expected = _legacy_store(template)
    rng = random.Random(11)
    for round_ in range(6):
        path = tmp_path / f"round-{round_}"
        shutil.copytree(template, path)
        # Killed twice (the second conversion resumes what the first left), then reopened.
        for _ in range(2):
            child = subprocess.Popen(
                [sys.executable, "-c", CONVERTER, str(path)], stdout=subprocess.PIPE, text=True
            )
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "open"
            time.sleep(rng.uniform(0.0, 0.1))
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
        got, policy = _committed(path)
        assert got == expected, f"round {round_}"
        assert policy == "compact"
        with tidelog.open(path, cleaner_interval_ms=None) as store:
            store.native.topic(OFFSETS).compact()
        got, _ = _committed(path)
        assert got == expected, f"round {round_}, compacted"
        shutil.rmtree(path)
