"""Consumer-group membership (issue 14, item 3): the cost of the calls a member makes.

* ``group-join``: ``Membership.join()`` of one more member into a group of ``MEMBERS``
  (lock, read the state, claim a lease, rebalance, write the new generation), as time per join;
* ``group-heartbeat``: a due ``heartbeat()`` with nothing changed (renew the lease, check the
  others' leases: no lock, no fsync), as time per call;
* ``group-heartbeat-forced``: ``heartbeat(force=True)`` (the locked path, no change);
* ``group-generation``: ``current_generation()``, which every ``poll`` calls.

Stores use ``fsync="never"``: the cost of the calls, not of the disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog
from tidelog.groups import Membership

from benches.support import SCALE, ns_per, record

ROUNDS = SCALE.rounds
QUICK = SCALE.name == "quick"
#: Members already in the group when one more joins.
MEMBERS = 8
JOINS = 20 if QUICK else 100
HEARTBEATS = 2_000 if QUICK else 20_000
GENERATION_READS = 20_000 if QUICK else 1_000_000
LEASE_SECONDS = 60.0


@pytest.fixture
def group(bench_dir: Path) -> Iterator[tuple[tidelog.Store, list[Membership]]]:
    """A store with topic ``t`` (8 partitions) and a group of ``MEMBERS`` members."""
    with tidelog.open(bench_dir / "store", fsync="never") as store:
        store.create_topic("t", partitions=8)
        members = [Membership(store.path, "t", "g", 8, LEASE_SECONDS) for _ in range(MEMBERS)]
        for m in members:
            m.join()
        yield store, members
        for m in members:
            m.leave()


def _joins(store: tidelog.Store) -> Any:
    def setup() -> Any:
        joining = [Membership(store.path, "t", "g", 8, LEASE_SECONDS) for _ in range(JOINS)]
        return (joining,), {}

    def target(joining: list[Membership]) -> None:
        for m in joining:
            m.join()
            m.leave()

    return setup, target


@pytest.mark.benchmark(group="groups")
def test_group_join(benchmark: Any, group: tuple[tidelog.Store, list[Membership]]) -> None:
    setup, target = _joins(group[0])
    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    record(
        benchmark,
        figure="group-join",
        title="Membership.join() + leave() into a group of 8",
        role="tidelog",
        unit="ns/call",
        work=JOINS,
        what=f"{JOINS} join + leave pairs per round, 8 partitions, fsync never",
        extra={"ns_per_call": ns_per(benchmark, JOINS)},
    )


def _heartbeats(m: Membership, n: int, force: bool) -> None:
    for _ in range(n):
        m.heartbeat_due = 0.0  # due now, as a lease third later
        m.heartbeat(force)


@pytest.mark.benchmark(group="groups")
@pytest.mark.parametrize("force", [False, True], ids=["due", "forced"])
def test_group_heartbeat(
    benchmark: Any, group: tuple[tidelog.Store, list[Membership]], force: bool
) -> None:
    m = group[1][0]
    benchmark.pedantic(_heartbeats, args=(m, HEARTBEATS, force), rounds=ROUNDS, warmup_rounds=1)
    record(
        benchmark,
        figure="group-heartbeat-forced" if force else "group-heartbeat",
        title=f"Membership.heartbeat({'force=True' if force else ''}) in a group of 8",
        role="tidelog",
        unit="ns/call",
        work=HEARTBEATS,
        what=f"{HEARTBEATS} heartbeats per round, nothing changed",
        extra={"ns_per_call": ns_per(benchmark, HEARTBEATS)},
    )


def _generations(m: Membership, n: int) -> None:
    read = m.current_generation
    for _ in range(n):
        read()


@pytest.mark.benchmark(group="groups")
def test_group_current_generation(
    benchmark: Any, group: tuple[tidelog.Store, list[Membership]]
) -> None:
    m = group[1][0]
    benchmark.pedantic(_generations, args=(m, GENERATION_READS), rounds=ROUNDS, warmup_rounds=1)
    record(
        benchmark,
        figure="group-generation",
        title="Membership.current_generation() (called by every poll)",
        role="tidelog",
        unit="ns/call",
        work=GENERATION_READS,
        what=f"{GENERATION_READS:,} calls per round",
        extra={"ns_per_call": ns_per(benchmark, GENERATION_READS)},
    )
