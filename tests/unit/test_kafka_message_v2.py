"""``tidelog.kafka.KafkaMessage``: confluent-kafka's messages as tidelog messages, no broker.

confluent-kafka's ``Message`` constructor (meant for tests) builds the objects its consumer
hands out, so the conversion is checked here field by field; the conformance suite checks
the same through a real broker.
"""

from __future__ import annotations

import gc
import sys

import pytest

ck = pytest.importorskip("confluent_kafka")

from tidelog.kafka.messages import KafkaMessage, from_confluent, from_consume  # noqa: E402

CREATE_TIME = 1


def raw(offset: int, **fields: object) -> object:
    base: dict[str, object] = {
        "topic": "t",
        "partition": 3,
        "offset": offset,
        "key": b"k",
        "value": b"v%d" % offset,
        "timestamp": (CREATE_TIME, 1_700_000_000_000 + offset),
    }
    return ck.Message(**{**base, **fields})


def test_every_attribute_is_the_confluent_message_s() -> None:
    m = from_confluent(raw(7, headers=[("a", b"1"), ("b", None), ("a", b"2")]))
    assert isinstance(m, KafkaMessage)
    assert (m.topic, m.partition, m.offset, m.timestamp_ms) == ("t", 3, 7, 1_700_000_000_007)
    assert (m.key, m.value) == (b"k", b"v7")
    # dict semantics as locally: a header without a value is b"", a repeated name keeps the last
    assert m.headers == {"a": b"2", "b": b""}
    assert m.headers is not m.headers  # a new dict each time: messages are read-only
    assert m.fields() == ("t", 3, 7, 1_700_000_000_007, b"k", b"v7", {"a": b"2", "b": b""})


def test_missing_key_value_and_headers() -> None:
    m = from_confluent(raw(0, key=None, value=None))
    assert (m.key, m.value, m.headers) == (None, None, {})


def test_messages_are_read_only_and_compare_by_fields() -> None:
    a, b, c = (from_confluent(raw(o)) for o in (1, 1, 2))
    assert a == b and a != c and hash(a) == hash(b)
    assert a != "not a message"
    assert repr(a) == "KafkaMessage(topic='t', partition=3, offset=1, key=b'k', value=b'v1')"
    with pytest.raises(AttributeError):
        a.value = b"x"  # type: ignore[misc]
    assert not hasattr(a, "raw")  # no way to librdkafka's message: no cycle through it


def test_consume_result_keeps_messages_in_order_and_drops_errors() -> None:
    error = ck.Message(error=ck.KafkaError(ck.KafkaError._PARTITION_EOF))
    batch = [raw(0), raw(1), error, raw(2)]
    out = from_consume(batch)
    assert [m.offset for m in out] == [0, 1, 2]
    assert [m.value for m in out] == [b"v0", b"v1", b"v2"]
    assert batch[2] is error  # still there for poll() to raise
    assert from_consume([]) == []


def test_a_wrapped_batch_adds_no_object_the_cycle_collector_counts() -> None:
    # CPython collects its youngest generation once the GC-type objects allocated and not
    # freed since the last collection pass 700. A consume(500) allocates 500; the plain
    # loop frees them when it takes the next batch and never collects. A GC-type wrapper
    # per message (the Python class this replaces) added 500 more: a collection each poll.
    batch = [raw(i, headers=[("h", b"x")] if i % 2 else None) for i in range(500)]
    gc.disable()
    try:
        gc.collect()
        before = gc.get_count()[0]
        out = from_consume(batch)
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert len(out) == 500
    assert grown <= 5  # the result list; the 500 wrappers are not GC objects
    assert not any(gc.is_tracked(m) for m in out)


def test_a_message_holds_its_librdkafka_message_until_it_goes() -> None:
    r = raw(5, headers=[("h", b"x")])
    before = sys.getrefcount(r)
    m = from_confluent(r)
    assert sys.getrefcount(r) == before + 1
    assert m.headers == {"h": b"x"}
    del m
    assert sys.getrefcount(r) == before


def test_it_cannot_be_made_from_python() -> None:
    with pytest.raises(TypeError):
        KafkaMessage(raw(0))  # type: ignore[call-arg]


def test_a_value_that_is_not_bytes_is_named() -> None:
    m = from_confluent(raw(0, value="text"))
    with pytest.raises(TypeError, match="value must be bytes or None, got str"):
        _ = m.value
