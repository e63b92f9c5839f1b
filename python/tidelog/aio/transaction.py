"""Async transactions: ``async with store.transaction(producer, consumer) as tx``.

The synchronous :class:`tidelog.Transaction` does the work (the same markers, the same
offsets record); the waits around it are the async producer's: beginning and committing
first wait, in the loop, for the writer to have written what was sent, so the native calls
that follow only write markers and records. Leaving the block with an exception (a
cancellation included) aborts: nothing of it is ever visible and the consumer rewinds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from tidelog._core import InvalidConfigError
from tidelog.transaction import Transaction as SyncTransaction

if TYPE_CHECKING:
    from tidelog.aio.consumer import Consumer
    from tidelog.aio.producer import Producer

__all__ = ["Transaction"]


class Transaction:
    """One transaction; begin it with ``async with`` (see :meth:`Store.transaction`)."""

    def __init__(self, producer: Producer, consumer: Consumer | None = None) -> None:
        """Prepares a transaction on ``producer`` with ``consumer``'s offsets."""
        if consumer is not None and consumer.delivery != "exactly-once":
            raise InvalidConfigError(
                "a transaction commits the offsets of a consumer opened with "
                f"delivery='exactly-once'; this one uses {consumer.delivery!r}"
            )
        self._producer = producer
        self._consumer = consumer
        self._tx: SyncTransaction | None = None

    async def begin(self) -> Transaction:
        """Begins it (``async with`` does): waits for earlier sends to be written first."""
        if self._tx is not None:
            raise InvalidConfigError("the transaction already began")
        await self._producer.flush()
        self._tx = SyncTransaction(
            self._producer.native, None if self._consumer is None else self._consumer.sync
        )
        return self

    def _open(self) -> SyncTransaction:
        if self._tx is None:
            raise InvalidConfigError("the transaction has not begun: use `async with`")
        if self._tx.done:
            raise InvalidConfigError("the transaction already ended")
        return self._tx

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Sends a message as part of the transaction (visible once it commits)."""
        self._open()
        await self._producer.send(topic, value, key=key, headers=headers, partition=partition)

    async def commit(self) -> None:
        """Commits the outputs and the consumer's offsets together.

        Raises:
            RebalanceError: The consumer lost a partition it read from; aborted instead.
            ProducerFencedError: A newer instance of the producer took over.
        """
        tx = self._open()
        try:
            await self._producer.flush()
        except BaseException:
            tx.abort()
            raise
        tx.commit()

    async def abort(self) -> None:
        """Aborts: readers never see the outputs; the consumer rewinds to its commits."""
        if self._tx is not None:
            self._tx.abort()

    @property
    def done(self) -> bool:
        """True once committed or aborted."""
        return self._tx is not None and self._tx.done

    async def __aenter__(self) -> Transaction:
        return await self.begin()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tx is None or self._tx.done:
            return
        if exc_type is None:
            await self.commit()
        else:
            await self.abort()
