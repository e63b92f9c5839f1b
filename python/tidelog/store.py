"""Opening a store and managing its topics.

A store is a directory. Each topic is a subdirectory of partition logs; each partition is a
sequence of memory-mapped segments written by the native core. Several processes may open
the same store at once: appends to a partition are serialized across processes, and readers
in any process see new messages without reopening.
"""

from __future__ import annotations

import contextlib
import enum
import operator
import os
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast

from tidelog import _core
from tidelog._checks import storage_errors
from tidelog._core import Producer, Topic
from tidelog._fork import Born
from tidelog.consumer import Consumer, Delivery, Start
from tidelog.offsets import OFFSETS_TOPIC, OffsetStore
from tidelog.stats import GroupInfo, group_overview, store_stats
from tidelog.transaction import Transaction
from tidelog.workqueue import WorkQueue

if TYPE_CHECKING:
    from tidelog.kafka_server import KafkaServer
    from tidelog.stats import StoreStats

__all__ = ["Compression", "FsyncPolicy", "OnCorruption", "OnFull", "Store", "open"]

FsyncPolicy = Literal["never", "interval", "always"]
OnCorruption = Literal["raise", "quarantine"]
OnFull = Literal["block", "raise", "shed"]
Compression = Literal["none", "lz4", "zstd"]


class _Unset(enum.Enum):
    """A keyword that was not given (``None`` is a value: no limit)."""

    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "<stored value>"


_UNSET = _Unset.UNSET
Setting = int | str | None

# This process's own options default to the core's values (``_core.DEFAULTS``, the one place
# that holds them); the file-shaping settings default to the store's stored ones.
_DEFAULTS = _core.DEFAULTS
_SEGMENT_MS = cast("int | None", _DEFAULTS["segment_ms"])
_FSYNC = cast("FsyncPolicy", _DEFAULTS["fsync"])
_FSYNC_INTERVAL_MS = cast("int", _DEFAULTS["fsync_interval_ms"])
_PRODUCER_EXPIRY_MS = cast("int", _DEFAULTS["producer_expiry_ms"])
_ON_CORRUPTION = cast("OnCorruption", _DEFAULTS["on_corruption"])
_CLEANER_INTERVAL_MS = cast("int | None", _DEFAULTS["cleaner_interval_ms"])
_MIN_CLEANABLE_DIRTY_RATIO = cast("float", _DEFAULTS["min_cleanable_dirty_ratio"])
_CLEANER_BYTES_PER_SECOND = cast("int | None", _DEFAULTS["cleaner_bytes_per_second"])
_SPIN_US = cast("int", _core.WAIT_DEFAULTS["spin_us"])
_PRODUCER_DEFAULTS = _core.PRODUCER_DEFAULTS
_BUFFER_MESSAGES = cast("int", _PRODUCER_DEFAULTS["buffer_messages"])
_HIGH_WATERMARK = cast("float", _PRODUCER_DEFAULTS["high_watermark"])
_LOW_WATERMARK = cast("float", _PRODUCER_DEFAULTS["low_watermark"])
_ON_FULL = cast("OnFull", _PRODUCER_DEFAULTS["on_full"])
_MAX_BATCH_MESSAGES = cast("int", _PRODUCER_DEFAULTS["max_batch_messages"])
_LINGER_MS = cast("float", _PRODUCER_DEFAULTS["linger_ms"])


def _given(**settings: Setting | _Unset) -> dict[str, Setting]:
    return {k: v for k, v in settings.items() if v is not _UNSET}


class Store:
    """An open tidelog store. Create it with :func:`tidelog.open`.

    Use it as a context manager, or call :meth:`close` when done; closing twice is harmless.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int | _Unset = _UNSET,
        segment_ms: int | None = _SEGMENT_MS,
        retention_bytes: int | _Unset | None = _UNSET,
        retention_ms: int | _Unset | None = _UNSET,
        fsync: FsyncPolicy = _FSYNC,
        fsync_interval_ms: int = _FSYNC_INTERVAL_MS,
        max_message_bytes: int | _Unset = _UNSET,
        index_interval_bytes: int | _Unset = _UNSET,
        producer_expiry_ms: int = _PRODUCER_EXPIRY_MS,
        cleanup_policy: str | _Unset = _UNSET,
        delete_retention_ms: int | _Unset = _UNSET,
        compression: str | _Unset = _UNSET,
        on_corruption: OnCorruption = _ON_CORRUPTION,
        cleaner_interval_ms: int | None = _CLEANER_INTERVAL_MS,
        min_cleanable_dirty_ratio: float = _MIN_CLEANABLE_DIRTY_RATIO,
        cleaner_bytes_per_second: int | None = _CLEANER_BYTES_PER_SECOND,
    ) -> None:
        """Opens (creating if missing) the store in ``path``; see :func:`tidelog.open`."""
        self._born = Born()
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be str or os.PathLike, got {type(path).__name__}")
        _check_type(fsync, str, "fsync")
        for arg, value in (
            ("segment_bytes", segment_bytes),
            ("segment_ms", segment_ms),
            ("retention_bytes", retention_bytes),
            ("retention_ms", retention_ms),
            ("fsync_interval_ms", fsync_interval_ms),
            ("max_message_bytes", max_message_bytes),
            ("index_interval_bytes", index_interval_bytes),
            ("producer_expiry_ms", producer_expiry_ms),
        ):
            # Unset settings are the store's stored ones (checked by the core).
            if isinstance(value, _Unset):
                continue
            if value is not None or arg in ("segment_bytes", "fsync_interval_ms"):
                _check_setting(value, arg)
        self._core = _core.Store(
            path,
            segment_ms=segment_ms,
            fsync=fsync,
            fsync_interval_ms=fsync_interval_ms,
            producer_expiry_ms=producer_expiry_ms,
            settings=_given(
                segment_bytes=segment_bytes,
                retention_bytes=retention_bytes,
                retention_ms=retention_ms,
                max_message_bytes=max_message_bytes,
                index_interval_bytes=index_interval_bytes,
                cleanup_policy=cleanup_policy,
                delete_retention_ms=delete_retention_ms,
                compression=compression,
            ),
            on_corruption=on_corruption,
            cleaner_interval_ms=cleaner_interval_ms,
            min_cleanable_dirty_ratio=min_cleanable_dirty_ratio,
            cleaner_bytes_per_second=cleaner_bytes_per_second,
        )
        try:
            # Damage that recovery must not guess about is raised here, by tidelog.open,
            # not at a topic's first use (as a Kafka broker recovers every log at start-up).
            self._core.open_every_topic()
        except BaseException:
            # The open's own error is the one to report; closing what it opened is best
            # effort (the next open recovers whatever a failed close leaves).
            with contextlib.suppress(Exception):
                self._core.close()
            raise
        # Closed with the store; weak so an abandoned producer can still be collected.
        self._producers: weakref.WeakSet[Producer] = weakref.WeakSet()
        self._consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        self._work_queues: weakref.WeakSet[WorkQueue] = weakref.WeakSet()
        self._offsets: OffsetStore | None = None

    @property
    def path(self) -> str:
        """The store's directory."""
        return os.fspath(self._core.path)

    @property
    def fsync(self) -> FsyncPolicy:
        """The store's fsync policy."""
        return self._core.fsync  # type: ignore[return-value]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._core.closed

    @property
    def native(self) -> _core.Store:
        """The native store (``tidelog._core.Store``) this one wraps.

        Internal: for tidelog's own modules (consumers, work queues, the producer
        registry); its methods are not part of the public API.
        """
        return self._core

    @property
    def settings(self) -> dict[str, Setting]:
        """The store's stored settings: the defaults for new topics."""
        return self._core.settings

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        exist_ok: bool = False,
        segment_bytes: int | _Unset = _UNSET,
        index_interval_bytes: int | _Unset = _UNSET,
        max_message_bytes: int | _Unset = _UNSET,
        retention_bytes: int | _Unset | None = _UNSET,
        retention_ms: int | _Unset | None = _UNSET,
        cleanup_policy: str | _Unset = _UNSET,
        delete_retention_ms: int | _Unset = _UNSET,
        compression: str | _Unset = _UNSET,
    ) -> Topic:
        """Creates a topic.

        Settings not given are the store's (see :attr:`settings`); they are stored with the
        topic, shared by every process, and changed with :meth:`alter_topic`.

        Args:
            name: 1-249 characters from ``[A-Za-z0-9._-]``, not starting with a dot
                (names starting with ``__`` are reserved for the store's internal topics).
            partitions: Number of partitions, fixed for the topic's life.
            exist_ok: Return the existing topic (with its own settings) instead of raising
                when it exists with the same number of partitions.
            segment_bytes: Capacity of a segment file.
            index_interval_bytes: Bytes of batches between two sparse index entries.
            max_message_bytes: Largest message (value, key and headers); by default the
                store's, at most half a segment.
            retention_bytes: Delete a partition's oldest segments beyond this size (None:
                no limit).
            retention_ms: Delete segments whose newest message is older than this (None: no
                limit).
            cleanup_policy: ``"delete"`` (``"compact"`` and ``"compact,delete"`` are not
                supported yet and raise InvalidConfigError).
            delete_retention_ms: How long compaction keeps tombstones.
            compression: How new batches are stored: ``"none"``, ``"lz4"`` (fast) or
                ``"zstd"`` (smaller). Batches are compressed whole, as in Kafka; readers
                decompress transparently. A producer may override it for its batches.

        Returns:
            The new (or existing) topic. Creation is atomic: other processes see the topic
            complete, with its settings, or not at all.

        Raises:
            TopicExistsError: The topic exists (and ``exist_ok`` is false, or its partition
                count differs).
            InvalidConfigError: A bad or reserved name, a bad partition count or setting.
        """
        self._born.check()
        _check_type(name, str, "name")
        _check_type(partitions, int, "partitions")
        settings = _given(
            segment_bytes=segment_bytes,
            index_interval_bytes=index_interval_bytes,
            max_message_bytes=max_message_bytes,
            retention_bytes=retention_bytes,
            retention_ms=retention_ms,
            cleanup_policy=cleanup_policy,
            delete_retention_ms=delete_retention_ms,
            compression=compression,
        )
        return self._core.create_topic(name, partitions, exist_ok=exist_ok, settings=settings)

    def alter_topic(self, name: str, **settings: Setting) -> dict[str, Setting]:
        """Changes a topic's stored settings, for every process at once.

        The new settings are durable when this returns, and the next append, roll or
        retention pass in any process uses them (no reopening). ``segment_bytes`` and
        ``index_interval_bytes`` shape the segments created afterwards; existing segments
        keep the geometry they were created with.

        Args:
            name: The topic.
            **settings: Settings to change, as for :meth:`create_topic` (``None`` removes a
                retention limit).

        Returns:
            The topic's settings after the change.

        Raises:
            TopicNotFoundError: No topic has this name.
            InvalidConfigError: An unknown or bad setting (nothing is changed), or a
                reserved ``__`` name.
        """
        _check_type(name, str, "name")
        return self._core.alter_topic(name, settings)

    def topic(self, name: str) -> Topic:
        """Returns an existing topic.

        Raises:
            TopicNotFoundError: No topic has this name.
        """
        self._born.check()
        _check_type(name, str, "name")
        return self._core.topic(name)

    def topics(self, *, internal: bool = False) -> list[str]:
        """Returns the names of all topics, sorted.

        Args:
            internal: Also list tidelog's own topics (names starting with ``__``, such as
                ``__consumer_offsets``).

        Raises:
            StoreClosedError: The store is closed.
        """
        self._born.check()
        names = self._core.topics()
        return names if internal else [n for n in names if not n.startswith(_core.INTERNAL_PREFIX)]

    @storage_errors
    def delete_topic(self, name: str) -> None:
        """Deletes a topic and all its messages, with its consumer groups and work queues.

        From then on every process's calls on the topic raise
        :class:`TopicNotFoundError`; a topic created again under the name is a new topic.

        Raises:
            TopicNotFoundError: No topic has this name.
            InvalidConfigError: The name is reserved for internal topics (``__...``).
        """
        self._born.check()
        _check_type(name, str, "name")
        # The core removes the topic's group and work-queue state in the same operation.
        incarnation = self._core.delete_topic(name)
        # Commits live in an internal log: a record there forgets them. They name the
        # deleted incarnation, so if this process dies first they still never apply to a
        # topic created again; the record only keeps them from being listed.
        if OFFSETS_TOPIC in self._core.topics():
            self._offset_store().forget_topic(name, incarnation)

    @storage_errors
    def stats(self) -> StoreStats:
        """Returns a snapshot of the store for monitoring.

        Returns:
            A dict with these keys:

            - ``path``: the store's directory.
            - ``topics``: topic name -> ``{"partitions": {partition: {...}}, "messages",
              "size_bytes", "segments"}``, where each partition has ``start_offset``,
              ``end_offset``, ``messages`` (retained: end minus start), ``size_bytes`` and
              ``segments``; the other three keys are the topic's totals.
            - ``groups``: consumer group name -> its members, committed offsets and lag per
              partition. Empty until consumer groups exist.
            - ``work_queues``: work queue (group) name -> topic -> its backlog, in-flight,
              acknowledged, dead-lettered, archived and skipped counts, per partition and in
              total (see :func:`tidelog.stats.work_queue_stats`).
            - ``producers``: producer name -> its ``stats()`` (buffered, dropped, ...).
              Empty until producers exist.
            - ``recovery``: what recovery ever removed from a partition, oldest first: dicts
              with ``topic``, ``partition``, ``kind`` (``"torn_tail"``: truncated;
              ``"quarantined"``: damage moved aside; ``"unsynced"``: what a machine restart
              lost of the data written since the last sync, cut), ``time_ms``,
              ``segment_base``, ``position``, ``bytes``, ``first_offset`` and ``end_offset``
              (the offsets removed, as far as the removed bytes tell) and ``path`` (the
              quarantine file, or None).

            Values are read one after another without stopping writers, so concurrent
            appends may make them slightly inconsistent with each other.
        """
        self._born.check()
        return store_stats(self, self._offset_store, self._producers)

    @storage_errors
    def metrics(self) -> dict[str, Any]:
        """Returns the store's counters and gauges for monitoring (see :mod:`tidelog.metrics`).

        Per topic and partition: messages, bytes, start and end offsets, segments,
        compaction dirty ratio and compactions; per consumer group: lag in messages and in
        seconds (now minus the timestamp of the oldest unconsumed message); per producer of
        this process: sent, written, failed, dropped by priority, blocked seconds and
        backpressure episodes; per work queue: backlog, in flight, redelivered,
        dead-lettered; and what recovery removed. Read from the files every process shares,
        so it describes a store that other processes are writing; it costs a few
        microseconds per partition and nothing on the append path.

        Returns:
            The snapshot described in :func:`tidelog.metrics.collect`.
        """
        from tidelog.metrics import collect

        self._born.check()
        return collect(self, self._offset_store, self._producers)

    def producer(
        self,
        *,
        name: str | None = None,
        idempotent: bool = True,
        buffer_messages: int = _BUFFER_MESSAGES,
        high_watermark: float = _HIGH_WATERMARK,
        low_watermark: float = _LOW_WATERMARK,
        on_full: OnFull = _ON_FULL,
        block_timeout: float | None = None,
        max_batch_messages: int = _MAX_BATCH_MESSAGES,
        linger_ms: float = _LINGER_MS,
        max_lag: int | None = None,
        compression: Compression | None = None,
    ) -> Producer:
        """Creates a buffered producer.

        ``producer.send(topic, value, key=..., headers=..., partition=..., priority=...)``
        puts the message into a bounded lock-free buffer and returns; a native background
        thread appends buffered messages in batches (one CRC-checked batch, and with
        ``fsync="always"`` one fdatasync, per partition per round: group commit).
        ``flush(timeout)`` waits for everything sent so far. Writer errors are raised by the
        next ``send`` or ``flush``. Closing (or leaving the ``with`` block) flushes.

        Args:
            name: With ``idempotent``, the producer's durable identity: every open of the
                same name gets the same producer id with the next epoch, fences older
                instances (their next write raises :class:`ProducerFencedError`) and
                finishes the transaction a crashed instance left open. Needed for
                :meth:`transaction`. Without a name the identity lasts one lifetime.
            idempotent: Stamp every batch with the producer id, epoch and per-partition
                sequence numbers, so the store writes a retried batch only once (the
                default, as in Kafka). ``False`` writes plain batches.
            buffer_messages: Capacity of the buffer, in messages.
            high_watermark: Occupancy fraction at which backpressure starts.
            low_watermark: Occupancy fraction at which backpressure ends (hysteresis).
            on_full: Under pressure, ``"block"`` waits until the buffer drains to the low
                watermark (raising :class:`BackpressureError` after ``block_timeout``
                seconds if given), ``"raise"`` raises :class:`BackpressureError`, and
                ``"shed"`` drops the lowest-priority message first (possibly the one being
                sent, then ``send`` returns False), counting drops in ``stats()``.
            block_timeout: Longest wait of a blocked ``send``, in seconds (None: no limit).
            max_batch_messages: Most messages the writer appends as one batch.
            linger_ms: How long the writer waits for more messages while under half a
                batch is buffered, like Kafka's ``linger.ms`` (bigger batches, fewer
                wake-ups); ``flush()`` ends the wait at once, and 0 writes every message as
                soon as possible.
            max_lag: Also apply pressure (as ``on_full`` says) while the slowest consumer
                group of a topic this producer writes to is more than ``max_lag`` messages
                behind in a partition, until it is back under ``max_lag * low_watermark``.
                It is a bound: the native writer never writes a partition more than
                ``max_lag + buffer_messages`` messages past the slowest group's committed
                offset (read from the commits of every process); messages past it wait in
                the buffer, so ``flush()`` and ``close()`` wait for the group to commit.
            compression: The codec of this producer's batches, over each topic's own
                ``compression`` setting: ``"none"``, ``"lz4"`` or ``"zstd"``. Batches are
                compressed whole, by the writer thread; readers decompress transparently.
                None (the default) keeps each topic's setting.

        Returns:
            The producer, also a context manager.

        Raises:
            StoreClosedError: The store is closed.
            InvalidConfigError: A bad option.
            TypeError: An option of the wrong type (the message names it).
        """
        self._born.check()
        if max_lag is not None:
            if isinstance(max_lag, bool) or not isinstance(max_lag, int):
                raise TypeError(f"max_lag must be int, got {type(max_lag).__name__}")
            if not 1 <= max_lag < 2**63:
                raise _core.InvalidConfigError(
                    f"max_lag must be a positive int below 2**63, got {max_lag!r}"
                )
        producer = Producer(
            self._core,
            name=name,
            idempotent=idempotent,
            buffer_messages=buffer_messages,
            high_watermark=high_watermark,
            low_watermark=low_watermark,
            on_full=on_full,
            block_timeout=block_timeout,
            max_batch_messages=max_batch_messages,
            linger_ms=linger_ms,
            max_lag=max_lag,
            compression=compression,
        )
        self._producers.add(producer)
        return producer

    def _offset_store(self) -> OffsetStore:
        if self._offsets is None:
            self._offsets = OffsetStore(self._core)
        return self._offsets

    @storage_errors
    def consumer(
        self,
        topic: str,
        *,
        group: str,
        delivery: Delivery = "at-least-once",
        start: Start = "earliest",
        max_poll_messages: int = 500,
        lease_seconds: float = 3.0,
        on_assign: Callable[[list[int]], None] | None = None,
        on_revoke: Callable[[list[int]], None] | None = None,
        auto_offset_reset: Start | None = None,
        spin_us: int = _SPIN_US,
    ) -> Consumer:
        """Joins consumer group ``group`` on ``topic`` and returns the member.

        Members of one group, in any threads or processes, split the topic's partitions:
        each partition is owned by exactly one live member. A member that closes leaves at
        once; one that stops heartbeating (it dies, or does not poll for ``lease_seconds``)
        loses its partitions to the others. Committed offsets are durable (an internal log
        topic) and shared by the whole group. A member that missed rebalances between two
        of its polls (another member joined and left, or took over while its lease was
        gone) takes all its partitions as revoked and assigned again, resuming from the
        group's commits: they may have been another member's meanwhile.

        Args:
            topic: The topic to consume.
            group: The group's name.
            delivery: ``"at-least-once"`` commits a message's offset once the application
                moved past it (the next ``poll``, the next iteration, or ``close``), or on
                ``commit()``; ``"at-most-once"`` commits before handing messages out
                (``close`` moves the commit back to the first message fetched and not
                handed out, even after a rebalance it has not seen, unless the new owner
                of the partition fetched from it already; a member that crashes loses
                those);
                ``"exactly-once"`` commits only through :meth:`transaction`, atomically with
                the outputs, and needs one per step (taking more messages before the
                previous ones were committed raises :class:`InvalidConfigError`).
            start: Where a partition with no committed offset starts: ``"earliest"`` or
                ``"latest"``.
            max_poll_messages: Most messages one ``poll`` (or one fetch while iterating)
                hands out: a slow consumer bounds its in-flight work with it.
            lease_seconds: How long a silent member keeps its partitions.
            on_assign: Called with the partitions this member gains.
            on_revoke: Called with the partitions this member loses.
            auto_offset_reset: What to do when the group's committed offset of a partition
                points into messages that recovery removed (see ``on_corruption`` of
                :func:`tidelog.open`; the offsets there now belong, or will belong, to other
                messages). ``None`` (default): ``poll`` raises
                :class:`OffsetOutOfRangeError` for that partition until :meth:`Consumer.seek`
                moves it; ``"earliest"`` or ``"latest"``: continue from the log's start or
                end.
            spin_us: Microseconds a member with nothing to take spins on the topic's
                doorbell (a shared word every append moves) before sleeping on it, 0 to
                10,000 (default 10). A message appended (in any process) while it
                spins is seen within a few microseconds instead of after a futex wake-up
                (~10 µs); an idle member spins at most once per wait, so it still costs no
                CPU, and appends never pay a wake-up for spinners. 0: sleep at once.

        Returns:
            The consumer, also a context manager and an iterator of messages.
        """
        self._born.check()
        _check_type(topic, str, "topic")
        consumer = Consumer(
            self,
            self._offset_store(),
            topic,
            group,
            delivery=delivery,
            start=start,
            max_poll_messages=max_poll_messages,
            lease_seconds=lease_seconds,
            on_assign=on_assign,
            on_revoke=on_revoke,
            auto_offset_reset=auto_offset_reset,
            spin_us=spin_us,
        )
        self._consumers.add(consumer)
        return consumer

    @storage_errors
    def work_queue(
        self,
        topic: str,
        *,
        group: str,
        lock_timeout: float = 30.0,
        max_deliveries: int = 5,
        dead_letter: str | None = None,
        prefetch: int = 2048,
        spin_us: int = _SPIN_US,
    ) -> WorkQueue:
        """Joins work queue ``group`` on ``topic`` and returns the member.

        Members of one queue, in any threads or processes, take the topic's messages
        (``for job in queue``, ``queue.acquire(timeout)`` or ``queue.acquire_many(n)``); a
        message is held by at most one member until it is acked, released, rejected, or its
        lock expires. The queue's state (acknowledged-below offset, finished runs, locks,
        delivery counts) is a snapshot plus a journal of range changes in
        ``<store>/work_queues/<topic>/``, compacted as it grows (see
        :mod:`tidelog.queue_journal`); when an acknowledgement is durable is explained in
        :meth:`tidelog.WorkQueue.ack`. A work queue and consumer groups read the same topic
        independently. Deleting the topic deletes its queues' state.

        Args:
            topic: The topic whose messages are the work.
            group: The queue's name (its members share the work and the state).
            lock_timeout: Seconds a member holds an acquired message before it becomes
                available to others again (renew with ``queue.extend``).
            max_deliveries: Most times a message is handed out; once exhausted (or on
                ``reject``) it goes to ``dead_letter``.
            dead_letter: Topic (created on first use) receiving rejected and exhausted
                messages, with headers ``tidelog.dead_letter.reason`` (``rejected`` or
                ``max_deliveries``), ``tidelog.dead_letter.delivery_count`` and the source
                ``topic``, ``partition`` and ``offset``. None: archive them (never delivered
                again) and count them in ``queue.stats()["archived"]``.
            prefetch: Most jobs iteration acquires at once (it adapts the batch to about
                50 ms of work); 1 hands out exactly one job per acquisition.
            spin_us: Microseconds a member with nothing to take spins on the topic's
                doorbell (a shared word every append moves) before sleeping on it, 0 to
                10,000 (default 10). A message appended (in any process) while it
                spins is seen within a few microseconds instead of after a futex wake-up
                (~10 µs); an idle member spins at most once per wait, so it still costs no
                CPU, and appends never pay a wake-up for spinners. 0: sleep at once.

        Returns:
            The :class:`tidelog.WorkQueue`, also a context manager and an iterator of
            :class:`tidelog.workqueue.Job` (the message with its ``delivery_count``).
        """
        self._born.check()
        queue = WorkQueue(
            self,
            topic,
            group,
            lock_timeout=lock_timeout,
            max_deliveries=max_deliveries,
            dead_letter=dead_letter,
            prefetch=prefetch,
            spin_us=spin_us,
        )
        self._work_queues.add(queue)
        return queue

    def serve_kafka(self, address: str = "127.0.0.1:9092", **options: Any) -> KafkaServer:
        """Serves this store to Kafka clients over the Kafka wire protocol.

        Unmodified Kafka clients (confluent-kafka, the Java client, ...) connected to
        ``address`` create and delete topics, produce, fetch and list offsets on this store,
        next to every process that opens the directory. The server runs on a background
        thread until :meth:`KafkaServer.close` (or the end of a ``with`` block).

        Args:
            address: ``host:port`` to listen on; loopback by default. Port 0 picks a free
                port: read the chosen one from the server's ``address``.
            **options: ``max_request_bytes`` (larger requests disconnect the client),
                ``auto_create_topics`` (create a topic a client asks metadata for; on, as in
                Kafka).

        Returns:
            The running server.

        Raises:
            InvalidConfigError: ``address`` is not ``host:port``.
            OSError: The address cannot be bound.
        """
        self._born.check()
        from tidelog.kafka_server import KafkaServer

        return KafkaServer(self, address, **options)

    def transaction(self, producer: Producer, consumer: Consumer | None = None) -> Transaction:
        """Begins a transaction: outputs and input offsets committed as one unit.

        Messages sent through the transaction (``tx.send(...)``, or ``producer.send`` while
        it is open) and, with ``consumer``, the position after every message the consumer
        handed out are committed together when the ``with`` block ends normally: readers
        then see all the outputs and the group resumes after those inputs. An exception in
        the block aborts it: no output is ever visible and the consumer rewinds to its
        committed offsets. A crash mid-transaction leaves nothing visible and nothing
        committed; the producer's next instance (same ``name``) aborts it when it opens.

        Args:
            producer: A named, idempotent producer (``store.producer(name=...)``).
            consumer: A consumer opened with ``delivery="exactly-once"``, whose offsets
                this transaction commits.

        Returns:
            The open :class:`tidelog.transaction.Transaction`, a context manager.

        Raises:
            InvalidConfigError: An unnamed, non-idempotent or shedding producer, a
                transaction already open on it, or a consumer not in exactly-once mode.
            ProducerFencedError: A newer instance of the producer has opened.
            StoreClosedError: The store (or the producer) is closed.
        """
        self._born.check()
        if self.closed:
            raise _core.StoreClosedError("the store is closed")
        return Transaction(producer, consumer)

    def abort_orphaned_transactions(self) -> list[str]:
        """Finishes the open transactions of named producers that died and never reopened.

        A crashed producer's transaction holds back every reader of its partitions until an
        instance of the same ``name`` opens again (which aborts it). This does the same
        without waiting, but only for names no live instance holds, in any process: it
        fences the dead epoch and aborts the transaction (or commits it, if the commit had
        been decided). Consumers held back by an open transaction call it by themselves
        about once a second. A Kafka client's transaction (served by :meth:`serve_kafka`)
        is left open until its ``transaction.timeout.ms`` has passed: the client may still
        commit it through the server's next run.

        Returns:
            The names of the producers whose transactions were finished.
        """
        self._born.check()
        return self._core.abort_orphaned_transactions()

    @storage_errors
    def groups(self) -> dict[str, dict[str, GroupInfo]]:
        """Every consumer group: per topic, its members, committed offsets and lag.

        Returns:
            ``{group: {topic: {"generation", "members": {member: [partitions]},
            "committed": {partition: offset}, "lag": {partition: messages}}}}``.
        """
        self._born.check()
        return group_overview(self, self._offset_store())

    def sync(self) -> None:
        """Forces every message appended so far to disk (fdatasync)."""
        self._born.check()
        self._core.sync()

    def close(self) -> None:
        """Closes the store: flushes what the fsync policy requires and releases the files.

        Producers made from this store are flushed and closed first. Topics obtained from
        this store raise :class:`StoreClosedError` afterwards, also those still referenced;
        the pre-allocated end of each partition's files is trimmed if no other process has
        it open.

        In a child process forked after the store was opened (``os.fork()``,
        ``multiprocessing`` with the fork start method) it does nothing but mark the store
        closed there: the files, locks and members belong to the parent, which is
        unaffected. The child must open the store again to use it.
        """
        if self._born.inherited:
            self._core.close()  # marks it closed; touches no file, lock or member
            return
        errors: list[BaseException] = []
        members: list[WorkQueue | Consumer | Producer] = [
            *self._work_queues,
            *self._consumers,
            *self._producers,
        ]
        for member in members:
            try:
                member.close()
            except Exception as exc:  # close every consumer and producer before reporting
                errors.append(exc)
        self._core.close()
        if errors:
            raise errors[0]

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<tidelog.Store {self.path!r} ({state})>"


def open(
    path: str | os.PathLike[str],
    *,
    segment_bytes: int | _Unset = _UNSET,
    segment_ms: int | None = _SEGMENT_MS,
    retention_bytes: int | _Unset | None = _UNSET,
    retention_ms: int | _Unset | None = _UNSET,
    fsync: FsyncPolicy = _FSYNC,
    fsync_interval_ms: int = _FSYNC_INTERVAL_MS,
    max_message_bytes: int | _Unset = _UNSET,
    index_interval_bytes: int | _Unset = _UNSET,
    producer_expiry_ms: int = _PRODUCER_EXPIRY_MS,
    cleanup_policy: str | _Unset = _UNSET,
    delete_retention_ms: int | _Unset = _UNSET,
    compression: str | _Unset = _UNSET,
    on_corruption: OnCorruption = _ON_CORRUPTION,
    cleaner_interval_ms: int | None = _CLEANER_INTERVAL_MS,
    min_cleanable_dirty_ratio: float = _MIN_CLEANABLE_DIRTY_RATIO,
    cleaner_bytes_per_second: int | None = _CLEANER_BYTES_PER_SECOND,
) -> Store:
    """Opens the store in ``path``, creating the directory if it is missing.

    Opening checks the end of every partition's active segment, whatever the previous
    shutdown was. A torn tail (an incomplete or damaged batch with
    nothing valid after it, as a crash leaves) is truncated and counted in
    ``stats()["recovery"]``. Damage followed by valid batches is never truncated silently:
    see ``on_corruption``.

    The settings that shape files (``segment_bytes``, ``index_interval_bytes``,
    ``max_message_bytes``, ``retention_bytes``, ``retention_ms``, ``cleanup_policy``,
    ``delete_retention_ms``, ``compression``) are stored with the store when it is created
    and are the defaults for new topics; every process uses the stored values. Opening an
    existing store with one that differs raises InvalidConfigError: change a topic's with
    :meth:`Store.alter_topic` or ``tidelog config``. ``fsync``, ``fsync_interval_ms``,
    ``segment_ms`` and ``producer_expiry_ms`` are this process's own.

    Args:
        path: The store's directory. It must be empty, missing, or a tidelog store.
        segment_bytes: Capacity of one segment file (default 64 MiB).
        segment_ms: Roll the active segment once it is this old (None: never by age).
        retention_bytes: Delete the oldest segments of a partition beyond this size
            (default: no limit).
        retention_ms: Delete segments whose newest message is older than this (default:
            no limit).
        fsync: ``"never"`` (page cache only: survives a process crash, not a power loss),
            ``"interval"`` (background fsync every ``fsync_interval_ms``) or ``"always"``
            (every append returns only after fdatasync).
        fsync_interval_ms: Period of the background fsync for ``fsync="interval"``.
        max_message_bytes: Largest message (value, key and headers) accepted; by default
            1 MiB, or half a segment when ``segment_bytes`` is under 2 MiB.
        index_interval_bytes: Bytes of batches between two sparse index entries (default
            4096).
        cleanup_policy: ``"delete"`` (default: retention removes old segments),
            ``"compact"`` (compaction keeps the newest message of each key; every message
            needs a key) or ``"compact,delete"`` (both).
        delete_retention_ms: How long compaction keeps tombstones (default one day).
        compression: The codec of new topics' batches: ``"none"`` (default), ``"lz4"``
            or ``"zstd"``.
        producer_expiry_ms: A partition forgets an idempotent producer that wrote nothing
            to it for this long (its sequence numbers and epoch), as Kafka's
            ``producer.id.expiration.ms``.
        on_corruption: ``"raise"`` (default): opening a store with a partition whose active
            segment holds damage followed by valid batches raises
            :class:`CorruptRecordError` naming the file and position, and changes nothing.
            ``"quarantine"``: the damaged part and everything after it are moved intact
            into ``<partition>/quarantine/`` (copied and synced before the log is cut),
            what was removed is recorded, and the partition opens;
            ``stats()["recovery"]`` and ``tidelog verify`` report it from then on, and
            consumer groups committed past the cut get :class:`OffsetOutOfRangeError` (see
            ``auto_offset_reset``).
        cleaner_interval_ms: How often this process's background cleaner looks at the
            compacted topics it has open (None: no background cleaner;
            ``topic.compact()`` still works).
        min_cleanable_dirty_ratio: The cleaner compacts a partition once this share of
            its closed segments' bytes was not compacted yet (Kafka's
            ``min.cleanable.dirty.ratio``).
        cleaner_bytes_per_second: The cleaner's budget of bytes read plus written per
            second (None: no limit).

    Returns:
        The open store.

    Raises:
        InvalidConfigError: A bad option, a file-shaping option that differs from the
            stored one, or a directory holding something else.
        CorruptRecordError: A segment is damaged in a way recovery must not guess about.
        StorageError: The operating system refused (``path`` is a file, a read-only or full
            disk); also an :class:`OSError` with ``errno`` and ``filename`` set.
        TypeError: An option of the wrong type (the message names it).
    """
    if isinstance(path, str) and path.startswith("kafka://"):
        # The same API on a Kafka cluster: tidelog.kafka (needs the `kafka` extra). The
        # keywords shape local files; a cluster's settings are the broker's and the topics'.
        given = locals()
        changed = sorted(k for k, v in (open.__kwdefaults__ or {}).items() if given[k] != v)
        if changed:
            raise _core.InvalidConfigError(
                f"{', '.join(changed)}: not settings of a kafka:// store (give client options "
                "in the URL, kafka://host:port?client.id=app, and topic settings to "
                "create_topic)"
            )
        from tidelog.kafka import open_kafka

        return open_kafka(path)  # type: ignore[return-value]
    return Store(
        path,
        segment_bytes=segment_bytes,
        segment_ms=segment_ms,
        retention_bytes=retention_bytes,
        retention_ms=retention_ms,
        fsync=fsync,
        fsync_interval_ms=fsync_interval_ms,
        max_message_bytes=max_message_bytes,
        index_interval_bytes=index_interval_bytes,
        producer_expiry_ms=producer_expiry_ms,
        cleanup_policy=cleanup_policy,
        delete_retention_ms=delete_retention_ms,
        compression=compression,
        on_corruption=on_corruption,
        cleaner_interval_ms=cleaner_interval_ms,
        min_cleanable_dirty_ratio=min_cleanable_dirty_ratio,
        cleaner_bytes_per_second=cleaner_bytes_per_second,
    )


def _check_setting(value: object, arg: str) -> None:
    """A store setting must be an int the engine can hold (its own checks say the rest)."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{arg} must be int, got {type(value).__name__}")
    if not -(2**63) <= operator.index(value) < 2**63:  # type: ignore[arg-type]
        raise _core.InvalidConfigError(f"{arg} must be a positive integer below 2**63, got {value}")


def _check_type(value: object, expected: type, arg: str) -> None:
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise TypeError(f"{arg} must be {expected.__name__}, got {type(value).__name__}")
