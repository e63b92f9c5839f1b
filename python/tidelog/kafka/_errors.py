"""librdkafka's errors as tidelog errors, in one place.

Every call into confluent-kafka that can fail goes through :func:`raise_for` or
:func:`translated`, so a caller of the Kafka backend catches the same
:class:`tidelog.TidelogError` subclasses as with a local store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

from tidelog import _core

__all__ = [
    "ASSIGNMENT_LOST",
    "FENCED",
    "INVALID_ARG",
    "MSG_TIMED_OUT",
    "PARTITION_EOF",
    "PURGE_INFLIGHT",
    "PURGE_QUEUE",
    "QUEUE_FULL",
    "UNKNOWN_PARTITION",
    "UNKNOWN_TOPIC",
    "WAIT_COORD",
    "error_for",
    "raise_for",
    "retrying",
    "translated",
]


def _local_code(name: str) -> int:
    # librdkafka's own (client-side) error codes are named with a leading underscore.
    code: int = vars(KafkaError)[f"_{name}"]
    return code


ASSIGNMENT_LOST = _local_code("ASSIGNMENT_LOST")
FENCED = _local_code("FENCED")
INVALID_ARG = _local_code("INVALID_ARG")
MSG_TIMED_OUT = _local_code("MSG_TIMED_OUT")
PARTITION_EOF = _local_code("PARTITION_EOF")
PURGE_INFLIGHT = _local_code("PURGE_INFLIGHT")
PURGE_QUEUE = _local_code("PURGE_QUEUE")
QUEUE_FULL = _local_code("QUEUE_FULL")
UNKNOWN_PARTITION = _local_code("UNKNOWN_PARTITION")
UNKNOWN_TOPIC = _local_code("UNKNOWN_TOPIC")
WAIT_COORD = _local_code("WAIT_COORD")

T = TypeVar("T")

#: Errors of a coordinator that is moving or still loading: the call is safe to repeat.
_TRANSIENT = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    WAIT_COORD,
    KafkaError.REQUEST_TIMED_OUT,
}


def retrying(call: Callable[[], T], context: str, timeout: float = 30.0) -> T:
    """Runs ``call`` (an idempotent read), repeating it while Kafka says to try again."""
    end = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as e:
            err = e.args[0] if e.args else None
            transient = isinstance(err, KafkaError) and (
                err.code() in _TRANSIENT or err.retriable()
            )
            if not transient or time.monotonic() > end:
                if isinstance(err, KafkaError):
                    raise error_for(err, context) from e
                raise _core.TidelogError(f"{context}: {e}") from e
            time.sleep(0.1)


_BY_CODE: dict[int, type[_core.TidelogError]] = {
    KafkaError.TOPIC_ALREADY_EXISTS: _core.TopicExistsError,
    KafkaError.UNKNOWN_TOPIC_OR_PART: _core.TopicNotFoundError,
    UNKNOWN_TOPIC: _core.TopicNotFoundError,
    UNKNOWN_PARTITION: _core.PartitionNotFoundError,
    KafkaError.OFFSET_OUT_OF_RANGE: _core.OffsetOutOfRangeError,
    KafkaError.MSG_SIZE_TOO_LARGE: _core.MessageTooLargeError,
    MSG_TIMED_OUT: _core.TidelogError,
    QUEUE_FULL: _core.BackpressureError,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER: _core.OutOfOrderSequenceError,
    FENCED: _core.ProducerFencedError,
    KafkaError.PRODUCER_FENCED: _core.ProducerFencedError,
    KafkaError.INVALID_PRODUCER_EPOCH: _core.ProducerFencedError,
    KafkaError.REBALANCE_IN_PROGRESS: _core.RebalanceError,
    KafkaError.ILLEGAL_GENERATION: _core.RebalanceError,
    KafkaError.UNKNOWN_MEMBER_ID: _core.RebalanceError,
    KafkaError.FENCED_INSTANCE_ID: _core.RebalanceError,
    KafkaError.STALE_MEMBER_EPOCH: _core.RebalanceError,
    KafkaError.FENCED_MEMBER_EPOCH: _core.RebalanceError,
    ASSIGNMENT_LOST: _core.RebalanceError,
    KafkaError.INVALID_CONFIG: _core.InvalidConfigError,
    INVALID_ARG: _core.InvalidConfigError,
    KafkaError.INVALID_PARTITIONS: _core.InvalidConfigError,
    KafkaError.INVALID_REPLICATION_FACTOR: _core.InvalidConfigError,
    KafkaError.TOPIC_EXCEPTION: _core.InvalidConfigError,
}


def error_for(err: KafkaError, context: str = "") -> _core.TidelogError:
    """The tidelog error for librdkafka's ``err``, its message prefixed with ``context``."""
    cls = _BY_CODE.get(err.code(), _core.TidelogError)
    if err.fatal() and cls is _core.TidelogError:
        cls = _core.ProducerFencedError if "fenc" in err.str().lower() else cls
    prefix = f"{context}: " if context else ""
    return cls(f"{prefix}{err.str()} (Kafka error {err.name()})")


def raise_for(err: KafkaError | None, context: str = "") -> None:
    """Raises the tidelog error for ``err`` unless it is None."""
    if err is not None:
        raise error_for(err, context)


@contextmanager
def translated(context: str = "") -> Iterator[None]:
    """Turns a :class:`KafkaException` raised in the block into the tidelog error."""
    try:
        yield
    except KafkaException as e:
        err = e.args[0] if e.args else None
        if isinstance(err, KafkaError):
            raise error_for(err, context) from e
        raise _core.TidelogError(f"{context}: {e}") from e
