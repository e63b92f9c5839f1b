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
    """One message of a Kafka topic, with the attributes of :class:`tidelog.Message`.

    ``topic, partition, offset, timestamp_ms, key, value, headers``.

    It wraps librdkafka's message and reads each attribute when asked: a consumer hands
    out many messages whose headers (say) nobody looks at.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    @property
    def topic(self) -> str:
        """The topic's name."""
        return str(self._raw.topic())

    @property
    def partition(self) -> int:
        """The partition."""
        return int(self._raw.partition())

    @property
    def offset(self) -> int:
        """The message's offset in its partition."""
        return int(self._raw.offset())

    @property
    def timestamp_ms(self) -> int:
        """Create time (or log-append time, as the topic says), ms since the epoch."""
        return int(self._raw.timestamp()[1])

    @property
    def key(self) -> bytes | None:
        """The key, or None."""
        key: bytes | None = self._raw.key()
        return key

    @property
    def value(self) -> bytes | None:
        """The value (None for a tombstone)."""
        value: bytes | None = self._raw.value()
        return value

    @property
    def headers(self) -> dict[str, bytes]:
        """The headers (a new dict each time: messages are read-only)."""
        raw = self._raw.headers()
        if not raw:
            return {}
        return {name: b"" if value is None else bytes(value) for name, value in raw}

    @property
    def raw(self) -> Any:
        """Librdkafka's message underneath."""
        return self._raw

    def fields(self) -> tuple[Any, ...]:
        """``(topic, partition, offset, timestamp_ms, key, value, headers)``."""
        return (
            self.topic,
            self.partition,
            self.offset,
            self.timestamp_ms,
            self.key,
            self.value,
            self.headers,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KafkaMessage):
            return NotImplemented
        return self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash((self.topic, self.partition, self.offset))

    def __repr__(self) -> str:
        return (
            f"KafkaMessage(topic={self.topic!r}, partition={self.partition}, "
            f"offset={self.offset}, key={self.key!r}, value={self.value!r})"
        )


def from_confluent(msg: Any) -> KafkaMessage:
    """Wraps a confluent-kafka message (without error) as a :class:`KafkaMessage`."""
    return KafkaMessage(msg)


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
        return np.fromiter((m.timestamp_ms for m in self._messages), np.int64, len(self._messages))

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
