"""Fork detection for the Python objects made from a store.

A store opened before ``os.fork()`` (also ``multiprocessing`` with the fork start method)
belongs to the parent: in the child its consumers, work queues and transactions must not
write group state, journals or commits, nor take the locks that a parent thread may have
held at the fork (a copied ``threading.Lock`` stays locked forever; a copied ``flock``
descriptor shares the parent's lock). The native core refuses its own calls the same way
(``shm::fork``); this module covers the Python layer with one integer comparison per call.
"""

from __future__ import annotations

import os

from tidelog._core import StoreClosedError

__all__ = ["FORKED", "Born", "generation"]

#: The message of every refusal, the same as the native core's.
FORKED = (
    "this store was opened before the process forked: a child process cannot use or close "
    "the parent's store; open the store again in the child (tidelog.open(path))"
)

#: Bumped in every forked child. Hot paths compare it with their :attr:`Born.generation`
#: inline (``if born.generation != _fork.generation``), a method call costing more than
#: the rest of their checks.
generation = 0


def _after_fork_in_child() -> None:
    global generation
    generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class Born:
    """The fork generation an object was made in."""

    __slots__ = ("generation",)

    def __init__(self) -> None:
        """Records the current process as the object's owner."""
        self.generation = generation

    @property
    def inherited(self) -> bool:
        """True in a process forked after the object was made."""
        return generation != self.generation

    def check(self) -> None:
        """Raises :class:`StoreClosedError` in a process forked after the object was made."""
        if generation != self.generation:
            raise StoreClosedError(FORKED)
