"""A topic deleted and created again under its name, with Kafka consumers subscribed to it.

On Kafka the group coordinator knows nothing of topics in the classic protocol: a member
whose topic was deleted goes on heartbeating, its client sees the topic gone from metadata
and rejoins, and rejoins again when the topic is back, then reads the new topic from
``auto.offset.reset`` (the deleted topic's commits are deleted with it). The server keeps a
Kafka member's group per topic incarnation, so the new topic's group is a new one.
"""

from __future__ import annotations

import time
from typing import Any

import tidelog
from confluent_kafka import Consumer
from tidelog.kafka_server import KafkaServer

_PATIENCE = 30.0


def _poll_until(consumer: Consumer, count: int, what: str) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + _PATIENCE
    while len(got) < count:
        assert time.monotonic() < deadline, f"never: {what} (got {got})"
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            got.append((msg.offset(), msg.value()))
    return got


def test_a_subscribed_consumer_reads_a_topic_created_again(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 1)
    for i in range(10):
        topic.append(b"old-%d" % i, partition=0)
    consumer = Consumer(
        {
            "bootstrap.servers": server.address,
            "group.id": "g",
            "auto.offset.reset": "earliest",
            "topic.metadata.refresh.interval.ms": 300,
            "heartbeat.interval.ms": 200,
        }
    )
    try:
        consumer.subscribe(["t"])
        assert len(_poll_until(consumer, 10, "the first topic's messages")) == 10
        store.delete_topic("t")
        # The consumer goes on while the topic is missing (its heartbeats and metadata
        # see it gone), then the topic is back with other messages.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            consumer.poll(0.1)
        topic = store.create_topic("t", 1)
        for i in range(5):
            topic.append(b"new-%d" % i, partition=0)
        got = _poll_until(consumer, 5, "the new topic's messages")
        assert got == [(i, b"new-%d" % i) for i in range(5)]
    finally:
        consumer.close()
