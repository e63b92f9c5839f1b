"""A committed-offsets answer with an error on one partition, without a broker.

OffsetFetch answers per partition: one partition's error (its coordinator loading, an
authorization refused) comes back in ``TopicPartition.error`` with offset -1001, not as an
exception. Read as "nothing committed" it is a silently wrong answer: lag counts from the
partition's start, a mirror starts over. A retriable error is tried again within the
call's budget (as the whole answer's would be); any other raises the tidelog error.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("confluent_kafka")

import tidelog
from confluent_kafka import KafkaError
from tidelog.kafka import observe
from tidelog.kafka.consumer import KafkaConsumer
from tidelog.kafka.lag import LagGuard

TOPIC, GROUP = "t", "g"
OFFSET_INVALID = -1001


@dataclass
class _Answered:
    """A TopicPartition as librdkafka returns it (its ``error`` cannot be set on the real one)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


class _Offsets:
    """Answers each committed-offsets request with the next of ``errors`` on partition 1
    (None: no error), then without errors; counts the requests."""

    def __init__(self, *errors: int | None) -> None:
        self.errors = list(errors)
        self.calls = 0

    def answer(self) -> list[_Answered]:
        self.calls += 1
        code = self.errors.pop(0) if self.errors else None
        if code is None:
            return [_Answered(TOPIC, 0, 5), _Answered(TOPIC, 1, 7)]
        return [_Answered(TOPIC, 0, 5), _Answered(TOPIC, 1, OFFSET_INVALID, KafkaError(code))]


class _Admin:
    def __init__(self, offsets: _Offsets) -> None:
        self.offsets = offsets

    def list_consumer_group_offsets(self, requests: list[Any], **_: Any) -> dict[str, Any]:
        done: Future[Any] = Future()
        done.set_result(SimpleNamespace(topic_partitions=self.offsets.answer()))
        return {requests[0].group_id: done}

    def describe_consumer_groups(self, names: list[str], **_: Any) -> dict[str, Any]:
        out = {}
        for name in names:
            done: Future[Any] = Future()
            done.set_result(SimpleNamespace(members=[]))
            out[name] = done
        return out


def _consumer_committed(offsets: _Offsets) -> dict[int, int]:
    # Only what committed() reads: constructing one subscribes through a broker.
    consumer = KafkaConsumer.__new__(KafkaConsumer)
    consumer._closed = False
    consumer._group = GROUP
    consumer._topic = SimpleNamespace(name=TOPIC, partitions=2)
    consumer._lock = threading.RLock()
    consumer._consumer = SimpleNamespace(  # type: ignore[assignment]
        committed=lambda tps, timeout: offsets.answer()
    )
    return consumer.committed()


def _observed(offsets: _Offsets) -> dict[int, int]:
    store = SimpleNamespace(admin=_Admin(offsets))
    (group,) = observe._describe(store, [GROUP])
    return group.committed.get(TOPIC, {})


def _guarded(offsets: _Offsets) -> dict[int, int]:
    guard = LagGuard(SimpleNamespace(admin=_Admin(offsets)), 10, 0.5)
    found = guard._committed(GROUP, TOPIC, 2)
    assert found is not None
    return found


READERS = [_consumer_committed, _observed, _guarded]


@pytest.mark.parametrize("read", READERS)
def test_a_retriable_partition_error_is_tried_again(read: Any) -> None:
    offsets = _Offsets(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR)
    assert read(offsets) == {0: 5, 1: 7}
    assert offsets.calls == 3


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize(
    ("code", "raised"),
    [
        (KafkaError.GROUP_AUTHORIZATION_FAILED, tidelog.TidelogError),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, tidelog.TopicNotFoundError),
    ],
)
def test_another_partition_error_raises(read: Any, code: int, raised: type[Exception]) -> None:
    offsets = _Offsets(code)
    with pytest.raises(raised, match=GROUP):
        read(offsets)
    assert offsets.calls == 1


@pytest.mark.parametrize("read", READERS)
def test_an_answer_without_errors_is_read_as_before(read: Any) -> None:
    assert read(_Offsets(None)) == {0: 5, 1: 7}
