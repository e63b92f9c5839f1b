"""The async consumer: a consumer-group member whose waits suspend the task, not the loop.

It drives a :class:`tidelog.Consumer` (same group protocol, commits and delivery modes,
same files: sync and async members share a group) through its non-blocking steps only
(``poll(timeout=0)``, :meth:`tidelog.Consumer.next_nowait`), and waits between them on the
topic's doorbell through the loop's waker (whose native thread spins on the doorbell for the
member's ``spin_us`` before it sleeps; the loop's thread never spins). A step either happens
whole or not at all, and happens after the wait, never before it: cancelling a waiting
``poll`` or ``async for`` skips, loses and repeats nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog import _core, _fork
from tidelog._core import InvalidConfigError, Message
from tidelog._fork import Born
from tidelog.aio._closing import AsyncClosing
from tidelog.aio._member import MemberViews

if TYPE_CHECKING:
    from tidelog.aio._wake import Waiters
    from tidelog.consumer import Consumer as SyncConsumer
    from tidelog.consumer import Delivery

__all__ = ["Consumer"]


class Consumer(MemberViews, AsyncClosing):
    """A member of a consumer group for asyncio; create it with :meth:`Store.consumer`.

    ``async for msg in consumer`` waits for messages without blocking the loop; ``poll``,
    ``commit`` and ``close`` are coroutines. One task uses a consumer at a time.
    """

    _sync: SyncConsumer

    def __init__(self, waiters: Waiters, sync: SyncConsumer, bell: _core.Bell) -> None:
        """Wraps ``sync``; see :meth:`tidelog.aio.Store.consumer`."""
        self._waiters = waiters
        self._sync = sync
        self._bell = bell
        self._spin_us = sync.spin_us
        self._next = sync.next_nowait
        self._ready = sync.ready_messages
        self._born = Born()
        self.topic, self.group = sync.topic, sync.group

    @property
    def sync(self) -> SyncConsumer:
        """The synchronous member this one drives (for :meth:`Store.transaction`)."""
        return self._sync

    @property
    def delivery(self) -> Delivery:
        """The delivery mode."""
        return self._sync.delivery

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._sync.closed

    async def poll(self, max_messages: int | None = None, timeout: float = 1.0) -> list[Message]:
        """Returns up to ``max_messages`` messages, waiting up to ``timeout`` seconds.

        As :meth:`tidelog.Consumer.poll` (the same commits per delivery mode), but the wait
        suspends only this task. Returns ``[]`` if nothing came in time.

        Raises:
            InvalidConfigError: ``max_messages`` below 1, or a negative or NaN ``timeout``.
            TypeError: An argument of the wrong type (the message names it).
        """
        if not ((type(timeout) is float or type(timeout) is int) and timeout >= 0):
            _check_timeout(timeout)
        sync = self._sync
        bell = self._bell
        ticket = bell.ticket()
        # The first step also checks the arguments, as the synchronous poll does.
        messages = sync.poll(max_messages, 0)
        if messages:
            return messages
        if not timeout > 0:
            return []
        waiter = self._waiters.current()
        loop = waiter.loop
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await waiter.wait(bell, ticket, min(remaining, sync.heartbeat_seconds), self._spin_us)
            ticket = bell.ticket()
            messages = sync.poll(max_messages, 0)
            if messages:
                return messages

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        # A fetched message is taken here, without a call: per message, the call to
        # ``next_nowait`` cost as much as the rest of an ``async for`` step. In a forked
        # child ``next_nowait`` raises, as the synchronous consumer does.
        ready = self._ready
        if ready and self._born.generation == _fork.generation:
            return ready.popleft()
        message = self._next()
        if message is not None:
            return message
        sync = self._sync
        bell = self._bell
        waiter = self._waiters.current()
        while True:
            ticket = bell.ticket()
            message = self._next()
            if message is not None:
                return message
            await waiter.wait(bell, ticket, sync.heartbeat_seconds, self._spin_us)

    async def commit(self, offsets: dict[int, int] | None = None, metadata: str = "") -> None:
        """Commits offsets durably, as :meth:`tidelog.Consumer.commit`."""
        self._sync.commit(offsets, metadata)

    async def committed(self) -> dict[int, int]:
        """The group's committed offsets for this topic, per partition.

        A coroutine as on Kafka, where it asks the broker; here it never waits.
        """
        return self._sync.committed()

    async def lag(self) -> dict[int, int]:
        """Messages behind the end of each partition (see :meth:`tidelog.Consumer.lag`).

        A coroutine as on Kafka, where it asks the broker; here it never waits.
        """
        return self._sync.lag()

    def seek(self, partition: int, offset: int) -> None:
        """Makes ``poll`` continue at ``offset`` of ``partition``."""
        self._sync.seek(partition, offset)

    def seek_to_timestamp(self, timestamp_ms: int) -> None:
        """Moves every assigned partition to its first message at or after ``timestamp_ms``."""
        self._sync.seek_to_timestamp(timestamp_ms)

    async def close(self) -> None:
        """Commits what was delivered (at-least-once) and leaves the group; idempotent.

        As :meth:`tidelog.Consumer.close`: what was fetched and not handed out is left to
        the group, and ``async for`` and :meth:`poll` raise :class:`StoreClosedError`.
        """
        self._sync.close()

    def __repr__(self) -> str:
        # assignment() raises once closed; a repr must not.
        owns = "closed" if self.closed else f"assignment={self.assignment()}"
        return (
            f"<tidelog.aio.Consumer topic={self.topic!r} group={self.group!r} "
            f"{owns} delivery={self.delivery!r}>"
        )


def _check_timeout(timeout: object) -> None:
    """Raises the error for a bad ``poll`` timeout (the fast check saw something off)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not timeout >= 0:
        raise InvalidConfigError(f"timeout must be >= 0 seconds, got {timeout}")
