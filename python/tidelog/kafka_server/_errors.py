"""Kafka error codes, and the one mapping from tidelog's exceptions to them."""

from __future__ import annotations

from tidelog import _core

__all__ = ["code_for"]

NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
MESSAGE_TOO_LARGE = 10
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
INVALID_TOPIC_EXCEPTION = 17
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_REQUEST = 42
INVALID_CONFIG = 40
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
KAFKA_STORAGE_ERROR = 56
MEMBER_ID_REQUIRED = 79
GROUP_ID_NOT_FOUND = 69
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71
INVALID_TRANSACTION_TIMEOUT = 50
FENCED_INSTANCE_ID = 82
PRODUCER_FENCED = 90
UNKNOWN_SERVER_ERROR = -1

_BY_EXCEPTION: tuple[tuple[type[BaseException], int], ...] = (
    (_core.OutOfOrderSequenceError, OUT_OF_ORDER_SEQUENCE_NUMBER),
    (_core.ProducerFencedError, INVALID_PRODUCER_EPOCH),
    (_core.MessageTooLargeError, MESSAGE_TOO_LARGE),
    (_core.TopicNotFoundError, UNKNOWN_TOPIC_OR_PARTITION),
    (_core.PartitionNotFoundError, UNKNOWN_TOPIC_OR_PARTITION),
    (_core.OffsetOutOfRangeError, OFFSET_OUT_OF_RANGE),
    # A commit of a generation older than its group's (a member that has not seen a
    # rebalance yet), refused as Kafka's coordinator refuses it.
    (_core.RebalanceError, ILLEGAL_GENERATION),
    (_core.TopicExistsError, TOPIC_ALREADY_EXISTS),
    (_core.StorageError, KAFKA_STORAGE_ERROR),
    (_core.CorruptRecordError, KAFKA_STORAGE_ERROR),
)


def code_for(error: BaseException, *, invalid: int = INVALID_REQUEST) -> int:
    """The Kafka error code answering ``error``; ``invalid`` for InvalidConfigError."""
    for cls, code in _BY_EXCEPTION:
        if isinstance(error, cls):
            return code
    if isinstance(error, _core.InvalidConfigError):
        return invalid
    return UNKNOWN_SERVER_ERROR
