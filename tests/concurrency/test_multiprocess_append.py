"""Many writers on one topic at once: processes (each with its own store handle), a writer
killed while holding the append lock, a reader in another process, and threads.

Every check is on the final log: each acknowledged append is stored exactly once at the
offset it was given, batches are whole, offsets are dense, and each writer's messages keep
their order within a partition.
"""

from __future__ import annotations

import itertools
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import tidelog

SEGMENT_BYTES = 16384
OPTIONS = {"segment_bytes": SEGMENT_BYTES, "max_message_bytes": 4096}

# Appends `count` batches (forever if count < 0) once `go` exists, and acknowledges each
# one that returned as "partition offset seq n" in the ack file (page cache survives a
# SIGKILL). Value j of batch seq is b"<writer>:<seq>:<j>:<n>:" plus padding.
WRITER = textwrap.dedent(
    """
    import os, random, sys, time
    import numpy as np
    import tidelog

    store_dir, ack_path, writer, count, go, seed, segment_bytes = sys.argv[1:8]
    count = int(count)
    rng = random.Random(int(seed))
    store = tidelog.open(store_dir, segment_bytes=int(segment_bytes), max_message_bytes=4096)
    topic = store.topic("t")
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    while not os.path.exists(go):
        time.sleep(0.001)

    def value(seq, j, n):
        return b"%s:%d:%d:%d:" % (writer.encode(), seq, j, n) + b"." * rng.randrange(0, 120)

    seq = 0
    while seq != count:
        p = rng.randrange(topic.partitions)
        kind = rng.randrange(3)
        if kind == 0:
            n = 1
            got = topic.append(value(seq, 0, 1), key=b"%d" % seq, partition=p)
        elif kind == 1:
            n = rng.randrange(1, 10)
            got = topic.append_batch([value(seq, j, n) for j in range(n)], partition=p)
        else:
            n = rng.randrange(1, 10)
            parts = [value(seq, j, n) for j in range(n)]
            lengths = np.array([len(x) for x in parts])
            got = topic.append_batch(b"".join(parts), lengths=lengths, partition=p)
        assert got[0] == p, got
        os.write(ack, b"%d %d %d %d\\n" % (p, got[1], seq, n))
        seq += 1
    store.close()
    """
)


@dataclass(frozen=True)
class Ack:
    writer: str
    partition: int
    offset: int
    seq: int
    count: int


def read_acks(path: Path, writer: str) -> list[Ack]:
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    out = []
    for line in lines:
        p, offset, seq, n = map(int, line.split())
        out.append(Ack(writer, p, offset, seq, n))
    return out


def read_log(store_dir: Path) -> list[list[bytes]]:
    """Every value of every partition of topic "t", checking offsets are dense from 0."""
    out = []
    with tidelog.open(store_dir, **OPTIONS) as store:  # type: ignore[arg-type]
        topic = store.topic("t")
        for p in range(topic.partitions):
            values: list[bytes] = []
            offset = 0
            while True:
                batch = topic.read_batch(p, offset)
                if len(batch) == 0:
                    break
                assert batch.offsets.tolist() == list(range(offset, offset + len(batch)))
                values.extend(v or b"" for v in batch.values())
                offset = batch.next_offset
            assert offset == topic.end_offset(p) == len(values)
            assert topic.start_offset(p) == 0
            out.append(values)
        del topic
    return out


def check_log(partitions: list[list[bytes]], acks: list[Ack], may_be_unacked: set[str]) -> None:
    """Checks the log against the acknowledgements: each batch whole and stored once, each
    acknowledged batch where its acknowledgement says, each writer's batches in order within a
    partition. Writers in ``may_be_unacked`` were killed: one batch of theirs may be stored
    without an acknowledgement."""
    found: dict[tuple[str, int], tuple[int, int, int]] = {}
    for p, values in enumerate(partitions):
        last_seq: dict[str, int] = {}
        at = 0
        while at < len(values):
            writer, seq_b, j_b, n_b = values[at].split(b":", 4)[:4]
            w, seq, j, n = writer.decode(), int(seq_b), int(j_b), int(n_b)
            assert j == 0, f"partition {p} offset {at}: a batch starts at its record {j}"
            assert at + n <= len(values), f"batch {w}:{seq} cut short"
            for k in range(1, n):
                prefix = b"%s:%d:%d:%d:" % (writer, seq, k, n)
                assert values[at + k].startswith(prefix), f"partition {p} offset {at + k}"
            assert (w, seq) not in found, f"batch {w}:{seq} stored twice"
            assert seq > last_seq.get(w, -1), f"{w}'s batches out of order in partition {p}"
            last_seq[w] = seq
            found[(w, seq)] = (p, at, n)
            at += n
    for a in acks:
        assert found.get((a.writer, a.seq)) == (a.partition, a.offset, a.count), a
    acked = {(a.writer, a.seq) for a in acks}
    unacked = [k for k in found if k not in acked]
    writers = [w for w, _ in unacked]
    assert all(w in may_be_unacked for w in writers), unacked
    assert len(writers) == len(set(writers)), unacked


def spawn_writer(
    tmp_path: Path, store_dir: Path, writer: str, count: int, seed: int
) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "writer.py"
    if not script.exists():
        script.write_text(WRITER)
    ack = tmp_path / f"acks-{writer}"
    args = [str(script), str(store_dir), str(ack), writer, str(count), str(tmp_path / "go")]
    args += [str(seed), str(SEGMENT_BYTES)]
    child = subprocess.Popen([sys.executable, *args], stderr=subprocess.PIPE)
    return child, ack


def wait_ok(child: subprocess.Popen[bytes], timeout: float = 60) -> None:
    _, stderr = child.communicate(timeout=timeout)
    assert child.returncode == 0, stderr.decode()


def create_topic(store_dir: Path, partitions: int) -> None:
    with tidelog.open(store_dir, **OPTIONS) as store:  # type: ignore[arg-type]
        store.create_topic("t", partitions=partitions)


def test_four_processes_append_to_one_topic(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    create_topic(store_dir, 3)
    children = [spawn_writer(tmp_path, store_dir, f"p{i}", 1500, i) for i in range(4)]
    # A writer creates its ack file once its store is open: start them all together.
    deadline = time.monotonic() + 30
    while not all(path.exists() for _, path in children):
        assert all(child.poll() is None for child, _ in children)
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.005)
    (tmp_path / "go").touch()
    for child, _ in children:
        wait_ok(child)
    acks = [a for i, (_, path) in enumerate(children) for a in read_acks(path, f"p{i}")]
    assert len(acks) == 4 * 1500
    partitions = read_log(store_dir)
    check_log(partitions, acks, set())
    assert sum(len(v) for v in partitions) == sum(a.count for a in acks)
    # The writers really ran at the same time: their batches interleave in each partition
    # (one after the other would switch writers at most 3 times per partition).
    for values in partitions:
        writers = [v.split(b":", 1)[0] for v in values]
        switches = sum(a != b for a, b in itertools.pairwise(writers))
        assert switches > 10


# Where a partition's append lock (a robust, process-shared pthread mutex) lives in its
# control file, and glibc's layout of it: the first word holds the owner's thread id (plus
# the FUTEX_WAITERS / FUTEX_OWNER_DIED bits), the third one the owner again.
CONTROL_MUTEX_AT = 64
FUTEX_TID_MASK = 0x3FFFFFFF


def lock_owner(control: Path) -> int:
    lock_word, _, owner = struct.unpack_from("<iIi", control.read_bytes(), CONTROL_MUTEX_AT)
    return int(owner) if owner > 0 else int(lock_word) & FUTEX_TID_MASK


def stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def kill_holding_the_lock(
    victim: subprocess.Popen[bytes], controls: list[Path], rng: random.Random
) -> bool:
    """SIGKILLs ``victim``, preferably at a moment it holds an append lock: stops it at
    random moments until a control block names it as the lock owner. Returns whether it
    died holding a lock."""
    for _ in range(2000):
        time.sleep(rng.uniform(0, 0.002))
        victim.send_signal(signal.SIGSTOP)
        while not stopped(victim.pid):
            time.sleep(0.0001)
        if any(lock_owner(c) == victim.pid for c in controls):
            victim.send_signal(signal.SIGKILL)
            return True
        victim.send_signal(signal.SIGCONT)
    victim.send_signal(signal.SIGKILL)
    return False


def test_writers_survive_a_writer_killed_mid_append(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    create_topic(store_dir, 2)
    rng = random.Random(7)
    acks: list[Ack] = []
    victims: set[str] = set()
    died_holding_lock = 0
    for round_no in range(10):
        (tmp_path / "go").unlink(missing_ok=True)
        victim, victim_acks = spawn_writer(tmp_path, store_dir, f"v{round_no}", -1, round_no)
        survivors = [
            spawn_writer(tmp_path, store_dir, f"s{round_no}.{i}", 800, 100 * round_no + i)
            for i in range(3)
        ]
        (tmp_path / "go").touch()
        deadline = time.monotonic() + 30
        while not (victim_acks.exists() and victim_acks.stat().st_size > 0):
            assert victim.poll() is None, victim.communicate()[1].decode()
            assert time.monotonic() < deadline, "victim did not start appending"
            time.sleep(0.001)
        controls = [store_dir / "topics" / "t" / str(p) / "control" for p in range(2)]
        died_holding_lock += kill_holding_the_lock(victim, controls, rng)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        victims.add(f"v{round_no}")
        for child, _ in survivors:
            wait_ok(child)
        acks += read_acks(victim_acks, f"v{round_no}")
        for i, (_, path) in enumerate(survivors):
            got = read_acks(path, f"s{round_no}.{i}")
            assert len(got) == 800
            acks += got
        check_log(read_log(store_dir), acks, victims)
    # The owner-died path of the lock ran (the lock word layout is glibc's).
    assert died_holding_lock >= 5


READER = textwrap.dedent(
    """
    import sys, time
    import tidelog

    store_dir, expected, segment_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = tidelog.open(store_dir, segment_bytes=segment_bytes, max_message_bytes=4096)
    topic = store.topic("t")
    print("ready", topic.end_offset(0), flush=True)
    values, offset = [], 0
    deadline = time.monotonic() + 30
    while len(values) < expected and time.monotonic() < deadline:
        if topic.end_offset(0) == offset:
            time.sleep(0.001)
            continue
        batch = topic.read_batch(0, offset)
        assert batch.offsets.tolist() == list(range(offset, offset + len(batch)))
        values.extend(batch.values())
        offset = batch.next_offset
    for i, v in enumerate(values):
        assert v == b"m%d:" % i + b"x" * (i % 300), (i, v[:20])
    print("read", len(values), flush=True)
    """
)


def test_reader_process_sees_appends_without_reopening(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    n = 3000
    with tidelog.open(store_dir, **OPTIONS) as store:  # type: ignore[arg-type]
        topic = store.create_topic("t")
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(store_dir), str(n), str(SEGMENT_BYTES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert reader.stdout is not None
        assert reader.stdout.readline() == b"ready 0\n"
        # Bursts with pauses, so the reader polls an idle log too; segments roll meanwhile.
        for i in range(n):
            topic.append(b"m%d:" % i + b"x" * (i % 300))
            if i % 500 == 499:
                time.sleep(0.05)
        assert topic.segment_count(0) > 10
        out, err = reader.communicate(timeout=60)
        del topic
    assert reader.returncode == 0, err.decode()
    assert out == f"read {n}\n".encode()


@pytest.mark.parametrize("partitions", [1, 3])
def test_threads_append_concurrently(tmp_path: Path, partitions: int) -> None:
    per_thread = 1500
    with tidelog.open(tmp_path / "store", **OPTIONS) as store:  # type: ignore[arg-type]
        topic = store.create_topic("t", partitions=partitions)
        acks: list[Ack] = []
        lock = threading.Lock()
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def work(topic: tidelog.Topic, t: int) -> None:
            rng = random.Random(t)
            mine = []
            try:
                start.wait()
                for seq in range(per_thread):
                    p = rng.randrange(partitions)
                    if rng.random() < 0.7:
                        n = 1
                        value = b"t%d:%d:0:1:" % (t, seq)
                        got = topic.append(value, partition=p, key=b"k")
                    else:
                        n = rng.randrange(2, 6)
                        batch = [b"t%d:%d:%d:%d:" % (t, seq, j, n) for j in range(n)]
                        got = topic.append_batch(batch, partition=p)
                    assert got[0] == p
                    mine.append(Ack(f"t{t}", p, got[1], seq, n))
            except BaseException as e:  # reported by the main thread
                errors.append(e)
            with lock:
                acks.extend(mine)

        threads = [threading.Thread(target=work, args=(topic, t)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in threads)
        assert errors == []
        del topic
    assert len(acks) == 8 * per_thread
    partitions_values = read_log(tmp_path / "store")
    check_log(partitions_values, acks, set())
    assert sum(len(v) for v in partitions_values) == sum(a.count for a in acks)
