"""Per-partition send order of the producer, whatever the priorities (issue 13, item 6).

Priority only decides what ``on_full="shed"`` drops: the messages kept are written in the
order of the ``send`` calls, and the dropped ones are the oldest of the lowest priority
buffered, counted per priority in ``stats()["dropped"]``.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
import tidelog
from hypothesis import given, settings
from hypothesis import strategies as st
from tidelog import OnFull

#: Long enough that the writer sleeps through a test's sends: what is kept under pressure
#: is then decided by shedding alone (a flush wakes it).
ASLEEP_MS = 60_000.0


def model_shed(sends: list[tuple[int, int]], buffer: int) -> tuple[list[int], Counter[int]]:
    """What a shedding producer whose writer sleeps keeps and drops.

    ``sends`` are (partition, priority) pairs; returns the indexes of the kept sends in
    send order and the drops per priority. A full buffer evicts the oldest buffered message
    of the lowest priority below the new one's, or drops the new one if there is none.
    """
    buffered: list[tuple[int, int]] = []  # (index, priority), in send order
    dropped = Counter[int]()
    for i, (_, priority) in enumerate(sends):
        if len(buffered) >= buffer:
            lower = [p for _, p in buffered if p < priority]
            if not lower:
                dropped[priority] += 1
                continue
            lowest = min(lower)
            victim = next(k for k, (_, p) in enumerate(buffered) if p == lowest)
            del buffered[victim]
            dropped[lowest] += 1
        buffered.append((i, priority))
    return [i for i, _ in buffered], dropped


def send_all(
    store: tidelog.Store,
    topic: str,
    sends: list[tuple[int, int]],
    *,
    buffer: int,
    on_full: OnFull,
    linger_ms: float,
) -> dict[str, object]:
    """Sends ``b"<index>"`` for every (partition, priority) and flushes; returns stats."""
    with store.producer(
        buffer_messages=buffer,
        high_watermark=1.0,
        low_watermark=0.5,
        on_full=on_full,
        linger_ms=linger_ms,
    ) as producer:
        if linger_ms >= ASLEEP_MS:
            time.sleep(0.05)  # let the writer go to sleep first
        for i, (partition, priority) in enumerate(sends):
            producer.send(topic, b"%d" % i, partition=partition, priority=priority)
        assert producer.flush(timeout=60)
        stats = dict(producer.stats())
    return stats


def read_indexes(store: tidelog.Store, topic: str, partition: int) -> list[int]:
    return [int(m.value or b"") for m in store.topic(topic).read(partition)]


@pytest.mark.parametrize("on_full", ["shed", "block", "raise"])
def test_mixed_priorities_keep_send_order_without_pressure(
    store: tidelog.Store, on_full: OnFull
) -> None:
    """The issue's reproducer: 200 sends to partition 0 with priority i % 3."""
    store.create_topic("t")
    sends = [(0, i % 3) for i in range(200)]
    stats = send_all(store, "t", sends, buffer=65_536, on_full=on_full, linger_ms=1.0)
    assert read_indexes(store, "t", 0) == list(range(200))
    assert stats["written"] == 200
    assert sum(stats["dropped"].values()) == 0  # type: ignore[attr-defined]


def test_mixed_priorities_keep_send_order_across_partitions(store: tidelog.Store) -> None:
    store.create_topic("t", partitions=3)
    sends = [(i % 3, (i * 7) % 5) for i in range(3_000)]
    send_all(store, "t", sends, buffer=65_536, on_full="shed", linger_ms=0.0)
    for p in range(3):
        assert read_indexes(store, "t", p) == [i for i, (q, _) in enumerate(sends) if q == p]


def test_shedding_keeps_send_order_and_drops_only_the_lowest(store: tidelog.Store) -> None:
    """Under pressure the kept messages are in send order in every partition, and the
    dropped ones are exactly the oldest of the lowest priorities buffered."""
    store.create_topic("t", partitions=3)
    # At most twice the buffer in all: a shed message keeps its slot in the ring until the
    # writer pops it, and a ring full of them wakes the writer (see the next test).
    sends = [(i % 3, [0, 2, 1, 1, 0, 2, 2][i % 7]) for i in range(400)]
    stats = send_all(store, "t", sends, buffer=200, on_full="shed", linger_ms=ASLEEP_MS)
    kept, dropped = model_shed(sends, 200)
    for p in range(3):
        assert read_indexes(store, "t", p) == [i for i in kept if sends[i][0] == p]
    assert {q: n for q, n in stats["dropped"].items() if n} == dict(dropped)  # type: ignore[attr-defined]
    assert dropped[2] == 0 and dropped[0] > 0 and dropped[1] > 0
    assert stats["written"] == len(kept) == 200


def test_shedding_under_a_running_writer_keeps_order(store: tidelog.Store) -> None:
    """With the writer draining while senders shed (no sleeping writer), whichever
    messages are kept are still in send order per partition, and every send is accounted."""
    store.create_topic("t", partitions=2)
    sends = [(i % 2, i % 4) for i in range(50_000)]
    stats = send_all(store, "t", sends, buffer=64, on_full="shed", linger_ms=0.0)
    total = 0
    for p in range(2):
        got = read_indexes(store, "t", p)
        assert got == sorted(got)
        assert all(sends[i][0] == p for i in got)
        total += len(got)
    dropped: dict[int, int] = stats["dropped"]  # type: ignore[assignment]
    assert total == stats["written"] == len(sends) - sum(dropped.values())
    sent = Counter(q for _, q in sends)
    kept = Counter(sends[i][1] for p in range(2) for i in read_indexes(store, "t", p))
    for q in range(4):
        assert kept[q] + dropped.get(q, 0) == sent[q]
    # The highest priority is never evicted: a full buffer always holds a lower one or
    # is being drained, and a message of priority 3 is only refused if all buffered are 3.
    assert dropped.get(3, 0) <= dropped.get(0, 0)


_SEND = st.tuples(st.integers(0, 2), st.integers(-2, 3))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), buffer=st.integers(1, 60))
def test_shedding_matches_the_model(data: st.DataObject, buffer: int) -> None:
    """Random partitions, priorities and buffer sizes, with the writer asleep: exactly the
    model's messages are kept, in send order per partition, and its drops counted."""
    sends = data.draw(st.lists(_SEND, min_size=1, max_size=2 * buffer))
    with tempfile.TemporaryDirectory() as d, tidelog.open(Path(d) / "s") as store:
        store.create_topic("t", partitions=3)
        stats = send_all(store, "t", sends, buffer=buffer, on_full="shed", linger_ms=ASLEEP_MS)
        kept, dropped = model_shed(sends, buffer)
        for p in range(3):
            assert read_indexes(store, "t", p) == [i for i in kept if sends[i][0] == p]
        got = {q: n for q, n in stats["dropped"].items() if n}  # type: ignore[attr-defined]
        assert got == dict(dropped)
