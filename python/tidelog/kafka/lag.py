"""``max_lag`` on Kafka: a producer's pressure from its topics' slowest consumer group.

A local producer reads the groups' commits from shared files at every round of its writer.
On Kafka they come from the group coordinator through the admin client (ListGroups once in
a while, then OffsetFetch of the groups that consume the topic, and the partitions'
watermarks), a round trip too slow for every send. So the producer works on credit: a
check measures the worst partition's lag behind the slowest group, plus every message
still in flight, and grants ``max_lag`` minus that many sends to the topic before the next
check. Whatever the partitioner does with them, no partition then gets more than
``max_lag`` messages past the slowest group's committed offset (a stricter bound than the
local ``max_lag + buffer_messages``). With no credit left the producer is under pressure,
as ``on_full`` says, until a check finds the lag at or below ``max_lag * low_watermark``.

A group counts for a topic once it committed an offset of it or has members assigned to
it; a partition it has not committed counts from the partition's start offset (as
``store.groups()`` computes lag). A topic no group consumes has no lag.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from tidelog.kafka._errors import partitions_checked, retrying

if TYPE_CHECKING:
    from tidelog.kafka._common import StoreLink

__all__ = ["LagGuard"]

#: How long the list of groups consuming a topic is reused before ListGroups again.
GROUPS_REFRESH_SECONDS = 2.0
#: How long a check that found no room is trusted (``raise``/``shed`` answer at once).
NO_ROOM_TRUSTED_SECONDS = 0.05


class LagGuard:
    """Credit per topic for a producer with ``max_lag`` (see the module docstring).

    Args:
        store: The producer's store (its admin client and watermarks).
        max_lag: The bound, in messages per partition.
        low_watermark: Pressure ends at or below ``max_lag * low_watermark``.
    """

    def __init__(self, store: StoreLink, max_lag: int, low_watermark: float) -> None:
        self._store = store
        self._max = max_lag
        self._resume = int(max_lag * low_watermark)
        self._credit: dict[str, int] = {}
        self._no_room_at: dict[str, float] = {}
        self._groups_at = -float("inf")
        self._groups: list[str] = []
        #: group -> topics its members are assigned (refreshed with the group list)
        self._assigned: dict[str, set[str]] = {}
        #: The last check's worst lag and the group behind it (None: no group consumes the
        #: topic), per topic.
        self.last: dict[str, tuple[int, str | None]] = {}

    @property
    def max_lag(self) -> int:
        """The bound."""
        return self._max

    def has_credit(self, topic: str) -> bool:
        """Whether a send to ``topic`` may go now without a check (no I/O)."""
        return self._credit.get(topic, 0) > 0

    def take(self, topic: str, in_flight: int) -> bool:
        """Spends one credit of ``topic``, checking the lag first if none is left.

        Returns:
            False: the topic's slowest group is too far behind (pressure).
        """
        credit = self._credit.get(topic, 0)
        if credit <= 0:
            seen = self._no_room_at.get(topic)
            if seen is not None and time.monotonic() - seen < NO_ROOM_TRUSTED_SECONDS:
                return False
            # in_flight was read before the watermarks: a message delivered in between is
            # counted twice, never missed.
            lag = self.lag(topic, in_flight)
            # No group consumes the topic: nothing to be behind; the next check after
            # max_lag sends sees new groups.
            credit = self._max if self.last[topic][1] is None else self._max - lag
            if credit <= 0:
                self._no_room_at[topic] = time.monotonic()
                self._credit[topic] = 0
                return False
            self._no_room_at.pop(topic, None)
        self._credit[topic] = credit - 1
        return True

    def resumed(self, topic: str, in_flight: int) -> bool:
        """Whether pressure on ``topic`` may end: a check at or below the low watermark."""
        lag = self.lag(topic, in_flight)
        if lag > self._resume or lag >= self._max:
            return False
        self._credit[topic] = self._max - lag  # at least 1
        self._no_room_at.pop(topic, None)
        return True

    def spend(self, topic: str) -> None:
        """Spends one credit of ``topic`` that :meth:`resumed` granted."""
        self._credit[topic] = self._credit.get(topic, 0) - 1

    def refund(self, topic: str) -> None:
        """Gives back one credit (a send checked ahead of time, see ``reserve_lag_room``)."""
        self._credit[topic] = self._credit.get(topic, 0) + 1

    def lag(self, topic: str, in_flight: int = 0) -> int:
        """The worst partition's lag behind the slowest group consuming ``topic`` (I/O).

        Plus ``in_flight`` (messages sent and not yet acknowledged) if a group consumes it.
        """
        store = self._store
        partitions = store.topic(topic).partitions
        bounds = [store.watermarks(topic, p) for p in range(partitions)]
        worst, behind = 0, None
        for group in self._groups_of(topic):
            committed = self._committed(group, topic, partitions)
            if committed is None:
                continue
            for p, (start, end) in enumerate(bounds):
                lag = end - committed.get(p, start)
                if behind is None or lag > worst:
                    worst, behind = lag, group
        if behind is not None:
            worst += in_flight
        self.last[topic] = (worst, behind)
        return worst

    def _groups_of(self, topic: str) -> list[str]:
        now = time.monotonic()
        if now - self._groups_at > GROUPS_REFRESH_SECONDS:
            from tidelog.kafka.observe import assigned_topics, group_names

            self._groups = group_names(self._store.admin)
            self._assigned = assigned_topics(self._store.admin, self._groups)
            self._groups_at = now
        return self._groups

    def _committed(self, group: str, topic: str, partitions: int) -> dict[int, int] | None:
        """The group's commits on ``topic``; None if the group does not consume it."""
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in range(partitions)]
        )
        admin = self._store.admin
        found = retrying(
            functools.partial(self._committed_answer, admin, request),
            f"reading the committed offsets of group {group!r}",
        )
        committed = {tp.partition: tp.offset for tp in found if tp.offset >= 0}
        if committed or topic in self._assigned.get(group, ()):
            return committed
        return None

    @staticmethod
    def _committed_answer(admin: Any, request: Any, timeout: float) -> list[Any]:
        """OffsetFetch of ``request``'s partitions, raising a partition's error."""
        found = admin.list_consumer_group_offsets([request], request_timeout=timeout)
        answer = found[request.group_id].result(timeout)
        return partitions_checked(answer.topic_partitions or [])
