"""multiprocessing with the fork start method, the way applications use it: a pool of
workers forked from a process that has the store open, some misusing the inherited store
(using it, closing it, dropping it at exit), the others opening the store again, all
while the parent keeps appending through its own handle.

The scenario runs in a fresh interpreter so a SIGBUS anywhere fails the test instead of
killing pytest, and so the fork happens in a process without pytest's threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCENARIO = textwrap.dedent(
    """
    import multiprocessing as mp, sys, threading
    import tidelog

    path = sys.argv[1]
    store = tidelog.open(path, segment_bytes=1 << 20)
    topic = store.create_topic("t", partitions=2)
    topic.append(b"start", partition=0)
    producer = store.producer(name="parent")

    def misuse(i):
        # Uses the inherited store, then closes it (or just lets it go at exit).
        try:
            store.topic("t").append(b"inherited %d" % i)
            said = "no error"
        except tidelog.StoreClosedError as e:
            said = str(e)
        try:
            producer.send("t", b"inherited %d" % i)
            said += " | no error"
        except tidelog.StoreClosedError as e:
            said += " | " + str(e)
        if i % 2 == 0:
            store.close()
        return said

    def proper(i):
        with tidelog.open(path, segment_bytes=1 << 20) as mine:
            t = mine.topic("t")
            for j in range(2000):
                t.append(b"w%d-%d" % (i, j), partition=1)
        return "ok"

    stop = threading.Event()
    written = [0]

    def parent_writer():
        while not stop.is_set():
            topic.append(b"p%d" % written[0], partition=0)
            if written[0] % 7 == 0:
                producer.send("t", b"q%d" % written[0], partition=0)
            written[0] += 1

    writer = threading.Thread(target=parent_writer)
    writer.start()
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        misused = pool.map(misuse, range(8))
        proper_results = pool.map(proper, range(4))
    # Workers that were forked while the writer thread held the append lock or the
    # producer's buffers must not have blocked or damaged anything.
    for i in range(3):
        p = ctx.Process(target=misuse, args=(i,))
        p.start(); p.join()
        assert p.exitcode == 0, p.exitcode
    stop.set(); writer.join()
    producer.flush()
    sent = producer.stats()["written"]
    print("misused", sorted(set(misused)))
    print("proper", proper_results)
    producer.close()
    end0, end1 = topic.end_offset(0), topic.end_offset(1)
    store.close()
    with tidelog.open(path, segment_bytes=1 << 20) as again:
        t = again.topic("t")
        values0 = [m.value for m in t.read(0, 0)]
        values1 = [m.value for m in t.read(1, 0)]
    expected0 = 1 + written[0] + sent
    print("partition0", len(values0) == end0 == expected0)
    print("partition1", len(values1) == end1 == 4 * 2000)
    print("inherited writes", sum(v.startswith(b"inherited") for v in values0 + values1))
    ps = [v for v in values0 if v.startswith(b"p")]
    print("parent order", ps == [b"p%d" % i for i in range(written[0])])
    """
)


def run(script: str, path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` in its own process group, killed whole if it hangs."""
    argv = [sys.executable, "-c", script, str(path)]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"the scenario hung for {timeout} s\n{out}\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


FORKED = (
    "this store was opened before the process forked: a child process cannot use or close "
    "the parent's store; open the store again in the child (tidelog.open(path))"
)


def test_pool_workers_forked_from_a_writing_parent(tmp_path: Path) -> None:
    proc = run(SCENARIO, tmp_path / "s", timeout=100)
    if proc.returncode < 0:
        status = f"killed by {signal.Signals(-proc.returncode).name}"
    else:
        status = f"exit {proc.returncode}"
    detail = f"{status}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, detail
    assert f"misused [{FORKED + ' | ' + FORKED!r}]" in proc.stdout, detail
    assert "proper ['ok', 'ok', 'ok', 'ok']" in proc.stdout, detail
    assert "partition0 True" in proc.stdout, detail
    assert "partition1 True" in proc.stdout, detail
    assert "inherited writes 0" in proc.stdout, detail
    assert "parent order True" in proc.stdout, detail
