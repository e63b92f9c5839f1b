"""The async store: :func:`open` and the members made from it.

A :class:`Store` wraps a :class:`tidelog.Store` (the same directory, files and locks, so
sync and async processes, and sync threads next to async tasks, share a store) and makes
async producers, consumers, work queues and transactions from it. Each event loop that
waits on the store gets one native waker (a thread and an eventfd, see
:mod:`tidelog.aio._wake`), made at its first wait and stopped by :meth:`Store.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import tidelog
from tidelog import _core
from tidelog.aio._closing import AsyncClosing
from tidelog.aio._making import Making
from tidelog.aio._wake import Waiters
from tidelog.aio.consumer import Consumer
from tidelog.aio.producer import Producer
from tidelog.aio.transaction import Transaction
from tidelog.aio.workqueue import WorkQueue

if TYPE_CHECKING:
    from tidelog.consumer import Delivery, Start
    from tidelog.store import Compression, OnFull

__all__ = ["Opening", "Store", "open"]

T = TypeVar("T")

#: Microseconds a waiting member's waker thread spins before sleeping (the core's default,
#: as for synchronous members).
_SPIN_US = cast("int", _core.WAIT_DEFAULTS["spin_us"])


class Store(AsyncClosing):
    """An open store for asyncio. Create it with :func:`tidelog.aio.open`."""

    def __init__(self, sync: tidelog.Store) -> None:
        """Wraps the open ``sync`` store."""
        self._sync = sync
        self._waiters = Waiters()
        self._members: list[Producer | Consumer | WorkQueue] = []

    @property
    def sync(self) -> tidelog.Store:
        """The synchronous store this one wraps (for calls that do not wait)."""
        return self._sync

    @property
    def path(self) -> str:
        """The store's directory."""
        return self._sync.path

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._sync.closed

    async def _offload(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs a call that does file I/O (creating a topic, syncing) in a worker thread.

        A cancelled caller stops waiting; the call itself finishes whole in its thread.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(call, *args, **kwargs))

    # -- topics ---------------------------------------------------------------------------

    async def topics(self, *, internal: bool = False) -> list[str]:
        """Topic names, sorted (see :meth:`tidelog.Store.topics`).

        A coroutine as on Kafka, where it asks the broker; here it never waits.
        """
        return self._sync.topics(internal=internal)

    async def topic(self, name: str) -> tidelog.Topic:
        """The topic ``name`` (its reads and appends do not wait for other processes).

        A coroutine as on Kafka, where it asks the broker; here it never waits.
        """
        return self._sync.topic(name)

    async def create_topic(self, name: str, **options: Any) -> tidelog.Topic:
        """Creates a topic; the options of :meth:`tidelog.Store.create_topic`."""
        return await self._offload(self._sync.create_topic, name, **options)

    async def delete_topic(self, name: str) -> None:
        """Deletes a topic, as :meth:`tidelog.Store.delete_topic`."""
        await self._offload(self._sync.delete_topic, name)

    async def alter_topic(self, name: str, **settings: Any) -> dict[str, Any]:
        """Changes a topic's stored settings, as :meth:`tidelog.Store.alter_topic`."""
        return await self._offload(self._sync.alter_topic, name, **settings)

    async def sync_to_disk(self) -> None:
        """Forces every message appended so far to disk (as :meth:`tidelog.Store.sync`)."""
        await self._offload(self._sync.sync)

    # -- members --------------------------------------------------------------------------

    def producer(
        self,
        *,
        name: str | None = None,
        idempotent: bool = True,
        buffer_messages: int = 65_536,
        high_watermark: float = 0.8,
        low_watermark: float = 0.5,
        on_full: OnFull = "block",
        block_timeout: float | None = None,
        max_batch_messages: int = 4096,
        linger_ms: float = 1.0,
        max_lag: int | None = None,
        compression: Compression | None = None,
    ) -> Making[Producer]:
        """An async producer; the options of :meth:`tidelog.Store.producer`.

        ``producer = await store.producer(...)``, or ``async with store.producer(...) as
        producer`` (closed at the end): made when awaited, as on Kafka, where making one
        may ask the cluster.

        ``await producer.send(...)`` suspends the task (not the loop) while the buffer is
        under pressure with ``on_full="block"`` (raising :class:`BackpressureError` after
        ``block_timeout`` seconds if given).
        """
        return Making(
            self._producer(
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
        )

    async def _producer(
        self, *, on_full: OnFull, block_timeout: float | None, **options: Any
    ) -> Producer:
        native = self._sync.producer(on_full=on_full, block_timeout=block_timeout, **options)
        producer = Producer(native, self._waiters, on_full, block_timeout)
        self._members.append(producer)
        return producer

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
    ) -> Making[Consumer]:
        """Joins consumer group ``group``; the options of :meth:`tidelog.Store.consumer`.

        ``consumer = await store.consumer(...)``, or ``async with store.consumer(...) as
        consumer`` (closed at the end): it joins when awaited.

        Sync and async members (in any processes) of one group split its partitions.
        ``spin_us`` (0 to 10,000, default 10): while the member waits, the store's waker
        thread for this loop (never the loop's own thread) spins on the topic's doorbell
        for up to that many microseconds before sleeping, after the wait starts and after
        each wake-up it delivers: a message appended meanwhile (in any process) skips the
        thread's futex wake-up; the loop itself is still woken through its eventfd. An idle
        member spins once per wait, then costs nothing.
        """
        return Making(
            self._consumer(
                topic,
                group=group,
                delivery=delivery,
                start=start,
                max_poll_messages=max_poll_messages,
                lease_seconds=lease_seconds,
                on_assign=on_assign,
                on_revoke=on_revoke,
                auto_offset_reset=auto_offset_reset,
                spin_us=spin_us,
            )
        )

    async def _consumer(self, topic: str, **options: Any) -> Consumer:
        sync = self._sync.consumer(topic, **options)
        consumer = Consumer(self._waiters, sync, _core.Bell.topic(self._sync.topic(topic)))
        self._members.append(consumer)
        return consumer

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
    ) -> Making[WorkQueue]:
        """Joins work queue ``group``; the options of :meth:`tidelog.Store.work_queue`.

        ``queue = await store.work_queue(...)``, or ``async with store.work_queue(...) as
        queue`` (closed at the end): it joins when awaited. ``spin_us`` is spun by the
        loop's waker thread, as for :meth:`consumer`.
        """
        return Making(
            self._work_queue(
                topic,
                group=group,
                lock_timeout=lock_timeout,
                max_deliveries=max_deliveries,
                dead_letter=dead_letter,
                prefetch=prefetch,
                spin_us=spin_us,
            )
        )

    async def _work_queue(self, topic: str, **options: Any) -> WorkQueue:
        sync = self._sync.work_queue(topic, **options)
        queue = WorkQueue(self._waiters, sync, _core.Bell.topic(self._sync.topic(topic)))
        self._members.append(queue)
        return queue

    def transaction(self, producer: Producer, consumer: Consumer | None = None) -> Transaction:
        """A transaction of ``producer`` and ``consumer``: ``async with`` begins it.

        See :meth:`tidelog.Store.transaction`; leaving the block normally commits, an
        exception (a cancellation included) aborts.
        """
        if not isinstance(producer, Producer):
            raise TypeError(
                f"producer must be a tidelog.aio Producer, got {type(producer).__name__}"
            )
        if consumer is not None and not isinstance(consumer, Consumer):
            raise TypeError(
                f"consumer must be a tidelog.aio Consumer, got {type(consumer).__name__}"
            )
        if self.closed:
            raise _core.StoreClosedError("the store is closed")
        return Transaction(producer, consumer)

    async def stats(self) -> Any:
        """The store's statistics, as :meth:`tidelog.Store.stats`.

        Read in a worker thread: the groups' and work queues' state is read from files.
        """
        return await self._offload(self._sync.stats)

    # -- lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:
        """Flushes and closes the members made from this store, then the store.

        Closing twice is harmless.
        """
        if self._sync.closed:
            return
        errors: list[BaseException] = []
        members, self._members = self._members, []
        # Work queues and consumers first (they may commit through producers' topics),
        # producers last, as the synchronous store does.
        members.sort(key=lambda m: isinstance(m, Producer))
        for member in members:
            try:
                await member.close()
            except Exception as exc:  # close every member before reporting
                errors.append(exc)
        self._waiters.close()
        self._sync.close()
        if errors:
            raise errors[0]

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<tidelog.aio.Store {self.path!r} ({state})>"


class Opening(Making[Store]):
    """What :func:`open` returns: ``await`` it, or use it with ``async with``."""

    __slots__ = ()

    def __init__(self, path: str | os.PathLike[str], settings: dict[str, Any]) -> None:
        super().__init__(_open(path, settings))


async def _open(path: str | os.PathLike[str], settings: dict[str, Any]) -> Store:
    loop = asyncio.get_running_loop()
    # Opening recovers every partition's tail (kafka://: connects to a broker): done in a
    # worker thread. A cancelled open closes the store once the thread has opened it.
    opening = loop.run_in_executor(None, functools.partial(tidelog.open, path, **settings))
    try:
        sync = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_opened)
        raise
    if isinstance(path, str) and path.startswith("kafka://"):
        from tidelog.aio.kafka import KafkaAioStore

        kafka = KafkaAioStore(sync)  # type: ignore[arg-type]  # tidelog.open's kafka:// store
        return cast(Store, kafka)  # the same API, another class
    return Store(sync)


def _close_opened(future: asyncio.Future[tidelog.Store]) -> None:
    if not future.cancelled() and future.exception() is None:
        with contextlib.suppress(Exception):
            future.result().close()


def open(path: str | os.PathLike[str], **settings: Any) -> Opening:
    """Opens the store in ``path`` for asyncio: ``async with tidelog.aio.open(path) as store``.

    Takes the keywords of :func:`tidelog.open` (checked by it) and opens the same store:
    sync and async processes share it. A ``kafka://host:port`` URL opens a Kafka cluster
    with the same async API (:mod:`tidelog.aio.kafka`).

    Returns:
        An awaitable that is also an async context manager (which closes the store).
    """
    return Opening(path, settings)
