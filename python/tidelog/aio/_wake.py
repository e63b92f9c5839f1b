"""How a task waits for the store: the native waker's eventfd, watched by the event loop.

One :class:`_core.Waker` per store and event loop: a native thread sleeps on every bell a
task of that loop waits on (topic doorbells, a producer's end of pressure or writer rounds)
and makes an eventfd readable when one moves; ``loop.add_reader`` runs :meth:`Waiter._ready`,
which wakes the tasks whose bell moved. A task never blocks the loop, no thread is started
per wait, and nothing polls on a timer: a timeout is one ``call_later`` per wait. A wait may
ask the native thread (never the loop's) to spin on its bell for ``spin_us`` microseconds
before it sleeps: a consumer fed faster than that is woken without the thread's futex
wake-up, the first of the two hops to the loop.
"""

from __future__ import annotations

import asyncio

from tidelog import _core

__all__ = ["Waiter", "Waiters"]


class _Wait:
    """One waiting task: its bell, the ticket it took, its spin and its future."""

    __slots__ = ("bell", "future", "spin_us", "ticket")

    def __init__(
        self, bell: _core.Bell, ticket: int, spin_us: int, future: asyncio.Future[bool]
    ) -> None:
        self.bell, self.ticket, self.spin_us, self.future = bell, ticket, spin_us, future


class Waiter:
    """The waits of one event loop on one store."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Starts the native waker and watches its eventfd in ``loop``."""
        self._loop = self.loop = loop
        self._native = _core.Waker()
        self._waits: set[_Wait] = set()
        self._closed = False
        loop.add_reader(self._native.fileno(), self._ready)

    async def wait(
        self, bell: _core.Bell, ticket: int, timeout: float | None, spin_us: int = 0
    ) -> bool:
        """Waits until ``bell`` moves past ``ticket`` or ``timeout`` seconds pass.

        The waker's thread spins on the bell for up to ``spin_us`` microseconds before it
        sleeps (see :meth:`_core.Waker.watch`). Returns whether it moved. Cancelling the wait
        changes nothing but the wait.
        """
        if bell.ticket() != ticket:
            return True
        if self._closed:
            raise _core.StoreClosedError("the store is closed")
        future: asyncio.Future[bool] = self._loop.create_future()
        entry = _Wait(bell, ticket, spin_us, future)
        self._waits.add(entry)
        timer = None
        try:
            self._native.watch(bell, ticket, spin_us)
            if timeout is not None:
                timer = self._loop.call_later(timeout, _expire, future)
            return await future
        finally:
            self._waits.discard(entry)
            if timer is not None:
                timer.cancel()

    def _ready(self) -> None:
        """The eventfd is readable: wake the tasks whose bell moved, re-arm the others."""
        self._native.drain()
        for entry in list(self._waits):
            if entry.future.done():
                continue
            if entry.bell.ticket() != entry.ticket:
                entry.future.set_result(True)
            else:
                # Fired for another task's older ticket on the same bell: keep watching.
                self._native.watch(entry.bell, entry.ticket, entry.spin_us)

    def close(self) -> None:
        """Stops watching; waiting tasks get :class:`StoreClosedError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._loop.is_closed():
            self._loop.remove_reader(self._native.fileno())
        for entry in self._waits:
            if not entry.future.done():
                entry.future.set_exception(_core.StoreClosedError("the store is closed"))
        self._native.close()


class Waiters:
    """A store's waiters, one per event loop that waits on it (made at its first wait)."""

    def __init__(self) -> None:
        """No loop waits yet."""
        self._by_loop: dict[asyncio.AbstractEventLoop, Waiter] = {}
        self._closed = False

    def current(self) -> Waiter:
        """The running loop's waiter.

        Raises:
            StoreClosedError: The store is closed.
        """
        loop = asyncio.get_running_loop()
        waiter = self._by_loop.get(loop)
        if waiter is None:
            if self._closed:
                raise _core.StoreClosedError("the store is closed")
            waiter = self._by_loop[loop] = Waiter(loop)
        return waiter

    def close(self) -> None:
        """Stops every loop's waiter (in its own loop's thread); idempotent."""
        self._closed = True
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, waiter in self._by_loop.items():
            if loop is running or loop.is_closed():
                waiter.close()
            else:
                loop.call_soon_threadsafe(waiter.close)
        self._by_loop.clear()


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)
