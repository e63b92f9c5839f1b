"""What only the Kafka backend has: URLs, murmur2 placement, and its documented refusals.

The README's "Kafka behind the same API" table lists each difference tested here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tidelog
import tidelog.aio
from confluent_kafka import Producer
from tidelog.kafka import parse_url

from benches.kafka.broker import KafkaBroker
from conformance.test_api import PATIENCE, short_group_sessions

pytestmark = pytest.mark.kafka


def read_eventually(topic: Any, partition: int, count: int) -> list[bytes | None]:
    """The partition's values once ``count`` are visible (Kafka writes the commit markers
    of a transaction just after ``commit_transaction`` returns)."""
    end = time.monotonic() + 30
    while True:
        values = [m.value for m in topic.read(partition)]
        if len(values) >= count or time.monotonic() > end:
            return values
        time.sleep(0.05)


@pytest.fixture
def kstore(kafka_broker: KafkaBroker) -> Iterator[Any]:
    with tidelog.open(f"kafka://{kafka_broker.bootstrap}") as s:
        yield s
    with tidelog.open(f"kafka://{kafka_broker.bootstrap}") as admin:
        for name in admin.topics():
            admin.delete_topic(name)


def test_urls_are_parsed_and_bad_ones_named() -> None:
    assert parse_url("kafka://h1:9092,h2:9093?client.id=app&linger.ms=5") == (
        "h1:9092,h2:9093",
        {"client.id": "app", "linger.ms": "5"},
    )
    for bad in ("kafka://", "kafka://h:1/path", "http://h:1", "kafka://h:1?bootstrap.servers=x"):
        with pytest.raises(tidelog.InvalidConfigError):
            parse_url(bad)


def test_local_file_settings_are_refused_for_kafka() -> None:
    with pytest.raises(tidelog.InvalidConfigError, match="fsync"):
        tidelog.open("kafka://127.0.0.1:1", fsync="always")


def test_keyed_messages_go_where_kafka_clients_send_them(
    kstore: Any, kafka_broker: KafkaBroker
) -> None:
    t = kstore.create_topic("placed", partitions=6)
    keys = [b"user-%d" % i for i in range(40)]
    ours = {key: t.append(b"x", key=key)[0] for key in keys}
    plain = Producer({"bootstrap.servers": kafka_broker.bootstrap, "partitioner": "murmur2_random"})
    theirs: dict[Any, Any] = {}
    for key in keys:
        plain.produce(
            "placed",
            b"y",
            key,
            on_delivery=lambda err, msg: theirs.__setitem__(msg.key(), msg.partition()),
        )
    plain.flush(30)
    assert ours == theirs
    assert len(set(ours.values())) > 1


def test_named_producer_is_transactional_and_fences_older_instances(kstore: Any) -> None:
    kstore.create_topic("out")
    old = kstore.producer(name="worker")
    with pytest.raises(tidelog.InvalidConfigError, match="transaction"):
        old.send("out", b"x")
    new = kstore.producer(name="worker")  # fences old
    with pytest.raises(tidelog.ProducerFencedError), kstore.transaction(old) as tx:
        tx.send("out", b"from the fenced one")
    with kstore.transaction(new) as tx:
        tx.send("out", b"from the new one", partition=0)
    assert read_eventually(kstore.topic("out"), 0, 1) == [b"from the new one"]
    new.close()
    old.close()


@pytest.mark.parametrize("on_full", ["shed", "raise"])
def test_pressure_on_messages_not_yet_acknowledged(kstore: Any, on_full: str) -> None:
    kstore.create_topic("p")
    # linger.ms keeps the messages in librdkafka's queue: pressure is certain, not timed.
    producer = kstore.producer(
        buffer_messages=4, on_full=on_full, linger_ms=10_000.0, config={"batch.num.messages": 100}
    )
    sent = 0
    for i in range(3):
        assert producer.send("p", b"%d" % i, priority=1)
        sent += 1
    if on_full == "shed":
        assert producer.send("p", b"dropped", priority=7) is False
        assert producer.stats()["dropped"] == {7: 1}
    else:
        with pytest.raises(tidelog.BackpressureError):
            producer.send("p", b"refused")
    assert producer.stats()["high_watermark_hits"] == 1
    producer.flush()
    assert producer.stats()["written"] == sent
    producer.close()


def test_delivery_callbacks_hear_of_every_message_once(kstore: Any) -> None:
    # Reports are served by the sending thread every few thousand sends and by the
    # background thread in between: none is lost or served twice.
    kstore.create_topic("acked", partitions=2)
    producer = kstore.producer(config={"delivery.report.only.error": False})
    heard: list[tuple[int, int]] = []
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is None:
            heard.append((msg.partition(), msg.offset()))
        else:
            errors.append(err)

    for i in range(20_000):
        # Sends without a callback in between: the native path serves reports too.
        producer.send("acked", b"%d" % i, partition=i % 2, on_delivery=report if i % 3 else None)
    producer.flush()
    assert errors == []
    assert len(heard) == len(set(heard)) == sum(1 for i in range(20_000) if i % 3)
    assert producer.stats()["written"] == 20_000
    producer.close()


def test_max_lag_pressure_names_the_group_and_counts_messages_in_flight(kstore: Any) -> None:
    t = kstore.create_topic("lag")
    t.append(b"0", partition=0)
    with kstore.consumer("lag", group="slow") as c:
        end = time.monotonic() + 60
        while not c.poll(timeout=0.5) and time.monotonic() < end:
            pass
        c.commit()  # committed 1: caught up
        with kstore.producer(max_lag=5, on_full="raise") as p:
            for i in range(5):  # in flight or written, all count against the group
                p.send("lag", b"%d" % i, partition=0)
            with pytest.raises(tidelog.BackpressureError, match=r"'slow' is \d+ messages behind"):
                p.send("lag", b"one too many", partition=0)
            assert p.stats()["high_watermark_hits"] == 1
            p.flush()
    assert t.end_offset(0) == 6
    with pytest.raises(tidelog.InvalidConfigError, match="max_lag"):
        kstore.producer(max_lag=0)


def test_unknown_topic_setting_is_named(kstore: Any) -> None:
    with pytest.raises(tidelog.InvalidConfigError, match="colour"):
        kstore.create_topic("t", colour="blue")
    t = kstore.create_topic("t", retention_ms=3_600_000)
    assert t.config["retention_ms"] == 3_600_000
    assert kstore.alter_topic("t", retention_ms=7_200_000)["retention_ms"] == 7_200_000


def test_work_queue_refuses_what_share_groups_cannot_do(kstore: Any) -> None:
    kstore.create_topic("jobs").append_batch([b"a", b"b"], partition=0)
    with kstore.work_queue("jobs", group="w") as q:
        job = q.acquire(timeout=30.0)
        assert job is not None
        with pytest.raises(tidelog.InvalidConfigError, match="extend"):
            q.extend(job, 10.0)
        with pytest.raises(tidelog.InvalidConfigError, match="delay"):
            q.release(job, delay=1.0)
        q.release(job)
        other = q.acquire(timeout=1.0)  # the second job of the same fetch
        assert other is not None
        q.ack(other)
        again = q.acquire(timeout=30.0)  # the released one, delivered again
        assert again is not None
        assert again.value == job.value
        assert again.delivery_count == 2
        q.ack(again)
        q.flush()


@pytest.mark.parametrize(
    "args",
    [
        ("producers",),
        ("dump", "t"),
        ("verify",),
        ("repair",),
        ("export", "t", "out.parquet"),
        ("mirror", "t", "kafka://127.0.0.1:1"),
    ],
    ids=lambda a: a[0],
)
def test_local_only_commands_say_so(
    kstore: Any, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    from tidelog.cli import main

    assert main(["--dir", kstore.path, *args]) == 1
    err = capsys.readouterr().err
    assert "local stores only" in err
    assert kstore.path in err or "transaction coordinator" in err


def test_compact_command_names_the_broker_cleaner(
    kstore: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tidelog.cli import main

    kstore.create_topic("t")
    assert main(["--dir", kstore.path, "compact", "t"]) == 1
    assert "log cleaner" in capsys.readouterr().err


class _ConsumeWithAnError:
    """A confluent-kafka consumer whose first ``consume`` that returns messages also returns
    a transport error after them, as librdkafka may when a broker connection fails mid-fetch
    (it has already moved its position past those messages)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.injected = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def consume(self, *args: Any, **kwargs: Any) -> list[Any]:
        from confluent_kafka import KafkaError, Message

        raw = list(self._client.consume(*args, **kwargs))
        if raw and not self.injected:
            self.injected = True
            last = raw[-1]
            raw.append(
                Message(
                    topic=last.topic(),
                    partition=last.partition(),
                    error=KafkaError(KafkaError._TRANSPORT),
                )
            )
        return raw


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_messages_a_failed_fetch_returned_are_handed_out_then_the_error_raised(
    kstore: Any, delivery: str
) -> None:
    """Before, the messages that came with the error were counted as fetched and dropped:
    librdkafka had moved past them, so this member never handed them out."""
    topic = kstore.create_topic("fe", partitions=1)
    topic.append_batch([b"%d" % i for i in range(6)], partition=0)
    with kstore.consumer("fe", group=f"fe-{delivery}", delivery=delivery) as consumer:
        client = _ConsumeWithAnError(consumer._consumer)
        consumer._consumer = client
        got = consumer.poll(max_messages=100, timeout=10)
        assert client.injected
        assert [m.offset for m in got] == list(range(len(got)))
        assert got, "the messages fetched with the error were dropped"
        # Kafka's consumers raise a fetch error at the next poll, after the records before it.
        with pytest.raises(tidelog.TidelogError, match="transport"):
            consumer.poll(max_messages=100, timeout=0)
        deadline = time.monotonic() + 10
        while len(got) < 6 and time.monotonic() < deadline:
            got += consumer.poll(max_messages=100, timeout=1)
        assert [m.value for m in got] == [b"%d" % i for i in range(6)]


def test_aio_a_cancelled_member_making_closes_what_its_thread_made(
    kafka_broker: KafkaBroker,
) -> None:
    """``await store.consumer(...)`` makes the member in a thread (round trips): cancelled
    while that thread is in the constructor, the member it makes is closed, not left in the
    group; the store's close waits for such a thread, so nothing is made after it."""
    made: list[Any] = []
    inside, go = threading.Event(), threading.Event()

    async def main() -> None:
        async with tidelog.aio.open(f"kafka://{kafka_broker.bootstrap}") as store:
            await store.create_topic("mk")
            real = store.sync.consumer

            def held(*args: Any, **kwargs: Any) -> Any:
                inside.set()
                go.wait(PATIENCE)
                member = real(*args, **kwargs)
                made.append(member)
                return member

            store.sync.consumer = held  # type: ignore[method-assign]
            for count, ending in enumerate(("cancelled", "store closed"), 1):
                inside.clear()
                go.clear()
                making = asyncio.create_task(store.consumer("mk", group="mk"))
                async with asyncio.timeout(PATIENCE):
                    while not inside.is_set():
                        await asyncio.sleep(0.01)
                making.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await making
                if ending == "cancelled":
                    go.set()
                    async with asyncio.timeout(PATIENCE):
                        while not (len(made) == count and made[-1].closed):
                            await asyncio.sleep(0.01)
                else:
                    asyncio.get_running_loop().call_later(0.2, go.set)
                    await store.close()
                    assert len(made) == count and made[-1].closed
        assert len(made) == 2

    asyncio.run(main())


class _ShareFetchWithAnError:
    """A confluent-kafka share consumer whose first ``poll`` that returns two or more
    records also returns a transport error after the first, as librdkafka may when a broker
    connection fails mid-fetch (the records after the error are acquired for this member
    too: their locks are held until they are acknowledged or expire)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.injected = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def poll(self, *args: Any, **kwargs: Any) -> list[Any]:
        from confluent_kafka import KafkaError, Message

        raw = list(self._client.poll(*args, **kwargs))
        if len(raw) >= 2 and not self.injected:
            self.injected = True
            first = raw[0]
            error = KafkaError(KafkaError._TRANSPORT)
            raw.insert(1, Message(topic=first.topic(), partition=first.partition(), error=error))
        return raw


def test_jobs_a_failed_share_fetch_returned_are_handed_out_then_the_error_raised(
    kstore: Any,
) -> None:
    """Before, acquire raised at the error and dropped the jobs after it: acquired for this
    member and never handed out nor released, they came back only once their lock expired
    (``lock_timeout``, 60 s here)."""
    topic = kstore.create_topic("wqe", partitions=1)
    topic.append_batch([b"%d" % i for i in range(6)], partition=0)
    with kstore.work_queue("wqe", group="wqe", lock_timeout=60.0) as queue:
        client = _ShareFetchWithAnError(queue._consumer)
        queue._consumer = client
        got: list[bytes] = []
        raised_after: list[int] = []  # how many jobs came before each error
        deadline = time.monotonic() + 10
        while len(got) < 6 and time.monotonic() < deadline:
            try:
                job = queue.acquire(timeout=1.0)
            except tidelog.TidelogError as e:
                assert "transport" in str(e).lower()
                raised_after.append(len(got))
                continue
            if job is not None:
                got.append(job.value)
                queue.ack(job)
        assert client.injected
        assert sorted(got) == sorted(b"%d" % i for i in range(6))
        if not raised_after:  # the failed fetch brought every job: its error comes next
            with pytest.raises(tidelog.TidelogError, match=r"(?i)transport"):
                queue.acquire(timeout=0)
            raised_after.append(len(got))
        # Kafka's consumers raise a fetch error at the next fetch, after the records before it.
        assert len(raised_after) == 1 and raised_after[0] >= 2


class _DeadLetterTopicFailsOnce:
    """The store as a work queue sees it, whose first ``create_topic`` (the dead-letter
    topic's, made at the first dead-lettering) fails as a broker that cannot be reached."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def create_topic(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise tidelog.TidelogError("creating the dead-letter topic: no broker answered")
        return self._store.create_topic(*args, **kwargs)


def test_a_job_whose_dead_lettering_failed_goes_back_and_the_rest_of_its_fetch_is_kept(
    kstore: Any,
) -> None:
    """Jobs past ``max_deliveries`` are dead-lettered while their fetch is taken. Before,
    a failed dead-lettering raised out of it: the fetch's records after that job were
    dropped (never acknowledged: librdkafka then refused every poll) and the job stayed
    unsettled, never handed out (every acquire raised that jobs are unsettled)."""
    topic = kstore.create_topic("wqd", partitions=1)
    topic.append_batch([b"%d" % i for i in range(3)], partition=0)
    with kstore.work_queue("wqd", group="wqd", max_deliveries=1, dead_letter="wqd.dead") as q:
        failing = _DeadLetterTopicFailsOnce(q._store)
        q._store = failing
        first: list[Any] = []
        deadline = time.monotonic() + 30
        while len(first) < 3 and time.monotonic() < deadline:
            jobs = [q.acquire(timeout=1.0)]
            while jobs[-1] is not None and q.ready():
                jobs.append(q.acquire(timeout=0))
            for job in jobs:
                if job is not None:
                    first.append(job.value)
                    q.release(job)  # delivered once: its next delivery dead-letters it
        assert sorted(first) == [b"0", b"1", b"2"]
        errors: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                job = q.acquire(timeout=1.0)
            except tidelog.TidelogError as e:
                errors.append(str(e))
                continue
            assert job is None, "a job past max_deliveries was handed out"
            if "wqd.dead" in kstore.topics() and len(kstore.topic("wqd.dead").read_batch(0)) == 3:
                break
        assert failing.failed
        assert len(errors) == 1 and "dead-letter topic" in errors[0]
        assert sorted(m.value for m in kstore.topic("wqd.dead").read_batch(0)) == [b"0", b"1", b"2"]


def test_a_new_topic_answers_while_its_partitions_elect_a_leader(kafka_broker: KafkaBroker) -> None:
    """Right after a topic is created the broker may answer NOT_LEADER_FOR_PARTITION to
    offset look-ups, until its partitions have a leader. Before, end_offset() and stats()
    (sync and tidelog.aio) raised it; Kafka's clients try such an error again."""
    url = f"kafka://{kafka_broker.bootstrap}"
    with tidelog.open(url) as store:
        for i in range(6):
            topic = store.create_topic(f"new{i}", partitions=3)
            assert [topic.end_offset(p) for p in range(3)] == [0, 0, 0]
            topic = store.create_topic(f"new-stats{i}", partitions=3)
            assert store.stats()["topics"][topic.name]["messages"] == 0

    async def main() -> None:
        async with tidelog.aio.open(url) as store:
            for i in range(6):
                topic = await store.create_topic(f"new-aio{i}", partitions=3)
                assert (await store.stats())["topics"][topic.name]["messages"] == 0

    try:
        asyncio.run(main())
    finally:
        with tidelog.open(url) as admin:
            for name in admin.topics():
                admin.delete_topic(name)


class _FailsFirstCall:
    """A confluent-kafka client whose first call of ``method`` fails with Kafka error
    ``code``: raised, or set on the futures an admin call returns, as librdkafka does."""

    #: Admin calls answer through futures (one, or a dict of them).
    FUTURES = frozenset(
        {
            "describe_configs",
            "describe_consumer_groups",
            "incremental_alter_configs",
            "list_consumer_group_offsets",
            "list_consumer_groups",
        }
    )

    def __init__(self, client: Any, method: str, code: int) -> None:
        self._client = client
        self._method = method
        self._code = code
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name != self._method:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            from concurrent.futures import Future

            from confluent_kafka import KafkaError, KafkaException

            self.calls += 1
            if self.calls > 1:
                return real(*args, **kwargs)
            error = KafkaException(KafkaError(self._code))
            if name not in self.FUTURES:
                raise error

            def failed() -> Future[Any]:
                future: Future[Any] = Future()
                future.set_exception(error)
                return future

            answer = real(*args, **kwargs)
            return {k: failed() for k in answer} if isinstance(answer, dict) else failed()

        return call


def _round_trips(kstore: Any, consumer: Any) -> list[tuple[str, Any, str, int, Any]]:
    """``(method, its client's owner, the client's attribute, a retriable error, call)``:
    each direct round trip of the store and of a consumer, with a public call making it."""
    from confluent_kafka import KafkaError as E

    topic = kstore.topic("rt")
    kstore._reader_consumer()
    return [
        (
            "get_watermark_offsets",
            kstore,
            "_reader",
            E.NOT_LEADER_FOR_PARTITION,
            lambda: topic.end_offset(0),
        ),
        (
            "offsets_for_times",
            kstore,
            "_reader",
            E.LEADER_NOT_AVAILABLE,
            lambda: topic.offset_for_timestamp(0, 0),
        ),
        ("list_topics", kstore, "_admin", E._TRANSPORT, kstore.topics),
        ("list_topics", kstore, "_admin", E.REQUEST_TIMED_OUT, lambda: kstore.topic("rt")),
        ("describe_configs", kstore, "_admin", E.REQUEST_TIMED_OUT, lambda: topic.config),
        (
            "incremental_alter_configs",
            kstore,
            "_admin",
            E.NOT_CONTROLLER,
            lambda: kstore.alter_topic("rt", retention_ms=7_200_000),
        ),
        ("list_consumer_groups", kstore, "_admin", E.COORDINATOR_NOT_AVAILABLE, kstore.groups),
        (
            "describe_consumer_groups",
            kstore,
            "_admin",
            E.COORDINATOR_LOAD_IN_PROGRESS,
            kstore.groups,
        ),
        ("list_consumer_group_offsets", kstore, "_admin", E.NOT_COORDINATOR, kstore.stats),
        ("committed", consumer, "_consumer", E.COORDINATOR_LOAD_IN_PROGRESS, consumer.committed),
    ]


def test_each_round_trip_tries_a_retriable_error_again(kstore: Any) -> None:
    """Every direct round trip of the store (metadata, offsets, topic configs, groups) and
    a consumer's committed offsets: a retriable error is tried again, within the call's
    time limit. Before, each of them but committed() raised it."""
    topic = kstore.create_topic("rt")
    topic.append(b"x", partition=0)
    with kstore.consumer("rt", group="rt") as consumer:
        deadline = time.monotonic() + PATIENCE
        while not consumer.poll(timeout=0.5) and time.monotonic() < deadline:
            pass
        consumer.commit()
        for method, owner, attribute, code, call in _round_trips(kstore, consumer):
            real = getattr(owner, attribute)
            failing = _FailsFirstCall(real, method, code)
            setattr(owner, attribute, failing)
            try:
                call()
            finally:
                setattr(owner, attribute, real)
            assert failing.calls >= 2, method  # one per group for some


def test_a_round_trip_raises_an_error_that_is_not_retriable_at_once(kstore: Any) -> None:
    """No retry of an error that will not go away: the first answer is raised, mapped."""
    from confluent_kafka import KafkaError as E

    topic = kstore.create_topic("nr")
    kstore._reader_consumer()
    for method, attribute, code, raised, call in [
        (
            "get_watermark_offsets",
            "_reader",
            E.TOPIC_AUTHORIZATION_FAILED,
            tidelog.TidelogError,
            lambda: topic.end_offset(0),
        ),
        (
            "get_watermark_offsets",
            "_reader",
            E.UNKNOWN_TOPIC_OR_PART,
            tidelog.TopicNotFoundError,
            lambda: topic.end_offset(0),
        ),
        (
            "list_consumer_groups",
            "_admin",
            E.CLUSTER_AUTHORIZATION_FAILED,
            tidelog.TidelogError,
            kstore.groups,
        ),
        (
            "describe_configs",
            "_admin",
            E.INVALID_CONFIG,
            tidelog.InvalidConfigError,
            lambda: topic.config,
        ),
    ]:
        real = getattr(kstore, attribute)
        failing = _FailsFirstCall(real, method, code)
        setattr(kstore, attribute, failing)
        try:
            with pytest.raises(raised, match=E(code).name()) as caught:
                call()
        finally:
            setattr(kstore, attribute, real)
        assert type(caught.value) is raised, method
        assert failing.calls == 1, method


@pytest.mark.parametrize(
    "lost", ["after another member took it", "before the group dropped it", "then closes"]
)
def test_at_most_once_gives_nothing_back_when_its_assignment_is_lost(
    kstore: Any, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """A member that stops polling past max.poll.interval.ms loses its assignment
    (librdkafka's on_lost, served at its next poll or its close) and its session ends. At
    most once: the messages it fetched and did not hand out are not given back (the
    partition may be another member's already), and no message is handed out twice.

    When the member polls again decides what the broker still knows of it: after its
    session ended (another member owns the partition: the broker would refuse a commit of
    it), or before (it is still the owner there: a give-back would be accepted, and only
    the member's own rule keeps it from moving the commit back). Closing instead of
    polling tries to give back as a clean close does; the broker refuses it."""
    from tidelog.kafka.consumer import KafkaConsumer

    group = f"gone-{lost.split()[0]}"
    topic = kstore.create_topic(group)
    topic.append_batch([b"%d" % i for i in range(20)], partition=0)
    short_group_sessions(kstore, group, 10_000 if lost.startswith("before") else 2_000)
    losses: list[tuple[Any, list[int]]] = []
    real_lost = KafkaConsumer._lost_cb

    def lost_cb(self: Any, c: Any, parts: Any) -> None:
        losses.append((self, sorted(tp.partition for tp in parts)))
        real_lost(self, c, parts)

    monkeypatch.setattr(KafkaConsumer, "_lost_cb", lost_cb)
    gone = kstore.consumer(
        group,
        group=group,
        delivery="at-most-once",
        max_poll_messages=5,
        config={"max.poll.interval.ms": 1000},
    )
    deadline = time.monotonic() + PATIENCE
    while not gone.fetch(0.5) and time.monotonic() < deadline:
        pass
    handed_out = [m.offset for m in gone.poll(max_messages=2)]
    assert handed_out == [0, 1]
    # Fetched and not handed out: 2, 3 and 4, committed past (at-most-once), held by the
    # pause so that the next poll fetches (and serves on_lost) instead of handing them out.
    gone.pause(0)
    assert gone.position(0) == 2
    other = kstore.consumer(group, group=group, delivery="at-most-once")
    taken: list[int] = []  # by the other member
    after: list[int] = []  # by the first member, after its loss (it joins again)

    def take(until: float, first_too: bool) -> None:
        while time.monotonic() < until and len(taken) + len(after) < 15:
            taken.extend(m.offset for m in other.poll(timeout=0.1))
            if first_too:
                after.extend(m.offset for m in gone.poll(timeout=0.1))

    if lost.startswith("before"):
        time.sleep(3.0)  # past max.poll.interval.ms and librdkafka's check of it (1 s)
    else:
        take(time.monotonic() + PATIENCE, first_too=False)  # once the first one's session ended
    if lost == "then closes":
        gone.close()
    else:
        deadline = time.monotonic() + PATIENCE
        while not losses and time.monotonic() < deadline:
            # No error: librdkafka's report of the interval exceeded joins again (as a local
            # member past its lease does).
            handed_out += [m.offset for m in gone.poll(timeout=0.1)]
    assert losses and losses[0] == (gone, [0])
    take(time.monotonic() + PATIENCE, first_too=not gone.closed)
    gone.close()
    other.close()
    everything = handed_out + after + taken
    assert len(everything) == len(set(everything)), "handed out twice"
    assert sorted(everything) == [0, 1, *range(5, 20)]
    assert kstore.groups()[group][group]["committed"] == {0: 20}


def test_a_partition_paused_when_its_assignment_was_lost_is_fetched_once_it_is_back(
    kstore: Any,
) -> None:
    """The member forgets its pauses with its assignment (``paused()`` is empty after), but
    librdkafka kept a partition's pause across losing it and getting it back. Before, the
    partition was never fetched again once the member had it back: it stalled for good."""
    topic = kstore.create_topic("lp")
    topic.append_batch([b"%d" % i for i in range(10)], partition=0)
    revoked: list[list[int]] = []
    with kstore.consumer(
        "lp",
        group="lp",
        delivery="at-most-once",
        max_poll_messages=5,
        on_revoke=revoked.append,
        config={"max.poll.interval.ms": 1000},
    ) as consumer:
        got: list[int] = []
        deadline = time.monotonic() + PATIENCE
        while not got and time.monotonic() < deadline:
            got = [m.offset for m in consumer.poll(timeout=0.5)]
        assert got == [0, 1, 2, 3, 4]
        consumer.pause(0)
        time.sleep(3.0)  # past max.poll.interval.ms and librdkafka's check of it (1 s)
        deadline = time.monotonic() + PATIENCE
        while len(got) < 10 and time.monotonic() < deadline:
            got += [m.offset for m in consumer.poll(timeout=0.2)]  # joins again, no error
        assert revoked and revoked[0] == [0]  # lost, then assigned again (the only member)
        assert consumer.paused() == []
        assert got == list(range(10))


def test_a_partition_paused_when_it_was_revoked_is_fetched_once_it_is_back(kstore: Any) -> None:
    """As after a loss: a pause ends with the ownership, also in librdkafka. Before, a
    paused partition given to another member and back was never fetched again."""
    topic = kstore.create_topic("rp", partitions=2)
    short_group_sessions(kstore, "rp", 2_000)  # members hear of a new assignment within 0.5 s

    def until(done: Any, *members: Any) -> None:
        deadline = time.monotonic() + PATIENCE
        while not done() and time.monotonic() < deadline:
            for member in members:
                assert member.poll(timeout=0.1) == []
        assert done()

    with kstore.consumer("rp", group="rp") as first:
        until(lambda: first.assignment() == [0, 1], first)
        first.pause(0)
        first.pause(1)
        with kstore.consumer("rp", group="rp") as second:
            until(lambda: len(first.assignment()) == len(second.assignment()) == 1, first, second)
        (moved,) = set(range(2)) - set(first.assignment())
        assert first.paused() == [1 - moved]  # the pause of the other ended with it
        until(lambda: first.assignment() == [0, 1], first)  # back, once the second left
        assert first.paused() == [1 - moved]
        topic.append(b"after", partition=moved)
        got: list[Any] = []
        deadline = time.monotonic() + PATIENCE
        while not got and time.monotonic() < deadline:
            got = first.poll(timeout=0.2)
        assert [(m.partition, m.value) for m in got] == [(moved, b"after")]
