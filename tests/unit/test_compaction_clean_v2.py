"""compact() leaves clean segments alone: a second compaction with nothing new reads and
writes no segment, and segments compaction would not change are not rewritten; a clean
segment whose tombstones expire, or whose keys a newer segment overwrites, is still
compacted."""

from __future__ import annotations

from pathlib import Path

import tidelog


def fill(topic: tidelog.Topic, n: int, keys: int, prefix: bytes = b"k", size: int = 100) -> None:
    for i in range(n):
        topic.append(b"%d-" % i + b"x" * size, key=prefix + b"%d" % (i % keys), partition=0)


def inodes(store_dir: Path, topic: str) -> dict[str, int]:
    part = store_dir / "topics" / topic / "0"
    return {f.name: f.stat().st_ino for f in part.iterdir() if f.name.endswith(".log")}


def test_compacting_a_clean_topic_again_reads_and_writes_nothing(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        fill(topic, 400, keys=10)
        topic.append(None, key=b"k3", partition=0)  # kept: delete_retention_ms is a day
        fill(topic, 60, keys=60, prefix=b"z")
        first = topic.compact()
        assert first["bytes_written"] > 0 and first["records_removed"] > 0
        expected = dict(topic.latest())
        files = inodes(tmp_path, "c")
        for _ in range(3):
            again = topic.compact()
            assert (again["bytes_read"], again["bytes_written"], again["segments_before"]) == (
                0,
                0,
                0,
            ), again
        assert inodes(tmp_path, "c") == files
        assert dict(topic.latest()) == expected
        assert topic.dirty_ratio() == 0.0
    # The checkpoint says so in the next process too.
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.topic("c")
        assert topic.compact()["bytes_written"] == 0
        assert inodes(tmp_path, "c") == files


def test_only_segments_compaction_changes_are_rewritten(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        fill(topic, 400, keys=10)
        fill(topic, 200, keys=200, prefix=b"u")  # unique keys: nothing of these goes
        topic.compact()
        clean = inodes(tmp_path, "c")
        before = dict(topic.latest())
        # New segments of keys never seen: the clean segments are read (a key could be
        # overwritten) but not rewritten.
        fill(topic, 100, keys=100, prefix=b"n")
        dirty_bytes = topic.dirty_ratio()
        assert dirty_bytes > 0
        done = topic.compact()
        assert done["records_removed"] == 0
        now = inodes(tmp_path, "c")
        kept = {name for name, ino in clean.items() if now.get(name) == ino}
        sealed = sorted(clean)[:-1]  # the active segment of then was dirty
        assert set(sealed) <= kept, (sealed, now)
        part = tmp_path / "topics" / "c" / "0"
        active = max(now)
        changed = [n for n, ino in now.items() if clean.get(n) != ino and n != active]
        rewritten = sum((part / n).stat().st_size for n in changed)
        assert done["bytes_written"] == rewritten
        new = {b"n%d" % i: b"%d-" % i + b"x" * 100 for i in range(100)}
        assert dict(topic.latest()) == {**before, **new}
        # A newer value of a key in a clean segment makes that segment dirty again.
        _, newest = topic.append(b"newer", key=b"u0", partition=0)
        fill(topic, 60, keys=60, prefix=b"m")
        done = topic.compact()
        assert done["records_removed"] == 1
        assert [(m.offset, m.value) for m in topic.read(0) if m.key == b"u0"] == [
            (newest, b"newer")
        ]


def test_a_clean_segment_is_compacted_once_its_tombstones_expire(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        fill(topic, 100, keys=10)
        topic.append(None, key=b"k3", partition=0)
        fill(topic, 60, keys=60, prefix=b"z")
        topic.compact()
        assert topic.compact()["bytes_read"] == 0
        assert b"k3" in {m.key for m in topic.read(0)}
        store.alter_topic("c", delete_retention_ms=0)
        done = topic.compact()
        assert done["tombstones_removed"] == 1 and done["bytes_written"] > 0
        assert b"k3" not in {m.key for m in topic.read(0)}
        assert topic.compact()["bytes_read"] == 0
