"""The async work-queue member: acquiring waits on the topic's doorbell through the loop.

It drives a :class:`tidelog.WorkQueue` (the same share-group state files: sync and async
members share one queue) through its non-blocking step, :meth:`WorkQueue.fetch_nowait`,
which acquires jobs with one state record or acquires nothing. Between steps the task waits
for the doorbell (appends and releases ring it, in any process) or until the next lock
expiry or delayed release comes due. A cancelled ``acquire`` has acquired nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog._core import InvalidConfigError
from tidelog.aio._closing import AsyncClosing
from tidelog.workqueue import Job

if TYPE_CHECKING:
    from tidelog.aio._wake import Waiters
    from tidelog.workqueue import WorkQueue as SyncWorkQueue

__all__ = ["WorkQueue"]


class WorkQueue(AsyncClosing):
    """A member of a work queue for asyncio; create it with :meth:`Store.work_queue`.

    ``async for job in queue`` and ``acquire`` wait without blocking the loop; settle jobs
    with ``ack``, ``release``, ``reject`` (coroutines, as everything that writes state).
    One task uses a member at a time.
    """

    def __init__(self, waiters: Waiters, sync: SyncWorkQueue, bell: _core.Bell) -> None:
        """Wraps ``sync``; see :meth:`tidelog.aio.Store.work_queue`."""
        self._waiters = waiters
        self._sync = sync
        self._bell = bell
        self.topic, self.group = sync.topic, sync.group

    @property
    def sync(self) -> SyncWorkQueue:
        """The synchronous member this one drives."""
        return self._sync

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._sync.closed

    async def _fetch(self, limit: int, timeout: float | None, *, iterating: bool) -> list[Job]:
        """Acquires up to ``limit`` jobs, waiting up to ``timeout`` (None: forever)."""
        sync, bell = self._sync, self._bell
        waiter = None
        deadline = None
        while True:
            ticket = bell.ticket()
            jobs, wait = sync.fetch_nowait(limit, iterating=iterating)
            if jobs:
                return jobs
            if waiter is None:
                waiter = self._waiters.current()
                if timeout is not None:
                    deadline = waiter.loop.time() + timeout
            if deadline is not None:
                remaining = deadline - waiter.loop.time()
                if remaining <= 0:
                    return []
                wait = min(wait, remaining)
            await waiter.wait(bell, ticket, wait, sync.spin_us)

    async def acquire(self, timeout: float | None = 1.0) -> Job | None:
        """Takes the next available message, waiting up to ``timeout`` seconds (None: forever).

        Returns:
            The job, or None if none became available in time.
        """
        _check_timeout(timeout)
        jobs = await self._fetch(1, timeout, iterating=True)
        return jobs[0] if jobs else None

    async def acquire_many(
        self, max_messages: int = 1000, timeout: float | None = 1.0
    ) -> list[Job]:
        """Takes up to ``max_messages`` available messages with one state record.

        Waits up to ``timeout`` seconds (None: forever) for at least one; see
        :meth:`tidelog.WorkQueue.acquire_many`.
        """
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError(f"max_messages must be int, got {type(max_messages).__name__}")
        if max_messages < 1:
            raise InvalidConfigError(f"max_messages must be >= 1, got {max_messages}")
        _check_timeout(timeout)
        # Prefetched jobs first, as the synchronous member does: an acquisition would give
        # them back to the queue (to be delivered again) and take others.
        jobs = self._sync.take_ready(max_messages)
        if jobs:
            return jobs
        return await self._fetch(max_messages, timeout, iterating=False)

    def __aiter__(self) -> WorkQueue:
        return self

    async def __anext__(self) -> Job:
        job, size = self._sync.plan_batch()
        if job is not None:
            return job
        first = self._sync.took_batch(await self._fetch(size, None, iterating=True))
        assert first is not None  # waited without a timeout
        return first

    async def ack(self, job: Job) -> None:
        """Marks ``job`` done (buffered; see :meth:`tidelog.WorkQueue.ack`)."""
        self._sync.ack(job)

    async def ack_many(self, jobs: Iterable[Job]) -> None:
        """Acknowledges ``jobs`` with one state record."""
        self._sync.ack_many(jobs)

    async def release(self, job: Job, delay: float = 0.0) -> None:
        """Gives ``job`` back to the queue, available again after ``delay`` seconds."""
        self._sync.release(job, delay)

    async def reject(self, job: Job) -> None:
        """Never delivers ``job`` again: it goes to the dead-letter topic (or the archive)."""
        self._sync.reject(job)

    async def extend(self, job: Job, seconds: float) -> None:
        """Renews the lock of ``job`` for ``seconds`` from now."""
        self._sync.extend(job, seconds)

    async def flush(self) -> None:
        """Makes every acknowledgement so far durable."""
        self._sync.flush()

    def stats(self) -> dict[str, Any]:
        """The queue's counters, as :meth:`tidelog.WorkQueue.stats`."""
        return self._sync.stats()

    async def close(self) -> None:
        """Writes pending acknowledgements, releases held jobs and leaves; idempotent."""
        self._sync.close()

    def __repr__(self) -> str:
        return f"<tidelog.aio.WorkQueue topic={self.topic!r} group={self.group!r}>"


def _check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, got {type(timeout).__name__}"
        )
    if timeout != timeout:
        # As the synchronous queue: a negative timeout means "do not wait".
        raise InvalidConfigError("timeout must be a number of seconds or None, got nan")
