"""The Kafka producer's backpressure, without a broker: nothing is ever acknowledged, so every
message sent stays in flight and the watermarks are reached exactly.

``send`` asks librdkafka for the number in flight only when the sends since it last asked
could have reached the high watermark (``len(producer)`` takes librdkafka's locks); these
tests check that this never lets more than the high watermark in.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import tidelog

pytest.importorskip("confluent_kafka")

from finalization import LONG_FINALIZATION, NO_BROKER, ends_cleanly
from tidelog.kafka import producer as producer_module
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
        p = KafkaProducer(NoBroker(), **{"buffer_messages": 100, **kw})  # type: ignore[arg-type]
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


def test_sent_counts_every_message_queued_and_only_those(make: Any) -> None:
    p = make(on_full="shed", high_watermark=0.5, low_watermark=0.25)
    assert all(p.send("t", b"v") for _ in range(10))
    assert p.stats()["sent"] == 10  # stats() itself sends nothing
    with pytest.raises(TypeError, match="topic must be str, got int"):
        p.send(7, b"v")
    with pytest.raises(TypeError):
        p.send("t", 7)
    for _ in range(40):
        p.send("t", b"v", headers={"h": b"x"})
    assert p.send("t", b"v") is False  # shed at the high watermark (50)
    assert p.stats()["sent"] == 50
    assert p.stats()["dropped"] == {0: 1}


def test_sent_loses_no_message_of_concurrent_threads(make: Any) -> None:
    p = make(buffer_messages=1_000_000)

    def send() -> None:
        for _ in range(20_000):
            p.send("t", b"v")

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.stats()["sent"] == len(p.native) == 80_000


def test_a_delivery_failure_is_raised_by_the_next_send(make: Any) -> None:
    # Nothing is delivered without a broker: every message times out after 100 ms.
    p = make(config={"message.timeout.ms": 100})
    for _ in range(10):
        assert p.send("t", b"v")
    while p.stats()["failed"] < 10:  # the poller serves the reports
        threading.Event().wait(0.02)
    with pytest.raises(tidelog.TidelogError, match="delivering a message"):
        p.send("t", b"v")
    assert p.send("t", b"v")  # raised once


def until(done: Any) -> bool:
    """Whether ``done()`` held within 10 s (nothing here waits for a time: a bound)."""
    for _ in range(500):
        if done():
            return True
        threading.Event().wait(0.02)
    return False


def test_an_exception_in_a_delivery_callback_is_the_next_error(make: Any) -> None:
    # Before, it came out of the background thread's poll and ended that thread: the
    # reports after it were served only by flush().
    p = make(config={"message.timeout.ms": 100})

    def boom(_err: Any, _msg: Any) -> None:
        raise ValueError("boom")

    for _ in range(3):
        assert p.send("t", b"v", on_delivery=boom)
    assert p.send("t", b"v")
    assert until(lambda: p.stats()["failed"] == 4)  # the reports after it are served too
    with pytest.raises(ValueError, match="boom"):
        p.send("t", b"v")
    assert p.send("t", b"v")  # raised once


def test_delivery_callbacks_run_inside_send_while_a_thread_sends(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer_module, "SERVE_EVERY", 1)  # every send serves
    p = make(buffer_messages=100_000, config={"message.timeout.ms": 100})
    main = threading.current_thread()
    sending = False
    ran: list[tuple[bool, bool]] = []

    def report(_err: Any, _msg: Any) -> None:
        ran.append((threading.current_thread() is main, sending))
        # A send inside the callback serves nothing more (confluent-kafka's poll cannot
        # nest on one thread): it only queues.
        p.send("t", b"from the callback")

    def send_until_served() -> bool:
        nonlocal sending
        sending = True
        p.send("t", b"v", on_delivery=report)
        sending = False
        threading.Event().wait(0.002)
        return any(in_send for on_main, in_send in ran if on_main)

    # While the thread sends, the background thread leaves the reports to it.
    assert until(send_until_served)
    with pytest.raises(tidelog.TidelogError, match="delivering a message"):
        p.flush(10)  # the failures: for the sending code, not for the callbacks' sends


def test_a_delivery_callback_may_send_but_not_wait_for_deliveries(make: Any) -> None:
    p = make(buffer_messages=1000, config={"message.timeout.ms": 100})
    seen: list[list[str | None]] = []

    def report(_err: Any, _msg: Any) -> None:
        outcomes: list[str | None] = []
        for wait in (p.flush, p.close):  # each would wait for the report being served
            try:
                wait()
                outcomes.append(None)
            except tidelog.TidelogError as e:
                outcomes.append(str(e))
        if len(seen) < 3:
            p.send("t", b"again", on_delivery=report)
        seen.append(outcomes)

    assert p.send("t", b"v", on_delivery=report)
    assert until(lambda: len(seen) == 4)
    assert all(o is not None and "inside a delivery callback" in o for s in seen for o in s)
    assert not p.closed
    with pytest.raises(tidelog.TidelogError, match="delivering a message"):
        p.flush(10)


def test_a_send_after_close_raises(make: Any) -> None:
    p = make()
    assert p.send("t", b"v")
    p.native.purge()
    p.close()
    with pytest.raises(tidelog.StoreClosedError):
        p.send("t", b"v")


def test_a_closed_producer_is_freed_without_the_cyclic_gc() -> None:
    # Its librdkafka handle keeps three threads and the buffers: it must go with the last
    # reference, not wait for a collection.
    gc.disable()
    try:
        p = KafkaProducer(NoBroker(), buffer_messages=100)  # type: ignore[arg-type]
        p.send("t", b"v")
        p.native.purge()
        p.close()
        ref = weakref.ref(p)
        del p
        # The delivery-report thread holds it until it sees the stop (within 50 ms).
        for _ in range(500):
            if ref() is None:
                break
            threading.Event().wait(0.01)
        assert ref() is None
    finally:
        gc.enable()


# A process that ends right after closing a producer: its delivery-report thread stops
# within 50 ms, maybe while the interpreter finalizes. If that thread dropped the last
# reference to the producer, the librdkafka handle was freed inside the native base's
# dealloc, and freeing it lets go of the GIL (rd_kafka_destroy joins librdkafka's threads):
# taking it back during finalization ends the thread with a forced unwind, which the
# native frame's panic guard cannot pass, and the process aborted ("FATAL: exception not
# rethrown", exit status 134; seen at the end of `pytest tests/unit -k kafka`). The child
# makes the timing certain: its handle's finalizer signals the main thread, which then
# exits, and sleeps (letting go of the GIL) as rd_kafka_destroy does, waking while the
# interpreter finalizes (its last collection has cyclic garbage to go through).
_EXIT_WHILE_THE_HANDLE_GOES = (
    NO_BROKER
    + LONG_FINALIZATION
    + """
import threading, time
from tidelog.kafka import producer as module

freeing = threading.Event()

class SlowToFree(module.Producer):
    def __del__(self) -> None:
        freeing.set()
        time.sleep(0.02)

module.Producer = SlowToFree
p = module.KafkaProducer(NoBroker())
p.close()
del p
assert freeing.wait(10), "the handle was never freed"
"""
)


def test_exiting_while_the_report_thread_frees_the_handle_does_not_abort() -> None:
    ends_cleanly(_EXIT_WHILE_THE_HANDLE_GOES)


# A daemon thread inside send() while the process ends: a send blocked under pressure
# lets go of the GIL in librdkafka's poll every 5 ms (so does any send serving reports),
# and takes it back during finalization, which ends the thread by a forced unwind. Under
# the panic guard of a PyO3 method that aborted the process (17 of 20 processes that ended
# while a thread sent); `send` makes its Python calls outside any guard.
_EXIT_WHILE_A_DAEMON_SENDS = (
    NO_BROKER
    + LONG_FINALIZATION
    + """
import threading, time
from tidelog.kafka.producer import KafkaProducer

p = KafkaProducer(NoBroker(), buffer_messages=10, on_full="block")
for _ in range(8):
    p.send("t", b"v")
threading.Thread(target=p.send, args=("t", b"blocked"), daemon=True).start()
while not p.stats()["high_watermark_hits"]:
    time.sleep(0.01)
"""
)


def test_exiting_while_a_daemon_thread_sends_does_not_abort() -> None:
    ends_cleanly(_EXIT_WHILE_A_DAEMON_SENDS)


def test_a_refusal_of_librdkafka_is_a_tidelog_error_and_sends_nothing(make: Any) -> None:
    # librdkafka's own bound below the high watermark: its BufferError comes first.
    p = make(config={"queue.buffering.max.messages": 5})
    for _ in range(5):
        assert p.send("t", b"v")
    with pytest.raises(tidelog.BackpressureError, match="librdkafka's queue is full") as e:
        p.send("t", b"v")
    assert isinstance(e.value.__cause__, BufferError)
    with pytest.raises(tidelog.BackpressureError):
        p.send("t", b"v", headers={"h": b"x"})
    assert p.stats()["sent"] == len(p.native) == 5


def test_send_takes_key_and_the_rest_by_keyword_only(make: Any) -> None:
    p = make()
    assert p.send("t", b"v", key=b"k", partition=0, priority=None)
    assert p.stats()["sent"] == 1
    # `send` parses its own arguments (see _core.KafkaSender): as a Python function would.
    assert p.send(topic="t", value=b"v") and p.send("t", value=b"v")
    keywords = {"key": b"k", "partition": 0}  # names made at run time, not interned
    assert p.send("t", b"v", **{"".join(k): v for k, v in keywords.items()})
    assert p.stats()["sent"] == 4
    with pytest.raises(TypeError, match="unexpected keyword argument 'keys'"):
        p.send("t", b"v", keys=b"k")
    with pytest.raises(TypeError, match="multiple values for argument 'topic'"):
        p.send("t", b"v", topic="u")
    with pytest.raises(TypeError, match="missing required argument 'value'"):
        p.send("t")
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given"):
        p.send("t", b"v", b"k")
    assert p.stats()["sent"] == 4


class Recording(NoBroker):
    """Keeps the librdkafka configuration its clients were made with."""

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []

    def client_config(self, **extra: Any) -> dict[str, Any]:
        self.made.append(extra)
        return super().client_config(**extra)


@pytest.mark.parametrize(
    ("options", "batch"),
    [
        ({}, None),  # librdkafka's own batch size
        ({"max_batch_messages": 100}, 100),
        ({"max_batch_messages": 100, "config": {"batch.num.messages": 7}}, 7),
    ],
)
def test_max_batch_messages_is_batch_num_messages(options: dict[str, Any], batch: Any) -> None:
    link = Recording()
    p = KafkaProducer(link, **options)  # type: ignore[arg-type]
    p.close()
    assert link.made[0].get("batch.num.messages") == batch
