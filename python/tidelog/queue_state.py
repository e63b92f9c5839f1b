"""The state of a work queue and the changes that move it: plain data, no I/O.

Every member of a queue holds a copy of this state and applies the same changes in the same
order (read from the queue's journal, see :mod:`tidelog.queue_journal`), so all copies agree.
A change names a RANGE of offsets of one partition, so a batch of a thousand acquisitions or
acknowledgements is one small change, and the state stays small however many messages pass:

- ``acked_below``: every offset below it is finished (acknowledged, dead-lettered, archived,
  deleted by retention before it was finished, or holding no message: a transaction marker
  or an aborted transaction's message);
- ``done``: finished offsets above ``acked_below``, as sorted disjoint runs ``[start, end)``;
- ``leases``: every unfinished offset in ``[acked_below, frontier)`` lies in exactly one lease,
  a run ``[start, end)`` held by a member until ``expires`` (ms since the epoch; 0 for a
  released run, available at once) and handed out ``count`` times so far;
- ``frontier``: offsets at or above it were never handed out (delivery count 0);
- ``recoveries_seen``: how many of the partition's recovery events (what recovery removed,
  ``tidelog._core.recovery_events``) the queue has checked its state against; None until the
  first check (a queue whose state predates the count).

A message is available when it is at or above ``frontier``, or in a lease that has expired.

A change is one :data:`OP` struct (little-endian): u8 kind, u32 partition, i64 start, i64 end,
i64 expiry (ms since the epoch), u32 delivery count. A SEEN change carries the count of
recovery events checked in ``start``. The member a change acts for is stored
once per record (see :func:`encode_record`).
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from typing import Any

from tidelog._core import CorruptRecordError

__all__ = [
    "ACK",
    "ACQUIRE",
    "ARCHIVE",
    "DEAD",
    "EXTEND",
    "OP",
    "PASS",
    "RELEASE",
    "SEEN",
    "SKIP",
    "Lease",
    "PartitionState",
    "QueueState",
    "decode_record",
    "encode_record",
    "runs",
]

ACQUIRE, ACK, RELEASE, DEAD, EXTEND, ARCHIVE, SKIP, PASS, SEEN = 1, 2, 3, 4, 5, 6, 7, 8, 9
_KINDS = frozenset((ACQUIRE, ACK, RELEASE, DEAD, EXTEND, ARCHIVE, SKIP, PASS, SEEN))
OP = struct.Struct("<BIqqqI")
_MEMBER_LEN = struct.Struct("<H")

Op = tuple[int, int, int, int, int, int]
"""One change: (kind, partition, start, end, expires, count)."""


def encode_record(member: str, ops: list[Op]) -> bytes:
    """One journal record: the member's id, then its changes, applied together."""
    raw = member.encode()
    return b"".join([_MEMBER_LEN.pack(len(raw)), raw, *(OP.pack(*op) for op in ops)])


def decode_record(payload: bytes) -> tuple[str, list[Op]]:
    """The member and changes of a record written by :func:`encode_record`.

    Raises:
        CorruptRecordError: The record is malformed (its CRC matched, so this is a bug or a
            record from a newer version).
    """
    if len(payload) < _MEMBER_LEN.size:
        raise CorruptRecordError(f"work-queue record of {len(payload)} bytes is malformed")
    (n,) = _MEMBER_LEN.unpack_from(payload, 0)
    at = _MEMBER_LEN.size + n
    if at > len(payload) or (len(payload) - at) % OP.size:
        raise CorruptRecordError(f"work-queue record of {len(payload)} bytes is malformed")
    try:
        member = payload[_MEMBER_LEN.size : at].decode()
    except UnicodeDecodeError:
        raise CorruptRecordError("work-queue record names a member that is not UTF-8") from None
    ops: list[Op] = list(OP.iter_unpack(payload[at:]))
    return member, ops


def runs(offsets: list[int]) -> list[tuple[int, int]]:
    """Sorted offsets (duplicates allowed) as runs ``[start, end)`` of consecutive ones."""
    out: list[tuple[int, int]] = []
    if not offsets:
        return out
    start = end = offsets[0]
    for o in offsets:
        if o == end:
            end += 1
        elif o > end:
            out.append((start, end))
            start, end = o, o + 1
    out.append((start, end))
    return out


@dataclass(slots=True)
class Lease:
    """A run of unfinished offsets handed out ``count`` times.

    Held by ``member`` until ``expires`` (ms since the epoch); 0 and member "" once released.
    """

    start: int
    end: int
    member: str
    expires: int
    count: int


def _start(lease: Lease) -> int:
    return lease.start


@dataclass
class PartitionState:
    """The queue's state for one partition of the topic (see the module docstring)."""

    acked_below: int = 0
    frontier: int = 0
    done: list[tuple[int, int]] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)
    recoveries_seen: int | None = None

    # -- ranges ---------------------------------------------------------------------------

    def _split(self, at: int) -> int:
        """Splits the lease straddling ``at``; returns the index of the first starting at it."""
        leases = self.leases
        i = bisect.bisect_left(leases, at, key=_start)  # leases[i - 1] starts before at
        if i and leases[i - 1].end > at:
            left = leases[i - 1]
            leases.insert(i, Lease(at, left.end, left.member, left.expires, left.count))
            left.end = at
        return i

    def _cut(self, start: int, end: int) -> tuple[int, int]:
        """Indices ``[i, j)`` of the leases inside ``[start, end)``, splitting the ends."""
        i = self._split(start)
        j = self._split(end)
        return i, j

    def _finish_run(self, start: int, end: int) -> None:
        """Adds ``[start, end)`` to the finished runs and advances ``acked_below``."""
        start = max(start, self.acked_below)
        if start >= end:
            return
        done = self.done
        i = bisect.bisect_left(done, (start,))
        if i and done[i - 1][1] >= start:  # touches or overlaps the run before
            i -= 1
            start = min(start, done[i][0])
        j = i
        while j < len(done) and done[j][0] <= end:
            end = max(end, done[j][1])
            j += 1
        done[i:j] = [(start, end)]
        while done and done[0][0] <= self.acked_below:
            self.acked_below = max(self.acked_below, done.pop(0)[1])
        self.frontier = max(self.frontier, self.acked_below)

    def held(self, start: int, end: int, member: str) -> bool:
        """Whether every offset of ``[start, end)`` is in a lease held by ``member``."""
        leases = self.leases
        i = bisect.bisect_right(leases, start, key=_start) - 1
        at = start
        if i < 0:
            i = 0
        while at < end:
            if i >= len(leases):
                return False
            lease = leases[i]
            if lease.start > at or lease.end <= at or lease.member != member:
                return False
            at = lease.end
            i += 1
        return True

    def lease_at(self, offset: int) -> Lease | None:
        """The lease holding ``offset``, if it is unfinished and was handed out."""
        leases = self.leases
        i = bisect.bisect_right(leases, offset, key=_start) - 1
        if i >= 0 and leases[i].end > offset:
            return leases[i]
        return None

    def finished(self, offset: int) -> bool:
        """Whether ``offset`` is finished (acknowledged, dead-lettered or skipped)."""
        if offset < self.acked_below:
            return True
        i = bisect.bisect_right(self.done, (offset, float("inf"))) - 1
        return i >= 0 and self.done[i][0] <= offset < self.done[i][1]

    def done_count(self) -> int:
        """Finished offsets above ``acked_below``."""
        return sum(e - s for s, e in self.done)

    # -- changes --------------------------------------------------------------------------

    def assign(self, start: int, end: int, member: str, expires: int, count: int) -> int:
        """``[start, end)`` is now held by ``member`` until ``expires`` (0: released).

        Returns how many of its offsets were handed out before (for the redelivery count).
        """
        start = max(start, self.acked_below)
        if start >= end:
            return 0
        if start > self.frontier:
            # Keep every unfinished offset below the frontier in a lease: a gap (which
            # members never leave) becomes available, never delivered.
            self.leases.append(Lease(self.frontier, start, "", 0, 0))
            self.frontier = start
        i, j = self._cut(start, end)
        before = sum(lease.end - lease.start for lease in self.leases[i:j] if lease.count)
        self.leases[i:j] = [Lease(start, end, member, expires, count)]
        self.frontier = max(self.frontier, end)
        return before

    def finish(self, start: int, end: int) -> int:
        """Finishes ``[start, end)``; returns how many of its offsets were unfinished."""
        start = max(start, self.acked_below)
        if start >= end:
            return 0
        newly = 0
        leased_end = end
        if end > self.frontier:
            # Never handed out (members do not do this; kept consistent all the same).
            lo = max(start, self.frontier)
            if start > self.frontier:
                self.leases.append(Lease(self.frontier, start, "", 0, 0))
            newly += end - lo
            self.frontier = end
            leased_end = lo
        if start < leased_end:
            i, j = self._cut(start, leased_end)
            newly += sum(lease.end - lease.start for lease in self.leases[i:j])
            del self.leases[i:j]
        self._finish_run(start, end)
        return newly

    def extend(self, start: int, end: int, member: str, expires: int) -> None:
        """Renews the leases of ``member`` inside ``[start, end)`` until ``expires``."""
        i, j = self._cut(start, end)
        for lease in self.leases[i:j]:
            if lease.member == member:
                lease.expires = expires

    def skip_to(self, start: int) -> int:
        """Retention deleted everything below ``start``: finish it.

        Returns:
            How many of those offsets were unfinished (lost to retention).
        """
        if start <= self.acked_below:
            return 0
        lost = start - self.acked_below - self._done_within(self.acked_below, start)
        i = self._split(start)
        del self.leases[:i]
        self._finish_run(self.acked_below, start)
        return lost

    def _done_within(self, start: int, end: int) -> int:
        return sum(max(0, min(e, end) - max(s, start)) for s, e in self.done)

    # -- queries --------------------------------------------------------------------------

    def available(self, now_ms: int, end_offset: int, limit: int) -> list[tuple[int, int, int]]:
        """Up to ``limit`` available offsets, lowest first.

        Returns:
            Runs ``(start, end, count)`` whose offsets were handed out ``count`` times so far.
        """
        out: list[tuple[int, int, int]] = []
        for lease in self.leases:
            if limit <= 0:
                return out
            if lease.expires <= now_ms:
                end = min(lease.end, lease.start + limit)
                if out and out[-1][1] == lease.start and out[-1][2] == lease.count:
                    out[-1] = (out[-1][0], end, lease.count)
                else:
                    out.append((lease.start, end, lease.count))
                limit -= end - lease.start
        start = max(self.frontier, self.acked_below)
        if limit > 0 and start < end_offset:
            out.append((start, min(end_offset, start + limit), 0))
        return out

    def in_flight(self, now_ms: int) -> int:
        """Offsets held by a member under an unexpired lock (not released with a delay)."""
        return sum(
            lease.end - lease.start
            for lease in self.leases
            if lease.expires > now_ms and lease.member
        )

    def next_expiry(self, now_ms: int) -> int | None:
        """The earliest future expiry of a lease (ms since the epoch), if any."""
        future = [lease.expires for lease in self.leases if lease.expires > now_ms]
        return min(future) if future else None

    def to_json(self) -> dict[str, Any]:
        """The state as plain data (for the snapshot)."""
        data: dict[str, Any] = {
            "acked_below": self.acked_below,
            "frontier": self.frontier,
            "done": [list(r) for r in self.done],
            "leases": [[x.start, x.end, x.member, x.expires, x.count] for x in self.leases],
        }
        if self.recoveries_seen is not None:
            data["recoveries_seen"] = self.recoveries_seen
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionState:
        """The state :meth:`to_json` returned."""
        return cls(
            acked_below=int(data["acked_below"]),
            frontier=int(data["frontier"]),
            done=[(int(s), int(e)) for s, e in data["done"]],
            leases=[
                Lease(int(s), int(e), str(m), int(x), int(c)) for s, e, m, x, c in data["leases"]
            ],
            recoveries_seen=(
                None if data.get("recoveries_seen") is None else int(data["recoveries_seen"])
            ),
        )


@dataclass
class QueueState:
    """A queue's whole state: its partitions and counters (see the module docstring)."""

    partitions: list[PartitionState]
    acked: int = 0
    dead_lettered: int = 0
    archived: int = 0
    skipped: int = 0
    redelivered: int = 0
    """Messages handed out again, each time one was (a lifetime count: finishing a message
    does not take it back); counted from the snapshot on in queues older than the count."""

    @classmethod
    def empty(cls, partitions: int) -> QueueState:
        """A new queue's state: nothing handed out."""
        return cls([PartitionState() for _ in range(partitions)])

    def apply(self, member: str, ops: list[Op]) -> None:
        """Applies the changes of one record, in order.

        Raises:
            CorruptRecordError: A change of unknown kind.
        """
        parts = self.partitions
        for kind, partition, start, end, expires, count in ops:
            if kind not in _KINDS:
                raise CorruptRecordError(f"work-queue change of unknown kind {kind}")
            if partition >= len(parts):
                continue  # cannot happen: partition counts are fixed
            part = parts[partition]
            if kind == ACQUIRE:
                again = part.assign(start, end, member, expires, count)
                if count >= 2:
                    self.redelivered += again
            elif kind == ACK:
                self.acked += part.finish(start, end)
            elif kind == RELEASE:
                # Held by nobody, until `expires` (0: available at once; later: a delay).
                part.assign(start, end, "", expires, count)
            elif kind == DEAD:
                self.dead_lettered += part.finish(start, end)
            elif kind == ARCHIVE:
                self.archived += part.finish(start, end)
            elif kind == EXTEND:
                part.extend(start, end, member, expires)
            elif kind == PASS:
                # Offsets without a message (transaction markers, aborted transactions).
                part.finish(start, end)
            elif kind == SEEN:
                part.recoveries_seen = max(part.recoveries_seen or 0, start)
            else:
                self.skipped += part.skip_to(start)

    def to_json(self) -> dict[str, Any]:
        """The state as plain data (for the snapshot)."""
        return {
            "partitions": [p.to_json() for p in self.partitions],
            "acked": self.acked,
            "dead_lettered": self.dead_lettered,
            "archived": self.archived,
            "skipped": self.skipped,
            "redelivered": self.redelivered,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], partitions: int) -> QueueState:
        """The state :meth:`to_json` returned, for a topic of ``partitions``."""
        parts = [PartitionState.from_json(p) for p in data["partitions"]]
        parts += [PartitionState() for _ in range(partitions - len(parts))]
        return cls(
            parts,
            acked=int(data["acked"]),
            dead_lettered=int(data["dead_lettered"]),
            archived=int(data["archived"]),
            skipped=int(data["skipped"]),
            redelivered=int(data.get("redelivered", 0)),
        )
