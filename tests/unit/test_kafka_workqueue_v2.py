"""The kafka:// work queue's handling of a share fetch, without a broker: the share consumer
and the dead-letter producer are stand-ins that answer as librdkafka's do."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

pytest.importorskip("confluent_kafka")

import confluent_kafka
import tidelog
from confluent_kafka import AcknowledgeType, KafkaError, KafkaException, Message
from tidelog.kafka import workqueue as workqueue_module
from tidelog.kafka.workqueue import KafkaWorkQueue


class _Store:
    """The store as a work queue sees it: no broker behind it."""

    class _Admin:
        def incremental_alter_configs(self, resources: list[Any], **options: Any) -> dict[Any, Any]:
            return {}

    admin = _Admin()

    def topic(self, name: str) -> str:
        return name

    def client_config(self, **extra: Any) -> dict[str, Any]:
        return {"log_level": 0, **extra}

    def create_topic(self, name: str, **options: Any) -> None:
        pass

    def forget(self, member: object) -> None:
        pass


class _ShareConsumer:
    """Hands out ``fetches`` one per poll, then nothing; records acknowledgements."""

    fetches: ClassVar[list[list[Any]]] = []
    acknowledged: ClassVar[list[tuple[int, AcknowledgeType]]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def subscribe(self, topics: list[str]) -> None:
        pass

    def poll(self, timeout: float) -> list[Any]:
        return self.fetches.pop(0) if self.fetches else []

    def acknowledge(self, raw: Any, kind: AcknowledgeType) -> None:
        self.acknowledged.append((raw.offset(), kind))

    def close(self) -> None:
        pass


class _TooLargeForTheDeadLetterTopic:
    """A dead-letter producer whose ``produce`` refuses a value over 1000 bytes, as
    librdkafka's does past ``message.max.bytes`` (raising, not reporting a delivery)."""

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def produce(self, topic: str, value: bytes, key: Any, **options: Any) -> None:
        if len(value) > 1000:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        options["on_delivery"](None, None)

    def flush(self, timeout: float) -> int:
        return 0


def _message(offset: int, value: bytes) -> Any:
    return Message(topic="t", partition=0, offset=offset, value=value, timestamp=(1, 1000))


def test_a_job_whose_dead_letter_copy_produce_refuses_goes_back_and_its_fetch_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every job of the fetch is past ``max_deliveries``; the first is too large for the
    dead-letter producer, whose ``produce`` raises librdkafka's KafkaException (not a
    TidelogError). It must go back to the queue and the rest of the fetch be dead-lettered,
    the error raised by the next fetch as a TidelogError, as for a failed topic creation.
    Before, the KafkaException left acquire: the job stayed unsettled and the rest of the
    fetch was never settled, so every later acquire raised that jobs are unsettled."""
    monkeypatch.setattr(workqueue_module, "ShareConsumer", _ShareConsumer)
    monkeypatch.setattr(confluent_kafka, "Producer", _TooLargeForTheDeadLetterTopic)
    _ShareConsumer.fetches = [[_message(0, b"x" * 2000), _message(1, b"a"), _message(2, b"b")]]
    _ShareConsumer.acknowledged = []
    queue = KafkaWorkQueue(_Store(), "t", "g", max_deliveries=0, dead_letter="dead")  # type: ignore[arg-type]
    with pytest.raises(tidelog.TidelogError, match="MSG_SIZE_TOO_LARGE"):
        queue.acquire(timeout=0)
    assert _ShareConsumer.acknowledged == [
        (0, AcknowledgeType.RELEASE),
        (1, AcknowledgeType.REJECT),
        (2, AcknowledgeType.REJECT),
    ]
    assert queue.acquire(timeout=0) is None  # not wedged: the next fetch is taken
    queue.close()


class _NeverAcknowledged:
    """A dead-letter producer whose copies are never acknowledged: ``flush`` times out with
    them still queued (a broker down or unreachable), no delivery report served."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.queued = 0

    def produce(self, topic: str, value: bytes, key: Any, **options: Any) -> None:
        self.queued += 1

    def flush(self, timeout: float) -> int:
        return self.queued


def test_a_job_whose_dead_letter_copy_is_not_acknowledged_goes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job past ``max_deliveries`` is rejected (archived by the broker) only once its
    copy is in the dead-letter topic. Before, a flush that timed out with the copy still
    queued counted as delivered: the job was rejected, its copy maybe never written."""
    monkeypatch.setattr(workqueue_module, "ShareConsumer", _ShareConsumer)
    monkeypatch.setattr(confluent_kafka, "Producer", _NeverAcknowledged)
    _ShareConsumer.fetches = [[_message(0, b"a")]]
    _ShareConsumer.acknowledged = []
    queue = KafkaWorkQueue(_Store(), "t", "g", max_deliveries=0, dead_letter="dead")  # type: ignore[arg-type]
    with pytest.raises(tidelog.TidelogError, match="not acknowledged"):
        queue.acquire(timeout=0)
    assert _ShareConsumer.acknowledged == [(0, AcknowledgeType.RELEASE)]
    queue.close()
