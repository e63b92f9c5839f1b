"""The tidelog exception hierarchy.

Every error tidelog raises derives from :class:`TidelogError`. The classes are defined once,
in the native core, so an error raised in Rust and one raised in Python are the same class.
An operating-system failure (a full disk, a read-only directory, a store path that is a file)
raises :class:`StorageError`, which is also an :class:`OSError` with ``errno``, ``strerror``
and ``filename`` set: ``except OSError`` and ``except TidelogError`` both catch it.

The classes live in this module for pickle (their ``__module__`` is ``tidelog.errors``), so an
error raised in a worker process is raised again in the parent as the same class.
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
    StorageError,
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
    "StorageError",
    "StoreClosedError",
    "StoreLockedError",
    "TidelogError",
    "TopicExistsError",
    "TopicNotFoundError",
]
