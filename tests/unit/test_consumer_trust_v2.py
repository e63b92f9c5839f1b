"""What a consumer group hands out across rebalances and failed fetches (version 2: trust).

A member notices rebalances only when it polls. Between two of its polls the group may go
through several generations; if a partition it owns now was another member's in one of
them, that member may have handed out and committed messages past this member's position,
so this member must resume from the group's commits, as if the partition had been revoked
and assigned again. A transaction holding input from a partition that was lost, even if
it came back, must fail. And a fetch over several partitions that fails part way must not
move past what it read but did not hand out.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import pytest
import tidelog


def fill(topic: tidelog.Topic, n: int) -> None:
    for i in range(n):
        topic.append(b"%d" % i, partition=i % topic.partitions)


def step(store: tidelog.Store, consumer: tidelog.Consumer, producer: Any) -> list[Any]:
    """One poll, and for exactly-once the transaction that commits it (outputs to "out")."""
    got = consumer.poll(max_messages=100, timeout=0)
    if consumer.delivery == "exactly-once" and got:
        with store.transaction(producer, consumer) as tx:
            for m in got:
                tx.send("out", b"%d:%d" % (m.partition, m.offset))
    return [(m.partition, m.offset) for m in got]


@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once", "exactly-once"])
def test_a_member_that_slept_through_a_rebalance_resumes_from_the_groups_commits(
    store: tidelog.Store, delivery: Any
) -> None:
    # a owns both partitions; b joins (taking partition 1), hands out and commits what a
    # had not read yet, and leaves, all while a does not poll. a's next poll sees the
    # generation two ahead with the same assignment: it must not read partition 1 again
    # from where it left it.
    topic = store.create_topic("t", partitions=2)
    store.create_topic("out")
    fill(topic, 10)
    handed: list[tuple[int, int]] = []
    with store.producer(name="a") as pa, store.producer(name="b") as pb:
        a = store.consumer("t", group="g", delivery=delivery)
        handed += step(store, a, pa)
        if delivery == "at-least-once":
            a.commit()
        fill(topic, 10)
        b = store.consumer("t", group="g", delivery=delivery)
        assert b.assignment() == [1]
        handed += step(store, b, pb)
        b.close()
        handed += step(store, a, pa)
        assert a.assignment() == [0, 1]
        a.close()
    everything = [(p, o) for p in (0, 1) for o in range(10)]
    if delivery == "at-least-once":
        assert set(handed) == set(everything)
    else:
        assert sorted(handed) == everything, "a message was handed out twice"
    if delivery == "exactly-once":
        outputs = [m.value or b"" for m in store.topic("out").read(0)]
        assert sorted(outputs) == sorted(b"%d:%d" % po for po in everything)


def test_a_member_whose_lease_ran_out_resumes_from_the_groups_commits(tmp_path: Path) -> None:
    # The single-partition path: a stalls past its lease, b takes the partition, hands
    # out and commits, and leaves; a's next poll joins again and must not hand out what b
    # did (at-most-once).
    with tidelog.open(tmp_path / "store") as store:
        topic = store.create_topic("t")
        fill(topic, 5)
        a = store.consumer("t", group="g", delivery="at-most-once", lease_seconds=30)
        assert [m.offset for m in a.poll(timeout=0)] == list(range(5))
        fill(topic, 5)
        # a's lease runs out (as when it stalls for longer than the lease).
        lease = a._membership._lease
        assert lease is not None
        assert a._membership._group.release_lease(*lease)
        b = store.consumer("t", group="g", delivery="at-most-once", lease_seconds=30)
        assert b.assignment() == [0]
        assert [m.offset for m in b.poll(timeout=0)] == list(range(5, 10))
        b.close()
        fill(topic, 5)
        assert [m.offset for m in a.poll(timeout=0)] == list(range(10, 15))
        a.close()


class _TakenOverTopic:
    """A member's topic whose first ``wait_messages`` runs ``meanwhile`` first, as if it
    happened while the member waited."""

    def __init__(self, topic: tidelog.Topic, meanwhile: Any) -> None:
        self._topic = topic
        self._meanwhile = meanwhile
        self.calls = 0

    def wait_messages(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            self._meanwhile()
        return self._topic.wait_messages(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._topic, name)


def test_a_wake_up_after_the_partition_went_away_and_back_resumes_from_the_commits(
    store: tidelog.Store,
) -> None:
    # While a waits (one partition: the combined wait and read), its lease runs out, b
    # takes the partition, hands out and commits m1, and leaves; then m2 comes. What a's
    # wake-up read (m1, m2) is dropped across the rebalance; the fetch after it must start
    # at the group's commit, not at a's old position (at-most-once: m1 once).
    topic = store.create_topic("t")
    a = store.consumer("t", group="g", delivery="at-most-once", spin_us=0)
    topic.append(b"m0")
    assert [m.value for m in a.poll(timeout=0)] == [b"m0"]
    handed_to_b: list[bytes | None] = []

    def take_over() -> None:
        lease = a._membership._lease
        assert lease is not None and a._membership._group.release_lease(*lease)
        b = store.consumer("t", group="g", delivery="at-most-once")
        topic.append(b"m1")
        handed_to_b.extend(m.value for m in b.poll(timeout=0))
        b.close()
        topic.append(b"m2")

    wrapped = _TakenOverTopic(topic, take_over)
    a._topic = wrapped  # type: ignore[assignment]
    got = a.poll(timeout=5)
    assert wrapped.calls == 1
    assert handed_to_b == [b"m1"]
    assert [m.value for m in got] == [b"m2"]
    assert a.committed() == {0: 3}
    a.close()


def test_an_at_most_once_commit_racing_a_join_hands_nothing_out_twice(
    store: tidelog.Store,
) -> None:
    # b joins (taking partition 1) and reads the group's commits after a checked its
    # generation but before a's commit landed: b hands out partition 1 from the old
    # commit, so a, seeing the generation moved once its commit is written, must not.
    topic = store.create_topic("t", partitions=2)
    fill(topic, 4)
    a = store.consumer("t", group="g", delivery="at-most-once")
    handed: list[tuple[int, int]] = []
    others: list[tidelog.Consumer] = []
    commit = a._commit_record

    def racing(offsets: dict[int, int], metadata: str, generation: int) -> None:
        if not others:
            others.append(store.consumer("t", group="g", delivery="at-most-once"))
            handed.extend((m.partition, m.offset) for m in others[0].poll(timeout=0))
        commit(offsets, metadata, generation)

    a._commit_record = racing
    handed += [(m.partition, m.offset) for m in a.poll(timeout=0)]
    handed += [(m.partition, m.offset) for m in a.poll(timeout=0)]
    assert sorted(handed) == [(p, o) for p in (0, 1) for o in range(2)], "twice or lost"
    others[0].close()
    a.close()


def test_an_exactly_once_commit_racing_a_join_aborts(store: tidelog.Store) -> None:
    # b joins and finds no commit of a's pending yet (so it does not wait for a's
    # transaction), processes partition 1 and commits, all between a's ownership check
    # and a's commit records entering a's transaction: a's transaction must abort.
    inputs = store.create_topic("in", partitions=2)
    store.create_topic("out")
    fill(inputs, 2)
    raced: list[tidelog.Consumer] = []
    with store.producer(name="x") as px, store.producer(name="y") as py:
        a = store.consumer("in", group="g", delivery="exactly-once")
        offsets = a._offsets
        send_commit = offsets.send_commit

        def racing(*args: Any) -> None:
            if not raced:
                raced.append(store.consumer("in", group="g", delivery="exactly-once"))
                assert step(store, raced[0], py) == [(1, 0)]
            send_commit(*args)

        offsets.send_commit = racing  # type: ignore[method-assign,assignment]
        msgs = a.poll(timeout=0)
        assert len(msgs) == 2
        with pytest.raises(tidelog.RebalanceError), store.transaction(px, a) as tx:
            for m in msgs:
                tx.send("out", b"%d:%d" % (m.partition, m.offset))
        assert step(store, a, px) == [(0, 0)]
        raced[0].close()
        a.close()
    outputs = sorted(m.value or b"" for m in store.topic("out").read(0))
    assert outputs == [b"0:0", b"1:0"], "each input processed once"


def test_a_transaction_over_a_partition_lost_and_regained_aborts(store: tidelog.Store) -> None:
    # Inside a transaction the member polls, loses a partition it read from, and gets it
    # back; meanwhile the other member processed and committed that partition's input.
    inputs = store.create_topic("in", partitions=2)
    store.create_topic("out")
    for p in (0, 1):
        inputs.append(b"in-%d" % p, partition=p)
    with store.producer(name="x") as px, store.producer(name="y") as py:
        first = store.consumer("in", group="g", delivery="exactly-once")
        msgs = first.poll(timeout=1)
        assert {m.partition for m in msgs} == {0, 1}
        tx = store.transaction(px, first)
        for m in msgs:
            tx.send("out", b"%d:%d" % (m.partition, m.offset))
        second = store.consumer("in", group="g", delivery="exactly-once")
        first.poll(timeout=0)  # picks up the rebalance: one partition goes
        assert len(first.assignment()) == 1
        assert step(store, second, py) == [(second.assignment()[0], 0)]
        second.close()
        first.poll(timeout=0)  # and comes back
        assert first.assignment() == [0, 1]
        with pytest.raises(tidelog.RebalanceError):
            tx.commit()
        # The rest comes again and is processed once.
        step(store, first, px)
        first.close()
    outputs = sorted(m.value or b"" for m in store.topic("out").read(0))
    assert outputs == [b"0:0", b"1:0"], "each input processed once"


def test_a_fetch_failing_part_way_moves_past_nothing_it_read(tmp_path: Path) -> None:
    # A read of partition 1 stops at damage, and the next read there raises: a poll that
    # read partition 0 first in its round did not hand that out, so later polls (once the
    # application set partition 1 aside) must deliver it, not skip it.
    with tidelog.open(tmp_path, index_interval_bytes=256) as store:
        t = store.create_topic("t", partitions=2)
        for i in range(5):
            t.append(b"ok %d" % i, partition=0)
        for i in range(300):
            t.append(b"job %05d" % i, partition=1)
    log = Path(sorted(glob.glob(f"{tmp_path}/topics/t/1/*.log"))[-1])
    with open(log, "r+b") as f:
        f.seek(2000)
        byte = f.read(1)[0]
        f.seek(2000)
        f.write(bytes([byte ^ 4]))
    with tidelog.open(tmp_path) as store:
        t = store.topic("t")
        consumer = store.consumer("t", group="g")
        got = consumer.poll(max_messages=3, timeout=0)  # partition 0 first, up to the limit
        got += consumer.poll(max_messages=1000, timeout=0)  # 1 up to the damage, then 0
        assert [m.value for m in got if m.partition == 0] == [b"ok %d" % i for i in range(5)]
        t.append(b"ok 5", partition=0)
        with pytest.raises(tidelog.CorruptRecordError):
            consumer.poll(max_messages=1000, timeout=0)  # 0 first this time, then 1 raises
        consumer.pause(1)  # the application sets the damaged partition aside
        t.append(b"ok 6", partition=0)
        got = consumer.poll(max_messages=1000, timeout=0)
        assert [m.value for m in got] == [b"ok 5", b"ok 6"]
        consumer.close()
        with store.consumer("t", group="g") as again:
            assert again.committed()[0] == 7
