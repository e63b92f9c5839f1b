"""A None value is a tombstone on every write path (as in Kafka, on any topic): single
appends, lists given to append_batch and append_sequenced, the buffered producer (through
its ring buffer and background writer), and a transaction's sends. Compaction then deletes
the key; on a compacted topic a keyless tombstone is refused like any keyless message."""

from __future__ import annotations

from pathlib import Path

import pytest
import tidelog


def values_of(topic: tidelog.Topic, partition: int = 0) -> list[bytes | None]:
    return [m.value for m in topic.read(partition)]


def test_a_producer_sends_a_tombstone_through_its_ring_buffer(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        with store.producer(name="p") as producer:
            for i in range(200):
                producer.send("c", b"v%d" % i + b"x" * 60, key=b"k%d" % (i % 4), partition=0)
            assert producer.send("c", None, key=b"k1", partition=0)
            producer.send("c", None, key=b"k2", headers={"why": b"gdpr"}, partition=0)
            assert producer.flush()
        msgs = list(topic.read(0))
        assert [(m.key, m.value, m.headers) for m in msgs[-2:]] == [
            (b"k1", None, {}),
            (b"k2", None, {"why": b"gdpr"}),
        ]
        assert dict(topic.latest()).keys() == {b"k0", b"k3"}
        # A closed segment ending after the tombstones: compaction deletes the keys once
        # the tombstones are past delete_retention_ms (0 here).
        store.alter_topic("c", delete_retention_ms=0)
        with store.producer() as producer:
            for i in range(100):
                producer.send("c", b"w" * 80, key=b"z%d" % i, partition=0)
        topic.compact()
        keys = {m.key for m in topic.read(0)}
        assert {b"k1", b"k2"}.isdisjoint(keys) and {b"k0", b"k3"} <= keys


def test_a_producer_refuses_a_keyless_tombstone_on_a_compacted_topic(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("c", cleanup_policy="compact")
        plain = store.create_topic("plain")
        with store.producer() as producer:
            with pytest.raises(tidelog.InvalidConfigError, match="needs a key"):
                producer.send("c", None)
            # A plain topic keeps a keyless record without a value, as Kafka does.
            producer.send("plain", None)
            producer.send("plain", b"after")
        assert values_of(plain) == [None, b"after"]
        with pytest.raises(TypeError, match="value must be bytes"), store.producer() as producer:
            producer.send("plain", "text")  # type: ignore[arg-type]


def test_a_transaction_sends_tombstones(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("c", cleanup_policy="compact")
        topic.append(b"old", key=b"a")
        with store.producer(name="tx") as producer, store.transaction(producer) as tx:
            tx.send("c", None, key=b"a")
            tx.send("c", b"new", key=b"b")
        assert values_of(topic) == [b"old", None, b"new"]
        assert dict(topic.latest()) == {b"b": b"new"}


def test_none_in_a_list_given_to_append_batch_is_a_tombstone(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        plain = store.create_topic("plain")
        _, first = plain.append_batch([b"a", None, b""], partition=0)
        batch = plain.read_batch(0, first)
        assert batch.values() == [b"a", None, b""]
        assert [m.value for m in batch] == [b"a", None, b""]
        compacted = store.create_topic("c", cleanup_policy="compact")
        with pytest.raises(tidelog.InvalidConfigError, match="needs a key"):
            tombstones: list[bytes | None] = [None]
            compacted.append_batch(tombstones)
        with pytest.raises(TypeError, match=r"values\[1\] must be bytes or None"):
            plain.append_batch([b"a", "b"])  # type: ignore[arg-type]
        assert plain.end_offset(0) == 3


def test_none_given_to_append_sequenced_is_a_tombstone(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        plain = store.create_topic("plain")
        first, duplicate = plain.append_sequenced(
            [b"x", None], producer_id=7, producer_epoch=0, base_sequence=0, partition=0
        )
        assert (first, duplicate) == (0, False)
        assert values_of(plain) == [b"x", None]
