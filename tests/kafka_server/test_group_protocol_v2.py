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

import tidelog
from confluent_kafka import Consumer, KafkaError
from kio.index import load_request_schema, load_response_schema
from kio.schema.consumer_protocol_subscription.v0.data import ConsumerProtocolSubscription
from kio.schema.request_header.v1.header import RequestHeader
from kio.schema.response_header.v0.header import ResponseHeader
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i16, i32, i32Timedelta, i64, i64Timedelta
from tidelog.groups import read_state
from tidelog.kafka_server import KafkaServer

# Bounds on waits for something that must happen; never a measure of speed.
_PATIENCE = 30.0
_FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 300}


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
    stale = _commit(server.address, member, 2, "t", {0: 5, 1: 5})
    assert stale == [KafkaError.ILLEGAL_GENERATION] * 2, "a generation it was not told"
    assert _commit(server.address, member, 3, "t", {0: 5, 1: 5}) == [0, 0]
    with store.consumer("t", group="g") as python_member:
        (p,) = python_member.assignment()
        assert python_member.committed() == {0: 5, 1: 5}
        python_member.commit({p: 3})
        assert python_member.committed()[p] == 3, "fenced by the Kafka generation"
