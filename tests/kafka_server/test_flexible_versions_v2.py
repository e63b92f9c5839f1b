"""Flexible versions (KIP-482): tagged fields a schema does not know are skipped, as the
protocol requires, and clients get Metadata v9+ (librdkafka sends such fields)."""

from __future__ import annotations

import logging
import re
import time

import pytest
import tidelog
from confluent_kafka import Consumer, Producer, TopicPartition
from tidelog.kafka_server import KafkaServer

from kafka_server import kafka_frames as kf

_PATIENCE = 30.0


def _served(caplog: pytest.LogCaptureFixture, key: int) -> set[int]:
    """The versions of API ``key`` the server answered (its debug log names each)."""
    found = set()
    for record in caplog.records:
        m = re.fullmatch(r"api key (\d+) v(\d+)", record.getMessage())
        if m and int(m[1]) == key:
            found.add(int(m[2]))
    return found


@pytest.mark.parametrize("version", [9, 10, 11, 12, 13])
def test_metadata_with_unknown_tagged_fields_everywhere(
    store: tidelog.Store, server: KafkaServer, version: int
) -> None:
    store.create_topic("t", 2)
    # Topic entries of v10+ start with a topic id; v9's do not.
    topic_id = bytes(16) if version >= 10 else b""
    entry = topic_id + b"\x02t" + kf.UNKNOWN_TAGS
    flags = b"\x00" + (b"\x00" if version < 11 else b"")  # auto-create; cluster ops (v8-10)
    payload = b"\x02" + entry + flags + b"\x00" + kf.TWO_UNKNOWN_TAGS
    with kf.connect(server) as sock:
        response = kf.request(sock, 3, version, payload, header_tags=kf.UNKNOWN_TAGS)
    [topic] = response.topics
    assert (topic.name, topic.error_code.value, len(topic.partitions)) == ("t", 0, 2)
    assert [b.port for b in response.brokers] == [int(server.address.rsplit(":", 1)[1])]


@pytest.mark.parametrize("version", [9, 12, 13])
def test_librdkafkas_all_topics_metadata_request_is_answered(
    store: tidelog.Store, server: KafkaServer, version: int
) -> None:
    store.create_topic("a", 1)
    store.create_topic("b", 3)
    # As librdkafka 2.16 sends it (AdminClient.list_topics), byte for byte: a null topic
    # list, the flags and no tagged fields, then bytes Kafka's broker ignores.
    body = bytes.fromhex("000000000001000000" if version < 11 else "00000000010000")
    with kf.connect(server) as sock:
        response = kf.request(sock, 3, version, body)
    assert sorted((t.name, len(t.partitions)) for t in response.topics) == [("a", 1), ("b", 3)]


def test_produce_and_fetch_with_unknown_tagged_fields(
    store: tidelog.Store, server: KafkaServer
) -> None:
    source = store.create_topic("source", 1)
    source.append(b"payload", key=b"k", partition=0)
    store.create_topic("copy", 1)
    with kf.connect(server) as sock:
        # A valid Kafka batch: the one the server serves for the stored message.
        fetched = kf.request(sock, 1, 12, kf.with_tags(kf.body(1, 12, kf.fetch_body("source", 0))))
        records = fetched.responses[0].partitions[0].records
        assert records
        produce = kf.body(
            0,
            9,
            {
                "transactional_id": None,
                "acks": -1,
                "timeout": 5000,
                "topic_data": [
                    {"name": "copy", "partition_data": [{"index": 0, "records": records}]}
                ],
            },
        )
        answer = kf.request(sock, 0, 9, kf.with_tags(produce, kf.TWO_UNKNOWN_TAGS))
        part = answer.responses[0].partition_responses[0]
        assert (part.error_code.value, part.base_offset) == (0, 0)
    [message] = list(store.topic("copy").read(0))
    assert (message.offset, message.key, message.value) == (0, b"k", b"payload")


def test_a_tagged_field_running_past_the_request_closes_the_connection(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 1)
    # An unknown tag claiming 50 bytes where 3 are left: malformed, not skipped.
    bad_tags = b"\x01\x63\x32abc"
    with kf.connect(server) as sock:
        kf.send(sock, 1, 12, 3, kf.with_tags(kf.body(1, 12, kf.fetch_body("t", 0)), bad_tags))
        assert kf.closed(sock)
    # The server is still there for others.
    with kf.connect(server) as sock:
        assert kf.request(sock, 18, 3, b"\x06tests\x021\x00").error_code.value == 0


def test_librdkafka_gets_the_metadata_version_it_asks_for(
    store: tidelog.Store, server: KafkaServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tidelog.kafka_server")
    store.create_topic("t", 1)
    producer = Producer({"bootstrap.servers": server.address, "enable.idempotence": True})
    for i in range(10):
        producer.produce("t", b"m%d" % i, partition=0)
    assert producer.flush(_PATIENCE) == 0
    consumer = Consumer({"bootstrap.servers": server.address, "group.id": "g"})
    try:
        consumer.assign([TopicPartition("t", 0, 0)])
        got: list[bytes | None] = []
        deadline = time.monotonic() + _PATIENCE
        while len(got) < 10 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    assert got == [b"m%d" % i for i in range(10)]
    # librdkafka 2.16 asks for Metadata v13 and Produce v10 (both were capped lower).
    assert 13 in _served(caplog, 3), _served(caplog, 3)
    assert 10 in _served(caplog, 0), _served(caplog, 0)


def test_kafka_python_gets_the_versions_it_asks_for(
    store: tidelog.Store, server: KafkaServer, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = pytest.importorskip("kafka")
    caplog.set_level(logging.DEBUG, logger="tidelog.kafka_server")
    store.create_topic("t", 1)
    producer = kafka.KafkaProducer(bootstrap_servers=server.address)
    try:
        producer.send("t", b"v", partition=0).get(_PATIENCE)
    finally:
        producer.close()
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=server.address, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    try:
        consumer.assign([kafka.TopicPartition("t", 0)])
        assert [m.value for m in consumer] == [b"v"]
    finally:
        consumer.close()
    # kafka-python 3.0 asks for ApiVersions v4, Metadata v13 and ListOffsets v11.
    assert (_served(caplog, 18), _served(caplog, 3), _served(caplog, 2)) == ({4}, {13}, {11})


def test_list_offsets_v11_answers_tiered_storage_specs(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 1)
    for i in range(3):
        topic.append(b"%d" % i, partition=0)
    specs = {-1: 3, -2: 0, -4: 0, -5: -1, -6: -1}
    payload = kf.body(
        2,
        11,
        {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [
                {
                    "name": "t",
                    "partitions": [
                        {"partition_index": 0, "current_leader_epoch": -1, "timestamp": spec}
                        for spec in specs
                    ],
                }
            ],
            "timeout": 1000,
        },
    )
    with kf.connect(server) as sock:
        response = kf.request(sock, 2, 11, kf.with_tags(payload))
    got = [(p.error_code.value, p.offset) for p in response.topics[0].partitions]
    assert got == [(0, offset) for offset in specs.values()]
