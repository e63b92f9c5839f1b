"""Consumer-group membership kept by the core, across real processes (issue 14, item 3).

Several processes join and leave one group at once: every membership change takes the next
generation (the journal's records grow one by one, never repeat), and the members converge on
one generation and a split of the partitions. A member killed with SIGKILL loses its
partitions once its lease runs out, and its lease slot is freed.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tidelog
from tidelog import _core
from tidelog.groups import read_state

PARTITIONS = 6

MEMBER = r"""
import json, os, sys, time, tidelog
store_dir, rounds, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with tidelog.open(store_dir) as store:
    seen = []
    for _ in range(rounds):
        with store.consumer("t", group="g", lease_seconds=5.0) as c:
            seen.append(c._membership.generation)
            c.poll(timeout=0)
    c = store.consumer("t", group="g", lease_seconds=5.0)
    seen.append(c._membership.generation)
    print("joined", flush=True)
    # Poll (heartbeats pick up rebalances) until the parent says every member is in.
    while not os.path.exists(go):
        c.poll(timeout=0.05)
    deadline = time.monotonic() + 10
    while c._membership.current_generation() != c._membership.generation:
        c.poll(timeout=0.05)
        assert time.monotonic() < deadline
    print(json.dumps({"seen": seen, "generation": c._membership.generation,
                      "assignment": c.assignment()}), flush=True)
    sys.stdin.readline()  # the parent has read every report
    c.close()
"""


def test_concurrent_joins_converge_with_strictly_increasing_generations(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        store.create_topic("t", partitions=PARTITIONS)
    go = tmp_path / "go"
    rounds, count = 5, 4
    members = [
        subprocess.Popen(
            [sys.executable, "-c", MEMBER, str(store_dir), str(rounds), str(go)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for m in members:
            assert m.stdout is not None and m.stdout.readline().strip() == "joined"
        go.touch()
        reports = []
        for m in members:
            assert m.stdout is not None
            reports.append(json.loads(m.stdout.readline()))
        for m in members:
            assert m.stdin is not None
            m.stdin.write("\n")
            m.stdin.flush()
        for m in members:
            assert m.wait(timeout=60) == 0
    finally:
        for m in members:
            if m.poll() is None:
                m.kill()
                m.wait()
            for pipe in (m.stdin, m.stdout):
                if pipe is not None:
                    pipe.close()
    # Converged: one generation, every partition owned by exactly one member.
    assert len({r["generation"] for r in reports}) == 1
    owned = sorted(p for r in reports for p in r["assignment"])
    assert owned == list(range(PARTITIONS))
    for r in reports:
        assert r["seen"] == sorted(r["seen"]), "a member's generations never go back"
        assert len(set(r["seen"])) == len(r["seen"]), "each of its joins was a new generation"
    # Every change a generation of its own, one above the last: no two writers ever took the
    # same generation, and none went back.
    log = _core.read_state_log(store_dir / "groups" / "t", "g")
    assert log is not None
    generations = [struct.unpack_from("<Q", r)[0] for r in log[2]]
    assert generations == list(range(1, len(generations) + 1))
    # At least each join and leave (members judged dead and rejoining add more).
    assert len(generations) >= 2 * count * (rounds + 1)
    state = read_state(str(store_dir), "t", "g")
    assert (state.generation, state.members) == (generations[-1], {})


KILLED = r"""
import sys, time, tidelog
with tidelog.open(sys.argv[1]) as store:
    c = store.consumer("t", group="g", lease_seconds=float(sys.argv[2]))
    print(c._membership.generation, flush=True)
    while True:
        c.poll(timeout=0.05)
"""


@pytest.mark.crash
def test_a_killed_member_loses_its_partitions_once_its_lease_expires(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    lease = 0.6
    with tidelog.open(store_dir) as store:
        store.create_topic("t", partitions=PARTITIONS)
        survivor = store.consumer("t", group="g", lease_seconds=lease)
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED, str(store_dir), str(lease)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            joined = int(child.stdout.readline())
            deadline = time.monotonic() + 10
            while survivor._membership.generation < joined:
                survivor.poll(timeout=0.05)
                assert time.monotonic() < deadline
            assert len(survivor.assignment()) == PARTITIONS // 2
            group = survivor._membership._group
            assert len(group.leases()) == 2
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL
            killed_at = time.monotonic()
            while survivor.assignment() != list(range(PARTITIONS)):
                survivor.poll(timeout=0.05)
                assert time.monotonic() < killed_at + 15, "the partitions never came back"
            state = read_state(str(store_dir), "t", "g")
            assert list(state.members) == [survivor._membership.member_id]
            assert [(s, i) for s, i, _ in group.leases()] == [survivor._membership._lease], (
                "the dead member's lease slot was freed"
            )
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
        survivor.close()
