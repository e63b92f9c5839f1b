"""librdkafka's errors as tidelog errors, in one place.

Every call into confluent-kafka that can fail goes through :func:`raise_for`,
:func:`translated` or :func:`retrying`, so a caller of the Kafka backend catches the same
:class:`tidelog.TidelogError` subclasses as with a local store. :func:`retrying` is for the
direct round trips that are safe to repeat (metadata, offsets, configs, groups): it tries
them again after a retriable error, as Kafka's clients do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

from tidelog import _core
from tidelog.kafka._common import TIMEOUT

__all__ = [
    "ASSIGNMENT_LOST",
    "FENCED",
    "INVALID_ARG",
    "MAX_POLL_EXCEEDED",
    "MSG_TIMED_OUT",
    "PARTITION_EOF",
    "PURGE_INFLIGHT",
    "PURGE_QUEUE",
    "QUEUE_FULL",
    "UNKNOWN_PARTITION",
    "UNKNOWN_TOPIC",
    "WAIT_COORD",
    "error_for",
    "partitions_checked",
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
MAX_POLL_EXCEEDED = _local_code("MAX_POLL_EXCEEDED")
MSG_TIMED_OUT = _local_code("MSG_TIMED_OUT")
PARTITION_EOF = _local_code("PARTITION_EOF")
PURGE_INFLIGHT = _local_code("PURGE_INFLIGHT")
PURGE_QUEUE = _local_code("PURGE_QUEUE")
QUEUE_FULL = _local_code("QUEUE_FULL")
UNKNOWN_PARTITION = _local_code("UNKNOWN_PARTITION")
UNKNOWN_TOPIC = _local_code("UNKNOWN_TOPIC")
WAIT_COORD = _local_code("WAIT_COORD")

T = TypeVar("T")
P = TypeVar("P")

#: Kafka's retriable errors (``RetriableException`` in its Java clients) that a read or an
#: idempotent admin call may get while the cluster moves: a partition with no leader yet
#: (just after its topic was created) or a new one, a coordinator that moved or is loading,
#: a request or connection that failed. librdkafka reports them with ``retriable()``
#: False and leaves the retry to the caller. Not UNKNOWN_TOPIC_OR_PART: it is also the
#: answer for a deleted topic, raised at once (stats() skips a topic deleted meanwhile),
#: and create_topic returns only once the metadata lists the new topic.
_RETRIABLE = frozenset(
    {
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REPLICA_NOT_AVAILABLE,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.PREFERRED_LEADER_NOT_AVAILABLE,
        KafkaError.KAFKA_STORAGE_ERROR,
        KafkaError.LISTENER_NOT_FOUND,
        KafkaError.NOT_CONTROLLER,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError.THROTTLING_QUOTA_EXCEEDED,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        WAIT_COORD,
        _local_code("TRANSPORT"),
        _local_code("ALL_BROKERS_DOWN"),
        _local_code("TIMED_OUT"),
    }
)
#: The first pause between two tries and the longest (seconds): the pause doubles, as with
#: Kafka's ``retry.backoff.ms`` and ``retry.backoff.max.ms``.
_BACKOFF = 0.05
_BACKOFF_MAX = 1.0


def retrying(call: Callable[[float], T], context: str, timeout: float = TIMEOUT) -> T:
    """Runs ``call`` (an idempotent round trip), again while Kafka answers a retriable error.

    As Kafka's clients within their ``default.api.timeout.ms``: every try gets the seconds
    left of one ``timeout`` (``call``'s argument, for librdkafka's own time limit), with a
    short pause between tries. librdkafka refreshes its metadata itself after an answer that
    says a partition's leader moved, so the next try asks the new leader. Any other error,
    or a retriable one once the time is spent, raises the tidelog error (see
    :func:`translated`).
    """
    end = time.monotonic() + timeout
    pause = _BACKOFF
    while True:
        try:
            return call(max(end - time.monotonic(), 0.001))
        except KafkaException as e:
            err = e.args[0] if e.args else None
            retriable = isinstance(err, KafkaError) and (
                err.code() in _RETRIABLE or err.retriable()
            )
            if not retriable or end - time.monotonic() <= pause:
                raise _translated_exception(e, context) from e
        except TimeoutError as e:  # an admin call's future, past the time left
            raise _core.TidelogError(f"{context}: no answer from Kafka within {timeout} s") from e
        time.sleep(pause)
        pause = min(2 * pause, _BACKOFF_MAX)


def partitions_checked(answer: list[P]) -> list[P]:
    """``answer`` (TopicPartitions), once none of them carries an error.

    Kafka answers some requests (OffsetFetch, ListOffsets) per partition: an error on one
    comes back in its ``error``, not as an exception, and reading the partition as if it
    had no offset is a silently wrong answer (nothing committed: lag counts from the start,
    a mirror starts over). Raised as :class:`KafkaException` inside :func:`retrying`'s
    call, so a retriable one is tried again like an error of the whole answer.
    """
    for tp in answer:
        err = getattr(tp, "error", None)
        if err is not None:
            raise KafkaException(err)
    return answer


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
        raise _translated_exception(e, context) from e


def _translated_exception(e: KafkaException, context: str) -> _core.TidelogError:
    err = e.args[0] if e.args else None
    if isinstance(err, KafkaError):
        return error_for(err, context)
    return _core.TidelogError(f"{context}: {e}")
