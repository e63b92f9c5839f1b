"""Crash tests: writers killed with SIGKILL at random moments, and files damaged on disk.

A SIGKILL loses nothing that reached the page cache, so with any fsync policy every append
that returned must survive, the log must hold no partial batch, and offsets must stay dense.
Damage to a sealed segment must be reported as ``CorruptRecordError`` naming the file and the
offset, without making the rest of the log unreadable; damaged or missing index files are
derived data and must be rebuilt.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import tidelog

pytestmark = pytest.mark.crash

BATCH_HEADER_LEN = 64
RECORD_ENTRY_LEN = 20
COMPACT_ENTRY_LEN = 8
ATTR_COMPACT = 4
ATTR_UNIFORM = 8

WRITER = textwrap.dedent(
    """
    import os, random, sys
    import numpy as np
    import tidelog

    store_dir, ack_path, round_no, seed, fsync = sys.argv[1:6]
    rng = random.Random(int(seed))
    store = tidelog.open(store_dir, segment_bytes=65536, max_message_bytes=4096, fsync=fsync,
                         fsync_interval_ms=5)
    topic = store.topic("t")
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(ack, b"ready\\n")

    def value(seq, i, n):
        head = f"{round_no}:{seq}:{i}:{n}:".encode()
        return head + bytes([97 + (seq + i) % 26]) * rng.randrange(0, 200)

    for seq in range(200_000):
        p = rng.randrange(topic.partitions)
        kind = rng.randrange(5)
        if kind == 0:
            n = 1
            _, offset = topic.append(value(seq, 0, 1), key=b"k%d" % seq, headers={"s": b"%d" % seq},
                                     partition=p)
        elif kind == 1:
            n = 1
            p, offset = topic.append(value(seq, 0, 1))
        elif kind == 2:
            n = rng.randrange(1, 12)
            _, offset = topic.append_batch([value(seq, i, n) for i in range(n)], partition=p)
        elif kind == 3:
            n = rng.randrange(1, 12)
            parts = [value(seq, i, n) for i in range(n)]
            lengths = np.array([len(x) for x in parts])
            _, offset = topic.append_batch(b"".join(parts), lengths=lengths, partition=p)
        else:
            # Over 32 KB: written straight from the buffer and the head last; of same-size
            # values (no record entries at all) half of the time.
            n = rng.randrange(180, 270)
            parts = [value(seq, i, n) for i in range(n)]
            if rng.randrange(2):
                parts = [x[:200].ljust(200, b"=") for x in parts]
            lengths = np.array([len(x) for x in parts])
            _, offset = topic.append_batch(b"".join(parts), lengths=lengths, partition=p)
        os.write(ack, f"{p} {offset} {seq} {n}\\n".encode())
    """
)


@dataclass(frozen=True)
class Ack:
    partition: int
    offset: int
    round: int
    seq: int
    count: int


def read_partition(topic: tidelog.Topic, p: int) -> tuple[list[int], list[bytes]]:
    """Every offset and value of partition ``p``, from its start to its end."""
    offsets: list[int] = []
    values: list[bytes] = []
    offset = topic.start_offset(p)
    while True:
        batch = topic.read_batch(p, offset, max_messages=100_000)
        if len(batch) == 0:
            return offsets, values
        offsets.extend(batch.offsets.tolist())
        values.extend(v or b"" for v in batch.values())
        offset = batch.next_offset


def read_acks(path: Path, round_no: int) -> list[Ack]:
    acks = []
    text = path.read_text() if path.exists() else ""
    for line in text.split("\n")[:-1]:  # a line cut by the kill has no newline yet
        if line == "ready":
            continue
        p, offset, seq, n = map(int, line.split())
        acks.append(Ack(p, offset, round_no, seq, n))
    return acks


def verify_store(
    store_dir: Path, acks: list[Ack], round_no: int, segment_bytes: int = 65536
) -> int:
    """Opens the store (which runs recovery) and checks it against every acknowledgement so
    far: values are "<round>:<seq>:<i>:<n>:...", record ``i`` of the ``n`` of batch ``seq``
    appended by the writer of round ``round``. Returns the number of messages stored."""
    with tidelog.open(store_dir, segment_bytes=segment_bytes, max_message_bytes=4096) as store:
        topic = store.topic("t")
        total = 0
        # (round, seq) -> partition and first offset of the batch, as found in the log.
        found: dict[tuple[int, int], tuple[int, int, int]] = {}
        for p in range(topic.partitions):
            offsets, values = read_partition(topic, p)
            assert topic.start_offset(p) == 0
            assert offsets == list(range(len(offsets))), f"partition {p}: offsets not dense"
            assert topic.end_offset(p) == len(offsets)
            total += len(offsets)
            at = 0
            while at < len(values):
                r, seq, i, n = map(int, values[at].split(b":", 4)[:4])
                assert i == 0, f"partition {p} offset {at}: batch {r}:{seq} starts at record {i}"
                assert r <= round_no
                assert at + n <= len(values), f"batch {r}:{seq} cut short at the log end"
                for j in range(1, n):
                    assert values[at + j].startswith(b"%d:%d:%d:%d:" % (r, seq, j, n)), (
                        f"partition {p} offset {at + j}: partial or mixed batch {r}:{seq}"
                    )
                assert (r, seq) not in found, f"batch {r}:{seq} stored twice"
                found[(r, seq)] = (p, at, n)
                at += n
        for a in acks:
            assert found.get((a.round, a.seq)) == (a.partition, a.offset, a.count), (
                f"acknowledged batch {a} is missing or moved"
            )
        # At most one batch per killed writer may be stored without having been acknowledged
        # (killed between the append and the acknowledgement).
        acked = {(a.round, a.seq) for a in acks}
        extra = [k for k in found if k not in acked]
        by_round: dict[int, int] = {}
        for r, _ in extra:
            by_round[r] = by_round.get(r, 0) + 1
        assert all(n <= 1 for n in by_round.values()), extra
        del topic
    return total


def test_sigkilled_writer_loses_no_acknowledged_append(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    # The writers' settings: stored with the store, so every open must agree with them.
    with tidelog.open(store_dir, segment_bytes=65536, max_message_bytes=4096) as store:
        store.create_topic("t", partitions=3)
    rng = random.Random(20_260_127)
    acks: list[Ack] = []
    rounds = 24
    killed = 0
    for round_no in range(rounds):
        ack_path = tmp_path / f"acks-{round_no}"
        fsync = ["never", "never", "interval", "always"][round_no % 4]
        seed = rng.randrange(1 << 30)
        args = [str(script), str(store_dir), str(ack_path), str(round_no), str(seed), fsync]
        child = subprocess.Popen(
            [sys.executable, *args],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not (ack_path.exists() and ack_path.stat().st_size > 0):
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "writer did not start"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=30)
        if child.returncode == -signal.SIGKILL:
            killed += 1
        else:
            assert child.returncode == 0, stderr.decode()
        acks.extend(read_acks(ack_path, round_no))
        total = verify_store(store_dir, acks, round_no)
        assert total >= len(acks)
    assert killed >= rounds - 2
    assert len(acks) > rounds


# Appends to partition 0 of a topic with small segments, so it rolls every ~50 messages.
ROLL_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import tidelog

    store_dir, ack_path, writer, go = sys.argv[1:5]
    store = tidelog.open(store_dir, segment_bytes=8192, max_message_bytes=4096)
    topic = store.topic("t")
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while not os.path.exists(go):
        time.sleep(0.001)
    for seq in range(1500):
        n = 3 if seq % 3 == 2 else 1
        values = [b"%s:%d:%d:%d:" % (writer.encode(), seq, i, n) + b"x" * 90 for i in range(n)]
        p, offset = topic.append_batch(values, partition=0)
        os.write(ack, b"%d %d %d %d\\n" % (p, offset, seq, n))
    """
)


def strace_works() -> bool:
    try:
        done = subprocess.run(
            ["strace", "-o", "/dev/null", "true"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not strace_works(), reason="needs strace with ptrace permission")
@pytest.mark.parametrize(("trim", "others"), [(1, 0), (1, 2), (2, 2), (3, 2), (4, 2)])
def test_writer_killed_inside_a_segment_roll(tmp_path: Path, trim: int, others: int) -> None:
    """strace kills the writer as it enters its ``trim``-th ftruncate: a roll trims the
    sealed segment's data, offset index and time index files in turn (1-3), and 4 is the
    next roll. Other writers may be appending meanwhile: they take over the lock (its owner
    died) and must carry on; then recovery runs on the next open."""
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir, segment_bytes=8192, max_message_bytes=4096) as store:
        store.create_topic("t")
    script = tmp_path / "writer.py"
    script.write_text(ROLL_WRITER)
    go = tmp_path / "go"

    def writer(n: int) -> list[str]:
        return [sys.executable, str(script), str(store_dir), str(tmp_path / f"acks-{n}"), str(n)]

    inject = f"inject=ftruncate:signal=SIGKILL:when={trim}"
    strace = ["strace", "-f", "-o", "/dev/null", "-e", "trace=ftruncate", "-e", inject]
    victim = subprocess.Popen([*strace, *writer(0), str(go)], stderr=subprocess.PIPE)
    survivors = [
        subprocess.Popen([*writer(n), str(go)], stderr=subprocess.PIPE)
        for n in range(1, others + 1)
    ]
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"acks-{n}").exists() for n in range(others + 1)):
            assert time.monotonic() < deadline, "writers did not start"
            time.sleep(0.005)
        go.touch()
        _, stderr = victim.communicate(timeout=60)
        # strace dies of the signal it injected.
        assert victim.returncode == -signal.SIGKILL, stderr.decode()
        for child in survivors:
            _, stderr = child.communicate(timeout=60)
            assert child.returncode == 0, stderr.decode()
    finally:
        for child in [victim, *survivors]:
            if child.poll() is None:
                child.kill()
                child.communicate()
    acks = [a for n in range(others + 1) for a in read_acks(tmp_path / f"acks-{n}", n)]
    assert sum(a.round > 0 for a in acks) == 1500 * others
    if others == 0:
        assert sum(a.round == 0 for a in acks) >= 10, "the victim died before its first roll"
    verify_store(store_dir, acks, others, segment_bytes=8192)


# -- damage on disk -----------------------------------------------------------------------


def partition_dir(store_dir: Path, p: int = 0) -> Path:
    return store_dir / "topics" / "t" / str(p)


def segment_bases(pdir: Path) -> list[int]:
    return sorted(int(f.name.removesuffix(".log")) for f in pdir.glob("*.log"))


def seg_path(pdir: Path, base: int, ext: str) -> Path:
    return pdir / f"{base:020}.{ext}"


@dataclass(frozen=True)
class BatchInfo:
    position: int
    base_offset: int
    length: int
    count: int
    attributes: int

    @property
    def entry_len(self) -> int:
        """Bytes of one record entry (compact in batches without keys and headers, none in
        batches of same-size values)."""
        if self.attributes & ATTR_UNIFORM:
            return 0
        return COMPACT_ENTRY_LEN if self.attributes & ATTR_COMPACT else RECORD_ENTRY_LEN


def parse_batches(data: bytes, base: int) -> tuple[list[BatchInfo], int]:
    """Walks batch headers while offsets stay continuous; returns the batches and the end
    of the valid data."""
    pos, expected, out = 0, base, []
    while pos + BATCH_HEADER_LEN <= len(data):
        offset, length = struct.unpack_from("<QI", data, pos)
        total = length + 12
        if offset != expected or total < BATCH_HEADER_LEN or pos + total > len(data):
            break
        (last_delta, count) = struct.unpack_from("<II", data, pos + 20)
        out.append(BatchInfo(pos, offset, total, count, data[pos + 17]))
        expected = offset + last_delta + 1
        pos += total
    return out, pos


def value_of(i: int) -> bytes:
    return f"message-{i:05}-".encode() + bytes([65 + i % 26]) * (20 + i * 13 % 150)


def timestamp_of(i: int) -> int:
    # Rising with a dip every seventh message, so time lookups need the "max before" logic.
    return 10_000 + 10 * i - (35 if i % 7 == 0 else 0)


@contextmanager
def opened(store_dir: Path, **options: int) -> Iterator[tidelog.Topic]:
    """The topic "t" of a store opened with ``options``; every handle is dropped on exit so
    the next open runs recovery."""
    store = tidelog.open(store_dir, **options)  # type: ignore[arg-type]
    try:
        yield store.topic("t")
    finally:
        store.close()


def fill(store_dir: Path, n: int, **options: int) -> None:
    """Appends messages 0..n, each fifth one starting a 3-message batch, to a new
    one-partition topic "t"."""
    store = tidelog.open(store_dir, **options)  # type: ignore[arg-type]
    topic = store.create_topic("t")
    i = 0
    while i < n:
        if i % 5 == 4 and i + 3 <= n:
            _, off = topic.append_batch(
                [value_of(i), value_of(i + 1), value_of(i + 2)], timestamp_ms=timestamp_of(i)
            )
            assert off == i
            i += 3
        else:
            assert topic.append(value_of(i), timestamp_ms=timestamp_of(i)) == (0, i)
            i += 1
    del topic
    store.close()


def expected_timestamps(n: int) -> list[int]:
    """The timestamp of each offset written by :func:`fill` (a batch shares its first
    message's timestamp)."""
    out: list[int] = []
    i = 0
    while i < n:
        if i % 5 == 4 and i + 3 <= n:
            out += [timestamp_of(i)] * 3
            i += 3
        else:
            out.append(timestamp_of(i))
            i += 1
    return out


@pytest.mark.parametrize("damage", ["truncate", "zero", "garble", "junk-after"])
def test_torn_tail_is_truncated_and_appends_continue(tmp_path: Path, damage: str) -> None:
    store_dir = tmp_path / "store"
    fill(store_dir, 60)
    pdir = partition_dir(store_dir)
    base = segment_bases(pdir)[-1]
    path = seg_path(pdir, base, "log")
    data = path.read_bytes()
    batches, end = parse_batches(data, base)
    last = batches[-1]
    assert last.base_offset + last.count == 60
    cut = 1 + len(data) % 37
    if damage == "truncate":
        os.truncate(path, end - cut)
    elif damage == "zero":
        with path.open("r+b") as f:
            f.seek(end - cut)
            f.write(bytes(cut))
    elif damage == "garble":
        with path.open("r+b") as f:
            f.seek(end - cut)
            f.write(bytes(b ^ 0xA5 for b in data[end - cut : end]))
    else:
        with path.open("r+b") as f:
            f.seek(end)
            f.write(b"\x17junk that is not a batch" * 3)
    survivors = 60 if damage == "junk-after" else last.base_offset
    with opened(store_dir) as topic:
        assert topic.end_offset(0) == survivors
        assert [m.value for m in topic.read(0)] == [value_of(i) for i in range(survivors)]
        # Nothing but zeros after the valid data: the torn bytes cannot resurface.
        after = path.read_bytes()
        _, new_end = parse_batches(after, base)
        assert after[new_end:].count(0) == len(after) - new_end
        assert topic.append(b"after-recovery") == (0, survivors)
        assert topic.append_batch([b"x", b"y"]) == (0, survivors + 1)
    with opened(store_dir) as topic:
        values = [m.value for m in topic.read(0)]
        assert values == [value_of(i) for i in range(survivors)] + [b"after-recovery", b"x", b"y"]


def flip_value_byte(pdir: Path, base: int, which: int) -> BatchInfo:
    """Flips one byte inside a record value of batch number ``which`` of segment ``base``."""
    path = seg_path(pdir, base, "log")
    data = bytearray(path.read_bytes())
    batches, _ = parse_batches(bytes(data), base)
    batch = batches[which]
    at = batch.position + BATCH_HEADER_LEN + batch.count * batch.entry_len + 3
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    return batch


def test_bit_flip_in_a_sealed_segment_is_reported_and_contained(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    n = 400
    fill(store_dir, n, segment_bytes=4096)
    pdir = partition_dir(store_dir)
    bases = segment_bases(pdir)
    assert len(bases) >= 5
    damaged_seg = bases[1]
    batches, _ = parse_batches(seg_path(pdir, damaged_seg, "log").read_bytes(), damaged_seg)
    assert len(batches) >= 3
    bad = flip_value_byte(pdir, damaged_seg, len(batches) // 2)
    path = seg_path(pdir, damaged_seg, "log")
    with opened(store_dir, segment_bytes=4096) as topic:
        # Reading the damaged batch names the file and the offset.
        with pytest.raises(tidelog.CorruptRecordError) as err:
            topic.read_batch(0, bad.base_offset)
        assert str(path) in str(err.value)
        assert f"offset {bad.base_offset}" in str(err.value)
        # Iterating over it raises too, after yielding everything before it.
        seen = []
        with pytest.raises(tidelog.CorruptRecordError) as err:
            for m in topic.read(0):
                seen.append(m.value)
        assert seen == [value_of(i) for i in range(bad.base_offset)]
        assert f"offset {bad.base_offset}" in str(err.value)
        # A read from before the damage hands out the good messages first, then names the
        # damaged batch (not the offset the read started at).
        before = topic.read_batch(0, damaged_seg)
        assert before.values() == [value_of(i) for i in range(damaged_seg, bad.base_offset)]
        with pytest.raises(tidelog.CorruptRecordError) as err:
            topic.read_batch(0, before.next_offset)
        assert f"offset {bad.base_offset}" in str(err.value)
        # The intact batches after the damaged one in the same segment stay readable.
        after = bad.base_offset + bad.count
        next_seg = bases[2]
        assert [m.value for m in topic.read(0, after)][: next_seg - after] == [
            value_of(i) for i in range(after, next_seg)
        ]
        # Every other segment stays readable, by offset and by time.
        for b in [bases[0], *bases[2:]]:
            batch = topic.read_batch(0, b)
            assert len(batch) > 0
            assert batch.values() == [value_of(i) for i in range(b, b + len(batch))]
        assert [m.value for m in topic.read(0, bases[2])] == [
            value_of(i) for i in range(bases[2], n)
        ]
        t = expected_timestamps(n)[bases[3]]
        assert topic.offset_for_timestamp(0, t) == bases[3]
        # The log keeps accepting appends.
        assert topic.append(b"more") == (0, n)


def check_reads(topic: tidelog.Topic, n: int) -> None:
    """Every offset reads back its own value, and every time lookup finds the first message
    at or after the timestamp."""
    stamps = expected_timestamps(n)
    assert topic.end_offset(0) == n
    for i in range(n):
        batch = topic.read_batch(0, i, max_messages=1)
        assert batch.values() == [value_of(i)], f"offset {i}"
    for t in sorted({s + d for s in stamps for d in (-1, 0, 1)}):
        expected = next((o for o, s in enumerate(stamps) if s >= t), None)
        assert topic.offset_for_timestamp(0, t) == expected, f"timestamp {t}"
    middle = stamps[n // 2]
    first = next(o for o, s in enumerate(stamps) if s >= middle)
    assert [m.offset for m in topic.read(0, timestamp_ms=middle)] == list(range(first, n))


@pytest.mark.parametrize(
    "damage",
    ["delete-index", "delete-timeindex", "delete-both", "garble-index", "empty-index"],
)
def test_sealed_index_damage_is_rebuilt(tmp_path: Path, damage: str) -> None:
    store_dir = tmp_path / "store"
    n = 300
    options = {"segment_bytes": 8192, "index_interval_bytes": 256}
    fill(store_dir, n, **options)
    pdir = partition_dir(store_dir)
    bases = segment_bases(pdir)
    assert len(bases) >= 3
    index = seg_path(pdir, bases[1], "index")
    time_index = seg_path(pdir, bases[1], "timeindex")
    assert index.stat().st_size >= 5 * 8, "the sealed segment has several index entries"
    if damage == "delete-index":
        index.unlink()
    elif damage == "delete-timeindex":
        time_index.unlink()
    elif damage == "delete-both":
        index.unlink()
        time_index.unlink()
    elif damage == "garble-index":
        index.write_bytes(random.Random(1).randbytes(index.stat().st_size))
    else:
        index.write_bytes(b"")
    with opened(store_dir, **options) as topic:
        check_reads(topic, n)
    # Reading works again after yet another reopen (the rebuilt files are sound).
    with opened(store_dir, **options) as topic:
        check_reads(topic, n)
