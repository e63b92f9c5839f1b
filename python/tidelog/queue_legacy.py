"""Reading a work queue's state as the first version kept it, to carry it over once.

The first version of work queues kept one record per change in the internal topic
``__work_queues`` (8 partitions, routed by the queue's name): key ``group NUL topic``; value
u8 kind, u32 partition, i64 offset, i64 lock expiry (ms), u32 delivery count, then the
member id for an acquisition. The kinds were 1 acquire, 2 ack, 3 release, 4 dead-letter,
5 extend. A queue that has no snapshot or journal yet starts from those records if there
are any (:class:`tidelog.queue_journal.QueueJournal` then writes them as its first
snapshot), so upgrading does not deliver acknowledged messages again.

Deleting a topic cannot remove its records from ``__work_queues``, so it leaves the marker
:data:`NO_LEGACY` in the topic's work-queue directory: queues of a topic created again under
the name start empty.
"""

from __future__ import annotations

import struct
from pathlib import Path

from tidelog import _core
from tidelog.queue_state import QueueState

__all__ = ["LEGACY_TOPIC", "NO_LEGACY", "forget_work_queues", "read_legacy_state"]

LEGACY_TOPIC = _core.LEGACY_WORK_QUEUES_TOPIC
NO_LEGACY = ".no-legacy"
_PARTITIONS = 8
_RECORD = struct.Struct("<BIqqI")


def read_legacy_state(
    core: _core.Store, directory: Path, topic: str, group: str, partitions: int
) -> QueueState | None:
    """The state the first version recorded for the queue, or None if it recorded none."""
    if (directory / NO_LEGACY).exists() or LEGACY_TOPIC not in core.topics():
        return None
    log = core.topic(LEGACY_TOPIC)
    key = f"{group}\0{topic}".encode()
    p = _core.partition_for_key(group.encode(), _PARTITIONS)
    state = QueueState.empty(partitions)
    found = False
    at, end = log.start_offset(p), log.end_offset(p)
    while at < end:
        batch = log.read_batch(p, at, max_messages=10_000)
        if len(batch) == 0:
            break
        for msg in batch:
            if msg.key == key and msg.value is not None:
                found = True
                _apply(state, msg.value)
        at = batch.next_offset
    return state if found else None


def forget_work_queues(core: _core.Store, store_path: str, topic: str) -> None:
    """Keeps the work queues of a topic created again under ``topic``'s name from the legacy state.

    The core's ``delete_topic`` already removed the queues' files (removing them here, after
    it, could remove the state of a topic another process created meanwhile); if the first
    version's records exist, a marker keeps a topic created again under the name from
    starting its queues from them.
    """
    directory = _core.work_queues_dir(store_path, topic)
    if LEGACY_TOPIC in core.topics():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / NO_LEGACY).touch()


def _apply(state: QueueState, value: bytes) -> None:
    kind, partition, offset, expires, count = _RECORD.unpack_from(value, 0)
    if partition >= len(state.partitions):
        return
    part = state.partitions[partition]
    if part.finished(offset):
        return  # as the first version did: changes to finished messages are ignored
    if kind == 1:
        member = value[_RECORD.size :].decode()
        part.assign(offset, offset + 1, member, expires, count)
    elif kind == 2:
        state.acked += part.finish(offset, offset + 1)
    elif kind == 3:
        part.assign(offset, offset + 1, "", 0, count)
    elif kind == 4:
        state.dead_lettered += part.finish(offset, offset + 1)
    elif kind == 5:
        lease = part.lease_at(offset)
        if lease is not None:
            part.extend(offset, offset + 1, lease.member, expires)
    else:
        raise _core.CorruptRecordError(f"work-queue record of unknown kind {kind}")
