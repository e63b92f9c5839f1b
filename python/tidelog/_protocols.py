"""The interfaces between a store and what it makes: consumers, work queues, transactions.

Imports point one way: :mod:`tidelog.store` builds consumers, work queues and transactions
and imports their modules; those modules (and :mod:`tidelog.stats`) see the store, and a
transaction sees its consumer, only through the protocols here. None of them imports the
module it is handed an object of, or uses that object's private members.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tidelog._core import Producer, Topic
    from tidelog._core import Store as NativeStore

__all__ = ["StoreView", "TransactionMember"]


class StoreView(Protocol):
    """What consumers, work queues and the statistics need from the store that made them.

    :class:`tidelog.Store` is the implementation.
    """

    @property
    def path(self) -> str:
        """The store's directory."""
        ...

    @property
    def fsync(self) -> str:
        """The store's fsync policy: ``"never"``, ``"interval"`` or ``"always"``."""
        ...

    @property
    def closed(self) -> bool:
        """True once the store is closed."""
        ...

    @property
    def native(self) -> NativeStore:
        """The native store (``tidelog._core.Store``) the store wraps."""
        ...

    def topic(self, name: str) -> Topic:
        """An existing topic (``TopicNotFoundError`` otherwise)."""
        ...

    def topics(self, *, internal: bool = False) -> list[str]:
        """The names of the topics, sorted (with ``internal``, the store's own too)."""
        ...


class TransactionMember(Protocol):
    """What a transaction needs from the consumer whose input offsets it commits.

    :class:`tidelog.Consumer` (``delivery="exactly-once"``) is the implementation. The
    transaction calls :meth:`transaction_begin` when it begins, then either
    :meth:`transaction_send_offsets` and, once the producer committed,
    :meth:`transaction_committed`; or :meth:`transaction_aborted` when it aborts (also after
    a failed commit).
    """

    @property
    def delivery(self) -> str:
        """The consumer's delivery mode; a transaction needs ``"exactly-once"``."""
        ...

    def transaction_begin(self) -> None:
        """Joins the transaction (``InvalidConfigError`` if one is already open)."""
        ...

    def transaction_send_offsets(self, producer: Producer) -> dict[int, int]:
        """Sends the offsets after every message handed out into ``producer``'s transaction.

        Returns the offsets sent, per partition (nothing is sent when there are none);
        raises ``RebalanceError`` if a partition read from was reassigned.
        """
        ...

    def transaction_committed(self, offsets: dict[int, int]) -> None:
        """The transaction that sent ``offsets`` committed."""
        ...

    def transaction_aborted(self) -> None:
        """The transaction aborted: rewind, so what it read comes again."""
        ...
