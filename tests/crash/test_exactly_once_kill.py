"""Exactly-once consume-transform-produce under SIGKILL.

A child process runs the loop of the API contract: an exactly-once consumer on ``in``, a
named idempotent producer, and one ``store.transaction(producer, consumer)`` per poll that
sends two outputs per input (one to each partition of ``out``, so every transaction spans
two output partitions plus the offsets partition). The child is SIGKILLed at random points
(during start-up and takeover of the previous instance's transaction, or mid-stream) over
32 rounds (at least 20 of them mid-stream) and restarted; a last run finishes the input.
The child opens the consumer before the producer (as the API example does) or after it.
In the end a plain reader of ``out`` (``Topic.read`` returns committed data only) must
find every input exactly once in each partition, and the group's offsets must cover the
whole input.

A second test kills the child while its transaction is open and does not restart it: the
outputs stay invisible (and hold back later messages), the group's offsets do not move,
and a new instance of the producer aborts the transaction and unblocks readers.
"""

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

pytestmark = pytest.mark.crash

# Enough that 32 rounds of up to 10 transactions plus a few ms of them never drain it.
INPUTS = 20_000
ROUNDS = 32
LEASE = "0.3"

TRANSFORMER = r"""
import random, sys, tidelog
path, lease, order = sys.argv[1], float(sys.argv[2]), sys.argv[3]
rng = random.Random()
with tidelog.open(path) as store:
    ins = store.topic("in")
    ends = {p: ins.end_offset(p) for p in range(ins.partitions)}
    if order == "consumer-first":  # the order of the API example
        consumer = store.consumer("in", group="xform", delivery="exactly-once", lease_seconds=lease)
        producer = store.producer(name="xform", linger_ms=0)
    else:
        producer = store.producer(name="xform", linger_ms=0)
        consumer = store.consumer("in", group="xform", delivery="exactly-once", lease_seconds=lease)
    while True:
        if consumer.committed() == ends:
            print("done", flush=True)
            break
        msgs = consumer.poll(max_messages=rng.randint(1, 4), timeout=0.05)
        if not msgs:
            continue
        with store.transaction(producer, consumer) as tx:
            for m in msgs:
                tx.send("out", m.value + b":a", partition=0)
                tx.send("out", m.value + b":b", partition=1)
        print("committed", len(msgs), flush=True)
    consumer.close()
    producer.close()
"""


def setup_store(store_dir: Path) -> None:
    with tidelog.open(store_dir) as store:
        ins = store.create_topic("in", partitions=2)
        store.create_topic("out", partitions=2)
        for i in range(INPUTS):
            ins.append(b"%d" % i, partition=i % 2)


def spawn(store_dir: Path, order: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", TRANSFORMER, str(store_dir), LEASE, order],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outputs(store: tidelog.Store) -> tuple[Counter[bytes], Counter[bytes]]:
    out = store.topic("out")
    return (
        Counter((m.value or b"").removesuffix(b":a") for m in out.read(0)),
        Counter((m.value or b"").removesuffix(b":b") for m in out.read(1)),
    )


@pytest.mark.parametrize(
    "order",
    [
        "consumer-first",
        "producer-first",
    ],
)
def test_consume_transform_produce_exactly_once_under_sigkill(tmp_path: Path, order: str) -> None:
    store_dir = tmp_path / "store"
    setup_store(store_dir)
    rng = random.Random(20261127)
    progress = mid_stream = 0
    for _ in range(ROUNDS):
        child = spawn(store_dir, order)
        assert child.stdout is not None and child.stderr is not None
        seen: list[str] = []
        if rng.random() < 0.2:
            # Anywhere from start-up (opening, fencing and finishing the previous
            # instance's transaction) on.
            time.sleep(rng.uniform(0.0, 0.08))
        else:
            # Mid-stream: after a random number of transactions (which bounds the progress
            # of a round), at a random point of the next ones.
            wanted = rng.randint(1, 10)
            while len(seen) < wanted and (line := child.stdout.readline()) not in ("", "done\n"):
                seen.append(line)
            mid_stream += len(seen) == wanted
            time.sleep(rng.uniform(0.0, 0.004))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        lines = seen + child.stdout.read().splitlines()
        err = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
        assert "Traceback" not in err, err
        progress += sum(1 for line in lines if line.startswith("committed"))
        with tidelog.open(store_dir) as store:
            a, b = outputs(store)
            assert max(a.values(), default=1) == 1 and max(b.values(), default=1) == 1, (
                "an input's output is visible twice"
            )
            assert sum(a.values()) < INPUTS or mid_stream >= 20, "the input ran out early"
    # The last run finishes the input.
    child = spawn(store_dir, order)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    assert stdout.splitlines()[-1] == "done"
    with tidelog.open(store_dir) as store:
        a, b = outputs(store)
        expected = Counter(b"%d" % i for i in range(INPUTS))
        assert a == expected, "partition 0 holds each input exactly once"
        assert b == expected, "partition 1 holds each input exactly once"
        ins = store.topic("in")
        committed = store.groups()["xform"]["in"]["committed"]
        assert committed == {p: ins.end_offset(p) for p in range(2)}
        # The killed instances' transactions were all finished: nothing holds readers back.
        out = store.topic("out")
        for p in range(2):
            assert len(out.read_batch(p, max_messages=10 * INPUTS)) == INPUTS
    assert mid_stream >= 20, "rounds killed mid-stream"
    assert progress > 0


HANGER = r"""
import sys, tidelog
with tidelog.open(sys.argv[1]) as store:
    consumer = store.consumer("in", group="xform", delivery="exactly-once", lease_seconds=0.3)
    producer = store.producer(name="xform")
    first = consumer.poll(max_messages=3, timeout=1)
    with store.transaction(producer, consumer) as tx:
        for m in first:
            tx.send("out", b"committed-" + m.value, partition=m.partition)
    second = consumer.poll(max_messages=3, timeout=1)
    tx = store.transaction(producer, consumer)
    for m in second:
        tx.send("out", b"open-" + m.value, partition=m.partition)
    producer.flush()
    print("open", " ".join(str(m.offset) for m in second), flush=True)
    import time
    time.sleep(3600)
"""


def test_killed_with_an_open_transaction(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        ins = store.create_topic("in")
        store.create_topic("out")
        for i in range(10):
            ins.append(b"%d" % i)
    child = subprocess.Popen(
        [sys.executable, "-c", HANGER, str(store_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    line = child.stdout.readline()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    err = child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    assert line.startswith("open"), err
    assert [int(o) for o in line.split()[1:]] == [3, 4, 5]
    with tidelog.open(store_dir) as store:
        out = store.topic("out")
        assert out.end_offset(0) > 4, "the open transaction's outputs were written"
        assert [m.value for m in out.read(0)] == [b"committed-0", b"committed-1", b"committed-2"]
        assert store.groups()["xform"]["in"]["committed"] == {0: 3}, "offsets did not move"
        # The open transaction holds back later messages too (the last stable offset).
        out.append(b"plain-after")
        assert [m.value for m in out.read(0)][3:] == []
        # Other processes opening the store change nothing; a new instance of the
        # producer aborts the transaction and the readers move on.
        with store.producer(name="xform") as producer:
            assert producer.producer_epoch == 1
        assert [m.value for m in out.read(0)] == [
            b"committed-0",
            b"committed-1",
            b"committed-2",
            b"plain-after",
        ]
        assert store.groups()["xform"]["in"]["committed"] == {0: 3}
        # The inputs of the aborted transaction come again.
        with store.consumer("in", group="xform", delivery="exactly-once") as consumer:
            deadline = time.monotonic() + 10
            got: list[tidelog.Message] = []
            while not got and time.monotonic() < deadline:  # the dead member's lease expires
                got = consumer.poll(max_messages=3, timeout=0.2)
            assert [m.offset for m in got] == [3, 4, 5]
