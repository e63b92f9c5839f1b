"""Work queues: per-message acknowledgement, lock timeouts, redelivery and dead letters.

See :meth:`tidelog.Store.work_queue`. Members of a queue (in any threads or processes) take
messages of a topic one at a time instead of owning partitions, as Kafka's share groups do.

State is kept the way consumer-group offsets are: in an internal log topic,
``__work_queues``. Every change (a message acquired by a member until some time, acked,
released, dead-lettered, its lock extended) is ONE record, routed by the queue's name so a
queue's records stay in order in one partition. A member rebuilds the state by reading the
records, and catches up on the others' records before every change. Changes are serialized
across processes by an exclusive ``flock`` of ``<store>/work_queues/<topic>/<group>.lock``,
so a message is held by at most one member at a time and a member never acts on stale state.

The state of a partition is small however long the topic grows: ``acked_below`` (every
message below it is acknowledged or dead-lettered), plus, above it, the finished offsets, the
held locks and the delivery counts of messages not yet finished. Offsets at or above
``frontier`` were never handed out.

Record layout (little-endian): key = ``group NUL topic`` (UTF-8); value = u8 op, u32
partition, i64 offset, i64 lock expiry (ms since the epoch, or 0), u32 delivery count, then
the member id (UTF-8).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tidelog import _core
from tidelog._core import InvalidConfigError, Message, OffsetOutOfRangeError, TidelogError
from tidelog.groups import _plain

if TYPE_CHECKING:
    from tidelog.store import Store

__all__ = ["WORK_QUEUES_TOPIC", "Job", "LockLostError", "WorkQueue"]

WORK_QUEUES_TOPIC = "__work_queues"
_PARTITIONS = 8
_RECORD = struct.Struct("<BIqqI")
_READ_AHEAD = 256
_READ_AHEAD_BYTES = 1 << 20
_ACQUIRE, _ACK, _RELEASE, _DEAD, _EXTEND = 1, 2, 3, 4, 5

REASON_HEADER = "tidelog.dead_letter.reason"
COUNT_HEADER = "tidelog.dead_letter.delivery_count"
SOURCE_HEADERS = (
    "tidelog.dead_letter.topic",
    "tidelog.dead_letter.partition",
    "tidelog.dead_letter.offset",
)


class LockLostError(TidelogError):
    """The member no longer holds the message.

    Its lock expired and another member took it, or it was already acknowledged, released or
    dead-lettered.
    """


class Job:
    """A message acquired from a work queue, with how many times it was handed out.

    ``tidelog.Message`` is a native final class, so the queue hands out this small wrapper:
    ``job.message`` is the message; ``value``, ``key``, ``headers``, ``offset``,
    ``partition``, ``topic`` and ``timestamp_ms`` are forwarded to it.
    """

    __slots__ = ("_member", "delivery_count", "message")

    def __init__(self, message: Message, delivery_count: int, member: str) -> None:
        """Wraps ``message``, handed out for the ``delivery_count``-th time."""
        self.message = message
        self.delivery_count = delivery_count
        self._member = member

    @property
    def value(self) -> bytes:
        """The message's value."""
        return self.message.value

    @property
    def key(self) -> bytes | None:
        """The message's key."""
        return self.message.key

    @property
    def headers(self) -> dict[str, bytes]:
        """The message's headers."""
        return self.message.headers

    @property
    def offset(self) -> int:
        """The message's offset in its partition."""
        return self.message.offset

    @property
    def partition(self) -> int:
        """The message's partition."""
        return self.message.partition

    @property
    def topic(self) -> str:
        """The message's topic."""
        return self.message.topic

    @property
    def timestamp_ms(self) -> int:
        """The message's timestamp."""
        return self.message.timestamp_ms

    def __repr__(self) -> str:
        return (
            f"<tidelog.Job {self.topic}/{self.partition}@{self.offset} "
            f"delivery_count={self.delivery_count}>"
        )


@dataclass
class _Partition:
    """The queue's state for one partition of the topic."""

    acked_below: int = 0
    frontier: int = 0
    done: set[int] = field(default_factory=set)
    locks: dict[int, tuple[str, int]] = field(default_factory=dict)  # offset -> member, expiry
    released: set[int] = field(default_factory=set)
    counts: dict[int, int] = field(default_factory=dict)

    def finish(self, offset: int) -> None:
        self.locks.pop(offset, None)
        self.released.discard(offset)
        self.counts.pop(offset, None)
        self.done.add(offset)
        while self.acked_below in self.done:
            self.done.discard(self.acked_below)
            self.acked_below += 1
        self.frontier = max(self.frontier, self.acked_below)

    def skip_to(self, start: int) -> None:
        """Retention deleted everything below ``start``: forget it."""
        if self.acked_below >= start:
            return
        self.acked_below = start
        self.frontier = max(self.frontier, start)
        self.done = {o for o in self.done if o >= start}
        self.released = {o for o in self.released if o >= start}
        self.locks = {o: v for o, v in self.locks.items() if o >= start}
        self.counts = {o: c for o, c in self.counts.items() if o >= start}
        while self.acked_below in self.done:
            self.done.discard(self.acked_below)
            self.acked_below += 1


def _now_ms() -> int:
    return int(time.time() * 1000)


class WorkQueue:
    """One member of a work queue on a topic. Create it with :meth:`Store.work_queue`.

    Iterate it (``for job in queue``) to block for jobs, or call :meth:`acquire`. Each job is
    held by this member alone until :meth:`ack`, :meth:`release`, :meth:`reject` or until its
    lock expires (``lock_timeout`` seconds after acquiring, renewable with :meth:`extend`).
    """

    def __init__(
        self,
        store: Store,
        topic: str,
        group: str,
        *,
        lock_timeout: float = 30.0,
        max_deliveries: int = 5,
        dead_letter: str | None = None,
    ) -> None:
        """Joins the work queue ``group`` on ``topic``; see :meth:`tidelog.Store.work_queue`."""
        if not isinstance(topic, str):
            raise TypeError(f"topic must be str, got {type(topic).__name__}")
        if not isinstance(group, str) or not group:
            raise TypeError("group must be a non-empty str")
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)):
            raise TypeError(f"lock_timeout must be a number, got {type(lock_timeout).__name__}")
        if not lock_timeout > 0:
            raise InvalidConfigError(f"lock_timeout must be positive, got {lock_timeout}")
        if isinstance(max_deliveries, bool) or not isinstance(max_deliveries, int):
            raise TypeError(f"max_deliveries must be int, got {type(max_deliveries).__name__}")
        if max_deliveries < 1:
            raise InvalidConfigError(f"max_deliveries must be >= 1, got {max_deliveries}")
        if dead_letter is not None and not isinstance(dead_letter, str):
            raise TypeError(f"dead_letter must be str or None, got {type(dead_letter).__name__}")
        if dead_letter == topic:
            raise InvalidConfigError("dead_letter must differ from the queue's topic")
        self._store = store
        self._topic = store.topic(topic)
        self.topic, self.group = topic, group
        self.lock_timeout = float(lock_timeout)
        self.max_deliveries = max_deliveries
        self.dead_letter = dead_letter
        self._dead_topic: _core.Topic | None = None
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._log = store._core.create_topic(WORK_QUEUES_TOPIC, _PARTITIONS, exist_ok=True)
        self._key = f"{group}\0{topic}".encode()
        self._log_partition = _core.partition_for_key(group.encode(), _PARTITIONS)
        self._read_upto = self._log.start_offset(self._log_partition)
        self._parts = [_Partition() for _ in range(self._topic.partitions)]
        self._windows: list[dict[int, Message]] = [{} for _ in self._parts]
        self.acked = 0
        self.dead_lettered = 0
        self._next_partition = 0
        self._closed = False
        self._mutex = threading.Lock()
        base = Path(store.path) / "work_queues" / topic
        base.mkdir(parents=True, exist_ok=True)
        safe = group if _plain(group) else "~" + group.encode().hex()
        self._lock_fd = os.open(base / f"{safe}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        with self._locked():
            pass  # rebuilds the state from the log

    # -- state ----------------------------------------------------------------------------

    class _Locked:
        def __init__(self, queue: WorkQueue) -> None:
            self.queue = queue

        def __enter__(self) -> None:
            q = self.queue
            q._mutex.acquire()
            try:
                fcntl.flock(q._lock_fd, fcntl.LOCK_EX)
            except BaseException:
                q._mutex.release()
                raise
            try:
                q._catch_up()
            except BaseException:
                self.__exit__(None, None, None)
                raise

        def __exit__(self, *exc: object) -> None:
            q = self.queue
            try:
                fcntl.flock(q._lock_fd, fcntl.LOCK_UN)
            finally:
                q._mutex.release()

    def _locked(self) -> WorkQueue._Locked:
        self._check_open()
        return WorkQueue._Locked(self)

    def _catch_up(self) -> None:
        """Applies the queue's records appended since this member last looked."""
        p = self._log_partition
        end = self._log.end_offset(p)
        at = max(self._read_upto, self._log.start_offset(p))
        while at < end:
            batch = self._log.read_batch(p, at, max_messages=10_000)
            if len(batch) == 0:
                break
            for msg in batch:
                if msg.key == self._key:
                    self._apply(msg.value)
            at = batch.next_offset
        self._read_upto = at

    def _apply(self, value: bytes) -> None:
        op, partition, offset, expires, count = _RECORD.unpack_from(value, 0)
        if partition >= len(self._parts):
            return
        part = self._parts[partition]
        if offset < part.acked_below or offset in part.done:
            return
        if op == _ACQUIRE:
            member = value[_RECORD.size :].decode()
            part.locks[offset] = (member, expires)
            part.counts[offset] = count
            part.released.discard(offset)
            part.frontier = max(part.frontier, offset + 1)
        elif op == _EXTEND:
            if offset in part.locks:
                part.locks[offset] = (part.locks[offset][0], expires)
        elif op == _RELEASE:
            part.locks.pop(offset, None)
            part.counts[offset] = count
            part.released.add(offset)
            part.frontier = max(part.frontier, offset + 1)
        elif op == _ACK:
            part.finish(offset)
            self.acked += 1
        elif op == _DEAD:
            part.finish(offset)
            self.dead_lettered += 1
        else:
            raise _core.CorruptRecordError(f"work-queue record of unknown kind {op}")

    def _write(
        self, op: int, partition: int, offset: int, expires: int = 0, count: int = 0
    ) -> None:
        """Appends one state change (under the lock) and applies it."""
        value = _RECORD.pack(op, partition, offset, expires, count)
        if op == _ACQUIRE:
            value += self.member_id.encode()
        self._log.append(value, key=self._key, partition=self._log_partition)
        self._catch_up()

    # -- acquiring ------------------------------------------------------------------------

    def _candidate(self, partition: int, now: int) -> int | None:
        """The lowest offset of ``partition`` that may be handed out now, if any."""
        part = self._parts[partition]
        start = self._topic.start_offset(partition)
        if start > part.acked_below:
            part.skip_to(start)
        best: int | None = min(part.released) if part.released else None
        for offset, (_, expires) in part.locks.items():
            if expires <= now and (best is None or offset < best):
                best = offset
        if best is None and part.frontier < self._topic.end_offset(partition):
            best = part.frontier
        return best

    def _dead_letter(self, message: Message, reason: str, count: int) -> None:
        """Moves ``message`` to the dead-letter topic (or archives it) and finishes it."""
        if self.dead_letter is not None:
            if self._dead_topic is None:
                self._dead_topic = self._store._core.create_topic(
                    self.dead_letter, 1, exist_ok=True
                )
            headers = dict(message.headers)
            headers[REASON_HEADER] = reason.encode()
            headers[COUNT_HEADER] = str(count).encode()
            for name, value in zip(
                SOURCE_HEADERS, (message.topic, message.partition, message.offset), strict=True
            ):
                headers[name] = str(value).encode()
            self._dead_topic.append(message.value, key=message.key, headers=headers)
        self._write(_DEAD, message.partition, message.offset, count=count)

    def _read(self, partition: int, offset: int) -> Message | None:
        """The message at ``offset``, from a small read-ahead window of the partition.

        Reading one message at a time would cost a positioning per message; the window
        serves the sequential acquisitions at the frontier from one read.
        """
        window = self._windows[partition]
        message = window.get(offset)
        if message is not None:
            return message
        try:
            batch = self._topic.read_batch(
                partition, offset, max_messages=_READ_AHEAD, max_bytes=_READ_AHEAD_BYTES
            )
        except OffsetOutOfRangeError:
            return None
        window.clear()
        for msg in batch:
            window[msg.offset] = msg
        return window.get(offset)

    def _try_acquire(self) -> Job | None:
        with self._locked():
            n = len(self._parts)
            for i in range(n):
                partition = (self._next_partition + i) % n
                while True:
                    offset = self._candidate(partition, _now_ms())
                    if offset is None:
                        break
                    message = self._read(partition, offset)
                    if message is None:
                        # Deleted by retention meanwhile: nothing to hand out.
                        self._parts[partition].skip_to(self._topic.start_offset(partition))
                        break
                    count = self._parts[partition].counts.get(offset, 0)
                    if count >= self.max_deliveries:
                        self._dead_letter(message, "max_deliveries", count)
                        continue
                    expires = _now_ms() + int(self.lock_timeout * 1000)
                    self._write(_ACQUIRE, partition, offset, expires, count + 1)
                    self._next_partition = partition + 1
                    return Job(message, count + 1, self.member_id)
        return None

    def _next_expiry(self) -> float | None:
        """Seconds until the earliest lock of the queue expires, if any is held."""
        expiries = [e for part in self._parts for _, e in part.locks.values()]
        if not expiries:
            return None
        return max(min(expiries) - _now_ms(), 0) / 1000

    def acquire(self, timeout: float | None = 1.0) -> Job | None:
        """Takes the next available message, waiting up to ``timeout`` seconds (None: forever).

        Returns:
            The job (held by this member until acked, released, rejected or its lock
            expires), or None if none became available in time.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float))
        ):
            raise TypeError(f"timeout must be a number or None, got {type(timeout).__name__}")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            ticket = self._topic.ticket()
            job = self._try_acquire()
            if job is not None:
                return job
            wait = 0.05  # releases by other members do not ring the topic's doorbell
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                wait = min(wait, remaining)
            expiry = self._next_expiry()
            if expiry is not None:
                wait = min(wait, expiry)
            if wait > 0:
                self._topic.wait(ticket, wait)

    def __iter__(self) -> Iterator[Job]:
        return self

    def __next__(self) -> Job:
        while True:
            job = self.acquire(1.0)
            if job is not None:
                return job

    # -- settling -------------------------------------------------------------------------

    def _held(self, job: Job) -> _Partition:
        """The job's partition state, checking (under the lock) this member still holds it."""
        if not isinstance(job, Job):
            raise TypeError(f"expected a Job from this queue, got {type(job).__name__}")
        if job.topic != self.topic or job._member != self.member_id:
            raise LockLostError(f"{job!r} was not acquired by this member of {self.group!r}")
        part = self._parts[job.partition]
        lock = part.locks.get(job.offset)
        if lock is None or lock[0] != self.member_id:
            raise LockLostError(
                f"{job!r} is no longer held by this member (its lock expired and another "
                "member took it, or it was already acked, released or rejected)"
            )
        return part

    def ack(self, job: Job) -> None:
        """Marks ``job`` done: it is never delivered again.

        Raises:
            LockLostError: This member no longer holds the job.
        """
        with self._locked():
            self._held(job)
            self._write(_ACK, job.partition, job.offset)

    def release(self, job: Job) -> None:
        """Puts ``job`` back in the queue now; its delivery count is kept.

        Raises:
            LockLostError: This member no longer holds the job.
        """
        with self._locked():
            part = self._held(job)
            count = part.counts.get(job.offset, job.delivery_count)
            self._write(_RELEASE, job.partition, job.offset, count=count)

    def reject(self, job: Job) -> None:
        """Never delivers ``job`` again: moves it to the dead-letter topic (or archives it).

        Raises:
            LockLostError: This member no longer holds the job.
        """
        with self._locked():
            part = self._held(job)
            count = part.counts.get(job.offset, job.delivery_count)
            self._dead_letter(job.message, "rejected", count)

    def extend(self, job: Job, seconds: float) -> None:
        """Renews the lock of ``job`` to ``seconds`` from now.

        Raises:
            LockLostError: This member no longer holds the job.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
        if not seconds > 0:
            raise InvalidConfigError(f"seconds must be positive, got {seconds}")
        with self._locked():
            self._held(job)
            self._write(_EXTEND, job.partition, job.offset, _now_ms() + int(seconds * 1000))

    # -- monitoring -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The queue's state right now.

        Returns:
            ``{"partitions": {p: {"acked_below", "in_flight", "backlog"}}, "in_flight",
            "backlog", "acked", "dead_lettered"}``: ``in_flight`` counts messages held under
            an unexpired lock, ``backlog`` messages not yet finished nor held.
        """
        with self._locked():
            now = _now_ms()
            partitions: dict[int, dict[str, int]] = {}
            for p, part in enumerate(self._parts):
                start = self._topic.start_offset(p)
                if start > part.acked_below:
                    part.skip_to(start)
                in_flight = sum(1 for _, e in part.locks.values() if e > now)
                unfinished = self._topic.end_offset(p) - part.acked_below - len(part.done)
                partitions[p] = {
                    "acked_below": part.acked_below,
                    "in_flight": in_flight,
                    "backlog": unfinished - in_flight,
                }
            return {
                "partitions": partitions,
                "in_flight": sum(v["in_flight"] for v in partitions.values()),
                "backlog": sum(v["backlog"] for v in partitions.values()),
                "acked": self.acked,
                "dead_lettered": self.dead_lettered,
            }

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise _core.StoreClosedError(f"work queue {self.group!r} is closed")

    def close(self) -> None:
        """Releases the messages this member holds (delivery counts kept); idempotent."""
        if self._closed:
            return
        try:
            if not self._store.closed:
                with self._locked():
                    for p, part in enumerate(self._parts):
                        for offset, (member, _) in sorted(part.locks.items()):
                            if member == self.member_id:
                                count = part.counts.get(offset, 1)
                                self._write(_RELEASE, p, offset, count=count)
        finally:
            self._closed = True
            os.close(self._lock_fd)

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
