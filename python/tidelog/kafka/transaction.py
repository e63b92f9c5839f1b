"""Transactions on Kafka: a transactional producer plus ``send_offsets_to_transaction``.

Leaving the block normally commits the outputs and the consumer's input offsets atomically
(Kafka's transaction coordinator); an exception aborts them and rewinds the consumer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from tidelog import _core

if TYPE_CHECKING:
    from tidelog.kafka.consumer import KafkaConsumer
    from tidelog.kafka.producer import KafkaProducer

__all__ = ["KafkaTransaction"]


class KafkaTransaction:
    """One open Kafka transaction (see :meth:`tidelog.Store.transaction`)."""

    def __init__(self, producer: KafkaProducer, consumer: KafkaConsumer | None = None) -> None:
        from tidelog.kafka.consumer import KafkaConsumer
        from tidelog.kafka.producer import KafkaProducer

        if not isinstance(producer, KafkaProducer):
            raise TypeError(
                f"producer must be a producer of a kafka:// store, got {type(producer).__name__}"
            )
        if consumer is not None:
            if not isinstance(consumer, KafkaConsumer):
                raise TypeError(
                    "consumer must be a consumer of a kafka:// store, got "
                    f"{type(consumer).__name__}"
                )
            if consumer.delivery != "exactly-once":
                raise _core.InvalidConfigError(
                    "a transaction commits the offsets of a consumer opened with "
                    f"delivery='exactly-once'; this one uses {consumer.delivery!r}"
                )
        self._producer = producer
        self._consumer = consumer
        self._done = False
        producer.begin_transaction()

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        """Sends a message as part of the transaction (visible once it commits)."""
        if self._done:
            raise _core.InvalidConfigError("the transaction already ended")
        self._producer.send(topic, value, key=key, headers=headers, partition=partition)

    def commit(self) -> None:
        """Commits the outputs and the consumer's offsets together."""
        if self._done:
            raise _core.InvalidConfigError("the transaction already ended")
        offsets: dict[int, int] = {}
        try:
            if self._consumer is not None:
                offsets = self._consumer.transaction_send_offsets(self._producer)
        except BaseException:
            self.abort()
            raise
        self._done = True
        try:
            self._producer.commit_transaction()
        except BaseException:
            if self._consumer is not None:
                self._consumer.transaction_aborted()
            raise
        if self._consumer is not None:
            self._consumer.transaction_committed(offsets)

    def abort(self) -> None:
        """Aborts: readers never see the outputs; the consumer rewinds to its commits."""
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

    def __enter__(self) -> KafkaTransaction:
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
