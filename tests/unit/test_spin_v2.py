"""``spin_us`` (issue 19, wake-ups): consumers and work-queue members spin on the topic's
doorbell for at most ``spin_us`` microseconds before sleeping on it.

No test here asserts a timing: they check validation, defaults, and that a spinning waiter
still gets every message (the spin ends in the ordinary sleep, never in a missed ring).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import tidelog
from tidelog import _core
from tidelog._core import InvalidConfigError


def test_the_default_and_the_limit_come_from_the_core() -> None:
    default = _core.WAIT_DEFAULTS["spin_us"]
    assert isinstance(default, int) and 0 < default <= _core.MAX_SPIN_US
    assert _core.MAX_SPIN_US == 10_000
    with pytest.raises(TypeError):
        _core.WAIT_DEFAULTS["spin_us"] = 0  # type: ignore[index]


def test_consumer_and_work_queue_take_spin_us(store: tidelog.Store) -> None:
    store.create_topic("t", partitions=2)
    with store.consumer("t", group="g") as c:
        assert c.spin_us == _core.WAIT_DEFAULTS["spin_us"]
    with store.consumer("t", group="g", spin_us=0) as c:
        assert c.spin_us == 0
    with store.consumer("t", group="g", spin_us=_core.MAX_SPIN_US) as c:
        assert c.spin_us == _core.MAX_SPIN_US
    with store.work_queue("t", group="q") as q:
        assert q.spin_us == _core.WAIT_DEFAULTS["spin_us"]
    with store.work_queue("t", group="q", spin_us=7) as q:
        assert q.spin_us == 7


BAD: list[tuple[Any, type[Exception], str]] = [
    (-1, InvalidConfigError, "spin_us must be between 0 and 10000, got -1"),
    (10_001, InvalidConfigError, "spin_us must be between 0 and 10000, got 10001"),
    (2**70, InvalidConfigError, "spin_us must be between 0 and 10000"),
    (1.5, TypeError, "spin_us must be int"),
    (True, TypeError, "spin_us must be int"),
    ("5", TypeError, "spin_us must be int"),
]


@pytest.mark.parametrize(("value", "error", "message"), BAD)
def test_a_bad_spin_us_is_refused_naming_it(
    store: tidelog.Store, value: Any, error: type[Exception], message: str
) -> None:
    store.create_topic("t")
    with pytest.raises(error, match=message):
        store.consumer("t", group="g", spin_us=value)
    with pytest.raises(error, match=message):
        store.work_queue("t", group="q", spin_us=value)
    # Nothing joined: a refused member leaves no trace in the group.
    with store.consumer("t", group="g") as c:
        assert c.poll(timeout=0) == []


@pytest.mark.parametrize(("value", "error", "message"), BAD)
def test_the_native_waits_refuse_a_bad_spin_us(
    store: tidelog.Store, tmp_path: Path, value: Any, error: type[Exception], message: str
) -> None:
    topic = store.create_topic("t")
    bell = _core.Doorbell(tmp_path / "doorbell")
    # The native message names the argument too (its wording for types differs).
    native_message = message if error is InvalidConfigError else "spin_us"
    with pytest.raises(error, match=native_message):
        topic.wait(topic.ticket(), 0, value)
    with pytest.raises(error, match=native_message):
        bell.wait(bell.ticket(), 0, spin_us=value)


def test_native_waits_spin_then_sleep_and_return_whether_it_rang(
    store: tidelog.Store, tmp_path: Path
) -> None:
    topic = store.create_topic("t")
    ticket = topic.ticket()
    assert topic.wait(ticket, 0, 50) is False  # a zero timeout bounds the spin too
    assert topic.wait(ticket, 0.002, 50) is False  # spun, slept, nothing came
    assert topic.wait(ticket, 0.002, None) is False
    topic.append(b"x")
    assert topic.wait(ticket, 5, 50) is True  # the old ticket: at once
    assert topic.wait(ticket, spin_us=0) is True
    bell = _core.Doorbell(tmp_path / "doorbell")
    ticket = bell.ticket()
    assert bell.wait(ticket, 0.001, spin_us=20) is False
    bell.ring()
    assert bell.wait(ticket, None, spin_us=20) is True


@pytest.mark.parametrize("spin_us", [0, 1, 30, 10_000])
def test_a_spinning_consumer_gets_every_message_appended_by_another_thread(
    store: tidelog.Store, spin_us: int
) -> None:
    """The appender sends while the consumer waits: some sends land while it spins, some as
    it gives up, some while it sleeps; ``poll`` returning empty before the last message would
    mean a wait ended by its timeout, i.e. a ring was missed."""
    topic = store.create_topic("t", partitions=3)
    n = 400
    got: list[bytes] = []
    with store.consumer("t", group="g", spin_us=spin_us) as c:
        done = threading.Event()

        def send() -> None:
            for i in range(n):
                topic.append(b"%d" % i)
                done.wait(0.0002 * (i % 7))  # gaps of 0 to 1.2 ms

        sender = threading.Thread(target=send)
        sender.start()
        try:
            while len(got) < n:
                batch = c.poll(timeout=30)
                assert batch, f"a poll waited out its timeout with {len(got)} of {n} received"
                got.extend(m.value or b"" for m in batch)
        finally:
            done.set()
            sender.join()
    assert sorted(got, key=int) == [b"%d" % i for i in range(n)]


def test_a_spinning_work_queue_member_gets_every_message(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    n = 200
    with store.work_queue("t", group="q", spin_us=100, prefetch=1) as q:
        done = threading.Event()

        def send() -> None:
            for i in range(n):
                topic.append(b"%d" % i)
                done.wait(0.0003 * (i % 5))

        sender = threading.Thread(target=send)
        sender.start()
        got: list[bytes] = []
        try:
            while len(got) < n:
                job = q.acquire(timeout=30)
                assert job is not None, f"an acquire waited out its timeout at {len(got)}"
                got.append(job.value or b"")
                q.ack(job)
        finally:
            done.set()
            sender.join()
    assert sorted(got, key=int) == [b"%d" % i for i in range(n)]
