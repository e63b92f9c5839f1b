"""Compaction through the public API: tombstones, keys required, compact(), latest(),
the dirty ratio, the background cleaner, compact,delete, and what compaction keeps."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tidelog
from tidelog import _core


def fill(topic: tidelog.Topic, n: int, keys: int = 10, size: int = 100) -> None:
    for i in range(n):
        topic.append(b"%d-" % i + b"x" * size, key=b"k%d" % (i % keys), partition=0)


def test_a_tombstone_reads_back_as_none_on_any_topic(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("plain")
        _, offset = topic.append(None, key=b"gone", headers={"h": b"v"})
        (msg,) = list(topic.read(0))
        assert (msg.offset, msg.key, msg.value, msg.headers) == (offset, b"gone", None, {"h": b"v"})
        assert "value=None" in repr(msg)
        assert topic.read_batch(0, 0).values() == [None]
        buf, bounds = topic.read_batch(0, 0).value_buffer()
        assert len(buf) == 0 and list(bounds) == [0, 0]
        with pytest.raises(TypeError, match="value must be bytes"):
            topic.append("text", key=b"k")  # type: ignore[arg-type]


def test_a_compacted_topic_refuses_messages_without_a_key_on_every_path(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("c", cleanup_policy="compact")
        assert topic.config["cleanup_policy"] == "compact"
        with pytest.raises(tidelog.InvalidConfigError, match="needs a key"):
            topic.append(b"v")
        with pytest.raises(tidelog.InvalidConfigError, match="needs a key"):
            topic.append_batch([b"a", b"b"])
        with pytest.raises(tidelog.InvalidConfigError, match="needs a key"):
            topic.append_batch(b"abcd", lengths=np.array([2, 2]))
        with store.producer() as producer, pytest.raises(tidelog.InvalidConfigError, match="key"):
            producer.send("c", b"v")
        assert topic.end_offset(0) == 0
        topic.append(b"v", key=b"k")
        assert dict(topic.latest()) == {b"k": b"v"}


def test_compact_keeps_the_newest_value_per_key_and_reports_what_it_did(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        fill(topic, 400)
        topic.append(None, key=b"k3", partition=0)
        fill(topic, 5, keys=5)
        expected = dict(topic.latest())
        assert b"k3" in expected  # rewritten by the last fill
        assert topic.dirty_ratio() == 1.0
        done = topic.compact()
        assert done["records_removed"] > 300
        assert done["bytes_written"] < done["bytes_read"]
        assert done["segments_after"] <= done["segments_before"]
        assert topic.dirty_ratio() == 0.0
        assert dict(topic.latest()) == expected
        msgs = list(topic.read(0))
        offsets = [m.offset for m in msgs]
        assert offsets == sorted(offsets)
        assert len(offsets) < topic.end_offset(0)
        # Reading from a removed offset yields the next message; offsets never change.
        removed = next(o for o in range(topic.end_offset(0)) if o not in set(offsets))
        nxt = next(o for o in offsets if o > removed)
        assert [m.offset for m in topic.read_batch(0, removed, max_messages=1)] == [nxt]
        assert topic.start_offset(0) == 0
    with tidelog.open(tmp_path) as store:
        assert dict(store.topic("c").latest()) == expected


def test_compacting_a_topic_that_is_not_compacted_is_refused(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("d")
        with pytest.raises(tidelog.InvalidConfigError, match="not compacted"):
            topic.compact()
        store.alter_topic("d", cleanup_policy="compact")
        topic.append(b"v", key=b"k")
        assert topic.compact()["segments_before"] == 0


def test_the_background_cleaner_compacts_dirty_partitions(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=20, cleaner_bytes_per_second=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        fill(topic, 600)
        expected = dict(topic.latest())
        deadline = time.monotonic() + 30
        while topic.dirty_ratio() >= 0.5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert topic.dirty_ratio() < 0.5
        assert sum(1 for _ in topic.read(0)) < 600
        assert dict(topic.latest()) == expected


def test_closing_stops_a_slow_background_compaction_promptly(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        fill(topic, 3000, keys=3000)
        expected = dict(topic.latest())
    # 20 KB/s: a whole compaction would take about a minute.
    store = tidelog.open(tmp_path, cleaner_interval_ms=10, cleaner_bytes_per_second=20_000)
    time.sleep(0.3)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 10
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        assert dict(store.topic("c").latest()) == expected


def test_compact_delete_also_applies_retention(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic(
            "c", cleanup_policy="compact,delete", segment_bytes=4096, retention_bytes=8192
        )
        assert topic.config["cleanup_policy"] == "compact,delete"
        fill(topic, 400, keys=400)
        assert topic.start_offset(0) > 0
        topic.compact()
        assert dict(topic.latest())
    with tidelog.open(tmp_path / "only", cleaner_interval_ms=None) as store:
        topic = store.create_topic(
            "c", cleanup_policy="compact", segment_bytes=4096, retention_bytes=8192
        )
        fill(topic, 400, keys=400)
        assert topic.start_offset(0) == 0, "compact alone never deletes by retention"


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compaction_of_a_compressed_topic_keeps_the_newest_value_per_key(
    tmp_path: Path, codec: str
) -> None:
    # Compressed batches hold their records in a compressed body: the cleaner must read
    # them (and rewrite what it keeps) through the uncompressed image, never take an
    # unreadable body for an empty batch.
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic(
            "c", cleanup_policy="compact", segment_bytes=4096, compression=codec
        )
        with store.producer(linger_ms=0) as producer:  # batches of several records
            # Keys whose newest value stays in the segments compaction rewrites.
            for k in range(5):
                producer.send("c", b"only-%d" % k, key=b"old%d" % k, partition=0)
            for i in range(600):
                producer.send("c", b"%d-" % i + b"x" * 100, key=b"k%d" % (i % 7), partition=0)
            producer.flush()
        topic.append(None, key=b"k3", partition=0)
        topic.append(b"last", key=b"k4", partition=0)
        expected = dict(topic.latest())
        assert b"k3" not in expected and expected[b"k4"] == b"last" and len(expected) == 11
        before = [(m.offset, m.key, m.value) for m in topic.read(0)]
        done = topic.compact()
        assert done["records_removed"] > 300
        assert dict(topic.latest()) == expected
        after = [(m.offset, m.key, m.value) for m in topic.read(0)]
        assert set(after) <= set(before), "compaction changed a record"
        # The rewritten segment stays compressed (control batches aside).
        first = _core.segment_files(tmp_path / "topics" / "c" / "0")[0]
        rewritten = _core.inspect_segment(first)["batches"]
        assert rewritten and {b["compression"] for b in rewritten} == {codec}
        newest = {k: o for o, k, _ in before}
        assert {o for o, _, _ in after} >= {o for o in newest.values() if o < after[-1][0]}
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        assert dict(store.topic("c").latest()) == expected
        assert [(m.offset, m.key, m.value) for m in store.topic("c").read(0)] == after
