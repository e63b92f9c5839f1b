"""Apache Kafka's own Java client (4.2) against `serve_kafka()`: the Metadata version it
asks for, compressed produce batches of every codec, and read_committed / read_uncommitted
consumers on transactions with markers and aborted data (the client filters)."""

from __future__ import annotations

import logging
import re

import pytest
import tidelog
from confluent_kafka import Producer
from tidelog.kafka_server import KafkaServer

from kafka_server.test_java_console import _classpath, _java

_PATIENCE = 30.0


def _served(caplog: pytest.LogCaptureFixture, key: int) -> set[int]:
    found = set()
    for record in caplog.records:
        m = re.fullmatch(r"api key (\d+) v(\d+)", record.getMessage())
        if m and int(m[1]) == key:
            found.add(int(m[2]))
    return found


def test_java_producer_compresses_with_every_codec(
    store: tidelog.Store, server: KafkaServer, caplog: pytest.LogCaptureFixture
) -> None:
    classpath = _classpath()
    caplog.set_level(logging.DEBUG, logger="tidelog.kafka_server")
    topic = store.create_topic("console", 1)
    expected: list[bytes] = []
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        lines = [b"%s-%d %s" % (codec.encode(), i, b"y" * i) for i in range(20)]
        _java(
            classpath,
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            server.address,
            "--topic",
            "console",
            "--compression-codec",
            codec,
            stdin=b"\n".join(lines) + b"\n",
        )
        expected += lines
        assert [m.value for m in topic.read(0)] == expected, codec
    # Java 4.2 asks for Metadata v13 (the newest kio has) and Produce v11.
    assert 13 in _served(caplog, 3), _served(caplog, 3)
    assert 11 in _served(caplog, 0), _served(caplog, 0)


def test_java_consumer_filters_aborted_transactions(
    store: tidelog.Store, server: KafkaServer
) -> None:
    classpath = _classpath()
    store.create_topic("t", 1)
    producer = Producer({"bootstrap.servers": server.address, "transactional.id": "tx"})
    producer.init_transactions(_PATIENCE)
    for values, commit in (([b"c0", b"c1"], True), ([b"a0", b"a1"], False), ([b"c2"], True)):
        producer.begin_transaction()
        for value in values:
            producer.produce("t", value, partition=0)
        producer.flush(_PATIENCE)
        if commit:
            producer.commit_transaction(_PATIENCE)
        else:
            producer.abort_transaction(_PATIENCE)
    for isolation, want in (
        ("read_committed", ["c0", "c1", "c2"]),
        ("read_uncommitted", ["c0", "c1", "a0", "a1", "c2"]),
    ):
        printed = _java(
            classpath,
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            server.address,
            "--topic",
            "t",
            "--from-beginning",
            "--isolation-level",
            isolation,
            "--timeout-ms",
            "5000",
        )
        assert printed.split() == want, isolation
