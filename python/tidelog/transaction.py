"""Transactions: a consume-process-produce step that happens completely or not at all.

See :meth:`tidelog.Store.transaction`. The outputs go through a named idempotent producer
with the transactional flag; the consumer's new offsets go, as one record, into the same
transaction (in ``__consumer_offsets``). Committing writes a commit marker to every
partition the transaction touched, after durably recording the decision, so a crash at
any point leaves either all of it visible or none: the producer's next instance finishes
a decided commit and aborts anything else. Readers see only committed transactions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from tidelog import _core
from tidelog._core import InvalidConfigError
from tidelog._fork import Born

if TYPE_CHECKING:
    from tidelog._protocols import TransactionMember

__all__ = ["Transaction"]


class Transaction:
    """One open transaction; use it as a context manager (see :meth:`Store.transaction`).

    Leaving the block normally commits; an exception aborts (and rewinds the consumer to
    its committed offsets, so the same input comes again) and propagates.
    """

    def __init__(self, producer: _core.Producer, consumer: TransactionMember | None = None) -> None:
        """Begins a transaction on ``producer``, committing ``consumer``'s input offsets.

        ``consumer`` is a :class:`tidelog.Consumer` with ``delivery="exactly-once"``; the
        transaction uses it through :class:`tidelog._protocols.TransactionMember`.
        """
        if not isinstance(producer, _core.Producer):
            raise TypeError(f"producer must be a tidelog Producer, got {type(producer).__name__}")
        if consumer is not None and consumer.delivery != "exactly-once":
            raise InvalidConfigError(
                "a transaction commits the offsets of a consumer opened with "
                f"delivery='exactly-once'; this one uses {consumer.delivery!r}"
            )
        self._born = Born()
        self._producer = producer
        self._consumer = consumer
        self._done = False
        producer.begin_transaction()
        if consumer is not None:
            try:
                consumer.transaction_begin()
            except BaseException:
                producer.abort_transaction()
                raise

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Sends a message as part of the transaction (visible once it commits).

        A ``value`` of None is a tombstone: compaction deletes the key.
        """
        self._check_open()
        self._producer.send(topic, value, key=key, headers=headers, partition=partition)

    def commit(self) -> None:
        """Commits the outputs and the consumer's offsets together.

        Raises:
            RebalanceError: The consumer lost a partition it read from; the transaction
                is aborted instead.
            ProducerFencedError: A newer instance of the producer took over; it aborts
                this transaction.
        """
        self._check_open()
        consumer = self._consumer
        offsets: dict[int, int] = {}
        try:
            if consumer is not None:
                offsets = consumer.transaction_send_offsets(self._producer)
        except BaseException:
            self.abort()
            raise
        self._done = True
        try:
            self._producer.commit_transaction()
        except BaseException:
            if consumer is not None:
                consumer.transaction_aborted()
            raise
        if consumer is not None:
            consumer.transaction_committed(offsets)

    def abort(self) -> None:
        """Aborts: readers never see the outputs; the consumer rewinds to its commits."""
        self._born.check()
        if self._done:
            return
        self._done = True
        try:
            if self._producer.in_transaction:
                self._producer.abort_transaction()
        finally:
            if self._consumer is not None:
                self._consumer.transaction_aborted()

    @property
    def done(self) -> bool:
        """True once committed or aborted."""
        return self._done

    def _check_open(self) -> None:
        self._born.check()
        if self._done:
            raise InvalidConfigError("the transaction already ended")

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()
