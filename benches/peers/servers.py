"""Servers on loopback: Redis Streams and Apache Kafka, started and stopped by the benchmark.

Both bind 127.0.0.1 only, on free ports, with their data in the run's temporary directory.
One server serves both durability levels; the level is set per stream (Redis: ``CONFIG SET
appendfsync``) or per topic (Kafka: ``flush.messages``) before each workload.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from benches.kafka.broker import KAFKA_VERSION, BrokerUnavailable, kafka_home
from benches.kafka.broker import KafkaBroker as SharedKafkaBroker
from benches.peers.base import (
    Adapter,
    Sender,
    Skip,
    Timed,
    chunks,
    dist_version,
    free_port,
    loop_with_budget,
    optional_import,
    wait_for_port,
)

REPO = Path(__file__).resolve().parents[2]


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- Redis -----------------------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` on a free loopback port, AOF on, no RDB snapshots."""

    def __init__(self, root: Path) -> None:
        self.root = root / "redis"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = "?"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Skip(
                "redis-server not found: install Debian's package with "
                "`apt-get install -y redis-server` (the benchmark starts its own instance)"
            )
        redis = optional_import("redis")
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        args = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.root),
            "--logfile", str(self.root / "redis.log"),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        proc = self.proc
        if not wait_for_port(self.port, 30.0, lambda: proc.poll() is None):
            self.stop()
            raise Skip(f"redis-server did not start; see {self.root / 'redis.log'}")
        client = redis.Redis(host="127.0.0.1", port=self.port)
        end = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        self.version = str(client.info("server")["redis_version"])
        client.close()

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None


class RedisStreamsAdapter(Adapter):
    """Redis Streams through redis-py (with hiredis when installed)."""

    key = "redis"
    label = "Redis Streams (loopback)"
    kind = "server"
    levels = ("never", "always")
    _server: ClassVar[RedisServer | None] = None

    def check(self) -> None:
        optional_import("redis")
        if shutil.which("redis-server") is None:
            raise Skip(
                "redis-server not found: install Debian's package with "
                "`apt-get install -y redis-server` (the benchmark starts its own instance)"
            )

    def version(self) -> str:
        server = type(self)._server
        hiredis = dist_version("hiredis")
        return (
            f"redis-server {server.version if server else '?'}, redis-py "
            f"{dist_version('redis')}" + (f" + hiredis {hiredis}" if hiredis != "?" else "")
        )

    def durability(self) -> str:
        if self.level == "always":
            return "AOF appendfsync always: fsync before each reply"
        return (
            "AOF appendfsync no (RDB off): the server's page cache before the reply "
            "(survives a redis-server crash, not a power loss)"
        )

    def notes(self) -> list[str]:
        return [
            "append: `XADD` per message (a round trip each); batch: `XADD` x batch in one "
            "pipeline (no MULTI); read: `XRANGE ... COUNT batch` pages.",
            "consume: `XREADGROUP COUNT batch` + `XACK` of the batch's ids; latency: "
            "`XADD` per message, the other process blocks in `XREADGROUP BLOCK 100`.",
        ]

    def start(self) -> None:
        cls = type(self)
        if cls._server is None:
            server = RedisServer(self.workdir)
            server.start()
            cls._server = server

    @classmethod
    def shutdown(cls) -> None:
        if cls._server is not None:
            cls._server.stop()
            cls._server = None

    def _client(self) -> Any:
        redis = optional_import("redis")
        server = type(self)._server
        assert server is not None, "start() first"
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.config_set("appendfsync", "always" if self.level == "always" else "no")
        return client

    def _stream(self, slot: str) -> str:
        return f"{slot}-{self.level}"

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        r, stream = self._client(), self._stream(slot)
        xadd = r.xadd
        return self.put_each(values, lambda v: xadd(stream, {"v": v}), close=r.close)

    def append_batch(self, slot: str, values: Sequence[bytes]) -> Timed:
        r, stream = self._client(), self._stream(slot)
        batch = self.spec.batch

        def run() -> int:
            for part in chunks(values, batch):
                pipe = r.pipeline(transaction=False)
                for v in part:
                    pipe.xadd(stream, {"v": v})
                pipe.execute()
            return len(values)

        return Timed(run=run, close=r.close)

    def read_all(self, slot: str, count: int) -> Timed:
        r, stream = self._client(), self._stream(slot)
        batch = self.spec.batch

        def run() -> int:
            start, done = "-", 0
            while True:
                entries = r.xrange(stream, min=start, max="+", count=batch)
                if not entries:
                    break
                done += len([fields[b"v"] for _id, fields in entries])
                start = b"(" + entries[-1][0]
            return done

        return Timed(run=run, close=r.close)

    def consume_group(self, slot: str, count: int) -> Timed:
        r, stream = self._client(), self._stream(slot)
        r.xgroup_create(stream, "g", id="0")
        batch = self.spec.batch

        def run() -> int:
            done = 0
            while done < count:
                resp = r.xreadgroup("g", "c", {stream: ">"}, count=batch)
                if not resp or not resp[0][1]:
                    break
                entries = resp[0][1]
                _values = [fields[b"v"] for _id, fields in entries]
                r.xack(stream, "g", *[e[0] for e in entries])
                done += len(entries)
            return done

        return Timed(run=run, close=r.close)

    def latency_sender(self, slot: str) -> Sender:
        r, stream = self._client(), self._stream(slot)
        r.xgroup_create(stream, "g", id="$", mkstream=True)
        xadd = r.xadd

        def send(v: bytes) -> None:
            xadd(stream, {"v": v})

        return Sender(send=send, close=r.close)

    def child_config(self, slot: str) -> dict[str, Any]:
        server = type(self)._server
        assert server is not None
        return {"port": server.port, "stream": self._stream(slot)}

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        redis = optional_import("redis")
        r = redis.Redis(host="127.0.0.1", port=config["port"])
        stream = config["stream"]
        try:
            ready()
            got = 0
            while got < count and time.monotonic() < deadline:
                resp = r.xreadgroup("g", "c", {stream: ">"}, count=1000, block=100)
                if not resp or not resp[0][1]:
                    continue
                entries = resp[0][1]
                values = [fields[b"v"] for _id, fields in entries]
                got += len(values)
                yield values
                r.xack(stream, "g", *[e[0] for e in entries])
        finally:
            r.close()


# -- Kafka -----------------------------------------------------------------------------------


class KafkaBroker(SharedKafkaBroker):
    """The shared broker (benches/kafka/broker.py); what is missing becomes :class:`Skip`."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, heap="1g")

    @staticmethod
    def check() -> Path:
        """The jar directory; raises :class:`Skip` if java or the jars are missing."""
        if shutil.which("java") is None:
            raise Skip("java not found: `apt-get install -y openjdk-17-jre-headless`")
        libs = kafka_home() / "libs"
        if not (kafka_home() / ".complete").exists() or not any(libs.glob("kafka_2.13-*.jar")):
            raise Skip(
                f"Kafka jars not found in {libs}: fetch them once with "
                f"`bash benches/kafka/fetch.sh {KAFKA_VERSION}` (Maven Central, needs mvn)"
            )
        return libs

    def start(self, timeout: float = 180.0) -> None:
        """Starts the broker from the fetched jars; raises :class:`Skip` if it cannot."""
        self.check()
        optional_import("confluent_kafka", "confluent-kafka")
        try:
            super().start(timeout)
        except BrokerUnavailable as e:
            raise Skip(str(e)) from e


class KafkaAdapter(Adapter):
    """Apache Kafka (single KRaft broker) driven by confluent-kafka (librdkafka)."""

    key = "kafka"
    label = "Apache Kafka (loopback)"
    kind = "server"
    levels = ("never", "always")
    _broker: ClassVar[KafkaBroker | None] = None

    def check(self) -> None:
        optional_import("confluent_kafka", "confluent-kafka")
        KafkaBroker.check()

    def version(self) -> str:
        ck = optional_import("confluent_kafka", "confluent-kafka")
        broker = type(self)._broker
        return (
            f"Kafka {KAFKA_VERSION} (KRaft, {broker.java if broker else 'java ?'}), "
            f"confluent-kafka {dist_version('confluent-kafka')} / librdkafka {ck.libversion()[0]}"
        )

    def durability(self) -> str:
        if self.level == "always":
            return "acks=all, 1 broker, topic flush.messages=1: fsync before each produce ack"
        return (
            "acks=all, 1 broker, no flush settings (Kafka's default): the broker's page "
            "cache (survives a broker crash, not a power loss)"
        )

    def notes(self) -> list[str]:
        return [
            "append: `produce()` + `flush()` per message (linger.ms=0: a synchronous send); "
            "batch: `produce()` x batch then `flush()` (linger.ms=5); read: `assign()`ed "
            "consumer without group or commits, `consume(batch)`.",
            "consume: subscribed group member, `consume(batch)` + synchronous `commit()` per "
            "batch, timed from the assignment (the group join is not timed); latency: "
            "`produce()` + `poll(0)` per message, the other process blocks in `poll()`.",
        ]

    def start(self) -> None:
        cls = type(self)
        if cls._broker is None:
            broker = KafkaBroker(self.workdir)
            broker.start()
            cls._broker = broker
            try:
                self._wait_ready()
            except Exception:
                cls.shutdown()
                raise

    @classmethod
    def shutdown(cls) -> None:
        if cls._broker is not None:
            cls._broker.stop()
            cls._broker = None

    def _bootstrap(self) -> str:
        broker = type(self)._broker
        assert broker is not None, "start() first"
        return f"127.0.0.1:{broker.port}"

    def _wait_ready(self) -> None:
        ck = optional_import("confluent_kafka", "confluent-kafka")
        admin = optional_import("confluent_kafka.admin", "confluent-kafka").AdminClient(
            {"bootstrap.servers": self._bootstrap(), "log_level": 4}
        )
        end = time.monotonic() + 60
        while True:
            try:
                md = admin.list_topics(timeout=5)
                if md.brokers:
                    return
            except ck.KafkaException:
                pass
            if time.monotonic() > end:
                raise Skip("the Kafka broker did not answer metadata requests")
            time.sleep(0.5)

    def _topic(self, slot: str) -> str:
        ck = optional_import("confluent_kafka", "confluent-kafka")
        ck_admin = optional_import("confluent_kafka.admin", "confluent-kafka")
        admin = ck_admin.AdminClient({"bootstrap.servers": self._bootstrap(), "log_level": 4})
        name = f"{slot}-{self.level}"
        config = {"flush.messages": "1"} if self.level == "always" else {}
        futures = admin.create_topics(
            [ck_admin.NewTopic(name, num_partitions=1, replication_factor=1, config=config)]
        )
        for f in futures.values():
            try:
                f.result(timeout=60)
            except ck.KafkaException as exc:
                if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        return name

    def _producer(self, linger_ms: int) -> tuple[Any, list[str]]:
        ck = optional_import("confluent_kafka", "confluent-kafka")
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        producer = ck.Producer(
            {
                "bootstrap.servers": self._bootstrap(),
                "acks": "all",
                "linger.ms": linger_ms,
                "enable.idempotence": False,
                "queue.buffering.max.messages": 1_000_000,
                "on_delivery": on_delivery,
            }
        )
        return producer, errors

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        topic = self._topic(slot)
        producer, errors = self._producer(linger_ms=0)
        timed = Timed(run=lambda: 0)
        produce, flush = producer.produce, producer.flush

        def put(v: bytes) -> None:
            produce(topic, v)
            flush()

        def run() -> int:
            done = loop_with_budget(values, put, self.spec.budget_s, timed)
            if errors:
                raise RuntimeError(f"{len(errors)} delivery errors, first: {errors[0]}")
            return done

        timed.run = run
        return timed

    def append_batch(self, slot: str, values: Sequence[bytes]) -> Timed:
        topic = self._topic(slot)
        producer, errors = self._producer(linger_ms=5)
        batch = self.spec.batch

        def run() -> int:
            produce = producer.produce
            for part in chunks(values, batch):
                for v in part:
                    produce(topic, v)
                producer.flush()
            if errors:
                raise RuntimeError(f"{len(errors)} delivery errors, first: {errors[0]}")
            return len(values)

        return Timed(run=run)

    def _consumer(self, group: str, **extra: Any) -> Any:
        ck = optional_import("confluent_kafka", "confluent-kafka")
        return ck.Consumer(
            {
                "bootstrap.servers": self._bootstrap(),
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **extra,
            }
        )

    @staticmethod
    def _take(consumer: Any, batch: int, timeout: float) -> list[bytes]:
        msgs = consumer.consume(num_messages=batch, timeout=timeout)
        out: list[bytes] = []
        for m in msgs:
            if m.error():
                raise RuntimeError(str(m.error()))
            out.append(m.value())
        return out

    def read_all(self, slot: str, count: int) -> Timed:
        ck = optional_import("confluent_kafka", "confluent-kafka")
        topic = f"{slot}-{self.level}"
        consumer = self._consumer(f"read-{topic}")
        batch = self.spec.batch

        def run() -> int:
            consumer.assign([ck.TopicPartition(topic, 0, 0)])
            done, idle_until = 0, time.monotonic() + 30
            while done < count and time.monotonic() < idle_until:
                # consume() returns when it has num_messages or at the timeout: ask for no
                # more than what is left.
                got = self._take(consumer, min(batch, count - done), 1.0)
                if got:
                    done += len(got)
                    idle_until = time.monotonic() + 30
            return done

        return Timed(run=run, close=consumer.close)

    def consume_group(self, slot: str, count: int) -> Timed:
        topic = f"{slot}-{self.level}"
        consumer = self._consumer(f"group-{topic}")
        assigned: list[Any] = []

        def on_assign(c: Any, partitions: list[Any]) -> None:
            c.assign(partitions)
            c.pause(partitions)
            assigned.extend(partitions)

        consumer.subscribe([topic], on_assign=on_assign)
        end = time.monotonic() + 60
        while not assigned:
            if consumer.consume(num_messages=1, timeout=0.2):
                raise RuntimeError("message delivered while paused")
            if time.monotonic() > end:
                consumer.close()
                raise RuntimeError("no partition assigned within 60 s")
        batch = self.spec.batch

        def run() -> int:
            consumer.resume(assigned)
            done, idle_until = 0, time.monotonic() + 30
            while done < count and time.monotonic() < idle_until:
                got = self._take(consumer, min(batch, count - done), 1.0)
                if got:
                    consumer.commit(asynchronous=False)
                    done += len(got)
                    idle_until = time.monotonic() + 30
            return done

        return Timed(run=run, close=consumer.close)

    def fill(self, slot: str, values: Sequence[bytes]) -> None:
        topic = self._topic(slot)
        producer, errors = self._producer(linger_ms=5)
        for v in values:
            while True:
                try:
                    producer.produce(topic, v)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush()
        if errors:
            raise RuntimeError(f"{len(errors)} delivery errors, first: {errors[0]}")

    def latency_sender(self, slot: str) -> Sender:
        topic = self._topic(slot)
        producer, _errors = self._producer(linger_ms=0)
        produce, poll = producer.produce, producer.poll

        def send(v: bytes) -> None:
            produce(topic, v)
            poll(0)

        def close() -> None:
            producer.flush()

        return Sender(send=send, close=close)

    def child_config(self, slot: str) -> dict[str, Any]:
        return {"bootstrap": self._bootstrap(), "topic": f"{slot}-{self.level}"}

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        ck = optional_import("confluent_kafka", "confluent-kafka")
        consumer = ck.Consumer(
            {
                "bootstrap.servers": config["bootstrap"],
                "group.id": f"latency-{config['topic']}",
                "auto.offset.reset": "earliest",
            }
        )
        assigned: list[Any] = []
        consumer.subscribe([config["topic"]], on_assign=lambda _c, ps: assigned.extend(ps))
        try:
            signalled, got = False, 0
            while got < count and time.monotonic() < deadline:
                # poll() returns as soon as one message is there (consume(n, timeout) would
                # wait for n messages or the whole timeout).
                m = consumer.poll(0.1)
                if assigned and not signalled:
                    ready()
                    signalled = True
                if m is None:
                    continue
                if m.error():
                    raise RuntimeError(str(m.error()))
                got += 1
                yield [m.value()]
        finally:
            consumer.close()
