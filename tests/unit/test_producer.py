from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import tidelog


def test_send_flush_and_read_back(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=3)
    with store.producer() as producer:
        for i in range(1000):
            assert producer.send("t", str(i).encode(), key=str(i % 7).encode(), headers={"n": b"1"})
        assert producer.flush(timeout=10)
        stats = producer.stats()
        assert (stats["sent"], stats["written"], stats["buffered"]) == (1000, 1000, 0)
    values = sorted(int(m.value or b"") for p in range(3) for m in topic.read(p))
    assert values == list(range(1000))
    # Keyed messages land where Topic.append would put them.
    for m in topic.read(0):
        assert topic.append(b"probe", key=m.key)[0] == 0
        break


def test_close_flushes_and_store_close_closes_producers(tmp_path: Path) -> None:
    store = tidelog.open(tmp_path)
    store.create_topic("t")
    producer = store.producer()
    for i in range(500):
        producer.send("t", b"%d" % i)
    store.close()
    assert producer.closed
    with pytest.raises(tidelog.StoreClosedError):
        producer.send("t", b"late")
    with tidelog.open(tmp_path) as reopened:
        assert reopened.topic("t").end_offset(0) == 500


def test_dropped_producer_loses_nothing(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t")
        producer = store.producer()
        for i in range(2000):
            producer.send("t", b"%d" % i)
        del producer  # garbage-collected without close: drains in its destructor
        assert store.topic("t").end_offset(0) == 2000


def test_eight_threads_every_message_once_in_order(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=4)
    per_thread = 5000
    with store.producer(buffer_messages=1024) as producer:

        def run(thread: int) -> None:
            for i in range(per_thread):
                producer.send("t", f"{thread}:{i}".encode(), partition=thread % 4)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        producer.flush()
    seen: Counter[str] = Counter()
    for p in range(4):
        last: dict[int, int] = {}
        for m in topic.read(p):
            thread, i = map(int, (m.value or b"").split(b":"))
            assert thread % 4 == p
            assert last.get(thread, -1) < i, "per-thread order kept within a partition"
            last[thread] = i
            seen[(m.value or b"").decode()] += 1
    assert len(seen) == 8 * per_thread
    assert set(seen.values()) == {1}


def test_raise_policy_raises_under_pressure(store: tidelog.Store) -> None:
    store.create_topic("t")
    with store.producer(buffer_messages=100, on_full="raise", linger_ms=1000) as producer:
        with pytest.raises(tidelog.BackpressureError, match="high watermark"):
            for i in range(10_000):
                producer.send("t", b"%d" % i)
        assert producer.stats()["high_watermark_hits"] >= 1
        producer.flush()
        assert producer.stats()["written"] == producer.stats()["sent"]


def test_block_policy_loses_nothing(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    with store.producer(buffer_messages=64, on_full="block") as producer:
        for i in range(20_000):
            producer.send("t", b"%d" % i)
        producer.flush()
        stats = producer.stats()
    assert stats["written"] == 20_000
    assert stats["high_watermark_hits"] >= 1
    assert stats["blocked_seconds"] > 0
    assert [int(m.value or b"") for m in topic.read(0)] == list(range(20_000))


def test_block_timeout_raises(store: tidelog.Store) -> None:
    store.create_topic("t")
    # Pressure from outside the buffer (what max_lag applies while a consumer group lags)
    # does not end when the writer drains, so the blocked send must time out.
    with store.producer(block_timeout=0.05) as producer:
        producer.send("t", b"before")
        producer._set_external_pressure(True)
        with pytest.raises(tidelog.BackpressureError, match="low watermark"):
            producer.send("t", b"blocked")
        producer._set_external_pressure(False)
        producer.send("t", b"after")
        producer.flush()
        assert producer.stats()["written"] == 2


def test_a_blocked_sender_wakes_a_lingering_writer(store: tidelog.Store) -> None:
    """A buffer smaller than half a batch never wakes the writer by its size; a sender
    that blocks must, or every full buffer would wait out the linger (a minute here)."""
    topic = store.create_topic("t")
    with store.producer(buffer_messages=100, linger_ms=60_000, block_timeout=30) as producer:
        for i in range(2_000):
            producer.send("t", b"%d" % i)
        producer.flush()
        assert producer.stats()["high_watermark_hits"] >= 1
    assert [int(m.value or b"") for m in topic.read(0)] == list(range(2_000))


def test_shed_drops_only_the_lowest_priorities_and_counts_exactly(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    # The writer sleeps (long linger) while we fill the buffer, so what is kept is decided
    # by shedding alone.
    with store.producer(
        buffer_messages=100, high_watermark=1.0, low_watermark=0.5, on_full="shed", linger_ms=5000
    ) as producer:
        time.sleep(0.05)  # let the writer go to sleep first
        sent = Counter[int]()
        for i in range(300):
            priority = [0, 2, 1][i % 3]
            producer.send("t", b"%d:%d" % (priority, i), priority=priority)
            sent[priority] += 1
        producer.flush()
        stats = producer.stats()
    kept = Counter(int((m.value or b"").split(b":")[0]) for m in topic.read(0))
    dropped = stats["dropped"]
    for priority in (0, 1, 2):
        assert kept[priority] + dropped.get(priority, 0) == sent[priority]
    # Never a higher priority dropped while a lower one is kept.
    assert dropped.get(2, 0) == 0
    assert kept[0] == 0 or dropped.get(1, 0) == 0
    assert sum(kept.values()) == stats["written"]


def test_hysteresis_no_flapping(store: tidelog.Store) -> None:
    store.create_topic("t")
    with store.producer(
        buffer_messages=100, high_watermark=0.8, low_watermark=0.2, on_full="raise", linger_ms=5000
    ) as producer:
        with pytest.raises(tidelog.BackpressureError):
            for i in range(10_000):
                producer.send("t", b"%d" % i)
        # Pressure stays on between the watermarks: refusing again is the same episode.
        with pytest.raises(tidelog.BackpressureError):
            producer.send("t", b"x")
        assert producer.stats()["high_watermark_hits"] == 1
        producer.flush()  # the writer drains everything: below the low watermark
        for i in range(79):
            producer.send("t", b"%d" % i)
        assert producer.stats()["high_watermark_hits"] == 1


def test_writer_failure_surfaces(store: tidelog.Store) -> None:
    store.create_topic("doomed")
    # A long linger keeps the message buffered until after the topic is gone.
    producer = store.producer(linger_ms=1000)
    time.sleep(0.05)  # let the writer go to sleep first
    producer.send("doomed", b"x")
    store.delete_topic("doomed")
    with pytest.raises(tidelog.TopicNotFoundError):
        producer.flush()
    assert (producer.stats()["failed"], producer.stats()["written"]) == (1, 0)
    with pytest.raises(tidelog.TopicNotFoundError):
        producer.send("doomed", b"y")
    producer.close()


def test_bad_arguments(store: tidelog.Store) -> None:
    store.create_topic("t")
    with pytest.raises(tidelog.InvalidConfigError, match="on_full"):
        store.producer(on_full="drop")  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidConfigError, match="low_watermark"):
        store.producer(high_watermark=0.5, low_watermark=0.6)
    with pytest.raises(tidelog.InvalidConfigError, match="buffer_messages"):
        store.producer(buffer_messages=0)
    with store.producer() as producer:
        with pytest.raises(TypeError, match="value must be bytes"):
            producer.send("t", "text")  # type: ignore[arg-type]
        with pytest.raises(tidelog.TopicNotFoundError):
            producer.send("missing", b"x")
        with pytest.raises(tidelog.MessageTooLargeError):
            producer.send("t", b"x" * (2 << 20))


def test_max_lag_pressure_follows_the_slowest_group(store: tidelog.Store) -> None:
    store.create_topic("t")
    consumer = store.consumer("t", group="slow")
    with store.producer(max_lag=100, on_full="raise", linger_ms=0) as producer:
        deadline = time.monotonic() + 10
        with pytest.raises(tidelog.BackpressureError):
            while time.monotonic() < deadline:
                producer.send("t", b"x")
                time.sleep(0.0005)
        assert store.groups()["slow"]["t"]["lag"][0] > 100
        # The consumer catches up and commits: pressure ends below max_lag * low_watermark.
        while consumer.poll(max_messages=1000, timeout=0):
            pass
        consumer.commit()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                producer.send("t", b"y")
                break
            except tidelog.BackpressureError:
                time.sleep(0.01)
        else:
            pytest.fail("pressure did not end after the group caught up")
        assert producer.stats()["high_watermark_hits"] >= 1
    consumer.close()
    with pytest.raises(tidelog.InvalidConfigError, match="max_lag"):
        store.producer(max_lag=0)


def test_send_call_forms(store: tidelog.Store) -> None:
    """``send`` (a hand-made native method) by position or keyword, and each wrong call
    refused with the argument named and nothing buffered."""
    topic = store.create_topic("t", partitions=2)
    with store.producer() as producer:
        assert producer.send("t", b"a", partition=1)
        assert producer.send(topic="t", value=b"b", priority=0, partition=1, key=b"k")
        built: dict[str, Any] = {"ke" + "y": b"k", "partition": 0}  # not interned names
        assert producer.send("t", None, **built)  # a tombstone
        calls: list[tuple[tuple[object, ...], dict[str, object], str]] = [
            (("t",), {}, "missing required argument 'value'"),
            ((), {"value": b"v"}, "missing required argument 'topic'"),
            (("t", b"a", b"b"), {}, r"takes 2 positional arguments but 3 were given"),
            (("t", b"a"), {"topic": "t"}, "multiple values for argument 'topic'"),
            (("t", b"a"), {"timestamp_ms": 1}, "unexpected keyword argument 'timestamp_ms'"),
            ((1, b"a"), {}, "topic must be str"),
            (("t", b"a"), {"priority": "high"}, "priority must be int, got str"),
        ]
        for args, kwargs, message in calls:
            with pytest.raises(TypeError, match=message):
                producer.send(*args, **kwargs)  # type: ignore[arg-type]
        assert producer.flush(timeout=10)
        assert producer.stats()["sent"] == 3
    assert [(m.key, m.value) for m in topic.read(1)] == [(None, b"a"), (b"k", b"b")]
    assert [(m.key, m.value) for m in topic.read(0)] == [(b"k", None)]
