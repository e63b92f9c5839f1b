"""The native waker: a watched bell that moves makes its eventfd readable, once per watch."""

from __future__ import annotations

import select
from pathlib import Path

import pytest
import tidelog
from tidelog import _core


def _readable(waker: _core.Waker, timeout: float) -> bool:
    return bool(select.select([waker.fileno()], [], [], timeout)[0])


def test_an_append_makes_the_fd_readable_once_per_watch(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=2)
        bell = _core.Bell.topic(topic)
        waker = _core.Waker()
        try:
            ticket = bell.ticket()
            waker.watch(bell, ticket)
            assert not _readable(waker, 0.05)
            topic.append(b"x", partition=1)
            assert _readable(waker, 10.0)
            assert bell.ticket() != ticket
            waker.drain()
            assert not _readable(waker, 0.05), "drained, and the watch was one-shot"
            topic.append(b"y", partition=0)
            assert not _readable(waker, 0.05), "not watched any more"
            waker.watch(bell, ticket)  # a stale ticket fires at once
            assert _readable(waker, 10.0)
        finally:
            waker.close()
            waker.close()


def test_a_doorbell_rung_by_path_wakes_a_topic_watch(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=1)
        bell = _core.Bell.topic(topic)
        ringer = _core.Doorbell(tmp_path / "topics" / "t" / "doorbell")
        waker = _core.Waker()
        try:
            waker.watch(bell, bell.ticket())
            ringer.ring()  # another mapping of the same file (work queues ring it so)
            assert _readable(waker, 10.0)
        finally:
            waker.close()


def test_bad_tickets_and_a_closed_waker_raise(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        bell = _core.Bell.topic(store.create_topic("t", partitions=1))
        waker = _core.Waker()
        with pytest.raises(TypeError, match="ticket"):
            waker.watch(bell, "0")  # type: ignore[arg-type]
        with pytest.raises(tidelog.InvalidConfigError, match="ticket"):
            waker.watch(bell, -1)
        waker.close()
        with pytest.raises(tidelog.StoreClosedError):
            waker.watch(bell, bell.ticket())


def test_a_producer_bell_moves_when_pressure_ends(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t", partitions=1)
        producer = store.producer(buffer_messages=8, linger_ms=0)
        sender = _core.AsyncProducer(producer)
        bell = _core.Bell.pressure(producer)
        ticket = bell.ticket()
        producer._set_external_pressure(True)
        assert sender._try_send("t", b"x") is None, "on_full='block' would wait"
        waker = _core.Waker()
        try:
            waker.watch(bell, ticket)
            assert not _readable(waker, 0.05)
            producer._set_external_pressure(False)
            assert _readable(waker, 10.0)
            result = sender._try_send("t", b"x")
            assert result is not None and result.accepted
            assert producer.flushed(result.target) or producer.flush(10.0)
        finally:
            waker.close()
            producer.close()
