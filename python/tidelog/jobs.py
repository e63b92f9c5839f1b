"""What a work queue hands out: jobs, their batches, and dead-letter headers.

:data:`Job` is a message plus its delivery count; :data:`Batch` the jobs acquired together.

See :mod:`tidelog.workqueue` for the queue itself.
"""

from __future__ import annotations

from tidelog import _core
from tidelog._core import Message, TidelogError

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


Job = _core.Job
"""A message acquired from a work queue: the ``tidelog.Message`` plus its delivery count.

``job.value``, ``job.key``, ``job.headers``, ``job.offset``, ``job.partition``, ``job.topic``
and ``job.timestamp_ms`` are the message's, ``job.message`` is the message itself and
``job.delivery_count`` how many times it was handed out, this time included (1 the first
time). Native (``tidelog._core.Job``): a queue hands out millions of them.
"""

Batch = _core.JobBatch
"""Jobs acquired together: ``expires`` is their lock expiry (ms since the epoch),
``outstanding`` how many are not settled yet, and ``half`` (``time.time()`` seconds) the
moment after which less than half the lock timeout is left, so buffered acks must be
written and prefetched jobs given back."""

Claim = tuple[int, int, int, int]
"""Messages claimed by one ACQUIRE: (partition, start, end, delivery count)."""

Acks = tuple[list[Job], dict[int, list[tuple[int, int]]]]
"""Acknowledged jobs, and their offsets as sorted runs per partition."""


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
