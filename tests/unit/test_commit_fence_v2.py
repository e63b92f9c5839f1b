"""Consumer-group commits are fenced by the group generation (Kafka's ``ILLEGAL_GENERATION``).

A member that lost a partition in a rebalance it has not seen yet can pass its ownership
check, be delayed, and write its commit after the new owner's. Read back as the newest, that
commit moved the group's offset back, so the next owner handed out again what had been
handed out: duplicates under at-most-once and exactly-once. Commits carry the group
generation: every reader passes over a commit of a lower generation than the one its
partition holds, and a member's committer refuses such a commit where commits are ordered
(``RebalanceError``: nothing written). A commit of the same generation (a seek back) still
moves the offset back; one of no generation (-1) applies and clears the fence.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tidelog
from tidelog.offsets import OffsetStore


def fill(topic: tidelog.Topic, partition: int, n: int) -> None:
    topic.append_batch([b"%d" % i for i in range(n)], partition=partition)


def unbound_commit(store: tidelog.Store, offsets: dict[int, int], generation: int) -> None:
    """A commit of group "g" on "t" of ``generation``, through a committer that does not
    check the group's generation (as an older version or a Kafka client's transaction
    writes one): it lands in the log whatever the group's generation."""
    native = store.native.topic("t")
    committer = OffsetStore(store.native).committer("g", native, native.incarnation)
    committer.commit(offsets, "", generation)


def test_a_stale_generations_commit_landing_after_the_new_owners_is_passed_over(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t", partitions=2)
        fill(topic, 0, 20)
        fill(topic, 1, 20)
        a = store.consumer("t", group="g")
        stale = a._membership.generation
        b = store.consumer("t", group="g")
        assert b.assignment() == [1]
        b.commit({1: 10})
        # a still thinks it owns partition 1; its commit of 3 lands after b's.
        unbound_commit(store, {1: 3}, stale)
        assert a.committed() == {1: 10}
        assert b.committed() == {1: 10}
        assert store.groups()["g"]["t"]["committed"] == {1: 10}
        b.close()
        a.close()
    # Read back by another process (the CLI) and after reopening: the same.
    cli = subprocess.run(
        [sys.executable, "-m", "tidelog", "groups", "--json", "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (row,) = [r for r in json.loads(cli.stdout)["groups"] if r["group"] == "g"]
    assert [part["committed"] for part in row["partitions"]] == [None, 10]
    with tidelog.open(tmp_path) as store, store.consumer("t", group="g") as c:
        assert c.committed() == {1: 10}
        got: list[tidelog.Message] = []
        while batch := c.poll(max_messages=100, timeout=0):
            got += batch
        assert min(m.offset for m in got if m.partition == 1) == 10, "resumes at b's commit"


@pytest.mark.parametrize("delivery", ["at-least-once", "at-most-once"])
def test_a_members_commit_racing_a_takeover_is_refused_and_the_new_owners_stays(
    store: tidelog.Store, delivery: Any
) -> None:
    # a owns both partitions and passes its ownership check; before its commit is written
    # b joins (taking partition 1), hands out partition 1 and commits past what a would.
    topic = store.create_topic("t", partitions=2)
    fill(topic, 1, 20)
    a = store.consumer("t", group="g", delivery=delivery, max_poll_messages=4)
    handed: list[tuple[int, int]] = []
    others: list[tidelog.Consumer] = []

    def race() -> None:
        if not others:
            others.append(store.consumer("t", group="g", delivery=delivery))
            assert others[0].assignment() == [1]
            got = others[0].poll(max_messages=10, timeout=0)
            handed.extend((m.partition, m.offset) for m in got)
            others[0].commit()  # at-least-once; at-most-once committed before handing out
            assert others[0].committed() == {1: 10}

    if delivery == "at-most-once":
        commit = a._commit_record

        def racing_commit(offsets: dict[int, int], metadata: str, generation: int) -> None:
            race()
            commit(offsets, metadata, generation)

        a._commit_record = racing_commit
        # a fetched offsets 0-3 of partition 1; its commit of 4 is refused, it hands out
        # nothing and rewinds.
        assert a.poll(timeout=0) == []
    else:
        commit_owned = a._commit_owned

        def racing_owned(
            offsets: object, metadata: str, generation: int, owned: dict[int, Any]
        ) -> bool:
            race()
            return commit_owned(offsets, metadata, generation, owned)

        a._commit_owned = racing_owned
        with pytest.raises(tidelog.RebalanceError):
            a.commit({1: 3})
    assert a.committed() == {1: 10}, "the stale commit moved the group's offset back"
    others[0].close()
    # a takes partition 1 back and resumes at b's commit: nothing is handed out twice.
    while True:
        got = a.poll(max_messages=100, timeout=0)
        if not got:
            break
        handed.extend((m.partition, m.offset) for m in got)
        if delivery == "at-least-once":
            a.commit()
    a.close()
    assert sorted(handed) == [(1, o) for o in range(20)], "handed out twice or lost"


def test_a_seek_back_within_a_generation_moves_the_commit_back(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 0, 20)
    with store.consumer("t", group="g") as c:
        c.commit({0: 10})
        c.commit({0: 3})
        assert c.committed() == {0: 3}
    with store.consumer("t", group="g") as c:
        assert [m.offset for m in c.poll(max_messages=1, timeout=0)] == [3]


def test_a_commit_of_no_generation_applies_and_clears_the_fence(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 0, 20)
    with store.consumer("t", group="g") as c:
        c.commit({0: 10})
        # Commits of a generation far ahead of the group's (as an earlier life of the group,
        # whose state was lost, left them) fence the group's own.
        unbound_commit(store, {0: 12}, 7)
        c.commit({0: 11})
        assert c.committed() == {0: 12}
        # A commit of no generation (an admin tool, a Kafka client's manual assignment)
        # applies and clears the fence: the group is not locked out.
        unbound_commit(store, {0: 2}, -1)
        assert c.committed() == {0: 2}
        c.commit({0: 4})
        assert c.committed() == {0: 4}


def test_lag_reads_past_a_fenced_commit(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    fill(topic, 0, 20)
    with store.consumer("t", group="g") as c:
        stale = c._membership.generation
        with store.consumer("t", group="g") as d:
            assert d.assignment() == []
            c.poll(max_messages=1, timeout=0)  # takes the new generation
            c.commit({0: 15})
            unbound_commit(store, {0: 1}, stale)
            assert c.lag() == {0: 5}
            assert store.groups()["g"]["t"]["lag"] == {0: 5}


def test_a_group_whose_state_was_lost_starts_above_its_commits(tmp_path: Path) -> None:
    # A group's state lost or rolled back (a crash under fsync="never", or its files
    # removed by hand) would start its generations again at 1, below the commits that fence
    # older generations: every commit of its members would be passed over, and the group
    # would hand the same messages out again and again. A new generation is above the
    # highest its commits carry.
    with tidelog.open(tmp_path, fsync="never") as store:
        topic = store.create_topic("t", partitions=1)
        fill(topic, 0, 20)
        for _ in range(3):  # generations go up: each member joins and leaves
            store.consumer("t", group="g").close()
        with store.consumer("t", group="g") as member:
            assert [m.offset for m in member.poll(5, 1.0)] == [0, 1, 2, 3, 4]
            member.commit()
            assert member._membership.generation >= 7
    shutil.rmtree(tmp_path / "groups")
    with tidelog.open(tmp_path, fsync="never") as store:
        with store.consumer("t", group="g") as member:
            assert [m.offset for m in member.poll(5, 1.0)] == [5, 6, 7, 8, 9]
            member.commit()
            assert member.committed() == {0: 10}
        with store.consumer("t", group="g") as member:
            assert [m.offset for m in member.poll(5, 1.0)] == [10, 11, 12, 13, 14]
