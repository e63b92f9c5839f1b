"""The store's named producers, for reporting (``tidelog producers``).

The registry (``<store>/producers/``, see ``docs/FORMAT.md``) is kept and read by the native
core; this module only gives its entries a typed shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import tidelog

if TYPE_CHECKING:
    from tidelog.store import Store

__all__ = ["NamedProducer", "named_producers"]


@dataclass(frozen=True)
class NamedProducer:
    """A named producer as the registry records it."""

    name: str
    producer_id: int
    epoch: int
    #: An instance of the name is open in some process.
    alive: bool
    #: ``None``, ``"ongoing"``, or ``"commit"`` (decided, markers not all written yet).
    transaction: str | None = None
    #: The (topic, partition) pairs the open transaction wrote to.
    partitions: list[tuple[str, int]] = field(default_factory=list)
    #: When the open transaction's time limit is up (wall clock, ms since the epoch), for
    #: those that have one (a Kafka client's ``transaction.timeout.ms``); None: no limit.
    deadline_ms: int | None = None


def named_producers(store: Store | str | os.PathLike[str]) -> list[NamedProducer]:
    """Every named producer of ``store`` (an open store, or the path of one), by name."""
    if isinstance(store, tidelog.Store):
        return [NamedProducer(**entry) for entry in store.native.named_producers()]
    with tidelog.open(store) as opened:
        return named_producers(opened)
