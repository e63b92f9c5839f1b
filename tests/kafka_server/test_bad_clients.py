"""Bad clients get protocol errors or a closed connection, never a crashed server."""

from __future__ import annotations

import logging
import random
import socket
import struct

import pytest
import tidelog
from confluent_kafka import Consumer, Producer, TopicPartition
from tidelog.kafka_server import KafkaServer


def _connect(server: KafkaServer) -> socket.socket:
    host, port = server.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _frame(key: int, version: int, correlation: int, body: bytes, flexible: bool) -> bytes:
    client = b"fuzz"
    header = struct.pack(">hhih", key, version, correlation, len(client)) + client
    if flexible:
        header += b"\0"  # no tagged fields
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _read_response(sock: socket.socket) -> bytes:
    size = struct.unpack(">i", _recv(sock, 4))[0]
    return _recv(sock, size)


def _recv(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


# Valid requests to mutate: ApiVersions v0 and v3, Metadata v1 (one topic, no
# auto-creation at v4 is not in v1: the topic exists), ListOffsets v1, Fetch v4.
def _templates() -> list[bytes]:
    api_v0 = _frame(18, 0, 1, b"", False)
    api_v3 = _frame(18, 3, 2, b"\x05fuzz\x021\x00", True)
    metadata = _frame(3, 1, 3, struct.pack(">ih", 1, 1) + b"t", False)
    list_offsets = _frame(
        2, 1, 4, struct.pack(">iih", -1, 1, 1) + b"t" + struct.pack(">iiq", 1, 0, -1), False
    )
    fetch = _frame(
        1,
        4,
        5,
        struct.pack(">iiiibih", -1, 10, 1, 1 << 20, 0, 1, 1)
        + b"t"
        + struct.pack(">iiqi", 1, 0, 0, 1 << 20),
        False,
    )
    return [api_v0, api_v3, metadata, list_offsets, fetch]


def test_templates_are_answered(store: tidelog.Store, server: KafkaServer) -> None:
    store.create_topic("t", 1).append(b"x", partition=0)
    with _connect(server) as sock:
        for frame in _templates():
            sock.sendall(frame)
            response = _read_response(sock)
            assert response[:4] == frame[8:12]  # the correlation id comes back


def test_unknown_api_oversized_and_truncated_requests_close_the_connection(
    store: tidelog.Store, server: KafkaServer
) -> None:
    for frame in (
        _frame(999, 0, 1, b"", False),  # unknown API key
        _frame(3, 99, 1, b"", False),  # unknown version
        struct.pack(">i", 200 * 1024 * 1024) + b"\0" * 16,  # oversized
        struct.pack(">i", -5),
        _frame(3, 1, 1, b"\xff\xff", False),  # truncated body
    ):
        with _connect(server) as sock:
            sock.sendall(frame)
            assert sock.recv(1) == b""  # closed, nothing answered
    # A too-new ApiVersions is answered (v0, UNSUPPORTED_VERSION, and our versions).
    with _connect(server) as sock:
        sock.sendall(_frame(18, 77, 9, b"", True))
        response = _read_response(sock)
        assert struct.unpack(">ih", response[:6]) == (9, 35)
    # Disconnecting mid-request.
    with _connect(server) as sock:
        sock.sendall(_templates()[2][:10])


def test_ten_thousand_fuzzed_frames_never_crash_the_server(
    store: tidelog.Store, server: KafkaServer, caplog: pytest.LogCaptureFixture
) -> None:
    store.create_topic("t", 1).append(b"x", partition=0)
    rng = random.Random(18)
    templates = _templates()
    sock = _connect(server)
    try:
        for _i in range(10_000):
            kind = rng.random()
            if kind < 0.2:
                body = rng.randbytes(rng.randrange(0, 64))
                frame = struct.pack(">i", len(body)) + body
            else:
                mutated = bytearray(rng.choice(templates))
                for _ in range(rng.randrange(1, 4)):
                    at = rng.randrange(4, len(mutated))  # keep the size: the payload is fuzzed
                    mutated[at] = rng.randrange(256)
                frame = bytes(mutated)
            try:
                sock.sendall(frame)
                # A fuzzed Fetch may ask for a long poll: hang up on it rather than wait.
                sock.settimeout(0.3)
                _read_response(sock)
            except (ConnectionError, OSError):
                sock.close()
                sock = _connect(server)
    finally:
        sock.close()
    assert not server.closed
    # Every bad frame was refused as the client's fault, none hit a bug in a handler.
    unexpected = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert unexpected == []
    # A normal client still works.
    producer = Producer({"bootstrap.servers": server.address, "acks": "all"})
    producer.produce("t", b"after the fuzz", partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": server.address, "group.id": "after"})
    try:
        consumer.assign([TopicPartition("t", 0, 1)])
        msg = None
        for _ in range(100):
            msg = consumer.poll(0.3)
            if msg is not None:
                break
        assert msg is not None and msg.value() == b"after the fuzz"
    finally:
        consumer.close()
