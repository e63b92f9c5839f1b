"""``tidelog.aio.open("kafka://...")``: the async API on a Kafka cluster.

The same coroutines as the local async store, driving the synchronous Kafka backend
(:mod:`tidelog.kafka`). librdkafka waits inside its own calls (a consumer's ``consume``, a
producer's ``flush``, an admin request), so every call that waits runs in a worker thread
and the task awaits it: the loop never blocks. An idle consumer's thread sleeps inside
librdkafka until a message comes or a one-second wait ends (librdkafka's queues have no
file descriptor that confluent-kafka exposes for the loop to watch).

Cancelling a waiting call leaves nothing half done: the thread's call finishes whole, and
what it fetched (messages, a job) is handed out by the next call instead of being lost; a
blocked ``send`` is cancelled while it waits for room, before anything was queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from tidelog import _core
from tidelog.aio._closing import AsyncClosing
from tidelog.aio._making import Making
from tidelog.aio._member import MemberViews

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

    from tidelog.kafka.consumer import KafkaConsumer
    from tidelog.kafka.messages import KafkaMessage
    from tidelog.kafka.producer import KafkaProducer
    from tidelog.kafka.store import KafkaStore, KafkaTopic
    from tidelog.kafka.transaction import KafkaTransaction
    from tidelog.kafka.workqueue import KafkaJob, KafkaWorkQueue

__all__ = [
    "KafkaAioConsumer",
    "KafkaAioProducer",
    "KafkaAioStore",
    "KafkaAioTransaction",
    "KafkaAioWorkQueue",
    "KafkaSendResult",
]

T = TypeVar("T")
S = TypeVar("S", bound="KafkaProducer | KafkaConsumer | KafkaWorkQueue")
Headers = Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None
#: Longest single wait of a thread when the caller waits without a limit: the thread then
#: checks whether the member was closed.
_WAIT_SLICE = 1.0


async def _offload(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs a call that waits (network I/O inside librdkafka) in a worker thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(call, *args, **kwargs))


class _Carried:
    """One waiting call whose result outlives a cancelled caller.

    The first caller starts the call in a thread; if it is cancelled, the call keeps running
    and the next caller takes its result, so nothing fetched is dropped.
    """

    def __init__(self) -> None:
        self._future: asyncio.Future[Any] | None = None

    async def take(self, call: Callable[[], T]) -> T:
        if self._future is None:
            loop = asyncio.get_running_loop()
            self._future = loop.run_in_executor(None, call)
        try:
            # Cancelling the caller leaves the thread's future (and its result) for the next.
            result: T = await asyncio.shield(self._future)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._future = None
            raise
        self._future = None
        return result

    def pending(self) -> bool:
        return self._future is not None

    async def ended(self) -> None:
        """Waits until the running call ended, leaving its result for the next caller."""
        if self._future is not None:
            await asyncio.wait({self._future})


class _Delivery:
    """Where Kafka stored one message (filled by its delivery report)."""

    __slots__ = ("error", "offset", "partition")

    def __init__(self) -> None:
        self.partition: int | None = None
        self.offset: int | None = None
        self.error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.error = err
        else:
            self.partition, self.offset = msg.partition(), msg.offset()


class KafkaSendResult:
    """What ``await producer.send(...)`` returns on Kafka: ``partition, offset = await it``.

    ``accepted`` is False when ``on_full="shed"`` dropped the message (awaiting it then
    raises :class:`BackpressureError`, as on the local backend). Awaiting waits until Kafka
    acknowledged every message the producer sent so far (this one among them) and gives
    where Kafka stored this one.
    """

    __slots__ = ("_delivery", "_producer", "accepted")

    def __init__(
        self, producer: KafkaAioProducer, accepted: bool, delivery: _Delivery | None = None
    ) -> None:
        self._producer = producer
        self.accepted = accepted
        self._delivery = delivery

    def __await__(self) -> Any:
        return self._written().__await__()

    async def _written(self) -> tuple[int, int]:
        delivery = self._delivery
        if not self.accepted or delivery is None:
            raise _core.BackpressureError('the message was dropped (on_full="shed")')
        await self._producer.flush()
        if delivery.error is not None:
            from tidelog.kafka._errors import error_for

            raise error_for(delivery.error, "delivering a message")
        if delivery.partition is None or delivery.offset is None:
            raise _core.TidelogError("Kafka has not acknowledged the message (flush timed out)")
        return delivery.partition, delivery.offset


class KafkaAioProducer(AsyncClosing):
    """An async producer on Kafka (see :meth:`tidelog.aio.Store.producer`)."""

    def __init__(self, native: KafkaProducer, block_timeout: float | None) -> None:
        self._native = native
        self._block_timeout = block_timeout

    @property
    def native(self) -> KafkaProducer:
        """The synchronous Kafka producer underneath."""
        return self._native

    @property
    def name(self) -> str | None:
        """The name (``transactional.id``), or None."""
        return self._native.name

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._native.closed

    def stats(self) -> dict[str, Any]:
        """Counters, as :meth:`tidelog.Producer.stats`."""
        return self._native.stats()

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        priority: int = 0,
    ) -> KafkaSendResult:
        """Queues a message, waiting (in a thread, not the loop) for room under pressure.

        Raises:
            BackpressureError: Under pressure with ``on_full="raise"``, or after
                ``block_timeout`` seconds of waiting with ``on_full="block"``.
        """
        native = self._native
        # Only the wait runs in the thread: a cancelled send queued nothing.
        if native.would_block() and not await _offload(native.wait_for_room, self._block_timeout):
            raise _core.BackpressureError(
                f"send blocked for {self._block_timeout} s under backpressure"
            )
        # max_lag: the check (a round trip, and a wait under pressure) runs in the thread
        # too and leaves its credit for the send below.
        if native.lag_check_needed(topic) and not await _offload(
            native.reserve_lag_room, topic, priority
        ):
            return KafkaSendResult(self, False)  # shed
        delivery = _Delivery()
        accepted = native.send(
            topic,
            value,
            key=key,
            headers=headers,
            partition=partition,
            priority=priority,
            on_delivery=delivery,
        )
        return KafkaSendResult(self, accepted, delivery)

    def send_nowait(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        priority: int = 0,
    ) -> KafkaSendResult:
        """:meth:`send` without waiting: raises :class:`BackpressureError` instead."""
        if self._native.would_block() or self._native.lag_check_needed(topic):
            raise _core.BackpressureError(
                "producer buffer above its high watermark, or max_lag needs a check of the "
                "consumer groups' lag: await send() to wait for room"
            )
        delivery = _Delivery()
        accepted = self._native.send(
            topic,
            value,
            key=key,
            headers=headers,
            partition=partition,
            priority=priority,
            on_delivery=delivery,
        )
        return KafkaSendResult(self, accepted, delivery)

    async def flush(self, timeout: float | None = None) -> bool:
        """Waits until Kafka acknowledged everything sent so far; False after ``timeout``."""
        return await _offload(self._native.flush, timeout)

    async def close(self) -> None:
        """Flushes and closes (aborting an open transaction). Closing twice is harmless."""
        if not self._native.closed:
            await _offload(self._native.close)

    def __repr__(self) -> str:
        return f"<tidelog.aio Kafka producer name={self.name!r}>"


class KafkaAioConsumer(MemberViews, AsyncClosing):
    """A member of a Kafka consumer group for asyncio (see :meth:`tidelog.aio.Store.consumer`).

    ``async for msg in consumer`` waits for messages without blocking the loop; ``poll``,
    ``commit``, ``committed``, ``lag`` and ``close`` are coroutines, whose round trips run
    in a thread. The plain methods (``seek``, ``pause``, ``resume``, ``position``, ...)
    return at once, also while a fetch waits in its thread. One task uses a consumer at a
    time.
    """

    _sync: KafkaConsumer

    def __init__(self, sync: KafkaConsumer) -> None:
        self._sync = sync
        self._polling = _Carried()
        self.topic, self.group = sync.topic, sync.group

    @property
    def sync(self) -> KafkaConsumer:
        """The synchronous member this one drives (for :meth:`Store.transaction`)."""
        return self._sync

    @property
    def delivery(self) -> str:
        """The delivery mode."""
        return self._sync.delivery

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._sync.closed

    async def poll(
        self, max_messages: int | None = None, timeout: float = 1.0
    ) -> list[KafkaMessage]:
        """Up to ``max_messages`` messages, waiting up to ``timeout`` seconds (in a thread).

        The same commits per delivery mode as :meth:`tidelog.Consumer.poll`.
        """
        sync = self._sync
        count = sync.max_poll_messages if max_messages is None else max_messages
        # The wait and the commits in a thread; the fetched messages stay in the sync
        # member, so a cancelled wait loses none, and are handed out here.
        await self._polling.take(lambda: sync.fetch(timeout, count))
        while True:
            out = sync.take_ready(count)
            if out is not None:
                return out
            # A round trip must come first (a seek that came while the fetch waited needs
            # its range checked; a commit), or another thread still uses the member: made
            # by another fetch in its thread, which waits for nothing if messages are ready.
            await self._polling.take(lambda: sync.fetch(0, count))

    def __aiter__(self) -> KafkaAioConsumer:
        return self

    async def __anext__(self) -> KafkaMessage:
        # The sync member holds what was fetched and hands it out one message at a time:
        # only what was handed out counts as delivered (commits, close, transactions).
        # Once closed, next_ready raises StoreClosedError, as the local consumer does.
        sync = self._sync
        while True:
            # A fetch still running (a cancelled poll's) holds the member's lock for as
            # long as librdkafka waits: its end is awaited below, never taken on the loop.
            if not self._polling.pending():
                message = sync.next_ready()
                if message is not None:
                    return message
            # Nothing fetched, or a round trip comes first (a seek's range check,
            # at-most-once's commit before it hands a message out, made once per fetch):
            # both in the thread.
            await self._polling.take(lambda: sync.fetch(_WAIT_SLICE))

    async def commit(self, offsets: dict[int, int] | None = None, metadata: str = "") -> None:
        """Commits, as :meth:`tidelog.Consumer.commit` (a round trip, in a thread)."""
        await _offload(self._sync.commit, offsets, metadata)

    async def committed(self) -> dict[int, int]:
        """The group's committed offsets per partition (a round trip, in a thread).

        The thread waits for a fetch that is still running (confluent-kafka makes one call
        on a consumer at a time); the loop does not.
        """
        return await _offload(self._sync.committed)

    async def lag(self) -> dict[int, int]:
        """Per partition: end offset minus the committed offset (round trips, in a thread)."""
        return await _offload(self._sync.lag)

    def seek(self, partition: int, offset: int) -> None:
        """Makes the next poll read ``partition`` from ``offset``.

        Returns at once, also while a poll's fetch waits in its thread: that fetch applies
        the seek when it ends, and hands out nothing it read from the old position.

        The partition's range is a broker round trip away, so it is checked by the next
        poll's (or ``async for``'s) fetch, in its thread: an offset out of range raises
        :class:`OffsetOutOfRangeError` there, as Kafka's Java client raises it from
        ``poll``, and the partition reads on from where it was (locally, seek raises).
        """
        self._sync.seek_nowait(partition, offset)

    def seek_to_timestamp(self, timestamp_ms: int) -> None:
        """Seeks every owned partition to its first message at or after ``timestamp_ms``.

        Returns at once: the offsets for the time are broker round trips, made by the next
        poll's (or ``async for``'s) fetch in its thread, which hands out from there;
        :meth:`position` says -1 (unknown) for those partitions until then.
        """
        self._sync.seek_to_timestamp_nowait(timestamp_ms)

    async def close(self) -> None:
        """Commits what at-least-once moved past, then leaves the group; idempotent.

        As :meth:`tidelog.kafka.consumer.KafkaConsumer.close`: what was fetched and not handed out
        is left to the group, and ``async for`` and :meth:`poll` raise
        :class:`StoreClosedError`.
        """
        if self._sync.closed:
            return
        if self._polling.pending():
            # A cancelled poll's thread is still in librdkafka: closing waits for it.
            with contextlib.suppress(_core.TidelogError):  # closing anyway
                await self._polling.take(lambda: None)
        await _offload(self._sync.close)


class KafkaAioWorkQueue(AsyncClosing):
    """A member of a Kafka share group for asyncio (see :meth:`tidelog.aio.Store.work_queue`)."""

    def __init__(self, sync: KafkaWorkQueue) -> None:
        self._sync = sync
        self._acquiring = _Carried()
        # The thread call (flush, reject) that may outlive its cancelled caller.
        self._running: asyncio.Future[Any] | None = None

    async def _free(self, *, acquiring: bool = True) -> None:
        """Waits for the thread calls on the share consumer that outlived their caller.

        confluent-kafka's share consumer refuses a call while another thread is in one
        (``ConcurrentModificationException``), so every call waits for them first; a
        cancelled acquire's job stays for the next acquire.
        """
        if acquiring:
            await self._acquiring.ended()
        running = self._running
        if running is not None:
            await asyncio.wait({running})
            self._running = None
            if not running.cancelled():
                running.exception()  # read, or asyncio reports it: its caller is gone

    async def _in_thread(self, call: Callable[[], T]) -> T:
        """Runs ``call`` in a worker thread once no other thread uses the share consumer."""
        await self._free()
        self._running = asyncio.get_running_loop().run_in_executor(None, call)
        result: T = await asyncio.shield(self._running)
        self._running = None
        return result

    @property
    def sync(self) -> KafkaWorkQueue:
        """The synchronous member this one drives."""
        return self._sync

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._sync.closed

    async def acquire(self, timeout: float | None = 1.0) -> KafkaJob | None:
        """The next job, or None after ``timeout`` seconds (None: wait until one comes)."""
        sync = self._sync
        await self._free(acquiring=False)  # a cancelled acquire's job is taken below
        if timeout is not None:
            return await self._acquiring.take(lambda: sync.acquire(timeout))
        while True:
            job = await self._acquiring.take(lambda: sync.acquire(_WAIT_SLICE))
            if job is not None:
                return job

    async def acquire_many(
        self, max_messages: int = 1000, timeout: float | None = 1.0
    ) -> list[KafkaJob]:
        """Up to ``max_messages`` jobs: the first waits up to ``timeout``, the rest do not."""
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError(f"max_messages must be int, got {type(max_messages).__name__}")
        if max_messages < 1:
            raise _core.InvalidConfigError(f"max_messages must be >= 1, got {max_messages}")
        first = await self.acquire(timeout)
        if first is None:
            return []
        jobs = [first]
        # The rest of the same fetch, already here: handed out without waiting (a Kafka
        # share consumer settles a fetch before the next).
        while len(jobs) < max_messages and self._sync.ready():
            job = self._sync.acquire(0.0)
            if job is None:
                break
            jobs.append(job)
        return jobs

    def __aiter__(self) -> KafkaAioWorkQueue:
        return self

    async def __anext__(self) -> KafkaJob:
        # Once closed, acquire raises StoreClosedError, as a local queue's does.
        job = await self.acquire(None)
        assert job is not None  # waited without a limit
        return job

    async def ack(self, job: KafkaJob) -> None:
        """Marks ``job`` done (see :meth:`tidelog.WorkQueue.ack`)."""
        await self._free()
        self._sync.ack(job)

    async def ack_many(self, jobs: Iterable[KafkaJob]) -> None:
        """Marks every job of ``jobs`` done."""
        await self._free()
        for job in jobs:
            self._sync.ack(job)

    async def release(self, job: KafkaJob, delay: float = 0.0) -> None:
        """Hands ``job`` back for redelivery (``delay`` is refused on Kafka)."""
        await self._free()
        self._sync.release(job, delay)

    async def reject(self, job: KafkaJob) -> None:
        """Dead-letters ``job`` (a produce, in a thread)."""
        await self._in_thread(lambda: self._sync.reject(job))

    async def extend(self, job: KafkaJob, seconds: float) -> None:
        """Refused on Kafka (see the README's table)."""
        self._sync.extend(job, seconds)

    async def flush(self) -> None:
        """Sends the acknowledgements now (a round trip, in a thread)."""
        await self._in_thread(self._sync.flush)

    async def close(self) -> None:
        """Leaves the share group (unsettled jobs go back to the queue)."""
        if self._sync.closed:
            return
        if self._acquiring.pending():
            with contextlib.suppress(_core.TidelogError):  # closing anyway
                await self._acquiring.take(lambda: None)
        await self._in_thread(self._sync.close)


class KafkaAioTransaction:
    """A Kafka transaction for asyncio: ``async with store.transaction(p, c) as tx``."""

    def __init__(self, store: KafkaStore, producer: KafkaAioProducer, consumer: Any) -> None:
        if consumer is not None and consumer.delivery != "exactly-once":
            raise _core.InvalidConfigError(
                "a transaction commits the offsets of a consumer opened with "
                f"delivery='exactly-once'; this one uses {consumer.delivery!r}"
            )
        self._store = store
        self._producer = producer
        self._consumer: KafkaAioConsumer | None = consumer
        self._tx: KafkaTransaction | None = None

    async def begin(self) -> KafkaAioTransaction:
        """Begins it (``async with`` does): earlier sends are delivered first (in a thread)."""
        if self._tx is not None:
            raise _core.InvalidConfigError("the transaction already began")
        sync_consumer = None if self._consumer is None else self._consumer.sync
        self._tx = await _offload(self._store.transaction, self._producer.native, sync_consumer)
        return self

    def _open(self) -> KafkaTransaction:
        if self._tx is None:
            raise _core.InvalidConfigError("the transaction has not begun: use `async with`")
        if self._tx.done:
            raise _core.InvalidConfigError("the transaction already ended")
        return self._tx

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
    ) -> None:
        """Sends a message as part of the transaction (visible once it commits)."""
        self._open()
        await self._producer.send(topic, value, key=key, headers=headers, partition=partition)

    async def commit(self) -> None:
        """Commits the outputs and the consumer's offsets together (in a thread)."""
        await _offload(self._open().commit)

    async def abort(self) -> None:
        """Aborts: readers never see the outputs; the consumer rewinds to its commits."""
        if self._tx is not None:
            await _offload(self._tx.abort)

    @property
    def done(self) -> bool:
        """True once committed or aborted."""
        return self._tx is not None and self._tx.done

    async def __aenter__(self) -> KafkaAioTransaction:
        return await self.begin()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tx is None or self._tx.done:
            return
        if exc_type is None:
            await self.commit()
        else:
            await self.abort()


class KafkaAioStore(AsyncClosing):
    """A kafka:// store for asyncio; create it with :func:`tidelog.aio.open`.

    The calls of :class:`tidelog.aio.Store`. ``topics()``, ``topic()``, ``stats()`` and
    making a member are round trips to the cluster (metadata, a share group's
    configuration, a named producer's ``transactional.id``): each runs in a worker thread,
    awaited. The topics it returns are the synchronous ones (:class:`KafkaTopic`).
    """

    def __init__(self, sync: KafkaStore) -> None:
        self._sync = sync
        self._members: list[KafkaAioProducer | KafkaAioConsumer | KafkaAioWorkQueue] = []
        # Threads making members, and closing those whose making was cancelled: close()
        # waits for them, so no member is made or left open on a closed store.
        self._in_threads: set[asyncio.Future[Any]] = set()
        # Set when close() begins: a making started while it closes the members would come
        # after it took them.
        self._closing = False

    @property
    def sync(self) -> KafkaStore:
        """The synchronous Kafka store this one wraps."""
        return self._sync

    @property
    def path(self) -> str:
        """The store's URL."""
        return self._sync.path

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._sync.closed

    async def topics(self, *, internal: bool = False) -> list[str]:
        """Topic names, sorted (a metadata round trip, in a thread)."""
        return await _offload(self._sync.topics, internal=internal)

    async def topic(self, name: str) -> KafkaTopic:
        """The topic ``name`` (a metadata round trip, in a thread).

        Its reads and appends are the synchronous ones: each waits for the cluster.
        """
        return await _offload(self._sync.topic, name)

    async def create_topic(self, name: str, **options: Any) -> KafkaTopic:
        """Creates a topic (in a thread); the options of :meth:`tidelog.Store.create_topic`."""
        return await _offload(self._sync.create_topic, name, **options)

    async def delete_topic(self, name: str) -> None:
        """Deletes a topic (in a thread)."""
        await _offload(self._sync.delete_topic, name)

    async def alter_topic(self, name: str, **settings: Any) -> dict[str, Any]:
        """Changes a topic's settings (in a thread)."""
        return await _offload(self._sync.alter_topic, name, **settings)

    async def sync_to_disk(self) -> None:
        """Waits for every append's delivery report (in a thread)."""
        await _offload(self._sync.sync)

    async def _made(self, make: Callable[[], S]) -> S:
        """Runs ``make`` (a member's constructor: round trips) in a worker thread.

        A cancelled caller stops waiting; the member the thread makes then is closed in
        another thread, so it holds no group's partitions and no ``transactional.id``.
        """
        if self._closing:
            raise _core.StoreClosedError("the store is closed")
        loop = asyncio.get_running_loop()
        making = loop.run_in_executor(None, make)
        self._in_thread(making)
        try:
            return await asyncio.shield(making)
        except asyncio.CancelledError:

            def unwanted(done: asyncio.Future[S]) -> None:
                if not done.cancelled() and done.exception() is None:
                    self._in_thread(loop.run_in_executor(None, done.result().close))

            making.add_done_callback(unwanted)
            raise

    def _in_thread(self, future: asyncio.Future[Any]) -> None:
        def ended(done: asyncio.Future[Any]) -> None:
            self._in_threads.discard(done)
            if not done.cancelled():
                done.exception()  # read: a cancelled caller's is nobody's to raise

        self._in_threads.add(future)
        future.add_done_callback(ended)

    def producer(self, **options: Any) -> Making[KafkaAioProducer]:
        """An async producer; the options of :meth:`tidelog.aio.Store.producer`.

        Made when awaited, in a thread (a named producer's ``init_transactions`` is a round
        trip): ``await store.producer(...)`` or ``async with store.producer(...)``.
        """
        return Making(self._producer(**options))

    async def _producer(self, **options: Any) -> KafkaAioProducer:
        # Every message's delivery report, not only failures: `await send(...)` gives
        # where Kafka stored the message.
        config = {**(options.pop("config", None) or {}), "delivery.report.only.error": False}
        sync = await self._made(functools.partial(self._sync.producer, config=config, **options))
        producer = KafkaAioProducer(sync, options.get("block_timeout"))
        self._members.append(producer)
        return producer

    def consumer(self, topic: str, *, group: str, **options: Any) -> Making[KafkaAioConsumer]:
        """Joins consumer group ``group``; the options of :meth:`tidelog.aio.Store.consumer`.

        Joins when awaited, in a thread (the topic is a metadata round trip):
        ``await store.consumer(...)`` or ``async with store.consumer(...)``.
        """
        return Making(self._consumer(topic, group=group, **options))

    async def _consumer(self, topic: str, **options: Any) -> KafkaAioConsumer:
        sync = await self._made(functools.partial(self._sync.consumer, topic, **options))
        consumer = KafkaAioConsumer(sync)
        self._members.append(consumer)
        return consumer

    def work_queue(self, topic: str, *, group: str, **options: Any) -> Making[KafkaAioWorkQueue]:
        """Joins share group ``group``; the options of :meth:`tidelog.aio.Store.work_queue`.

        Joins when awaited, in a thread (the topic and the share group's configuration are
        round trips): ``await store.work_queue(...)`` or ``async with store.work_queue(...)``.
        """
        return Making(self._work_queue(topic, group=group, **options))

    async def _work_queue(self, topic: str, **options: Any) -> KafkaAioWorkQueue:
        sync = await self._made(functools.partial(self._sync.work_queue, topic, **options))
        queue = KafkaAioWorkQueue(sync)
        self._members.append(queue)
        return queue

    def transaction(
        self, producer: KafkaAioProducer, consumer: KafkaAioConsumer | None = None
    ) -> KafkaAioTransaction:
        """A transaction of ``producer`` and ``consumer``: ``async with`` begins it."""
        if not isinstance(producer, KafkaAioProducer):
            raise TypeError(
                f"producer must be a tidelog.aio producer, got {type(producer).__name__}"
            )
        if consumer is not None and not isinstance(consumer, KafkaAioConsumer):
            raise TypeError(
                f"consumer must be a tidelog.aio consumer, got {type(consumer).__name__}"
            )
        if self.closed:
            raise _core.StoreClosedError("the store is closed")
        return KafkaAioTransaction(self._sync, producer, consumer)

    async def stats(self) -> Any:
        """The store's statistics, as :meth:`tidelog.kafka.store.KafkaStore.stats`.

        Admin round trips, in a thread.
        """
        return await _offload(self._sync.stats)

    async def close(self) -> None:
        """Closes the members made from this store, then the store. Twice is harmless."""
        if self._sync.closed:
            return
        self._closing = True
        while self._in_threads:  # members being made, or closed after a cancelled making
            await asyncio.wait(set(self._in_threads))
        errors: list[BaseException] = []
        members, self._members = self._members, []
        members.sort(key=lambda m: isinstance(m, KafkaAioProducer))
        for member in members:
            try:
                await member.close()
            except Exception as exc:  # close every member before reporting
                errors.append(exc)
        await _offload(self._sync.close)
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<tidelog.aio.Store {self.path!r} ({state})>"
