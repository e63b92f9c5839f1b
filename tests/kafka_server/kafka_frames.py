"""Hand-built Kafka requests for the server's tests: kio's encodings, plus what kio cannot
write (tagged fields the schema does not know, which a receiver must skip)."""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer
from tidelog.kafka_server import KafkaServer
from tidelog.kafka_server._codec import build

#: A tagged-field section holding one field no schema defines: tag 99, three bytes.
UNKNOWN_TAGS = b"\x01\x63\x03abc"
#: A tagged-field section holding two unknown fields, one of them empty.
TWO_UNKNOWN_TAGS = b"\x02\x2a\x00\x63\x02zz"


def connect(server: KafkaServer) -> socket.socket:
    host, port = server.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def body(key: int, version: int, data: dict[str, Any]) -> bytes:
    """The request body of API ``key`` at ``version`` holding ``data``, as kio writes it."""
    cls = load_request_schema(key, version)
    out = io.BytesIO()
    entity_writer(cls)(out, build(cls, data))
    return out.getvalue()


def with_tags(encoded: bytes, tags: bytes = UNKNOWN_TAGS) -> bytes:
    """A flexible entity's bytes whose empty tagged-field section (its last byte, when it
    ends with no tagged fields) is replaced by ``tags``."""
    assert encoded[-1:] == b"\x00", "the entity must end with an empty tagged-field section"
    return encoded[:-1] + tags


def send(
    sock: socket.socket,
    key: int,
    version: int,
    correlation: int,
    payload: bytes,
    header_tags: bytes = b"\x00",
) -> None:
    client = b"tests"
    head = struct.pack(">hhih", key, version, correlation, len(client)) + client
    if load_request_schema(key, version).__flexible__:
        head += header_tags
    frame = head + payload
    sock.sendall(struct.pack(">i", len(frame)) + frame)


def receive(sock: socket.socket, key: int, version: int, correlation: int) -> Any:
    """Reads one response and decodes it with kio (which checks every byte is used)."""
    (size,) = struct.unpack(">i", _recv(sock, 4))
    frame = _recv(sock, size)
    cls = load_response_schema(key, version)
    header_cls = ResponseHeaderV1 if cls.__flexible__ and key != 18 else ResponseHeaderV0
    header: Any
    header, at = entity_reader(header_cls)(frame, 0)
    assert header.correlation_id == correlation
    response, used = entity_reader(cls)(frame, at)
    assert at + used == len(frame)
    return response


def request(
    sock: socket.socket,
    key: int,
    version: int,
    payload: bytes,
    header_tags: bytes = b"\x00",
    correlation: int = 7,
) -> Any:
    send(sock, key, version, correlation, payload, header_tags)
    return receive(sock, key, version, correlation)


def closed(sock: socket.socket) -> bool:
    """True if the server closed the connection (it does on a request it cannot decode)."""
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


def _recv(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the server")
        out += chunk
    return out


def fetch_body(
    topic: str, offset: int, *, committed: bool = False, session_id: int = 0, epoch: int = -1
) -> dict[str, Any]:
    """A Fetch v12 request of one partition (0) of ``topic`` that does not wait."""
    return {
        "replica_id": -1,
        "max_wait": 0,
        "min_bytes": 0,
        "max_bytes": 1 << 20,
        "isolation_level": 1 if committed else 0,
        "session_id": session_id,
        "session_epoch": epoch,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {
                        "partition": 0,
                        "current_leader_epoch": -1,
                        "fetch_offset": offset,
                        "last_fetched_epoch": -1,
                        "log_start_offset": -1,
                        "partition_max_bytes": 1 << 20,
                    }
                ],
            }
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def batches(records: bytes) -> list[tuple[int, int, int, bytes]]:
    """The Kafka batches in ``records``: (base offset, attributes, producer id, bytes)."""
    out = []
    at = 0
    while at < len(records):
        (length,) = struct.unpack_from(">i", records, at + 8)
        batch = records[at : at + 12 + length]
        (base,) = struct.unpack_from(">q", batch, 0)
        (attributes,) = struct.unpack_from(">h", batch, 21)
        (producer_id,) = struct.unpack_from(">q", batch, 43)
        out.append((base, attributes, producer_id, bytes(batch)))
        at += 12 + length
    return out
