"""What a work queue hands out: jobs, their batches, and dead-letter headers.

:class:`Job` is a message plus its delivery count; :class:`Batch` the jobs acquired together.

See :mod:`tidelog.workqueue` for the queue itself.
"""

from __future__ import annotations

from typing import Any

from tidelog._core import Message, TidelogError
from tidelog.queue_state import runs

__all__ = [
    "COUNT_HEADER",
    "REASON_HEADER",
    "SOURCE_HEADERS",
    "Acks",
    "Batch",
    "Claim",
    "Job",
    "LockLostError",
    "dead_letter_headers",
    "group_acks",
]

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


class Batch:
    """Jobs acquired together.

    ``expires`` is their lock expiry (ms since the epoch), ``outstanding`` how many are not
    settled yet, and ``half`` (``time.time()`` seconds) the moment after which less than half
    the lock timeout is left, so buffered acks must be written and prefetched jobs given back.
    """

    __slots__ = ("expires", "half", "outstanding")

    def __init__(self, expires: int, outstanding: int, timeout_ms: int) -> None:
        self.expires = expires
        self.half = (expires - timeout_ms / 2) / 1000
        self.outstanding = outstanding


class Job:
    """A message acquired from a work queue: the ``tidelog.Message`` plus its delivery count.

    ``tidelog.Message`` is a final native class, so the queue hands out this small wrapper.
    It reads like the message: ``job.value``, ``job.key``, ``job.headers``, ``job.offset``,
    ``job.partition``, ``job.topic`` and ``job.timestamp_ms`` are the message's, and
    ``job.message`` is the message itself. ``job.delivery_count`` is how many times the
    message was handed out, this time included (1 the first time).

    ``job.queue`` (the queue that handed it out) and ``job.batch`` (the acquisition it
    belongs to, None once it is settled) are the queue's bookkeeping, not for applications.
    """

    __slots__ = ("batch", "delivery_count", "message", "queue")

    def __init__(self, message: Message, delivery_count: int, queue: Any, batch: Any) -> None:
        """Wraps ``message``, handed out for the ``delivery_count``-th time by ``queue``."""
        self.message = message
        self.delivery_count = delivery_count
        self.queue = queue
        self.batch: Batch | None = batch

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
        """The message's timestamp (ms since the epoch)."""
        return self.message.timestamp_ms

    def __repr__(self) -> str:
        return (
            f"<tidelog.Job {self.topic}/{self.partition}@{self.offset} "
            f"delivery_count={self.delivery_count}>"
        )


Claim = tuple[int, int, int, int]
"""Messages claimed by one ACQUIRE: (partition, start, end, delivery count)."""

Acks = tuple[list[Job], dict[int, list[tuple[int, int]]]]
"""Acknowledged jobs, and their offsets as sorted runs per partition."""


def group_acks(jobs: list[Job]) -> Acks:
    """``jobs`` with their offsets grouped into sorted runs per partition."""
    by_partition: dict[int, list[int]] = {}
    for job in jobs:
        m = job.message
        by_partition.setdefault(m.partition, []).append(m.offset)
    grouped: dict[int, list[tuple[int, int]]] = {}
    for p, offsets in by_partition.items():
        offsets.sort()
        grouped[p] = runs(offsets)
    return jobs, grouped


def dead_letter_headers(message: Message, reason: str, count: int) -> dict[str, bytes]:
    """The headers of ``message`` in the dead-letter topic.

    Its own, plus why, how often it was tried and where it came from.
    """
    headers = dict(message.headers)
    headers[REASON_HEADER] = reason.encode()
    headers[COUNT_HEADER] = str(count).encode()
    for name, value in zip(
        SOURCE_HEADERS, (message.topic, message.partition, message.offset), strict=True
    ):
        headers[name] = str(value).encode()
    return headers
