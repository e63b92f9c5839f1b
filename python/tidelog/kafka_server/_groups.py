"""Consumer groups over the Kafka protocol, as tidelog groups: one group, two doors.

A Kafka group ``G`` subscribed to topic ``T`` *is* tidelog's group ``G`` on ``T`` (the
policy of :mod:`tidelog.groups`): every Kafka member joins it as a tidelog member (one
:class:`~tidelog.groups.Membership` per subscribed topic, its lease the client's session
timeout, renewed by its heartbeats), so Kafka clients and Python consumers that opened the
directory split the partitions between them. The assignment is tidelog's, computed when
membership changes; no Kafka member is made the leader, so every member sends an empty
SyncGroup and gets its share back as a ``ConsumerProtocolAssignment``. When the tidelog
group's generation moves (anyone joined or left, in any process) a member's next Heartbeat
answers ``REBALANCE_IN_PROGRESS`` and the client joins again.

The group protocol's refinements are Kafka's: a JoinGroup v4+ without a member id is given
one and must join again with it (KIP-394), so a client that never hears the answer leaves
no member behind; a static member (``group.instance.id``, KIP-345) that restarts within its
session takes its old place back under a new member id, keeping its tidelog memberships and
so its partitions, without a rebalance, and the id it replaced is fenced; and since no
client assigns here, the server does what a cooperative assignor does (KIP-429): a member
is handed a partition only once the member that held it has said (by joining again) that it
let it go, and is told to rejoin when it may have it. The protocol is chosen as Kafka does,
among those every member supports. The KIP-848 ``consumer`` protocol is refused.

Committed offsets are the store's (``__consumer_offsets``, :mod:`tidelog.offsets`), so a
Python consumer resumes where a Kafka client committed and the other way round. A commit is
checked as Kafka's coordinator checks it (member, generation, state), and a member's commit
of a partition another member of the group may be consuming now is refused: a commit
answered without an error is one every reader applies (commits fence by the generation of
the topic's tidelog group, which a Kafka member's commit carries).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from kio.schema.consumer_protocol_assignment.v0.data import (
    ConsumerProtocolAssignment,
    TopicPartition,
)
from kio.schema.consumer_protocol_subscription.v0.data import (
    ConsumerProtocolSubscription as SubscriptionV0,
)
from kio.schema.consumer_protocol_subscription.v1.data import (
    ConsumerProtocolSubscription as SubscriptionV1,
)
from kio.schema.consumer_protocol_subscription.v2.data import (
    ConsumerProtocolSubscription as SubscriptionV2,
)
from kio.schema.consumer_protocol_subscription.v3.data import (
    ConsumerProtocolSubscription as SubscriptionV3,
)
from kio.serial import entity_reader, entity_writer

from tidelog import _core
from tidelog.groups import GroupState, Membership, list_groups, read_state
from tidelog.kafka_server import _errors

if TYPE_CHECKING:
    from tidelog.kafka_server._broker import Broker, Handler
    from tidelog.offsets import OffsetStore

__all__ = [
    "HANDLERS",
    "Claim",
    "close_groups",
    "commit_claim",
    "every_partition",
    "taken",
    "topic_answer",
    "validate_commit",
]

#: The leader named in JoinGroup answers: no client, so no client computes assignments.
_NO_LEADER = "tidelog-assigns"
_MIN_SESSION_MS, _MAX_SESSION_MS = 1_000, 1_800_000


@dataclass
class _Member:
    """A Kafka member: its tidelog memberships, one per subscribed topic."""

    member_id: str
    client_id: str
    protocol: str
    session_ms: int
    topics: dict[str, Membership] = field(default_factory=dict)
    #: The generation this member was last told (JoinGroup).
    generation: int = -1
    #: When the client was last heard from (time.monotonic()).
    last_seen: float = field(default_factory=time.monotonic)
    #: ``group.instance.id`` of a static member (KIP-345); None for a dynamic one.
    instance_id: str | None = None
    #: The protocols it supports (name -> subscription), in its order of preference.
    protocols: dict[str, bytes] = field(default_factory=dict)
    #: Given a member id but not joined yet (KIP-394): it must join again with the id.
    pending: bool = False
    #: What the client holds: what it said it owns when it last joined, plus what it was
    #: handed since (KIP-429: a cooperative client keeps partitions across a rebalance).
    owned: set[tuple[str, int]] = field(default_factory=set)
    #: Partitions assigned to it but held back at its last SyncGroup: another member
    #: still owned them.
    withheld: set[tuple[str, int]] = field(default_factory=set)
    #: The generations of the memberships it left (a topic unsubscribed or deleted), so
    #: its generation never goes back when it joins a topic's group anew.
    left_generations: int = 0
    #: Whether it synced since it last joined: until then Kafka's group is
    #: CompletingRebalance for it, and its commits are answered REBALANCE_IN_PROGRESS.
    synced: bool = False

    def drop(self, topic: str) -> None:
        """Leaves the group of ``topic`` (worker thread)."""
        membership = self.topics.pop(topic)
        self.left_generations += membership.generation
        membership.leave()

    def expired(self, now: float) -> bool:
        """Silent for longer than its session: the client is gone (as Kafka decides)."""
        return now - self.last_seen > self.session_ms / 1000


def _generation(member: _Member) -> int:
    # Each topic's generation only grows, and those of the groups it left stay counted:
    # so the sum only grows.
    return member.left_generations + sum(m.generation for m in member.topics.values())


def _current_generation(member: _Member) -> int:
    return member.left_generations + sum(m.current_generation() for m in member.topics.values())


_SUBSCRIPTIONS = (SubscriptionV0, SubscriptionV1, SubscriptionV2, SubscriptionV3)


def _subscription(metadata: bytes) -> tuple[list[str], set[tuple[str, int]]]:
    """The topics of a ``ConsumerProtocolSubscription`` and the partitions it owns (v1+).

    A version newer than known is read as the newest known: versions only add fields
    at the end.
    """
    if len(metadata) < 2:
        raise ValueError("subscription metadata too short")
    (version,) = struct.unpack_from(">h", metadata)
    if version < 0:
        raise ValueError(f"subscription version {version}")
    schema: Any = _SUBSCRIPTIONS[min(version, len(_SUBSCRIPTIONS) - 1)]
    value, _size = entity_reader(schema)(metadata, 2)
    owned = {
        (tp.topic, int(p)) for tp in getattr(value, "owned_partitions", ()) for p in tp.partitions
    }
    return sorted(set(value.topics)), owned


def _assignment(parts_by_topic: dict[str, list[int]]) -> bytes:
    parts = tuple(
        TopicPartition(topic=topic, partitions=tuple(ps))  # type: ignore[arg-type]
        for topic, ps in sorted(parts_by_topic.items())
    )
    out = io.BytesIO()
    out.write(struct.pack(">h", 0))
    entity_writer(ConsumerProtocolAssignment)(
        out, ConsumerProtocolAssignment(assigned_partitions=parts, user_data=None)
    )
    return out.getvalue()


def _groups(broker: Broker) -> dict[str, dict[str, _Member]]:
    return broker.groups


def _offsets(broker: Broker) -> OffsetStore:
    return broker.offsets


async def _find_coordinator(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    return {
        "throttle_time": 0,
        "error_code": 0,
        "error_message": None,
        "node_id": broker.node_id,
        "host": broker.host,
        "port": broker.port,
    }


def _join(broker: Broker, group: str, member: _Member, topics: list[str]) -> None:
    """Brings ``member``'s tidelog memberships in line with ``topics`` (worker thread)."""
    for topic in list(member.topics):
        if topic not in topics:
            member.drop(topic)
    for name in topics:
        membership = member.topics.get(name)
        if membership is not None:
            try:
                membership.heartbeat(force=True)
                continue
            except _core.TopicNotFoundError:
                # Deleted (and maybe created again): its group went with it.
                member.drop(name)
        try:
            found = broker.topic(name)
        except _core.TopicNotFoundError:
            # Kafka assigns nothing of a topic that does not exist; the client joins
            # again when its metadata shows the topic created.
            continue
        membership = Membership(
            str(broker.store.path),
            name,
            group,
            found.partitions,
            member.session_ms / 1000,
            core=broker.store.native,
            committed_generation=partial(
                _offsets(broker).highest_generation, group, name, found.incarnation
            ),
        )
        membership.join()
        member.topics[name] = membership


def _new_member_id() -> str:
    return f"kafka-{uuid.uuid4().hex[:12]}"


def _static(members: dict[str, _Member], instance_id: str) -> _Member | None:
    return next((m for m in members.values() if m.instance_id == instance_id), None)


def _candidates(members: Iterable[_Member]) -> set[str] | None:
    """The protocols every joined member supports (None: no member to ask)."""
    found: set[str] | None = None
    for m in members:
        if not m.pending:
            found = set(m.protocols) if found is None else found & set(m.protocols)
    return found


def _select_protocol(members: Iterable[_Member]) -> str | None:
    """Kafka's choice: of the protocols all support, the one most members prefer."""
    joined = [m for m in members if not m.pending]
    candidates = _candidates(joined)
    if not candidates:
        return None
    votes = Counter(next(p for p in m.protocols if p in candidates) for m in joined)
    return max(sorted(votes), key=lambda p: votes[p])


async def _join_group(broker: Broker, request: Any, version: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "throttle_time": 0,
        "error_code": 0,
        "generation_id": -1,
        "protocol_type": "consumer",
        # Nullable from v7 on; before, an error answer names no protocol with "".
        "protocol_name": None if version >= 7 else "",
        "leader": _NO_LEADER,
        "skip_assignment": False,
        "member_id": request.member_id,
        "members": [],
    }
    if request.protocol_type != "consumer" or not request.protocols:
        return answer | {"error_code": _errors.INCONSISTENT_GROUP_PROTOCOL}
    session = int(request.session_timeout.total_seconds() * 1000)
    if not _MIN_SESSION_MS <= session <= _MAX_SESSION_MS:
        return answer | {"error_code": _errors.INVALID_SESSION_TIMEOUT}
    protocols: dict[str, bytes] = {}
    for p in request.protocols:
        protocols.setdefault(p.name, p.metadata)
    members = _groups(broker).setdefault(request.group_id, {})
    await _forget_expired(members)
    instance = getattr(request, "group_instance_id", None)
    member: _Member | None
    if instance is not None:
        member = _static(members, instance)
        if request.member_id and (member is None or member.member_id != request.member_id):
            code = _errors.UNKNOWN_MEMBER_ID if member is None else _errors.FENCED_INSTANCE_ID
            return answer | {"error_code": code}
        if member is not None and not request.member_id:
            # The instance restarted (or a duplicate started): it takes the member's place
            # and partitions under a new id; whoever holds the old id is fenced.
            del members[member.member_id]
            member.member_id = _new_member_id()
            members[member.member_id] = member
    elif request.member_id:
        member = members.get(request.member_id)
        if member is None or member.instance_id is not None:
            return answer | {"error_code": _errors.UNKNOWN_MEMBER_ID}
    else:
        member = None
        if version >= 4:
            # KIP-394: the id first, the membership when the client comes back with it.
            pending = _Member(_new_member_id(), "", "", session, protocols=protocols)
            pending.pending = True
            members[pending.member_id] = pending
            return answer | {
                "error_code": _errors.MEMBER_ID_REQUIRED,
                "member_id": pending.member_id,
            }
    others = _candidates(m for m in members.values() if m is not member)
    if others is not None and not others & set(protocols):
        return answer | {"error_code": _errors.INCONSISTENT_GROUP_PROTOCOL}
    if member is None:
        member = _Member(_new_member_id(), "", "", session, instance_id=instance)
        members[member.member_id] = member
    member.pending = False
    member.protocols = protocols
    member.session_ms = session
    protocol = _select_protocol(members.values())
    try:
        if protocol is None:
            raise ValueError("no protocol in common")
        topics, owned = _subscription(protocols[protocol])
    except Exception:
        return answer | {"error_code": _errors.INCONSISTENT_GROUP_PROTOCOL}
    member.protocol = protocol
    member.owned = owned
    try:
        await asyncio.to_thread(_join, broker, request.group_id, member, topics)
    except _core.TidelogError as e:
        return answer | {"error_code": _errors.code_for(e), "member_id": member.member_id}
    member.generation = _generation(member)
    member.synced = False
    member.last_seen = time.monotonic()
    return answer | {
        "generation_id": member.generation,
        "protocol_name": protocol,
        "member_id": member.member_id,
    }


def _find(
    broker: Broker, group: str, member_id: str, instance_id: str | None
) -> tuple[_Member | None, int]:
    """The joined member ``member_id``, or the Kafka error code answering for it.

    A static member's old id (another client took the instance id) is fenced.
    """
    members = _groups(broker).get(group, {})
    if instance_id is not None:
        static = _static(members, instance_id)
        if static is not None and static.member_id != member_id:
            return None, _errors.FENCED_INSTANCE_ID
    member = members.get(member_id)
    if member is None or member.pending:
        return None, _errors.UNKNOWN_MEMBER_ID
    member.last_seen = time.monotonic()
    return member, 0


async def _forget_expired(members: dict[str, _Member]) -> None:
    """Drops members whose clients went silent past their session (they left no word).

    Their tidelog leases have run out too, so the group already moved on without them;
    this releases what the server held for them.
    """
    now = time.monotonic()
    for member_id, member in list(members.items()):
        if member.expired(now):
            del members[member_id]
            with contextlib.suppress(_core.TidelogError):
                await asyncio.to_thread(_leave, member)


def _owned_by_others(members: dict[str, _Member], member: _Member) -> set[tuple[str, int]]:
    now = time.monotonic()
    owned: set[tuple[str, int]] = set()
    for other in members.values():
        if other is not member and not other.pending and not other.expired(now):
            owned |= other.owned
    return owned


async def _sync_group(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "throttle_time": 0,
        "error_code": 0,
        "protocol_type": "consumer",
        "protocol_name": None,
        "assignment": b"",
    }
    instance = getattr(request, "group_instance_id", None)
    member, code = _find(broker, request.group_id, request.member_id, instance)
    if member is None:
        return answer | {"error_code": code}
    if (
        request.generation_id != member.generation
        or _current_generation(member) != member.generation
    ):
        return answer | {"error_code": _errors.REBALANCE_IN_PROGRESS}
    # What another member still holds waits until it says it let go (KIP-429): a
    # cooperative client keeps consuming what it owns until it has revoked it.
    held = _owned_by_others(_groups(broker)[request.group_id], member)
    given: dict[str, list[int]] = {}
    member.withheld = set()
    for topic, m in member.topics.items():
        for p in m.assignment:
            if (topic, p) in held:
                member.withheld.add((topic, p))
            else:
                given.setdefault(topic, []).append(p)
                member.owned.add((topic, p))
        given.setdefault(topic, [])
    member.synced = True
    return answer | {"protocol_name": member.protocol, "assignment": _assignment(given)}


def _beat(member: _Member) -> bool:
    """Renews every lease; whether any generation moved (worker thread)."""
    moved = False
    for name, m in list(member.topics.items()):
        try:
            moved = m.heartbeat() or moved
        except _core.TopicNotFoundError:
            # A Kafka coordinator knows nothing of topics: the member carries on, told to
            # join again (where it joins the group of the topic created again, if it is).
            member.drop(name)
            moved = True
    return moved or _generation(member) != member.generation


async def _heartbeat(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    instance = getattr(request, "group_instance_id", None)
    member, code = _find(broker, request.group_id, request.member_id, instance)
    if member is None:
        return {"throttle_time": 0, "error_code": code}
    if request.generation_id != member.generation:
        return {"throttle_time": 0, "error_code": _errors.ILLEGAL_GENERATION}
    try:
        moved = await asyncio.to_thread(_beat, member)
    except _core.TidelogError as e:
        return {"throttle_time": 0, "error_code": _errors.code_for(e)}
    if not moved and member.withheld:
        # Partitions held back at its SyncGroup were let go: it rejoins to get them.
        moved = not member.withheld <= _owned_by_others(_groups(broker)[request.group_id], member)
    code = _errors.REBALANCE_IN_PROGRESS if moved else 0
    return {"throttle_time": 0, "error_code": code}


def _leave(member: _Member) -> None:
    for m in member.topics.values():
        m.leave()
    member.topics.clear()


async def _leave_group(broker: Broker, request: Any, version: int) -> dict[str, Any]:
    if version >= 3:
        ids = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        ids = [(request.member_id, None)]
    members = _groups(broker).get(request.group_id, {})
    results = []
    for member_id, instance in ids:
        code = 0
        if instance is not None:
            # A static member leaves by its instance id (the member id may be left out).
            member = _static(members, instance)
            if member is not None and member_id and member.member_id != member_id:
                member, code = None, _errors.FENCED_INSTANCE_ID
        else:
            member = members.get(member_id)
        if member is None or member.pending:
            code = code or _errors.UNKNOWN_MEMBER_ID
        else:
            del members[member.member_id]
            await asyncio.to_thread(_leave, member)
        results.append({"member_id": member_id, "group_instance_id": instance, "error_code": code})
    top = results[0]["error_code"] if version < 3 else 0
    return {"throttle_time": 0, "error_code": top, "members": results}


def _generation_of(request: Any) -> int:
    # The field is named generation_id or generation_id_or_member_epoch by version.
    for name in ("generation_id", "generation_id_or_member_epoch"):
        value = getattr(request, name, None)
        if value is not None:
            return int(value)
    return -1


def validate_commit(
    broker: Broker,
    group: str,
    member_id: str,
    instance_id: str | None,
    generation: int,
    *,
    transactional: bool,
) -> tuple[_Member | None, int]:
    """The member a commit comes from (None: no member), or the Kafka error refusing it.

    Kafka's coordinator's checks (``ClassicGroup.validateOffsetCommit``): a commit of no
    generation is a standalone consumer's or an admin tool's, taken while the group has no
    member (a transactional one also while it has, as from producers older than KIP-447);
    any other names a member that must be known and of the generation it was told, and
    synced since (not for a transactional commit). Whether the group's Python consumers
    leave the standalone commit its partitions is checked per topic, where it is written.
    """
    members = _groups(broker).get(group, {})
    now = time.monotonic()
    empty = all(m.pending or m.expired(now) for m in members.values())
    if generation < 0 and empty:
        return None, 0
    if generation >= 0 or member_id or instance_id is not None:
        member, code = _find(broker, group, member_id, instance_id)
        if member is None:
            return None, code
        if generation != member.generation:
            return None, _errors.ILLEGAL_GENERATION
        if not transactional and not member.synced:
            return None, _errors.REBALANCE_IN_PROGRESS
        return member, 0
    return None, 0 if transactional else _errors.UNKNOWN_MEMBER_ID


@dataclass(frozen=True)
class Claim:
    """What a member's commit on a topic may name, taken in the loop's thread."""

    #: The member's membership of the topic's tidelog group (None: not subscribed).
    membership: Membership | None
    #: The partitions of the topic its client holds.
    holding: frozenset[int]
    #: The other Kafka members of the group here, by tidelog member id: the partitions of
    #: the topic each was handed.
    handed: dict[str, frozenset[int]]


def commit_claim(broker: Broker, group: str, member: _Member | None, topic: str) -> Claim | None:
    """What ``member``'s commit on ``topic`` may name (see :func:`taken`); None for no member."""
    if member is None:
        return None
    handed: dict[str, frozenset[int]] = {}
    for other in _groups(broker).get(group, {}).values():
        membership = other.topics.get(topic)
        if other is not member and membership is not None:
            handed[membership.member_id] = frozenset(p for t, p in other.owned if t == topic)
    holding = frozenset(p for t, p in member.owned if t == topic)
    return Claim(member.topics.get(topic), holding, handed)


def taken(state: GroupState, claim: Claim) -> set[int]:
    """The partitions another member of the group may be consuming now.

    A commit of one of them would move that member's commit back, or be passed over once
    it commits at its newer generation: refused (ILLEGAL_GENERATION, as Kafka answers a
    member the rebalance completed without). A partition assigned to another Kafka member
    here is not taken from the member still holding it: that one is handed it only once the
    holder let go (KIP-429), and Kafka takes the holder's commits until the rebalance
    completes, such as the one a client makes while it revokes.
    """
    mine = claim.membership.member_id if claim.membership is not None else None
    found: set[int] = set()
    for owner, partitions in state.assignment.items():
        if owner == mine:
            continue
        handed = claim.handed.get(owner)
        for p in partitions:
            if handed is None or p not in claim.holding or p in handed:
                found.add(p)
    return found


def _has_live_members(state: GroupState) -> bool:
    now_ms = time.time() * 1000
    return any(info["expires_ms"] > now_ms for info in state.members.values())


#: How many times a commit is tried again when the group moves between the look at its
#: assignment and the write (nothing is written when it does).
_COMMIT_ATTEMPTS = 3


def _commit_topic(
    broker: Broker,
    group: str,
    topic: _core.Topic,
    wanted: dict[int, int],
    metadata: str,
    claim: Claim | None,
) -> dict[int, int]:
    """Commits what may be committed of ``wanted``: each partition's Kafka error code.

    ``claim`` is the member's (None: a commit of no member). A member's commit carries the
    generation of the topic's tidelog group it was checked against and is refused, with
    nothing written, if the group moves on before it is written: so it is never passed
    over by readers after being acknowledged. (The member's Kafka generation is a sum over
    topics, on no tidelog group's scale.)
    """
    offsets = _offsets(broker)
    store_dir = str(broker.store.path)
    for _attempt in range(_COMMIT_ATTEMPTS):
        state = read_state(store_dir, topic.name, group)
        if claim is None:
            if _has_live_members(state):
                # Kafka takes a commit of no member only from an empty group.
                return dict.fromkeys(wanted, _errors.UNKNOWN_MEMBER_ID)
            offsets.committer(group, topic, topic.incarnation).commit(wanted, metadata, -1)
            return dict.fromkeys(wanted, 0)
        refused = taken(state, claim)
        codes = {p: _errors.ILLEGAL_GENERATION if p in refused else 0 for p in wanted}
        allowed = {p: o for p, o in wanted.items() if p not in refused}
        if not allowed:
            return codes
        if claim.membership is None:
            # A member of the Kafka group, not of this topic's: no generation to carry.
            offsets.committer(group, topic, topic.incarnation).commit(allowed, metadata, -1)
            return codes
        native = claim.membership.native
        committer = offsets.committer(group, topic, topic.incarnation, native)
        try:
            committer.commit(allowed, metadata, state.generation)
        except _core.RebalanceError:
            continue  # the group moved since its state was read: look again
        return codes
    return dict.fromkeys(wanted, _errors.ILLEGAL_GENERATION)


def _commit(broker: Broker, request: Any, claims: dict[str, Claim | None]) -> list[dict[str, Any]]:
    topics = []
    for t in request.topics:
        wanted = {p.partition_index: p.committed_offset for p in t.partitions}
        metadata = next((p.committed_metadata for p in t.partitions), None) or ""
        try:
            topic = broker.topic(t.name)
            codes = _commit_topic(broker, request.group_id, topic, wanted, metadata, claims[t.name])
        except _core.TidelogError as e:
            codes = dict.fromkeys(wanted, _errors.code_for(e))
        topics.append(topic_answer(t, codes))
    return topics


def topic_answer(t: Any, codes: dict[int, int]) -> dict[str, Any]:
    """One topic of the answer to a commit request: each partition's error code."""
    return {
        "name": t.name,
        "partitions": [
            {"partition_index": p.partition_index, "error_code": codes[p.partition_index]}
            for p in t.partitions
        ],
    }


def every_partition(request: Any, code: int) -> list[dict[str, Any]]:
    """The answer to a commit request refused as a whole: ``code`` for each partition."""
    return [
        topic_answer(t, {p.partition_index: code for p in t.partitions}) for t in request.topics
    ]


async def _offset_commit(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    member, code = validate_commit(
        broker,
        request.group_id,
        request.member_id,
        getattr(request, "group_instance_id", None),
        _generation_of(request),
        transactional=False,
    )
    if code:
        return {"throttle_time": 0, "topics": every_partition(request, code)}
    claims = {
        t.name: commit_claim(broker, request.group_id, member, t.name) for t in request.topics
    }
    topics = await asyncio.to_thread(_commit, broker, request, claims)
    return {"throttle_time": 0, "topics": topics}


def _fetch_offsets(broker: Broker, group: str, wanted: Any) -> list[dict[str, Any]]:
    offsets = _offsets(broker)
    if wanted is None:  # every topic the group committed on
        names = sorted(t for g, t in offsets.groups() if g == group)
        wanted = [(n, None) for n in names]
    else:
        wanted = [(t.name, list(t.partition_indexes)) for t in wanted]
    topics = []
    for name, partitions in wanted:
        try:
            topic = broker.topic(name)
            committed = offsets.committed(group, name, topic.incarnation)
            code = 0
        except _core.TidelogError as e:
            committed, code = {}, _errors.code_for(e)
        indexes = sorted(committed) if partitions is None else partitions
        answers = []
        for p in indexes:
            c = committed.get(p)
            answers.append(
                {
                    "partition_index": p,
                    "committed_offset": c.offset if c is not None else -1,
                    "committed_leader_epoch": -1,
                    "metadata": c.metadata if c is not None else "",
                    "error_code": code,
                }
            )
        topics.append({"name": name, "partitions": answers})
    return topics


async def _offset_fetch(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    topics = await asyncio.to_thread(_fetch_offsets, broker, request.group_id, request.topics)
    return {"throttle_time": 0, "topics": topics, "error_code": 0}


def _known_groups(broker: Broker) -> dict[str, list[str]]:
    """Every group name, with the topics it has membership state on."""
    found: dict[str, list[str]] = {}
    for topic, group in list_groups(str(broker.store.path)):
        found.setdefault(group, []).append(topic)
    for group, _topic in _offsets(broker).groups():
        found.setdefault(group, [])
    return found


async def _list_groups(broker: Broker, _request: Any, _version: int) -> dict[str, Any]:
    found = await asyncio.to_thread(_known_groups, broker)
    groups = [
        {"group_id": g, "protocol_type": "consumer", "group_state": "Stable" if t else "Empty"}
        for g, t in sorted(found.items())
    ]
    return {"throttle_time": 0, "error_code": 0, "groups": groups}


def _describe(broker: Broker, group: str) -> dict[str, Any]:
    found = _known_groups(broker)
    members: dict[str, dict[str, Any]] = {}
    for topic in found.get(group, []):
        state = read_state(str(broker.store.path), topic, group)
        for member_id in state.members:
            members.setdefault(
                member_id,
                {
                    "member_id": member_id,
                    "group_instance_id": None,
                    "client_id": member_id,
                    "client_host": "",
                    "member_metadata": b"",
                    "member_assignment": b"",
                },
            )
    state_name = "Stable" if members else ("Empty" if group in found else "Dead")
    return {
        "error_code": 0,
        "group_id": group,
        "group_state": state_name,
        "protocol_type": "consumer",
        "protocol_data": "",
        "members": list(members.values()),
        "authorized_operations": -2147483648,
    }


async def _describe_groups(broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    groups = [await asyncio.to_thread(_describe, broker, g) for g in request.groups]
    return {"throttle_time": 0, "groups": groups}


def close_groups(broker: Broker) -> None:
    """Leaves every tidelog group the Kafka members joined (the server stops)."""
    for members in list(broker.groups.values()):
        for member in members.values():
            # If leaving fails, their leases run out instead.
            with contextlib.suppress(_core.TidelogError):
                _leave(member)
        members.clear()


async def _consumer_group_heartbeat(_broker: Broker, request: Any, _version: int) -> dict[str, Any]:
    # As a Kafka broker whose group coordinator has the consumer protocol off: the client
    # reports the error (librdkafka: a fatal error) instead of retrying forever, which is
    # what it does when the API is not advertised at all.
    return {
        "throttle_time": 0,
        "error_code": _errors.UNSUPPORTED_VERSION,
        "error_message": "the KIP-848 consumer group protocol is not served by tidelog: "
        "use group.protocol=classic",
        "member_id": request.member_id,
        "member_epoch": -1,
        "heartbeat_interval": 0,
    }


HANDLERS: dict[int, tuple[int, int, Handler]] = {
    10: (0, 3, _find_coordinator),
    11: (0, 7, _join_group),
    14: (0, 5, _sync_group),
    12: (0, 4, _heartbeat),
    13: (0, 4, _leave_group),
    8: (2, 7, _offset_commit),
    9: (1, 7, _offset_fetch),
    16: (0, 4, _list_groups),
    15: (0, 5, _describe_groups),
    68: (0, 1, _consumer_group_heartbeat),
}
