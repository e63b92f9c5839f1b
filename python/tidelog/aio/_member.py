"""What an async consumer answers from its synchronous member without waiting.

The local and the Kafka async consumers both drive a synchronous member; these calls read
or set its state and return at once, so they are plain methods, shared. ``committed`` and
``lag`` are not here: on Kafka they are broker round trips, so each consumer has them as
coroutines.
"""

from __future__ import annotations

from typing import Protocol


class GroupMember(Protocol):
    """The synchronous member's calls the async consumers pass through."""

    def assignment(self) -> list[int]: ...
    def position(self, partition: int) -> int: ...
    def pause(self, partition: int) -> None: ...
    def resume(self, partition: int) -> None: ...
    def paused(self) -> list[int]: ...


class MemberViews:
    """The pass-through methods of an async consumer whose member is ``self._sync``."""

    _sync: GroupMember

    def assignment(self) -> list[int]:
        """Partitions this member owns.

        Raises:
            StoreClosedError: The consumer is closed.
        """
        return self._sync.assignment()

    def position(self, partition: int) -> int:
        """The offset of the next message this member hands out from ``partition``."""
        return self._sync.position(partition)

    def pause(self, partition: int) -> None:
        """Stops fetching from ``partition`` until :meth:`resume`."""
        self._sync.pause(partition)

    def resume(self, partition: int) -> None:
        """Fetches from ``partition`` again."""
        self._sync.resume(partition)

    def paused(self) -> list[int]:
        """Paused partitions.

        Raises:
            StoreClosedError: The consumer is closed.
        """
        return self._sync.paused()
