"""tidelog: a Kafka inside your Python process.

A fast, durable, local log that Python applications embed to decouple producers from
consumers, absorb traffic spikes, and replay history by offset::

    import tidelog

    with tidelog.open("./data") as store:
        orders = store.create_topic("orders", partitions=3, exist_ok=True)
        partition, offset = orders.append(b'{"id": 1}', key=b"customer-7")
        for msg in orders.read(partition, offset):
            print(msg.offset, msg.value)
"""

from tidelog._core import Message, Producer, RecordBatch, RingBuffer, Topic, __version__
from tidelog.consumer import Consumer
from tidelog.errors import (
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
from tidelog.store import FsyncPolicy, OnCorruption, OnFull, Store, open
from tidelog.transaction import Transaction
from tidelog.workqueue import Job, LockLostError, WorkQueue

__all__ = [
    "BackpressureError",
    "Consumer",
    "CorruptRecordError",
    "FsyncPolicy",
    "InvalidConfigError",
    "Job",
    "LockLostError",
    "Message",
    "MessageTooLargeError",
    "OffsetOutOfRangeError",
    "OnCorruption",
    "OnFull",
    "OutOfOrderSequenceError",
    "PartitionNotFoundError",
    "Producer",
    "ProducerFencedError",
    "RebalanceError",
    "RecordBatch",
    "RingBuffer",
    "StorageError",
    "Store",
    "StoreClosedError",
    "StoreLockedError",
    "TidelogError",
    "Topic",
    "TopicExistsError",
    "TopicNotFoundError",
    "Transaction",
    "WorkQueue",
    "__version__",
    "open",
]
