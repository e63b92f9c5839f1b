"""``__consumer_offsets`` is a compacted topic (issue 14): created so, or made so once a store
written by an earlier version has its version 1 and 2 records converted; deleting a topic writes
version 3 tombstones; commits racing compaction are kept.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import tidelog
from tidelog import _core

OFFSETS = "__consumer_offsets"


def _v1(entries: dict[int, int]) -> bytes:
    out = struct.pack("<HqI", 1, -1, len(entries))
    return out + b"".join(struct.pack("<IqH", p, o, 0) for p, o in entries.items())


def _v2(incarnation: int, entries: dict[int, int]) -> bytes:
    out = struct.pack("<HqQI", 2, 3, incarnation, len(entries))
    return out + b"".join(struct.pack("<IqH", p, o, 0) for p, o in entries.items())


def _append_old(store: tidelog.Store, group: str, topic: str, value: bytes) -> None:
    """A version 1 or 2 record, in the offsets topic as earlier versions created it."""
    offsets = store.native.create_topic(OFFSETS, 8, exist_ok=True, internal=True)
    partition = _core.partition_for_key(group.encode(), 8)
    offsets.append(value, key=f"{group}\0{topic}".encode(), partition=partition)


def _records(store: tidelog.Store) -> list[tuple[bytes, bytes | None]]:
    """Every record of the offsets topic: (key, value or None for a tombstone)."""
    offsets = store.native.topic(OFFSETS)
    out: list[tuple[bytes, bytes | None]] = []
    for p in range(8):
        start = offsets.start_offset(p)
        if start < offsets.end_offset(p):
            out.extend((m.key or b"", m.value) for m in offsets.read(p, start) if m.key is not None)
    return out


def _is_v3_key(key: bytes) -> bool:
    parts = key.split(b"\0")
    return len(parts) >= 4 and len(parts[-2]) == 16 and parts[-1].isdigit()


def test_a_new_store_creates_the_offsets_topic_compacted_with_small_segments(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t").append(b"x")
        with store.consumer("t", group="g") as consumer:
            consumer.commit({0: 1})
        config = store.native.topic(OFFSETS).config
        assert config["cleanup_policy"] == "compact"
        assert config["segment_bytes"] == 4 << 20


def test_a_store_of_the_previous_version_converts_then_compacts_keeping_its_offsets(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=4)
        for p in range(4):
            topic.append_batch([b"x"] * 20, partition=p)
        incarnation = store.native.topic("t").incarnation
        _append_old(store, "g", "t", _v1({0: 3, 3: 2}))
        for round_ in range(50):
            # Each record names some partitions only: compacting these records by their
            # key would keep the last one and lose the others' commits.
            _append_old(store, "g", "t", _v2(incarnation, {round_ % 3: round_ // 3}))
        _append_old(store, "other", "t", _v2(incarnation, {1: 11}))
        assert store.native.topic(OFFSETS).config["cleanup_policy"] == "delete"
    expected = {0: 16, 1: 16, 2: 15, 3: 2}
    with tidelog.open(tmp_path) as store:
        with store.consumer("t", group="g") as consumer:
            assert consumer.committed() == expected
        offsets = store.native.topic(OFFSETS)
        assert offsets.config["cleanup_policy"] == "compact"
        offsets.compact()
        records = _records(store)
        # Left: version 3 commits, and the conversion's tombstones of the old keys (kept
        # for delete_retention_ms, as every tombstone).
        assert all(_is_v3_key(k) or v is None for k, v in records), records
        assert sorted(k for k, v in records if not _is_v3_key(k)) == [b"g\0t", b"other\0t"]
    with tidelog.open(tmp_path) as store:
        with store.consumer("t", group="g") as consumer:
            assert consumer.committed() == expected
        with store.consumer("t", group="other") as consumer:
            assert consumer.committed() == {1: 11}


def test_deleting_a_topic_writes_version_3_tombstones_for_its_commits(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=3)
        for p in range(3):
            topic.append_batch([b"x"] * 5, partition=p)
        incarnation = topic.incarnation
        for group in ("g1", "g2"):
            with store.consumer("t", group=group) as consumer:
                consumer.commit({0: 1, 1: 2, 2: 3})
        before = len(_records(store))
        store.delete_topic("t")
        records = _records(store)
        new = [r for r in records if r[1] is None]
        assert len(records) - before == len(new), "only tombstones are written"
        expected = sorted(
            b"%s\0t\0%016x\0%d" % (g, incarnation, p) for g in (b"g1", b"g2") for p in range(3)
        )
        assert sorted(k for k, _ in new) == expected
        assert not any(t == "t" for _, t in _core.OffsetTable(store.native).groups())


def test_commits_racing_compaction_of_the_offsets_topic_keep_the_newest(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("t", partitions=2)
        for p in range(2):
            topic.append_batch([b"x"] * 1000, partition=p)
        offsets = store.native
        done = threading.Event()
        compactions = 0

        def compact() -> None:
            nonlocal compactions
            internal = offsets.topic(OFFSETS)
            while not done.is_set():
                internal.compact()
                compactions += 1

        cleaner = threading.Thread(target=compact)
        with store.consumer("t", group="g") as consumer:
            cleaner.start()
            try:
                for i in range(30_000):
                    consumer.commit({i % 2: i % 1000 + 1})
            finally:
                done.set()
                cleaner.join()
            assert compactions > 0
        offsets.topic(OFFSETS).compact()
    with tidelog.open(tmp_path) as store, store.consumer("t", group="g") as consumer:
        assert consumer.committed() == {0: 29_998 % 1000 + 1, 1: 29_999 % 1000 + 1}


READER = r"""
import sys, time, tidelog
from tidelog import _core
with tidelog.open(sys.argv[1], cleaner_interval_ms=None) as store:
    incarnation = store.native.topic("t").incarnation
    kept = _core.OffsetTable(store.native)
    deadline = time.monotonic() + float(sys.argv[2])
    looks = 0
    while time.monotonic() < deadline:
        # A table kept across the compactions, and a fresh one each time.
        for table in (kept, _core.OffsetTable(store.native)):
            got = table.committed("g", "t", incarnation)
            print(" ".join(f"{p}:{o}" for p, (o, _, _) in sorted(got.items())), flush=True)
        looks += 1
"""


def test_a_reader_process_sees_offsets_only_move_forward_while_the_topic_compacts(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("t", partitions=2)
        for p in range(2):
            topic.append_batch([b"x"] * 1000, partition=p)
        with store.consumer("t", group="g") as consumer:
            consumer.commit({0: 1, 1: 1})
            reader = subprocess.Popen(
                [sys.executable, "-c", READER, str(tmp_path), "3"],
                stdout=subprocess.PIPE,
                text=True,
            )
            internal = store.native.topic(OFFSETS)
            i = swaps = 0
            # At least enough commits for segments to roll and be compacted while the
            # reader reads.
            while reader.poll() is None or i < 100_000:
                for _ in range(2_000):
                    consumer.commit({i % 2: min(1000, i // 1000 + 1)})
                    i += 1
                swaps += internal.compact()["segments_before"] > 0
            last = {p: min(1000, (i - 1 - (i - 1 - p) % 2) // 1000 + 1) for p in range(2)}
            out, _ = reader.communicate(timeout=60)
            assert reader.returncode == 0
            assert swaps > 0
    seen: dict[int, int] = {}
    lines = [line for line in out.splitlines() if line]
    assert lines
    for line in lines:
        for partition, offset in (map(int, kv.split(":")) for kv in line.split()):
            moved = f"partition {partition} moved back to {offset} from {seen}"
            assert offset >= seen.get(partition, 0), moved
            seen[partition] = offset
    with tidelog.open(tmp_path) as store, store.consumer("t", group="g") as consumer:
        assert consumer.committed() == last
