"""kafka-python (a second, pure-Python Kafka client) against `store.serve_kafka()`."""

from __future__ import annotations

import pytest
import tidelog
from tidelog.kafka_server import KafkaServer
from tidelog.offsets import OffsetStore

kafka = pytest.importorskip("kafka")
kafka_admin = pytest.importorskip("kafka.admin")


def test_kafka_python_admin_producer_and_group_consumer(
    store: tidelog.Store, server: KafkaServer
) -> None:
    admin = kafka.KafkaAdminClient(bootstrap_servers=server.address)
    try:
        admin.create_topics([kafka_admin.NewTopic("t", 2, 1)])
        assert "t" in admin.list_topics()
    finally:
        admin.close()
    producer = kafka.KafkaProducer(
        bootstrap_servers=server.address, acks="all", enable_idempotence=True
    )
    try:
        futures = [producer.send("t", b"v%d" % i, key=b"k%d" % i) for i in range(100)]
        producer.flush()
        sent = {f.get(30).offset for f in futures if f.get(30).partition == 0}
    finally:
        producer.close()
    topic = store.topic("t")
    assert {m.offset for m in topic.read(0)} == sent
    consumer = kafka.KafkaConsumer(
        "t",
        bootstrap_servers=server.address,
        group_id="kp",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    try:
        values = sorted(m.value for m in consumer)
        consumer.commit()
    finally:
        consumer.close()
    assert values == sorted(b"v%d" % i for i in range(100))
    committed = OffsetStore(store.native).committed("kp", "t", topic.incarnation)
    assert {p: c.offset for p, c in committed.items()} == {p: topic.end_offset(p) for p in range(2)}
