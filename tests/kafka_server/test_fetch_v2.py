"""Fetch as Kafka serves it: transaction markers as control batches (consumers move past
them), aborted transactions listed for read_committed clients (which drop them) and served
to read_uncommitted ones, and fetch sessions declined (session id 0: full fetches)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import tidelog
from confluent_kafka import Consumer, Producer, TopicPartition
from tidelog.kafka_server import KafkaServer

from kafka_server import kafka_frames as kf

_PATIENCE = 30.0
COMMITTED = [b"c%d" % i for i in range(5)]
ABORTED = [b"a%d" % i for i in range(3)]


def _transactions(address: str) -> None:
    """Topic t: 5 committed messages, 3 aborted, 1 committed, each transaction's marker."""
    producer = Producer({"bootstrap.servers": address, "transactional.id": "tx"})
    producer.init_transactions(_PATIENCE)
    for values, commit in ((COMMITTED, True), (ABORTED, False), ([b"last"], True)):
        producer.begin_transaction()
        for value in values:
            producer.produce("t", value, partition=0)
        producer.flush(_PATIENCE)
        if commit:
            producer.commit_transaction(_PATIENCE)
        else:
            producer.abort_transaction(_PATIENCE)


def _consume_to_end(address: str, isolation: str, end: int) -> tuple[list[bytes | None], int]:
    """Values read and the consumer's position once it reaches ``end`` (or gives up)."""
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"g-{isolation}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    try:
        tp = TopicPartition("t", 0, 0)
        consumer.assign([tp])
        got: list[bytes | None] = []
        position = 0
        deadline = time.monotonic() + _PATIENCE
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            position = consumer.position([TopicPartition("t", 0)])[0].offset
            if position == end:
                break
        return got, position
    finally:
        consumer.close()


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
def test_consumers_move_past_markers_to_the_end(
    store: tidelog.Store, server: KafkaServer, isolation: str
) -> None:
    topic = store.create_topic("t", 1)
    _transactions(server.address)
    end = topic.end_offset(0)
    assert end == 5 + 1 + 3 + 1 + 1 + 1  # three markers
    got, position = _consume_to_end(server.address, isolation, end)
    # The partition ends in a marker: a consumer that never saw it stayed one short.
    assert position == end
    if isolation == "read_committed":
        assert got == [*COMMITTED, b"last"]
    else:
        # As on Kafka, read_uncommitted consumers see aborted messages too.
        assert got == [*COMMITTED, *ABORTED, b"last"]
    # The store's own readers see committed messages only, at the offsets Kafka's had.
    assert [(m.offset, m.value) for m in topic.read(0)] == [
        *enumerate(COMMITTED),
        (10, b"last"),
    ]


def test_fetch_lists_aborted_transactions_and_serves_markers(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 1)
    _transactions(server.address)
    with kf.connect(server) as sock:
        committed = kf.request(sock, 1, 12, kf.body(1, 12, kf.fetch_body("t", 0, committed=True)))
        uncommitted = kf.request(sock, 1, 12, kf.body(1, 12, kf.fetch_body("t", 0)))
        at_marker = kf.request(sock, 1, 12, kf.body(1, 12, kf.fetch_body("t", 9, committed=True)))
        past = kf.request(sock, 1, 12, kf.body(1, 12, kf.fetch_body("t", 10, committed=True)))
    part = committed.responses[0].partitions[0]
    found = kf.batches(part.records)
    producer_id = found[0][2]
    # Markers (control batches, 0x30) at Kafka's offsets, data batches transactional (0x10).
    markers = [base for base, attributes, _p, _b in found if attributes == 0x30]
    assert markers == [5, 9, 11]
    assert {attributes for base, attributes, _p, _b in found if base not in markers} == {0x10}
    assert [(a.producer_id, a.first_offset) for a in part.aborted_transactions] == [
        (producer_id, 6)
    ]
    assert part.last_stable_offset == part.high_watermark == 12
    assert not uncommitted.responses[0].partitions[0].aborted_transactions
    assert kf.batches(uncommitted.responses[0].partitions[0].records) == found
    # From its abort marker, the transaction is still listed (the client drops its
    # producer there); past it, nothing aborted lies ahead.
    listed = at_marker.responses[0].partitions[0].aborted_transactions
    assert [(a.producer_id, a.first_offset) for a in listed] == [(producer_id, 6)]
    assert not past.responses[0].partitions[0].aborted_transactions


def test_kafka_python_filters_aborted_transactions_itself(
    store: tidelog.Store, server: KafkaServer
) -> None:
    kafka = pytest.importorskip("kafka")
    topic = store.create_topic("t", 1)
    _transactions(server.address)
    for isolation, want in (
        ("read_committed", [*COMMITTED, b"last"]),
        ("read_uncommitted", [*COMMITTED, *ABORTED, b"last"]),
    ):
        consumer = kafka.KafkaConsumer(
            bootstrap_servers=server.address,
            isolation_level=isolation,
            auto_offset_reset="earliest",
            consumer_timeout_ms=3000,
        )
        try:
            tp = kafka.TopicPartition("t", 0)
            consumer.assign([tp])
            assert [m.value for m in consumer] == want, isolation
            assert consumer.position(tp) == topic.end_offset(0), isolation
        finally:
            consumer.close()


@pytest.mark.parametrize(
    ("session_id", "epoch", "code"),
    [(0, -1, 0), (0, 0, 0), (12, 1, 70), (0, 3, 71)],
)
def test_fetch_sessions_are_declined(
    store: tidelog.Store, server: KafkaServer, session_id: int, epoch: int, code: int
) -> None:
    store.create_topic("t", 1).append(b"x", partition=0)
    payload = kf.body(1, 12, kf.fetch_body("t", 0, session_id=session_id, epoch=epoch))
    with kf.connect(server) as sock:
        response: Any = kf.request(sock, 1, 12, payload)
    assert (response.error_code.value, response.session_id) == (code, 0)
    if code == 0:
        assert len(kf.batches(response.responses[0].partitions[0].records)) == 1
    else:
        assert response.responses == ()
