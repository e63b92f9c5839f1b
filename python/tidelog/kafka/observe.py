"""What a kafka:// store tells about itself: ``groups()``, ``stats()`` and ``metrics()``.

The same shapes as a local store's (see :mod:`tidelog.stats` and :mod:`tidelog.metrics`),
read from the cluster through the admin client: consumer groups from ListGroups and
DescribeGroups, their committed offsets from OffsetFetch, partition bounds from the
watermarks. What a broker does not report to a client is None, never a made-up figure:

- ``size_bytes`` and ``segments`` of a partition (librdkafka has no DescribeLogDirs), and
  ``dirty_ratio``/``dirty_bytes``/``compactions`` (the broker's log cleaner keeps them);
- ``generation`` of a group (the admin API does not report the group epoch);
- ``last_timestamp_ms`` of a partition (it would cost a fetch per partition per scrape).

Work queues (share groups) are left out of both: librdkafka 2.16's admin client cannot
list or describe share groups (KIP-932's admin calls), so ``work_queues`` is empty; and
nothing is ever recovered client-side, so ``recovery`` lists nothing.
"""

from __future__ import annotations

import functools
import time
import weakref
from typing import Any, Protocol

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    KafkaError,
    KafkaException,
)

from tidelog import _core
from tidelog.kafka._errors import partitions_checked, retrying


class KafkaStore(Protocol):
    """What this module reads of a :class:`tidelog.kafka.store.KafkaStore`.

    A protocol: the store's module imports this one, so this one does not import it.
    """

    @property
    def admin(self) -> Any:
        """The admin client."""
        ...

    @property
    def path(self) -> str:
        """The store's URL."""
        ...

    def topics(self, *, internal: bool = False) -> list[str]:
        """The topic names."""
        ...

    def topic(self, name: str) -> Any:
        """The topic ``name``."""
        ...

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """The start and end offsets of a partition."""
        ...

    def read_range(self, topic: Any, partition: int, offset: int, max_messages: int) -> Any:
        """Up to ``max_messages`` messages of a partition from ``offset``."""
        ...

    def open_producers(self) -> list[Any]:
        """This process's open producers of the store."""
        ...


__all__ = [
    "assigned_topics",
    "group_names",
    "group_overview",
    "store_metrics",
    "store_stats",
]

#: The store's own readers join no group but their ids are group-shaped: never listed.
_READER_PREFIX = "tidelog-reader-"
#: Share groups (work queues) list with another type; only these are consumer groups.
_CONSUMER_TYPES = (ConsumerGroupType.CONSUMER, ConsumerGroupType.CLASSIC)


class _Group:
    """One consumer group as the broker describes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: topic -> member id -> assigned partitions
        self.members: dict[str, dict[str, list[int]]] = {}
        #: topic -> partition -> committed offset
        self.committed: dict[str, dict[int, int]] = {}

    def topics(self) -> list[str]:
        return sorted(t for t in set(self.members) | set(self.committed) if not t.startswith("__"))


def group_names(admin: Any) -> list[str]:
    """The cluster's consumer groups (not share groups, not the store's readers), sorted."""
    listing = retrying(
        lambda t: admin.list_consumer_groups(request_timeout=t).result(t), "listing consumer groups"
    )
    names = []
    for g in listing.valid:
        if g.group_id.startswith(_READER_PREFIX):
            continue
        if g.type not in _CONSUMER_TYPES and g.type != ConsumerGroupType.UNKNOWN:
            continue  # a share group (work queue), or a kind tidelog does not make
        names.append(g.group_id)
    return sorted(names)


def assigned_topics(admin: Any, names: list[str]) -> dict[str, set[str]]:
    """Per group of ``names``: the topics its members are assigned partitions of."""
    return {g.name: set(g.members) for g in _describe_members(admin, names)}


def _describe_members(admin: Any, names: list[str]) -> list[_Group]:
    if not names:
        return []
    descriptions = retrying(
        functools.partial(_described_groups, admin, names), "describing consumer groups"
    )
    groups = []
    for name in names:
        group = _Group(name)
        description = descriptions[name]
        if description is None:
            continue  # deleted since it was listed
        for member in description.members:
            for tp in member.assignment.topic_partitions or []:
                group.members.setdefault(tp.topic, {}).setdefault(member.member_id, []).append(
                    tp.partition
                )
        for per_topic in group.members.values():
            for partitions in per_topic.values():
                partitions.sort()
        groups.append(group)
    return groups


def _described_groups(admin: Any, names: list[str], timeout: float) -> dict[str, Any]:
    """DescribeGroups of ``names`` (one request): per group, None if there is no such group."""
    futures = admin.describe_consumer_groups(names, request_timeout=timeout)
    found: dict[str, Any] = {}
    for name in names:
        try:
            found[name] = futures[name].result(timeout)
        except KafkaException as e:
            err = e.args[0] if e.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_ID_NOT_FOUND):
                raise
            found[name] = None
    return found


def _committed_offsets(admin: Any, name: str, timeout: float) -> Any:
    """OffsetFetch of every partition group ``name`` committed (a partition's error raised)."""
    request = [ConsumerGroupTopicPartitions(name)]
    found = admin.list_consumer_group_offsets(request, request_timeout=timeout)[name].result(
        timeout
    )
    partitions_checked(found.topic_partitions or [])
    return found


def _describe(store: KafkaStore, names: list[str]) -> list[_Group]:
    admin = store.admin
    groups = _describe_members(admin, names)
    for group in groups:
        # OffsetFetch takes one group per request in librdkafka.
        found = retrying(
            functools.partial(_committed_offsets, admin, group.name),
            f"reading the committed offsets of group {group.name!r}",
        )
        for tp in found.topic_partitions or []:
            if tp.offset >= 0:
                group.committed.setdefault(tp.topic, {})[tp.partition] = tp.offset
    return groups


def _bounds(store: KafkaStore, topic: str, cache: dict[str, list[tuple[int, int]]]) -> Any:
    """``[(start, end)]`` per partition of ``topic``, or None if it is gone."""
    if topic not in cache:
        try:
            partitions = store.topic(topic).partitions
        except _core.TopicNotFoundError:
            return None
        cache[topic] = [store.watermarks(topic, p) for p in range(partitions)]
    return cache[topic]


def group_overview(store: KafkaStore) -> dict[str, dict[str, dict[str, Any]]]:
    """The implementation of ``KafkaStore.groups()`` (see :meth:`tidelog.Store.groups`).

    ``generation`` is None (the admin API does not report the group epoch); members are
    Kafka member ids; ``lag`` counts from the start offset where nothing is committed, as
    a local store does.
    """
    found: dict[str, dict[str, dict[str, Any]]] = {}
    bounds: dict[str, list[tuple[int, int]]] = {}
    for group in _describe(store, group_names(store.admin)):
        for topic in group.topics():
            parts = _bounds(store, topic, bounds)
            if parts is None:
                continue  # commits of a deleted topic
            committed = group.committed.get(topic, {})
            found.setdefault(group.name, {})[topic] = {
                "generation": None,
                "members": group.members.get(topic, {}),
                "committed": dict(sorted(committed.items())),
                "lag": {
                    p: max(0, end - committed.get(p, start)) for p, (start, end) in enumerate(parts)
                },
            }
    return found


def _topic_figures(store: KafkaStore) -> dict[str, dict[str, Any]]:
    topics: dict[str, dict[str, Any]] = {}
    for name in store.topics():
        try:
            partitions = store.topic(name).partitions
            bounds = [store.watermarks(name, p) for p in range(partitions)]
        except _core.TopicNotFoundError:
            continue  # deleted since topics() listed it
        per: dict[int, dict[str, Any]] = {
            p: {
                "start_offset": start,
                "end_offset": end,
                "messages": max(0, end - start),
                "size_bytes": None,
                "segments": None,
            }
            for p, (start, end) in enumerate(bounds)
        }
        topics[name] = {
            "partitions": per,
            "messages": sum(v["messages"] for v in per.values()),
            "size_bytes": None,
            "segments": None,
        }
    return topics


def _producers(store: KafkaStore) -> dict[str, dict[str, Any]]:
    from tidelog.stats import producers_by_name

    # KafkaProducer has what producers_by_name reads (name, closed) and the same stats().
    found = producers_by_name(store.open_producers())
    return {key: p.stats() for key, p in found.items()}


def store_stats(store: KafkaStore) -> dict[str, Any]:
    """The implementation of ``KafkaStore.stats()`` (see :meth:`tidelog.Store.stats`).

    ``size_bytes`` and ``segments`` are None, ``work_queues`` and ``recovery`` empty (see
    the module docstring).
    """
    return {
        "path": store.path,
        "topics": _topic_figures(store),
        "groups": group_overview(store),
        "work_queues": {},
        "producers": _producers(store),
        "recovery": [],
    }


#: Timestamps of messages at committed offsets, per store (a lagging group is asked about
#: the same offset at every scrape; the message there never changes): ``{(topic,
#: partition, offset): timestamp_ms}``.
_TIMESTAMPS: weakref.WeakKeyDictionary[KafkaStore, dict[tuple[str, int, int], int]] = (
    weakref.WeakKeyDictionary()
)
_TIMESTAMPS_KEPT = 65_536


def _timestamp_at(store: KafkaStore, topic: str, partition: int, offset: int) -> int | None:
    """Timestamp of the first message at or after ``offset`` (None: none before the end)."""
    cache = _TIMESTAMPS.setdefault(store, {})
    ts = cache.get((topic, partition, offset))
    if ts is not None:
        return ts
    try:
        batch = store.read_range(store.topic(topic), partition, offset, 1)
    except (_core.TopicNotFoundError, _core.OffsetOutOfRangeError):
        return None  # deleted, or retention removed it meanwhile
    if len(batch) == 0:
        return None  # only transaction markers up to the end
    ts = int(batch[0].timestamp_ms)
    if len(cache) > _TIMESTAMPS_KEPT:
        cache.clear()
    cache[topic, partition, offset] = ts
    return ts


def store_metrics(store: KafkaStore) -> dict[str, Any]:
    """The implementation of ``KafkaStore.metrics()`` (see :func:`tidelog.metrics.collect`).

    Per group and partition ``lag_seconds`` is now minus the timestamp of the message at
    the committed offset (one fetch per lagging partition, then cached). Figures the broker
    does not report are None (see the module docstring).
    """
    now_ms = int(time.time() * 1000)
    figures = _topic_figures(store)
    topics: dict[str, Any] = {}
    for name, fig in figures.items():
        per_partition = {
            p: {
                **f,
                "dirty_ratio": None,
                "dirty_bytes": None,
                "compactions": None,
                "last_timestamp_ms": None,
            }
            for p, f in fig["partitions"].items()
        }
        topics[name] = {
            "partitions": per_partition,
            "messages": fig["messages"],
            "size_bytes": None,
        }
    groups: dict[str, dict[str, Any]] = {}
    for group in _describe(store, group_names(store.admin)):
        for topic in group.topics():
            t = topics.get(topic)
            if t is None:
                continue  # deleted, or not listed when the figures were read
            commits = group.committed.get(topic, {})
            partitions: dict[int, dict[str, Any]] = {}
            for p, f in t["partitions"].items():
                base = commits.get(p, f["start_offset"])
                end = f["end_offset"]
                ts = _timestamp_at(store, topic, p, base) if base < end else None
                partitions[p] = {
                    "committed": commits.get(p),
                    "end_offset": end,
                    "lag_messages": max(0, end - base),
                    "lag_seconds": 0.0 if ts is None else max(0.0, (now_ms - ts) / 1000),
                }
            groups.setdefault(group.name, {})[topic] = {
                "members": len(group.members.get(topic, {})),
                "partitions": partitions,
                "lag_messages": sum(v["lag_messages"] for v in partitions.values()),
                "lag_seconds": max((v["lag_seconds"] for v in partitions.values()), default=0.0),
            }
    producers = {
        key: {
            "sent": s["sent"],
            "written": s["written"],
            "failed": s.get("failed", 0),
            "buffered": s["buffered"],
            "dropped": dict(s["dropped"]),
            "blocked_seconds": float(s["blocked_seconds"]),
            "high_watermark_hits": s["high_watermark_hits"],
        }
        for key, s in _producers(store).items()
    }
    return {
        "time_ms": now_ms,
        "topics": topics,
        "groups": groups,
        "producers": producers,
        "work_queues": {},
        "recovery": {kind: {"events": 0, "bytes": 0} for kind in _core.RECOVERY_KINDS},
    }
