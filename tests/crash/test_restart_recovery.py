"""A power loss after writes that were not all synced, then a restart of the machine.

The kernel writes dirty pages back in any order: a power loss may keep later pages of a
segment (and the index entries pointing into them, written through another file) and lose
earlier ones. Before, recovery started at the last intact index entry and kept such a hole
inside the log (reading from the start raised `CorruptRecordError` at it), or refused to
open when a lost page held a batch header. After a restart it must cut the log at the first
damaged batch past the last sync and keep everything synced, unchanged.

The power losses are made by hand: a writer process ends without closing (the page cache as
it left it), the data file loses unsynced pages at random, and the control block gets
another boot's id (bytes 520..536, docs/FORMAT.md), which is what recovery sees after a
restart. `test_power_loss.py` cannot make these: writes through a mapping are not traced.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tidelog
from crc32c import crc32c

pytestmark = pytest.mark.crash

PAGE = 4096
MESSAGES = 900
SYNCED = 300


def value(i: int) -> bytes:
    return b"%04d" % i * 50


SEGMENT_BYTES = 64 << 10

DEFAULT = 'fsync="interval", fsync_interval_ms=3_600_000'
SEALED_WITHOUT_SYNC = f'fsync="never", segment_bytes={SEGMENT_BYTES}'
"""How `write` opens the store: one segment synced in the middle, or several small segments
that rolls under "never" sealed without a sync."""


def run_writer(script: str, store_dir: Path, prelude: str = "") -> None:
    """Runs the writer ``script`` (indented source, after ``prelude``) on ``store_dir``."""
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script), str(store_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def write(store_dir: Path, options: str = DEFAULT) -> None:
    """Appends MESSAGES, syncing after the first SYNCED; ends without closing anything."""
    script = f"""
        import os, sys, tidelog
        store = tidelog.open(sys.argv[1], {options})
        topic = store.create_topic("t", partitions=1)
        for i in range({MESSAGES}):
            topic.append(b"%04d" % i * 50, partition=0)
            if i == {SYNCED - 1}:
                store.sync()
        os._exit(0)
        """
    run_writer(script, store_dir)


def restart(partition: Path) -> None:
    """What a reboot does as far as recovery can tell: the control block names another boot
    (bytes 520..536, docs/FORMAT.md)."""
    with open(partition / "control", "r+b") as control:
        control.seek(520)
        control.write(b"\xab" * 16)


def lose(data_file: Path, start: int, end: int) -> None:
    """Bytes ``start..end`` of ``data_file`` never reached the disk: they read as zeros."""
    data = bytearray(data_file.read_bytes())
    data[start:end] = bytes(end - start)
    data_file.write_bytes(data)


def lose_pages(store_dir: Path, seed: int) -> int:
    """Zeros a random half of the data pages written after the sync, in every segment, then
    'restarts'; returns how many segments the partition has."""
    partition = store_dir / "topics" / "t" / "0"
    files = sorted(partition.glob("*.log"))
    chance = random.Random(seed)
    unsynced = -1
    for data_file in files:
        data = bytearray(data_file.read_bytes())
        # Every byte from the first unsynced message's value on was written after the sync.
        if unsynced < 0:
            unsynced = data.find(value(SYNCED))
            if unsynced < 0:
                continue  # wholly before the sync
        last = data.find(value(MESSAGES - 1))
        end = len(data) if last < 0 else last + len(value(MESSAGES - 1))
        for page in range(-(-unsynced // PAGE), -(-end // PAGE)):
            if chance.random() < 0.5:
                data[page * PAGE : (page + 1) * PAGE] = bytes(PAGE)
        data_file.write_bytes(data)
        unsynced = 0
    assert unsynced == 0, "no message after the sync was found"
    restart(partition)
    return len(files)


def assert_reported_as_unsynced(store_dir: Path, lost: int) -> None:
    """What a power loss took is a note of `tidelog verify` (exit 0, as after any crash),
    not a problem, and `Store.stats()` names it for what it is."""
    verify = subprocess.run(
        [sys.executable, "-m", "tidelog", "verify", "--dir", str(store_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "unsynced" in verify.stdout, verify.stdout
    with tidelog.open(store_dir) as store:
        events = store.stats()["recovery"]
    assert {e["kind"] for e in events} == {"unsynced"}, events
    assert events[-1]["first_offset"] == MESSAGES - lost, events


@pytest.mark.parametrize(
    ("options", "seeds"), [(DEFAULT, 40), (SEALED_WITHOUT_SYNC, 20)], ids=["active", "sealed"]
)
def test_unsynced_pages_lost_out_of_order_leave_no_hole(
    tmp_path: Path, options: str, seeds: int
) -> None:
    """A roll under "never" seals a segment without syncing it: after a power loss it may
    have lost pages just as the active segment may (before, reads raised at the hole)."""
    written = tmp_path / "written"
    write(written, options)
    expected = [value(i) for i in range(MESSAGES)]
    cut = 0
    for seed in range(seeds):
        image = tmp_path / f"image-{seed}"
        shutil.copytree(written, image)
        segments = lose_pages(image, seed)
        assert segments > 3 or options == DEFAULT
        with tidelog.open(image) as store:
            topic = store.topic("t")
            got = [m.value for m in topic.read(partition=0, offset=0)]
            assert topic.end_offset(0) == len(got), f"seed {seed}: the end is past a hole"
        assert len(got) >= SYNCED, f"seed {seed}: synced messages lost ({len(got)} left)"
        assert got == expected[: len(got)], f"seed {seed}: messages changed"
        if len(got) < MESSAGES:
            cut += 1
            assert_reported_as_unsynced(image, MESSAGES - len(got))
        # Opening again in this boot finds nothing more to do, and appends go on from the cut.
        with tidelog.open(image) as store:
            assert [m.value for m in store.topic("t").read(partition=0, offset=0)] == got
            store.topic("t").append(b"after", partition=0)
        with tidelog.open(image) as store:
            assert [m.value for m in store.topic("t").read(partition=0, offset=0)] == [
                *got,
                b"after",
            ]
        shutil.rmtree(image)
    assert cut > 0, "no image lost a page the log needed: the test showed nothing"


def test_damage_to_synced_data_after_a_restart_is_refused(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    write(store_dir)
    partition = store_dir / "topics" / "t" / "0"
    data_file = partition / ("0" * 20 + ".log")
    data = bytearray(data_file.read_bytes())
    # A synced message's bytes changed on disk: not what a power loss does.
    at = data.find(value(SYNCED - 10))
    data[at : at + 10] = bytes(10)
    data_file.write_bytes(data)
    lose_pages(store_dir, seed=0)
    with pytest.raises(tidelog.CorruptRecordError, match=r"offset 290\b"):
        tidelog.open(store_dir)


def test_producer_snapshots_above_a_sealed_cut_are_not_trusted_later(tmp_path: Path) -> None:
    """A transaction open across a roll under "never", a power loss that cuts the log below
    that roll, then acknowledged appends that grow the log back past it: readers must reach
    them. The snapshot taken at the roll (an open transaction, from the lost data) must not
    come back as the producer state of the new data."""
    store_dir = tmp_path / "store"
    script = f"""
        import os, sys, tidelog
        store = tidelog.open(sys.argv[1], {SEALED_WITHOUT_SYNC})
        store.create_topic("t", partitions=1)
        producer = store.producer(name="p", idempotent=True)
        for i in range(550):
            producer.send("t", value(i), partition=0)
            if i % 50 == 49:
                producer.flush()
        tx = store.transaction(producer)
        tx.__enter__()
        for i in range(550, 700):  # the roll near 600 snapshots the open transaction
            tx.send("t", value(i), partition=0)
            if i % 50 == 49:
                producer.flush()
        producer.flush()
        os._exit(0)
        """
    prelude = "def value(i):\n    return b'%04d' % i * 50\n"
    run_writer(script, store_dir, prelude)
    partition = store_dir / "topics" / "t" / "0"
    # Where the roll fell depends on how the writer cut the sends into batches (a batch of
    # the last sends before the segment filled can end a few offsets past 600): what the
    # test needs is a roll while the transaction was open.
    rolled = int(sorted(partition.glob("*.log"))[2].stem)
    assert 550 < rolled < 700
    assert (partition / f"{rolled:020}.snapshot").exists()
    # The power loss: a page of the second segment (sealed, never synced) is lost.
    second = sorted(partition.glob("*.log"))[1]
    lose(second, 2 * PAGE, 3 * PAGE)
    restart(partition)
    with tidelog.open(store_dir, fsync="never", segment_bytes=SEGMENT_BYTES) as store:
        topic = store.topic("t")
        assert topic.end_offset(0) < 550, "the cut is below the stale snapshot"
        with store.producer(name="p", idempotent=True) as producer:
            i = 0
            while topic.end_offset(0) < rolled + 3:  # past the stale snapshot's offset
                producer.send("t", b"B%05d" % i * 200, partition=0)
                producer.flush()
                i += 1
        end = topic.end_offset(0)
    with tidelog.open(store_dir, fsync="never", segment_bytes=SEGMENT_BYTES) as store:
        read = list(store.topic("t").read(partition=0, offset=0))
    # One offset of the new data is the marker the producer's reopening wrote.
    assert len(read) >= end - 1, f"readers held back at offset {read[-1].offset + 1} of {end}"


def test_a_commit_into_a_sealed_segments_lost_tail_is_stale(tmp_path: Path) -> None:
    """Batches of one page each (one 4032-byte message), so a lost page is a lost batch
    whole; the second segment loses its last two pages. The group had read all of it and
    committed at the third segment's base; new messages then take the lost offsets. The
    group's next poll must raise OffsetOutOfRangeError, not skip the new messages."""
    store_dir = tmp_path / "store"
    script = f"""
        import os, sys, tidelog
        store = tidelog.open(sys.argv[1], {SEALED_WITHOUT_SYNC})
        topic = store.create_topic("t", partitions=1)
        for i in range(60):
            topic.append(b"%04d" % i * 1008, partition=0)
        with store.consumer("t", group="g") as consumer:
            got = []
            while len(got) < 32:
                got += consumer.poll(32 - len(got), 1.0)
            consumer.commit()
        os._exit(0)
        """
    run_writer(script, store_dir)
    partition = store_dir / "topics" / "t" / "0"
    second = sorted(partition.glob("*.log"))[1]
    assert second.name == f"{16:020}.log"
    lose(second, second.stat().st_size - 2 * PAGE, second.stat().st_size)  # offsets 30, 31
    restart(partition)
    with tidelog.open(store_dir, fsync="never", segment_bytes=SEGMENT_BYTES) as store:
        topic = store.topic("t")
        assert topic.end_offset(0) == 30
        while topic.end_offset(0) < 40:
            topic.append(b"new", partition=0)
    with tidelog.open(store_dir) as store, store.consumer("t", group="g") as consumer:
        try:
            got = consumer.poll(100, 1.0)
        except tidelog.OffsetOutOfRangeError:
            return
        assert got[0].offset <= 30, f"new messages at offsets 30..{got[0].offset - 1} skipped"


def _event_record(kind: int, segment_base: int, size: int, end: int, file: str) -> bytes:
    """A `recovery.events` record (docs/FORMAT.md) of a segment moved whole (position 0)."""
    name = file.encode()
    payload = (
        struct.pack("<HB6Q", 1, kind, 1_700_000_000_000, segment_base, 0, size, segment_base, end)
        + struct.pack("<H", len(name))
        + name
    )
    return struct.pack("<II", len(payload), crc32c(payload)) + payload


def test_a_move_an_earlier_version_recorded_but_did_not_make_is_made_under_its_record(
    tmp_path: Path,
) -> None:
    """Before "unsynced" existed, a segment moved whole after a restart was recorded as
    "quarantined" (position 0), synced before the move. A crash between the record and the
    rename leaves the record naming a file not in quarantine/ yet; the next open, finding
    the same damage, must move the segment under that record's name (docs/FORMAT.md), also
    when the next open is made by this version."""
    store_dir = tmp_path / "store"
    script = f"""
        import os, sys, tidelog
        store = tidelog.open(sys.argv[1], {SEALED_WITHOUT_SYNC})
        topic = store.create_topic("t", partitions=1)
        for i in range(60):
            topic.append(b"%04d" % i * 1008, partition=0)
        os._exit(0)
        """
    run_writer(script, store_dir)
    partition = store_dir / "topics" / "t" / "0"
    bases = [int(f.stem) for f in sorted(partition.glob("*.log"))]
    assert bases == [0, 16, 32, 48]
    second = partition / f"{16:020}.log"
    lose(second, second.stat().st_size - 2 * PAGE, second.stat().st_size)  # offsets 30, 31
    restart(partition)
    # What the earlier version wrote before it moved the last segment, and crashed.
    last = partition / f"{48:020}.log"
    pending = f"{48:020}-{0:010}-1700000000000.log"
    (partition / "quarantine").mkdir(exist_ok=True)
    with open(partition / "recovery.events", "ab") as events:
        events.write(_event_record(2, 48, last.stat().st_size, 60, pending))
    with tidelog.open(store_dir, fsync="never", segment_bytes=SEGMENT_BYTES) as store:
        assert store.topic("t").end_offset(0) == 30
    recorded = tidelog._core.recovery_events(partition)
    assert [e["segment_base"] for e in recorded].count(48) == 1, recorded
    assert all(Path(e["path"]).exists() for e in recorded if e["path"]), recorded
