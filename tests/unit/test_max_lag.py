"""``max_lag`` is a bound, not a hint (issue 13, item 7).

While pressure is on, no more than ``max_lag + buffer_messages`` messages are ever written to
a partition past the slowest group's committed offset, whichever process commits; the
writer enforces it from the commits in ``__consumer_offsets``, without Python in the loop.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tidelog

MAX_LAG = 30
BUFFER = 64
BOUND = MAX_LAG + BUFFER


def wait_until_stalled(producer: tidelog.Producer, check: Callable[[], None]) -> None:
    """Waits until the producer stops writing (everything it may write is written and the
    rest is held back or blocked), calling ``check`` on the way."""
    deadline = time.monotonic() + 60
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        check()
        written = producer.stats()["written"]
        if written != last:
            last, still_since = written, time.monotonic()
        elif time.monotonic() - still_since > 0.5:
            return
        time.sleep(0.01)
    pytest.fail("the producer never stopped writing")


class Sender(threading.Thread):
    """Sends ``b"<i>"`` for i in 0..n to partition i % partitions, blocking as it must."""

    def __init__(self, producer: tidelog.Producer, n: int, partitions: int = 1) -> None:
        super().__init__(daemon=True)
        self.producer, self.n, self.partitions = producer, n, partitions
        self.errors: list[BaseException] = []
        self.start()

    def run(self) -> None:
        try:
            for i in range(self.n):
                self.producer.send("t", b"%d" % i, partition=i % self.partitions)
        except BaseException as e:
            self.errors.append(e)


def test_a_burst_cannot_pass_a_paused_group(store: tidelog.Store) -> None:
    """The issue's reproducer: max_lag=30, buffer 64, block, a group paused at offset 0."""
    topic = store.create_topic("t")
    consumer = store.consumer("t", group="paused")
    consumer.commit({0: 0})
    committed = 0

    def within_bound() -> None:
        assert topic.end_offset(0) <= committed + BOUND

    with store.producer(max_lag=MAX_LAG, buffer_messages=BUFFER, on_full="block") as producer:
        sender = Sender(producer, 300)
        wait_until_stalled(producer, within_bound)
        assert sender.is_alive(), "every send got through a paused group"
        assert MAX_LAG < topic.end_offset(0) <= BOUND
        # The group commits what it has: the writer goes on, still within the bound.
        deadline = time.monotonic() + 60
        while sender.is_alive() or topic.end_offset(0) < 300:
            assert time.monotonic() < deadline, "the producer did not resume after commits"
            committed = topic.end_offset(0)
            consumer.commit({0: committed})
            within_bound()
            time.sleep(0.005)
        sender.join()
        assert not sender.errors
        assert producer.flush(timeout=60)
    assert [int(m.value or b"") for m in topic.read(0)] == list(range(300))
    consumer.close()


def test_flush_waits_for_the_group(store: tidelog.Store) -> None:
    """Held-back messages are buffered, not written: flush times out until the group
    commits, then returns with everything written."""
    topic = store.create_topic("t")
    consumer = store.consumer("t", group="paused")
    consumer.commit({0: 0})
    with store.producer(
        max_lag=MAX_LAG, buffer_messages=BUFFER, on_full="raise", linger_ms=0
    ) as producer:
        sent = 0
        with pytest.raises(tidelog.BackpressureError):
            for i in range(10_000):
                producer.send("t", b"%d" % i)
                sent += 1
        assert MAX_LAG < sent <= 10_000
        assert not producer.flush(timeout=0.2) or sent <= BOUND
        assert topic.end_offset(0) <= BOUND
        consumer.commit({0: topic.end_offset(0)})
        while topic.end_offset(0) < sent:
            consumer.commit({0: topic.end_offset(0)})
            producer.flush(timeout=0.05)
        assert producer.flush(timeout=60)
        assert topic.end_offset(0) == sent
    consumer.close()


_CHILD = """
import sys, tidelog
path, offset = sys.argv[1], int(sys.argv[2])
with tidelog.open(path) as store:
    with store.consumer("t", group="remote") as consumer:
        consumer.commit({0: offset})
"""


def commit_from_another_process(path: Path, offset: int) -> None:
    subprocess.run([sys.executable, "-c", _CHILD, str(path), str(offset)], check=True, timeout=120)


def test_a_group_in_another_process_bounds_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        topic = store.create_topic("t")
        commit_from_another_process(path, 0)
        with store.producer(
            max_lag=MAX_LAG, buffer_messages=BUFFER, on_full="block", block_timeout=0.2
        ) as producer:
            sent = 0
            with pytest.raises(tidelog.BackpressureError):
                for i in range(1_000):
                    producer.send("t", b"%d" % i)
                    sent += 1
            wait_until_stalled(producer, lambda: None)
            assert MAX_LAG < topic.end_offset(0) <= BOUND
            # The other process commits: the held messages are written, then sends resume.
            while topic.end_offset(0) < sent:
                commit_from_another_process(path, topic.end_offset(0))
                producer.flush(timeout=0.5)
            assert producer.flush(timeout=60)
            commit_from_another_process(path, sent)
            for i in range(sent, sent + 10):
                producer.send("t", b"%d" % i)
            assert producer.flush(timeout=60)
        assert [int(m.value or b"") for m in topic.read(0)] == list(range(sent + 10))


def test_every_partition_is_bounded_by_its_own_commit(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=3)
    consumer = store.consumer("t", group="paused")
    committed = {0: 0, 1: 0, 2: 0}
    consumer.commit(committed)
    # A second group far ahead does not matter: the slowest one bounds the writer.
    ahead = store.consumer("t", group="ahead")

    def within_bound() -> None:
        for p in range(3):
            assert topic.end_offset(p) <= committed[p] + BOUND

    with store.producer(max_lag=MAX_LAG, buffer_messages=BUFFER, on_full="block") as producer:
        sender = Sender(producer, 900, partitions=3)
        wait_until_stalled(producer, within_bound)
        assert sender.is_alive()
        assert sum(topic.end_offset(p) for p in range(3)) <= 3 * BOUND
        # Partition 1 stays paused while 0 and 2 move on: 1 stays within its bound, and the
        # producer stays under pressure (its lag is past max_lag).
        for _ in range(20):
            for p in (0, 2):
                committed[p] = topic.end_offset(p)
            ahead.commit({p: topic.end_offset(p) for p in range(3)})
            consumer.commit(dict(committed))
            within_bound()
            time.sleep(0.01)
        assert topic.end_offset(1) <= BOUND
        deadline = time.monotonic() + 60
        while sender.is_alive() or sum(topic.end_offset(p) for p in range(3)) < 900:
            assert time.monotonic() < deadline, "the producer did not resume after commits"
            committed = {p: topic.end_offset(p) for p in range(3)}
            consumer.commit(dict(committed))
            ahead.commit(dict(committed))
            within_bound()
            time.sleep(0.005)
        sender.join()
        assert not sender.errors
        assert producer.flush(timeout=60)
    for p in range(3):
        assert [int(m.value or b"") for m in topic.read(p)] == list(range(p, 900, 3))
    consumer.close()
    ahead.close()


def test_shedding_under_max_lag_keeps_order_and_the_bound(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    consumer = store.consumer("t", group="paused")
    consumer.commit({0: 0})
    with store.producer(max_lag=MAX_LAG, buffer_messages=BUFFER, on_full="shed") as producer:
        for i in range(2_000):
            producer.send("t", b"%d" % i, priority=i % 2)
            assert topic.end_offset(0) <= BOUND
        wait_until_stalled(producer, lambda: None)
        assert topic.end_offset(0) <= BOUND
        while producer.stats()["buffered"]:
            consumer.commit({0: topic.end_offset(0)})
            producer.flush(timeout=0.05)
        stats = producer.stats()
    got = [int(m.value or b"") for m in topic.read(0)]
    assert got == sorted(got)
    assert len(got) + sum(stats["dropped"].values()) == 2_000
    assert stats["dropped"].get(0, 0) > 0
    consumer.close()
