"""Damage and recovery (API.md, version 2): a flipped bit never silently deletes intact data.

A torn tail (nothing valid after the damage) is truncated and counted in
``stats()["recovery"]``; damage followed by valid batches raises CorruptRecordError unless
the store is opened with ``on_corruption="quarantine"`` (or ``tidelog repair``), which moves
it aside intact and records it. Consumers whose committed offsets point into removed data
get OffsetOutOfRangeError (or follow ``auto_offset_reset``) instead of silently skipping or
re-reading different messages at the same offsets.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tidelog
from tidelog.errors import CorruptRecordError, OffsetOutOfRangeError


def _active_log(store_dir: Path, topic: str = "t", partition: int = 0) -> Path:
    return Path(sorted(glob.glob(f"{store_dir}/topics/{topic}/{partition}/*.log"))[-1])


def _fill(store_dir: Path, n: int = 300) -> None:
    # One index entry (at position 0): byte 2000 lies after the last one, where recovery
    # walks the batches (the case).
    with tidelog.open(store_dir, fsync="always", index_interval_bytes=1 << 20) as store:
        t = store.create_topic("t")
        for i in range(n):
            t.append(b"job %05d" % i, partition=0)


def _after_last_index_entry(log: Path) -> int:
    """A position 100 bytes into the batches after the last offset-index entry of ``log``."""
    index = log.with_suffix(".index").read_bytes()
    positions = [
        int.from_bytes(index[i + 4 : i + 8], "little") for i in range(0, len(index) - 7, 8)
    ]
    return max(positions) + 100


def _flip(path: Path, at: int, bit: int = 2) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ (1 << bit)]))


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_DIR"}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_flipped_bit_followed_by_valid_batches_raises_naming_file_and_offset(
    tmp_path: Path,
) -> None:
    _fill(tmp_path)
    log = _active_log(tmp_path)
    _flip(log, 2000)
    before = log.read_bytes()
    for _ in range(2):
        # tidelog.open itself raises (every topic is recovered on open), and leaves nothing
        # open behind: the next attempt sees the same.
        with pytest.raises(CorruptRecordError) as info:
            tidelog.open(tmp_path)
        assert str(log) in str(info.value)
        assert "quarantine" in str(info.value)
    assert log.read_bytes().rstrip(b"\0") == before.rstrip(b"\0")
    with tidelog.open(tmp_path, on_corruption="quarantine") as store:
        assert store.topic("t").end_offset(0) < 300


def test_damage_before_the_last_index_entry_loses_nothing_and_reads_name_it(
    tmp_path: Path,
) -> None:
    # Recovery reads only the tail after the last index entry; earlier damage is found by
    # reads (and verify), never truncated.
    with tidelog.open(tmp_path, index_interval_bytes=256) as store:
        t = store.create_topic("t")
        for i in range(300):
            t.append(b"job %05d" % i, partition=0)
    log = _active_log(tmp_path)
    _flip(log, 2000)
    with tidelog.open(tmp_path) as store:
        t = store.topic("t")
        assert t.end_offset(0) == 300
        with pytest.raises(CorruptRecordError) as info:
            list(t.read(0, 0))
        assert str(log) in str(info.value)
        assert len(list(t.read(0, 100))) == 200
    assert _cli("verify", "--dir", tmp_path, "-q").returncode == 1


def test_quarantine_keeps_the_damage_aside_and_reports_it(tmp_path: Path) -> None:
    _fill(tmp_path)
    log = _active_log(tmp_path)
    _flip(log, 2000)
    with tidelog.open(tmp_path, on_corruption="quarantine") as store:
        t = store.topic("t")
        end = t.end_offset(0)
        assert 0 < end < 300
        assert [m.value for m in t.read(0, 0)] == [b"job %05d" % i for i in range(end)]
        (event,) = store.stats()["recovery"]
        assert event["topic"] == "t" and event["partition"] == 0
        assert event["kind"] == "quarantined"
        assert (event["first_offset"], event["end_offset"]) == (end, 300)
        moved = Path(event["path"])
        assert moved.parent == log.parent / "quarantine"
        assert moved.stat().st_size == event["bytes"] > 0
    # Reopened without the option: nothing left to refuse, and the record stays.
    with tidelog.open(tmp_path) as store:
        assert store.topic("t").end_offset(0) == end
        assert len(store.stats()["recovery"]) == 1
    out = _cli("verify", "--dir", tmp_path, "-q")
    assert out.returncode == 1
    assert "quarantined" in out.stdout and str(end) in out.stdout


def test_a_torn_tail_is_truncated_and_counted(tmp_path: Path) -> None:
    _fill(tmp_path, 20)
    log = _active_log(tmp_path)
    size = len(log.read_bytes().rstrip(b"\0"))
    with open(log, "r+b") as f:
        f.seek(size - 4)
        f.write(b"\0" * 4)
    with tidelog.open(tmp_path) as store:
        assert store.topic("t").end_offset(0) == 19
        (event,) = store.stats()["recovery"]
        assert event["kind"] == "torn_tail"
        assert (event["first_offset"], event["end_offset"]) == (19, 20)
    # A torn tail is what a crash leaves: verify reports it but does not fail.
    out = _cli("verify", "--dir", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "torn_tail" in out.stdout


def test_damaged_tail_is_repaired_even_when_a_topic_was_referenced_at_close(
    tmp_path: Path,
) -> None:
    store = tidelog.open(tmp_path)
    t = store.create_topic("t")
    for i in range(10):
        t.append(b"m%d" % i)
    store.close()  # ``t`` is still referenced: its files stay mapped and untrimmed
    log = _active_log(tmp_path)
    end = len(log.read_bytes().rstrip(b"\0"))
    with open(log, "r+b") as f:
        f.seek(end - 30)
        f.write(b"\0" * 30)
    with tidelog.open(tmp_path) as again:
        t2 = again.topic("t")
        assert t2.end_offset(0) == 9
        assert [m.value for m in t2.read(0, 0)] == [b"m%d" % i for i in range(9)]
    del t


def test_verify_passes_an_empty_partition_left_by_a_crash(tmp_path: Path) -> None:
    code = (
        "import os, tidelog\n"
        f"s = tidelog.open({str(tmp_path)!r})\n"
        "s.create_topic('empty', partitions=2)\n"
        "s.create_topic('full').append(b'x')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    out = _cli("verify", "--dir", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_verify_passes_a_torn_tail_left_by_a_crash_but_not_damage_before_valid_data(
    tmp_path: Path,
) -> None:
    code = (
        "import os, tidelog\n"
        f"s = tidelog.open({str(tmp_path)!r})\n"
        "t = s.create_topic('t')\n"
        "for i in range(50): t.append(b'message %d' % i)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    log = _active_log(tmp_path)
    end = len(log.read_bytes().rstrip(b"\0"))
    with open(log, "r+b") as f:  # half a batch, as a kill in the middle of an append leaves
        f.seek(end)
        f.write(bytes(range(1, 60)))
    out = _cli("verify", "--dir", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "torn tail" in out.stdout
    _flip(log, 100)
    out = _cli("verify", "--dir", tmp_path)
    assert out.returncode == 1, out.stdout


def test_repair_command_quarantines_and_then_the_store_opens(tmp_path: Path) -> None:
    _fill(tmp_path)
    _flip(_active_log(tmp_path), 2000)
    out = _cli("repair", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "quarantined" in out.stdout
    with tidelog.open(tmp_path) as store:
        assert 0 < store.topic("t").end_offset(0) < 300
    again = _cli("repair", tmp_path)
    assert again.returncode == 0 and "nothing to repair" in again.stdout


def _commit_all(store_dir: Path) -> None:
    with tidelog.open(store_dir) as store, store.consumer("t", group="g") as consumer:
        got = 0
        while got < 300:
            got += len(consumer.poll(timeout=1.0))
        consumer.commit()
        assert consumer.committed() == {0: 300}


@pytest.mark.parametrize("appended_after", [0, 400])
def test_a_group_committed_past_removed_data_gets_offset_out_of_range(
    tmp_path: Path, appended_after: int
) -> None:
    _fill(tmp_path)
    _commit_all(tmp_path)  # reopening rebuilt the index at the default cadence
    log = _active_log(tmp_path)
    _flip(log, _after_last_index_entry(log))
    with tidelog.open(tmp_path, on_corruption="quarantine") as store:
        t = store.topic("t")
        end = t.end_offset(0)
        # New messages reuse the removed offsets; the group must not skip them silently.
        for i in range(appended_after):
            t.append(b"new %d" % i, partition=0)
        with store.consumer("t", group="g") as consumer, pytest.raises(OffsetOutOfRangeError):
            consumer.poll(timeout=0.1)
        with store.consumer("t", group="g", auto_offset_reset="earliest") as consumer:
            msgs = consumer.poll(max_messages=1, timeout=1.0)
            assert [m.offset for m in msgs] == [0]
        with store.consumer("t", group="g2") as other:
            # No commit: the start policy, no error.
            assert [m.offset for m in other.poll(max_messages=1, timeout=1.0)] == [0]
        assert end < 300


def test_auto_offset_reset_latest_resumes_at_the_end(tmp_path: Path) -> None:
    _fill(tmp_path)
    _commit_all(tmp_path)  # reopening rebuilt the index at the default cadence
    log = _active_log(tmp_path)
    _flip(log, _after_last_index_entry(log))
    with tidelog.open(tmp_path, on_corruption="quarantine") as store:
        t = store.topic("t")
        end = t.end_offset(0)
        with store.consumer("t", group="g", auto_offset_reset="latest") as consumer:
            assert consumer.poll(timeout=0.05) == []
            t.append(b"after", partition=0)
            msgs = consumer.poll(timeout=1.0)
            assert [(m.offset, m.value) for m in msgs] == [(end, b"after")]


def test_auto_offset_reset_is_checked(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t")
        with pytest.raises(tidelog.InvalidConfigError):
            store.consumer("t", group="g", auto_offset_reset="middle")  # type: ignore[arg-type]


def test_on_corruption_is_checked(tmp_path: Path) -> None:
    with pytest.raises(tidelog.InvalidConfigError):
        tidelog.open(tmp_path, on_corruption="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize("appended_after", [1, 400])
def test_a_work_queue_whose_state_is_past_removed_data_raises(
    tmp_path: Path, appended_after: int
) -> None:
    _fill(tmp_path)
    with tidelog.open(tmp_path) as store, store.work_queue("t", group="w") as queue:
        done = 0
        while done < 300:
            jobs = queue.acquire_many(100, timeout=1.0)
            for job in jobs:
                queue.ack(job)
            done += len(jobs)
    log = _active_log(tmp_path)
    _flip(log, _after_last_index_entry(log))
    with tidelog.open(tmp_path, on_corruption="quarantine") as store:
        t = store.topic("t")
        assert t.end_offset(0) < 300
        # New messages take the removed offsets (with 400, the log ends past the queue's
        # frontier again): the queue must not take them for finished ones.
        for i in range(appended_after):
            t.append(b"new %d" % i, partition=0)
        with store.work_queue("t", group="w") as queue, pytest.raises(OffsetOutOfRangeError):
            queue.acquire(timeout=0.1)
        with store.work_queue("t", group="w") as queue, pytest.raises(OffsetOutOfRangeError):
            queue.acquire(timeout=0.1)  # every later open says so too
        # A queue made after the recovery starts from the log as it is.
        with store.work_queue("t", group="fresh") as queue:
            first = queue.acquire(timeout=1.0)
            assert first is not None and first.offset == 0
            queue.ack(first)
    with tidelog.open(tmp_path) as store, store.work_queue("t", group="fresh") as queue:
        second = queue.acquire(timeout=1.0)
        assert second is not None and second.offset == 1  # the recovery is not held against it


def test_a_work_queue_past_an_old_torn_tail_goes_on(tmp_path: Path) -> None:
    """A recovery that removed nothing the queue had seen never stops it."""
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        t.append_batch([b"job %d" % i for i in range(10)], partition=0)
        with store.work_queue("t", group="w") as queue:
            for job in queue.acquire_many(10, timeout=1.0):
                queue.ack(job)
    # A torn tail after the last batch (a kill mid-append): nothing acknowledged is lost.
    with tidelog.open(tmp_path) as store:
        size = store.topic("t").size_bytes(0)
    with open(_active_log(tmp_path), "r+b") as f:
        f.seek(size)
        f.write(b"\x01" * 40)
    with tidelog.open(tmp_path) as store:
        assert len(store.stats()["recovery"]) == 1
        t = store.topic("t")
        t.append(b"job 10", partition=0)
        with store.work_queue("t", group="w") as queue:
            after = queue.acquire(timeout=1.0)
            assert after is not None and (after.offset, after.value) == (10, b"job 10")


def test_an_at_most_once_member_that_commits_past_a_stale_commit_starts_there(
    tmp_path: Path,
) -> None:
    """The group's commit points into data recovery removed, so the member is placed out of
    range; it commits an offset of its own before its first poll, which starts at that
    commit (as a Kafka consumer reads its commit at the first poll). Before, the placement
    there kept the first placement's out-of-range mark: the poll raised."""
    _fill(tmp_path)
    _commit_all(tmp_path)
    log = _active_log(tmp_path)
    _flip(log, _after_last_index_entry(log))
    with tidelog.open(tmp_path, on_corruption="quarantine") as store:
        t = store.topic("t")
        end = t.end_offset(0)
        for i in range(3):
            t.append(b"new %d" % i, partition=0)
        with store.consumer("t", group="g", delivery="at-most-once") as consumer:
            consumer.commit({0: end + 1})
            got = consumer.poll(max_messages=2, timeout=1.0)
            assert [m.offset for m in got] == [end + 1, end + 2]
