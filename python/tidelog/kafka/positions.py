"""Where the partitions of a Kafka consumer-group member read next, as Python knows it.

A seek must never wait for a fetch that holds the member (:mod:`tidelog.aio` fetches in a
thread, which holds the member's lock for as long as librdkafka waits), so seeks are
recorded here, under a lock of their own that nothing holds across a call into librdkafka,
and the member applies them under its own lock before it hands anything more out. A seek
whose offset needs a broker round trip first (``seek_nowait``'s range check,
``seek_to_timestamp_nowait``'s look-up) waits here, unchecked, until a fetch resolves it in
its thread.

The book also keeps what ``position()`` needs when the member holds no fetched message of a
partition: where a seek moved it (librdkafka's position is unknown after a seek), and where
the last fetch left it (librdkafka's position, which asking librdkafka for would wait for a
fetch: confluent-kafka makes one call on a consumer at a time).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from tidelog import _core
from tidelog.kafka._common import StoreLink

__all__ = ["Positions"]


class Positions:
    """The seek and position book of one member of a consumer group on ``topic``.

    The recording calls never wait for the member; :meth:`resolve` makes round trips and is
    called by the fetching thread. ``checked`` and ``unchecked`` may be read (for their
    truth value) without the book's lock: the member checks them on every hand-out.
    """

    def __init__(self, topic: Any, store: StoreLink) -> None:
        self._topic = topic
        self._store = store
        self._lock = threading.Lock()
        #: Seeks to offsets known to be in range, per partition, not applied yet.
        self.checked: dict[int, int] = {}
        #: Per partition, (offset, False): a seek whose range is unchecked; or
        #: (timestamp_ms, True): a seek to a time, whose offset is not looked up yet.
        self.unchecked: dict[int, tuple[int, bool]] = {}
        # Where a seek (or an aborted transaction) moved a partition, until a fetch brings
        # its messages.
        self._sought: dict[int, int] = {}
        # Per partition, the offset after the last message fetched.
        self._consumed: dict[int, int] = {}

    # -- recording (any thread) --------------------------------------------------------------

    def check_range(self, partition: int, offset: int) -> None:
        """Raises unless ``offset`` is a position of ``partition`` (a round trip).

        Raises:
            OffsetOutOfRangeError: ``offset`` is before the partition's start or past its
                end offset (as locally; librdkafka would reset the partition to ``start``).
        """
        start, end = self._store.watermarks(self._topic.name, partition)
        if not start <= offset <= end:
            raise self._out_of_range(partition, offset, start, end)

    def seek(self, partition: int, offset: int) -> None:
        """Records a seek to an offset known to be in range."""
        with self._lock:
            self.checked[partition] = offset
            self.unchecked.pop(partition, None)
            self._sought[partition] = offset

    def seek_unchecked(self, partition: int, offset: int) -> None:
        """Records a seek whose range :meth:`resolve` checks."""
        with self._lock:
            self.unchecked[partition] = (offset, False)
            self.checked.pop(partition, None)

    def seek_to_timestamp_unchecked(self, partitions: Iterable[int], timestamp_ms: int) -> None:
        """Records seeks of ``partitions`` to a time, whose offsets :meth:`resolve` looks up."""
        with self._lock:
            for p in partitions:
                self.unchecked[p] = (timestamp_ms, True)
                self.checked.pop(p, None)

    # -- applying (the member, under its lock) -----------------------------------------------

    def resolve(self) -> _core.OffsetOutOfRangeError | None:
        """Checks the unchecked seeks (round trips): those in range become checked.

        Returns the error for the first one out of range (it is dropped; the partition reads
        on from where it was), or None.
        """
        error = None
        with self._lock:
            todo = dict(self.unchecked)
        valid = {}
        for p, (value, by_time) in todo.items():
            if by_time:
                found = self._topic.offset_for_timestamp(p, value)
                valid[p] = self._topic.end_offset(p) if found is None else found
                continue
            start, end = self._store.watermarks(self._topic.name, p)
            if start <= value <= end:
                valid[p] = value
            elif error is None:
                error = self._out_of_range(p, value, start, end)
        with self._lock:
            for p, pending in todo.items():
                # A seek recorded during the round trips replaced this one: it stands.
                if self.unchecked.get(p) == pending:
                    del self.unchecked[p]
                    if p in valid:
                        self.checked[p] = valid[p]
        return error

    def take(self) -> dict[int, int]:
        """The checked seeks, per partition, which the caller applies now."""
        with self._lock:
            seeks, self.checked = self.checked, {}
        return seeks

    def moved(self, partition: int, offset: int) -> None:
        """The member moved ``partition`` to ``offset`` (librdkafka's position is unknown)."""
        self._sought[partition] = offset

    def fetched(self, offsets: dict[int, int]) -> None:
        """A fetch brought messages up to ``offsets`` (per partition, the offset after)."""
        self._consumed.update(offsets)
        if self._sought:
            for p in offsets:
                self._sought.pop(p, None)

    def forget(self, partitions: Iterable[int]) -> None:
        """The member lost ``partitions``: their positions are unknown until fetched again.

        A seek not applied yet must not apply if one comes back.
        """
        with self._lock:
            for p in partitions:
                self.checked.pop(p, None)
                self.unchecked.pop(p, None)
                self._sought.pop(p, None)
                self._consumed.pop(p, None)

    # -- answering position() ----------------------------------------------------------------

    def pending_position(self, partition: int) -> int | None:
        """The position an unchecked seek gives ``partition`` (-1 for a time), or None.

        It comes before anything fetched: nothing fetched before that seek is handed out.
        """
        unchecked = self.unchecked.get(partition)
        if unchecked is None:
            return None
        value, by_time = unchecked
        return -1 if by_time else value

    def last_position(self, partition: int) -> int:
        """Where a seek or the last fetch left ``partition``; -1 if it was never fetched."""
        sought = self._sought.get(partition)
        if sought is not None:
            return sought
        return self._consumed.get(partition, -1)

    def _out_of_range(
        self, partition: int, offset: int, start: int, end: int
    ) -> _core.OffsetOutOfRangeError:
        return _core.OffsetOutOfRangeError(
            f"offset {offset} out of range for {self._topic.name!r} partition {partition}: "
            f"the log starts at offset {start} and the next offset is {end}"
        )
