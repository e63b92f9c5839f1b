"""Work queues: per-message acknowledgement, lock timeouts, redelivery and dead letters.

See :meth:`tidelog.Store.work_queue`. Members of a queue (in any threads or processes) take
messages of a topic instead of owning partitions, as Kafka's share groups do.

Each member keeps a copy of the queue's state (:mod:`tidelog.queue_state`: acknowledged-below
offset, finished runs, leases) and changes it by appending records to the queue's journal
(:mod:`tidelog.queue_journal`) under a cross-process lock, after applying what the others
wrote. Changes are ranges, and a member batches them:

- a member acquires a BATCH of messages with one record (``acquire_many``; iteration sizes its
  prefetched batch to about 50 ms of the application's work, up to ``prefetch`` jobs);
- acknowledgements are buffered and coalesced: see :meth:`WorkQueue.ack` for exactly when one
  is durable.

Waiting: a member with nothing to take sleeps on the topic's doorbell (a futex rung by every
append in any process, and rung by members releasing work too), and until the earliest lock
of the queue expires; the only polling left is a 1 s safety net. Before each sleep it spins
on the doorbell for up to ``spin_us`` microseconds (:meth:`tidelog.Store.work_queue`).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from tidelog import _core
from tidelog._checks import check_int, check_seconds, check_text, storage_errors
from tidelog._core import InvalidConfigError, Message, OffsetOutOfRangeError
from tidelog._fork import Born
from tidelog.jobs import (
    COUNT_HEADER,
    REASON_HEADER,
    Acks,
    Batch,
    Claim,
    Job,
    LockLostError,
    dead_letter_headers,
)
from tidelog.queue_journal import QueueJournal, queue_files
from tidelog.queue_state import (
    ACK,
    ACQUIRE,
    ARCHIVE,
    DEAD,
    EXTEND,
    PASS,
    RELEASE,
    SEEN,
    SKIP,
    Op,
    QueueState,
    runs,
)

if TYPE_CHECKING:
    from tidelog._protocols import StoreView

__all__ = ["COUNT_HEADER", "REASON_HEADER", "Job", "LockLostError", "WorkQueue"]

#: Iteration aims at prefetched batches of about this much of the application's work.
_BATCH_TARGET_S = 0.05
#: Longest sleep of a waiting member between two looks (wakeups normally come sooner).
_MAX_WAIT_S = 1.0
#: Most deliveries a queue may allow: the count is stored as an unsigned 32-bit number.
_MAX_DELIVERIES = 2**31 - 1
#: Microseconds a waiting member spins on the doorbell before sleeping (the core's default).
_SPIN_US = cast("int", _core.WAIT_DEFAULTS["spin_us"])


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_timeout(timeout: object) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise TypeError(f"timeout must be a number or None, got {type(timeout).__name__}")
    if timeout is not None and timeout != timeout:
        raise InvalidConfigError("timeout must be a number of seconds or None, got nan")


class WorkQueue(_core.JobBuffer):
    """One member of a work queue on a topic. Create it with :meth:`Store.work_queue`.

    Iterate it (``for job in queue``) to block for jobs, or call :meth:`acquire` (one job) or
    :meth:`acquire_many` (a batch). Each job is held by this member alone until :meth:`ack`,
    :meth:`release`, :meth:`reject` or until its lock expires (``lock_timeout`` seconds after
    it was acquired, renewable with :meth:`extend`).

    Handing out prefetched jobs (``__next__``) and buffering acknowledgements (:meth:`ack`)
    are done by the native base class without a Python frame; it calls ``_next_slow`` and
    ``_ack_slow`` here for every other case.
    """

    @storage_errors
    def __init__(
        self,
        store: StoreView,
        topic: str,
        group: str,
        *,
        lock_timeout: float = 30.0,
        max_deliveries: int = 5,
        dead_letter: str | None = None,
        prefetch: int = 2048,
        spin_us: int = _SPIN_US,
    ) -> None:
        """Joins the work queue ``group`` on ``topic``; see :meth:`tidelog.Store.work_queue`."""
        if not isinstance(topic, str):
            raise TypeError(f"topic must be str, got {type(topic).__name__}")
        check_text(group, "group", empty=False)
        check_seconds(lock_timeout, "lock_timeout")
        check_int(max_deliveries, "max_deliveries", 1, _MAX_DELIVERIES)
        if dead_letter is not None and not isinstance(dead_letter, str):
            raise TypeError(f"dead_letter must be str or None, got {type(dead_letter).__name__}")
        if dead_letter is not None:
            check_text(dead_letter, "dead_letter")
        if dead_letter == topic:
            raise InvalidConfigError("dead_letter must differ from the queue's topic")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int):
            raise TypeError(f"prefetch must be int, got {type(prefetch).__name__}")
        if prefetch < 1:
            raise InvalidConfigError(f"prefetch must be >= 1, got {prefetch}")
        self.spin_us = check_int(spin_us, "spin_us", 0, _core.MAX_SPIN_US)
        self._store = store
        self._topic = store.topic(topic)
        self._born = Born()
        self.topic, self.group = topic, group
        self.lock_timeout = float(lock_timeout)
        self.max_deliveries = max_deliveries
        self.dead_letter = dead_letter
        self.prefetch = prefetch
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._timeout_ms = max(1, int(self.lock_timeout * 1000))
        self._dead_topic: _core.Topic | None = None
        self._closed = False
        # Held for every change that takes more than one step of the native buffers.
        self._mutex = threading.Lock()
        self._batch_size = 1
        self._batch_started: float | None = None
        self._next_partition = 0
        #: Acks that could not be written because the lock had passed to another member.
        self.acks_lost = 0
        # Why the state cannot go on after a recovery removed messages (checked once per
        # open: recovery only runs where no process has the partition open, as this one does).
        self._removed: str | None = None
        self._recoveries_checked = False
        self._files = queue_files(store.path, topic, group)
        self._journal = QueueJournal(
            self._files,
            self._topic.partitions,
            core=store.native,
            # Raises TopicNotFoundError once the topic is deleted (a shared word's load).
            alive=lambda: self._topic.start_offset(0),
        )
        try:
            self._doorbell = _core.Doorbell(
                _core.topic_dir(store.path, topic) / _core.DOORBELL_FILE
            )
        except BaseException:
            self._journal.close()
            raise

    # -- acquiring ------------------------------------------------------------------------

    def _take(self, state: QueueState, limit: int, ops: list[Op]) -> tuple[Batch, list[Claim]]:
        """Claims up to ``limit`` available messages (under the lock).

        Appends the changes to ``ops`` and returns the batch and the claimed runs; the
        messages are read after the lock is released (:meth:`_jobs`), so the lock is held
        for microseconds however big the batch. Exhausted messages met on the way are
        dead-lettered here.
        """
        now = _now_ms()
        batch = Batch(now + self._timeout_ms, self._timeout_ms)
        claimed: list[Claim] = []
        taken = 0
        n = len(state.partitions)
        topic = self._topic
        for i in range(n):
            if taken >= limit:
                break
            p = (self._next_partition + i) % n
            part = state.partitions[p]
            start = topic.start_offset(p)
            if start > part.acked_below:
                # Retention deleted messages this queue had not finished: skip (and count)
                # them, as consumers skip to the log start.
                self._journal.write(self.member_id, [(SKIP, p, start, 0, 0, 0)])
            again = True
            while again and taken < limit:
                again = False
                # Only committed messages: a transaction still open is handed out once it
                # commits (reads stop at it).
                stable = topic.last_stable_offset(p)
                for s, e, count in part.available(now, stable, limit - taken):
                    if count >= self.max_deliveries:
                        try:
                            read = topic.read_batch(p, s, max_messages=e - s)
                        except OffsetOutOfRangeError:
                            break  # retention removed them meanwhile; the next look skips them
                        messages = [m for m in read if m.offset < e]
                        if not messages:
                            # No message left there (transaction markers, aborted ones).
                            ops.append((PASS, p, s, e, 0, 0))
                            continue
                        # Exhausted: dead-letter them, write that (with what was chosen so
                        # far, so the state moves on) and look at this partition again.
                        ops.append(self._dead_letter(messages, "max_deliveries", count))
                        self._journal.write(self.member_id, ops)
                        ops.clear()
                        again = True
                        break
                    ops.append((ACQUIRE, p, s, e, batch.expires, count + 1))
                    claimed.append((p, s, e, count + 1))
                    taken += e - s
        self._next_partition += 1
        return batch, claimed

    def _check_recoveries(self, state: QueueState, ops: list[Op]) -> str | None:
        """Why the queue's state cannot go on after a recovery, or None (adds SEEN changes).

        A recovery event not checked yet that removed offsets below the queue's frontier
        means the queue handed out or finished offsets that now belong (or will belong) to
        other messages: once the log has grown past the frontier again, ``_beyond_end``
        alone would take those messages for finished ones. Events are checked once per
        open; a queue with no count yet (new, or older than it) takes the events as seen.
        """
        if self._recoveries_checked:
            return self._removed
        for p, part in enumerate(state.partitions):
            try:
                events = _core.recovery_events(_core.partition_dir(self._store.path, self.topic, p))
            except FileNotFoundError:
                events = []
            seen = part.recoveries_seen
            for e in events[seen:] if seen is not None else []:
                if e["first_offset"] < part.frontier and self._removed is None:
                    self._removed = (
                        f"work queue {self.group!r} on {self.topic!r} partition {p} handed out "
                        f"offsets up to {part.frontier - 1}, but recovery removed offsets "
                        f"{e['first_offset']}..{e['end_offset']} ({e['kind']}), which now "
                        "belong to other messages (see Store.stats()['recovery'])"
                    )
            if self._removed is None and (seen is None or len(events) > seen):
                ops.append((SEEN, p, len(events), 0, 0, 0))
        self._recoveries_checked = True
        return self._removed

    def _beyond_end(self, state: QueueState) -> str | None:
        """Why the queue's state cannot go on, or None.

        State above the end of a partition's log means recovery removed messages the queue
        had handed out or finished (see ``Store.stats()["recovery"]``): the offsets there
        will be given to new messages, which the state would take for finished ones.
        """
        for p, part in enumerate(state.partitions):
            end = self._topic.end_offset(p)
            if part.frontier > end:
                return (
                    f"work queue {self.group!r} on {self.topic!r} partition {p} handed out "
                    f"offsets up to {part.frontier - 1}, but the log now ends at offset {end}: "
                    "messages were removed by recovery (see Store.stats()['recovery'])"
                )
        return None

    def _jobs(self, batch: Batch, claimed: list[Claim]) -> list[Job]:
        """The jobs of the claimed runs (read outside the lock).

        Claimed offsets that hold no message (transaction markers, aborted transactions:
        reads pass over them) are finished at once, so they never come back.
        """
        jobs: list[Job] = []
        gaps: list[Op] = []
        read = self._topic.read_batch
        for p, s, e, count in claimed:
            at = s
            while at < e:
                try:
                    messages = read(p, at, max_messages=e - at)
                except OffsetOutOfRangeError:
                    # Deleted by retention since the claim: the next look skips them.
                    break
                n, after = len(messages), messages.next_offset
                if after - at == n and after <= e:
                    # Dense (the usual case): every claimed offset read is a message.
                    jobs += self._make_jobs(messages, count, batch)
                    at = after
                    if n == 0:
                        break
                    continue
                # Offsets the read passed over (transaction markers, aborted messages).
                begun, beyond = at, False
                for m in messages:
                    if m.offset >= e:
                        beyond = True  # past the claim: not ours
                        break
                    if m.offset > at:
                        gaps.append((PASS, p, at, m.offset, 0, 0))
                    jobs += self._make_jobs([m], count, batch)
                    at = m.offset + 1
                end = e if beyond else min(after, e)
                if end > at:
                    gaps.append((PASS, p, at, end, 0, 0))
                    at = end
                if at == begun:
                    break  # nothing more to read (cannot happen below the stable offset)
        if gaps:
            with self._journal.locked():
                self._journal.write(self.member_id, gaps)
        return jobs

    def _dead_letter(self, messages: Iterable[Message], reason: str, count: int) -> Op:
        """Moves consecutive ``messages`` of one partition to the dead-letter topic.

        Without one they are archived. Returns the change that finishes them.
        """
        first: Message | None = None
        last = 0
        for message in messages:
            if first is None:
                first = message
            last = message.offset
            if self.dead_letter is not None:
                if self._dead_topic is None:
                    self._dead_topic = self._store.native.create_topic(
                        self.dead_letter, 1, exist_ok=True
                    )
                headers = dead_letter_headers(message, reason, count)
                self._dead_topic.append(message.value, key=message.key, headers=headers)
        assert first is not None
        kind = DEAD if self.dead_letter is not None else ARCHIVE
        return (kind, first.partition, first.offset, last + 1, 0, 0)

    def _settle_ops(
        self, state: QueueState, ops: list[Op], acks: Acks, *, return_ready: bool
    ) -> None:
        """Appends the changes for the buffered ``acks`` (see :func:`_group`), under both locks.

        With ``return_ready``, also for giving back the prefetched jobs not handed out yet.
        """
        self._ack_ops(state, acks, ops)
        if return_ready and self._ready_count:
            by_key: dict[tuple[int, int], list[int]] = {}
            for job in self._drain_ready():
                by_key.setdefault((job.partition, job.delivery_count - 1), []).append(job.offset)
            me = self.member_id
            for (p, count), offsets in by_key.items():
                offsets.sort()
                part = state.partitions[p]
                for s, e in runs(offsets):
                    # Never handed out: back with the delivery count it had before.
                    if part.held(s, e, me):
                        ops.append((RELEASE, p, s, e, 0, count))

    def _ack_ops(self, state: QueueState, acks: Acks, ops: list[Op]) -> list[Job]:
        """Appends ACK changes for ``acks``; returns the jobs whose lock was lost."""
        jobs, grouped = acks
        lost: list[Job] = []
        me = self.member_id
        for p, offset_runs in grouped.items():
            part = state.partitions[p]
            for s, e in offset_runs:
                if part.held(s, e, me):
                    ops.append((ACK, p, s, e, 0, 0))
                    continue
                # Rare: some lock passed to another member (it expired unacknowledged).
                for o in range(s, e):
                    lease = part.lease_at(o)
                    if lease is not None and lease.member == me:
                        ops.append((ACK, p, o, o + 1, 0, 0))
                    else:
                        lost.extend(j for j in jobs if j.message.partition == p and j.offset == o)
        self.acks_lost += len(lost)
        return lost

    @storage_errors
    def _fetch(self, limit: int, timeout: float | None, *, iterating: bool) -> list[Job]:
        """Acquires up to ``limit`` jobs, waiting up to ``timeout`` (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            ticket = self._topic.ticket()
            jobs, wait = self.fetch_nowait(limit, iterating=iterating)
            if jobs:
                return jobs
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = min(wait, remaining)
            self._topic.wait(ticket, wait, self.spin_us)

    def fetch_nowait(self, limit: int, *, iterating: bool = False) -> tuple[list[Job], float]:
        """One attempt to acquire up to ``limit`` jobs; never waits.

        For event loops, which wait elsewhere (see :mod:`tidelog.aio`): take the topic's
        ticket first, then wait on its doorbell for at most the returned seconds (when a
        lock held by another member expires or a delayed release comes due) before trying
        again. ``iterating`` hands out a prefetched job first.

        Returns:
            The jobs acquired (maybe none) and the longest wait before trying again.
        """
        with self._mutex:
            self._check_open()
            if iterating and self._ready_count:
                job = self._ready_job()
                if job is not None:
                    return [job], 0.0
            acks = self._take_pending()
            with self._journal.locked() as state:
                ops: list[Op] = []
                self._settle_ops(state, ops, acks, return_ready=True)
                beyond = self._check_recoveries(state, ops) or self._beyond_end(state)
                if beyond:
                    self._journal.write(self.member_id, ops)  # the acks still count
                    raise OffsetOutOfRangeError(beyond)
                batch, claimed = self._take(state, limit, ops)
                self._journal.write(self.member_id, ops)
                now = _now_ms()
                expiries = [
                    x for x in (p.next_expiry(now) for p in state.partitions) if x is not None
                ]
            if any(op[0] == RELEASE for op in ops):
                self._doorbell.ring()
            jobs = self._jobs(batch, claimed)
        wait = _MAX_WAIT_S
        if expiries:
            wait = min(wait, max(min(expiries) - now, 1) / 1000)
        return jobs, wait

    def _ready_job(self) -> Job | None:
        """The next prefetched job, if its lock has time enough left (under the mutex)."""
        job = self._pop_ready()
        if job is None:
            # Prefetched too long ago: give them back and acquire afresh (a smaller batch).
            self._batch_size = max(1, self._batch_size // 2)
        return job

    def acquire(self, timeout: float | None = 1.0) -> Job | None:
        """Takes the next available message, waiting up to ``timeout`` seconds (None: forever).

        Pending acknowledgements are written in the same record.

        Returns:
            The job (held by this member until acked, released, rejected or its lock
            expires), or None if none became available in time.
        """
        self._born.check()
        _check_timeout(timeout)
        with self._mutex:
            if self._ready_count:
                job = self._ready_job()
                if job is not None:
                    return job
        jobs = self._fetch(1, timeout, iterating=False)
        return jobs[0] if jobs else None

    def acquire_many(self, max_messages: int = 1000, timeout: float | None = 1.0) -> list[Job]:
        """Takes up to ``max_messages`` available messages with one state record.

        Waits up to ``timeout`` seconds (None: forever) for at least one.

        All of them are locked until ``lock_timeout`` from now: take no more than can be
        processed in that time. Settle them with :meth:`ack_many` (one record) or one by one.

        Returns:
            The jobs, lowest offsets first per partition; empty if none became available.
        """
        self._born.check()
        if isinstance(max_messages, bool) or not isinstance(max_messages, int):
            raise TypeError(f"max_messages must be int, got {type(max_messages).__name__}")
        if max_messages < 1:
            raise InvalidConfigError(f"max_messages must be >= 1, got {max_messages}")
        _check_timeout(timeout)
        jobs = self.take_ready(max_messages)
        if jobs:
            return jobs
        return self._fetch(max_messages, timeout, iterating=False)

    def take_ready(self, max_messages: int) -> list[Job]:
        """Up to ``max_messages`` prefetched jobs with time enough left on their locks.

        What :meth:`acquire_many` hands out before acquiring anything (an acquisition
        would give the prefetched jobs back first). For event loops (see :mod:`tidelog.aio`).

        Returns:
            The jobs, possibly none.
        """
        with self._mutex:
            first = self._ready_job() if self._ready_count else None
            if first is None:
                return []
            jobs = [first]
            while len(jobs) < max_messages and (job := self._pop_ready()) is not None:
                jobs.append(job)
            return jobs

    def __iter__(self) -> Iterator[Job]:
        return self

    def _next_slow(self) -> Job:
        """``__next__`` when no prefetched job with time enough left is at hand.

        Jobs come from a prefetched batch acquired with one record; the batch size adapts
        (doubling or halving) so a batch is about 50 ms of the application's work, at most
        ``prefetch`` jobs.
        """
        self._born.check()
        job = self._next_job(None)
        assert job is not None
        return job

    def jobs(self, idle_timeout: float | None = None) -> Iterator[Job]:
        """Iterates like ``for job in queue``, ending once no job came for ``idle_timeout``.

        For a worker that should exit when the queue is drained. None: never ends.
        """
        self._born.check()
        _check_timeout(idle_timeout)
        while True:
            job = self._pop_ready()
            if job is None:
                job = self._next_job(idle_timeout)
                if job is None:
                    return
            yield job

    def _next_job(self, timeout: float | None) -> Job | None:
        """The next prefetched job, or the first of a new batch (None after ``timeout``)."""
        ready, size = self.plan_batch()
        if ready is not None:
            return ready
        return self.took_batch(self._fetch(size, timeout, iterating=True))

    def plan_batch(self) -> tuple[Job | None, int]:
        """Iteration's first step: a prefetched job, or the size of the batch to acquire.

        For event loops (see :mod:`tidelog.aio`); acquire the batch with
        :meth:`fetch_nowait` (``iterating=True``) and hand it to :meth:`took_batch`.
        """
        with self._mutex:
            if self._ready_count:
                job = self._ready_job()
                if job is not None:
                    return job, 0
            now = time.monotonic()
            if self._batch_started is not None:
                elapsed = now - self._batch_started
                if elapsed < _BATCH_TARGET_S:
                    self._batch_size = min(self._batch_size * 2, self.prefetch)
                elif elapsed > 4 * _BATCH_TARGET_S:
                    self._batch_size = max(1, self._batch_size // 2)
            return None, self._batch_size

    def took_batch(self, jobs: list[Job]) -> Job | None:
        """Iteration's last step: keeps all but the first job prefetched; returns the first."""
        if not jobs:
            return None
        with self._mutex:
            if len(jobs) > 1:
                self._extend_ready(jobs[1:])
            self._batch_started = time.monotonic()
        return jobs[0]

    # -- settling -------------------------------------------------------------------------

    def _own(self, job: Job) -> Batch:
        """The job's batch, checking this member acquired it and has not settled it."""
        if type(job) is not Job:
            raise TypeError(f"expected a Job from this queue, got {type(job).__name__}")
        batch = self._held_batch(job)
        if batch is None:
            raise LockLostError(
                f"{job!r} is not held by this member of {self.group!r} (acquired by another "
                "member, or already acked, released or rejected)"
            )
        return batch

    def _ack_slow(self, job: Job) -> None:
        """``ack`` when the native fast path (buffering the ack) does not apply.

        That is: the ack settles the last unsettled job of its batch or less than half the
        lock timeout is left (written before returning, see ``ack``), or a bad argument,
        a job not held, a closed queue or a forked process (raised here).
        """
        self._born.check()
        with self._mutex:
            self._check_open()
            batch = self._own(job)
            self._settle(job)
            self._buffer_ack(job)
            if batch.outstanding <= 0 or time.time() >= batch.half:
                self._flush_locked(job)

    def ack_many(self, jobs: Iterable[Job]) -> None:
        """Acknowledges ``jobs`` with one record, durable when this returns (as :meth:`ack`).

        Raises:
            TypeError: An item is not a :class:`Job`.
            LockLostError: Some jobs were no longer held (the others are acknowledged).
        """
        self._born.check()
        jobs = list(jobs)
        with self._mutex:
            self._check_open()
            for job in jobs:
                self._own(job)
            for job in jobs:
                self._settle(job)
                self._buffer_ack(job)
            self._flush_locked(None)

    def flush(self) -> None:
        """Writes the buffered acknowledgements; they are durable when this returns."""
        self._born.check()
        with self._mutex:
            self._check_open()
            if self._pending_count:
                self._flush_locked(None)

    @storage_errors
    def _flush_locked(self, job: Job | None) -> None:
        """Writes the buffered acks (under the mutex); raises if ``job``'s was lost."""
        acks = self._take_pending()
        with self._journal.locked() as state:
            ops: list[Op] = []
            lost = self._ack_ops(state, acks, ops)
            self._journal.write(self.member_id, ops)
        if lost and (job is None or job in lost):
            raise LockLostError(
                f"{len(lost)} job(s) were no longer held by this member (their lock expired and "
                f"another member took them), e.g. {lost[0]!r}"
            )

    @storage_errors
    def _change(self, job: Job, make: Any, *, settle: bool) -> None:
        """Writes the change ``make(lease)`` returns for the held ``job``.

        The buffered acks go in the same record; ``settle`` ends this member's hold on the
        job. Raises LockLostError if the job is no longer held.
        """
        with self._mutex:
            self._check_open()
            self._own(job)
            acks = self._take_pending()
            with self._journal.locked() as state:
                part = state.partitions[job.partition]
                lease = part.lease_at(job.offset)
                if lease is None or lease.member != self.member_id:
                    self._settle(job)
                    ops: list[Op] = []
                    self._settle_ops(state, ops, acks, return_ready=False)
                    self._journal.write(self.member_id, ops)  # the buffered acks still count
                    raise LockLostError(
                        f"{job!r} is no longer held by this member (its lock expired and "
                        "another member took it)"
                    )
                ops = []
                self._settle_ops(state, ops, acks, return_ready=False)
                ops.append(make(lease))
                self._journal.write(self.member_id, ops)
            if settle:
                self._settle(job)

    def release(self, job: Job, delay: float = 0.0) -> None:
        """Puts ``job`` back in the queue; its delivery count is kept.

        With ``delay`` (seconds), no member receives it before the delay is over (retry with
        backoff): it is held by nobody until then, and members waiting for work wake when it
        comes due. Durable when this returns, with the buffered acks.

        Raises:
            LockLostError: This member no longer holds the job.
            InvalidConfigError: A negative, NaN or infinite ``delay``.
            TypeError: ``delay`` is not a number.
        """
        self._born.check()
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise TypeError(f"delay must be a number of seconds, got {type(delay).__name__}")
        # Rounded up to the next millisecond: members compare deadlines with the wall clock's
        # whole milliseconds, and a deadline from the truncated time came due up to a
        # millisecond before the delay was over.
        due = 0
        if delay != 0:
            delay_ms = max(1, round(check_seconds(delay, "delay") * 1000))
            due = math.ceil(time.time() * 1000) + delay_ms
        self._change(
            job,
            lambda lease: (RELEASE, job.partition, job.offset, job.offset + 1, due, lease.count),
            settle=True,
        )
        self._doorbell.ring()  # wake members waiting for work (or to wait until it is due)

    def reject(self, job: Job) -> None:
        """Never delivers ``job`` again: moves it to the dead-letter topic (or archives it).

        Raises:
            LockLostError: This member no longer holds the job.
        """
        self._born.check()
        self._change(
            job,
            lambda lease: self._dead_letter([job.message], "rejected", lease.count),
            settle=True,
        )

    def extend(self, job: Job, seconds: float) -> None:
        """Renews the lock of ``job`` to ``seconds`` from now (durably, with the buffered acks).

        Raises:
            LockLostError: This member no longer holds the job.
        """
        self._born.check()
        seconds = check_seconds(seconds, "seconds")
        expires = _now_ms() + int(seconds * 1000)
        self._change(
            job,
            lambda lease: (EXTEND, job.partition, job.offset, job.offset + 1, expires, 0),
            settle=False,
        )
        with self._mutex:
            # The job leaves its batch: it has a lock of its own now.
            self._settle(job, Batch(expires, self._timeout_ms))

    # -- monitoring -----------------------------------------------------------------------

    @storage_errors
    def stats(self) -> dict[str, Any]:
        """The queue's state right now (shared by all members).

        Returns:
            See :func:`tidelog.stats.work_queue_stats`, plus ``"member"`` with this member's
            ``"pending_acks"`` (buffered, not yet written), ``"prefetched"`` and
            ``"acks_lost"``, and ``"recovery"``: ``"torn_tails"`` this member truncated from
            the queue's journal (records cut short by a crash) and the ``"bytes_truncated"``.
        """
        self._born.check()
        from tidelog.stats import work_queue_stats

        with self._mutex:
            self._check_open()
            with self._journal.locked() as state:
                out = work_queue_stats(state, self._topic, self._files.size_bytes())
            out["member"] = {
                "pending_acks": self._pending_count,
                "prefetched": self._ready_count,
                "acks_lost": self.acks_lost,
            }
            out["recovery"] = self._journal.recovery
            return out

    def state_bytes(self) -> int:
        """Bytes the queue's state takes on disk (snapshot plus journal)."""
        self._born.check()
        return self._files.size_bytes()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closed, and always in a process forked after it was made."""
        return self._closed or self._born.inherited

    def _check_open(self) -> None:
        self._born.check()
        if self._closed:
            raise _core.StoreClosedError(f"work queue {self.group!r} is closed")

    def _topic_deleted(self) -> bool:
        try:
            self._topic.start_offset(0)
        except _core.TopicNotFoundError:
            return True
        return False

    @storage_errors
    def close(self) -> None:
        """Writes the buffered acks and gives back the jobs this member holds; idempotent.

        Held jobs are released with their delivery count kept; prefetched ones not handed out
        yet as if never delivered. In a process forked after the queue was made it only
        marks it closed: the jobs, the journal and its locks are the parent's.
        """
        if self._born.inherited:
            self._closed = True  # not under the mutex: a parent thread may have held it
            return
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._close_buffers()
            try:
                # A deleted topic's queue state went with it: nothing to write back.
                if not self._store.closed and not self._topic_deleted():
                    acks = self._take_pending()
                    with self._journal.locked() as state:
                        ops: list[Op] = []
                        me = self.member_id
                        self._settle_ops(state, ops, acks, return_ready=True)
                        self._journal.write(me, ops)  # applied before looking at the leases
                        released: list[Op] = [
                            (RELEASE, p, lease.start, lease.end, 0, lease.count)
                            for p, part in enumerate(state.partitions)
                            for lease in part.leases
                            if lease.member == me
                        ]
                        self._journal.write(me, released)
                        ops += released
                    if self._store.fsync == "interval":
                        self._journal.sync()
                    if ops:
                        self._doorbell.ring()
            finally:
                self._journal.close()

    def __enter__(self) -> WorkQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<tidelog.WorkQueue topic={self.topic!r} group={self.group!r} "
            f"lock_timeout={self.lock_timeout} max_deliveries={self.max_deliveries}>"
        )
