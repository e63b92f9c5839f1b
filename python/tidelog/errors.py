"""The tidelog exception hierarchy.

Every error tidelog raises derives from :class:`TidelogError`. The classes are defined once,
in the native core, so an error raised in Rust and one raised in Python are the same class.
I/O failures are raised as the builtin :class:`OSError` subclasses.
"""

from tidelog._core import (
    BackpressureError,
    CorruptRecordError,
    InvalidConfigError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    PartitionNotFoundError,
    ProducerFencedError,
    RebalanceError,
    StoreClosedError,
    StoreLockedError,
    TidelogError,
    TopicExistsError,
    TopicNotFoundError,
)

__all__ = [
    "BackpressureError",
    "CorruptRecordError",
    "InvalidConfigError",
    "MessageTooLargeError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "PartitionNotFoundError",
    "ProducerFencedError",
    "RebalanceError",
    "StoreClosedError",
    "StoreLockedError",
    "TidelogError",
    "TopicExistsError",
    "TopicNotFoundError",
]
