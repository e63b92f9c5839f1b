"""Work queues on Kafka share groups (KIP-932, production-ready in Apache Kafka 4.2).

A member is a confluent-kafka ``ShareConsumer`` in explicit acknowledgement mode: the broker
locks each record it hands out, counts deliveries, and redelivers what is released or whose
lock expires. ``ack`` / ``release`` / ``reject`` are ACCEPT / RELEASE / REJECT;
``flush()`` is ``commit_sync``. Rejected jobs are copied to ``dead_letter`` (with the same
headers as locally) before they are rejected. A broker without share groups raises a
:class:`tidelog.TidelogError` saying so.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from confluent_kafka import AcknowledgeType, KafkaError, ShareConsumer
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource

from tidelog import _core
from tidelog.jobs import dead_letter_headers
from tidelog.kafka._common import TIMEOUT, StoreLink
from tidelog.kafka._errors import error_for, retrying, translated
from tidelog.kafka.messages import KafkaMessage, from_confluent

__all__ = ["KafkaJob", "KafkaWorkQueue"]


class KafkaJob:
    """A message acquired from a share group, plus how many times it was handed out."""

    __slots__ = ("delivery_count", "message", "raw")

    def __init__(self, raw: Any, message: KafkaMessage, delivery_count: int) -> None:
        #: librdkafka's message, which acknowledgements name.
        self.raw = raw
        self.message = message
        self.delivery_count = delivery_count

    def __getattr__(self, name: str) -> Any:
        if name in ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers"):
            return getattr(self.message, name)
        raise AttributeError(name)


class KafkaWorkQueue:
    """A member of share group ``group`` on ``topic`` (see :meth:`tidelog.Store.work_queue`).

    ``lock_timeout`` becomes the group's ``share.record.lock.duration.ms`` (a group
    config, shared by every member), and the group starts at the earliest offset as locally.
    A job handed out more than ``max_deliveries`` times is dead-lettered by the member that
    receives it; the broker's ``group.share.delivery.count.limit`` (default 5) must not be
    lower, or the broker archives such messages first.
    """

    def __init__(
        self,
        store: StoreLink,
        topic: str,
        group: str,
        *,
        lock_timeout: float = 30.0,
        max_deliveries: int = 5,
        dead_letter: str | None = None,
        prefetch: int = 2048,
    ) -> None:
        self._store = store
        self._topic = store.topic(topic)
        self._group = group
        self._dead_letter = dead_letter
        self._max_deliveries = max_deliveries
        self._closed = False
        self._ready: deque[KafkaJob] = deque()
        self._unsettled: set[tuple[int, int]] = set()
        # An error taking a share fetch (one the fetch returned with records, or a failed
        # dead-lettering): raised by the next fetch (acquire), once the records are out.
        self._fetch_error: _core.TidelogError | None = None
        self._configure_group(lock_timeout, max_deliveries)
        self._consumer = ShareConsumer(
            store.client_config(**{"group.id": group, "share.acknowledgement.mode": "explicit"})
        )
        with translated(f"joining share group {group!r}"):
            self._consumer.subscribe([topic])
        self._dlq_producer: Any = None

    def _configure_group(self, lock_timeout: float, max_deliveries: int) -> None:
        resource = ConfigResource(
            ConfigResource.Type.GROUP,
            self._group,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in {
                    "share.auto.offset.reset": "earliest",
                    "share.record.lock.duration.ms": str(int(lock_timeout * 1000)),
                }.items()
            ],
        )

        def configure(timeout: float) -> None:
            # Idempotent: every entry is a SET, so a second try sets the same values.
            for future in self._store.admin.incremental_alter_configs(
                [resource], request_timeout=timeout
            ).values():
                future.result(timeout)

        try:
            retrying(configure, f"configuring share group {self._group!r}")
        except Exception as e:
            raise _core.TidelogError(
                f"this Kafka cluster has no share groups (KIP-932, Apache Kafka 4.2 or newer "
                f"with share.version=1), which work queues need on Kafka: {e}"
            ) from e

    def acquire(self, timeout: float | None = 1.0) -> KafkaJob | None:
        """The next job, or None after ``timeout`` seconds.

        Raises:
            InvalidConfigError: Jobs of the previous fetch are still unsettled (a Kafka
                share consumer must settle a fetch before the next).
            TidelogError: The last fetch returned an error with its records, or a job of
                it past ``max_deliveries`` could not be dead-lettered (it went back to the
                queue): raised in place of the next fetch, once the fetch's other jobs
                were handed out.
        """
        self._check_open()
        end = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            if self._unsettled:
                raise _core.InvalidConfigError(
                    f"{len(self._unsettled)} jobs are unsettled: on Kafka, ack, release or "
                    "reject every job of a fetch before acquiring more"
                )
            if self._fetch_error is not None:
                failed, self._fetch_error = self._fetch_error, None
                raise failed
            left = 1.0 if end is None else max(0.0, end - time.monotonic())
            with translated(f"acquiring from share group {self._group!r}"):
                raw = self._consumer.poll(left)
            for m in raw:
                err = m.error()
                if err is not None:
                    # The records of the fetch are acquired for this member, those after
                    # the error too, and the share consumer polls no more until each is
                    # acknowledged: raising now would drop them, and wedge the member. As
                    # the plain consumer does, they are handed out and the error is raised
                    # by the next fetch.
                    if self._fetch_error is None:
                        self._fetch_error = error_for(err, f"share group {self._group!r}")
                    continue
                job = KafkaJob(m, from_confluent(m), int(m.delivery_count() or 1))
                self._unsettled.add((job.message.partition, job.message.offset))
                if job.delivery_count > self._max_deliveries:
                    # The broker's own limit (group.share.delivery.count.limit) archives
                    # silently; ours dead-letters as a local queue does.
                    try:
                        self._dead_lettered(job, "max_deliveries")
                    except _core.TidelogError as e:
                        # Not copied: back to the queue, whose next delivery of it tries
                        # again. The rest of the fetch is taken as after a fetch's error.
                        self._settle(job, AcknowledgeType.RELEASE)
                        if self._fetch_error is None:
                            self._fetch_error = e
                    continue
                self._ready.append(job)
            if self._fetch_error is not None and not self._ready and not self._unsettled:
                continue  # nothing of the fetch to hand out: its error now
            if not self._ready and end is not None and time.monotonic() >= end:
                return None
        return self._ready.popleft()

    def ready(self) -> int:
        """Jobs of the last fetch not handed out yet (``acquire`` returns them at once)."""
        return len(self._ready)

    def __iter__(self) -> Iterator[KafkaJob]:
        # Raises StoreClosedError once closed (acquire checks), as a local queue does.
        while True:
            job = self.acquire(1.0)
            if job is not None:
                yield job

    def _settle(self, job: KafkaJob, kind: AcknowledgeType) -> None:
        self._check_open()
        key = (job.message.partition, job.message.offset)
        if key not in self._unsettled:
            from tidelog.jobs import LockLostError

            raise LockLostError(f"job at {key} is not held by this member")
        with translated("acknowledging"):
            self._consumer.acknowledge(job.raw, kind)
        self._unsettled.discard(key)

    def ack(self, job: KafkaJob) -> None:
        """Done: never delivered again (durable at the next fetch or :meth:`flush`)."""
        self._settle(job, AcknowledgeType.ACCEPT)

    def release(self, job: KafkaJob, delay: float = 0.0) -> None:
        """Back to the queue now (``delay`` is refused: share groups cannot delay)."""
        self._check_open()
        if delay:
            raise _core.InvalidConfigError(
                "release(delay=...) is not supported on Kafka share groups"
            )
        self._settle(job, AcknowledgeType.RELEASE)

    def reject(self, job: KafkaJob) -> None:
        """Never again: copied to the dead-letter topic (if any), then rejected."""
        self._check_open()
        self._dead_lettered(job, "rejected")

    def _dead_lettered(self, job: KafkaJob, reason: str) -> None:
        if self._dead_letter is not None:
            from confluent_kafka import Producer

            if self._dlq_producer is None:
                self._store.create_topic(self._dead_letter, exist_ok=True)
                self._dlq_producer = Producer(
                    self._store.client_config(**{"enable.idempotence": True})
                )
            headers = dead_letter_headers(job.message, reason, job.delivery_count)  # type: ignore[arg-type]
            reports: list[KafkaError | None] = []
            # produce raises what librdkafka refuses at once (a copy past message.max.bytes):
            # a TidelogError, as a failed delivery, so a fetch taking the job keeps the rest.
            with translated("dead-lettering a job"):
                self._dlq_producer.produce(
                    self._dead_letter,
                    job.message.value,
                    job.message.key,
                    headers=list(headers.items()),
                    on_delivery=lambda err, _m: reports.append(err),
                )
            self._dlq_producer.flush(TIMEOUT)
            if not reports:
                # Rejected, the job is gone from the queue: only once its copy is written.
                # The copy may still arrive, and the job's next delivery copies it again.
                raise _core.TidelogError(
                    f"dead-lettering a job: its copy to {self._dead_letter!r} was not "
                    f"acknowledged within {TIMEOUT} s"
                )
            if reports[0] is not None:
                raise error_for(reports[0], "dead-lettering a job")
        self._settle(job, AcknowledgeType.REJECT)

    def extend(self, job: KafkaJob, seconds: float) -> None:
        """Refused: Kafka 4.2 share groups cannot renew a record's lock."""
        self._check_open()
        raise _core.InvalidConfigError(
            "extend() is not supported on Kafka share groups: raise lock_timeout instead"
        )

    def flush(self) -> None:
        """Makes every acknowledgement so far durable (``commit_sync``)."""
        self._check_open()
        with translated("committing acknowledgements"):
            self._consumer.commit_sync(TIMEOUT)

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise _core.StoreClosedError(f"work queue {self._group!r} is closed")

    def close(self) -> None:
        """Commits acknowledgements and leaves the share group; idempotent.

        Afterwards iterating, acquiring and settling raise :class:`StoreClosedError`.
        """
        if self._closed:
            return
        self._closed = True
        try:
            with translated("closing the share consumer"):
                self._consumer.close()
        finally:
            if self._dlq_producer is not None:
                self._dlq_producer.flush(TIMEOUT)
            self._store.forget(self)

    def __enter__(self) -> KafkaWorkQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
