"""The Kafka producer's backpressure, without a broker: nothing is ever acknowledged, so every
message sent stays in flight and the watermarks are reached exactly.

``send`` asks librdkafka for the number in flight only when the sends since it last asked
could have reached the high watermark (``len(producer)`` takes librdkafka's locks); these
tests check that this never lets more than the high watermark in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import tidelog

pytest.importorskip("confluent_kafka")

from tidelog.kafka.producer import KafkaProducer


class NoBroker:
    """A store link whose clients know no broker: they queue messages and never connect.

    (A client of an address nothing listens on would also queue connection errors, which
    ``len(producer)`` counts with the messages.)
    """

    admin = None

    def client_config(self, **extra: Any) -> dict[str, Any]:
        return {"log_level": 0, **extra}

    def forget(self, member: object) -> None:
        pass


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[KafkaProducer] = []

    def producer(**kw: Any) -> KafkaProducer:
        p = KafkaProducer(NoBroker(), buffer_messages=100, **kw)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield producer
    for p in made:
        p.native.purge()  # nothing can be delivered: drop it so that close() returns
        p.close()


@pytest.mark.parametrize("headers", [None, {"h": b"x"}])
def test_raise_comes_exactly_at_the_high_watermark(make: Any, headers: Any) -> None:
    p = make(on_full="raise")  # high watermark 80
    for i in range(80):
        assert p.send("t", b"%d" % i, headers=headers, partition=0 if i % 2 else None)
    with pytest.raises(tidelog.BackpressureError, match="80 messages"):
        p.send("t", b"x")
    assert p.stats()["buffered"] == 80
    assert p.stats()["high_watermark_hits"] == 1


def test_shed_comes_exactly_at_the_high_watermark(make: Any) -> None:
    p = make(on_full="shed", high_watermark=0.5, low_watermark=0.25)
    assert all(p.send("t", b"v") for _ in range(50))
    assert p.send("t", b"v", priority=3) is False
    assert p.stats()["dropped"] == {3: 1}
    assert len(p.native) == 50
    # Space made behind the producer's back (as deliveries do) is seen at the next check.
    p.native.purge()
    assert p.native.flush(10) == 0  # serves the purged messages' reports
    assert p.send("t", b"v")
    assert len(p.native) == 1


def test_threads_together_stay_at_the_high_watermark(make: Any) -> None:
    p = make(on_full="raise")
    admitted = [0] * 4

    def send(n: int) -> None:
        try:
            while True:
                p.send("t", b"v")
                admitted[n] += 1
        except tidelog.BackpressureError:
            pass

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # As with a check per send: a send in progress in another thread may be unseen.
    assert 80 <= sum(admitted) == len(p.native) <= 80 + 3
