"""The store's registry of named producers, read for reporting (``tidelog producers``).

The registry is kept by the native core (see ``docs/FORMAT.md``, "Idempotent producers and
transactions"): ``<store>/producers/<name>.identity`` holds the name's current producer id
and epoch, ``<name>.txn`` its open transaction. This module only reads them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NamedProducer", "named_producers"]

_WORD = struct.Struct("<Q")


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


def _alive(path: Path) -> bool:
    """True if a live instance holds its shared lock on the identity file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if it was taken
    return False


def named_producers(store_path: str | os.PathLike[str]) -> list[NamedProducer]:
    """Every named producer of the store at ``store_path``, sorted by name."""
    registry = Path(store_path) / "producers"
    out: list[NamedProducer] = []
    for identity in sorted(registry.glob("*.identity")):
        name = identity.name.removesuffix(".identity")
        with identity.open("rb") as f:
            raw = f.read(_WORD.size)
        if len(raw) < _WORD.size:
            continue
        (word,) = _WORD.unpack(raw)
        if word == 0:
            continue
        state: str | None = None
        partitions: list[tuple[str, int]] = []
        with contextlib.suppress(FileNotFoundError):
            lines = (registry / f"{name}.txn").read_text().splitlines()
            state = lines[0] if lines else "ongoing"
            for line in lines[1:]:
                topic, _, p = line.partition("\t")
                partitions.append((topic, int(p)))
        out.append(
            NamedProducer(
                name=name,
                producer_id=word >> 16,
                epoch=word & 0xFFFF,
                alive=_alive(identity),
                transaction=state,
                partitions=partitions,
            )
        )
    return out
