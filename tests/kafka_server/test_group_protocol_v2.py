"""The classic group protocol's finer points on `serve_kafka()`, with real clients.

KIP-394 (a JoinGroup without a member id first gets one: no ghost members), KIP-345 (static
membership: a restarted member gets its partitions back without a rebalance; a duplicate
instance id fences the older consumer), KIP-429 (cooperative-sticky consumers revoke only
what moves, and nobody gets a partition before its owner gave it up) and KIP-848 (the
`consumer` group protocol is refused with an error the client reports).
"""

from __future__ import annotations

import datetime
import io
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tidelog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kio.index import load_request_schema, load_response_schema
from kio.schema.consumer_protocol_assignment.v0.data import ConsumerProtocolAssignment
from kio.schema.consumer_protocol_subscription.v0.data import ConsumerProtocolSubscription
from kio.schema.request_header.v1.header import RequestHeader
from kio.schema.response_header.v0.header import ResponseHeader
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i16, i32, i32Timedelta, i64, i64Timedelta
from tidelog.groups import read_state
from tidelog.kafka_server import KafkaServer
from tidelog.offsets import OffsetStore

# Bounds on waits for something that must happen; never a measure of speed.
_PATIENCE = 30.0
_FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 300}
#: The lease of a Python consumer that is not polled while the test waits on Kafka clients:
#: it must not lose its partitions meanwhile.
_LEASE = 2 * _PATIENCE


def _wait_for(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _PATIENCE
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _recv(sock: socket.socket, n: int) -> bytes:
    chunks = b""
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        assert chunk, "the server closed the connection"
        chunks += chunk
    return chunks


def _call(address: str, key: int, version: int, **fields: Any) -> Any:
    """One request of API ``key`` at ``version`` over a fresh connection; the response."""
    request = load_request_schema(key, version)(**fields)
    out = io.BytesIO()
    header = RequestHeader(
        request_api_key=i16(key),
        request_api_version=i16(version),
        correlation_id=i32(7),
        client_id="raw",
    )
    entity_writer(RequestHeader)(out, header)
    entity_writer(type(request))(out, request)
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=_PATIENCE) as sock:
        sock.sendall(struct.pack(">i", len(out.getvalue())) + out.getvalue())
        (size,) = struct.unpack(">i", _recv(sock, 4))
        frame = _recv(sock, size)
    _header, at = entity_reader(ResponseHeader)(frame, 0)
    response, _size = entity_reader(load_response_schema(key, version))(frame, at)
    return response


def _join(
    address: str, version: int, member_id: str, topics: tuple[str, ...] = ("t",), **extra: Any
) -> Any:
    metadata = io.BytesIO()
    metadata.write(struct.pack(">h", 0))
    entity_writer(ConsumerProtocolSubscription)(
        metadata, ConsumerProtocolSubscription(topics=topics, user_data=None)
    )
    module = sys.modules[load_request_schema(11, version).__module__]
    protocol = module.JoinGroupRequestProtocol(name="range", metadata=metadata.getvalue())
    timeout = i32Timedelta.parse(datetime.timedelta(seconds=10))
    fields: dict[str, Any] = {
        "group_id": "g",
        "session_timeout": timeout,
        "member_id": member_id,
        "protocol_type": "consumer",
        "protocols": (protocol,),
    }
    if version >= 1:
        fields["rebalance_timeout"] = timeout
    return _call(address, 11, version, **(fields | extra))


def test_a_join_without_a_member_id_gets_one_first(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 2)
    first = _join(server.address, 5, "")
    assert first.error_code == KafkaError.MEMBER_ID_REQUIRED
    assert first.member_id and first.generation_id == -1
    # Nobody joined yet: a client that never comes back leaves no member behind.
    assert read_state(str(store.path), "t", "g").members == {}
    joined = _join(server.address, 5, first.member_id)
    assert joined.error_code == 0 and joined.member_id == first.member_id
    assert len(read_state(str(store.path), "t", "g").members) == 1
    # A member id the server never handed out is refused.
    assert _join(server.address, 5, "made-up").error_code == KafkaError.UNKNOWN_MEMBER_ID
    # Before v4 (KIP-394) an empty member id joins at once, as Kafka does.
    old = _join(server.address, 3, "")
    assert old.error_code == 0 and old.member_id
    assert len(read_state(str(store.path), "t", "g").members) == 2


def test_librdkafka_rejoins_with_the_member_id_it_was_given(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 2)
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test-kip394")
    logger.addHandler(Collect())
    logger.setLevel(logging.DEBUG)
    consumer = Consumer(
        {"bootstrap.servers": server.address, "group.id": "g", "debug": "cgrp", **_FAST_GROUP},
        logger=logger,
    )
    try:
        consumer.subscribe(["t"])
        _wait_for("an assignment", lambda: bool(consumer.poll(0.1) or consumer.assignment()))
        assert sorted(p.partition for p in consumer.assignment()) == [0, 1]
    finally:
        consumer.close()
    required = KafkaError(KafkaError.MEMBER_ID_REQUIRED).str()
    joins = [line for line in lines if "JoinGroup response" in line]
    assert any(required in line for line in joins), joins
    # One member joined, under the id the first answer gave it (none left over).
    assert len([line for line in joins if "(no error)" in line]) >= 1


class _Member:
    """A confluent-kafka consumer of topic "t" in group "g", polled in its own thread."""

    def __init__(self, name: str, address: str, events: list[Any], **config: Any) -> None:
        self.name = name
        self.errors: list[KafkaError] = []
        self.consumer = Consumer(
            {
                "bootstrap.servers": address,
                "group.id": "g",
                "auto.offset.reset": "earliest",
                **_FAST_GROUP,
                **config,
            }
        )

        def on_assign(_c: Any, parts: list[Any]) -> None:
            events.append((name, "assign", sorted(p.partition for p in parts)))

        def on_revoke(_c: Any, parts: list[Any]) -> None:
            events.append((name, "revoke", sorted(p.partition for p in parts)))

        self.consumer.subscribe(["t"], on_assign=on_assign, on_revoke=on_revoke)
        self._assignment: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.05)
            error = msg.error() if msg is not None else None
            if error is not None:
                self.errors.append(error)
            # Asked here, between polls: from another thread, assignment() can wait on a
            # rebalance callback that waits for the GIL that thread holds.
            self._assignment = sorted(p.partition for p in self.consumer.assignment())

    def partitions(self) -> list[int]:
        return self._assignment

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.consumer.close()


def _fatal(errors: list[KafkaError]) -> KafkaError | None:
    """The fatal error a consumer reported (librdkafka: code _FATAL), if any."""
    return next((e for e in errors if e.code() == KafkaError._FATAL or e.fatal()), None)


def _split(members: list[_Member], partitions: int) -> bool:
    owned = [p for m in members for p in m.partitions()]
    return sorted(owned) == list(range(partitions))


def test_a_restarted_static_member_gets_its_partitions_back_without_a_rebalance(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 4)
    events: list[Any] = []
    a = _Member("a", server.address, events, **{"group.instance.id": "a"})
    b = _Member("b", server.address, events, **{"group.instance.id": "b"})
    restarted: _Member | None = None
    try:
        _wait_for("the group to settle", lambda: _split([a, b], 4) and a.partitions() != [])
        time.sleep(1.0)  # a few heartbeats: nothing else is under way
        mine, theirs = a.partitions(), b.partitions()
        generation = read_state(str(store.path), "t", "g").generation
        seen_by_b = [e for e in events if e[0] == "b"]
        a.close()  # a static member leaves no word (KIP-345): its session keeps its place
        restarted = _Member("a again", server.address, events, **{"group.instance.id": "a"})
        _wait_for("the restarted member's partitions", lambda: restarted.partitions() == mine)
        time.sleep(1.0)  # a few of b's heartbeats: none may start a rebalance
        assert b.partitions() == theirs
        assert [e for e in events if e[0] == "b"] == seen_by_b
        assert read_state(str(store.path), "t", "g").generation == generation
        assert a.errors == b.errors == restarted.errors == []
    finally:
        for m in (restarted, b):
            if m is not None:
                m.close()


def test_a_duplicate_instance_id_fences_the_older_consumer(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 2)
    events: list[Any] = []
    old = _Member("old", server.address, events, **{"group.instance.id": "x"})
    new: _Member | None = None
    try:
        _wait_for("the first consumer's partitions", lambda: old.partitions() == [0, 1])
        new = _Member("new", server.address, events, **{"group.instance.id": "x"})
        _wait_for("the new consumer's partitions", lambda: new.partitions() == [0, 1])
        _wait_for("the old consumer to be fenced", lambda: _fatal(old.errors) is not None)
        fatal = _fatal(old.errors)
        assert fatal is not None and "fenced" in fatal.str().lower(), fatal
        assert new.errors == []
    finally:
        old.close()
        if new is not None:
            new.close()


def test_cooperative_consumers_revoke_only_what_moves_and_never_overlap(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 4)
    events: list[Any] = []
    strategy = {"partition.assignment.strategy": "cooperative-sticky"}
    a = _Member("a", server.address, events, **strategy)
    b: _Member | None = None
    try:
        _wait_for("a to own every partition", lambda: a.partitions() == [0, 1, 2, 3])
        b = _Member("b", server.address, events, **strategy)
        _wait_for("the two to split", lambda: _split([a, b], 4) and bool(b.partitions()))
        time.sleep(1.0)  # let any late callback land
        assert len(a.partitions()) == len(b.partitions()) == 2
        # Incremental: a gave up exactly the partitions b now has, and kept the others.
        revoked_by_a = [
            p for name, what, ps in events if (name, what) == ("a", "revoke") for p in ps
        ]
        assert sorted(revoked_by_a) == b.partitions()
        # No overlap: every partition b was given had been revoked by a before.
        for i, (name, what, parts) in enumerate(events):
            if (name, what) == ("b", "assign"):
                earlier = {p for n, w, ps in events[:i] if (n, w) == ("a", "revoke") for p in ps}
                assert set(parts) <= earlier, events
        assert a.errors == b.errors == []
    finally:
        a.close()
        if b is not None:
            b.close()


def test_the_consumer_group_protocol_is_refused_with_an_error(
    store: tidelog.Store, server: KafkaServer
) -> None:
    store.create_topic("t", 1)
    consumer = Consumer(
        {"bootstrap.servers": server.address, "group.id": "g", "group.protocol": "consumer"}
    )
    errors: list[KafkaError] = []
    try:
        consumer.subscribe(["t"])

        def failed() -> bool:
            msg = consumer.poll(0.1)
            error = msg.error() if msg is not None else None
            if error is not None:
                errors.append(error)
            return bool(errors)

        _wait_for("the client to report the refusal", failed)
    finally:
        consumer.close()
    # librdkafka makes the refusal a fatal error naming the API it could not use.
    assert errors[0].code() == KafkaError._FATAL, errors
    assert "ConsumerGroupHeartbeat" in errors[0].str(), errors


def _commit(
    address: str, member_id: str, generation: int, topic: str, offsets: dict[int, int]
) -> Any:
    """An OffsetCommit v2 of group "g"; the error code of each partition."""
    module = sys.modules[load_request_schema(8, 2).__module__]
    partitions = tuple(
        module.OffsetCommitRequestPartition(
            partition_index=i32(p), committed_offset=i64(o), committed_metadata=None
        )
        for p, o in offsets.items()
    )
    response = _call(
        address,
        8,
        2,
        group_id="g",
        generation_id_or_member_epoch=i32(generation),
        member_id=member_id,
        retention_time=i64Timedelta.parse(datetime.timedelta(milliseconds=-1)),
        topics=(module.OffsetCommitRequestTopic(name=topic, partitions=partitions),),
    )
    return [p.error_code for t in response.topics for p in t.partitions]


def test_a_kafka_members_commits_carry_its_tidelog_groups_generation(
    store: tidelog.Store, server: KafkaServer
) -> None:
    # The Kafka generation of a member of several topics' groups is a sum over them; its
    # commits carry the generation of the topic's tidelog group, which Python consumers of
    # the group share: a commit of theirs at a later generation is not fenced by it.
    for name in ("t", "u", "v"):
        topic = store.create_topic(name, 2)
        for p in (0, 1):
            topic.append_batch([b"x"] * 10, partition=p)
    first = _join(server.address, 5, "", topics=("t", "u", "v"))
    joined = _join(server.address, 5, first.member_id, topics=("t", "u", "v"))
    assert joined.error_code == 0 and joined.generation_id == 3
    member = joined.member_id
    assert _sync(server.address, member, 3).error_code == 0
    stale = _commit(server.address, member, 2, "t", {0: 5, 1: 5})
    assert stale == [KafkaError.ILLEGAL_GENERATION] * 2, "a generation it was not told"
    assert _commit(server.address, member, 3, "t", {0: 5, 1: 5}) == [0, 0]
    with store.consumer("t", group="g") as python_member:
        (p,) = python_member.assignment()
        assert python_member.committed() == {0: 5, 1: 5}
        python_member.commit({p: 3})
        assert python_member.committed()[p] == 3, "fenced by the Kafka generation"


def _sync(address: str, member_id: str, generation: int) -> Any:
    """An empty SyncGroup v3 of group "g" (the server assigns)."""
    return _call(
        address,
        14,
        3,
        group_id="g",
        generation_id=i32(generation),
        member_id=member_id,
        group_instance_id=None,
        assignments=(),
    )


def _joined(address: str) -> tuple[str, int]:
    """A member of group "g" on topic "t" that joined and synced: its id and generation."""
    first = _join(address, 5, "")
    joined = _join(address, 5, first.member_id)
    assert joined.error_code == 0
    assert _sync(address, joined.member_id, joined.generation_id).error_code == 0
    return joined.member_id, joined.generation_id


def test_offset_commit_answers_as_kafkas_coordinator(
    store: tidelog.Store, server: KafkaServer
) -> None:
    # Kafka's ClassicGroup.validateOffsetCommit, case by case: a commit it refuses is
    # refused here with its error, with nothing written.
    topic = store.create_topic("t", 2)
    topic.append_batch([b"x"] * 10, partition=0)
    topic.append_batch([b"x"] * 10, partition=1)
    offsets = OffsetStore(store.native)

    def committed() -> dict[int, int]:
        return {p: c.offset for p, c in offsets.committed("g", "t", topic.incarnation).items()}

    # No member: a standalone consumer's commit (generation -1, no member id) is taken.
    assert _commit(server.address, "", -1, "t", {0: 1, 1: 1}) == [0, 0]
    # Generation given, member id not: an unknown member.
    assert _commit(server.address, "", 0, "t", {0: 9}) == [KafkaError.UNKNOWN_MEMBER_ID]
    first = _join(server.address, 5, "")
    joined = _join(server.address, 5, first.member_id)
    member, generation = joined.member_id, joined.generation_id
    # Joined, not synced yet (Kafka's CompletingRebalance): the client is told to finish.
    rebalancing = _commit(server.address, member, generation, "t", {0: 9})
    assert rebalancing == [KafkaError.REBALANCE_IN_PROGRESS]
    assert _sync(server.address, member, generation).error_code == 0
    assert _commit(server.address, member, generation, "t", {0: 2, 1: 2}) == [0, 0]
    stale = _commit(server.address, member, generation - 1, "t", {0: 9, 1: 9})
    assert stale == [KafkaError.ILLEGAL_GENERATION] * 2
    assert _commit(server.address, member, -1, "t", {0: 9}) == [KafkaError.ILLEGAL_GENERATION]
    unknown = _commit(server.address, "kafka-made-up", generation, "t", {0: 9})
    assert unknown == [KafkaError.UNKNOWN_MEMBER_ID]
    # With a member in the group, a commit without one is refused: it would move the
    # member's commits back.
    assert _commit(server.address, "", -1, "t", {0: 9}) == [KafkaError.UNKNOWN_MEMBER_ID]
    assert committed() == {0: 2, 1: 2}


def test_a_standalone_commit_is_refused_while_python_consumers_share_the_group(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = store.create_topic("t", 1)
    topic.append_batch([b"x"] * 10, partition=0)
    with store.consumer("t", group="g", lease_seconds=_LEASE) as python_member:
        python_member.commit({0: 5})
        refused = _commit(server.address, "", -1, "t", {0: 1})
        assert refused == [KafkaError.UNKNOWN_MEMBER_ID]
        assert python_member.committed() == {0: 5}
    # The group is empty again: a standalone consumer (assign()) commits, as with Kafka.
    assert _commit(server.address, "", -1, "t", {0: 1}) == [0]
    committed = OffsetStore(store.native).committed("g", "t", topic.incarnation)
    assert committed[0].offset == 1


def _two_partitions_of_20(store: tidelog.Store) -> tidelog.Topic:
    """Topic "t": 2 partitions of 20 messages each."""
    topic = store.create_topic("t", 2)
    topic.append_batch([b"x"] * 20, partition=0)
    topic.append_batch([b"x"] * 20, partition=1)
    return topic


def _kafka_member(server: KafkaServer) -> Consumer:
    """A confluent-kafka consumer of group "g" that commits only when told."""
    return Consumer(
        {
            "bootstrap.servers": server.address,
            "group.id": "g",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **_FAST_GROUP,
        }
    )


def test_a_commit_of_a_partition_another_member_took_is_refused_per_partition(
    store: tidelog.Store, server: KafkaServer
) -> None:
    _two_partitions_of_20(store)
    member, generation = _joined(server.address)
    with store.consumer("t", group="g", lease_seconds=_LEASE) as python_member:
        # The Python consumer took a partition at once; the Kafka member has not rejoined
        # yet: its generation is the one it was told, but that partition is no longer its.
        (taken,) = python_member.assignment()
        kept = 1 - taken
        python_member.commit({taken: 10})
        codes = _commit(server.address, member, generation, "t", {taken: 3, kept: 4})
        assert codes == [KafkaError.ILLEGAL_GENERATION, 0], "its own partition's commit stands"
        assert python_member.committed() == {taken: 10, kept: 4}


def _assigned(synced: Any) -> list[int]:
    """The partitions of "t" a SyncGroup answer hands out."""
    value, _size = entity_reader(ConsumerProtocolAssignment)(synced.assignment, 2)
    return sorted(int(p) for tp in value.assigned_partitions for p in tp.partitions)


def test_a_kafka_members_commits_count_until_it_lets_go_then_the_next_owners(
    store: tidelog.Store, server: KafkaServer
) -> None:
    topic = _two_partitions_of_20(store)
    a, a_generation = _joined(server.address)
    first = _join(server.address, 5, "")
    b = _join(server.address, 5, first.member_id)
    # b's share is held back while a still holds it (KIP-429).
    assert _assigned(_sync(server.address, b.member_id, b.generation_id)) == []
    # a has not rejoined yet (Kafka's PreparingRebalance): its commits, such as the one a
    # client makes while it revokes, still count.
    assert _commit(server.address, a, a_generation, "t", {0: 5, 1: 5}) == [0, 0]
    # a rejoins, keeps its share and lets the other go; b rejoins and gets it.
    rejoined = _join(server.address, 5, a)
    (kept,) = _assigned(_sync(server.address, a, rejoined.generation_id))
    moved = 1 - kept
    b_again = _join(server.address, 5, b.member_id)
    assert _assigned(_sync(server.address, b.member_id, b_again.generation_id)) == [moved]
    assert _commit(server.address, b.member_id, b_again.generation_id, "t", {moved: 10}) == [0]
    # a's commits of the partition b now owns, of the old generation or the new, are
    # refused: they would move b's commit back.
    old = _commit(server.address, a, a_generation, "t", {moved: 3})
    assert old == [KafkaError.ILLEGAL_GENERATION]
    new = _commit(server.address, a, rejoined.generation_id, "t", {moved: 3, kept: 6})
    assert new == [KafkaError.ILLEGAL_GENERATION, 0]
    committed = OffsetStore(store.native).committed("g", "t", topic.incarnation)
    assert {p: c.offset for p, c in committed.items()} == {moved: 10, kept: 6}


def _until(consumer: Consumer, what: str, done: Callable[[], bool]) -> None:
    """Polls ``consumer`` until ``done()``: its rebalances run inside poll."""

    def polled() -> bool:
        consumer.poll(0.05)
        return done()

    _wait_for(what, polled)


def test_a_stale_kafka_member_is_told_its_commit_failed_and_rejoins(
    store: tidelog.Store, server: KafkaServer
) -> None:
    _two_partitions_of_20(store)
    kafka = _kafka_member(server)

    def partitions() -> list[int]:
        return sorted(tp.partition for tp in kafka.assignment())

    try:
        kafka.subscribe(["t"])
        _until(kafka, "both partitions", lambda: partitions() == [0, 1])
        with store.consumer("t", group="g", lease_seconds=_LEASE) as python_member:
            (taken,) = python_member.assignment()
            kept = 1 - taken
            python_member.commit({taken: 10})
            # The Kafka member consumed `taken` up to 3 before it heard of the rebalance:
            # its commit would move the new owner's back (or be passed over). Refused.
            with pytest.raises(KafkaException) as refused:
                kafka.commit(offsets=[TopicPartition("t", taken, 3)], asynchronous=False)
            assert refused.value.args[0].code() == KafkaError.ILLEGAL_GENERATION
            assert python_member.committed() == {taken: 10}
            # As with a broker, the client joins again and goes on with what it keeps.
            _until(kafka, "the rejoin", lambda: partitions() == [kept])
            kafka.commit(offsets=[TopicPartition("t", kept, 7)], asynchronous=False)
            assert python_member.committed() == {taken: 10, kept: 7}
        # The Python consumer left: the Kafka member takes `taken` back where its owner
        # committed, not where the refused commit would have put it.
        _until(kafka, "both partitions again", lambda: partitions() == [0, 1])
        got = kafka.committed([TopicPartition("t", 0), TopicPartition("t", 1)], _PATIENCE)
        assert {tp.partition: tp.offset for tp in got} == {taken: 10, kept: 7}
        first: dict[int, int] = {}

        def read_both() -> bool:
            msg = kafka.poll(0.05)
            if msg is not None and msg.error() is None:
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                first.setdefault(partition, offset)
            return len(first) == 2

        _wait_for("a message of each partition", read_both)
        assert first == {taken: 10, kept: 7}
    finally:
        kafka.close()


def test_a_transactional_commit_of_a_partition_another_member_took_is_refused(
    store: tidelog.Store, server: KafkaServer
) -> None:
    _two_partitions_of_20(store)
    kafka = _kafka_member(server)
    producer = Producer({"bootstrap.servers": server.address, "transactional.id": "etl"})

    def send_offsets(offsets: dict[int, int], metadata: Any) -> None:
        producer.begin_transaction()
        try:
            positions = [TopicPartition("t", p, o) for p, o in offsets.items()]
            producer.send_offsets_to_transaction(positions, metadata, _PATIENCE)
        except KafkaException:
            producer.abort_transaction(_PATIENCE)
            raise
        producer.commit_transaction(_PATIENCE)

    try:
        kafka.subscribe(["t"])
        _until(kafka, "both partitions", lambda: len(kafka.assignment()) == 2)
        metadata = kafka.consumer_group_metadata()
        producer.init_transactions(_PATIENCE)
        with store.consumer("t", group="g", lease_seconds=_LEASE) as python_member:
            (taken,) = python_member.assignment()
            kept = 1 - taken
            python_member.commit({taken: 10})
            with pytest.raises(KafkaException) as refused:
                send_offsets({taken: 3}, metadata)
            assert refused.value.args[0].code() == KafkaError.ILLEGAL_GENERATION
            assert python_member.committed() == {taken: 10}
            send_offsets({kept: 4}, metadata)  # still its own: committed with the transaction
            assert python_member.committed() == {taken: 10, kept: 4}
            kafka.close()  # leaves the group: its id is no member's any more
            with pytest.raises(KafkaException) as unknown:
                send_offsets({kept: 1}, metadata)
            assert unknown.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID
            assert python_member.committed() == {taken: 10, kept: 4}
    finally:
        kafka.close()
        producer.flush(_PATIENCE)
