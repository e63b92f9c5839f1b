"""Messages and record batches read from Kafka, shaped like the local ones.

A local :class:`tidelog.Message` is a native view into a segment; a :class:`KafkaMessage`
is a native wrapper of what librdkafka hands back, with the same read-only attributes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tidelog import _core

__all__ = ["KafkaMessage", "KafkaRecordBatch", "from_confluent", "from_consume"]


#: One message of a Kafka topic, with the attributes of :class:`tidelog.Message`
#: (``topic, partition, offset, timestamp_ms, key, value, headers``, plus ``fields()``),
#: read from librdkafka's message when asked. A native type that CPython's cycle collector
#: does not count (``rust/tidelog-py/src/kafka_message.rs`` says why).
KafkaMessage = _core.KafkaMessage


def from_confluent(msg: Any) -> KafkaMessage:
    """A confluent-kafka message (without error) as a :class:`KafkaMessage`."""
    return _core.kafka_message(msg)


def from_consume(raw: list[Any]) -> list[KafkaMessage]:
    """The messages of a confluent-kafka ``consume()`` result that carry no error, in order.

    A result shorter than ``raw`` means errors (or events) in it.
    """
    return _core.kafka_messages(raw)


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
