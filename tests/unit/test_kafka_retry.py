"""``tidelog.kafka._errors.retrying``: Kafka's retriable errors are tried again, no broker.

Kafka's own clients repeat a read that failed with a retriable error (a partition whose
leader is being elected, a coordinator that is loading, a dropped connection) until their
API timeout ends; the kafka:// backend's round trips go through ``retrying`` for that. The
conformance suite checks the call sites through a real broker.
"""

from __future__ import annotations

import pytest

ck = pytest.importorskip("confluent_kafka")

import tidelog  # noqa: E402
from confluent_kafka import KafkaError, KafkaException  # noqa: E402
from tidelog.kafka._errors import retrying  # noqa: E402


class Flaky:
    """A round trip that fails with ``errors`` in turn, then answers ``"done"``."""

    def __init__(self, *errors: KafkaError | Exception) -> None:
        self.errors = list(errors)
        self.timeouts: list[float] = []

    def __call__(self, timeout: float) -> str:
        self.timeouts.append(timeout)
        if self.errors:
            error = self.errors.pop(0)
            raise KafkaException(error) if isinstance(error, KafkaError) else error
        return "done"


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError._TRANSPORT,
    ],
)
def test_a_retriable_error_is_tried_again(code: int) -> None:
    # librdkafka reports these with retriable() False (it does not retry them itself).
    call = Flaky(KafkaError(code), KafkaError(code))
    assert retrying(call, "reading", timeout=30.0) == "done"
    assert len(call.timeouts) == 3


def test_an_error_librdkafka_marks_retriable_is_tried_again() -> None:
    call = Flaky(KafkaError(KafkaError.UNKNOWN, retriable=True))
    assert retrying(call, "reading", timeout=30.0) == "done"


def test_each_try_gets_the_time_left_of_one_budget() -> None:
    call = Flaky(*[KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)] * 3)
    retrying(call, "reading", timeout=30.0)
    assert all(0 < t <= 30.0 for t in call.timeouts)
    assert call.timeouts == sorted(call.timeouts, reverse=True)


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, tidelog.TidelogError),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, tidelog.TopicNotFoundError),
        (KafkaError.OFFSET_OUT_OF_RANGE, tidelog.OffsetOutOfRangeError),
        (KafkaError.UNKNOWN_MEMBER_ID, tidelog.RebalanceError),
        (KafkaError.INVALID_CONFIG, tidelog.InvalidConfigError),
    ],
)
def test_other_errors_raise_at_the_first_try(code: int, raised: type[Exception]) -> None:
    # A deleted topic answers UNKNOWN_TOPIC_OR_PART: stats() skips it at once.
    call = Flaky(KafkaError(code))
    with pytest.raises(raised, match="reading"):
        retrying(call, "reading", timeout=30.0)
    assert len(call.timeouts) == 1


def test_an_exception_without_a_kafka_error_raises_at_once() -> None:
    call = Flaky(KafkaException("no KafkaError in it"))
    with pytest.raises(tidelog.TidelogError, match="reading: no KafkaError in it"):
        retrying(call, "reading", timeout=30.0)
    assert len(call.timeouts) == 1


def test_a_retriable_error_raises_once_the_budget_is_spent() -> None:
    call = Flaky(*[KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)] * 1000)
    with pytest.raises(tidelog.TidelogError, match="NOT_LEADER_FOR_PARTITION") as raised:
        retrying(call, "reading", timeout=0.3)
    assert not isinstance(raised.value, tidelog.TopicNotFoundError)
    assert 1 < len(call.timeouts) < 1000
