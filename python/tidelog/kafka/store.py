"""A Kafka cluster behind the :class:`tidelog.Store` API: ``tidelog.open("kafka://...")``.

:class:`KafkaStore` creates and deletes topics through the admin client, appends through one
idempotent producer that waits for each delivery report, and reads through one consumer
that is *assigned* partitions (it joins no group). Producers, consumers, transactions and
work queues made from it live in the sibling modules. Differences from a local store are
listed in ``README.md`` ("Kafka backend: differences") and raise a clear error here.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka import (
    murmur2 as _murmur2,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.cimpl import NewTopic

from tidelog import _core
from tidelog.kafka._common import TIMEOUT, check_partition, consume_ready, headers_list
from tidelog.kafka._errors import (
    PARTITION_EOF,
    UNKNOWN_TOPIC,
    error_for,
    partitions_checked,
    raise_for,
    retrying,
    translated,
)
from tidelog.kafka.consumer import KafkaConsumer
from tidelog.kafka.messages import KafkaMessage, KafkaRecordBatch, from_confluent
from tidelog.kafka.producer import KafkaProducer
from tidelog.kafka.transaction import KafkaTransaction
from tidelog.kafka.workqueue import KafkaWorkQueue

__all__ = ["KafkaStore", "KafkaTopic", "open_kafka", "parse_url"]


#: tidelog topic settings -> Kafka topic configs.
_TOPIC_CONFIGS = {
    "retention_ms": "retention.ms",
    "retention_bytes": "retention.bytes",
    "segment_bytes": "segment.bytes",
    "segment_ms": "segment.ms",
    "max_message_bytes": "max.message.bytes",
    "index_interval_bytes": "index.interval.bytes",
    "cleanup_policy": "cleanup.policy",
    "delete_retention_ms": "delete.retention.ms",
    "compression": "compression.type",
}
_SETTINGS = {v: k for k, v in _TOPIC_CONFIGS.items()}
# How long `alter_topic` waits for the broker to show what it altered (seconds).
_APPLIED_WAIT = 5.0


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Splits ``kafka://h1:9092,h2:9092?client.id=app`` into servers and client options.

    Raises:
        InvalidConfigError: Not a ``kafka://`` URL, or no host.
    """
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise _core.InvalidConfigError(f"not a kafka:// URL: {url!r}")
    servers = parts.netloc
    if not servers or any(not s.strip() for s in servers.split(",")):
        raise _core.InvalidConfigError(
            f"a kafka:// URL names the brokers, as kafka://host:port[,host:port]: {url!r}"
        )
    if parts.path not in ("", "/"):
        raise _core.InvalidConfigError(f"a kafka:// URL has no path, got {parts.path!r} in {url!r}")
    options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    if "bootstrap.servers" in options:
        raise _core.InvalidConfigError("give the brokers in the URL's host part, not as an option")
    return servers, options


def open_kafka(url: str) -> KafkaStore:
    """Connects to the Kafka cluster named by ``url`` (see :func:`tidelog.open`)."""
    servers, options = parse_url(url)
    return KafkaStore(servers, options)


class KafkaStore:
    """The :class:`tidelog.Store` API on a Kafka cluster (see :func:`tidelog.open`).

    Args:
        servers: ``bootstrap.servers``: ``host:port[,host:port]``.
        options: librdkafka client options for every client this store makes
            (``client.id``, ``security.protocol``, ...).
    """

    def __init__(self, servers: str, options: Mapping[str, str] | None = None) -> None:
        self._servers = servers
        self._options = dict(options or {})
        self._lock = threading.Lock()
        self._closed = False
        self._admin = AdminClient(self.client_config())
        # Fail now, with the reason, when no broker answers.
        admin = self._admin
        retrying(lambda t: admin.list_topics(timeout=t), f"connecting to Kafka at {servers}")
        self._appender: Producer | None = None
        self._reader: Consumer | None = None
        self._reader_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._round_robin = itertools.count()
        self._producers: set[KafkaProducer] = set()
        self._consumers: set[KafkaConsumer] = set()
        self._work_queues: set[KafkaWorkQueue] = set()

    # -- configuration -----------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The store's URL."""
        query = "&".join(f"{k}={v}" for k, v in self._options.items())
        return f"kafka://{self._servers}" + (f"?{query}" if query else "")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """The librdkafka configuration of a client of this store, plus ``extra``."""
        return {"bootstrap.servers": self._servers, **self._options, **extra}

    @property
    def admin(self) -> AdminClient:
        """The store's admin client (for the backend's modules)."""
        return self._admin

    def next_round_robin(self) -> int:
        """A counter for choosing partitions of unkeyed messages in turn."""
        return next(self._round_robin)

    def forget(self, member: object) -> None:
        """Called by a producer, consumer or work queue of this store once it closed."""
        self._producers.discard(member)
        self._consumers.discard(member)
        self._work_queues.discard(member)

    def _check_open(self) -> None:
        if self._closed:
            raise _core.StoreClosedError("the store is closed")

    # -- topics ------------------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int = 1, *, exist_ok: bool = False, **settings: Any
    ) -> KafkaTopic:
        """Creates topic ``name`` on the cluster and returns it once every broker knows it.

        Args:
            name: The topic's name (names starting with ``__`` are reserved).
            partitions: How many partitions.
            exist_ok: Return the existing topic instead of raising.
            **settings: Topic settings (``retention_ms``, ``segment_bytes``,
                ``cleanup_policy``, ``compression``, ...), stored as Kafka topic configs.

        Raises:
            TopicExistsError: The topic exists and ``exist_ok`` is false.
            InvalidConfigError: A reserved name, a bad partition count or setting.
        """
        self._check_open()
        _check_name(name)
        if isinstance(partitions, bool) or not isinstance(partitions, int):
            raise TypeError(f"partitions must be int, got {type(partitions).__name__}")
        if partitions < 1:
            raise _core.InvalidConfigError(f"partitions must be at least 1, got {partitions}")
        config = _topic_config(settings)
        future = self._admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=-1, config=config)],
            operation_timeout=TIMEOUT,
        )[name]
        try:
            with translated(f"creating topic {name!r}"):
                future.result(TIMEOUT)
        except _core.TopicExistsError:
            if not exist_ok:
                raise
        return self._wait_topic(name)

    def _wait_topic(self, name: str) -> KafkaTopic:
        # The controller answers before every broker's metadata has the topic.
        end = time.monotonic() + TIMEOUT
        while True:
            try:
                return self.topic(name)
            except _core.TopicNotFoundError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def _partition_count(self, name: str) -> int:
        meta = retrying(
            lambda t: self._admin.list_topics(topic=name, timeout=t), f"looking up topic {name!r}"
        )
        info = meta.topics.get(name)
        if info is None or info.error is not None or not info.partitions:
            missing = (
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                UNKNOWN_TOPIC,
                KafkaError.LEADER_NOT_AVAILABLE,
            )
            if info is not None and info.error is not None and info.error.code() not in missing:
                raise error_for(info.error, f"looking up topic {name!r}")
            raise _core.TopicNotFoundError(f"no topic {name!r} on {self._servers}")
        return len(info.partitions)

    def topic(self, name: str) -> KafkaTopic:
        """The existing topic ``name``.

        Raises:
            TopicNotFoundError: There is no such topic.
        """
        self._check_open()
        if not isinstance(name, str):
            raise TypeError(f"name must be str, got {type(name).__name__}")
        return KafkaTopic(self, name, self._partition_count(name))

    def topics(self, *, internal: bool = False) -> list[str]:
        """The cluster's topic names, sorted; ``__`` topics only with ``internal=True``."""
        self._check_open()
        meta = retrying(lambda t: self._admin.list_topics(timeout=t), "listing topics")
        return sorted(n for n in meta.topics if internal or not n.startswith("__"))

    def delete_topic(self, name: str) -> None:
        """Deletes topic ``name`` and returns once the cluster no longer lists it.

        Raises:
            TopicNotFoundError: There is no such topic.
            InvalidConfigError: A reserved (``__``) name.
        """
        self._check_open()
        _check_name(name)
        future = self._admin.delete_topics([name], operation_timeout=TIMEOUT)[name]
        with translated(f"deleting topic {name!r}"):
            future.result(TIMEOUT)
        end = time.monotonic() + TIMEOUT
        while name in self.topics() and time.monotonic() < end:
            time.sleep(0.05)

    def alter_topic(self, name: str, **settings: Any) -> dict[str, Any]:
        """Changes topic settings on the cluster; returns the topic's settings after it."""
        self._check_open()
        _check_name(name)
        self.topic(name)
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in _topic_config(settings).items()
            ],
        )
        wanted = _topic_config(settings)

        def alter(timeout: float) -> None:
            # Idempotent: every entry is a SET, so a second try sets the same values.
            for future in self._admin.incremental_alter_configs(
                [resource], request_timeout=timeout
            ).values():
                future.result(timeout)

        retrying(alter, f"altering topic {name!r}")
        # A KRaft broker answers once the change is in the metadata log and applies it
        # after: a describe right away can still show the old values. Bounded, in case the
        # broker shows a value in another spelling than the one sent.
        deadline = time.monotonic() + _APPLIED_WAIT
        raw = self._described(name)
        while any(raw.get(k) != v for k, v in wanted.items()) and time.monotonic() < deadline:
            time.sleep(0.05)
            raw = self._described(name)
        return _tidelog_settings(raw)

    def topic_config(self, name: str) -> dict[str, Any]:
        """The settings of topic ``name`` that have a tidelog name."""
        return _tidelog_settings(self._described(name))

    def _described(self, name: str) -> dict[str, str | None]:
        """Every config entry of topic ``name`` under its Kafka name, as the broker says."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        entries = retrying(
            lambda t: self._admin.describe_configs([resource], request_timeout=t)[resource].result(
                t
            ),
            f"describing topic {name!r}",
        )
        return {key: entry.value for key, entry in entries.items()}

    # -- appending and reading ---------------------------------------------------------------

    def _appender_producer(self) -> Producer:
        with self._lock:
            if self._appender is None:
                self._appender = Producer(
                    self.client_config(
                        **{
                            "enable.idempotence": True,
                            "partitioner": "murmur2_random",
                            "linger.ms": 0,
                        }
                    )
                )
            return self._appender

    def choose_partition(self, topic: KafkaTopic, key: bytes | None) -> int:
        """Kafka clients' partition for ``key`` (murmur2), else the next in turn."""
        if key is not None:
            return int(_murmur2(bytes(key), topic.partitions))
        return next(self._round_robin) % topic.partitions

    def produce_and_wait(
        self, topic: KafkaTopic, partition: int, records: list[tuple[Any, Any, Any, int | None]]
    ) -> int:
        """Produces ``records`` to one partition and waits for every delivery report.

        Returns the first record's offset. One idempotent producer keeps them in order.
        """
        self._check_open()
        producer = self._appender_producer()
        reports: list[tuple[KafkaError | None, int]] = []
        done = threading.Event()
        want = len(records)

        def delivered(err: KafkaError | None, msg: Any) -> None:
            reports.append((err, -1 if err is not None else msg.offset()))
            if len(reports) == want:
                done.set()

        with self._append_lock, translated(f"appending to {topic.name!r}"):
            for value, key, headers, ts in records:
                while True:
                    try:
                        producer.produce(
                            topic.name,
                            value,
                            key,
                            partition=partition,
                            on_delivery=delivered,
                            timestamp=ts or 0,
                            headers=headers,
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
        while not done.is_set():
            producer.poll(0.05)
        for err, _ in reports:
            raise_for(err, f"appending to {topic.name!r} partition {partition}")
        return min(offset for _, offset in reports)

    def _reader_consumer(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer(
                self.client_config(
                    **{
                        "group.id": f"tidelog-reader-{uuid.uuid4().hex}",
                        "enable.auto.commit": False,
                        "enable.partition.eof": True,
                        "isolation.level": "read_committed",
                        "auto.offset.reset": "error",
                        # Reads stop at the end offset: a fetch left waiting there for new
                        # data (the broker holds it up to this long) would hold up the next
                        # read's first fetch.
                        "fetch.wait.max.ms": 10,
                    }
                )
            )
        return self._reader

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """The start (first retained) and end (next to be written) offsets of a partition."""
        tp = TopicPartition(topic, partition)
        with self._reader_lock:
            reader = self._reader_consumer()
            low, high = retrying(
                lambda t: reader.get_watermark_offsets(tp, timeout=t, cached=False),
                f"offsets of {topic!r} partition {partition}",
            )
        return int(low), int(high)

    def offset_for_time(self, topic: str, partition: int, timestamp_ms: int) -> int | None:
        """The first offset of a partition with a timestamp >= ``timestamp_ms``, or None."""
        wanted = [TopicPartition(topic, partition, timestamp_ms)]
        with self._reader_lock:
            reader = self._reader_consumer()
            found = retrying(
                lambda t: partitions_checked(reader.offsets_for_times(wanted, timeout=t)),
                f"offset for a timestamp in {topic!r}",
            )
        offset = int(found[0].offset)
        if offset < 0 or offset == OFFSET_END:
            return None
        return offset

    def read_range(
        self, topic: KafkaTopic, partition: int, offset: int, max_messages: int
    ) -> KafkaRecordBatch:
        """Up to ``max_messages`` committed messages of a partition from ``offset``."""
        start, end = self.watermarks(topic.name, partition)
        if not start <= offset <= end:
            raise _core.OffsetOutOfRangeError(
                f"offset {offset} of {topic.name!r} partition {partition} is outside "
                f"[{start}, {end}]"
            )
        if offset == end or max_messages == 0:
            return KafkaRecordBatch(topic.name, partition, [], offset)
        out: list[KafkaMessage] = []
        nxt = offset
        with self._reader_lock:
            reader = self._reader_consumer()
            with translated(f"reading {topic.name!r} partition {partition}"):
                reader.assign([TopicPartition(topic.name, partition, offset)])
                try:
                    deadline = time.monotonic() + TIMEOUT
                    while len(out) < max_messages and nxt < end:
                        msgs = consume_ready(reader, min(max_messages - len(out), 10_000), 0.5)
                        eof = False
                        for m in msgs:
                            err = m.error()
                            if err is not None:
                                if err.code() == PARTITION_EOF:
                                    eof = True
                                    continue
                                raise_for(err, f"reading {topic.name!r} partition {partition}")
                            out.append(from_confluent(m))
                            nxt = int(m.offset() or 0) + 1
                        if eof:
                            break
                        if not msgs and time.monotonic() > deadline:
                            raise _core.TidelogError(
                                f"reading {topic.name!r} partition {partition}: no answer "
                                f"from Kafka within {TIMEOUT} s"
                            )
                finally:
                    reader.unassign()
        return KafkaRecordBatch(topic.name, partition, out[:max_messages], nxt)

    # -- producers, consumers, queues --------------------------------------------------------

    def producer(self, **options: Any) -> KafkaProducer:
        """A buffered producer (see :class:`tidelog.kafka.producer.KafkaProducer`)."""
        self._check_open()
        producer = KafkaProducer(self, **options)
        self._producers.add(producer)
        return producer

    def consumer(self, topic: str, *, group: str, **options: Any) -> KafkaConsumer:
        """A member of consumer group ``group`` (see :mod:`tidelog.kafka.consumer`)."""
        self._check_open()
        if not isinstance(topic, str):
            raise TypeError(f"topic must be str, got {type(topic).__name__}")
        consumer = KafkaConsumer(self, topic, group, **options)
        self._consumers.add(consumer)
        return consumer

    def work_queue(self, topic: str, *, group: str, **options: Any) -> KafkaWorkQueue:
        """A member of share group ``group`` (see :mod:`tidelog.kafka.workqueue`)."""
        self._check_open()
        queue = KafkaWorkQueue(self, topic, group, **options)
        self._work_queues.add(queue)
        return queue

    def transaction(
        self, producer: KafkaProducer, consumer: KafkaConsumer | None = None
    ) -> KafkaTransaction:
        """Begins a Kafka transaction (see :meth:`tidelog.Store.transaction`)."""
        self._check_open()
        return KafkaTransaction(producer, consumer)

    def not_available(self, what: str) -> _core.InvalidConfigError:
        """The error for what a kafka:// store does not have."""
        return _core.InvalidConfigError(
            f"{what} is not available on a kafka:// store; see README.md, "
            "'Apache Kafka behind the same API'"
        )

    def open_producers(self) -> list[KafkaProducer]:
        """This process's open producers made from this store."""
        return [p for p in list(self._producers) if not p.closed]

    def stats(self) -> dict[str, Any]:
        """A snapshot of the cluster's topics and groups and this process's producers.

        The shape of :meth:`tidelog.Store.stats`, read through the admin client; partition
        ``size_bytes`` and ``segments`` are None and ``work_queues`` and ``recovery`` are
        empty (see :mod:`tidelog.kafka.observe`).
        """
        from tidelog.kafka.observe import store_stats

        self._check_open()
        return store_stats(self)

    def metrics(self) -> dict[str, Any]:
        """Counters and gauges of the cluster's topics and groups and this process's producers.

        The shape of :func:`tidelog.metrics.collect`; figures the broker does not report are
        None (see :mod:`tidelog.kafka.observe`). Costs a few admin round trips, plus one
        fetch per lagging group partition the first time its committed offset is seen.
        """
        from tidelog.kafka.observe import store_metrics

        self._check_open()
        return store_metrics(self)

    def groups(self) -> dict[str, Any]:
        """Every consumer group: per topic, its members, committed offsets and lag.

        Returns:
            ``{group: {topic: {"generation", "members": {member: [partitions]},
            "committed": {partition: offset}, "lag": {partition: messages}}}}`` as
            :meth:`tidelog.Store.groups`; ``generation`` is None (the admin API does not
            report the group epoch) and members are Kafka member ids.
        """
        from tidelog.kafka.observe import group_overview

        self._check_open()
        return group_overview(self)

    def abort_orphaned_transactions(self) -> list[str]:
        """Kafka's transaction coordinator aborts expired transactions by itself.

        Returns:
            Always an empty list: nothing is left for a client to finish.
        """
        self._check_open()
        return []

    def sync(self) -> None:
        """Waits for every append's delivery report (appends already wait for theirs)."""
        self._check_open()
        if self._appender is not None:
            self._appender.flush(TIMEOUT)

    def close(self) -> None:
        """Flushes and closes every producer, consumer and work queue made from this store."""
        if self._closed:
            return
        errors: list[BaseException] = []
        members: list[KafkaWorkQueue | KafkaConsumer | KafkaProducer] = [
            *self._work_queues,
            *self._consumers,
            *self._producers,
        ]
        for member in members:
            try:
                member.close()
            except Exception as e:
                errors.append(e)
        self._closed = True
        if self._appender is not None:
            self._appender.flush(TIMEOUT)
        if self._reader is not None:
            self._reader.close()
        if errors:
            raise errors[0]

    def __enter__(self) -> KafkaStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KafkaStore({self.path!r}{', closed' if self._closed else ''})"


class KafkaTopic:
    """A Kafka topic behind the :class:`tidelog.Topic` API (from :meth:`KafkaStore.topic`)."""

    def __init__(self, store: KafkaStore, name: str, partitions: int) -> None:
        self._store = store
        self._name = name
        self._partitions = partitions

    @property
    def name(self) -> str:
        """The topic's name."""
        return self._name

    @property
    def partitions(self) -> int:
        """How many partitions it has."""
        return self._partitions

    @property
    def config(self) -> dict[str, Any]:
        """The topic's settings, read from the cluster."""
        return self._store.topic_config(self._name)

    def append(
        self,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Produces one message and returns ``(partition, offset)`` once Kafka acknowledged it.

        With ``partition=None`` a keyed message goes where Kafka's own clients send it
        (murmur2 of the key), others round-robin. Acknowledged means written as the
        producer's ``acks`` (default ``all``) says.
        """
        if value is not None and not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"value must be bytes or None, got {type(value).__name__}")
        if key is not None and not isinstance(key, bytes | bytearray | memoryview):
            raise TypeError(f"key must be bytes or None, got {type(key).__name__}")
        p = (
            self._store.choose_partition(self, None if key is None else bytes(key))
            if partition is None
            else check_partition(self, partition)
        )
        value = None if value is None else bytes(value)
        offset = self._store.produce_and_wait(
            self,
            p,
            [(value, key if key is None else bytes(key), headers_list(headers), timestamp_ms)],
        )
        return p, offset

    def append_batch(
        self,
        values: list[bytes] | bytes | bytearray | memoryview,
        *,
        lengths: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Produces ``values`` to one partition, in order; returns ``(partition, first_offset)``.

        Unlike a local batch this is not atomic: Kafka may store a prefix if a delivery
        fails (the error is raised), and another producer's messages may fall between them.
        """
        if lengths is not None:
            buf = memoryview(values).cast("B")  # type: ignore[arg-type]
            bounds = np.concatenate([[0], np.cumsum(np.asarray(lengths, np.int64))])
            if bounds[-1] > len(buf) or (np.diff(bounds) < 0).any():
                raise _core.InvalidConfigError(
                    f"lengths add up to {bounds[-1]} bytes, the buffer has {len(buf)}"
                )
            items = [bytes(buf[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)]
        elif isinstance(values, list):
            items = [bytes(v) for v in values]
        else:
            raise TypeError("values must be a list of bytes, or a bytes-like buffer with lengths")
        if not items:
            raise _core.InvalidConfigError("append_batch needs at least one value")
        p = (
            self._store.next_round_robin() % self._partitions
            if partition is None
            else check_partition(self, partition)
        )
        offset = self._store.produce_and_wait(
            self, p, [(v, None, None, timestamp_ms) for v in items]
        )
        return p, offset

    def start_offset(self, partition: int) -> int:
        """The first retained offset of ``partition``."""
        return self._store.watermarks(self._name, check_partition(self, partition))[0]

    def end_offset(self, partition: int) -> int:
        """The next offset to be written in ``partition``."""
        return self._store.watermarks(self._name, check_partition(self, partition))[1]

    def offset_for_timestamp(self, partition: int, timestamp_ms: int) -> int | None:
        """The first offset whose timestamp is at least ``timestamp_ms``, or None."""
        check_partition(self, partition)
        return self._store.offset_for_time(self._name, partition, timestamp_ms)

    def read_batch(
        self, partition: int = 0, offset: int | None = None, max_messages: int = 10_000
    ) -> KafkaRecordBatch:
        """Up to ``max_messages`` messages of ``partition`` from ``offset`` (committed only).

        Raises:
            OffsetOutOfRangeError: ``offset`` is below the start or above the end.
        """
        check_partition(self, partition)
        if offset is None:
            offset = self.start_offset(partition)
        return self._store.read_range(self, partition, offset, max_messages)

    def read(
        self,
        partition: int = 0,
        offset: int | None = None,
        *,
        timestamp_ms: int | None = None,
    ) -> Iterator[KafkaMessage]:
        """Messages of ``partition`` from ``offset`` (or ``timestamp_ms``) to the log's end."""
        check_partition(self, partition)
        if timestamp_ms is not None:
            if offset is not None:
                raise _core.InvalidConfigError("give offset or timestamp_ms, not both")
            found = self.offset_for_timestamp(partition, timestamp_ms)
            offset = self.end_offset(partition) if found is None else found
        elif offset is None:
            offset = self.start_offset(partition)
        end = self.end_offset(partition)
        batch = self._store.read_range(self, partition, offset, 10_000)
        return self._pages(partition, batch, end)

    def _pages(self, partition: int, batch: KafkaRecordBatch, end: int) -> Iterator[KafkaMessage]:
        # The range check happened eagerly in read(); iteration pages through until the end
        # offset seen when it began.
        while True:
            yield from batch
            if len(batch) == 0 or batch.next_offset >= end:
                return
            batch = self._store.read_range(self, partition, batch.next_offset, 10_000)

    def compact(self, **_options: Any) -> dict[str, int]:
        """Refused: the broker's log cleaner compacts ``cleanup_policy="compact"`` topics."""
        raise _core.InvalidConfigError(
            "topic.compact() is not available on Kafka: the broker's log cleaner compacts "
            "topics created with cleanup_policy='compact' by itself"
        )

    def dirty_ratio(self, partition: int | None = None) -> float:
        """Refused: the broker's log cleaner keeps the dirty ratio of a compacted topic."""
        raise _core.InvalidConfigError(
            "dirty_ratio() is not available on Kafka: the broker's log cleaner keeps it "
            "(and compacts cleanup_policy='compact' topics by itself)"
        )

    def latest(self) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` of the newest value of every key over all partitions.

        Tombstones and messages without a key are left out: ``dict(topic.latest())``. Reads
        every retained message up to the end offsets seen when it begins (the broker may
        not have compacted the topic yet); the pairs come once the read is done.
        """
        newest: dict[bytes, bytes | None] = {}
        for p in range(self._partitions):
            for msg in self.read(p):
                key = msg.key
                if key is not None:
                    newest[key] = msg.value
        return iter([(k, v) for k, v in newest.items() if v is not None])

    def __repr__(self) -> str:
        return f"KafkaTopic({self._name!r}, partitions={self._partitions})"


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be str, got {type(name).__name__}")
    if name.startswith("__"):
        raise _core.InvalidConfigError(
            f"topic names starting with '__' are reserved for internal topics: {name!r}"
        )


def _tidelog_settings(raw: Mapping[str, str | None]) -> dict[str, Any]:
    """The entries of ``raw`` (Kafka names) that have a tidelog name, numbers as ints."""
    config: dict[str, Any] = {}
    for key, value in raw.items():
        setting = _SETTINGS.get(key)
        if setting is not None:
            config[setting] = (
                int(value) if value is not None and value.lstrip("-").isdigit() else value
            )
    return config


def _topic_config(settings: Mapping[str, Any]) -> dict[str, str]:
    config = {}
    for setting, value in settings.items():
        kafka_name = _TOPIC_CONFIGS.get(setting)
        if kafka_name is None:
            raise _core.InvalidConfigError(
                f"unknown topic setting {setting!r} (known: {', '.join(sorted(_TOPIC_CONFIGS))})"
            )
        config[kafka_name] = "-1" if value is None else str(value)
    return config
