"""Adapters that run the ``benches/compare.py`` workloads against tidelog and its peers.

Peer libraries are optional (``pip install -e .[bench]``) and are imported lazily through
:func:`benches.peers.base.optional_import`, so this package imports without them.
"""

from __future__ import annotations

from benches.peers.base import Adapter
from benches.peers.embedded import (
    DiskcacheDequeAdapter,
    LiteQueueAdapter,
    NaiveFileAdapter,
    PersistQueueFileAdapter,
    PersistQueueSqliteAckAdapter,
    QueuelibFifoAdapter,
    SqliteTableAdapter,
)
from benches.peers.servers import KafkaAdapter, RedisStreamsAdapter
from benches.peers.tidelog_peer import TidelogAdapter

#: Every system, in table order.
ADAPTERS: tuple[type[Adapter], ...] = (
    TidelogAdapter,
    NaiveFileAdapter,
    SqliteTableAdapter,
    PersistQueueFileAdapter,
    PersistQueueSqliteAckAdapter,
    LiteQueueAdapter,
    DiskcacheDequeAdapter,
    QueuelibFifoAdapter,
    RedisStreamsAdapter,
    KafkaAdapter,
)
ADAPTER_BY_KEY: dict[str, type[Adapter]] = {a.key: a for a in ADAPTERS}

__all__ = ["ADAPTERS", "ADAPTER_BY_KEY", "Adapter"]
