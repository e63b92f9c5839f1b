"""Compressed produce batches (gzip, snappy, lz4, zstd) from Kafka producers: decompressed
and checked in the core, stored compressed, served to every client uncompressed."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
import tidelog
from confluent_kafka import Consumer, Producer, TopicPartition
from tidelog.kafka_server import KafkaServer

from kafka_server import kafka_frames as kf

_PATIENCE = 30.0
CODECS = ["gzip", "snappy", "lz4", "zstd"]
COUNT = 300


Headers = list[tuple[str, str | bytes | None]]


def _messages() -> list[tuple[bytes | None, bytes | None, Headers]]:
    out: list[tuple[bytes | None, bytes | None, Headers]] = []
    for i in range(COUNT):
        key = b"key-%d" % i if i % 3 else None
        value = None if i % 97 == 5 else b'{"n": %d, "pad": "%s"}' % (i, b"x" * (i % 40))
        headers: Headers = [("n", b"%d" % i)] if i % 2 else []
        out.append((key, value, headers))
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_batches_round_trip(
    store: tidelog.Store, server: KafkaServer, codec: str
) -> None:
    topic = store.create_topic("t", 1)
    producer = Producer(
        {
            "bootstrap.servers": server.address,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": codec,
            "linger.ms": 20,
        }
    )
    delivered: list[Any] = []
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        (errors if err is not None else delivered).append(err or msg)

    sent = _messages()
    for key, value, headers in sent:
        producer.produce("t", value, key, partition=0, headers=headers, on_delivery=report)
    assert producer.flush(_PATIENCE) == 0
    assert errors == []
    assert [m.offset() for m in delivered] == list(range(COUNT))

    consumer = Consumer({"bootstrap.servers": server.address, "group.id": "g"})
    got: list[tuple[int | None, bytes | None, bytes | None, Any]] = []
    try:
        consumer.assign([TopicPartition("t", 0, 0)])
        deadline = time.monotonic() + _PATIENCE
        while len(got) < COUNT and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None:
                assert msg.error() is None, msg.error()
                got.append((msg.offset(), msg.key(), msg.value(), msg.headers() or []))
    finally:
        consumer.close()
    assert got == [(i, k, v, h) for i, (k, v, h) in enumerate(sent)]
    # The store's own reader: the same values at the same offsets.
    stored = [(m.offset, m.key, m.value) for m in topic.read(0)]
    assert stored == [(i, k, v) for i, (k, v, _h) in enumerate(sent)]


def _gzip_batch() -> bytes:
    records = pytest.importorskip("kafka.record.default_records")
    builder = records.DefaultRecordBatchBuilder(2, 1, False, -1, -1, -1, 1 << 20)
    for i in range(50):
        builder.append(i, 1_000 + i, None, b"value %d" % i, [])
    return bytes(builder.build())


def _reseal(batch: bytes, body: bytes) -> bytes:
    """``batch`` with its records section replaced by ``body``, length and CRC32C fixed
    (the damage is in what the codec holds, not in transit)."""
    crc32c = pytest.importorskip("kafka.record._crc32c")
    out = bytearray(batch[:61] + body)
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">I", out, 17, crc32c.crc(bytes(out[21:])))
    return bytes(out)


def _produce(server: KafkaServer, records: bytes) -> Any:
    payload = kf.body(
        0,
        9,
        {
            "transactional_id": None,
            "acks": -1,
            "timeout": 5000,
            "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": records}]}],
        },
    )
    with kf.connect(server) as sock:
        return kf.request(sock, 0, 9, payload).responses[0].partition_responses[0]


def test_damaged_compressed_batches_are_corrupt_messages(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 1)
    good = _gzip_batch()
    body = good[61:]
    for damaged in (body[: len(body) // 2], body[:10] + bytes(len(body) - 10), b"\x1f\x8b"):
        answer = _produce(server, _reseal(good, damaged))
        assert answer.error_code.value == 2, answer  # CORRUPT_MESSAGE
    assert topic.end_offset(0) == 0
    # The same batch undamaged is taken: what the fuzz of the body broke was only the body.
    answer = _produce(server, good)
    assert (answer.error_code.value, answer.base_offset) == (0, 0)
    assert [m.value for m in topic.read(0)] == [b"value %d" % i for i in range(50)]
