"""Kafka message encodings: requests decoded and responses encoded with ``kio``.

``kio`` is generated from Kafka's own JSON message schemas (one frozen dataclass per API,
version and nested structure). Handlers answer with plain dicts; :func:`encode_response`
builds the response entity of the request's version from them, keeping the fields that
version has and defaulting the others, so one handler serves every version it advertises.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import struct
import typing
import uuid
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer
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

    Raises:
        RequestError: The bytes are not such a request.
    """
    try:
        cls = _request_schema(key, version)
        header_cls = RequestHeaderV2 if cls.__flexible__ else RequestHeaderV1
        _header, at = entity_reader(header_cls)(frame, 0)
        request, size = entity_reader(cls)(frame, at)
    except RequestError:
        raise
    except Exception as e:  # kio raises many kinds on bad bytes: all are the client's
        raise RequestError(f"malformed request (api key {key} v{version}): {e!r}") from None
    if at + size != len(frame):
        raise RequestError(f"{len(frame) - at - size} bytes after the request (api key {key})")
    return request


@cache
def _request_schema(key: int, version: int) -> Any:
    return load_request_schema(key, version)


@cache
def _response_schema(key: int, version: int) -> Any:
    return load_response_schema(key, version)


def encode_response(key: int, version: int, correlation: int, data: dict[str, Any]) -> memoryview:
    """The response frame (length prefix included) of API ``key`` at ``version``."""
    cls = _response_schema(key, version)
    body = build(cls, data)
    out = io.BytesIO()
    out.write(b"\0\0\0\0")
    # ApiVersions answers with header v0 whatever its version: a client that does not yet
    # know what the broker speaks must be able to read it.
    if cls.__flexible__ and key != API_VERSIONS_KEY:
        entity_writer(ResponseHeaderV1)(out, ResponseHeaderV1(correlation_id=i32(correlation)))
    else:
        entity_writer(ResponseHeaderV0)(out, ResponseHeaderV0(correlation_id=i32(correlation)))
    entity_writer(cls)(out, body)
    # A view of the encoder's buffer, not a copy: a Fetch answer holds megabytes of records.
    frame = out.getbuffer()
    struct.pack_into(">i", frame, 0, len(frame) - 4)
    return frame
