"""Forwarding a local topic to Kafka, exactly once and in order per partition.

The edge-buffer pattern: an application records into a local store whatever the network
does; the mirror ships partition ``i`` to Kafka partition ``i`` when the cluster is there.

Each round is one Kafka transaction holding the forwarded messages *and* the mirror's new
position (the next local offset per partition), committed as offsets of the consumer group
``group`` on the destination topic (``send_offsets_to_transaction``). A crash at any point
leaves either both or neither: on restart, ``init_transactions`` fences a still-running
older mirror and aborts its open transaction, and the position is read back from the group's
committed offsets. Readers with ``isolation.level=read_committed`` (every tidelog reader)
see every local message exactly once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from tidelog import _core
from tidelog.kafka._common import TIMEOUT
from tidelog.kafka._errors import error_for, partitions_checked, retrying, translated
from tidelog.kafka.store import KafkaStore

__all__ = ["Mirror", "MirrorProgress"]

MirrorProgress = dict[str, Any]
"""What :meth:`Mirror.run` reports: ``sent`` (this run), ``position`` and ``lag`` per
partition (local end offset minus position)."""


class Mirror:
    """Forwards local topic ``topic`` of ``local`` to ``kafka``.

    Args:
        local: The local store (a :class:`tidelog.Store`).
        kafka: The Kafka store.
        topic: The local topic.
        to: The Kafka topic (default: the same name); created with the same partition count
            if missing.
        group: The consumer group whose committed offsets are the mirror's position, and the
            producer's ``transactional.id`` (default ``tidelog-mirror.<topic>.<to>``). Two
            mirrors of one topic with one group fence each other: only the newest runs.
        max_batch: Most messages per partition in one transaction.
    """

    def __init__(
        self,
        local: Any,
        kafka: KafkaStore,
        topic: str,
        *,
        to: str | None = None,
        group: str | None = None,
        max_batch: int = 5000,
    ) -> None:
        self._local = local
        self._src = local.topic(topic)
        self._to = to or topic
        self._group = group or f"tidelog-mirror.{topic}.{self._to}"
        self._max_batch = max_batch
        parts = self._src.partitions
        dest = kafka.create_topic(self._to, partitions=parts, exist_ok=True)
        if dest.partitions < parts:
            raise _core.InvalidConfigError(
                f"Kafka topic {self._to!r} has {dest.partitions} partitions, the local topic "
                f"{topic!r} {parts}: partition i goes to partition i, so it needs at least {parts}"
            )
        self._producer = Producer(
            kafka.client_config(
                **{
                    "transactional.id": self._group,
                    "enable.idempotence": True,
                    "linger.ms": 5,
                }
            )
        )
        with translated(f"starting mirror {self._group!r}"):
            self._producer.init_transactions(TIMEOUT)
        # Only for the group's metadata and committed offsets: it never subscribes.
        self._offsets = Consumer(
            kafka.client_config(
                **{
                    "group.id": self._group,
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
        )
        committed = retrying(
            lambda t: partitions_checked(
                self._offsets.committed(
                    [TopicPartition(self._to, p) for p in range(parts)], timeout=t
                )
            ),
            f"reading the position of mirror {self._group!r}",
        )
        self.position = {
            tp.partition: (tp.offset if tp.offset >= 0 else self._src.start_offset(tp.partition))
            for tp in committed
        }
        self.sent = 0

    @property
    def group(self) -> str:
        """The mirror's group (and ``transactional.id``)."""
        return self._group

    def lag(self) -> dict[int, int]:
        """Local messages not yet in Kafka, per partition."""
        return {
            p: max(0, self._src.end_offset(p) - pos) for p, pos in sorted(self.position.items())
        }

    def step(self) -> int:
        """Forwards what is there now (at most ``max_batch`` per partition) in one transaction.

        Returns:
            How many messages were forwarded (0: nothing new).
        """
        batches = []
        for p, pos in sorted(self.position.items()):
            start = self._src.start_offset(p)
            if pos < start:
                raise _core.OffsetOutOfRangeError(
                    f"the mirror's position {pos} in partition {p} of {self._src.name!r} was "
                    f"removed by retention (the partition starts at {start}): those messages "
                    "never reached Kafka"
                )
            batch = self._src.read_batch(p, pos, max_messages=self._max_batch)
            if len(batch):
                batches.append((p, batch))
        if not batches:
            return 0
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        new = dict(self.position)
        count = 0
        with translated(f"mirroring {self._src.name!r} to Kafka"):
            self._producer.begin_transaction()
            try:
                for p, batch in batches:
                    for msg in batch:
                        headers = msg.headers
                        while True:
                            try:
                                self._producer.produce(
                                    self._to,
                                    msg.value,
                                    msg.key,
                                    partition=p,
                                    timestamp=msg.timestamp_ms,
                                    headers=list(headers.items()) if headers else None,
                                    on_delivery=delivered,
                                )
                                break
                            except BufferError:
                                self._producer.poll(0.05)
                        count += 1
                    new[p] = batch.next_offset
                self._producer.send_offsets_to_transaction(
                    [TopicPartition(self._to, p, o) for p, o in new.items()],
                    self._offsets.consumer_group_metadata(),
                    TIMEOUT,
                )
                self._producer.commit_transaction(TIMEOUT)
            except BaseException:
                self._abort()
                raise
        if errors:
            raise error_for(errors[0], f"mirroring {self._src.name!r}")
        self.position = new
        self.sent += count
        return count

    def _abort(self) -> None:
        # If this fails too, the next start aborts it (init_transactions).
        with contextlib.suppress(Exception):
            self._producer.abort_transaction(TIMEOUT)

    def run(
        self,
        *,
        until_caught_up: bool = False,
        idle_sleep: float = 0.05,
        progress: Callable[[MirrorProgress], None] | None = None,
        progress_interval: float = 1.0,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Forwards until ``stop()`` is true, or until caught up.

        With ``until_caught_up``, it returns once everything written before the call arrived.

        A KeyboardInterrupt (SIGINT, or SIGTERM as the CLI maps it) aborts the open
        transaction: what was committed stays, the rest is sent by the next run.
        """
        target = {p: self._src.end_offset(p) for p in self.position} if until_caught_up else None
        last = time.monotonic()
        reported = -1
        try:
            while stop is None or not stop():
                n = self.step()
                if progress is not None and time.monotonic() - last >= progress_interval:
                    progress(self._progress())
                    last, reported = time.monotonic(), self.sent
                if target is not None and all(self.position[p] >= t for p, t in target.items()):
                    break
                if n == 0:
                    time.sleep(idle_sleep)
        finally:
            # Also on SIGINT/SIGTERM: say how far the committed position got.
            if progress is not None and reported != self.sent:
                progress(self._progress())

    def _progress(self) -> MirrorProgress:
        return {"sent": self.sent, "position": dict(self.position), "lag": self.lag()}

    def close(self) -> None:
        """Releases the Kafka clients (nothing is left open: every round commits)."""
        self._producer.flush(TIMEOUT)
        self._offsets.close()
