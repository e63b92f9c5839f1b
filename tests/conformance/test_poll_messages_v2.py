"""Messages handed out by ``consumer.poll`` carry every field, on both backends (the Kafka
consumer copies them out of librdkafka's messages: tests/unit/test_kafka_message_v2.py)."""

from __future__ import annotations

import time
from typing import Any

PATIENCE = 60.0  # seconds a Kafka group may take to join and fetch
T0 = 1_700_000_000_000


def poll_until(consumer: Any, count: int) -> list[Any]:
    got: list[Any] = []
    end = time.monotonic() + PATIENCE
    while len(got) < count and time.monotonic() < end:
        got += consumer.poll(max_messages=500, timeout=0.5)
    return got


def expected(i: int) -> tuple[bytes | None, bytes | None, dict[str, bytes]]:
    key = None if i % 3 == 0 else b"k%d" % i
    value = None if key is not None and i % 7 == 0 else b"v%d" % i  # tombstones have keys
    headers = {} if i % 2 else {"h": b"%d" % i, "empty": b""}
    return key, value, headers


def test_polled_messages_carry_every_field(store: Any) -> None:
    t = store.create_topic("fields", partitions=2)
    where = {}
    for i in range(600):
        key, value, headers = expected(i)
        p, off = t.append(
            value, key=key, headers=headers or None, partition=i % 2, timestamp_ms=T0 + i
        )
        where[(p, off)] = i
    with store.consumer("fields", group="g") as c:
        got = poll_until(c, 600)
        assert len(got) == 600
        per_partition: dict[int, list[int]] = {0: [], 1: []}
        for m in got:
            i = where[(m.partition, m.offset)]
            key, value, headers = expected(i)
            assert (m.topic, m.key, m.value, m.headers, m.timestamp_ms) == (
                "fields",
                key,
                value,
                headers,
                T0 + i,
            )
            per_partition[m.partition].append(m.offset)
        assert per_partition == {0: list(range(300)), 1: list(range(300))}
        c.commit()
        assert c.committed() == {0: 300, 1: 300}
    t.append(b"late", partition=1, timestamp_ms=T0 + 600)
    with store.consumer("fields", group="g") as c:
        (m,) = poll_until(c, 1)
        assert (m.partition, m.offset, m.value, m.headers) == (1, 300, b"late", {})
