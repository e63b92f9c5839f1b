"""One set of API tests, run against a local store and against Apache Kafka.

Each test takes the ``store`` fixture (tests/conformance/conftest.py), parametrized over
both backends. A test that cannot apply to Kafka carries ``local_only(reason)``; README.md's
"Kafka backend: differences" table lists the same reasons.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tidelog

PATIENCE = 60.0  # seconds a Kafka group may take to join and fetch


def poll_until(consumer: Any, count: int) -> list[Any]:
    got: list[Any] = []
    end = time.monotonic() + PATIENCE
    while len(got) < count and time.monotonic() < end:
        got += consumer.poll(timeout=0.5)
    return got


def read_eventually(topic: Any, partition: int, count: int) -> list[bytes | None]:
    # Kafka writes a transaction's commit markers just after commit_transaction returns.
    end = time.monotonic() + PATIENCE
    while True:
        values = [m.value for m in topic.read(partition)]
        if len(values) >= count or time.monotonic() > end:
            return values
        time.sleep(0.05)


def poll_until_one(consumer: Any) -> list[Any]:
    """The first messages a member hands out, polled one at a time (its fetch holds more)."""
    got: list[Any] = []
    end = time.monotonic() + PATIENCE
    while not got and time.monotonic() < end:
        got = consumer.poll(max_messages=1, timeout=0.5)
    return got


def wait_split(a: Any, b: Any) -> None:
    """Polls two members of one group until each owns one partition."""
    end = time.monotonic() + PATIENCE
    while (len(a.assignment()), len(b.assignment())) != (1, 1) and time.monotonic() < end:
        a.poll(timeout=0.2)
        b.poll(timeout=0.2)


def wait_assigned(consumer: Any, partitions: int) -> None:
    end = time.monotonic() + PATIENCE
    while len(consumer.assignment()) < partitions and time.monotonic() < end:
        assert consumer.poll(timeout=0.2) == []
    assert len(consumer.assignment()) == partitions


class CommitWatch:
    """Counts a consumer's commits and its fetches that brought messages, and keeps where
    the last commit left each partition (``past``).

    On kafka:// it wraps the member's confluent-kafka consumer (``commit``; ``consume`` and
    ``poll``, its fetches); locally the member's commit record and ``_poll``, which returns
    one fetch. ``consumer`` is the synchronous member (``.sync`` of a tidelog.aio one).
    """

    def __init__(self, consumer: Any) -> None:
        self.commits = 0
        self.fetches = 0
        self.past: dict[int, int] = {}
        if hasattr(consumer, "_consumer"):  # kafka://
            consumer._consumer = _WatchedKafkaClient(consumer._consumer, self)
            return
        commit, poll = consumer._commit_record, consumer._poll

        def counted_commit(offsets: dict[int, int], *args: Any) -> Any:
            result = commit(offsets, *args)
            self.committed(offsets)
            return result

        def counted_poll(*args: Any) -> Any:
            out = poll(*args)
            self.fetches += bool(out)
            return out

        consumer._commit_record = counted_commit
        consumer._poll = counted_poll

    def committed(self, offsets: dict[int, int]) -> None:
        self.commits += 1
        self.past.update(offsets)


class _WatchedKafkaClient:
    def __init__(self, client: Any, watch: CommitWatch) -> None:
        self._client = client
        self._watch = watch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        result = self._client.commit(*args, **kwargs)
        self._watch.committed({tp.partition: tp.offset for tp in kwargs["offsets"]})
        return result

    def consume(self, *args: Any) -> Any:
        out = self._client.consume(*args)
        self._watch.fetches += bool(out)
        return out

    def poll(self, *args: Any) -> Any:
        out = self._client.poll(*args)
        self._watch.fetches += out is not None
        return out


class FailNextCommit:
    """Makes a member's next commit fail, once, as a lost connection or a failed disk would.

    On kafka:// its confluent-kafka consumer's ``commit`` raises a transport error; locally
    its commit record raises StorageError (EIO). Nothing is written by the failed commit.
    ``consumer`` is the synchronous member (``.sync`` of a tidelog.aio one).
    """

    def __init__(self, consumer: Any) -> None:
        self.failed = False
        if hasattr(consumer, "_consumer"):  # kafka://
            from confluent_kafka import KafkaError, KafkaException

            consumer._consumer = _KafkaClientFailingOnce(
                consumer._consumer, self, KafkaException(KafkaError(KafkaError._TRANSPORT))
            )
            return
        commit = consumer._commit_record

        def failing_commit(*args: Any) -> Any:
            self.fail_once(tidelog.StorageError(errno.EIO, "injected commit failure"))
            return commit(*args)

        consumer._commit_record = failing_commit

    def fail_once(self, error: Exception) -> None:
        if not self.failed:
            self.failed = True
            raise error


class _KafkaClientFailingOnce:
    def __init__(self, client: Any, fail: FailNextCommit, error: Exception) -> None:
        self._client = client
        self._fail = fail
        self._error = error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        self._fail.fail_once(self._error)
        return self._client.commit(*args, **kwargs)


# -- store and topics --------------------------------------------------------------------------


def test_create_list_get_delete_topics(store: Any) -> None:
    t = store.create_topic("orders", partitions=3)
    assert (t.name, t.partitions) == ("orders", 3)
    store.create_topic("audit")
    assert store.topics() == ["audit", "orders"]
    assert store.topic("orders").partitions == 3
    assert store.create_topic("orders", partitions=3, exist_ok=True).partitions == 3
    with pytest.raises(tidelog.TopicExistsError):
        store.create_topic("orders", partitions=3)
    store.delete_topic("audit")
    assert store.topics() == ["orders"]
    with pytest.raises(tidelog.TopicNotFoundError):
        store.topic("audit")
    with pytest.raises(tidelog.TopicNotFoundError):
        store.delete_topic("audit")


def test_internal_names_are_reserved_and_hidden(store: Any) -> None:
    with pytest.raises(tidelog.InvalidConfigError, match="__"):
        store.create_topic("__mine")
    with pytest.raises(tidelog.InvalidConfigError, match="__"):
        store.delete_topic("__consumer_offsets")
    t = store.create_topic("jobs")
    t.append(b"x")
    with store.consumer("jobs", group="g") as c:
        assert len(poll_until(c, 1)) == 1
        c.commit()
    assert all(not name.startswith("__") for name in store.topics())


def test_bad_arguments_raise_named_errors(store: Any) -> None:
    t = store.create_topic("t", partitions=2)
    with pytest.raises(tidelog.PartitionNotFoundError):
        t.append(b"x", partition=7)
    with pytest.raises(tidelog.PartitionNotFoundError):
        t.read_batch(5, 0)
    with pytest.raises(TypeError, match="value"):
        t.append("not bytes")
    with pytest.raises(tidelog.InvalidConfigError):
        store.create_topic("zero", partitions=0)


def test_closed_store_refuses_calls(store: Any) -> None:
    store.create_topic("t")
    store.close()
    store.close()  # twice is harmless
    with pytest.raises(tidelog.StoreClosedError):
        store.topics()


# -- appending and reading --------------------------------------------------------------------


def test_append_and_read_back_every_attribute(store: Any) -> None:
    t = store.create_topic("events", partitions=2)
    ts = 1_700_000_000_000
    p, off = t.append(b"v1", key=b"k", headers={"h": b"x"}, partition=1, timestamp_ms=ts)
    assert (p, off) == (1, 0)
    (msg,) = list(t.read(1, 0))
    assert (msg.topic, msg.partition, msg.offset) == ("events", 1, 0)
    assert (msg.key, msg.value, msg.headers, msg.timestamp_ms) == (b"k", b"v1", {"h": b"x"}, ts)
    assert t.append(b"v2", partition=1) == (1, 1)
    assert [m.value for m in t.read(1, 1)] == [b"v2"]


def test_batches_offsets_and_ranges(store: Any) -> None:
    t = store.create_topic("b")
    assert t.append_batch([b"a", b"b", b"c"], partition=0) == (0, 0)
    assert t.append_batch(b"ddeee", lengths=[2, 3], partition=0) == (0, 3)
    assert (t.start_offset(0), t.end_offset(0)) == (0, 5)
    batch = t.read_batch(0, 1, max_messages=3)
    assert len(batch) == 3
    assert batch.values() == [b"b", b"c", b"dd"]
    assert batch.offsets.tolist() == [1, 2, 3]
    assert [m.value for m in batch] == [b"b", b"c", b"dd"]
    assert batch[0].offset == 1
    buf, bounds = batch.value_buffer()
    assert [bytes(buf[bounds[i] : bounds[i + 1]]) for i in range(3)] == [b"b", b"c", b"dd"]
    assert len(t.read_batch(0, 5)) == 0  # at the end: empty
    with pytest.raises(tidelog.OffsetOutOfRangeError):
        t.read_batch(0, 6)
    assert [m.offset for m in t.read(0, 0)] == [0, 1, 2, 3, 4]


def test_offset_for_timestamp_and_read_from_a_time(store: Any) -> None:
    t = store.create_topic("ts")
    for i, ts in enumerate([1000, 2000, 3000]):
        t.append(b"%d" % i, timestamp_ms=ts, partition=0)
    assert t.offset_for_timestamp(0, 1500) == 1
    assert t.offset_for_timestamp(0, 3000) == 2
    assert t.offset_for_timestamp(0, 4000) is None
    assert [m.value for m in t.read(0, timestamp_ms=2000)] == [b"1", b"2"]


def test_keys_choose_a_stable_partition(store: Any) -> None:
    t = store.create_topic("k", partitions=4)
    first = {key: t.append(b"x", key=key)[0] for key in (b"a", b"b", b"c", b"d", b"e")}
    again = {key: t.append(b"y", key=key)[0] for key in first}
    assert first == again
    with store.producer() as producer:
        for key in first:
            producer.send("k", b"z", key=key)
    for key, p in first.items():
        assert [m.value for m in t.read(p) if m.key == key] == [b"x", b"y", b"z"]


def test_unkeyed_appends_spread_over_partitions(store: Any) -> None:
    t = store.create_topic("rr", partitions=3)
    assert {t.append(b"x")[0] for _ in range(6)} == {0, 1, 2}


# -- producer ---------------------------------------------------------------------------------


def test_producer_flush_and_stats(store: Any) -> None:
    t = store.create_topic("p", partitions=2)
    with store.producer() as producer:
        for i in range(100):
            producer.send("p", b"%d" % i, partition=i % 2)
        producer.flush()
        stats = producer.stats()
    assert stats["sent"] == stats["written"] == 100
    assert stats["buffered"] == 0
    assert sum(stats["dropped"].values()) == 0
    assert {"high_watermark_hits", "blocked_seconds"} <= set(stats)
    assert [m.value for m in t.read(0)] == [b"%d" % i for i in range(0, 100, 2)]


def test_producer_rejects_bad_options(store: Any) -> None:
    with pytest.raises(tidelog.InvalidConfigError):
        store.producer(on_full="maybe")
    with pytest.raises(tidelog.InvalidConfigError):
        store.producer(high_watermark=0.2, low_watermark=0.5)


@pytest.mark.local_only("librdkafka cannot take back queued messages: 'shed' drops the new message")
def test_shedding_drops_lowest_priority_first(store: Any) -> None:
    store.create_topic("s")
    with store.producer(buffer_messages=4, on_full="shed", linger_ms=50.0) as producer:
        for i in range(64):
            producer.send("s", b"%d" % i, priority=i % 2)
        producer.flush()
        dropped = producer.stats()["dropped"]
    assert dropped.get(0, 0) >= dropped.get(1, 0)


# -- consumer groups --------------------------------------------------------------------------


def test_group_poll_commit_lag_and_resume(store: Any) -> None:
    t = store.create_topic("orders", partitions=2)
    for i in range(10):
        t.append(b"%d" % i, partition=i % 2)
    with store.consumer("orders", group="billing") as c:
        got = poll_until(c, 10)
        assert sorted(m.value for m in got) == sorted(b"%d" % i for i in range(10))
        c.commit()
        assert c.committed() == {0: 5, 1: 5}
        assert c.lag() == {0: 0, 1: 0}
        assert c.assignment() == [0, 1]
    t.append(b"10", partition=0)
    with store.consumer("orders", group="billing") as c:
        assert [m.value for m in poll_until(c, 1)] == [b"10"]
        assert c.lag() == {0: 1, 1: 0}


def test_a_waiting_poll_returns_when_a_message_comes_not_at_its_timeout(store: Any) -> None:
    """Kafka's poll returns as soon as records are there. confluent-kafka's consume(n,
    timeout) waits for all n or the timeout: a kafka:// poll(500, timeout=30) given one
    message waited the whole 30 s (a generous bound below, not a measurement)."""
    t = store.create_topic("waits")
    with store.consumer("waits", group="g") as c:
        wait_assigned(c, 1)
        timer = threading.Timer(0.5, lambda: t.append(b"late", partition=0))
        timer.start()
        started = time.monotonic()
        got = c.poll(500, timeout=30.0)
        waited = time.monotonic() - started
        timer.join()
    assert [m.value for m in got] == [b"late"]
    assert waited < 15.0, f"poll returned after {waited:.1f} s"


def test_reading_to_the_end_does_not_wait(store: Any) -> None:
    """read and read_batch end at the log end: before, each kafka:// call that reached it
    waited out a 0.5 s consume (ten calls: a generous bound below, not a measurement)."""
    t = store.create_topic("ends")
    t.append_batch([b"a", b"b", b"c"], partition=0)
    t.read_batch(partition=0, offset=0)  # connects the reader
    started = time.monotonic()
    for _ in range(10):
        assert [m.value for m in t.read_batch(partition=0, offset=0, max_messages=1000)] == [
            b"a",
            b"b",
            b"c",
        ]
    assert [m.value for m in t.read(partition=0, offset=1)] == [b"b", b"c"]
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, f"11 reads to the end took {elapsed:.1f} s"


def test_at_least_once_commits_what_was_moved_past(store: Any) -> None:
    t = store.create_topic("alo")
    t.append_batch([b"a", b"b", b"c"], partition=0)
    with store.consumer("alo", group="g", max_poll_messages=2) as c:
        assert [m.value for m in poll_until(c, 2)] == [b"a", b"b"]
        assert c.committed() == {}
        assert [m.value for m in poll_until(c, 1)] == [b"c"]  # moves past a, b
        assert c.committed() == {0: 2}
    with store.consumer("alo", group="g") as c:  # close committed c
        assert c.committed() == {0: 3}


def test_iterating_commits_only_what_it_handed_out(store: Any) -> None:
    """A fetch brings several messages; iterating hands them out one at a time, and only
    those count as delivered: a member that took three and closed leaves the rest to the
    group (before, the whole fetch was committed and the rest skipped)."""
    t = store.create_topic("iter")
    t.append_batch([b"%d" % i for i in range(10)], partition=0)
    c = store.consumer("iter", group="g")
    it = iter(c)
    assert [next(it).offset for _ in range(2)] == [0, 1]
    c.commit()
    assert c.committed() == {0: 2}
    assert next(it).offset == 2
    c.close()
    with store.consumer("iter", group="g") as again:
        assert again.committed() == {0: 3}
        assert [m.offset for m in poll_until(again, 7)] == list(range(3, 10))


def test_at_most_once_commits_before_handing_out(store: Any) -> None:
    t = store.create_topic("amo")
    t.append_batch([b"a", b"b"], partition=0)
    with store.consumer("amo", group="g", delivery="at-most-once") as c:
        assert len(poll_until(c, 2)) == 2
        assert c.committed() == {0: 2}


def test_seek_and_pause(store: Any) -> None:
    t = store.create_topic("sk", partitions=2)
    t.append_batch([b"a", b"b", b"c"], partition=0)
    t.append_batch([b"x", b"y"], partition=1)
    with store.consumer("sk", group="g") as c:
        assert len(poll_until(c, 5)) == 5
        c.seek(0, 1)
        c.pause(1)
        assert c.paused() == [1]
        t.append(b"z", partition=1)
        assert [m.value for m in poll_until(c, 2)] == [b"b", b"c"]
        c.resume(1)
        assert [m.value for m in poll_until(c, 1)] == [b"z"]


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once", "exactly-once"])
def test_pause_holds_back_what_was_already_fetched(store: Any, delivery: str) -> None:
    """A fetch brings messages of both partitions; pausing one keeps its fetched messages
    back (iterating and poll hand out none) until resume, then hands them out in order,
    each once. Commits stop at the first of them (before, iterating went on handing out
    the paused partition's fetched messages)."""
    t = store.create_topic("pz", partitions=2)
    for partition in (0, 1):
        t.append_batch([b"%d-%d" % (partition, i) for i in range(10)], partition=partition)
    store.create_topic("pz.out")
    with (
        store.consumer("pz", group="g", delivery=delivery) as c,
        store.producer(name="pz") as producer,
    ):
        it = iter(c)

        def take() -> Any:
            msg = next(it)
            if delivery == "exactly-once":
                with store.transaction(producer, c) as tx:
                    tx.send("pz.out", msg.value, partition=0)
            return msg

        first = take()
        p, q = first.partition, 1 - first.partition
        assert first.offset == 0
        c.pause(p)
        assert c.paused() == [p]
        others = [take() for _ in range(10)]
        assert [(m.partition, m.offset) for m in others] == [(q, i) for i in range(10)]
        assert c.poll(timeout=0.5) == []
        if delivery == "at-least-once":
            c.commit()
        if delivery != "at-most-once":  # at-most-once may commit a fetch before handing out
            assert c.committed() == {p: 1, q: 10}
        c.resume(p)
        rest = [take() for _ in range(9)]
        assert [(m.partition, m.offset) for m in rest] == [(p, i) for i in range(1, 10)]
        assert c.poll(timeout=0.5) == []
        if delivery == "at-least-once":
            c.commit()
        assert c.committed() == {p: 10, q: 10}
    if delivery == "exactly-once":
        outputs = read_eventually(store.topic("pz.out"), 0, 20)
        assert sorted(v or b"" for v in outputs) == sorted(
            b"%d-%d" % (partition, i) for partition in (0, 1) for i in range(10)
        )


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_pause_then_poll_and_close_lose_nothing(store: Any, delivery: str) -> None:
    """poll() skips a paused partition's fetched messages too, and a member that closes
    while they are held back leaves them to the group (at-most-once too: before, a local
    member's fetch had committed past them)."""
    t = store.create_topic("pzc", partitions=2)
    for partition in (0, 1):
        t.append_batch([b"%d" % i for i in range(10)], partition=partition)
    c = store.consumer("pzc", group="g", delivery=delivery)
    first = next(iter(c))
    p, q = first.partition, 1 - first.partition
    c.pause(p)
    got = poll_until(c, 10)
    assert [(m.partition, m.offset) for m in got] == [(q, i) for i in range(10)]
    c.close()
    with store.consumer("pzc", group="g") as again:
        assert again.committed() == {p: 1, q: 10}
        assert [(m.partition, m.offset) for m in poll_until(again, 9)] == [
            (p, i) for i in range(1, 10)
        ]


def test_seek_out_of_range_is_refused(store: Any) -> None:
    """seek() to an offset outside the partition (before its start, past its end offset)
    raises OffsetOutOfRangeError naming the valid range and leaves the position alone
    (before, the Kafka backend accepted it and librdkafka reset the partition to
    ``start``, handing the messages out again)."""
    t = store.create_topic("sko")
    t.append_batch([b"a", b"b", b"c"], partition=0)
    with store.consumer("sko", group="g") as c:
        assert [m.offset for m in poll_until(c, 3)] == [0, 1, 2]
        valid = "the log starts at offset 0 and the next offset is 3"
        for bad in (4, -1):
            with pytest.raises(
                tidelog.OffsetOutOfRangeError,
                match=f"offset {bad} out of range for 'sko' partition 0: {valid}",
            ):
                c.seek(0, bad)
        assert c.position(0) == 3
        t.append(b"d", partition=0)
        assert [m.offset for m in poll_until(c, 1)] == [3]
        c.seek(0, 4)  # the end offset is a valid position
        c.seek(0, 1)
        assert [m.offset for m in poll_until(c, 3)] == [1, 2, 3]


def test_seek_on_a_paused_partition_drops_what_it_held(store: Any) -> None:
    t = store.create_topic("pzs", partitions=2)
    for partition in (0, 1):
        t.append_batch([b"%d" % i for i in range(10)], partition=partition)
    with store.consumer("pzs", group="g") as c:
        it = iter(c)
        first = next(it)
        p, q = first.partition, 1 - first.partition
        c.pause(p)
        c.seek(p, 6)
        assert [(m.partition, m.offset) for m in (next(it) for _ in range(10))] == [
            (q, i) for i in range(10)
        ]
        c.resume(p)
        assert [(m.partition, m.offset) for m in (next(it) for _ in range(4))] == [
            (p, i) for i in range(6, 10)
        ]
        c.commit()
        assert c.committed() == {p: 10, q: 10}


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once", "exactly-once"])
def test_a_closed_consumer_hands_out_nothing(store: Any, delivery: str) -> None:
    """Every way of taking messages raises StoreClosedError once the consumer is closed,
    also while its last fetch still holds messages; those go to the next member (before,
    iterating a local consumer went on handing them out, and a Kafka one stopped)."""
    t = store.create_topic("cl")
    t.append_batch([b"%d" % i for i in range(10)], partition=0)
    c = store.consumer("cl", group="g", delivery=delivery)
    it = iter(c)
    assert next(it).offset == 0  # the fetch brought the other nine too
    c.close()
    assert c.closed
    named = "consumer of group 'g' on topic 'cl' is closed"
    calls: list[Callable[[], object]] = [
        lambda: next(it),
        lambda: next(iter(c)),
        lambda: c.poll(timeout=0),
        lambda: c.seek(0, 0),
        lambda: c.pause(0),
        lambda: c.resume(0),
    ]
    for call in calls:
        with pytest.raises(tidelog.StoreClosedError, match=named):
            call()
    # At-most-once too: its close commits back to the first message not handed out
    # (before, the fetch's commit stood and the next member started after all ten).
    with store.consumer("cl", group="g") as again:
        expected = list(range(0 if delivery == "exactly-once" else 1, 10))
        assert [m.offset for m in poll_until(again, len(expected))] == expected


def test_position_is_the_next_offset_handed_out(store: Any) -> None:
    """position() is the offset of the next message this member hands out, as in Kafka:
    not past messages its last fetch brought but iterating has not handed out yet, nor
    past what pause() holds back (before, both backends gave the fetch position)."""
    t = store.create_topic("pos", partitions=2)
    for partition in (0, 1):
        t.append_batch([b"%d" % i for i in range(10)], partition=partition)
    with store.consumer("pos", group="g") as c:
        it = iter(c)
        first = next(it)
        p, q = first.partition, 1 - first.partition
        assert first.offset == 0
        assert c.position(p) == 1
        c.pause(p)
        assert c.position(p) == 1  # held back, not handed out
        assert [(m.partition, m.offset) for m in (next(it) for _ in range(3))] == [
            (q, i) for i in range(3)
        ]
        assert c.position(q) == 3
        c.seek(q, 7)
        assert c.position(q) == 7
        c.resume(p)
        assert (next(it).partition, c.position(p)) == (p, 2)
        rest = poll_until(c, 8 + 3)
        assert sorted((m.partition, m.offset) for m in rest) == sorted(
            [(p, i) for i in range(2, 10)] + [(q, i) for i in range(7, 10)]
        )
        assert (c.position(p), c.position(q)) == (10, 10)


def test_a_closed_consumer_answers_no_offset_questions(store: Any) -> None:
    """committed() and lag() of a closed member raise StoreClosedError, as its other calls
    do and as Kafka's clients do (before, the local backend answered and Kafka raised)."""
    t = store.create_topic("clo")
    t.append_batch([b"a", b"b"], partition=0)
    c = store.consumer("clo", group="g")
    assert len(poll_until(c, 2)) == 2
    c.commit()
    c.close()
    named = "consumer of group 'g' on topic 'clo' is closed"
    with pytest.raises(tidelog.StoreClosedError, match=named):
        c.committed()
    with pytest.raises(tidelog.StoreClosedError, match=named):
        c.lag()
    with store.consumer("clo", group="g") as again:
        assert again.committed() == {0: 2}


def test_a_closed_consumer_answers_no_assignment_questions(store: Any) -> None:
    """assignment() and paused() of a closed member raise StoreClosedError, as its other
    calls do and as Kafka's Java client does (IllegalStateException); before, both
    backends answered."""
    t = store.create_topic("cla")
    t.append(b"a", partition=0)
    c = store.consumer("cla", group="g")
    assert len(poll_until(c, 1)) == 1
    c.pause(0)
    c.close()
    named = "consumer of group 'g' on topic 'cla' is closed"
    with pytest.raises(tidelog.StoreClosedError, match=named):
        c.assignment()
    with pytest.raises(tidelog.StoreClosedError, match=named):
        c.paused()
    with pytest.raises(tidelog.StoreClosedError, match=named):
        c.seek_to_timestamp(0)
    repr(c)  # still answers


def test_at_most_once_pause_then_a_rebalance_loses_nothing(store: Any) -> None:
    """An at-most-once member holds fetched messages of both partitions back (pause), and a
    second member joins and takes one: its new owner hands out what was held, and nothing
    is handed out twice (before, a local member's fetch had committed past them, and the
    revocation dropped them: handed out by nobody)."""
    t = store.create_topic("pzr", partitions=2)
    for partition in (0, 1):
        t.append_batch([b"%d" % i for i in range(10)], partition=partition)
    a = store.consumer("pzr", group="g", delivery="at-most-once")
    handed = [next(iter(a))]
    a.pause(0)
    a.pause(1)
    with store.consumer("pzr", group="g", delivery="at-most-once") as b:
        end = time.monotonic() + PATIENCE
        while (len(a.assignment()), len(b.assignment())) != (1, 1) and time.monotonic() < end:
            handed += a.poll(timeout=0.2)
            handed += b.poll(timeout=0.2)
        (kept,) = a.assignment()
        a.resume(kept)
        end = time.monotonic() + PATIENCE
        while len(handed) < 20 and time.monotonic() < end:
            handed += a.poll(timeout=0.2)
            handed += b.poll(timeout=0.2)
    a.close()
    assert sorted((m.partition, m.offset) for m in handed) == [
        (p, o) for p in (0, 1) for o in range(10)
    ]


def test_at_most_once_iterating_commits_once_per_fetch(store: Any) -> None:
    """Iterating an at-most-once member commits past a whole fetch before handing out its
    first message, not once per message (before, kafka:// committed at every step: 46
    times slower than at-least-once); no message is handed out before a commit past it."""
    t = store.create_topic("amof")
    t.append_batch([b"%d" % i for i in range(50)], partition=0)
    with store.consumer("amof", group="g", delivery="at-most-once", max_poll_messages=10) as c:
        watch = CommitWatch(c)
        it = iter(c)
        for expected in range(50):
            msg = next(it)
            assert msg.offset == expected
            assert watch.past[0] > msg.offset
        assert watch.fetches >= 5  # at most ten messages a fetch
        assert watch.commits <= watch.fetches
        assert c.committed() == {0: 50}


@pytest.mark.parametrize("how", ["poll", "iterate"])
def test_at_most_once_step_whose_commit_failed_keeps_its_messages(store: Any, how: str) -> None:
    """An at-most-once member whose commit past a fetch fails hands none of it out (the
    poll or iteration step raises) and keeps it: the next step commits again and hands
    the fetch out from its first message, none lost and none twice (before, a poll had
    taken them off its buffer, a local member had moved its position past them: lost)."""
    t = store.create_topic("amocf")
    t.append_batch([b"%d" % i for i in range(10)], partition=0)
    with store.consumer("amocf", group="g", delivery="at-most-once") as c:
        failing = FailNextCommit(c)
        with pytest.raises(tidelog.TidelogError):
            if how == "iterate":
                next(iter(c))  # waits until the member joined and fetched
            else:
                end = time.monotonic() + PATIENCE
                while time.monotonic() < end:  # until the member joined and fetched
                    assert c.poll(max_messages=4, timeout=0.5) == []
        assert failing.failed
        assert c.committed() == {}
        # More to read, so that a step that lost the fetch hands these out, not waits.
        t.append_batch([b"%d" % i for i in range(10, 20)], partition=0)
        if how == "iterate":
            it = iter(c)
            handed = [next(it) for _ in range(10)]
        else:
            handed = poll_until(c, 10)  # a local fetch brings all 20
        assert len(handed) >= 10
        assert [m.offset for m in handed] == list(range(len(handed)))
        assert c.committed()[0] >= len(handed)


def test_at_most_once_seek_gives_back_what_it_drops(store: Any) -> None:
    """A seek drops what an at-most-once member fetched and did not hand out; its fetch
    had committed past it, so the seek moves the commit back to the first of it, where a
    commit per message would have left it (the seek commits nothing of its own, as in
    Kafka). The next fetch commits from the new position, back or forward. Closing leaves
    the rest to the group (before, a local member's seek left the fetch's commit past all
    it had fetched: handed out by nobody)."""
    t = store.create_topic("amos")
    t.append_batch([b"%d" % i for i in range(10)], partition=0)
    c = store.consumer("amos", group="g", delivery="at-most-once")
    it = iter(c)
    assert [next(it).offset for _ in range(3)] == [0, 1, 2]
    c.seek(0, 1)  # back: 1 and 2 again, as the application asks
    assert c.committed() == {0: 3}
    assert [next(it).offset for _ in range(2)] == [1, 2]
    c.seek(0, 8)  # forward
    assert c.committed() == {0: 3}
    c.close()
    with store.consumer("amos", group="g") as again:
        assert again.committed() == {0: 3}
        assert [m.offset for m in poll_until(again, 7)] == list(range(3, 10))


def test_at_most_once_a_rebalance_while_handing_out_a_fetch_loses_nothing(store: Any) -> None:
    """An at-most-once member hands out a fetch of both partitions one message at a time
    (its fetch committed past all of it) while a second member joins and takes one
    partition: every message is handed out once, by one of them."""
    t = store.create_topic("amor", partitions=2)
    for partition in (0, 1):
        t.append_batch([b"%d" % i for i in range(10)], partition=partition)
    a = store.consumer("amor", group="g", delivery="at-most-once")
    handed = poll_until_one(a)
    with store.consumer("amor", group="g", delivery="at-most-once") as b:
        end = time.monotonic() + PATIENCE
        while (len(handed) < 20 or not b.assignment()) and time.monotonic() < end:
            handed += a.poll(max_messages=1, timeout=0.2)
            handed += b.poll(timeout=0.2)
        assert len(a.assignment()) == len(b.assignment()) == 1
        for partition in (0, 1):
            t.append(b"late", partition=partition)
        end = time.monotonic() + PATIENCE
        while len(handed) < 22 and time.monotonic() < end:
            handed += a.poll(timeout=0.2)
            handed += b.poll(timeout=0.2)
    a.close()
    assert sorted((m.partition, m.offset) for m in handed) == [
        (p, o) for p in (0, 1) for o in range(11)
    ]


def test_pause_of_a_partition_not_owned_is_refused(store: Any) -> None:
    """pause() and resume() of a partition another member owns raise RebalanceError, as
    Kafka's clients refuse it ("No current assignment for partition"); before, the Kafka
    backend accepted it and listed the partition as paused."""
    store.create_topic("pzo", partitions=2)
    with store.consumer("pzo", group="g") as a, store.consumer("pzo", group="g") as b:
        wait_split(a, b)
        (mine,) = a.assignment()
        (other,) = b.assignment()
        refused = f"partition {other} of 'pzo' is not assigned to this member"
        with pytest.raises(tidelog.RebalanceError, match=refused):
            a.pause(other)
        with pytest.raises(tidelog.RebalanceError, match=refused):
            a.resume(other)
        assert a.paused() == []
        a.pause(mine)
        assert a.paused() == [mine]


def test_position_of_a_partition_not_owned_is_refused(store: Any) -> None:
    """position() of a partition another member owns raises RebalanceError, as pause()
    does and as Kafka's Java client refuses it (IllegalStateException, "You can only check
    the position for partitions assigned to this consumer"); before, the Kafka backend
    answered with librdkafka's value or -1."""
    store.create_topic("poso", partitions=2)
    with store.consumer("poso", group="g") as a, store.consumer("poso", group="g") as b:
        wait_split(a, b)
        (mine,) = a.assignment()
        (other,) = b.assignment()
        with pytest.raises(
            tidelog.RebalanceError, match=f"partition {other} of 'poso' is not assigned"
        ):
            a.position(other)
        assert a.position(mine) in (-1, 0)  # nothing fetched yet: Kafka says -1


def test_commit_of_a_partition_not_owned_is_rejected(store: Any) -> None:
    store.create_topic("own", partitions=2)
    with store.consumer("own", group="g") as c:
        wait_assigned(c, 2)
        with pytest.raises(tidelog.RebalanceError):
            c.commit({5: 1})
        assert c.committed() == {}


# -- transactions -----------------------------------------------------------------------------


def test_exactly_once_commits_outputs_with_offsets(store: Any) -> None:
    src = store.create_topic("in")
    out = store.create_topic("out")
    src.append_batch([b"a", b"b"], partition=0)
    with (
        store.consumer("in", group="t", delivery="exactly-once") as c,
        store.producer(name="transcoder") as p,
    ):
        msgs = poll_until(c, 2)
        with pytest.raises(RuntimeError), store.transaction(p, c) as tx:
            for m in msgs:
                tx.send("out", m.value.upper(), partition=0)
            raise RuntimeError("crash in the middle")
        assert c.committed() == {}
        msgs = poll_until(c, 2)  # rewound: the same input again
        assert [m.value for m in msgs] == [b"a", b"b"]
        with store.transaction(p, c) as tx:
            for m in msgs:
                tx.send("out", m.value.upper(), partition=0)
        assert c.committed() == {0: 2}
    assert read_eventually(out, 0, 2) == [b"A", b"B"]


def test_exactly_once_refuses_more_input_before_a_commit(store: Any) -> None:
    store.create_topic("in").append_batch([b"a", b"b"], partition=0)
    with store.consumer("in", group="t", delivery="exactly-once", max_poll_messages=1) as c:
        assert len(poll_until(c, 1)) == 1
        with pytest.raises(tidelog.InvalidConfigError):
            c.poll(timeout=0.1)


def test_transactions_need_a_named_producer(store: Any) -> None:
    store.create_topic("x")
    with store.producer() as p, pytest.raises(tidelog.InvalidConfigError, match="name"):
        store.transaction(p)


# -- work queues ------------------------------------------------------------------------------


def test_work_queue_ack_and_dead_letter(store: Any) -> None:
    t = store.create_topic("uploads")
    t.append_batch([b"ok", b"bad"], partition=0)
    seen: dict[bytes, int] = {}
    with store.work_queue("uploads", group="w", dead_letter="uploads.dead") as q:
        end = time.monotonic() + PATIENCE
        while len(seen) < 2 and time.monotonic() < end:
            job = q.acquire(timeout=0.5)
            if job is None:
                continue
            seen[job.value] = job.delivery_count
            if job.value == b"bad":
                q.reject(job)
            else:
                q.ack(job)
        q.flush()
    assert seen == {b"ok": 1, b"bad": 1}
    (dead,) = list(store.topic("uploads.dead").read(0))
    assert dead.value == b"bad"
    assert dead.headers["tidelog.dead_letter.reason"] == b"rejected"
    with store.work_queue("uploads", group="w") as q:
        assert q.acquire(timeout=2.0) is None


def test_a_closed_work_queue_hands_out_nothing(store: Any) -> None:
    """Iterating, acquiring and settling on a closed work queue raise StoreClosedError
    naming the queue (before, a Kafka queue's iteration stopped silently)."""
    store.create_topic("wq").append_batch([b"a", b"b"], partition=0)
    q = store.work_queue("wq", group="w")
    job = q.acquire(timeout=PATIENCE)
    assert job is not None
    q.ack(job)
    q.close()
    calls: list[Callable[[], object]] = [
        lambda: next(iter(q)),
        lambda: q.acquire(timeout=0),
        lambda: q.ack(job),
        lambda: q.release(job),
        lambda: q.reject(job),
        q.flush,
    ]
    for call in calls:
        with pytest.raises(tidelog.StoreClosedError, match="work queue 'w' is closed"):
            call()


@pytest.mark.local_only("Kafka 4.2 share groups cannot renew a record's lock or delay a release")
def test_work_queue_extend_and_delayed_release(store: Any) -> None:
    store.create_topic("jobs").append(b"j")
    with store.work_queue("jobs", group="w") as q:
        job = q.acquire(timeout=5.0)
        assert job is not None
        q.extend(job, 10.0)
        q.release(job, delay=0.2)
        again = q.acquire(timeout=5.0)
        assert again is not None
        assert again.delivery_count == 2


def short_group_sessions(kstore: Any, group: str, session_ms: int) -> None:
    """Kafka group ``group``'s members' sessions end ``session_ms`` after their last
    heartbeat, and they heartbeat every 500 ms (KIP-848 group configs; the test broker's
    minimums allow it)."""
    from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource

    settings = {"consumer.session.timeout.ms": session_ms, "consumer.heartbeat.interval.ms": 500}
    resource = ConfigResource(
        ConfigResource.Type.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(k, str(v), incremental_operation=AlterConfigOpType.SET)
            for k, v in settings.items()
        ],
    )
    for future in kstore.admin.incremental_alter_configs([resource]).values():
        future.result(PATIENCE)


def _membership_ends_after_a_second(store: Any, backend: str, group: str) -> dict[str, Any]:
    """Options for members of ``group`` whose membership ends about a second after they
    stopped polling: a local member's lease; Kafka's max.poll.interval.ms, with the group's
    sessions shortened so that the broker drops such a member soon."""
    if backend == "local":
        return {"lease_seconds": 1.0}
    short_group_sessions(store, group, 2000)
    return {"config": {"max.poll.interval.ms": 1000}}


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_a_member_that_stopped_polling_past_its_lease_joins_again(
    store: Any, backend: str, delivery: str
) -> None:
    """An application that processes slowly stops polling for longer than its lease
    (Kafka: max.poll.interval.ms): the group drops it and gives its partition to another
    member. Its next poll joins the group again, as Kafka's Java client does, instead of
    raising: its partitions are revoked (on_revoke) and it consumes on from the group's
    commits once assigned again (on_assign). At least once: what it handed out and did not
    commit comes again; at most once: nothing is handed out twice."""
    group = f"slow-{delivery}"
    topic = store.create_topic(group, partitions=1)
    topic.append_batch([b"%d" % i for i in range(20)], partition=0)
    options = _membership_ends_after_a_second(store, backend, group)
    events: list[tuple[str, list[int]]] = []
    slow = store.consumer(
        group,
        group=group,
        delivery=delivery,
        max_poll_messages=5,
        on_assign=lambda ps: events.append(("assign", ps)),
        on_revoke=lambda ps: events.append(("revoke", ps)),
        **options,
    )
    first = [m.offset for m in poll_until(slow, 5)]
    assert first == [0, 1, 2, 3, 4]
    stopped = time.monotonic()
    other = store.consumer(group, group=group, delivery=delivery, max_poll_messages=5, **options)
    taken: list[int] = []
    end = time.monotonic() + PATIENCE
    # Past the slow member's lease (Kafka: max.poll.interval.ms, librdkafka's check of it
    # once a second, and the session) and until the other member owns the partition.
    while (other.assignment() != [0] or time.monotonic() - stopped < 3.5) and (
        time.monotonic() < end
    ):
        taken += [m.offset for m in other.poll(timeout=0.2)]
    assert other.assignment() == [0]
    later: list[int] = []
    for _ in range(5):  # joins again, with nothing assigned while the other member stays
        later += [m.offset for m in slow.poll(timeout=0.2)]
    taken += [m.offset for m in poll_until(other, 20 - len(set(first + taken + later)))]
    other.close()
    topic.append_batch([b"%d" % i for i in range(20, 25)], partition=0)
    end = time.monotonic() + PATIENCE
    while 24 not in later and time.monotonic() < end:
        later += [m.offset for m in slow.poll(timeout=0.2)]
    assert slow.assignment() == [0]
    assert ("revoke", [0]) in events
    assert events[0] == ("assign", [0]) and events[-1] == ("assign", [0])
    slow.close()
    everything = first + taken + later
    assert set(everything) == set(range(25))
    if delivery == "at-most-once":
        assert len(everything) == len(set(everything)), "handed out twice"


def test_an_exactly_once_member_past_its_lease_cannot_commit_then_joins_again(
    store: Any, backend: str
) -> None:
    """Exactly once: a member that stopped polling past its lease (Kafka:
    max.poll.interval.ms) while another member took its partition cannot commit the
    messages it handed out: its transaction fails the ownership check and aborts (the
    other member hands them out and commits them). Its next poll joins the group again
    without an error, and it consumes on once the partition is its own again."""
    group = "slow-eos"
    topic = store.create_topic(group, partitions=1)
    topic.append_batch([b"%d" % i for i in range(10)], partition=0)
    store.create_topic("slow-eos.out")
    options = _membership_ends_after_a_second(store, backend, group)
    slow = store.consumer(
        group, group=group, delivery="exactly-once", max_poll_messages=5, **options
    )
    slow_producer = store.producer(name="slow-eos")
    other_producer = store.producer(name="slow-eos-other")
    first = poll_until(slow, 5)
    assert [m.offset for m in first] == [0, 1, 2, 3, 4]
    stopped = time.monotonic()
    other = store.consumer(
        group, group=group, delivery="exactly-once", max_poll_messages=5, **options
    )

    def copy(consumer: Any, producer: Any, messages: list[Any]) -> list[int]:
        with store.transaction(producer, consumer) as tx:
            for m in messages:
                tx.send("slow-eos.out", m.value, partition=0)
        return [m.offset for m in messages]

    taken: list[int] = []
    end = time.monotonic() + PATIENCE
    while (other.assignment() != [0] or time.monotonic() - stopped < 3.5) and (
        time.monotonic() < end
    ):
        taken += copy(other, other_producer, other.poll(timeout=0.2))
    assert other.assignment() == [0]
    with pytest.raises(tidelog.RebalanceError):
        copy(slow, slow_producer, first)
    later: list[int] = []
    for _ in range(5):  # joins again, with nothing assigned while the other member stays
        later += copy(slow, slow_producer, slow.poll(timeout=0.2))
    while len(set(taken + later)) < 10 and time.monotonic() < end:
        taken += copy(other, other_producer, other.poll(timeout=0.2))
    other.close()
    topic.append_batch([b"%d" % i for i in range(10, 15)], partition=0)
    while 14 not in later and time.monotonic() < end:
        later += copy(slow, slow_producer, slow.poll(timeout=0.2))
    assert slow.assignment() == [0]
    slow.close()
    slow_producer.close()
    other_producer.close()
    assert sorted(taken + later) == list(range(15))
    outputs = read_eventually(store.topic("slow-eos.out"), 0, 15)
    assert sorted(int(v or b"") for v in outputs) == list(range(15))
