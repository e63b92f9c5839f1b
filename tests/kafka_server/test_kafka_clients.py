"""Real Kafka clients (confluent-kafka / librdkafka) against `store.serve_kafka()`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import tidelog
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from tidelog.kafka_server import KafkaServer
from tidelog.offsets import OffsetStore

# Bounds on waits for something that must happen; never a measure of speed.
_PATIENCE = 30.0


def _produce(address: str, topic: str, values: list[bytes], **config: Any) -> list[Any]:
    """Produces with acks=all and idempotence; returns the delivered messages."""
    producer = Producer(
        {"bootstrap.servers": address, "acks": "all", "enable.idempotence": True, **config}
    )
    delivered: list[Any] = []
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        (errors if err is not None else delivered).append(err or msg)

    for i, value in enumerate(values):
        producer.produce(
            topic, value=value, key=b"k%d" % i, headers=[("n", b"%d" % i)], on_delivery=report
        )
    assert producer.flush(_PATIENCE) == 0
    assert errors == []
    return delivered


def _consume(consumer: Consumer, count: int) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + _PATIENCE
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got.append(msg)
    return got


def test_admin_creates_lists_and_deletes_topics(store: tidelog.Store, server: KafkaServer) -> None:
    admin = AdminClient({"bootstrap.servers": server.address})
    for future in admin.create_topics([NewTopic("orders", 3), NewTopic("bad name!", 1)]).values():
        try:
            future.result(_PATIENCE)
        except Exception as e:
            assert "bad name!" in str(e) or "name" in str(e)
    assert store.topic("orders").partitions == 3
    listed = admin.list_topics(timeout=_PATIENCE).topics
    assert len(listed["orders"].partitions) == 3
    again = admin.create_topics([NewTopic("orders", 3)])["orders"]
    try:
        again.result(_PATIENCE)
        raise AssertionError("creating an existing topic succeeded")
    except Exception as e:
        assert e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    admin.delete_topics(["orders"])["orders"].result(_PATIENCE)
    assert "orders" not in store.topics()


def test_idempotent_producer_and_python_see_the_same_offsets(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 2)
    values = [b"kafka-%d" % i for i in range(500)]
    delivered = _produce(server.address, "t", values)
    by_value = {m.value(): (m.partition(), m.offset()) for m in delivered}
    # What Python reads at each offset is what Kafka acknowledged there, headers and key too.
    for p in range(2):
        for msg in topic.read(p):
            assert by_value[msg.value] == (p, msg.offset)
            assert msg.key is not None and msg.headers["n"] == msg.key[1:]
    # And what Python appends, a Kafka consumer reads at the same offsets.
    appended = [topic.append(b"python-%d" % i, partition=i % 2) for i in range(10)]
    consumer = Consumer(
        {"bootstrap.servers": server.address, "group.id": "reader", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition("t", p, 0) for p in range(2)])
        got = _consume(consumer, 510)
    finally:
        consumer.close()
    seen = {(m.partition(), m.offset()): m.value() for m in got}
    assert len(seen) == 510
    for i, (partition, offset) in enumerate(appended):
        assert seen[(partition, offset)] == b"python-%d" % i
    for value, where in by_value.items():
        assert seen[where] == value


def test_list_offsets_earliest_latest_and_by_timestamp(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 1)
    for i in range(10):
        topic.append(b"v", partition=0, timestamp_ms=1_000_000 + i * 1000)
    consumer = Consumer({"bootstrap.servers": server.address, "group.id": "x"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition("t", 0), _PATIENCE) == (0, 10)
        found = consumer.offsets_for_times([TopicPartition("t", 0, 1_004_500)], _PATIENCE)
        assert found[0].offset == 5
        later = consumer.offsets_for_times([TopicPartition("t", 0, 9_999_999)], _PATIENCE)
        assert later[0].offset in (-1, 10)  # none that late: the end
    finally:
        consumer.close()


def test_fetch_long_poll_is_woken_by_an_append_from_python(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 1)
    # The broker may hold each fetch for 60 s: only the store's bell can deliver within
    # the test's patience.
    consumer = Consumer(
        {
            "bootstrap.servers": server.address,
            "group.id": "x",
            "fetch.wait.max.ms": 60_000,
            "socket.timeout.ms": 120_000,
        }
    )
    try:
        consumer.assign([TopicPartition("t", 0, 0)])
        assert consumer.poll(1.0) is None  # a fetch is now parked on the empty partition
        topic.append(b"wake up", partition=0)
        got = _consume(consumer, 1)
        assert [m.value() for m in got] == [b"wake up"]
    finally:
        consumer.close()


def test_a_group_is_shared_with_a_python_consumer(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 4)
    for i in range(40):
        topic.append(b"%d" % i, partition=i % 4)
    kafka = Consumer(
        {
            "bootstrap.servers": server.address,
            "group.id": "g",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 300,
        }
    )
    stop = threading.Event()
    python_assignment: list[list[int]] = []
    try:
        kafka.subscribe(["t"])
        got = _consume(kafka, 40)
        assert {m.partition() for m in got} == {0, 1, 2, 3}
        kafka.commit(asynchronous=False)

        def python_member() -> None:
            with store.consumer("t", group="g") as consumer:
                while not stop.is_set():
                    consumer.poll(timeout=0.1)
                    python_assignment.append(list(consumer.assignment()))

        thread = threading.Thread(target=python_member)
        thread.start()
        try:
            deadline = time.monotonic() + _PATIENCE
            while time.monotonic() < deadline:
                kafka.poll(0.1)
                mine = {tp.partition for tp in kafka.assignment()}
                theirs = set(python_assignment[-1]) if python_assignment else set()
                if len(mine) == 2 and len(theirs) == 2:
                    break
            assert mine | theirs == {0, 1, 2, 3} and not mine & theirs
            # The Kafka client's commit is the group's commit for the Python member too.
            offsets = OffsetStore(store.native).committed("g", "t", topic.incarnation)
            assert {p: c.offset for p, c in offsets.items()} == {p: 10 for p in range(4)}
        finally:
            stop.set()
            thread.join()
        # The Python member left: the Kafka member gets every partition back.
        deadline = time.monotonic() + _PATIENCE
        while time.monotonic() < deadline and len(kafka.assignment()) != 4:
            kafka.poll(0.1)
        assert {tp.partition for tp in kafka.assignment()} == {0, 1, 2, 3}
    finally:
        kafka.close()


def test_restart_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with tidelog.open(path) as store, store.serve_kafka("127.0.0.1:0") as server:
        store.create_topic("t", 1)
        delivered = _produce(server.address, "t", [b"%d" % i for i in range(1000)])
    with tidelog.open(path) as store, store.serve_kafka("127.0.0.1:0") as server:
        consumer = Consumer({"bootstrap.servers": server.address, "group.id": "x"})
        try:
            consumer.assign([TopicPartition("t", 0, 0)])
            got = _consume(consumer, 1000)
        finally:
            consumer.close()
        # An idempotent producer after the restart continues the log.
        _produce(server.address, "t", [b"after"])
        assert store.topic("t").end_offset(0) == 1001
    assert [(m.offset(), m.value()) for m in got] == [(m.offset(), m.value()) for m in delivered]


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "store"
    tidelog.open(path).close()
    child = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "serve", str(path), "--kafka", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # The child's SIGTERM disposition must not be inherited from the test runner.
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
        env={**os.environ, "TIDELOG_DIR": ""},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("serving Kafka on 127.0.0.1:"), line
        address = line.split()[-1]
        _produce(address, "auto-created", [b"hello"])
    finally:
        child.send_signal(signal.SIGTERM)
        _out, err = child.communicate(timeout=_PATIENCE)
    assert child.returncode == 143, err
    with tidelog.open(path) as store:
        assert [m.value for m in store.topic("auto-created").read(0)] == [b"hello"]


def test_two_kafka_consumers_split_a_group(store: tidelog.Store, server: KafkaServer) -> None:
    topic = store.create_topic("t", 4)
    config = {
        "bootstrap.servers": server.address,
        "group.id": "pair",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 300,
    }
    first, second = Consumer(config), Consumer(config)
    try:
        first.subscribe(["t"])
        second.subscribe(["t"])
        deadline = time.monotonic() + _PATIENCE
        while time.monotonic() < deadline:
            first.poll(0.1)
            second.poll(0.1)
            a = {tp.partition for tp in first.assignment()}
            b = {tp.partition for tp in second.assignment()}
            if len(a) == 2 and len(b) == 2:
                break
        assert a | b == {0, 1, 2, 3} and not a & b
        for i in range(40):
            topic.append(b"%d" % i, partition=i % 4)
        got: dict[int, list[int]] = {0: [], 1: []}
        deadline = time.monotonic() + _PATIENCE
        while len(got[0]) + len(got[1]) < 40 and time.monotonic() < deadline:
            for n, consumer in enumerate((first, second)):
                msg = consumer.poll(0.1)
                if msg is not None and msg.error() is None:
                    partition = msg.partition()
                    assert partition is not None
                    got[n].append(partition)
        # Each member read exactly its own partitions' messages, none twice.
        assert len(got[0]) + len(got[1]) == 40
        assert set(got[0]) == a and set(got[1]) == b
    finally:
        first.close()
        second.close()


def test_subscribing_to_a_missing_topic_still_assigns_the_others(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 2)
    topic.append(b"here", partition=1)
    consumer = Consumer(
        {
            "bootstrap.servers": server.address,
            "group.id": "partly",
            "auto.offset.reset": "earliest",
            "allow.auto.create.topics": False,
        }
    )
    try:
        consumer.subscribe(["t", "missing"])
        got: list[bytes | None] = []
        deadline = time.monotonic() + _PATIENCE
        while not got and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
        assert got == [b"here"]
        assert "missing" not in store.topics()
    finally:
        consumer.close()
