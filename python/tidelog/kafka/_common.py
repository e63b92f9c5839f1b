"""What the Kafka backend's modules share.

The time limit, argument checks, and the store's interface as its members see it (so that no
member module imports the store's module).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from tidelog import _core

__all__ = ["TIMEOUT", "StoreLink", "check_partition", "consume_ready", "headers_list"]

#: How long an admin or metadata call may take before it is reported as an error.
TIMEOUT = 30.0


def consume_ready(consumer: Any, n: int, timeout: float) -> list[Any]:
    """Up to ``n`` messages (or events) of a confluent-kafka consumer, as soon as one is there.

    ``consume(n, timeout)`` waits until it has ``n`` or the timeout ended, also when fewer
    are all there is (so a poll for 500 given one message took its whole timeout); Kafka's
    ``poll`` returns as soon as it has records. Here what is queued is taken at once; only
    when nothing is, the wait is for the first message, and what came with it is taken too.
    """
    ready: list[Any] = consumer.consume(n, 0)
    if ready or timeout == 0:
        return ready
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(n - 1, 0)] if n > 1 else [first]


class StoreLink(Protocol):
    """What producers, consumers and work queues use of their :class:`KafkaStore`."""

    @property
    def admin(self) -> Any:
        """The store's admin client."""
        ...

    def client_config(self, **extra: Any) -> dict[str, Any]:
        """The librdkafka configuration of a client of the store, plus ``extra``."""
        ...

    def topic(self, name: str) -> Any:
        """The topic ``name``."""
        ...

    def create_topic(
        self, name: str, partitions: int = 1, *, exist_ok: bool = False, **settings: Any
    ) -> Any:
        """Creates topic ``name``."""
        ...

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """The start and end offsets of a partition."""
        ...

    def forget(self, member: object) -> None:
        """Called by a member that closed."""
        ...


def check_partition(topic: Any, partition: int) -> int:
    """``partition`` if ``topic`` has it; raises as a local topic does otherwise."""
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise TypeError(f"partition must be int, got {type(partition).__name__}")
    if not 0 <= partition < topic.partitions:
        raise _core.PartitionNotFoundError(
            f"topic {topic.name!r} has {topic.partitions} partitions, no partition {partition}"
        )
    return partition


def headers_list(
    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None,
) -> list[tuple[str, bytes]] | None:
    if headers is None:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"header names must be str, got {type(name).__name__}")
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"header {name!r} must be bytes, got {type(value).__name__}")
        out.append((name, bytes(value)))
    return out
