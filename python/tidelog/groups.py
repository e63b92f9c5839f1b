"""Consumer-group membership and partition assignment across threads and processes.

This module is the group *policy*: who is a member, when a member is dead, who owns which
partition, when to rebalance. The bytes are the core's (:class:`tidelog._core.Group`,
``tidelog_core::group``, where the files are documented): a group's state lives in
``<store>/groups/<topic>/`` as a CRC-checked state log (``<name>.lock``, ``.snapshot``,
``.journal``) whose newest record is the whole state, changed only under its lock and as
durable as the store's ``fsync`` policy says, plus ``<name>.live``, a small file every member
maps: the group's generation and the members' lease slots.

Members hold a lease they renew by heartbeating (one atomic compare-and-swap in the live file:
no lock, no system call); a member that closes leaves at once, one that dies simply stops
renewing and is removed by the next member to look once its lease expired. A member removed
while alive (its lease ran out) finds its lease gone at its next heartbeat and joins again.
Every change of membership recomputes the assignment (sticky: partitions stay where they are
when possible) and takes the next generation, which the core never lets go back; a member
notices a rebalance with one memory read per poll. Damage to the state is reported
(:class:`~tidelog.CorruptRecordError` naming the file, and ``tidelog verify``), never turned
into an empty group.

The state's body is UTF-8 JSON: ``{"members": {member: {"pid", "joined_ms", "lease": [slot,
incarnation]}}, "assignment": {member: [partition, ...]}}``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tidelog import _core
from tidelog._core import CorruptRecordError, TopicNotFoundError

__all__ = ["GroupState", "Membership", "assign", "check_group", "list_groups", "read_state"]


def assign(
    partitions: int, members: Sequence[str], previous: dict[str, list[int]]
) -> dict[str, list[int]]:
    """Splits ``range(partitions)`` between ``members``, keeping previous owners when possible.

    Every partition goes to exactly one member and member loads differ by at most one.
    The result depends only on the arguments (every process computes the same).
    """
    if not members:
        return {}
    ordered = sorted(members)
    base, extra = divmod(partitions, len(ordered))
    # Members that already own the most keep the larger quotas: fewer partitions move.
    by_load = sorted(ordered, key=lambda m: (-len(previous.get(m, [])), m))
    quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_load)}
    result: dict[str, list[int]] = {m: [] for m in ordered}
    taken: set[int] = set()
    for m in ordered:
        for p in sorted(previous.get(m, [])):
            if 0 <= p < partitions and p not in taken and len(result[m]) < quota[m]:
                result[m].append(p)
                taken.add(p)
    free = iter(p for p in range(partitions) if p not in taken)
    for m in ordered:
        while len(result[m]) < quota[m]:
            result[m].append(next(free))
    return {m: sorted(ps) for m, ps in result.items()}


@dataclass
class GroupState:
    """A group's membership as stored (each member's ``expires_ms`` from its lease)."""

    generation: int = 0
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    assignment: dict[str, list[int]] = field(default_factory=dict)


def _now_ms() -> int:
    return int(time.time() * 1000)


Leases = dict[tuple[int, int], int]


def _decode(
    where: str, generation: int, body: bytes | None, leases: list[tuple[int, int, int]]
) -> GroupState:
    """The state a body holds, each member's ``expires_ms`` taken from ``leases``.

    Raises:
        CorruptRecordError: The body (whose CRC matched) is not a group state.
    """
    state = GroupState(generation)
    if not body:
        return state  # never written, or converted from the first format: no members
    expiry: Leases = {(s, i): e for s, i, e in leases}
    try:
        raw = json.loads(body)
        members: dict[str, dict[str, Any]] = raw["members"]
        assignment: dict[str, list[int]] = raw["assignment"]
        for info in members.values():
            slot, incarnation = info["lease"]
            info["expires_ms"] = expiry.get((int(slot), int(incarnation)), 0)
    except (ValueError, KeyError, TypeError) as e:
        # Its CRC matched: written by a newer version, or a bug.
        raise CorruptRecordError(f"group state {where} holds no valid state: {e!r}") from None
    state.members, state.assignment = members, assignment
    return state


def _encode(state: GroupState) -> bytes:
    members = {
        m: {k: v for k, v in info.items() if k != "expires_ms"} for m, info in state.members.items()
    }
    return json.dumps(
        {"members": members, "assignment": state.assignment}, separators=(",", ":")
    ).encode()


def read_state(store_dir: str, topic: str, group: str) -> GroupState:
    """Reads a group's state without joining it (possibly stale by the time it returns).

    Raises:
        CorruptRecordError: The group's state files are damaged (the message names the file).
    """
    found = _core.read_group(store_dir, topic, group)
    if found is None:
        return GroupState()
    generation, body, leases = found
    return _decode(
        f"of group {group!r} on topic {topic!r} in {store_dir}", generation, body, leases
    )


def check_group(store_dir: str, topic: str, group: str) -> GroupState:
    """Reads and checks a group's state for ``tidelog verify``: every CRC, and the body.

    Raises:
        CorruptRecordError: The group's state files are damaged (the message names the file).
    """
    return read_state(store_dir, topic, group)


def list_groups(store_dir: str) -> list[tuple[str, str]]:
    """Every (topic, group) that has membership state in the store, sorted."""
    return _core.list_groups(store_dir)


class Membership:
    """One member's view of its group: join, heartbeat, leave, and rebalance detection."""

    def __init__(
        self,
        store_dir: str,
        topic: str,
        group: str,
        partitions: int,
        lease_seconds: float,
        *,
        durable: bool = False,
        core: _core.Store | None = None,
        committed_generation: Callable[[], int] | None = None,
    ) -> None:
        """Prepares (but does not join) membership of ``group`` on ``topic``.

        With ``core`` (the store) membership changes are as durable as the store's ``fsync``
        policy says (``"interval"``: synced by its background syncer); without, they are
        fdatasync-ed before they count with ``durable``, left in the page cache without.
        ``committed_generation`` gives the highest generation the group's commits carry:
        every new generation is above it, so that a group whose state was lost or rolled
        back does not start again below the commits that fence older generations.
        """
        self.topic, self.group, self.partitions = topic, group, partitions
        self.lease_ms = int(lease_seconds * 1000)
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if core is not None:
            self._group = core.group(topic, group)
        else:
            fsync = "always" if durable else "never"
            self._group = _core.Group(store_dir, topic, group, fsync=fsync)
        self._where = f"of group {group!r} on topic {topic!r} in {store_dir}"
        self._committed_generation = committed_generation
        self.generation = -1
        self.assignment: list[int] = []
        #: Whether the last change of :attr:`generation` skipped generations: this member
        #: never saw the assignments between, in which what it owns now may have been
        #: another member's (one that joined and left, or took over while our lease was gone).
        self.skipped = False
        #: When (``time.monotonic()``) the next heartbeat is due. Until then, while
        #: :attr:`read_generation` still returns :attr:`generation`, :meth:`heartbeat` has
        #: nothing to do: a hot loop checks these two itself instead of calling it.
        self.heartbeat_due = 0.0
        #: The group's generation right now: :meth:`current_generation` without the Python
        #: call around the native one (one memory read), for hot paths.
        self.read_generation = self._group.current_generation
        #: This member's lease (slot, incarnation), once joined.
        self._lease: tuple[int, int] | None = None
        #: The leases of the other members as of the last state read.
        self._peers: list[tuple[int, int]] = []

    @property
    def native(self) -> _core.Group:
        """The group's state in the core, for a committer to check commits' generations."""
        return self._group

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the group's lock (the state log's: threads and processes alike).

        No membership change, so no new generation, happens while it is held: what a member
        commits then, having checked its generation, cannot race a rebalance. An
        at-most-once consumer's claim of the partitions it was given and a stale member's
        give-back take it (see :meth:`tidelog.Consumer.pause`).

        Raises:
            CorruptRecordError: The group's state is damaged (the message names the file).
            TopicNotFoundError: The topic was deleted.
        """
        self._group.lock()
        try:
            yield
        finally:
            self._group.unlock()

    @contextmanager
    def _locked(self) -> Iterator[GroupState]:
        generation, body = self._group.lock()
        try:
            yield _decode(self._where, generation, body, self._group.leases())
        finally:
            self._group.unlock()

    def _update(self, state: GroupState, *, present: bool) -> bool:
        """Expires dead members, adds or removes us, rebalances if membership changed."""
        now = _now_ms()
        before = set(state.members)
        members = {m: info for m, info in state.members.items() if info["expires_ms"] > now}
        new_lease = False
        if present:
            info = members.get(self.member_id)
            mine = info is not None and tuple(info["lease"]) == self._lease
            expires = self._renew() if mine else 0
            if info is not None and expires:
                info = {**info, "expires_ms": expires}
            else:
                # Joining, or removed while alive (the lease ran out): a new lease.
                if self._lease is not None:
                    self._group.release_lease(*self._lease)
                expires = now + self.lease_ms
                self._lease = self._group.claim_lease(expires)
                new_lease = True  # recorded in the state, so the others see it
                info = {"pid": os.getpid(), "joined_ms": now, "lease": list(self._lease)}
                info["expires_ms"] = expires
            members[self.member_id] = info
        else:
            members.pop(self.member_id, None)
        changed = (
            set(members) != before
            or new_lease
            or (present and self.member_id not in state.assignment)
        )
        state.members = members
        if changed:
            state.assignment = assign(self.partitions, list(members), state.assignment)
            try:
                above = self._committed_generation() if self._committed_generation else 0
                state.generation = self._group.write(_encode(state), max(above, 0))
            except BaseException:
                if new_lease and self._lease is not None:
                    # Not in the state: the next heartbeat must join again, not renew it.
                    self._group.release_lease(*self._lease)
                    self._lease = None
                raise
        # Leases nobody in the state holds (dead members', or a claim whose write a crash
        # cut off) are freed once expired, after the state without them is written.
        kept = {tuple(info["lease"]) for info in members.values()}
        for slot, incarnation, expires in self._group.leases():
            if (slot, incarnation) not in kept and expires <= now:
                self._group.release_lease(slot, incarnation)
        if present:
            self.skipped = 0 <= self.generation < state.generation - 1
            self.generation = state.generation
            self.assignment = list(state.assignment.get(self.member_id, []))
            self._peers = [
                (int(info["lease"][0]), int(info["lease"][1]))
                for m, info in members.items()
                if m != self.member_id
            ]
        self.heartbeat_due = time.monotonic() + self.heartbeat_interval()
        return changed

    def _renew(self) -> int:
        """Extends this member's lease; returns the new expiry (0: the lease is gone)."""
        if self._lease is None:
            return 0
        expires = _now_ms() + self.lease_ms
        return expires if self._group.renew_lease(*self._lease, expires) else 0

    def join(self) -> None:
        """Joins (or rejoins) the group and takes this member's assignment.

        Raises:
            CorruptRecordError: The group's state is damaged (the message names the file).
        """
        with self._locked() as state:
            self._update(state, present=True)

    def heartbeat(self, force: bool = False) -> bool:
        """Renews the lease if due (a third of it has passed) and picks up any rebalance.

        Returns:
            Whether this member's generation changed.
        """
        before = self.generation
        due = time.monotonic() >= self.heartbeat_due
        if not (force or due or self.current_generation() != self.generation):
            return False
        if not force and self.current_generation() == self.generation:
            # A plain renewal: one atomic swap in the shared file, no lock, unless our lease
            # is gone or someone's ran out.
            renewed = self._renew()
            self.heartbeat_due = time.monotonic() + self.heartbeat_interval()
            if renewed:
                now = _now_ms()
                expiry = self._group.lease_expiry
                if all(expiry(slot, inc) > now for slot, inc in self._peers):
                    return False
        with self._locked() as state:
            self._update(state, present=True)
        return self.generation != before

    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats."""
        return self.lease_ms / 3000

    def current_generation(self) -> int:
        """The group's generation right now (one memory read)."""
        return self._group.current_generation()

    def leave(self) -> None:
        """Leaves the group; its partitions go to the others at once."""
        try:
            with self._locked() as state:
                if self.member_id in state.members:
                    self._update(state, present=False)
        except TopicNotFoundError:
            pass  # deleted, with its groups: nothing to leave
        finally:
            if self._lease is not None:
                self._group.release_lease(*self._lease)
                self._lease = None
            self._group.close()
