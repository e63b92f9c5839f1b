"""The async producer: ``await producer.send(...)`` suspends the task, never the loop.

Sends go into the same native buffer as :class:`tidelog.Producer`'s; only waiting differs.
``send`` and ``send_nowait`` are native (:class:`_core.AsyncProducer`, the base class): a
send that finds room returns an awaitable already complete (:class:`_core.SendDone`), so
the common ``await producer.send(...)`` runs no coroutine (it is awaited once, as a
coroutine is; the next send reuses it once nothing holds it, so it costs no allocation).
Under pressure with ``on_full="block"`` it returns :meth:`Producer._send_blocked`, a
coroutine that waits on the producer's pressure bell through the loop's waker and tries
again: nothing is enqueued until the try that succeeds, so cancelling a blocked ``send``
never leaves half a message behind. ``"raise"`` and ``"shed"`` behave as in the synchronous API.

``await producer.send(...)`` gives a :class:`SendResult`; ``await`` that for the
``(partition, offset)`` the message was written at: the writer reports each async message's
offset (to the producer's native ledger, where a result held past the next send gets a
receipt of its own) before it counts the message written.
"""

from __future__ import annotations

import collections.abc
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog._core import BackpressureError

if TYPE_CHECKING:
    from tidelog.aio._wake import Waiters

__all__ = ["Producer", "SendResult", "written"]

Headers = Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None


#: What ``await producer.send(...)`` gives: the message is in the buffer (its
#: ``partition`` is chosen). ``await`` it for ``(partition, offset)`` once the message is
#: written (and fsynced if the store's policy says so); its ``accepted`` is False when
#: ``on_full="shed"`` dropped this very message (awaiting it then raises
#: :class:`BackpressureError`). Native, as the send that makes it.
SendResult = _core.SendResult

# Tasks take the completed awaitable as they take a coroutine (``asyncio.ensure_future``,
# ``gather``; ``create_task`` checks for a coroutine type): it has ``send``, ``throw`` and
# ``close``, and is registered as one.
collections.abc.Coroutine.register(_core.SendDone)


async def written(result: _core.SendResult) -> tuple[int, int]:
    """Waits until the message of ``result`` is written: ``await result``."""
    return await result


class Producer(_core.AsyncProducer):
    """A buffered producer for asyncio; create it with :meth:`tidelog.aio.Store.producer`.

    The same buffer, writer, idempotence and transactions as :class:`tidelog.Producer`
    (which :attr:`native` is); ``send`` (native, see :class:`_core.AsyncProducer`) is
    awaited, ``flush`` and ``close`` are coroutines.
    """

    def __init__(
        self, native: _core.Producer, waiters: Waiters, on_full: str, block_timeout: float | None
    ) -> None:
        """Wraps ``native``; see :meth:`tidelog.aio.Store.producer`."""
        self._waiters = waiters
        self._native = native
        self._try = self._try_send
        self._shedding = on_full == "shed"
        self._block_timeout = block_timeout if on_full == "block" else None
        self._pressure: _core.Bell | None = None
        self._flush_bell: _core.Bell | None = None

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

    async def _send_blocked(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        partition: int | None,
        priority: int | None,
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
                result = self._try(
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

    async def _written(self, result: _core.SendResult) -> tuple[int, int]:
        """``await result``: waits until its message is written; ``(partition, offset)``.

        Raises:
            BackpressureError: ``on_full="shed"`` dropped the message.
            TidelogError: The writer's failure since the last report, or the message's
                write failed (reported earlier).
        """
        if result.accepted:
            await self.flush_to(result.target)
        at = result.written_at()
        if at is not None:
            return at
        if self._shedding:
            # Accounted for at once when shed after it was buffered; the writer marks it
            # dropped only when it pops it.
            raise BackpressureError('the message was dropped by on_full="shed": it is not written')
        raise _core.TidelogError(
            "the message was not written: the producer stopped before writing it"
        )

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
        if self._flush_bell is None:
            self._flush_bell = _core.Bell.flush(native)
        bell = self._flush_bell
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
