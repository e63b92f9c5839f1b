"""`transaction.timeout.ms` on `serve_kafka()`: a transaction left open past it is aborted.

As Kafka's transaction coordinator does: the server aborts the transaction (its records are
never delivered to read_committed readers, which move past it) and bumps the producer's
epoch, so the producer that left it open is told it was fenced when it tries to go on.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import tidelog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from tidelog.kafka_server import KafkaServer

_PATIENCE = 30.0


def _committed_values(address: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": "reader",
            "isolation.level": "read_committed",
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
        extra = consumer.poll(1.0)
        assert extra is None or extra.error() is not None
        return got
    finally:
        consumer.close()


def test_a_transaction_left_open_past_its_timeout_is_aborted(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 1)
    slow = Producer(
        {
            "bootstrap.servers": server.address,
            "transactional.id": "slow",
            "transaction.timeout.ms": 2000,
        }
    )
    slow.init_transactions(_PATIENCE)
    slow.begin_transaction()
    for i in range(3):
        slow.produce("t", b"late-%d" % i, partition=0)
    slow.flush(_PATIENCE)
    assert topic.last_stable_offset(0) < topic.end_offset(0)
    # Without a word from the producer, the server ends it: readers move past it.
    deadline = time.monotonic() + _PATIENCE
    while topic.last_stable_offset(0) < topic.end_offset(0):
        assert time.monotonic() < deadline, "the open transaction was never aborted"
        time.sleep(0.05)
    # The producer is told, when it goes on, that it was fenced.
    with pytest.raises(KafkaException) as raised:
        slow.commit_transaction(_PATIENCE)
    error = raised.value.args[0]
    assert error.fatal(), error
    assert error.code() == KafkaError._FENCED, error
    # A new instance carries on; the aborted records are never delivered.
    fresh = Producer({"bootstrap.servers": server.address, "transactional.id": "slow"})
    fresh.init_transactions(_PATIENCE)
    fresh.begin_transaction()
    fresh.produce("t", b"on time", partition=0)
    fresh.commit_transaction(_PATIENCE)
    assert _committed_values(server.address, "t", 1) == [b"on time"]
    assert [m.value for m in topic.read(0)] == [b"on time"]


def test_producing_on_after_the_timeout_is_refused_as_fenced(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 1)
    slow = Producer(
        {
            "bootstrap.servers": server.address,
            "transactional.id": "slow",
            "transaction.timeout.ms": 1000,
        }
    )
    slow.init_transactions(_PATIENCE)
    slow.begin_transaction()
    slow.produce("t", b"in time", partition=0)
    slow.flush(_PATIENCE)
    deadline = time.monotonic() + _PATIENCE
    while topic.last_stable_offset(0) < topic.end_offset(0):
        assert time.monotonic() < deadline, "the open transaction was never aborted"
        time.sleep(0.05)
    # Its batch is refused as a partition leader refuses a fenced producer's (librdkafka
    # raises the fatal error from flush(), or at the latest from the commit).
    with pytest.raises(KafkaException) as raised:
        slow.produce("t", b"too late", partition=0)
        slow.flush(_PATIENCE)
        slow.commit_transaction(_PATIENCE)
    error = raised.value.args[0]
    assert error.fatal() and error.code() == KafkaError._FENCED, error
    assert "old epoch" in error.str(), error
    assert [m.value for m in topic.read(0)] == []


def test_a_transaction_closed_in_time_is_left_alone(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 1)
    producer = Producer(
        {
            "bootstrap.servers": server.address,
            "transactional.id": "quick",
            "transaction.timeout.ms": 1500,
        }
    )
    producer.init_transactions(_PATIENCE)
    for round_ in range(3):
        producer.begin_transaction()
        producer.produce("t", b"r%d" % round_, partition=0)
        producer.commit_transaction(_PATIENCE)
        # Past the timeout of the transaction just committed: nothing may fence the producer.
        time.sleep(1.0)
    assert _committed_values(server.address, "t", 3) == [b"r0", b"r1", b"r2"]


def test_a_timeout_above_the_maximum_is_refused(store: tidelog.Store, server: KafkaServer) -> None:
    producer = Producer(
        {
            "bootstrap.servers": server.address,
            "transactional.id": "forever",
            "transaction.timeout.ms": 3_600_000,  # above transaction.max.timeout.ms (15 min)
        }
    )
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(_PATIENCE)
    assert raised.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT
