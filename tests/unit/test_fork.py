"""A store opened before ``fork()`` and used, closed or dropped in the child.

Every scenario runs in a fresh interpreter (``subprocess``) so that a SIGBUS in the parent or
the child fails the test instead of killing pytest, and so the scenario's own ``fork()``
happens in a process with no pytest threads. Each script prints what it checked; the test
asserts on the output and the exit status.

Also: ``Store.close()`` while a ``Topic`` is still referenced trims the pre-allocated files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import tidelog

FORKED = "open the store again in the child"


def run(script: str, *args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` in a fresh interpreter with ``args`` as ``sys.argv[1:]``.

    The script gets its own process group, killed whole if it hangs (a child blocked on a
    lock it inherited would otherwise outlive the test).
    """
    argv = [sys.executable, "-c", textwrap.dedent(script), *map(str, args)]
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


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    status = proc.returncode
    if status < 0:
        return f"killed by {signal.Signals(-status).name}\n{proc.stdout}\n{proc.stderr}"
    return f"exit {status}\n{proc.stdout}\n{proc.stderr}"


def test_child_closing_inherited_store_does_not_kill_parent(tmp_path: Path) -> None:
    # The reproducer of issue 13, item 1, verbatim apart from the path.
    proc = run(
        """
        import multiprocessing as mp, sys
        import tidelog

        store = tidelog.open(sys.argv[1]); store.create_topic("t").append(b"hello")

        def worker():
            try:
                store.topic("t").append(b"x")
            except tidelog.StoreClosedError as e:
                print("child:", e, flush=True)
            store.close()

        mp.set_start_method("fork"); p = mp.Process(target=worker); p.start(); p.join()
        print("child exit", p.exitcode, flush=True)
        t = store.topic("t")
        for i in range(100_000):
            t.append(b"p%d" % i)
        print("end", t.end_offset(0), flush=True)
        store.close()
        with tidelog.open(sys.argv[1]) as again:
            msgs = list(again.topic("t").read(0, 0))
            print("reopened", len(msgs), msgs[0].value, msgs[1].value, msgs[-1].value)
        """,
        tmp_path / "s",
    )
    assert proc.returncode == 0, describe(proc)
    assert "child: " in proc.stdout and FORKED in proc.stdout, describe(proc)
    assert "child exit 0" in proc.stdout
    # The child wrote nothing through the inherited handle.
    assert "end 100001" in proc.stdout
    assert "reopened 100001 b'hello' b'p0' b'p99999'" in proc.stdout


def test_child_dropping_inherited_store_at_exit_does_not_kill_parent(tmp_path: Path) -> None:
    # os.fork with a normal interpreter exit in the child: the store, its topics and a
    # producer are garbage-collected there (no close() call), which must touch nothing.
    proc = run(
        """
        import gc, os, sys
        import tidelog

        store = tidelog.open(sys.argv[1])
        t = store.create_topic("t", partitions=2)
        t.append(b"hello", partition=0)
        producer = store.producer(name="p")
        producer.send("t", b"sent", partition=1); producer.flush()
        pid = os.fork()
        if pid == 0:
            del t, producer, store
            gc.collect()
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print("child status", status, flush=True)
        for i in range(50_000):
            t.append(b"p%d" % i, partition=0)
            if i % 10 == 0:
                producer.send("t", b"q%d" % i, partition=1)
        producer.flush()
        print("ends", t.end_offset(0), t.end_offset(1), flush=True)
        producer.close(); store.close()
        """,
        tmp_path / "s",
    )
    assert proc.returncode == 0, describe(proc)
    assert "child status 0" in proc.stdout
    assert "ends 50001 5001" in proc.stdout


def test_parent_closing_does_not_kill_child_that_writes(tmp_path: Path) -> None:
    # The reverse direction: the parent closes (trims) while the child still holds the
    # inherited handle; the child's writes must be refused, not hit a trimmed mapping.
    proc = run(
        """
        import os, sys
        import tidelog

        store = tidelog.open(sys.argv[1])
        t = store.create_topic("t")
        t.append(b"hello")
        closed_r, closed_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(closed_w)
            os.read(closed_r, 1)  # the parent has closed the store
            try:
                for i in range(100_000):
                    t.append(b"c%d" % i)
            except tidelog.StoreClosedError as e:
                print("child refused:", e, flush=True)
                os._exit(0)
            os._exit(3)
        os.close(closed_r)
        store.close()
        os.write(closed_w, b"x")
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            print("child killed by", os.WTERMSIG(status))
        else:
            print("child exit", os.WEXITSTATUS(status))
        with tidelog.open(sys.argv[1]) as again:
            print("end", again.topic("t").end_offset(0))
        """,
        tmp_path / "s",
    )
    assert proc.returncode == 0, describe(proc)
    assert "child exit 0" in proc.stdout, describe(proc)
    assert FORKED in proc.stdout
    assert "end 1" in proc.stdout


CHILD_CALLS = """
import os, sys, traceback
import tidelog

store = tidelog.open(sys.argv[1])
t = store.create_topic("t", partitions=2)
for i in range(10):
    t.append(b"m%d" % i, partition=i % 2)
store.create_topic("jobs")
store.topic("jobs").append(b"job")
producer = store.producer(name="p")
producer.send("t", b"sent", partition=0); producer.flush()
consumer = store.consumer("t", group="g")
first = consumer.poll(max_messages=3, timeout=1)
queue = store.work_queue("jobs", group="w", lock_timeout=60)
job = queue.acquire(timeout=1)
store.topic("jobs").append_batch([b"b1", b"b2"])
batched = queue.acquire_many(2, timeout=1)  # one batch: an ack of either is buffered
plain = store.producer(name="tx")
eo = store.consumer("t", group="eo", delivery="exactly-once")
iterator = t.read(0, 0)

calls = {
    "store.topic": lambda: store.topic("t"),
    "store.create_topic": lambda: store.create_topic("new"),
    "store.topics": lambda: store.topics(),
    "store.delete_topic": lambda: store.delete_topic("t"),
    "store.sync": lambda: store.sync(),
    "store.stats": lambda: store.stats(),
    "store.groups": lambda: store.groups(),
    "store.producer": lambda: store.producer(),
    "store.consumer": lambda: store.consumer("t", group="g2"),
    "store.work_queue": lambda: store.work_queue("jobs", group="w2"),
    "store.transaction": lambda: store.transaction(plain, eo),
    "store.abort_orphaned_transactions": lambda: store.abort_orphaned_transactions(),
    "topic.append": lambda: t.append(b"child"),
    "topic.append_batch": lambda: t.append_batch([b"a", b"b"], partition=0),
    "topic.read": lambda: list(t.read(0, 0)),
    "topic.read_batch": lambda: t.read_batch(0, 0),
    "topic.end_offset": lambda: t.end_offset(0),
    "topic.ticket": lambda: t.ticket(),
    "topic.wait": lambda: t.wait(0, 0),
    "iterator.next": lambda: next(iterator),
    "consumer.assignment": lambda: consumer.assignment(),
    "queue.acquire_many": lambda: queue.acquire_many(5, timeout=0),
    "queue.iterate": lambda: next(iter(queue)),
    "producer.send": lambda: producer.send("t", b"child"),
    "producer.flush": lambda: producer.flush(),
    "producer.begin_transaction": lambda: plain.begin_transaction(),
    "consumer.poll": lambda: consumer.poll(timeout=0),
    "consumer.commit": lambda: consumer.commit(),
    "consumer.committed": lambda: consumer.committed(),
    "consumer.lag": lambda: consumer.lag(),
    "consumer.seek": lambda: consumer.seek(0, 0),
    "queue.acquire": lambda: queue.acquire(timeout=0),
    "queue.ack": lambda: queue.ack(job),
    "queue.ack (buffered)": lambda: queue.ack(batched[0]),
    "queue.release": lambda: queue.release(job),
    "queue.extend": lambda: queue.extend(job, 5),
    "queue.stats": lambda: queue.stats(),
    "queue.flush": lambda: queue.flush(),
}

pid = os.fork()
if pid == 0:
    bad = []
    for name, call in calls.items():
        try:
            call()
            bad.append(f"{name}: no error")
        except tidelog.StoreClosedError as e:
            if "open the store again in the child" not in str(e):
                bad.append(f"{name}: message {e}")
        except BaseException as e:
            bad.append(f"{name}: {type(e).__name__}: {e}")
    # Closing in the child is allowed and does nothing (no commit, no leave, no release).
    for thing in (consumer, eo, queue, producer, plain, store):
        try:
            thing.close()
        except BaseException as e:
            bad.append(f"close {type(thing).__name__}: {type(e).__name__}: {e}")
    for thing in (store, consumer, queue, producer):
        if not thing.closed:
            bad.append(f"{type(thing).__name__}.closed is False in the child")
    print("child problems:", bad, flush=True)
    os._exit(0 if not bad else 1)
_, status = os.waitpid(pid, 0)
print("child status", status, flush=True)
# The parent's objects are untouched: the job is still ours, the group still has one
# member whose delivered-but-uncommitted messages are committed on close, and everything
# works.
queue.ack(job)
queue.ack_many(batched)
queue.flush()
print("queue", queue.stats()["acked"], flush=True)
rest = consumer.poll(max_messages=100, timeout=1)
print("consumed", len(first) + len(rest), flush=True)
consumer.commit()
print("committed", consumer.committed(), flush=True)
producer.send("t", b"after", partition=0); producer.flush()
print("ends", t.end_offset(0), t.end_offset(1), store.topics(), flush=True)
for thing in (consumer, eo, queue, producer, plain):
    thing.close()
store.close()
"""


def test_child_calls_raise_store_closed_and_parent_is_unaffected(tmp_path: Path) -> None:
    proc = run(CHILD_CALLS, tmp_path / "s")
    assert proc.returncode == 0, describe(proc)
    assert "child problems: []" in proc.stdout, describe(proc)
    assert "child status 0" in proc.stdout
    assert "queue 3" in proc.stdout, describe(proc)
    assert "consumed 11" in proc.stdout, describe(proc)
    assert "committed {0: 6, 1: 5}" in proc.stdout, describe(proc)
    assert "ends 7 5 ['jobs', 't']" in proc.stdout, describe(proc)


def test_child_opening_the_store_anew_works_and_its_close_spares_the_parent(
    tmp_path: Path,
) -> None:
    proc = run(
        """
        import os, sys
        import tidelog

        path = sys.argv[1]
        store = tidelog.open(path)
        t = store.create_topic("t")
        t.append(b"hello")
        pid = os.fork()
        if pid == 0:
            with tidelog.open(path) as mine:
                mt = mine.topic("t")
                for i in range(1000):
                    mt.append(b"c%d" % i)
                print("child end", mt.end_offset(0), flush=True)
            store.close()  # the inherited one: nothing happens
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child status", status, flush=True)
        for i in range(100_000):
            t.append(b"p%d" % i)
        print("end", t.end_offset(0), flush=True)
        store.close()
        with tidelog.open(path) as again:
            print("reopened", again.topic("t").end_offset(0))
        """,
        tmp_path / "s",
    )
    assert proc.returncode == 0, describe(proc)
    assert "child end 1001" in proc.stdout
    assert "child status 0" in proc.stdout
    assert "end 101001" in proc.stdout
    assert "reopened 101001" in proc.stdout


def test_forked_child_store_reports_closed_in_process(tmp_path: Path) -> None:
    # Same check without a subprocess wrapper around the scenario, for the exception type
    # and message as a user sees them (the child only reports over a pipe).
    store = tidelog.open(tmp_path / "s")
    topic = store.create_topic("t")
    topic.append(b"x")
    r, w = os.pipe()
    with warnings.catch_warnings():
        # Python >= 3.12 warns about forking a process with threads (the store's helper
        # threads): exactly the situation under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            topic.append(b"y")
            os.write(w, b"no error")
        except tidelog.StoreClosedError as e:
            os.write(w, str(e).encode())
        except BaseException as e:
            os.write(w, repr(e).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    os.waitpid(pid, 0)
    assert FORKED in said
    assert topic.end_offset(0) == 1
    store.close()


def segment_sizes(partition_dir: Path) -> dict[str, int]:
    return {
        p.name: p.stat().st_size
        for p in sorted(partition_dir.iterdir())
        if p.suffix in {".log", ".index", ".timeindex"}
    }


def test_close_trims_files_while_a_topic_is_still_referenced(tmp_path: Path) -> None:
    path = tmp_path / "s"
    store = tidelog.open(path)
    topic = store.create_topic("t", partitions=2)
    for i in range(10):
        topic.append(b"v%d" % i, partition=0)
    store.close()
    part0, part1 = path / "topics" / "t" / "0", path / "topics" / "t" / "1"
    sizes = segment_sizes(part0)
    data = next(v for k, v in sizes.items() if k.endswith(".log"))
    assert 0 < data < 64 << 10, sizes
    assert all(v == 0 for k, v in segment_sizes(part1).items()), segment_sizes(part1)
    with pytest.raises(tidelog.StoreClosedError):
        topic.append(b"late")
    with pytest.raises(tidelog.StoreClosedError):
        topic.end_offset(0)
    with tidelog.open(path) as again:
        t = again.topic("t")
        assert (t.end_offset(0), t.end_offset(1)) == (10, 0)
        assert [m.value for m in t.read(0, 0)] == [b"v%d" % i for i in range(10)]
        t.append(b"v10", partition=0)
        assert t.end_offset(0) == 11
    del topic


def test_close_with_a_topic_referenced_repairs_a_damaged_tail_on_reopen(tmp_path: Path) -> None:
    # Item 8: zero the last record after a clean close with a Topic still referenced; the
    # reopen must see the damaged tail (the file is trimmed, so the damage is at the end)
    # and truncate it, instead of counting it in end_offset.
    path = tmp_path / "s"
    store = tidelog.open(path)
    topic = store.create_topic("t")
    for i in range(5):
        topic.append(b"value-%d" % i)
    store.close()
    log = next((path / "topics" / "t" / "0").glob("*.log"))
    size = log.stat().st_size
    with log.open("r+b") as f:
        f.seek(size - 8)
        f.write(b"\0" * 8)
    with tidelog.open(path) as again:
        t = again.topic("t")
        assert t.end_offset(0) == 4
        assert [m.value for m in t.read(0, 0)] == [b"value-%d" % i for i in range(4)]
    del topic
