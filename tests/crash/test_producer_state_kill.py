"""Producer sequence state survives SIGKILL of the writing process.

A child appends sequenced batches (``Topic.append_sequenced``, the native idempotent
append) as fast as it can and is SIGKILLed at a random moment. Reopening must rebuild the
producer's state from the log: the last five batches are duplicates answered with their
original offsets, older ones and gaps are out of order, the next sequence continues (the
next child picks up there), and once a newer epoch has written, the old one is fenced.
Three variants: small segments (state loaded from the snapshot written at a roll), small
segments with the snapshots deleted before every reopen, and one big segment (no roll, so
no snapshot at all). A second test kills a named ``store.producer`` mid-stream.

Every record's value is ``b"<epoch>:<sequence>"`` and batch sizes are a function of their
first sequence, so the parent can rebuild every batch boundary from the log alone.
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

PID = 77
WINDOW = 5

WRITER = r"""
import sys, tidelog
path, segment_bytes, pid, epoch, start = sys.argv[1], *map(int, sys.argv[2:])
with tidelog.open(path, segment_bytes=segment_bytes) as store:
    topic = store.create_topic("t", exist_ok=True)
    s = start
    while True:
        n = 1 + s % 3
        values = [b"%d:%d" % (epoch, s + j) for j in range(n)]
        offset, dup = topic.append_sequenced(
            values, producer_id=pid, producer_epoch=epoch, base_sequence=s
        )
        assert not dup, "a new batch reported as duplicate"
        print(s, n, offset, flush=True)
        s += n
"""


def batch_size(first: int) -> int:
    return 1 + first % 3


def boundaries(end: int) -> list[tuple[int, int]]:
    """The batches (first sequence, size) covering sequences ``0..end``."""
    out, s = [], 0
    while s < end:
        out.append((s, batch_size(s)))
        s += batch_size(s)
    assert s == end, f"sequence {end} is not a batch boundary"
    return out


def stored(topic: tidelog.Topic, epoch: int) -> list[tuple[int, int]]:
    """(offset, sequence) of every record of ``epoch``, in log order."""
    out = []
    for m in topic.read(0):
        e, s = (m.value or b"").split(b":")
        if int(e) == epoch:
            out.append((m.offset, int(s)))
    return out


def snapshots(store_dir: Path) -> list[Path]:
    return sorted((store_dir / "topics" / "t" / "0").glob("*.snapshot"))


def kill_writer(store_dir: Path, segment_bytes: int, epoch: int, start: int, delay: float) -> str:
    args = [str(store_dir), str(segment_bytes), str(PID), str(epoch), str(start)]
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    # Wait for the first acknowledged batch, so every round makes progress.
    first = child.stdout.readline()
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    out = first + child.stdout.read()
    err = child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    assert first, f"the writer failed: {err}"
    assert "Error" not in err, err
    return out


def check_rebuilt(topic: tidelog.Topic, epoch: int, acked: dict[int, tuple[int, int]]) -> int:
    """Checks the rebuilt state of ``epoch``; returns its next sequence."""
    records = stored(topic, epoch)
    sequences = [s for _, s in records]
    assert sequences == list(range(len(sequences))), "each sequence stored once, in order"
    end = len(sequences)
    offset_of = dict((s, o) for o, s in records)
    for first, (n, offset) in acked.items():
        assert first + n <= end, f"acknowledged batch {first} lost"
        assert offset_of[first] == offset
    batches = boundaries(end)
    for first, n in batches[-WINDOW:]:
        values = [b"retry"] * n
        got = topic.append_sequenced(
            values, producer_id=PID, producer_epoch=epoch, base_sequence=first
        )
        assert got == (offset_of[first], True), f"batch {first} not recognised after restart"
    if len(batches) > WINDOW:
        first, n = batches[-WINDOW - 1]
        with pytest.raises(tidelog.OutOfOrderSequenceError):
            topic.append_sequenced(
                [b"retry"] * n, producer_id=PID, producer_epoch=epoch, base_sequence=first
            )
    with pytest.raises(tidelog.OutOfOrderSequenceError):
        topic.append_sequenced(
            [b"gap"], producer_id=PID, producer_epoch=epoch, base_sequence=end + 1
        )
    if epoch > 0:
        with pytest.raises(tidelog.ProducerFencedError):
            topic.append_sequenced(
                [b"old"], producer_id=PID, producer_epoch=epoch - 1, base_sequence=0
            )
    return end


@pytest.mark.parametrize("variant", ["snapshot", "snapshots-deleted", "no-roll"])
def test_sequence_state_rebuilt_after_sigkill(tmp_path: Path, variant: str) -> None:
    store_dir = tmp_path / "store"
    segment_bytes = 64 << 20 if variant == "no-roll" else 4096
    rng = random.Random(f"producer-state-{variant}")
    epoch, start, total = 0, 0, 0
    for round_ in range(8):
        out = kill_writer(store_dir, segment_bytes, epoch, start, rng.uniform(0.005, 0.08))
        acked: dict[int, tuple[int, int]] = {}
        for line in out.splitlines():
            try:
                first, n, offset = map(int, line.split())
            except ValueError:
                continue  # cut short by the kill: not acknowledged
            acked[first] = (n, offset)
        found = snapshots(store_dir)
        if variant == "no-roll":
            assert found == []
        elif variant == "snapshots-deleted":
            for path in found:
                path.unlink()
        else:
            assert found, "the rolls wrote snapshots"
        with tidelog.open(store_dir, segment_bytes=segment_bytes) as store:
            topic = store.topic("t")
            start = check_rebuilt(topic, epoch, acked)
            if round_ % 3 == 2:
                # A new epoch: the next writer starts over at 0 and the old one is fenced.
                epoch += 1
                assert (
                    topic.append_sequenced(
                        [b"%d:0" % epoch], producer_id=PID, producer_epoch=epoch, base_sequence=0
                    )[1]
                    is False
                )
                with pytest.raises(tidelog.ProducerFencedError):
                    topic.append_sequenced(
                        [b"x"], producer_id=PID, producer_epoch=epoch - 1, base_sequence=start
                    )
                start = 1
            total = topic.end_offset(0)
    if variant != "no-roll":
        with tidelog.open(store_dir, segment_bytes=segment_bytes) as store:
            assert store.topic("t").segment_count(0) > 3
    assert total > 50, "the writers made progress"


NAMED = r"""
import sys, tidelog
with tidelog.open(sys.argv[1], segment_bytes=4096) as store:
    with store.producer(name="w", linger_ms=0) as p:
        print("id", p.producer_id, p.producer_epoch, flush=True)
        i = int(sys.argv[2])
        while True:
            for _ in range(5):
                p.send("t", b"%d" % i)
                i += 1
            p.flush()
            print(i, flush=True)
"""


def test_named_producer_killed_mid_stream(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir, segment_bytes=4096) as store:
        store.create_topic("t")
    rng = random.Random(5)
    start, acked, identities = 0, 0, []
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", NAMED, str(store_dir), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        header = child.stdout.readline().split()
        assert header[0] == "id", header
        identities.append((int(header[1]), int(header[2])))
        time.sleep(rng.uniform(0.01, 0.1))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for line in child.stdout.read().splitlines():
            if line.isdigit():
                acked = max(acked, int(line))
        child.stdout.close()
        with tidelog.open(store_dir, segment_bytes=4096) as store:
            topic = store.topic("t")
            values = [int(m.value or b"") for m in topic.read(0)]
            assert values == list(range(len(values))), "nothing lost or written twice"
            assert len(values) >= acked, "acknowledged messages survive"
            start = len(values)
    assert [pid for pid, _ in identities] == [identities[0][0]] * len(identities)
    assert [e for _, e in identities] == list(range(len(identities))), "every restart bumps"
    pid, epoch = identities[-1]
    with tidelog.open(store_dir, segment_bytes=4096) as store:
        with store.producer(name="w") as p:
            assert (p.producer_id, p.producer_epoch) == (pid, epoch + 1)
            p.send("t", b"%d" % start)
        topic = store.topic("t")
        # The killed instance's epoch is fenced at the partition too.
        with pytest.raises(tidelog.ProducerFencedError):
            topic.append_sequenced([b"old"], producer_id=pid, producer_epoch=epoch, base_sequence=0)
        values = [int(m.value or b"") for m in topic.read(0)]
        assert values == list(range(start + 1))
