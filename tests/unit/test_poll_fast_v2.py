"""The consumer's fast path (issue 19, wake-ups) and recycled ``Message`` objects (issue 19,
iteration).

A poll skips the group's bookkeeping when the generation is unchanged and no heartbeat is
due, and reads a member's only partition without the round over partitions; ``Message``,
``RecordBatch`` and its iterator are recycled through free lists. None of that may change
what a member sees: these tests drive heartbeats, rebalances, pauses, retention and
transaction markers through the fast path, and check that recycled messages never show
another message's fields. No test asserts a timing.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import pytest
import tidelog
from tidelog._core import Message


def test_polling_members_keep_their_lease_through_the_fast_path(tmp_path: Path) -> None:
    # Polls that find the generation unchanged skip the group, but must still heartbeat
    # once due: otherwise the member's lease runs out and a newcomer takes everything.
    with tidelog.open(tmp_path / "store") as store:
        store.create_topic("t", partitions=2)
        member = store.consumer("t", group="g", lease_seconds=0.3)
        deadline = time.monotonic() + 1.2  # four leases
        while time.monotonic() < deadline:
            assert member.poll(timeout=0.01) == []
        newcomer = store.consumer("t", group="g", lease_seconds=0.3)
        member.poll(timeout=0)
        assert sorted(member.assignment() + newcomer.assignment()) == [0, 1]
        assert len(member.assignment()) == len(newcomer.assignment()) == 1
        newcomer.close()
        member.close()


def test_a_member_sleeping_in_poll_still_heartbeats(tmp_path: Path) -> None:
    # One long poll on a silent topic wakes every heartbeat interval to renew the lease.
    with tidelog.open(tmp_path / "store") as store:
        store.create_topic("t", partitions=2)
        member = store.consumer("t", group="g", lease_seconds=0.3)
        assert member.poll(timeout=1.0) == []
        newcomer = store.consumer("t", group="g", lease_seconds=0.3)
        member.poll(timeout=0)
        assert len(member.assignment()) == len(newcomer.assignment()) == 1
        newcomer.close()
        member.close()


def test_rebalances_move_between_the_single_and_the_general_path(store: tidelog.Store) -> None:
    # Two partitions: alone, the member reads both (general path); with a second member it
    # owns one (single-partition path); alone again, both. At-least-once: every message
    # is delivered, none twice to one member, and the commits follow.
    topic = store.create_topic("t", partitions=2)
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    a = store.consumer("t", group="g")
    for i in range(4):
        topic.append(b"a%d" % i, partition=i % 2)
    seen["a"] += [(m.partition, m.offset) for m in a.poll(timeout=1)]
    assert len(seen["a"]) == 4
    a.commit()  # so the newcomer starts after what a was given
    b = store.consumer("t", group="g")
    assert a.poll(timeout=0) == []  # picks up the rebalance
    assert len(a.assignment()) == len(b.assignment()) == 1
    for i in range(6):
        topic.append(b"b%d" % i, partition=i % 2)
    seen["a"] += [(m.partition, m.offset) for m in a.poll(timeout=1)]
    seen["b"] += [(m.partition, m.offset) for m in b.poll(timeout=1)]
    assert {p for p, _ in seen["a"][4:]} == set(a.assignment())
    assert {p for p, _ in seen["b"]} == set(b.assignment())
    assert len(seen["a"]) == 7 and len(seen["b"]) == 3
    b.close()  # commits what it was given
    for i in range(2):
        topic.append(b"c%d" % i, partition=i % 2)
    seen["a"] += [(m.partition, m.offset) for m in a.poll(timeout=1)]
    assert a.assignment() == [0, 1]
    everything = seen["a"] + seen["b"]
    assert sorted(everything) == [(p, o) for p in (0, 1) for o in range(6)]
    assert a.poll(timeout=0) == []
    assert a.committed() == {0: 6, 1: 6}
    a.close()


def test_a_stale_generation_is_noticed_before_fetching(store: tidelog.Store) -> None:
    # The member owns one partition of two; another member joins and leaves between two
    # polls. The next poll must see the new generation (one memory read) and re-sync, so
    # that its commit is accepted under the current generation.
    topic = store.create_topic("t", partitions=2)
    a = store.consumer("t", group="g")
    b = store.consumer("t", group="g")
    a.poll(timeout=0)
    generation = a._membership.generation
    b.close()
    topic.append(b"x", partition=0)
    topic.append(b"y", partition=1)
    got = a.poll(timeout=1)
    assert a._membership.generation > generation
    assert a.assignment() == [0, 1]
    assert sorted(m.value or b"" for m in got) == [b"x", b"y"]
    a.commit()
    assert a.committed() == {0: 1, 1: 1}
    a.close()


def test_a_paused_single_partition_returns_nothing(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    topic.append(b"one")
    with store.consumer("t", group="g") as c:
        c.pause(0)
        assert c.poll(timeout=0.05) == []
        c.resume(0)
        assert [m.value for m in c.poll(timeout=1)] == [b"one"]


def test_the_single_partition_path_steps_over_transaction_markers(store: tidelog.Store) -> None:
    # The last message of a fetch is followed by a commit marker: handing it out moves past
    # the marker too, so lag reaches zero.
    topic = store.create_topic("t")
    with store.producer(name="p") as producer, store.transaction(producer) as tx:
        tx.send("t", b"in-a-transaction", partition=0)
    assert topic.end_offset(0) == 2  # the message and its commit marker
    with store.consumer("t", group="g") as c:
        assert [m.value for m in c.poll(timeout=1)] == [b"in-a-transaction"]
        assert c.position(0) == 2
        assert c.poll(timeout=0) == []
        assert c.lag() == {0: 0}


def test_the_single_partition_path_continues_after_retention(tmp_path: Path) -> None:
    # Retention removed what the member was about to read: it continues from the new start.
    with tidelog.open(tmp_path / "store") as store:
        topic = store.create_topic("t", segment_bytes=4096, retention_bytes=4096)
        c = store.consumer("t", group="g")
        topic.append(b"first")
        assert [m.value for m in c.poll(timeout=1)] == [b"first"]
        c.pause(0)
        for i in range(300):
            topic.append(b"%03d" % i + b"." * 60)
        topic.enforce_retention()
        start = topic.start_offset(0)
        assert start > 1
        c.resume(0)
        # The poll that finds its position gone moves it to the start (and may return
        # nothing, as before); the next one reads from there.
        got = c.poll(max_messages=5, timeout=0) or c.poll(max_messages=5, timeout=0)
        assert [m.offset for m in got] == list(range(start, start + 5))
        c.close()


def test_recycled_messages_never_show_another_messages_fields(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    for i in range(3000):
        headers = {"i": b"%d" % i} if i % 3 == 0 else None
        key = b"k%d" % i if i % 2 else None
        topic.append(b"v%d" % i, key=key, headers=headers, partition=0, timestamp_ms=1000 + i)
    topic.append(b"other", partition=1)
    kept: list[Message] = []
    for round_ in range(3):
        # Each round makes and drops thousands of messages (iteration, read_batch, poll);
        # every tenth is kept, and the kept ones must keep their own fields.
        for m in topic.read(0, 0):
            if m.offset % 10 == round_:
                kept.append(m)
        batch = topic.read_batch(0, 0, max_messages=2000)
        assert [m.offset for m in batch] == list(range(2000))
        del batch
        gc.collect()
    with store.consumer("t", group="g") as c:
        polled = c.poll(max_messages=500, timeout=1)
        assert polled
    for m in kept + polled:
        if m.partition == 1:
            assert (m.offset, m.value, m.key, m.headers) == (0, b"other", None, {})
            continue
        i = m.offset
        assert m.topic == "t"
        assert m.value == b"v%d" % i
        assert m.key == (b"k%d" % i if i % 2 else None)
        assert m.headers == ({"i": b"%d" % i} if i % 3 == 0 else {})
        assert m.timestamp_ms == 1000 + i
    assert len(kept) == 900


def test_messages_compare_hash_and_print_as_before(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    topic.append(b"value", key=b"key", headers={"h": b"1"}, timestamp_ms=5)
    first = next(iter(topic.read(0, 0)))
    again = topic.read_batch(0, 0)[0]
    assert first == again and first is not again
    assert hash(first) == hash(again)
    assert first != "not a message"
    assert repr(first) == (
        'Message(topic="t", partition=0, offset=0, timestamp_ms=5, key=<3 bytes>, value=<5 bytes>)'
    )
    assert first.value is first.value  # the same bytes object on every access
    with pytest.raises(AttributeError):
        first.value = b"other"  # type: ignore[misc]


def test_recycled_messages_survive_the_cycle_collector(store: tidelog.Store) -> None:
    # A recycled message is not tracked by the cycle collector; one kept in a cycle (which
    # the collector frees) must still be freed without harm and not free its fields twice.
    topic = store.create_topic("t")
    for i in range(2000):
        topic.append(b"%d" % i)
    holders: list[list[object]] = []
    for m in topic.read(0, 0):
        cycle: list[object] = [m]
        cycle.append(cycle)
        holders.append(cycle)
    del cycle, m
    values = [holder[0].value for holder in holders if isinstance(holder[0], Message)]
    del holders
    gc.collect()
    assert values == [b"%d" % i for i in range(2000)]
    assert [m.value for m in topic.read(0, 0)] == values


def test_read_messages_returns_what_read_batch_does(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    for i in range(50):
        key = b"k%d" % i if i % 2 else None
        topic.append(b"v%d" % i, key=key, headers={"n": b"%d" % i}, partition=1)
    topic.append(None, key=b"gone", partition=1)  # a tombstone
    for offset, limit in [(0, 500), (0, 7), (13, 1), (40, 100), (51, 10), (0, 0)]:
        messages, after = topic.read_messages(1, offset, limit)
        batch = topic.read_batch(1, offset, max_messages=limit)
        assert messages == list(batch)
        assert after == batch.next_offset
        assert all(type(m) is Message and m.partition == 1 for m in messages)
    messages, after = topic.read_messages(1, 50, 10)
    assert [(m.key, m.value) for m in messages] == [(b"gone", None)] and after == 51
    assert topic.read_messages(0, 0, 10) == ([], 0)


def test_read_messages_hides_open_transactions_as_read_batch_does(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    topic.append(b"before")
    with store.producer(name="p") as producer:
        producer.begin_transaction()
        producer.send("t", b"open", partition=0)
        producer.flush()
        assert topic.end_offset(0) == 2
        messages, after = topic.read_messages(0, 0, 10)
        assert [m.value for m in messages] == [b"before"] and after == 1
        producer.commit_transaction()
    messages, after = topic.read_messages(0, 0, 10)
    assert [m.value for m in messages] == [b"before", b"open"] and after == 3


def test_read_messages_refuses_bad_arguments_as_read_batch_does(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    topic.append(b"x")
    with pytest.raises(tidelog.OffsetOutOfRangeError, match="out of range"):
        topic.read_messages(0, 5, 10)
    with pytest.raises(tidelog.OffsetOutOfRangeError):
        topic.read_messages(0, -1, 10)
    with pytest.raises(tidelog.PartitionNotFoundError):
        topic.read_messages(3, 0, 10)
    with pytest.raises(tidelog.InvalidConfigError, match="max_messages"):
        topic.read_messages(0, 0, -1)
    with pytest.raises(TypeError, match="offset"):
        topic.read_messages(0, "0", 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_messages"):
        topic.read_messages(0, 0, 1.5)  # type: ignore[arg-type]


def test_wait_messages_is_wait_then_ticket_then_read_messages(store: tidelog.Store) -> None:
    # One native call for a waking member: None when nothing came in time, else what
    # read_messages returns and a ticket taken before the read.
    topic = store.create_topic("t", partitions=2)
    ticket = topic.ticket()
    assert topic.wait_messages(ticket, 0, 0, 10, 0) is None
    assert topic.wait_messages(ticket, 0, 0, 10, 0.002, 50) is None  # spun, slept, nothing
    topic.append(b"a", partition=0)
    topic.append(b"b", partition=0)
    woken = topic.wait_messages(ticket, 0, 0, 10, 5, 50)
    assert woken is not None
    messages, after, new_ticket = woken
    assert [(m.offset, m.value) for m in messages] == [(0, b"a"), (1, b"b")]
    assert after == 2
    assert new_ticket == topic.ticket() != ticket
    # An append to another partition rings too: an empty read, and the ticket to wait on.
    topic.append(b"c", partition=1)
    woken = topic.wait_messages(new_ticket, 0, 2, 10, 5)
    assert woken is not None
    assert woken[0] == [] and woken[1] == 2 and woken[2] == topic.ticket()
    # max_messages bounds the read as in read_messages.
    woken = topic.wait_messages(ticket, 0, 0, 1, 5)
    assert woken is not None and len(woken[0]) == 1 and woken[1] == 1


def test_wait_messages_refuses_bad_arguments(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    ticket = topic.ticket()
    topic.append(b"x")
    # As read_messages and wait do, before waiting.
    with pytest.raises(tidelog.InvalidConfigError, match="max_messages"):
        topic.wait_messages(ticket, 0, 0, -1, 1)
    with pytest.raises(tidelog.OffsetOutOfRangeError):
        topic.wait_messages(ticket, 0, -1, 10, 1)
    with pytest.raises(tidelog.PartitionNotFoundError):
        topic.wait_messages(ticket, 3, 0, 10, 1)
    with pytest.raises(tidelog.InvalidConfigError, match="spin_us"):
        topic.wait_messages(ticket, 0, 0, 10, 1, -1)
    with pytest.raises(TypeError, match="ticket"):
        topic.wait_messages("0", 0, 0, 10, 1)  # type: ignore[arg-type]
    # An offset past the end is found by the read, after the wait.
    with pytest.raises(tidelog.OffsetOutOfRangeError, match="out of range"):
        topic.wait_messages(ticket, 0, 5, 10, 1)


class _RebalancingTopic:
    """A member's topic whose first ``wait_messages`` lets another member join (a new
    generation) and append a message, as if both happened while it waited."""

    def __init__(self, topic: tidelog.Topic, join: Any) -> None:
        self._topic = topic
        self._join = join
        self.calls = 0

    def wait_messages(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            self._join()
            self._topic.append(b"m")
        return self._topic.wait_messages(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._topic, name)


def test_what_a_wake_up_read_across_a_rebalance_is_fetched_again_once(
    store: tidelog.Store,
) -> None:
    # The wait and the read are one call, so the generation is looked at after the read:
    # a rebalance meanwhile drops what was read (the position has not moved), re-syncs and
    # fetches again. The message comes exactly once, under the new generation, and its
    # commit is accepted.
    topic = store.create_topic("t", partitions=1)
    a = store.consumer("t", group="g", spin_us=0)
    generation = a._membership.generation
    others: list[tidelog.Consumer] = []
    wrapped = _RebalancingTopic(topic, lambda: others.append(store.consumer("t", group="g")))
    a._topic = wrapped  # type: ignore[assignment]
    got = a.poll(timeout=5)
    assert wrapped.calls == 1
    assert a._membership.generation > generation
    assert a.assignment() == [0]  # sticky: the newcomer gets nothing of one partition
    assert [(m.offset, m.value) for m in got] == [(0, b"m")]
    assert a.poll(timeout=0) == []
    a.commit()
    assert a.committed() == {0: 1}
    for other in others:
        other.close()
    a.close()


def test_a_member_of_several_partitions_waits_without_the_combined_call(
    store: tidelog.Store,
) -> None:
    # wait_messages reads one partition: a member owning two waits on the doorbell and
    # fetches both, as before.
    topic = store.create_topic("t", partitions=2)
    a = store.consumer("t", group="g", spin_us=0)
    wrapped = _RebalancingTopic(topic, lambda: None)
    a._topic = wrapped  # type: ignore[assignment]
    assert a.poll(timeout=0.01) == []
    assert wrapped.calls == 0
    a.close()
