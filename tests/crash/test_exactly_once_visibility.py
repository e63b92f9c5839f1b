"""Exactly-once commits killed at every durable step: the committed offset is never visible
before the transaction's outputs.

A transaction's commit decides it (durably), then writes a commit marker to every partition
it touched, one after the other: the output partitions and the ``__consumer_offsets``
partition holding the group's new offsets. A process killed between two markers leaves the
transaction decided but half marked until the producer's next instance (or any process,
through ``abort_orphaned_transactions``) finishes it. Meanwhile the group's committed offset
must not be visible while the outputs are not: another member would resume after inputs
whose outputs nobody can read yet (issue 13, item 8).

With ``fsync="always"`` every step of the commit ends in an fsync or fdatasync, so strace
kills the child as it enters the ``k``-th one, for every ``k`` until the child gets through.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tidelog
from test_kill_writer import strace_works

pytestmark = pytest.mark.crash

CHILD = r"""
import signal, sys, tidelog
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
with tidelog.open(sys.argv[1], fsync="always") as store:
    consumer = store.consumer("in", group="xform", delivery="exactly-once", lease_seconds=0.3)
    producer = store.producer(name="xform", linger_ms=0)
    msgs = consumer.poll(max_messages=3, timeout=5)
    assert [m.offset for m in msgs] == [0, 1, 2], msgs
    with store.transaction(producer, consumer) as tx:
        for m in msgs:
            tx.send("out", m.value + b":a", partition=0)
            tx.send("out", m.value + b":b", partition=1)
    print("committed", flush=True)
    consumer.close()
    producer.close()
"""


def committed_offsets(store: tidelog.Store) -> dict[int, int]:
    topics = store.groups().get("xform")
    info = topics.get("in") if topics is not None else None
    return dict(info["committed"]) if info is not None else {}


def outputs(store: tidelog.Store) -> list[list[bytes]]:
    out = store.topic("out")
    return [[(m.value or b"") for m in out.read(p)] for p in range(out.partitions)]


def check_kill_point(
    tmp_path: Path,
    template: Path,
    syscall: str,
    path: str | None,
    k: int,
    done: list[list[bytes]],
    states: set[str],
) -> bool:
    """Runs the child until strace kills it entering its ``k``-th ``syscall`` (on
    ``path`` in the store, if given), then checks the store; returns whether the child got
    through instead."""
    store_dir = tmp_path / f"store-{syscall}-{k}"
    shutil.rmtree(store_dir, ignore_errors=True)
    shutil.copytree(template, store_dir)
    inject = f"inject={syscall}:signal=SIGKILL:when={k}"
    only = ["-P", str(store_dir / path)] if path else []
    child = subprocess.run(
        [
            *("strace", "-f", "-o", "/dev/null", *only, "-e", f"trace={syscall}", "-e", inject),
            *(sys.executable, "-c", CHILD, str(store_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    finished = child.returncode == 0
    assert finished or child.returncode == -signal.SIGKILL, child.stderr
    where = f"killed entering {syscall} number {k}" + (f" on {path}" if path else "")
    with tidelog.open(store_dir) as store:
        # As any other process sees it before anyone finishes the transaction.
        committed = committed_offsets(store)
        visible = outputs(store)
        if committed:
            assert committed == {0: 3}, where
            assert visible == done, (
                f"{where}: offset {committed} committed while the outputs read {visible}"
            )
        # Once finished, it is all or nothing.
        store.abort_orphaned_transactions()
        committed = committed_offsets(store)
        visible = outputs(store)
        assert (committed, visible) in (({}, [[], []]), ({0: 3}, done)), (where, committed, visible)
        states.add("committed" if committed else "aborted")
    shutil.rmtree(store_dir)
    return finished


@pytest.mark.skipif(not strace_works(), reason="needs strace with ptrace permission")
def test_committed_offset_is_never_visible_before_the_outputs(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()
    template = tmp_path / "template"
    with tidelog.open(template) as store:
        ins = store.create_topic("in")
        store.create_topic("out", partitions=2)
        for i in range(5):
            ins.append(b"%d" % i)
    done = [[b"0:a", b"1:a", b"2:a"], [b"0:b", b"1:b", b"2:b"]]
    states: set[str] = set()
    # strace counts each system call (and thread) separately: every fsync, every
    # fdatasync, and the look-ups of each topic's directory (the commit makes one before
    # writing each marker, which has no sync of its own with fsync="never").
    kill_points: list[tuple[str, str | None]] = [("fsync", None), ("fdatasync", None)]
    kill_points += [("statx,newfstatat", f"topics/{t}") for t in ("out", "__consumer_offsets")]
    for syscall, path in kill_points:
        for k in range(1, 200):
            if check_kill_point(tmp_path, template, syscall, path, k, done, states):
                break
        else:
            pytest.fail(f"the child never got through its {syscall} calls")
    # Both outcomes were reached: the kill points span the decision.
    assert states == {"aborted", "committed"}
