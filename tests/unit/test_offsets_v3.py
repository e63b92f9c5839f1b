"""Commit records of version 3 (issue 14, item 3): one record per partition keyed by (group,
topic, incarnation, partition), a commit of several partitions in one batch, written and read
back by the core; stores holding records of versions 1 and 2 keep their offsets.

The old records are written here with their old byte layout, as ``tidelog.offsets`` wrote
them before; the test builds them with ``struct`` on purpose (the library no longer does).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import tidelog
from tidelog import _core

OFFSETS = "__consumer_offsets"


def _v1(entries: dict[int, int], generation: int = -1) -> bytes:
    out = struct.pack("<HqI", 1, generation, len(entries))
    return out + b"".join(struct.pack("<IqH", p, o, 0) for p, o in entries.items())


def _v2(incarnation: int, entries: dict[int, int], metadata: bytes = b"") -> bytes:
    out = struct.pack("<HqQI", 2, 3, incarnation, len(entries))
    packed = (struct.pack("<IqH", p, o, len(metadata)) + metadata for p, o in entries.items())
    return out + b"".join(packed)


def _append_old(store: tidelog.Store, group: str, topic: str, value: bytes) -> None:
    """Appends a version 1 or 2 record of ``group`` on ``topic`` (key ``group NUL topic``)."""
    offsets = store.native.create_topic(OFFSETS, 8, exist_ok=True, internal=True)
    partition = _core.partition_for_key(group.encode(), 8)
    offsets.append(value, key=f"{group}\0{topic}".encode(), partition=partition)


def _offsets_segment(path: Path, group: str) -> Path:
    partition = _core.partition_for_key(group.encode(), 8)
    return _core.segment_files(path / "topics" / OFFSETS / str(partition))[0]


def test_a_store_with_version_1_and_2_commits_keeps_them_after_version_3_ones(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=5)
        for p in range(5):
            topic.append_batch([b"x"] * 20, partition=p)
        incarnation = store.native.topic("t").incarnation
        _append_old(store, "g", "t", _v1({0: 3, 1: 4, 4: 2}))
        _append_old(store, "g", "t", _v2(incarnation, {1: 5, 2: 6}, b"meta"))
        # A commit of another incarnation of the name (deleted since) never applies.
        _append_old(store, "g", "t", _v2(incarnation ^ 1, {3: 9}))
        _append_old(store, "other", "t", _v2(incarnation, {0: 11}))
    with tidelog.open(tmp_path) as store, store.consumer("t", group="g") as consumer:
        assert consumer.committed() == {0: 3, 1: 5, 2: 6, 4: 2}
        consumer.commit({2: 7, 3: 8})
        assert consumer.committed() == {0: 3, 1: 5, 2: 7, 3: 8, 4: 2}
    with tidelog.open(tmp_path) as store:
        with store.consumer("t", group="g") as consumer:
            assert consumer.committed() == {0: 3, 1: 5, 2: 7, 3: 8, 4: 2}
            # Reading resumes at the committed offsets, whichever version recorded them.
            first = next(m.offset for m in consumer.poll(100) if m.partition == 1)
            assert first == 5
        with store.consumer("t", group="other") as consumer:
            assert consumer.committed() == {0: 11}
        groups = store.groups()
        assert set(groups) >= {"g", "other"}


def test_a_version_2_reset_forgets_older_commits_but_not_later_version_3_ones(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=2)
        topic.append_batch([b"x"] * 10, partition=0)
        topic.append_batch([b"x"] * 10, partition=1)
        incarnation = store.native.topic("t").incarnation
        _append_old(store, "g", "t", _v1({1: 4}))
        _append_old(store, "g", "t", _v2(incarnation, {0: 5}))
        with store.consumer("t", group="g") as consumer:
            assert consumer.committed() == {0: 5, 1: 4}
            # The reset record a deletion of this incarnation writes (version 2, no entries).
            _append_old(store, "g", "t", struct.pack("<HqQI", 2, -2, incarnation, 0))
            assert consumer.committed() == {}
            consumer.commit({1: 9})
        with store.consumer("t", group="g") as consumer:
            assert consumer.committed() == {1: 9}


def test_a_commit_of_several_partitions_is_one_batch_of_version_3_records(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=3)
        for p in range(3):
            topic.append_batch([b"x"] * 10, partition=p)
        incarnation = store.native.topic("t").incarnation
        with store.consumer("t", group="g") as consumer:
            consumer.commit({0: 4, 1: 5, 2: 6}, metadata="m")
    segment = _core.inspect_segment(_offsets_segment(tmp_path, "g"), records=True)
    (batch,) = segment["batches"]
    assert batch["record_count"] == 3
    keys = [r["key"] for r in batch["records"]]
    assert keys == [b"g\0t\0%016x\0%d" % (incarnation, p) for p in range(3)]
    values = [r["value"] for r in batch["records"]]
    generation = struct.unpack_from("<q", values[0], 2)[0]
    assert generation >= 1  # the group's generation when it committed
    assert values == [struct.pack("<HqqH", 3, generation, 4 + p, 1) + b"m" for p in range(3)]


def test_a_commit_sent_in_a_transaction_is_version_3_records(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=2)
        topic.append_batch([b"a", b"b"], partition=0)
        topic.append_batch([b"c"], partition=1)
        store.create_topic("out")
        with (
            store.consumer("t", group="g", delivery="exactly-once") as consumer,
            store.producer(name="p", idempotent=True) as producer,
        ):
            got = consumer.poll(10, timeout=1.0)
            assert len(got) == 3
            with store.transaction(producer, consumer) as tx:
                tx.send("out", b"done")
            assert consumer.committed() == {0: 2, 1: 1}
        incarnation = store.native.topic("t").incarnation
    keys = [
        r["key"]
        for b in _core.inspect_segment(_offsets_segment(tmp_path, "g"), records=True)["batches"]
        for r in b["records"]
        if r["key"] is not None
    ]
    assert sorted(keys) == [b"g\0t\0%016x\0%d" % (incarnation, p) for p in range(2)]


def test_an_undecodable_commit_record_is_reported_with_its_file(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t").append(b"x")
        _append_old(store, "g", "t", struct.pack("<HqQI", 9, 0, 0, 0))
        named = r"__consumer_offsets.*\.log.*version 9"
        with pytest.raises(tidelog.CorruptRecordError, match=named):
            store.consumer("t", group="g")


def test_a_tombstone_of_a_version_3_key_forgets_that_partitions_commit(tmp_path: Path) -> None:
    # Once __consumer_offsets is compacted, a key's tombstone is how a commit goes away:
    # it forgets that (group, topic, incarnation, partition) and nothing else.
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=2)
        for p in range(2):
            topic.append_batch([b"m"] * 5, partition=p)
        with store.consumer("t", group="g") as consumer:
            consumer.poll(max_messages=100, timeout=1)
            consumer.commit({0: 3, 1: 4})
            assert consumer.committed() == {0: 3, 1: 4}
            key = b"g\0t\0%016x\x000" % topic.incarnation
            offsets = store.native.topic(OFFSETS)
            offsets.append(None, key=key, partition=_core.partition_for_key(b"g", 8))
            assert consumer.committed() == {1: 4}
