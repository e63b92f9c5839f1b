"""tidelog for asyncio: the same store, producers, consumers, work queues and transactions.

::

    import tidelog.aio

    async with tidelog.aio.open("./data") as store:
        async with store.producer(name="api") as producer:
            meta = await producer.send("orders", b"v", key=b"k")   # room in the buffer
            await meta                                              # written
        async with store.consumer("orders", group="billing") as consumer:
            async for msg in consumer:
                ...
        queue = await store.work_queue("jobs", group="w")           # closed with the store

Waiting never blocks the event loop and never polls on a timer: a waiting task is woken by
the store's own signal (the topic doorbell that every append rings, in any process, or the
producer's end of pressure), which one native thread per store and loop turns into a
readable eventfd the loop watches. Works under asyncio's default loop and uvloop.
Cancelling a waiting call leaves nothing half done: every step that changes state is one
non-blocking call made after the wait.
"""

from tidelog.aio._making import Making
from tidelog.aio.consumer import Consumer
from tidelog.aio.producer import Producer, SendResult
from tidelog.aio.store import Opening, Store, open
from tidelog.aio.transaction import Transaction
from tidelog.aio.workqueue import WorkQueue

__all__ = [
    "Consumer",
    "Making",
    "Opening",
    "Producer",
    "SendResult",
    "Store",
    "Transaction",
    "WorkQueue",
    "open",
]
