"""Consumer-group membership and partition assignment across threads and processes.

A group's state is a small JSON file (``<store>/groups/<topic>/<group>.json``) changed only
under an exclusive ``flock`` of ``<group>.lock`` and replaced atomically (write + rename), so
every process sees a whole state. Members hold a lease they renew by heartbeating; a member
that closes leaves at once, one that dies simply stops renewing and is removed by the next
member to look once its lease expired. Every change of membership recomputes the assignment
(sticky: partitions stay where they are when possible) and bumps the generation.

The generation is also kept in ``<group>.gen``, an 8-byte file every member maps, so a
member notices a rebalance with one memory read per poll instead of a system call. Leases
are renewed in a per-member file (``<group>.members/<member>``, 8 bytes): a heartbeat is one
small write, and the state file is rewritten only when membership changes.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import socket
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GroupState", "Membership", "assign", "list_groups", "read_state"]

_GEN = struct.Struct("<Q")
_LEASE = struct.Struct("<q")


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
    """A group's membership as stored on disk."""

    generation: int = 0
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    assignment: dict[str, list[int]] = field(default_factory=dict)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _paths(store_dir: str, topic: str, group: str) -> tuple[Path, Path, Path]:
    base = Path(store_dir) / "groups" / topic
    # Other names are hex-encoded behind a "~", which no plain name contains.
    safe = group if _plain(group) else "~" + group.encode().hex()
    return base / f"{safe}.json", base / f"{safe}.lock", base / f"{safe}.gen"


def _lease_dir(state_path: Path) -> Path:
    return state_path.with_suffix(".members")


def _read(state_path: Path) -> GroupState:
    """The state file, with each member's lease expiry taken from its lease file."""
    try:
        raw = json.loads(state_path.read_text())
    except FileNotFoundError:
        return GroupState()
    state = GroupState(raw["generation"], raw["members"], raw["assignment"])
    leases = _lease_dir(state_path)
    for member, info in state.members.items():
        try:
            info["expires_ms"] = _LEASE.unpack((leases / member).read_bytes())[0]
        except (FileNotFoundError, struct.error):
            info["expires_ms"] = 0
    return state


def read_state(store_dir: str, topic: str, group: str) -> GroupState:
    """Reads a group's state (possibly stale by the time it returns)."""
    return _read(_paths(store_dir, topic, group)[0])


def list_groups(store_dir: str) -> list[tuple[str, str]]:
    """Every (topic, group) that has membership state in the store."""
    found = []
    for path in sorted((Path(store_dir) / "groups").glob("*/*.json")):
        stem = path.stem
        group = bytes.fromhex(stem[1:]).decode() if stem.startswith("~") else stem
        found.append((path.parent.name, group))
    return found


def _plain(group: str) -> bool:
    """Names made only of [A-Za-z0-9._-] are used as file names as they are."""
    return all(c.isascii() and (c.isalnum() or c in "._-") for c in group) and not group.startswith(
        "."
    )


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
    ) -> None:
        """Prepares (but does not join) membership of ``group`` on ``topic``."""
        self.topic, self.group, self.partitions = topic, group, partitions
        self.lease_ms = int(lease_seconds * 1000)
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._durable = durable
        self._state_path, lock_path, gen_path = _paths(store_dir, topic, group)
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        gen_fd = os.open(gen_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(gen_fd).st_size < _GEN.size:
                os.ftruncate(gen_fd, _GEN.size)
            self._gen_map = mmap.mmap(gen_fd, _GEN.size)
        finally:
            os.close(gen_fd)
        self.generation = -1
        self.assignment: list[int] = []
        self._last_heartbeat = 0.0
        self._leases = _lease_dir(self._state_path)
        self._leases.mkdir(exist_ok=True)
        self._lease_fd = os.open(self._leases / self.member_id, os.O_RDWR | os.O_CREAT, 0o644)

    @contextmanager
    def _locked(self) -> Iterator[GroupState]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield _read(self._state_path)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _write(self, state: GroupState) -> None:
        tmp = self._state_path.with_suffix(f".{os.getpid()}.tmp")
        data = {
            "generation": state.generation,
            "members": state.members,
            "assignment": state.assignment,
        }
        with open(tmp, "w") as f:
            json.dump(data, f)
            if self._durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self._state_path)
        _GEN.pack_into(self._gen_map, 0, state.generation)

    def _renew(self) -> int:
        """Extends this member's lease; returns the new expiry (ms since the epoch)."""
        expires = _now_ms() + self.lease_ms
        os.pwrite(self._lease_fd, _LEASE.pack(expires), 0)
        return expires

    def _update(self, state: GroupState, *, present: bool) -> bool:
        """Expires dead members, adds or removes us, rebalances if membership changed."""
        now = _now_ms()
        before = set(state.members)
        members = {m: info for m, info in state.members.items() if info["expires_ms"] > now}
        for dead in before - set(members) - {self.member_id}:
            (self._leases / dead).unlink(missing_ok=True)
        if present:
            info = members.get(self.member_id, {"pid": os.getpid(), "joined_ms": now})
            info["expires_ms"] = self._renew()
            members[self.member_id] = info
        else:
            members.pop(self.member_id, None)
        changed = set(members) != before or (present and self.member_id not in state.assignment)
        state.members = members
        if changed:
            state.generation += 1
            state.assignment = assign(self.partitions, list(members), state.assignment)
            self._write(state)
        if present:
            self.generation = state.generation
            self.assignment = list(state.assignment.get(self.member_id, []))
        self._last_heartbeat = time.monotonic()
        return changed

    def join(self) -> None:
        """Joins (or rejoins) the group and takes this member's assignment."""
        with self._locked() as state:
            self._update(state, present=True)

    def heartbeat(self, force: bool = False) -> bool:
        """Renews the lease if due (a third of it has passed) and picks up any rebalance.

        Returns:
            Whether this member's generation changed.
        """
        before = self.generation
        due = time.monotonic() - self._last_heartbeat >= self.lease_ms / 3000
        if not (force or due or self.current_generation() != self.generation):
            return False
        if not force and self.current_generation() == self.generation:
            # A plain renewal: one small write, no lock, unless someone's lease ran out.
            self._renew()
            self._last_heartbeat = time.monotonic()
            now = _now_ms()
            state = _read(self._state_path)
            if all(info["expires_ms"] > now for info in state.members.values()):
                return False
        with self._locked() as state:
            self._update(state, present=True)
        return self.generation != before

    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats."""
        return self.lease_ms / 3000

    def current_generation(self) -> int:
        """The group's generation right now (one memory read)."""
        value: int = _GEN.unpack_from(self._gen_map, 0)[0]
        return value

    def leave(self) -> None:
        """Leaves the group; its partitions go to the others at once."""
        try:
            with self._locked() as state:
                if self.member_id in state.members:
                    self._update(state, present=False)
        finally:
            (self._leases / self.member_id).unlink(missing_ok=True)
            self._gen_map.close()
            os.close(self._lock_fd)
            os.close(self._lease_fd)
