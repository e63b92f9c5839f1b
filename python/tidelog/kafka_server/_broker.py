"""What every request handler sees: the store, this node, the protocol's state.

The protocol's state is the groups and transactions served here; the waits are on the
store's bells.

Handlers (one module per API family) import this module only, never the server, so the
imports point one way: server -> handlers -> broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tidelog import _core
from tidelog.aio._wake import Waiter
from tidelog.offsets import OffsetStore

__all__ = ["Broker", "Handler", "ServedStore"]


class ServedStore(Protocol):
    """What the server uses of :class:`tidelog.Store`.

    Named structurally: the store module imports the server.
    """

    @property
    def path(self) -> str: ...
    @property
    def native(self) -> _core.Store: ...
    def topic(self, name: str) -> _core.Topic: ...
    def topics(self, *, internal: bool = False) -> list[str]: ...
    def delete_topic(self, name: str) -> None: ...


Handler = Callable[["Broker", Any, int], Awaitable[dict[str, Any] | None]]


class Broker:
    """What every handler sees: the store, this node's address, the waits on the store."""

    node_id = 0

    def __init__(self, store: ServedStore, *, auto_create_topics: bool) -> None:
        self.store = store
        #: API key -> (lowest, highest) version served, for ApiVersions (set by the server).
        self.api_versions: dict[int, tuple[int, int]] = {}
        self.auto_create_topics = auto_create_topics
        self.host = "127.0.0.1"
        self.port = 0
        self.cluster_id = "tidelog"
        self._waiter: Waiter | None = None
        self._offsets: OffsetStore | None = None
        self._offsets_table: _core.OffsetTable | None = None
        #: Kafka consumer groups served here: group -> member id -> member (see _groups).
        self.groups: dict[str, dict[str, Any]] = {}
        #: Transactional ids' current instances (see _txn).
        self.transactions: dict[str, Any] = {}
        #: When a held-back read_committed Fetch last looked for dead producers' transactions
        #: (monotonic seconds), and the look under way (see _records).
        self.orphans_checked = 0.0
        self.orphan_check: asyncio.Task[None] | None = None

    @property
    def offsets_table(self) -> _core.OffsetTable:
        """The offsets table's records, for commits written inside transactions."""
        if self._offsets_table is None:
            self._offsets_table = _core.OffsetTable(self.store.native)
        return self._offsets_table

    @property
    def offsets(self) -> OffsetStore:
        """The store's committed offsets (``__consumer_offsets``), opened when first used."""
        if self._offsets is None:
            self._offsets = OffsetStore(self.store.native)
        return self._offsets

    @property
    def waiter(self) -> Waiter:
        """The loop's waits on the store's bells (made in the loop's thread)."""
        if self._waiter is None:
            self._waiter = Waiter(asyncio.get_running_loop())
        return self._waiter

    def topic(self, name: str) -> _core.Topic:
        """The topic ``name`` (raises TopicNotFoundError)."""
        return self.store.topic(name)

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
