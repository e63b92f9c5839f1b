"""Kafka message encodings: requests decoded and responses encoded with ``kio``.

``kio`` is generated from Kafka's own JSON message schemas (one frozen dataclass per API,
version and nested structure). Handlers answer with plain dicts; :func:`encode_response`
builds the response entity of the request's version from them, keeping the fields that
version has and defaulting the others, so one handler serves every version it advertises.

Tagged fields: Kafka's flexible versions (KIP-482) let a client add tagged fields the
receiver does not know, which the receiver must skip. kio 0.6.5's native reader refuses
them ("Unknown tagged field tag"). A request kio refuses is decoded again by
:func:`_read_tolerant`, a reader walking the same kio schema classes with kio's own field
readers that skips unknown tags; the native reader stays the fast path, so only such
requests (and malformed ones) pay. Bytes after a whole request are ignored, as Kafka's
broker ignores them: librdkafka 2.16's all-topics Metadata request at v9+ carries three
(which is what kept Metadata at v8 before, not a tagged field).
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
import typing
import uuid
from functools import cache
from typing import Any

from kio._kio_native import get_field_reader, read_int8, read_unsigned_varint
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer
from kio.serial._implicit_defaults import get_tagged_field_default
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    classify_field,
    get_field_tag,
    is_optional,
)
from kio.serial.readers import read_compact_array_length, read_legacy_array_length
from kio.static.primitive import i32

__all__ = ["RequestError", "decode_request", "encode_response"]

API_VERSIONS_KEY = 18


class RequestError(Exception):
    """A request that cannot be decoded: the connection is closed, as Kafka does."""


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)


def _default_for(tp: Any) -> Any:
    """A neutral value of a field type a handler left out."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        return ()
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return None
    if isinstance(tp, type):
        if issubclass(tp, ErrorCode):
            return ErrorCode.none
        if issubclass(tp, bool):
            return False
        if issubclass(tp, datetime.timedelta):
            return datetime.timedelta(0)
        if issubclass(tp, int):
            return 0
        if issubclass(tp, str):
            return ""
        if issubclass(tp, bytes):
            return b""
        if issubclass(tp, uuid.UUID):
            return uuid.UUID(int=0)
        if dataclasses.is_dataclass(tp):
            return build(tp, {})
    raise RequestError(f"no default for a field of type {tp!r}")


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item, *_rest) = typing.get_args(tp)
        return tuple(_convert(item, v) for v in value)
    if origin is not None and type(None) in typing.get_args(tp):
        if value is None or (value == -1 and _is_datetime(tp)):
            return None
        inner = next(a for a in typing.get_args(tp) if a is not type(None))
        return _convert(inner, value)
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            return build(tp, value)
        if issubclass(tp, ErrorCode):
            return ErrorCode(int(value))
        if issubclass(tp, datetime.timedelta) and isinstance(value, int):
            return datetime.timedelta(milliseconds=value)
        if issubclass(tp, datetime.datetime) and isinstance(value, int):
            return datetime.datetime.fromtimestamp(value / 1000, tz=datetime.UTC)
    return value


def _is_datetime(tp: Any) -> bool:
    return any(
        isinstance(a, type) and issubclass(a, datetime.datetime) for a in typing.get_args(tp)
    )


def build(cls: type, data: dict[str, Any]) -> Any:
    """The ``kio`` entity ``cls`` holding ``data`` (fields it lacks are left out)."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in _fields(cls):
        tp = hints[f.name]
        if f.name in data:
            kwargs[f.name] = _convert(tp, data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = _default_for(tp)
    return cls(**kwargs)


_HEAD = struct.Struct(">hhi")


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """The API key, version and correlation id at the start of a request frame."""
    if len(frame) < _HEAD.size:
        raise RequestError(f"a request of {len(frame)} bytes has no header")
    key, version, correlation = _HEAD.unpack_from(frame)
    return key, version, correlation


def decode_request(frame: bytes, key: int, version: int) -> Any:
    """Decodes a whole request frame (header and body) of API ``key`` at ``version``.

    Tagged fields the schema does not know are skipped, as the protocol requires.

    Raises:
        RequestError: The bytes are not such a request.
    """
    try:
        cls = _request_schema(key, version)
        header_cls = RequestHeaderV2 if cls.__flexible__ else RequestHeaderV1
    except Exception as e:
        raise RequestError(f"api key {key} v{version} has no schema: {e!r}") from None
    try:
        _header, at = entity_reader(header_cls)(frame, 0)
        request, _size = entity_reader(cls)(frame, at)
    except Exception as e:  # kio raises many kinds on bad bytes: all are the client's
        if not cls.__flexible__:
            raise RequestError(f"malformed request (api key {key} v{version}): {e!r}") from None
        # Possibly a tagged field kio does not know: the tolerant reader skips those and
        # raises on anything else.
        try:
            _header, at = _read_tolerant(header_cls, frame, 0, header=True)
            request, _end = _read_tolerant(cls, frame, at)
        except Exception as again:
            raise RequestError(f"malformed request (api key {key} v{version}): {again!r}") from None
    # Bytes after a whole request are ignored, as Kafka's broker ignores them (see above).
    _check_nulls(request)
    return request


_NULL_CHECKS: dict[type, tuple[tuple[str, bool, Any, bool], ...]] = {}


def _null_checks(cls: type) -> tuple[tuple[str, bool, Any, bool], ...]:
    """Per field of ``cls``: name, nullable, nested entity class (or None), array."""
    found = _NULL_CHECKS.get(cls)
    if found is not None:
        return found
    checks = []
    for f in _fields(cls):
        if get_field_tag(f) is not None:
            continue
        kind = classify_field(f)
        nested = kind.type_ if isinstance(kind, EntityField | EntityTupleField) else None
        checks.append((f.name, is_optional(f), nested, kind.is_array))
    found = _NULL_CHECKS[cls] = tuple(checks)
    return found


def _check_nulls(entity: Any) -> None:
    """Refuses a null where the schema allows none, as Kafka's own parser does.

    kio reads a length of -1 as None for any array or string; after this check handlers
    may iterate every array.
    """
    for name, nullable, nested, is_array in _null_checks(type(entity)):
        value = getattr(entity, name)
        if value is None:
            if not nullable:
                raise RequestError(f"non-nullable field {name} was sent as null")
        elif nested is not None:
            for item in value if is_array else (value,):
                _check_nulls(item)


def _read_tolerant(cls: Any, buf: bytes, at: int, *, header: bool = False) -> tuple[Any, int]:
    """Reads the entity ``cls`` at ``at``, skipping tagged fields it does not know.

    Returns the entity and the position after it. Fields are read with kio's own field
    readers, except nested entities, which are read here so their unknown tags are skipped
    too.
    """
    values: dict[str, Any] = {}
    tagged: dict[int, dataclasses.Field[Any]] = {}
    for f in _fields(cls):
        tag = get_field_tag(f)
        if tag is not None:
            tagged[tag] = f
            continue
        values[f.name], at = _read_field(cls, f, buf, at, header=header)
    if cls.__flexible__:
        count, size = read_unsigned_varint(buf, at)
        at += size
        for _ in range(count):
            tag, size = read_unsigned_varint(buf, at)
            at += size
            length, size = read_unsigned_varint(buf, at)
            at += size
            end = at + length
            if end > len(buf):
                raise RequestError(f"tagged field {tag} runs past the request")
            known = tagged.get(tag)
            if known is not None:
                # Read from a slice ending with the field: a field claiming more bytes
                # than its length fails instead of reading on.
                value, used = _read_field(cls, known, buf[:end], at, header=header, tag=True)
                if used != end:
                    raise RequestError(f"tagged field {tag} is not {length} bytes")
                values[known.name] = value
            at = end
    for f in tagged.values():
        if f.name not in values and f.default is dataclasses.MISSING:
            values[f.name] = get_tagged_field_default(f)
    return cls(**values), at


def _read_field(
    cls: Any,
    f: dataclasses.Field[Any],
    buf: bytes,
    at: int,
    *,
    header: bool = False,
    tag: bool = False,
) -> tuple[Any, int]:
    kind = classify_field(f)
    if isinstance(kind, EntityTupleField):
        if cls.__flexible__:
            count, size = read_compact_array_length(buf, at)
        else:
            count, size = read_legacy_array_length(buf, at)
        at += size
        if count is None or count < 0:
            return None, at
        items = []
        for _ in range(count):
            item, at = _read_tolerant(kind.type_, buf, at)
            items.append(item)
        return tuple(items), at
    if isinstance(kind, EntityField):
        if is_optional(f) and not tag:
            marker, size = read_int8(buf, at)
            at += size
            if marker < 0:
                return None, at
        return _read_tolerant(kind.type_, buf, at)
    value, size = get_field_reader(cls, f, header, tag)(buf, at)
    return value, at + size


@cache
def _request_schema(key: int, version: int) -> Any:
    return load_request_schema(key, version)


@cache
def _response_schema(key: int, version: int) -> Any:
    return load_response_schema(key, version)


class _Frame:
    """An encoded response frame as a list of buffers, for ``kio``'s writer.

    Small writes (the protocol's fields) are gathered into one buffer; a large one (a
    partition's record batches) is kept as a view of the caller's buffer, so a Fetch
    answer's records reach the socket without being copied into the frame first.
    """

    __slots__ = ("_parts", "_size", "_small")

    #: Writes at least this large are kept by reference.
    BY_REFERENCE = 4096

    def __init__(self) -> None:
        self._parts: list[bytes | bytearray | memoryview] = []
        self._small = bytearray(4)  # the length prefix, filled in by finish()
        self._size = 4

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.nbytes >= self.BY_REFERENCE:
            if self._small:
                self._parts.append(self._small)
                self._small = bytearray()
            self._parts.append(view)
        else:
            self._small += view
        self._size += view.nbytes
        return view.nbytes

    def finish(self) -> list[bytes | bytearray | memoryview]:
        if self._small:
            self._parts.append(self._small)
            self._small = bytearray()
        first = self._parts[0]
        assert isinstance(first, bytearray)
        struct.pack_into(">i", first, 0, self._size - 4)
        return self._parts


def encode_response(
    key: int, version: int, correlation: int, data: dict[str, Any]
) -> list[bytes | bytearray | memoryview]:
    """The response frame (length prefix included) of API ``key`` at ``version``.

    Returns the frame as buffers to write one after the other: large byte fields (a
    Fetch's records) are views of the handler's buffers, not copies.
    """
    cls = _response_schema(key, version)
    body = build(cls, data)
    out = _Frame()
    # ApiVersions answers with header v0 whatever its version: a client that does not yet
    # know what the broker speaks must be able to read it.
    writer: Any = out
    if cls.__flexible__ and key != API_VERSIONS_KEY:
        entity_writer(ResponseHeaderV1)(writer, ResponseHeaderV1(correlation_id=i32(correlation)))
    else:
        entity_writer(ResponseHeaderV0)(writer, ResponseHeaderV0(correlation_id=i32(correlation)))
    entity_writer(cls)(writer, body)
    return out.finish()
