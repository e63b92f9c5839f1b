"""Observability: a snapshot of a store's topics, partitions, groups and producers.

:meth:`tidelog.Store.stats` and the command line (``tidelog describe``, ``tidelog topics -l``)
use the functions here. A snapshot is plain data (dicts, lists, ints) so it can be printed,
compared or serialised as JSON with its integer partition keys turned into strings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypedDict

from tidelog import _core
from tidelog._core import TopicNotFoundError

if TYPE_CHECKING:
    from tidelog._core import Producer, Topic
    from tidelog._protocols import StoreView
    from tidelog.offsets import OffsetStore
    from tidelog.queue_state import QueueState

__all__ = [
    "GroupInfo",
    "PartitionStats",
    "StoreStats",
    "TopicStats",
    "group_overview",
    "partition_stats",
    "store_stats",
    "topic_stats",
    "work_queue_overview",
    "work_queue_stats",
]


class PartitionStats(TypedDict):
    """Offsets and storage of one partition."""

    start_offset: int
    """First retained offset."""
    end_offset: int
    """Next offset to be written."""
    messages: int
    """Retained messages: ``end_offset - start_offset``."""
    size_bytes: int
    """Bytes of segment data on disk."""
    segments: int
    """Number of segment files."""


class TopicStats(TypedDict):
    """One topic: its partitions and their totals."""

    partitions: dict[int, PartitionStats]
    messages: int
    size_bytes: int
    segments: int


class StoreStats(TypedDict):
    """A snapshot of a whole store; see :meth:`tidelog.Store.stats`."""

    path: str
    topics: dict[str, TopicStats]
    groups: dict[str, Any]
    work_queues: dict[str, Any]
    producers: dict[str, Any]
    recovery: list[dict[str, Any]]


def partition_stats(topic: Topic, partition: int) -> PartitionStats:
    """Returns the offsets and storage of one partition.

    Args:
        topic: An open topic.
        partition: The partition number.

    Returns:
        The partition's snapshot. The values are read one after another, so a concurrent
        append may land between them; ``messages`` is never negative.

    Raises:
        PartitionNotFoundError: No such partition.
    """
    start = topic.start_offset(partition)
    end = topic.end_offset(partition)
    return {
        "start_offset": start,
        "end_offset": end,
        "messages": max(0, end - start),
        "size_bytes": topic.size_bytes(partition),
        "segments": topic.segment_count(partition),
    }


def topic_stats(topic: Topic) -> TopicStats:
    """Returns the snapshot of every partition of ``topic`` and their totals.

    Args:
        topic: An open topic.

    Returns:
        Per-partition statistics keyed by partition number, plus totals.
    """
    partitions = {p: partition_stats(topic, p) for p in range(topic.partitions)}
    return {
        "partitions": partitions,
        "messages": sum(s["messages"] for s in partitions.values()),
        "size_bytes": sum(s["size_bytes"] for s in partitions.values()),
        "segments": sum(s["segments"] for s in partitions.values()),
    }


def store_stats(
    store: StoreView, offsets: Callable[[], OffsetStore], producers: Iterable[Producer]
) -> StoreStats:
    """Returns a snapshot of ``store``; the implementation of :meth:`tidelog.Store.stats`.

    Args:
        store: An open store.
        offsets: Returns the store's offset store (called only if a group ever ran).
        producers: The producers made from the store (closed ones are left out).

    Returns:
        See :meth:`tidelog.Store.stats`. A topic deleted while the snapshot is taken is left
        out.
    """
    topics: dict[str, TopicStats] = {}
    for name in store.topics():
        try:
            topics[name] = topic_stats(store.topic(name))
        except TopicNotFoundError:
            continue  # deleted by another process since topics() listed it
    return {
        "path": store.path,
        "topics": topics,
        "groups": _groups(store, offsets),
        "work_queues": work_queue_overview(store),
        "producers": _producers(producers),
        "recovery": recovery_events(store.path, store.topics(internal=True)),
    }


def recovery_events(store_path: str, topics: list[str]) -> list[dict[str, Any]]:
    """What recovery removed from the partitions of ``topics``, oldest first.

    Read from each partition's record file (see :func:`tidelog._core.recovery_events`),
    without opening the partitions. Each event also names its ``topic`` and ``partition``.
    """
    events: list[dict[str, Any]] = []
    for name in topics:
        topic_dir = _core.topic_dir(store_path, name)
        try:
            partitions = sorted(int(d) for d in os.listdir(topic_dir) if d.isdigit())
        except FileNotFoundError:
            continue  # deleted meanwhile
        for p in partitions:
            try:
                found = _core.recovery_events(_core.partition_dir(store_path, name, p))
            except FileNotFoundError:
                continue
            events.extend({"topic": name, "partition": p, **e} for e in found)
    events.sort(key=lambda e: e["time_ms"])
    return events


def _groups(
    store: StoreView, offsets: Callable[[], OffsetStore]
) -> dict[str, dict[str, GroupInfo]]:
    """:func:`group_overview`, without creating the offsets topic where no group ever ran."""
    from tidelog.groups import list_groups
    from tidelog.offsets import OFFSETS_TOPIC

    if OFFSETS_TOPIC not in store.topics(internal=True) and not list_groups(store.path):
        return {}
    return group_overview(store, offsets())


def producers_by_name(producers: Iterable[Producer]) -> dict[str, Producer]:
    """Each open producer of ``producers`` under the name the store's figures list it by.

    Unnamed producers are listed as ``<unnamed N>``; a name opened twice (the older one
    fenced) gets ``#2``, ``#3``... after it. Sorted by that name.
    """
    found: dict[str, Producer] = {}
    unnamed = 0
    for producer in list(producers):
        if producer.closed:
            continue
        name = producer.name
        if name is None:
            unnamed += 1
            name = f"<unnamed {unnamed}>"
        key, n = name, 1
        while key in found:
            n += 1
            key = f"{name}#{n}"
        found[key] = producer
    return dict(sorted(found.items()))


def _producers(producers: Iterable[Producer]) -> dict[str, dict[str, Any]]:
    """The ``stats()`` of each open producer of ``producers``, by :func:`producers_by_name`."""
    return {key: dict(p.stats()) for key, p in producers_by_name(producers).items()}


class GroupInfo(TypedDict):
    """One consumer group on one topic."""

    generation: int
    members: dict[str, list[int]]
    committed: dict[int, int]
    lag: dict[int, int]


def group_overview(store: StoreView, offsets: OffsetStore) -> dict[str, dict[str, GroupInfo]]:
    """Members, committed offsets and lag of every consumer group of ``store``."""
    from tidelog.groups import list_groups, read_state

    now_ms = int(time.time() * 1000)
    found: dict[str, dict[str, GroupInfo]] = {}
    keys = {(topic, group) for (group, topic) in offsets.groups()}
    keys.update(list_groups(store.path))
    for topic_name, group in sorted(keys):
        try:
            topic = store.topic(topic_name)
        except TopicNotFoundError:
            continue
        state = read_state(store.path, topic_name, group)
        live = {m for m, info in state.members.items() if info["expires_ms"] > now_ms}
        commits = offsets.committed(group, topic_name, topic.incarnation)
        if not commits and not state.members:
            continue  # commits of a deleted topic of the name only
        committed = {p: c.offset for p, c in commits.items()}
        lag = {
            p: topic.end_offset(p) - committed.get(p, topic.start_offset(p))
            for p in range(topic.partitions)
        }
        found.setdefault(group, {})[topic_name] = GroupInfo(
            generation=state.generation,
            members={m: ps for m, ps in state.assignment.items() if m in live},
            committed=committed,
            lag=lag,
        )
    return found


def work_queue_stats(state: QueueState, topic: Topic, state_bytes: int) -> dict[str, Any]:
    """Backlog, in-flight and finished counts of one work queue's ``state`` on ``topic``.

    Returns:
        ``{"partitions": {p: {"acked_below", "end_offset", "in_flight", "backlog", "lag"}},
        "in_flight", "backlog", "lag", "acked", "dead_lettered", "archived", "skipped",
        "state_bytes"}``: ``in_flight`` counts messages held under an unexpired lock,
        ``backlog`` messages available or waiting (not finished, not held), ``lag`` both
        (every unfinished message), ``dead_lettered`` messages moved to the dead-letter
        topic, ``archived`` those finished without one (``dead_letter=None``), ``skipped``
        unfinished messages deleted by retention first, and ``state_bytes`` the bytes of the
        queue's state on disk.
    """
    now = int(time.time() * 1000)
    partitions: dict[int, dict[str, int]] = {}
    skipped = state.skipped
    for p, part in enumerate(state.partitions):
        start, end = topic.start_offset(p), topic.end_offset(p)
        floor = max(part.acked_below, start)
        # Retention may have deleted unfinished messages no member has noticed yet.
        skipped += floor - part.acked_below - _done_within(part.done, part.acked_below, floor)
        in_flight = sum(
            min(x.end, end) - max(x.start, floor)
            for x in part.leases
            if x.expires > now and x.end > floor and x.member  # not a delayed release
        )
        lag = max(0, end - floor - _done_within(part.done, floor, end))
        partitions[p] = {
            "acked_below": floor,
            "end_offset": end,
            "in_flight": in_flight,
            "backlog": lag - in_flight,
            "lag": lag,
        }
    return {
        "partitions": partitions,
        "in_flight": sum(v["in_flight"] for v in partitions.values()),
        "backlog": sum(v["backlog"] for v in partitions.values()),
        "lag": sum(v["lag"] for v in partitions.values()),
        "acked": state.acked,
        "dead_lettered": state.dead_lettered,
        "archived": state.archived,
        "skipped": skipped,
        "state_bytes": state_bytes,
    }


def _done_within(done: list[tuple[int, int]], start: int, end: int) -> int:
    return sum(max(0, min(e, end) - max(s, start)) for s, e in done)


def work_queue_overview(store: StoreView) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`work_queue_stats` of every work queue of ``store``: ``{group: {topic: ...}}``.

    Read without joining the queues (their lock is taken shared for the read).
    """
    from tidelog.queue_journal import list_queues, queue_files, read_state

    found: dict[str, dict[str, dict[str, Any]]] = {}
    for topic_name, group in list_queues(store.path):
        try:
            topic = store.topic(topic_name)
        except TopicNotFoundError:
            continue
        files = queue_files(store.path, topic_name, group)
        state = read_state(files, topic.partitions)
        if state is None:
            continue
        found.setdefault(group, {})[topic_name] = work_queue_stats(state, topic, files.size_bytes())
    return found
