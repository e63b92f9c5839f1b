"""Messages and record batches read from Kafka, shaped like the local ones.

A local :class:`tidelog.Message` is a native view into a segment; these are plain Python
objects with the same read-only attributes, built from what librdkafka hands back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["KafkaMessage", "KafkaRecordBatch", "from_confluent"]


class KafkaMessage:
    """One message of a Kafka topic: ``topic, partition, offset, timestamp_ms, key, value,
    headers``, as on :class:`tidelog.Message`.
    """

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp_ms", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: dict[str, bytes],
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._timestamp_ms = timestamp_ms
        self._key = key
        self._value = value
        self._headers = headers

    @property
    def topic(self) -> str:
        """The topic's name."""
        return self._topic

    @property
    def partition(self) -> int:
        """The partition."""
        return self._partition

    @property
    def offset(self) -> int:
        """The message's offset in its partition."""
        return self._offset

    @property
    def timestamp_ms(self) -> int:
        """Create time (or log-append time, as the topic says), ms since the epoch."""
        return self._timestamp_ms

    @property
    def key(self) -> bytes | None:
        """The key, or None."""
        return self._key

    @property
    def value(self) -> bytes | None:
        """The value (None for a tombstone)."""
        return self._value

    @property
    def headers(self) -> dict[str, bytes]:
        """The headers (a copy: messages are read-only)."""
        return dict(self._headers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KafkaMessage):
            return NotImplemented
        return (
            self._topic,
            self._partition,
            self._offset,
            self._timestamp_ms,
            self._key,
            self._value,
            self._headers,
        ) == (
            other._topic,
            other._partition,
            other._offset,
            other._timestamp_ms,
            other._key,
            other._value,
            other._headers,
        )

    def __hash__(self) -> int:
        return hash((self._topic, self._partition, self._offset))

    def __repr__(self) -> str:
        return (
            f"KafkaMessage(topic={self._topic!r}, partition={self._partition}, "
            f"offset={self._offset}, key={self._key!r}, value={self._value!r})"
        )


def from_confluent(msg: Any) -> KafkaMessage:
    """Converts a confluent-kafka message (without error) into a :class:`KafkaMessage`."""
    raw = msg.headers()
    headers: dict[str, bytes] = {}
    if raw:
        for name, value in raw:
            headers[name] = b"" if value is None else bytes(value)
    return KafkaMessage(
        msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value(),
        headers,
    )


class KafkaRecordBatch:
    """Messages read from one partition in one call, like :class:`tidelog.RecordBatch`.

    ``value_buffer()`` cannot be a view of the broker's bytes (librdkafka hands out one
    Python object per value): it returns a new buffer holding a copy of every value.
    """

    def __init__(
        self, topic: str, partition: int, messages: Sequence[KafkaMessage], next_offset: int
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._messages = list(messages)
        self._next_offset = next_offset

    @property
    def topic(self) -> str:
        """The topic's name."""
        return self._topic

    @property
    def partition(self) -> int:
        """The partition."""
        return self._partition

    @property
    def next_offset(self) -> int:
        """The offset to read next (after the last message, or where the read started)."""
        return self._next_offset

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        """The messages' offsets."""
        return np.fromiter((m.offset for m in self._messages), np.int64, len(self._messages))

    @property
    def timestamps(self) -> npt.NDArray[np.int64]:
        """The messages' timestamps, ms since the epoch."""
        return np.fromiter(
            (m.timestamp_ms for m in self._messages), np.int64, len(self._messages)
        )

    def __len__(self) -> int:
        return len(self._messages)

    def __getitem__(self, index: int) -> KafkaMessage:
        return self._messages[index]

    def __iter__(self) -> Iterator[KafkaMessage]:
        return iter(self._messages)

    def values(self) -> list[bytes | None]:
        """Every message's value."""
        return [m.value for m in self._messages]

    def value_buffer(self) -> tuple[memoryview, npt.NDArray[np.int64]]:
        """All values in one buffer and their boundaries (a copy, see the class docstring).

        Returns:
            ``(buf, bounds)``: value ``i`` is ``buf[bounds[i]:bounds[i + 1]]``.
        """
        values = [m.value or b"" for m in self._messages]
        bounds = np.zeros(len(values) + 1, np.int64)
        np.cumsum([len(v) for v in values], out=bounds[1:])
        return memoryview(b"".join(values)), bounds
