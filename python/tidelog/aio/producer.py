"""The async producer: ``await producer.send(...)`` suspends the task, never the loop.

Sends go into the same native buffer as :class:`tidelog.Producer`'s (one non-blocking
native call, :meth:`_core.Producer.try_send`); only waiting differs. Under pressure with
``on_full="block"`` the task waits on the producer's pressure bell through the loop's
waker and tries again: nothing is enqueued until the call that succeeds, so cancelling a
blocked ``send`` never leaves half a message behind. ``"raise"`` and ``"shed"`` behave as
in the synchronous API.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog._core import BackpressureError

if TYPE_CHECKING:
    from tidelog.aio._wake import Waiters

__all__ = ["Producer", "SendResult", "written"]

Headers = Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None


#: What ``await producer.send(...)`` returns: the message is in the buffer. ``await`` it to
#: wait until the message is written (and fsynced if the store's policy says so), as
#: :meth:`Producer.flush` does for everything sent before it; its ``accepted`` is False when
#: ``on_full="shed"`` dropped this very message. (Native, so a send makes no Python object.)
SendResult = _core.SendResult

#: The async producer driving each native one (for ``await SendResult``).
_PRODUCERS: weakref.WeakKeyDictionary[_core.Producer, Producer] = weakref.WeakKeyDictionary()


async def written(result: _core.SendResult) -> bool:
    """Waits until the message of ``result`` is written; returns whether it was accepted.

    Called by ``await result`` (``_core.SendResult.__await__``).

    Raises:
        InvalidConfigError: The producer is not driven by a :class:`Producer` (asyncio).
    """
    producer = _PRODUCERS.get(result.producer)
    if producer is None:
        raise _core.InvalidConfigError("only a tidelog.aio producer's SendResult is awaitable")
    await producer.flush_to(result.target)
    return result.accepted


class Producer:
    """A buffered producer for asyncio; create it with :meth:`tidelog.aio.Store.producer`.

    The same buffer, writer, idempotence and transactions as :class:`tidelog.Producer`
    (which :attr:`native` is); ``send`` and ``flush`` are coroutines.
    """

    def __init__(
        self, waiters: Waiters, native: _core.Producer, on_full: str, block_timeout: float | None
    ) -> None:
        """Wraps ``native``; see :meth:`tidelog.aio.Store.producer`."""
        self._waiters = waiters
        self._native = native
        self._send = native.try_send
        self._block_timeout = block_timeout if on_full == "block" else None
        self._pressure: _core.Bell | None = None
        self._written: _core.Bell | None = None
        _PRODUCERS[native] = self

    @property
    def native(self) -> _core.Producer:
        """The synchronous producer this one drives (its ``stats()``, name, identity)."""
        return self._native

    @property
    def name(self) -> str | None:
        """The producer's name, if it has one."""
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
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        priority: int = 0,
    ) -> SendResult:
        """Puts a message into the buffer, waiting (without blocking the loop) for room.

        Args:
            topic: The topic.
            value: The message's value.
            key: The key: chooses the partition (as :meth:`Topic.append` does).
            headers: Headers, a mapping or pairs of str to bytes.
            partition: An explicit partition.
            priority: What ``on_full="shed"`` drops first (lower goes first).

        Returns:
            A :class:`SendResult`; ``await`` it to wait until the message is written.

        Raises:
            BackpressureError: Under pressure with ``on_full="raise"``, or after
                ``block_timeout`` seconds of waiting with ``on_full="block"``.
            StoreClosedError: The producer or the store is closed.
        """
        if key is None and headers is None and partition is None and not priority:
            result = self._send(topic, value)  # no keywords to parse: the common case
        else:
            result = self._send(
                topic, value, key=key, headers=headers, partition=partition, priority=priority
            )
        if result is None:
            result = await self._send_blocked(topic, value, key, headers, partition, priority)
        return result

    def send_nowait(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = None,
        partition: int | None = None,
        priority: int = 0,
    ) -> _core.SendResult:
        """:meth:`send` for hot loops: never waits, so it needs no ``await``.

        An ``await`` costs about as much as the send itself; a loop that sends many
        messages may call this and ``await`` :meth:`send` only when it raises.

        Returns:
            A :class:`SendResult`, as ``await send(...)`` does.

        Raises:
            BackpressureError: The buffer is under pressure (whatever ``on_full`` says,
                nothing was enqueued unless ``on_full="shed"`` made room); ``await send()``
                waits for room instead.
        """
        if key is None and headers is None and partition is None and not priority:
            result = self._send(topic, value)
        else:
            result = self._send(
                topic, value, key=key, headers=headers, partition=partition, priority=priority
            )
        if result is None:
            raise BackpressureError(
                "producer buffer above its high watermark: await send() to wait for room"
            )
        return result

    async def _send_blocked(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        partition: int | None,
        priority: int,
    ) -> _core.SendResult:
        """Waits for the end of pressure and sends; each try is one non-blocking call."""
        if self._pressure is None:
            self._pressure = _core.Bell.pressure(self._native)
        bell = self._pressure
        waiter = self._waiters.current()
        loop = waiter.loop
        timeout = self._block_timeout
        started = loop.time()
        deadline = None if timeout is None else started + timeout
        try:
            while True:
                ticket = bell.ticket()
                result = self._send(
                    topic, value, key=key, headers=headers, partition=partition, priority=priority
                )
                if result is not None:
                    return result
                remaining = None
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise BackpressureError(
                            f"producer buffer stayed above its low watermark for {timeout:.3f}s"
                        )
                await waiter.wait(bell, ticket, remaining)
        finally:
            # Counted as a blocked synchronous send is: until it sent, failed or was cancelled.
            self._native.add_blocked(max(0.0, loop.time() - started))

    async def flush(self, timeout: float | None = None) -> bool:
        """Waits until everything sent so far is written (and fsynced if the policy says so).

        Args:
            timeout: Longest wait in seconds (None: no limit).

        Returns:
            False if ``timeout`` passed first.

        Raises:
            TidelogError: The writer's failure since the last report.
        """
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(
                    f"timeout must be a number of seconds or None, got {type(timeout).__name__}"
                )
            if not timeout >= 0:
                raise _core.InvalidConfigError(f"timeout must be >= 0 seconds, got {timeout}")
        return await self.flush_to(self._native.sent_count(), timeout)

    async def flush_to(self, target: int, timeout: float | None = None) -> bool:
        """Waits until the first ``target`` messages sent are written (see ``SendResult``).

        ``target`` is a ``SendResult.target`` (or ``native.sent_count()``); returns False if
        ``timeout`` seconds passed first.
        """
        native = self._native
        if native.flushed(target):
            return True
        if self._written is None:
            self._written = _core.Bell.flush(native)
        bell = self._written
        waiter = self._waiters.current()
        loop = waiter.loop
        deadline = None if timeout is None else loop.time() + timeout
        # Counted in before the first ticket: the writer reports rounds only to flushers.
        native.set_flushing(True)
        try:
            while True:
                ticket = bell.ticket()
                if native.flushed(target):
                    return True
                remaining = None
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return False
                await waiter.wait(bell, ticket, remaining)
        finally:
            native.set_flushing(False)

    async def close(self) -> None:
        """Flushes, then stops the writer. Closing twice is harmless."""
        if self._native.closed:
            return
        if not self._native.in_transaction:
            await self.flush()
        # What is left is quick: the writer has nothing more to write (a transaction left
        # open is aborted, as the synchronous close does).
        self._native.close()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<tidelog.aio.Producer {self._native!r}>"
