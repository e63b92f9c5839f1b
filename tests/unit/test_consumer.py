from __future__ import annotations

import collections
import enum
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import tidelog


def fill(topic: tidelog.Topic, n: int) -> None:
    for i in range(n):
        topic.append(b"%d" % i, partition=i % topic.partitions)


def test_poll_commit_and_resume(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=3)
    fill(topic, 30)
    with store.consumer("t", group="g") as consumer:
        assert consumer.assignment() == [0, 1, 2]
        got = consumer.poll(max_messages=100, timeout=1)
        assert sorted(int(m.value or b"") for m in got) == list(range(30))
        assert consumer.committed() == {}  # at-least-once: not until we move past them
        assert consumer.poll(timeout=0) == []
        assert consumer.committed() == {0: 10, 1: 10, 2: 10}
        assert consumer.lag() == {0: 0, 1: 0, 2: 0}
    fill(topic, 3)
    with store.consumer("t", group="g") as again:
        assert sorted(m.offset for m in again.poll(timeout=1)) == [10, 10, 10]


def test_close_commits_what_was_delivered(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 5)
    with store.consumer("t", group="g") as consumer:
        assert len(consumer.poll(timeout=1)) == 5
    with store.consumer("t", group="g") as consumer:
        assert consumer.committed() == {0: 5}
        assert consumer.poll(timeout=0) == []


def test_iterating_commits_only_what_it_handed_out(store: tidelog.Store) -> None:
    """A fetch fills iteration's buffer; at-least-once commits (close, commit()) stop at the
    first message still in it, else a member that iterated one message and closed would
    have committed, and so skipped for the group, the rest of its fetch."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    consumer = store.consumer("t", group="g")
    it = iter(consumer)
    first = next(it)
    consumer.close()
    other = 1 - first.partition  # fetched too, none of it handed out
    with store.consumer("t", group="g") as again:
        assert again.committed() == {first.partition: first.offset + 1, other: 0}
        got = again.poll(max_messages=100, timeout=1)
        assert sorted((m.partition, m.offset) for m in got) == sorted(
            (p, o) for p in (0, 1) for o in range(5) if (p, o) != (first.partition, first.offset)
        )
    # commit() in the middle of the buffer, then the rest: nothing skipped, nothing twice.
    one = store.create_topic("one", partitions=1)
    fill(one, 10)
    with store.consumer("one", group="g") as consumer:
        it = iter(consumer)
        assert [next(it).offset for _ in range(3)] == [0, 1, 2]
        consumer.commit()
        assert consumer.committed() == {0: 3}
        assert [next(it).offset for _ in range(7)] == list(range(3, 10))
        consumer.commit()
        assert consumer.committed() == {0: 10}


def test_at_most_once_commits_before_hand_out(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 4)
    consumer = store.consumer("t", group="g", delivery="at-most-once")
    assert len(consumer.poll(max_messages=3, timeout=1)) == 3
    assert consumer.committed() == {0: 3}


def test_at_most_once_close_leaves_what_it_did_not_hand_out(store: tidelog.Store) -> None:
    """The fetch's commit moved past messages iterating had not handed out; a clean close
    moves it back to the first of them (a commit of the same generation), so the next
    member gets them (before, they were lost)."""
    topic = store.create_topic("t")
    fill(topic, 10)
    consumer = store.consumer("t", group="g", delivery="at-most-once")
    it = iter(consumer)
    assert [next(it).offset for _ in range(3)] == [0, 1, 2]
    assert consumer.committed() == {0: 10}  # committed when fetched
    consumer.close()
    with store.consumer("t", group="g", delivery="at-most-once") as again:
        assert again.committed() == {0: 3}
        assert [m.offset for m in again.poll(max_messages=100, timeout=0)] == list(range(3, 10))


def test_at_most_once_close_of_a_fenced_member_keeps_the_new_owners_commit(
    store: tidelog.Store,
) -> None:
    """A member that lost a partition in a rebalance it has not seen closes with fetched
    messages of it not handed out: the partition's commit is no longer the one its fetch
    wrote (the new owner committed), so it writes no commit back, and the new owner's
    commit stands."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    assert next(iter(first)).offset == 0
    assert first.committed() == {0: 5, 1: 5}
    second = store.consumer("t", group="g")  # a rebalance first has not seen
    (lost,) = second.assignment()
    second.commit({lost: 4})
    first.close()
    assert second.committed()[lost] == 4
    second.close()


def test_at_most_once_iteration_loses_nothing_when_its_partitions_move(
    store: tidelog.Store,
) -> None:
    """A fetch's commit covers messages iterating has not handed out yet; a member that
    joins meanwhile starts after them, so the member that fetched them hands them out
    (the buffer is only ever synced empty): each message exactly once between the two."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    it = iter(first)
    handed = [next(it)]
    second = store.consumer("t", group="g", delivery="at-most-once")
    assert len(second.assignment()) == 1
    while first.ready_messages:
        handed.append(next(it))
    handed += first.poll(max_messages=100, timeout=0)  # sees the rebalance
    handed += second.poll(max_messages=100, timeout=0)
    assert sorted((m.partition, m.offset) for m in handed) == [
        (p, o) for p in (0, 1) for o in range(5)
    ]
    first.close()
    second.close()


def _resumed_and_split_once(
    first: tidelog.Consumer, second: tidelog.Consumer, kept: int, handed: list[tidelog.Message]
) -> None:
    """``first`` resumes the partition it kept after ``second`` joined: between what was
    ``handed`` out before and what each polls now, the two partitions' 5 messages each went
    out once. When ``second`` closes, ``first`` gets the other partition back, from
    ``second``'s commit: nothing more to hand out."""
    first.resume(kept)
    handed += first.poll(max_messages=100, timeout=0)
    handed += second.poll(max_messages=100, timeout=1)
    assert sorted((m.partition, m.offset) for m in handed) == [
        (p, o) for p in (0, 1) for o in range(5)
    ]
    second.close()
    assert first.poll(max_messages=100, timeout=0) == []


def test_at_most_once_pause_gives_back_what_it_holds(store: tidelog.Store) -> None:
    """What a pause holds of an at-most-once fetch was committed when fetched: the pause
    moves the commit back to it, so a member that takes the partition before it is resumed
    starts there (before, the revocation dropped it: handed out by nobody)."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    handed = [next(iter(first))]
    assert first.committed() == {0: 5, 1: 5}
    first.pause(0)
    first.pause(1)  # both partitions' fetched messages are held now
    assert first.committed() == {handed[0].partition: 1, 1 - handed[0].partition: 0}
    assert first.position(handed[0].partition) == 1
    second = store.consumer("t", group="g", delivery="at-most-once")
    assert first.poll(timeout=0) == []  # sees the rebalance
    (kept,) = first.assignment()
    assert len(second.assignment()) == 1
    _resumed_and_split_once(first, second, kept, handed)
    first.close()


def test_at_most_once_pause_after_an_unseen_rebalance_moves_no_commit_back(
    store: tidelog.Store,
) -> None:
    """A member that pauses after a rebalance it has not seen yet cannot give back once the
    new owner fetched from the partition: it may have handed out from the fetch's commit
    already, and moving that commit back would make the group hand those out twice. The
    give-back finds the new owner's commit, not its own, and writes nothing."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    handed = [next(iter(first))]  # fetched offsets 0..4 of both partitions
    fill(topic, 10)
    second = store.consumer("t", group="g", delivery="at-most-once")
    (lost,) = second.assignment()
    handed += second.poll(max_messages=2, timeout=0)
    assert second.committed()[lost] == 7
    first.pause(lost)
    assert second.committed()[lost] == 7
    handed += first.poll(max_messages=100, timeout=0)  # the rest of its fetch
    handed += first.poll(max_messages=100, timeout=0)  # sees the rebalance, fetches on
    handed += second.poll(max_messages=100, timeout=0)
    assert max(collections.Counter((m.partition, m.offset) for m in handed).values()) == 1
    first.close()
    second.close()


def _handed_once(handed: list[tidelog.Message], partitions: int, each: int) -> None:
    """Every message of ``partitions`` partitions of ``each`` went out exactly once."""
    assert sorted((m.partition, m.offset) for m in handed) == [
        (p, o) for p in range(partitions) for o in range(each)
    ]


def _drain(consumer: tidelog.Consumer) -> list[tidelog.Message]:
    got: list[tidelog.Message] = []
    while more := consumer.poll(max_messages=100, timeout=0):
        got += more
    return got


def test_at_most_once_close_after_an_unseen_takeover_gives_back(store: tidelog.Store) -> None:
    """A member closes holding fetched messages of a partition that moved in a rebalance it
    has not seen (it never polled since): the new owner has not read its start yet, so the
    give-back counts and the new owner starts there (before, the committer refused the stale
    generation and those messages went out to nobody)."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    handed = [next(iter(first))]  # fetched (and committed) both partitions' 5 messages
    assert first.committed() == {0: 5, 1: 5}
    second = store.consumer("t", group="g", delivery="at-most-once")
    assert len(second.assignment()) == 1  # one of first's partitions moved
    first.close()
    handed += _drain(second)
    _handed_once(handed, 2, 5)
    second.close()


def test_at_most_once_pause_after_an_unseen_takeover_gives_back(store: tidelog.Store) -> None:
    """As above with a pause of the partition that moved: its held messages go to the new
    owner; the member that paused hands out the rest of its fetch and nothing twice."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    it = iter(first)
    handed = [next(it)]
    second = store.consumer("t", group="g", delivery="at-most-once")
    (moved,) = second.assignment()
    first.pause(moved)
    while first.ready_messages:  # the rest of its fetch, of the partition it kept
        handed.append(next(it))
    handed += first.poll(max_messages=100, timeout=0)  # sees the rebalance
    assert first.assignment() == [1 - moved]
    handed += _drain(second)
    _handed_once(handed, 2, 5)
    first.close()
    second.close()


def test_at_most_once_rebalance_between_commit_and_hand_out_gives_back(
    store: tidelog.Store,
) -> None:
    """A member joins right after an at-most-once fetch's commit is written, before the
    fetch is handed out: the member that fetched hands out nothing and gives the commit
    back, so the new owner starts at the fetch's first message (before, the commit stood
    and the new owner started past them: handed out by nobody)."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    joined: list[tidelog.Consumer] = []
    commit = first._commit_record

    def commit_then_join(offsets: dict[int, int], metadata: str, generation: int) -> None:
        commit(offsets, metadata, generation)
        if not joined:
            joined.append(store.consumer("t", group="g", delivery="at-most-once"))

    first._commit_record = commit_then_join
    assert first.poll(max_messages=100, timeout=0) == []
    (second,) = joined
    assert len(first.assignment()) == len(second.assignment()) == 1
    _handed_once(_drain(first) + _drain(second), 2, 5)
    first.close()
    second.close()


def test_at_most_once_give_back_after_the_new_owner_read_is_passed_over(
    store: tidelog.Store,
) -> None:
    """Once the new owner has read its start (its first poll, which commits its positions
    in its generation) a stale member's give-back would have the group hand out twice what
    the new owner hands out from there: it is passed over, and what the stale member held
    of that partition is lost, as at-most-once allows. Of the partition it kept, nobody
    read anything since: that give-back counts."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 20)
    first = store.consumer("t", group="g", delivery="at-most-once")
    handed = [next(iter(first))]  # fetched 0..9 of both partitions
    fill(topic, 10)
    second = store.consumer("t", group="g", delivery="at-most-once")
    (moved,) = second.assignment()
    handed += second.poll(max_messages=2, timeout=0)
    assert second.committed()[moved] == 12
    first.close()
    assert second.committed()[moved] == 12
    handed += _drain(second)
    lost = {(moved, o) for o in range(10)} - {(handed[0].partition, handed[0].offset)}
    everything = {(p, o) for p in (0, 1) for o in range(15)}
    assert sorted((m.partition, m.offset) for m in handed) == sorted(everything - lost)
    second.close()


def test_at_most_once_give_back_admitted_before_a_join_counts_for_the_joiner(
    store: tidelog.Store,
) -> None:
    """A member closes holding fetched messages, in its generation: the committer admits its
    give-back (the group has not moved on), and the write is still in flight (between the
    native committer's check and its publication: no lock of the group is held there) when
    a second member joins and polls. The joiner claims the partition at the fetch's commit;
    its claim, appended after the give-back, is of a newer generation and fences it, so the
    messages given back went out to nobody, although the joiner had not read its start
    before the give-back was admitted.

    The write in flight is made by hand: the check as the committer makes it, a wait for the
    joiner (which a give-back holding the group's lock makes wait in its join), then the
    write the committer would have made."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    handed = [next(iter(first))]  # fetched (and committed) both partitions' 5 messages
    unfenced = first._offsets.committer(first.group, first._topic, first._topic.incarnation).commit
    joined: list[tidelog.Consumer] = []
    joiners: list[threading.Thread] = []

    def join_and_poll() -> None:
        second = store.consumer("t", group="g", delivery="at-most-once")
        joined.append(second)
        handed.extend(second.poll(max_messages=100, timeout=0))

    def admitted_then_written(offsets: dict[int, int], metadata: str, generation: int) -> None:
        if first._membership.read_generation() != generation:
            raise tidelog.RebalanceError("refused, as the committer refuses it")
        joiner = threading.Thread(target=join_and_poll)
        joiners.append(joiner)
        joiner.start()
        joiner.join(0.5)  # finishes unless the give-back holds the group's lock
        unfenced(offsets, metadata, generation)
        first._commit_record = real

    real, first._commit_record = first._commit_record, admitted_then_written
    first.close()
    # The joiner's poll ends before its consumer is used here (one thread at a time).
    (joiner,) = joiners
    joiner.join()
    (second,) = joined
    handed += _drain(second)  # and the partition the first kept, once it left
    _handed_once(handed, 2, 5)
    second.close()


def test_at_most_once_commit_before_the_first_poll_is_where_it_starts(
    store: tidelog.Store,
) -> None:
    """A commit a member makes of a partition it was given, before its first poll, is where
    that poll starts (a Kafka consumer reads the committed offset at its first poll)."""
    topic = store.create_topic("t", partitions=1)
    fill(topic, 10)
    with store.consumer("t", group="g", delivery="at-most-once") as consumer:
        consumer.commit({0: 7})
        assert [m.offset for m in consumer.poll(max_messages=100, timeout=0)] == [7, 8, 9]
    with store.consumer("t", group="g", delivery="at-most-once") as consumer:
        consumer.commit({0: 2})  # back, too
        assert [m.offset for m in consumer.poll(max_messages=100, timeout=0)] == list(range(2, 10))


def test_at_most_once_fetch_commit_written_after_a_joiner_placed_is_handed_out_once(
    store: tidelog.Store,
) -> None:
    """A member's at-most-once fetch commit is admitted by the committer (the group has not
    moved on) and still being written when a second member joins and places its partitions
    from the commits without it; the write lands, then the joiner polls (claims). The
    fetching member sees the rebalance once its commit is written and hands nothing out;
    the joiner must then start at the fetch's first message, as it was placed (before the
    claim re-read the commits, it did).

    The write in flight is made by hand: the check as the committer makes it, the join,
    then the write the committer would have made, then the joiner's first poll."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    unfenced = first._offsets.committer(first.group, first._topic, first._topic.incarnation).commit
    joined: list[tidelog.Consumer] = []
    handed: list[tidelog.Message] = []

    def admitted_then_written(offsets: dict[int, int], metadata: str, generation: int) -> None:
        if first._membership.read_generation() != generation:
            raise tidelog.RebalanceError("refused, as the committer refuses it")
        first._commit_record = real
        joined.append(store.consumer("t", group="g", delivery="at-most-once"))
        unfenced(offsets, metadata, generation)
        handed.extend(joined[0].poll(max_messages=100, timeout=0))

    real, first._commit_record = first._commit_record, admitted_then_written
    handed += first.poll(max_messages=100, timeout=0)
    (second,) = joined
    handed += _drain(first) + _drain(second)
    first.close()
    handed += _drain(second)
    _handed_once(handed, 2, 5)
    second.close()


def test_at_most_once_give_back_counts_while_the_new_owner_has_the_partition_paused(
    store: tidelog.Store,
) -> None:
    """A member closes holding fetched messages of a partition that moved in a rebalance it
    has not seen; the new owner paused that partition before its first poll, so it has not
    read from it: the give-back counts, and the new owner hands them out after resume.
    (Before, its first poll claimed every partition placed, paused too, and the claim
    fenced the give-back: those messages went out to nobody.)"""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g", delivery="at-most-once")
    handed = [next(iter(first))]  # fetched (and committed) both partitions' 5 messages
    second = store.consumer("t", group="g", delivery="at-most-once")
    (moved,) = second.assignment()
    second.pause(moved)
    assert second.poll(max_messages=100, timeout=0) == []
    first.close()
    second.resume(moved)
    handed += _drain(second)
    _handed_once(handed, 2, 5)
    second.close()


def test_at_most_once_give_back_counts_for_a_partition_the_new_owners_poll_did_not_reach(
    store: tidelog.Store,
) -> None:
    """As above, with the new owner's first poll filled from its other partition before the
    round reached this one: it has not read from it, so the give-back counts. (Before, that
    poll claimed both partitions, and the claim fenced the give-back.)"""
    topic = store.create_topic("t", partitions=4)
    fill(topic, 20)
    first = store.consumer("t", group="g", delivery="at-most-once")
    handed = [next(iter(first))]  # fetched (and committed) every partition's 5 messages
    fill(topic, 20)
    second = store.consumer("t", group="g", delivery="at-most-once")
    assert second.assignment() == [2, 3]
    handed += second.poll(max_messages=1, timeout=0)
    assert [(m.partition, m.offset) for m in handed[1:]] == [(2, 5)]
    first.close()
    handed += _drain(second)
    # Partition 2's held messages are lost (its new owner read from it first); not 3's.
    assert sorted(m.offset for m in handed if m.partition == 3) == list(range(10))
    assert len(handed) == len({(m.partition, m.offset) for m in handed})
    second.close()


def test_explicit_commit_and_metadata(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    with store.consumer("t", group="g") as consumer:
        consumer.commit({0: 2, 1: 4}, metadata="checkpoint")
        assert consumer.committed() == {0: 2, 1: 4}
        with pytest.raises(tidelog.RebalanceError, match="not"):
            consumer.commit({5: 1})
        with pytest.raises(tidelog.InvalidConfigError):
            consumer.commit({0: -1})


class Partition(enum.IntEnum):
    FIRST = 0
    SECOND = 1


def test_commits_the_common_path_declines_take_the_checked_one(store: tidelog.Store) -> None:
    # A commit of exact ints on owned partitions is one native call; every other shape
    # goes through the Python checks, which accept or explain it as before.
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    with store.consumer("t", group="g") as consumer:
        consumer.commit({Partition.SECOND: 3})  # an int subclass is a partition
        consumer.commit(collections.OrderedDict([(0, 2)]))  # a dict subclass is offsets
        assert consumer.committed() == {0: 2, 1: 3}
        bad: list[tuple[Any, type[Exception] | None]] = [
            ({0: 4, 7: 1}, tidelog.RebalanceError),  # partly someone else's: nothing written
            ({True: 1}, TypeError),
            ({0: 1.0}, TypeError),
            ({0: -1}, tidelog.InvalidConfigError),
            ({1: 99}, tidelog.OffsetOutOfRangeError),
            ({}, None),
        ]
        for offsets, error in bad:
            if error is None:
                consumer.commit(offsets)  # nothing to commit
            else:
                with pytest.raises(error):
                    consumer.commit(offsets)
            assert consumer.committed() == {0: 2, 1: 3}, offsets
        consumer.commit({0: 5, 1: 5})
        assert consumer.committed() == {0: 5, 1: 5}
    with pytest.raises(tidelog.StoreClosedError):
        consumer.commit({0: 1})


def test_two_groups_are_independent(store: tidelog.Store) -> None:
    topic = store.create_topic("orders", partitions=2)
    fill(topic, 20)
    with store.consumer("orders", group="billing") as billing:
        assert len(billing.poll(max_messages=100, timeout=1)) == 20
        billing.commit()
    with store.consumer("orders", group="inventory") as inventory:
        assert len(inventory.poll(max_messages=100, timeout=1)) == 20
    assert store.groups()["billing"]["orders"]["committed"] == {0: 10, 1: 10}


def test_start_latest_and_seek(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 10)
    with store.consumer("t", group="late", start="latest") as consumer:
        assert consumer.poll(timeout=0) == []
        consumer.seek(0, 7)
        assert [m.offset for m in consumer.poll(timeout=1)] == [7, 8, 9]
        with pytest.raises(tidelog.OffsetOutOfRangeError):
            consumer.seek(0, 11)
        with pytest.raises(tidelog.RebalanceError):
            consumer.seek(3, 0)


def test_seek_to_timestamp(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    for ts in (100, 200, 300):
        topic.append(b"%d" % ts, timestamp_ms=ts)
    with store.consumer("t", group="g") as consumer:
        consumer.seek_to_timestamp(150)
        assert [m.value for m in consumer.poll(timeout=1)] == [b"200", b"300"]
        consumer.seek_to_timestamp(10_000)
        assert consumer.poll(timeout=0) == []


def test_pause_and_resume(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    with store.consumer("t", group="g") as consumer:
        consumer.pause(0)
        assert {m.partition for m in consumer.poll(max_messages=100, timeout=1)} == {1}
        consumer.resume(0)
        assert {m.partition for m in consumer.poll(max_messages=100, timeout=1)} == {0}


def test_a_revoked_partition_forgets_what_pause_held(store: tidelog.Store) -> None:
    """Messages a pause held back go with their partition when it is revoked: its new owner
    starts from the group's commit, which never passed them."""
    topic = store.create_topic("t", partitions=2)
    fill(topic, 10)
    first = store.consumer("t", group="g")
    handed = [next(iter(first))]
    first.pause(0)
    first.pause(1)  # both partitions' fetched messages are held now
    second = store.consumer("t", group="g")
    assert first.poll(timeout=0) == []  # commits what it handed out, sees the rebalance
    (kept,) = first.assignment()
    (lost,) = second.assignment()
    assert first.paused() == [kept]
    with pytest.raises(tidelog.RebalanceError):
        first.resume(lost)
    _resumed_and_split_once(first, second, kept, handed)
    first.pause(lost)
    first.resume(lost)  # nothing held from before the revocation comes back
    assert first.poll(timeout=0) == []
    first.close()


def test_an_aborted_transaction_forgets_what_pause_held(store: tidelog.Store) -> None:
    """An abort rewinds every partition to the group's commit, paused ones too: what a
    pause held comes again from there, once, after resume."""
    topic = store.create_topic("t", partitions=2)
    store.create_topic("out")
    fill(topic, 10)
    with (
        store.consumer("t", group="g", delivery="exactly-once") as c,
        store.producer(name="p") as producer,
    ):
        it = iter(c)
        first = next(it)
        c.pause(first.partition)
        with pytest.raises(RuntimeError), store.transaction(producer, c):
            raise RuntimeError("abort")
        c.resume(first.partition)
        again = []
        for _ in range(10):
            again.append(next(it))
            with store.transaction(producer, c) as tx:
                tx.send("out", again[-1].value)
        assert c.poll(timeout=0) == []
        assert sorted((m.partition, m.offset) for m in again) == [
            (p, o) for p in (0, 1) for o in range(5)
        ]


def test_max_poll_messages_bounds_in_flight_work(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 50)
    with store.consumer("t", group="g", max_poll_messages=7) as consumer:
        assert len(consumer.poll(max_messages=100, timeout=1)) == 7


def test_iteration_blocks_until_another_thread_appends(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    with store.consumer("t", group="g") as consumer:
        threading.Timer(0.1, lambda: topic.append(b"late")).start()
        started = time.perf_counter()
        message = next(iter(consumer))
        assert message.value == b"late"
        assert time.perf_counter() - started < 5


def test_members_split_partitions_and_rebalance(store: tidelog.Store) -> None:
    store.create_topic("t", partitions=4)
    assigned: list[list[int]] = []
    revoked: list[list[int]] = []
    first = store.consumer("t", group="g", on_revoke=revoked.append)
    assert first.assignment() == [0, 1, 2, 3]
    second = store.consumer("t", group="g", on_assign=assigned.append)
    first.poll(timeout=0)  # picks up the rebalance
    assert sorted(first.assignment() + second.assignment()) == [0, 1, 2, 3]
    assert len(first.assignment()) == len(second.assignment()) == 2
    assert revoked and assigned
    # A commit for a partition the member lost is refused and not applied.
    lost = revoked[0][0]
    with pytest.raises(tidelog.RebalanceError):
        first.commit({lost: 1})
    assert lost not in second.committed()
    second.close()
    first.poll(timeout=0)
    assert first.assignment() == [0, 1, 2, 3]
    first.close()


def test_stale_generation_commit_is_rejected(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    fill(topic, 4)
    first = store.consumer("t", group="g")
    first.poll(timeout=0)
    second = store.consumer("t", group="g")  # rebalances: first's generation is stale
    with pytest.raises(tidelog.RebalanceError, match="stale"):
        first.commit({0: 1})
    assert second.committed() == {}
    first.close()
    second.close()


def test_dead_member_loses_partitions_after_its_lease(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t", partitions=2)
        survivor = store.consumer("t", group="g", lease_seconds=0.3)
        doomed = store.consumer("t", group="g", lease_seconds=0.3)
        survivor.poll(timeout=0)
        assert len(survivor.assignment()) == 1
        doomed._closed = True  # "dies": never heartbeats or leaves
        deadline = time.monotonic() + 5
        while survivor.assignment() != [0, 1] and time.monotonic() < deadline:
            survivor.poll(timeout=0.1)
        assert survivor.assignment() == [0, 1]


def test_bad_arguments(store: tidelog.Store) -> None:
    store.create_topic("t")
    with pytest.raises(tidelog.InvalidConfigError, match="delivery"):
        store.consumer("t", group="g", delivery="sometimes")  # type: ignore[arg-type]
    with (
        store.consumer("t", group="g", delivery="exactly-once") as exactly,
        pytest.raises(tidelog.InvalidConfigError, match=r"store\.transaction"),
    ):
        exactly.commit()
    with pytest.raises(tidelog.InvalidConfigError, match="start"):
        store.consumer("t", group="g", start="middle")  # type: ignore[arg-type]
    with pytest.raises(tidelog.TopicNotFoundError):
        store.consumer("missing", group="g")
    with pytest.raises(TypeError):
        store.consumer("t", group="")


def test_store_close_closes_consumers(tmp_path: Path) -> None:
    store = tidelog.open(tmp_path)
    store.create_topic("t")
    consumer = store.consumer("t", group="g")
    store.close()
    assert consumer.closed
    with pytest.raises(tidelog.StoreClosedError):
        consumer.poll(timeout=0)


def test_internal_topics_are_hidden(store: tidelog.Store) -> None:
    store.create_topic("t")
    store.consumer("t", group="g").close()
    assert store.topics() == ["t"]
    assert "__consumer_offsets" in store.topics(internal=True)


def test_seek_back_is_not_committed_past(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 5)
    with store.consumer("t", group="g") as consumer:
        assert len(consumer.poll(timeout=1)) == 5
        consumer.seek(0, 0)
        assert [m.offset for m in consumer.poll(max_messages=2, timeout=1)] == [0, 1]
        consumer.poll(timeout=0)  # moves past 0 and 1 only
        assert consumer.committed() == {0: 2}


def test_group_names_needing_escapes_round_trip(store: tidelog.Store) -> None:
    store.create_topic("t")
    for name in ["my group", "a/b", "ü", "plain-name_1.x"]:
        with store.consumer("t", group=name) as consumer:
            consumer.commit({0: 0})
    assert sorted(store.groups()) == sorted(["my group", "a/b", "ü", "plain-name_1.x"])


def test_deleting_a_topic_forgets_its_groups(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 5)
    with store.consumer("t", group="g") as consumer:
        consumer.poll(timeout=1)
        consumer.commit()
    store.delete_topic("t")
    store.create_topic("t")
    with store.consumer("t", group="g") as consumer:
        assert consumer.committed() == {}
        assert consumer.lag() == {0: 0}


@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once", "exactly-once"])
def test_a_consumer_keeps_few_enough_attributes_for_cpython_to_specialize(
    store: tidelog.Store, delivery: Any
) -> None:
    # CPython 3.11 keeps an instance's attributes inline (and specializes the method calls
    # on it, which every poll makes) only up to 29 of them: one more cost a poll ~6% of
    # its instructions (benches/results/s20).
    store.create_topic("t", partitions=2)
    consumer = store.consumer("t", group="g", delivery=delivery)
    store.topic("t").append(b"v", partition=0)
    consumer.poll(10, 0)
    consumer.pause(0)
    consumer.resume(0)
    if delivery != "exactly-once":
        consumer.commit()
    assert len(vars(consumer)) <= 29, sorted(vars(consumer))
    consumer.close()
    assert len(vars(consumer)) <= 29, sorted(vars(consumer))
