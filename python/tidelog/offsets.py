"""Durable consumer-group offsets, kept the way Kafka keeps them: in an internal log.

Every commit is ONE record appended to the internal topic ``__consumer_offsets`` (in the
partition chosen by the group's name), holding all the partitions it commits. A record is
written atomically by the storage engine, so a commit is never half-applied; with
``fsync="always"`` it is on disk when ``commit`` returns. The newest record for a
(group, topic, partition) wins. Readers in any process catch up by reading the records
appended since they last looked.

Record layout (little-endian): key = ``group NUL topic`` (UTF-8); value = u16 version (2),
i64 generation, u64 topic incarnation, u32 count, then per partition: u32 partition, i64 next
offset, u16 metadata length, metadata (UTF-8). Version 1 records have no incarnation.

A commit names the topic's incarnation (its identity, new each time a name is created), so a
commit made for a deleted topic never applies to a topic created again under the name, however
the deletion, the re-creation and the commits interleave across processes, and whether or not
the deleting process lived to write the record that forgets the old commits. Version 1 commits
apply to whichever topic has the name, as they always did.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

from tidelog import _core

__all__ = ["OFFSETS_TOPIC", "Committed", "OffsetStore"]

OFFSETS_TOPIC = "__consumer_offsets"
_PARTITIONS = 8
_HEADER = struct.Struct("<HqQI")
_HEADER_V1 = struct.Struct("<HqI")
_ENTRY = struct.Struct("<IqH")
_VERSION = 2
# A record with this generation and no partitions forgets the (group, topic)'s commits of
# one incarnation: written when the topic is deleted.
_RESET = -2


@dataclass(frozen=True)
class Committed:
    """A committed position: the next offset to read, and optional metadata.

    ``timestamp_ms`` is when the commit was written (the commit record's timestamp): a
    commit older than a recovery that removed the offsets it points into is stale.
    """

    offset: int
    metadata: str = ""
    timestamp_ms: int = 0


_ONE = struct.Struct("<HqQIIqH")

# A cached commit of one partition: offset, metadata, time in ms and the incarnation it
# names (None for a version 1 record, which names none).
_Entry = tuple[int, str, int, "int | None"]


def _encode(generation: int, incarnation: int, offsets: dict[int, int], metadata: str) -> bytes:
    if len(offsets) == 1 and not metadata:
        # The common case (one partition, no metadata) in one pack.
        ((partition, offset),) = offsets.items()
        return _ONE.pack(_VERSION, generation, incarnation, 1, partition, offset, 0)
    meta = metadata.encode()
    parts = [_HEADER.pack(_VERSION, generation, incarnation, len(offsets))]
    for partition, offset in offsets.items():
        parts.append(_ENTRY.pack(partition, offset, len(meta)))
        parts.append(meta)
    return b"".join(parts)


def _decode(value: bytes) -> tuple[int | None, dict[int, tuple[int, str]] | None]:
    """The incarnation a record names and its commits (None for a reset record)."""
    version = int.from_bytes(value[:2], "little")
    if version == _VERSION:
        _, generation, incarnation, count = _HEADER.unpack_from(value, 0)
        at = _HEADER.size
    elif version == 1:
        _, generation, count = _HEADER_V1.unpack_from(value, 0)
        incarnation, at = None, _HEADER_V1.size
    else:
        raise _core.CorruptRecordError(f"offset commit record of unknown version {version}")
    if generation == _RESET and count == 0:
        return incarnation, None
    out: dict[int, tuple[int, str]] = {}
    for _ in range(count):
        partition, offset, meta_len = _ENTRY.unpack_from(value, at)
        at += _ENTRY.size
        out[partition] = (offset, value[at : at + meta_len].decode())
        at += meta_len
    return incarnation, out


def _names(entry: _Entry, incarnation: int) -> bool:
    """True if a cached commit applies to the topic's ``incarnation``."""
    return entry[3] is None or entry[3] == incarnation


class OffsetStore:
    """Commits and looks up group offsets in one store; safe to share between threads."""

    def __init__(self, core: _core.Store) -> None:
        """Opens (creating if needed) the internal offsets topic of ``core``."""
        self._topic = core.create_topic(OFFSETS_TOPIC, _PARTITIONS, exist_ok=True, internal=True)
        self._lock = threading.Lock()
        self._read_upto = [self._topic.start_offset(p) for p in range(_PARTITIONS)]
        # Per offsets partition, the (group, topic) pairs with a commit in an open transaction.
        self._pending: list[set[tuple[str, str]]] = [set() for _ in range(_PARTITIONS)]
        # Newest commit per (group, topic) and partition.
        self._cache: dict[tuple[str, str], dict[int, _Entry]] = {}
        self._routes: dict[tuple[str, str], tuple[bytes, int]] = {}

    def _route(self, group: str, topic: str) -> tuple[bytes, int]:
        """The record key and offsets partition of (group, topic), computed once."""
        route = self._routes.get((group, topic))
        if route is None:
            # The group's commits stay in one partition, in commit order.
            route = (
                f"{group}\0{topic}".encode(),
                _core.partition_for_key(group.encode(), _PARTITIONS),
            )
            self._routes[(group, topic)] = route
        return route

    def committer(self, group: str, topic: _core.Topic, incarnation: int) -> _core.OffsetCommitter:
        """Durable commits of ``group`` on ``topic``'s ``incarnation``, the route looked up once.

        ``committer.commit(offsets, metadata, generation)`` checks every offset against its
        partition's end and records ``offsets`` (partition -> next offset) as one record:
        all partitions are committed together or not at all. The newest commits are read
        back from the record (see :meth:`committed`), as every process reads them.
        """
        key, partition = self._route(group, topic.name)
        return _core.OffsetCommitter(topic, self._topic, partition, key, incarnation)

    def send_commit(
        self,
        producer: _core.Producer,
        group: str,
        topic: str,
        incarnation: int,
        offsets: dict[int, int],
        generation: int = -1,
    ) -> None:
        """Sends the commit record into ``producer``'s open transaction.

        The commit becomes visible exactly when the transaction commits.
        """
        if not offsets:
            return
        key, partition = self._route(group, topic)
        value = _encode(generation, incarnation, offsets, "")
        producer.send(OFFSETS_TOPIC, value, key=key, partition=partition)

    def forget_topic(self, topic: str, incarnation: int) -> None:
        """Forgets every group's commits on ``topic``'s ``incarnation`` (it was deleted).

        Commits of a topic created again under the name meanwhile are kept: they name
        another incarnation.
        """
        for group, t in list(self.groups()):
            if t == topic:
                key, partition = self._route(group, topic)
                reset = _HEADER.pack(_VERSION, _RESET, incarnation, 0)
                self._topic.append(reset, key=key, partition=partition)
                with self._lock:
                    self._forget((group, topic), incarnation)

    def _forget(self, key: tuple[str, str], incarnation: int | None) -> None:
        """Drops the cached commits a reset record of ``incarnation`` forgets."""
        cached = self._cache.get(key)
        if cached is None:
            return
        if incarnation is None:  # a version 1 reset names no incarnation: all of them
            del self._cache[key]
            return
        for p in [p for p, entry in cached.items() if _names(entry, incarnation)]:
            del cached[p]
        if not cached:
            del self._cache[key]

    def committed(self, group: str, topic: str, incarnation: int) -> dict[int, Committed]:
        """Returns ``group``'s newest commit of every partition of ``topic`` (``incarnation``)."""
        _, partition = self._route(group, topic)
        with self._lock:
            self._catch_up(partition)
            cached = self._cache.get((group, topic), {})
            return {
                p: Committed(e[0], e[1], e[2]) for p, e in cached.items() if _names(e, incarnation)
            }

    def groups(self) -> set[tuple[str, str]]:
        """Every (group, topic name) with a commit, for any incarnation of the topic."""
        with self._lock:
            for p in range(_PARTITIONS):
                self._catch_up(p)
            return set(self._cache)

    def has_pending(self, group: str, topic: str) -> bool:
        """True while a commit of ``group`` on ``topic`` sits in a transaction still open.

        Its outcome decides where the group resumes, so an exactly-once consumer waits.
        """
        _, partition = self._route(group, topic)
        with self._lock:
            self._catch_up(partition)
            return (group, topic) in self._pending[partition]

    def _catch_up(self, partition: int) -> None:
        """Applies the records appended since the last look.

        Commits inside a transaction still open are not applied yet, but the plain commits
        after them are (an open transaction of one group must not hide other groups'
        commits, as Kafka's coordinator keeps pending offsets apart). Reading resumes at the
        first open one, so once its transaction ends the suffix is applied again in log
        order, which gives the same result.
        """
        end = self._topic.end_offset(partition)
        at = max(self._read_upto[partition], self._topic.start_offset(partition))
        first_open: int | None = None
        pending: set[tuple[str, str]] = set()
        while at < end:
            batch = self._topic.read_batch(
                partition, at, max_messages=10_000, isolation="read_uncommitted"
            )
            open_offsets = set(batch.pending_offsets())
            for msg in batch:
                if msg.key is None:
                    continue
                group, _, topic = msg.key.decode().partition("\0")
                if msg.offset in open_offsets:
                    first_open = msg.offset if first_open is None else first_open
                    pending.add((group, topic))
                    continue
                if msg.value is None:
                    # A tombstone (compaction may delete a key): not a commit record.
                    continue
                incarnation, commits = _decode(msg.value)
                if commits is None:
                    self._forget((group, topic), incarnation)
                else:
                    stamp = msg.timestamp_ms
                    self._cache.setdefault((group, topic), {}).update(
                        {p: (o, m, stamp, incarnation) for p, (o, m) in commits.items()}
                    )
            if batch.next_offset == at:
                break
            at = batch.next_offset
        self._read_upto[partition] = at if first_open is None else first_open
        self._pending[partition] = pending
