"""Damage to a work queue's state files: reported (naming the file), never turned silently into
redelivered acknowledged jobs; a torn tail (a record cut short by a crash) is truncated and
counted; ``tidelog verify`` checks the queues; a store written by the first journal format
keeps its queue state.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tidelog
from tidelog.queue_journal import QueueFiles, queue_files
from tidelog.queue_state import ACK, ACQUIRE, QueueState, encode_record

N = 20  # messages in the topic
ACKED = 10  # acknowledged one by one (two records each: the acquisition and the ack)


@pytest.fixture
def store_dir(tmp_path: Path) -> Iterator[Path]:
    """A store whose queue "w" on "jobs" acknowledged offsets 0..9 of 0..19, one record each."""
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        topic = store.create_topic("jobs")
        for i in range(N):
            topic.append(b"job %d" % i)
        with store.work_queue("jobs", group="w") as queue:
            for _ in range(ACKED):
                job = queue.acquire(timeout=0)
                assert job is not None
                queue.ack(job)
    yield path


def _files(store_dir: Path) -> QueueFiles:
    return queue_files(store_dir, "jobs", "w")


def _header_lens(raw: bytes) -> tuple[int, int]:
    """(journal header, frame header) lengths of the journal's format."""
    return (16, 8) if raw[:8] == b"TLWQJRNL" else (24, 20)


def _open_offsets(store_dir: Path) -> list[int]:
    """The offsets a new member is handed (all of them, at once)."""
    with tidelog.open(store_dir) as store, store.work_queue("jobs", group="w") as queue:
        return [j.offset for j in queue.acquire_many(100, timeout=0)]


def _open_fails(store_dir: Path, match: str) -> None:
    with tidelog.open(store_dir) as store, pytest.raises(tidelog.CorruptRecordError, match=match):
        store.work_queue("jobs", group="w")


def _compact(store_dir: Path) -> None:
    """Writes the queue's state as a snapshot of the next generation."""
    with tidelog.open(store_dir) as store, store.work_queue("jobs", group="w") as queue:
        journal = queue._journal
        with journal.locked():
            journal.compact()


def _flip(path: Path, position: int, mask: int = 0x01) -> bytes:
    raw = bytearray(path.read_bytes())
    raw[position] ^= mask
    path.write_bytes(bytes(raw))
    return bytes(raw)


def test_a_damaged_record_in_the_middle_is_an_error_and_later_acks_are_kept(
    store_dir: Path,
) -> None:
    journal = _files(store_dir).journal
    position = journal.stat().st_size // 3  # records of acks follow it
    damaged = _flip(journal, position)
    with (
        tidelog.open(store_dir) as store,
        pytest.raises(tidelog.CorruptRecordError, match=journal.name) as info,
    ):
        store.work_queue("jobs", group="w")
    assert "position" in str(info.value)
    assert journal.read_bytes() == damaged, "nothing after the damage was cut off"
    _flip(journal, position)  # repaired: every acknowledgement is still there
    assert _open_offsets(store_dir) == list(range(ACKED, N))


@pytest.mark.parametrize("where", ["magic", "generation"])
def test_a_flipped_bit_in_the_journal_header_is_an_error_not_a_reset(
    store_dir: Path, where: str
) -> None:
    files = _files(store_dir)
    _compact(store_dir)  # generation 1: a flipped bit can make it 0
    position = {"magic": 3, "generation": 8}[where]
    _flip(files.journal, position)
    _open_fails(store_dir, "journal")
    _flip(files.journal, position)
    assert _open_offsets(store_dir) == list(range(ACKED, N))


def test_a_flipped_bit_in_a_frame_header_is_an_error(store_dir: Path) -> None:
    journal = _files(store_dir).journal
    header, _ = _header_lens(journal.read_bytes())
    _flip(journal, header + 4)  # in the first record's frame header
    _open_fails(store_dir, "journal")


def test_a_zeroed_frame_header_is_a_corrupt_record_error(store_dir: Path) -> None:
    journal = _files(store_dir).journal
    raw = bytearray(journal.read_bytes())
    header, frame = _header_lens(bytes(raw))
    raw[header : header + frame] = bytes(frame)
    journal.write_bytes(bytes(raw))
    for _ in range(2):  # every open, not only the first
        with (
            tidelog.open(store_dir) as store,
            pytest.raises(tidelog.CorruptRecordError, match=journal.name),
        ):
            store.work_queue("jobs", group="w")


def test_a_zeroed_tail_is_a_torn_tail_truncated_and_counted(store_dir: Path) -> None:
    journal = _files(store_dir).journal
    size = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(bytes(100))  # as a file system may leave the end of a file after a crash
    with tidelog.open(store_dir) as store, store.work_queue("jobs", group="w") as queue:
        stats = queue.stats()
        assert stats["recovery"] == {"torn_tails": 1, "bytes_truncated": 100}
        assert stats["acked"] == ACKED
        assert journal.stat().st_size == size
        assert [j.offset for j in queue.acquire_many(100, timeout=0)] == list(range(ACKED, N))


def test_a_record_cut_short_is_truncated_and_the_queue_works(store_dir: Path) -> None:
    journal = _files(store_dir).journal
    with open(journal, "r+b") as f:
        f.truncate(journal.stat().st_size - 3)  # the last record (the ack of 9) cut short
    with tidelog.open(store_dir) as store, store.work_queue("jobs", group="w") as queue:
        assert queue.stats()["recovery"]["torn_tails"] == 1
        jobs = queue.acquire_many(100, timeout=0)
        # 9's ack was torn: 9 is still held by the (gone) member until its lock expires.
        assert [j.offset for j in jobs] == list(range(ACKED, N))
        queue.ack_many(jobs)
    with tidelog.open(store_dir) as store, store.work_queue("jobs", group="w") as queue:
        assert queue.stats()["acked"] == N - 1
        assert queue.stats()["recovery"]["torn_tails"] == 0


def test_verify_reports_a_damaged_journal(store_dir: Path) -> None:
    ok = _cli("verify", "-q", "-d", store_dir)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    journal = _files(store_dir).journal
    _flip(journal, journal.stat().st_size // 3)
    bad = _cli("verify", "-d", store_dir)
    assert bad.returncode == 1
    assert str(journal) in bad.stdout and "work queue 'w'" in bad.stdout
    assert "1 problem" in bad.stdout


def test_verify_reports_a_damaged_snapshot_and_accepts_a_torn_tail(store_dir: Path) -> None:
    files = _files(store_dir)
    with open(files.journal, "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn tail after a crash is not damage
    assert _cli("verify", "-q", "-d", store_dir).returncode == 0
    _compact(store_dir)
    _flip(files.snapshot, files.snapshot.stat().st_size - 2)
    bad = _cli("verify", "-q", "-d", store_dir)
    assert bad.returncode == 1 and str(files.snapshot) in bad.stdout


def test_fsync_interval_is_done_by_the_background_syncer(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "s", fsync="interval", fsync_interval_ms=20) as store:
        store.create_topic("jobs").append(b"x")
        with store.work_queue("jobs", group="w") as queue:
            job = queue.acquire(timeout=0)
            assert job is not None
            queue.ack(job)  # the last record: no later write comes to sync it
            log = queue._journal._log
            deadline = time.monotonic() + 30
            while log.syncs == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert log.syncs >= 1


def test_no_work_queue_module_computes_crcs_syncs_or_locks_files() -> None:
    import tidelog.queue_journal
    import tidelog.queue_state
    import tidelog.workqueue

    for module in (
        tidelog.queue_journal,
        tidelog.queue_state,
        tidelog.workqueue,
    ):
        assert module.__file__ is not None
        source = Path(module.__file__).read_text()
        for word in ("zlib", "crc32", "fcntl", "flock", "fsync(", "fdatasync("):
            assert word not in source, f"{module.__name__} uses {word}"


# --------------------------------------------------------------------------- first format


def _v1_journal(generation: int, records: list[bytes]) -> bytes:
    out = [b"TLWQJRNL" + struct.pack("<Q", generation)]
    out += [struct.pack("<II", len(r), zlib.crc32(r)) + r for r in records]
    return b"".join(out)


def _v1_snapshot(generation: int, state: QueueState) -> bytes:
    body = json.dumps(state.to_json()).encode()
    return b"TLWQSNAP" + struct.pack("<QI", generation, zlib.crc32(body)) + body


def _first_format_store(tmp_path: Path, tail: bytes = b"") -> Path:
    """A store whose queue files are in the first journal format (as main wrote them)."""
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        topic = store.create_topic("jobs")
        for i in range(N):
            topic.append(b"job %d" % i)
    files = _files(path)
    files.directory.mkdir(parents=True)
    files.lock.touch()
    snapshot = QueueState.empty(1)
    snapshot.apply("old", [(ACQUIRE, 0, 0, 4, 9, 1), (ACK, 0, 0, 4, 0, 0)])
    files.snapshot.write_bytes(_v1_snapshot(3, snapshot))
    records = [
        encode_record("old", [(ACQUIRE, 0, 4, 8, 9, 1)]),
        encode_record("old", [(ACK, 0, 4, 6, 0, 0)]),
        encode_record("old", [(ACK, 0, 6, 8, 0, 0)]),
    ]
    files.journal.write_bytes(_v1_journal(3, records) + tail)
    return path


@pytest.mark.parametrize("tail", [b"", bytes(40), b"\x30\x00\x00\x00torn"])
def test_a_store_of_the_first_journal_format_keeps_its_queue_state(
    tmp_path: Path, tail: bytes
) -> None:
    store_dir = _first_format_store(tmp_path, tail)
    files = _files(store_dir)
    assert _open_offsets(store_dir) == list(range(8, N))
    assert files.journal.read_bytes()[:8] != b"TLWQJRNL", "converted once"
    assert files.snapshot.read_bytes()[:8] != b"TLWQSNAP"
    assert _cli("verify", "-q", "-d", store_dir).returncode == 0
    with tidelog.open(store_dir) as store, store.work_queue("jobs", group="w") as queue:
        assert queue.stats()["acked"] == 8


def test_damage_in_a_first_format_journal_is_reported(tmp_path: Path) -> None:
    store_dir = _first_format_store(tmp_path)
    journal = _files(store_dir).journal
    _flip(journal, 16 + 8 + 2)  # inside the first record, two more follow
    _open_fails(store_dir, "journal")
    assert _cli("verify", "-q", "-d", store_dir).returncode == 1


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "NO_COLOR": "1"},
    )
