"""A confluent-kafka transactional producer and read_committed consumers on `serve_kafka()`."""

from __future__ import annotations

import time
from typing import Any

import tidelog
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from tidelog.kafka_server import KafkaServer
from tidelog.offsets import OffsetStore

_PATIENCE = 30.0


def _read_all(address: str, topic: str, isolation: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"reader-{isolation}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[Any] = []
        deadline = time.monotonic() + _PATIENCE
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
        # Nothing more arrives (the aborted messages are never delivered).
        extra = consumer.poll(1.0)
        assert extra is None or extra.error() is not None
        return got
    finally:
        consumer.close()


def test_committed_and_aborted_transactions(store: tidelog.Store, server: KafkaServer) -> None:
    topic = store.create_topic("t", 1)
    producer = Producer({"bootstrap.servers": server.address, "transactional.id": "tx-1"})
    producer.init_transactions(_PATIENCE)
    producer.begin_transaction()
    for i in range(5):
        producer.produce("t", b"committed-%d" % i, partition=0)
    producer.commit_transaction(_PATIENCE)
    producer.begin_transaction()
    for i in range(3):
        producer.produce("t", b"aborted-%d" % i, partition=0)
    producer.flush(_PATIENCE)
    # While open, read_committed readers stop before it.
    assert topic.last_stable_offset(0) < topic.end_offset(0)
    producer.abort_transaction(_PATIENCE)
    producer.begin_transaction()
    producer.produce("t", b"last", partition=0)
    producer.commit_transaction(_PATIENCE)

    expected = [b"committed-%d" % i for i in range(5)] + [b"last"]
    assert _read_all(server.address, "t", "read_committed", 6) == expected
    # The store's own readers agree.
    assert [m.value for m in topic.read(0)] == expected


def test_offsets_sent_to_a_transaction_commit_with_it(
    store: tidelog.Store, server: KafkaServer
) -> None:
    source = store.create_topic("in", 1)
    store.create_topic("out", 1)
    for i in range(4):
        source.append(b"%d" % i, partition=0)
    consumer = Consumer(
        {
            "bootstrap.servers": server.address,
            "group.id": "etl",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": server.address, "transactional.id": "etl-1"})
    try:
        consumer.subscribe(["in"])
        got: list[Any] = []
        deadline = time.monotonic() + _PATIENCE
        while len(got) < 4 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg)
        assert len(got) == 4
        producer.init_transactions(_PATIENCE)
        producer.begin_transaction()
        for msg in got:
            producer.produce("out", msg.value(), partition=0)
        positions = [TopicPartition("in", 0, got[-1].offset() + 1)]
        producer.send_offsets_to_transaction(
            positions, consumer.consumer_group_metadata(), _PATIENCE
        )
        committed_before = OffsetStore(store.native).committed("etl", "in", source.incarnation)
        assert committed_before == {}  # not until the transaction commits
        producer.commit_transaction(_PATIENCE)
    finally:
        consumer.close()
    committed = OffsetStore(store.native).committed("etl", "in", source.incarnation)
    assert {p: c.offset for p, c in committed.items()} == {0: 4}
    assert [m.value for m in store.topic("out").read(0)] == [b"0", b"1", b"2", b"3"]


def test_a_new_instance_fences_the_old_one(store: tidelog.Store, server: KafkaServer) -> None:
    store.create_topic("t", 1)
    old = Producer({"bootstrap.servers": server.address, "transactional.id": "same"})
    old.init_transactions(_PATIENCE)
    old.begin_transaction()
    old.produce("t", b"from the old one", partition=0)
    old.flush(_PATIENCE)
    new = Producer({"bootstrap.servers": server.address, "transactional.id": "same"})
    new.init_transactions(_PATIENCE)  # aborts what the old instance left open
    new.begin_transaction()
    new.produce("t", b"from the new one", partition=0)
    new.commit_transaction(_PATIENCE)
    try:
        old.commit_transaction(_PATIENCE)
        raise AssertionError("the fenced producer committed")
    except KafkaException:
        pass
    assert [m.value for m in store.topic("t").read(0)] == [b"from the new one"]
