"""confluent-kafka against `tidelog serve --kafka`, next to the same client on Apache Kafka.

The same librdkafka producer (default batching, acks=all, idempotent) and consumer
(assign from offset 0, consume() in batches) against the store's Kafka protocol server and,
when Java and the jars can be had, against the single KRaft broker benches/kafka/broker.py
starts, in one run. Targets (issue 18): produce >= 500,000 msgs/s and fetch >= 1,000,000
msgs/s of 100-byte values from tidelog's server.

Both servers run in a process of their own, as a broker does: `tidelog serve DIR --kafka`
is the CLI users run. Served from this process (``store.serve_kafka``) the server's thread
would share the GIL with the client's produce() loop being measured.

Fetch is measured twice: with the consumer's defaults, and set for a bulk read
(``BULK_READ``), each next to the same client on the Apache Kafka broker.

``client produce() loop alone`` is the floor of the client side: the same loop into
librdkafka's queue with no broker to send to (nothing leaves the process).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.kafka.broker import BrokerUnavailable, KafkaBroker
from benches.support import SCALE, VALUE_BYTES, make_values, record

ck = pytest.importorskip("confluent_kafka")
ck_admin = pytest.importorskip("confluent_kafka.admin")
pytest.importorskip("kio")

MSGS = 50_000 if SCALE.name == "quick" else 500_000
ROUNDS = SCALE.rounds
VALUES = make_values(1000)
PRODUCE_TARGET = [{"of": "value", "op": ">=", "value": 500_000, "text": ">= 500k msgs/s"}]
FETCH_TARGET = [{"of": "value", "op": ">=", "value": 1_000_000, "text": ">= 1M msgs/s"}]
_names = itertools.count()


@pytest.fixture(scope="module")
def tidelog_server(bench_root: Path) -> Iterator[str]:
    path = bench_root / "kafka-server"
    tidelog.open(path).close()
    child = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "serve", str(path), "--kafka", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
        # The child's SIGTERM disposition must not be inherited from the runner.
        preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("serving Kafka on "):
            pytest.fail(f"tidelog serve did not start: {line!r}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        os.kill(child.pid, signal.SIGTERM)
        child.wait(60)
        if child.stdout is not None:
            child.stdout.close()


@pytest.fixture(scope="module")
def apache_broker(bench_root: Path) -> Iterator[str]:
    b = KafkaBroker(bench_root / "kafka-server-peer", heap="512m")
    try:
        b.start()
    except BrokerUnavailable as e:
        pytest.skip(f"no Kafka broker: {e}")
    try:
        yield b.bootstrap
    finally:
        b.stop()


def _create(address: str) -> str:
    name = f"bench-{next(_names)}"
    admin = ck_admin.AdminClient({"bootstrap.servers": address})
    admin.create_topics([ck_admin.NewTopic(name, 1, 1)])[name].result(60)
    return name


def _produce(address: str, topic: str, n: int) -> None:
    producer = ck.Producer(
        {"bootstrap.servers": address, "acks": "all", "enable.idempotence": True}
    )
    produce = producer.produce
    for i in range(n):
        while True:
            try:
                produce(topic, VALUES[i % 1000], partition=0)
                break
            except BufferError:
                producer.poll(0.005)
    assert producer.flush(120) == 0


def _produce_loop_alone(n: int) -> None:
    producer = ck.Producer(
        {
            "bootstrap.servers": "127.0.0.1:1",  # nothing listens: nothing is sent
            "acks": "all",
            "enable.idempotence": True,
            "queue.buffering.max.messages": n + 1,
            "queue.buffering.max.kbytes": 2 * n * VALUE_BYTES // 1024 + 1024,
            "log_level": 0,
        }
    )
    produce = producer.produce
    for i in range(n):
        produce("loop", VALUES[i % 1000], partition=0)
    producer.purge()


#: A consumer set for a bulk read: librdkafka's default `fetch.queue.backoff.ms` (1 s)
#: postpones the next Fetch whenever its local queue holds more than `queued.min.messages`,
#: so an application that drains it quickly still reads at the pace of that backoff.
BULK_READ = {"fetch.queue.backoff.ms": 10}


def _fetch(address: str, topic: str, n: int, settings: dict[str, Any]) -> None:
    consumer = ck.Consumer(
        {
            "bootstrap.servers": address,
            "group.id": "bench",
            "enable.auto.commit": False,
            **settings,
        }
    )
    try:
        consumer.assign([ck.TopicPartition(topic, 0, 0)])
        got = 0
        while got < n:
            for msg in consumer.consume(10_000, 5.0):
                assert msg.error() is None, msg.error()
                got += 1
    finally:
        consumer.close()


def _bench_produce(benchmark: Any, address: str, role: str) -> None:
    state: dict[str, str] = {}

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        state["topic"] = _create(address)
        return (), {}

    benchmark.pedantic(
        lambda: _produce(address, state["topic"], MSGS),
        setup=setup,
        rounds=ROUNDS,
        warmup_rounds=1,
    )
    name = "tidelog serve --kafka" if role == "tidelog" else "Apache Kafka broker"
    record(
        benchmark,
        figure="kafka-server-produce",
        title=f"confluent-kafka Producer -> {name} (loopback)",
        role="tidelog" if role == "tidelog" else "reference",
        unit="msgs/s",
        work=MSGS,
        what=f"{MSGS:,} msgs of {VALUE_BYTES} B, default batching, acks=all, idempotent",
        targets=PRODUCE_TARGET if role == "tidelog" else None,
    )


def _bench_fetch(benchmark: Any, address: str, role: str, bulk: bool = False) -> None:
    topic = _create(address)
    _produce(address, topic, MSGS)
    settings = BULK_READ if bulk else {}
    benchmark.pedantic(
        lambda: _fetch(address, topic, MSGS, settings), rounds=ROUNDS, warmup_rounds=1
    )
    name = "tidelog serve --kafka" if role == "tidelog" else "Apache Kafka broker"
    how = ", fetch.queue.backoff.ms=10" if bulk else ", default settings"
    record(
        benchmark,
        figure="kafka-server-fetch-bulk" if bulk else "kafka-server-fetch",
        title=f"confluent-kafka Consumer <- {name} (loopback{how})",
        role="tidelog" if role == "tidelog" else "reference",
        unit="msgs/s",
        work=MSGS,
        what=f"{MSGS:,} msgs of {VALUE_BYTES} B from offset 0, consume(10000){how}",
        targets=FETCH_TARGET if role == "tidelog" else None,
    )


@pytest.mark.benchmark(group="kafka-server-produce")
def test_produce_tidelog_server(benchmark: Any, tidelog_server: str) -> None:
    _bench_produce(benchmark, tidelog_server, "tidelog")


@pytest.mark.benchmark(group="kafka-server-produce")
def test_produce_apache_kafka(benchmark: Any, apache_broker: str) -> None:
    _bench_produce(benchmark, apache_broker, "reference")


@pytest.mark.benchmark(group="kafka-server-produce")
def test_produce_client_loop_alone(benchmark: Any) -> None:
    benchmark.pedantic(lambda: _produce_loop_alone(MSGS), rounds=ROUNDS, warmup_rounds=1)
    record(
        benchmark,
        figure="kafka-server-produce-client-loop",
        title="confluent-kafka produce() loop alone (no broker, nothing sent)",
        role="variant",
        unit="msgs/s",
        work=MSGS,
        what=f"{MSGS:,} produce() calls of {VALUE_BYTES} B into librdkafka's queue",
    )


@pytest.mark.benchmark(group="kafka-server-fetch")
def test_fetch_tidelog_server(benchmark: Any, tidelog_server: str) -> None:
    _bench_fetch(benchmark, tidelog_server, "tidelog")


@pytest.mark.benchmark(group="kafka-server-fetch")
def test_fetch_apache_kafka(benchmark: Any, apache_broker: str) -> None:
    _bench_fetch(benchmark, apache_broker, "reference")


@pytest.mark.benchmark(group="kafka-server-fetch-bulk")
def test_fetch_bulk_tidelog_server(benchmark: Any, tidelog_server: str) -> None:
    _bench_fetch(benchmark, tidelog_server, "tidelog", bulk=True)


@pytest.mark.benchmark(group="kafka-server-fetch-bulk")
def test_fetch_bulk_apache_kafka(benchmark: Any, apache_broker: str) -> None:
    _bench_fetch(benchmark, apache_broker, "reference", bulk=True)
