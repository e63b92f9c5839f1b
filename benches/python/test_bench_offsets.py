"""Reopening a store whose ``__consumer_offsets`` holds a long history of commits (issue 14).

* ``offsets-reopen``: ``tidelog.open`` + ``store.consumer(group=...)`` + ``consumer.committed()``
  + close, on a store whose offsets topic holds ``COMMITS`` commits of that group (1,000,000 at
  full scale): the consumer's place in the group comes from reading that history back. The
  reference is the same reopen with a history of one commit (the cost of opening a store and
  joining a group), so the difference divided by ``COMMITS`` is the cost of one commit record.

The issue's target (10 M commits, under 50 ms) needs compaction of ``__consumer_offsets``
(reopening in proportion to the live state, not the history); this figure is the cost per
record of the history that compaction has not removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.support import SCALE, Measured, ns_per, record

QUICK = SCALE.name == "quick"
#: Commits in the history of the reopened store (full scale: 1,000,000; a numeric scale
#: multiplies it as it does the scanned bytes).
COMMITS = 20_000 if QUICK else max(20_000, 1_000_000 * SCALE.scan_bytes // (1 << 30))
#: Messages in the consumed topic (commits cycle through its offsets).
MESSAGES = 1_000
ROUNDS = SCALE.reopen_rounds
GROUP = "reader"


def _fill(path: Path, commits: int) -> None:
    """A store with one topic and ``commits`` commits of ``GROUP`` on it (the last: 999)."""
    with tidelog.open(path, fsync="never") as store:
        store.create_topic("source", partitions=1).append_batch([b"x" * 100] * MESSAGES)
        with store.consumer("source", group=GROUP, lease_seconds=600.0) as consumer:
            commit = consumer.commit
            for i in range(commits):
                commit({0: (MESSAGES - commits + i) % MESSAGES + 1})


@pytest.fixture(scope="module")
def history(bench_root: Path) -> Iterator[Path]:
    """A store whose offsets topic holds ``COMMITS`` commits."""
    path = bench_root / "offsets-history"
    _fill(path, COMMITS)
    yield path


@pytest.fixture(scope="module")
def one_commit(bench_root: Path) -> Iterator[Path]:
    """The same store with a history of one commit."""
    path = bench_root / "offsets-one"
    _fill(path, 1)
    yield path


def reopen(path: Path) -> dict[int, int]:
    """Timed: open the store, join the group, read its committed offsets, close."""
    with (
        tidelog.open(path, fsync="never") as store,
        store.consumer("source", group=GROUP, lease_seconds=600.0) as consumer,
    ):
        return consumer.committed()


def _rounds(benchmark: Any, path: Path) -> dict[str, float]:
    measured = Measured(reopen)
    committed = benchmark.pedantic(measured, args=(path,), rounds=ROUNDS, warmup_rounds=1)
    assert committed == {0: MESSAGES}, committed
    return measured.per_call()


@pytest.mark.benchmark(group="offsets-reopen")
def test_offsets_reopen_tidelog(benchmark: Any, history: Path) -> None:
    usage = _rounds(benchmark, history)
    record(
        benchmark,
        figure="offsets-reopen",
        title=f"open + consumer + committed() with {COMMITS:,} commits in the history",
        role="tidelog",
        unit="ms",
        work=1,
        what=f"{COMMITS:,} commits of one group in __consumer_offsets",
        extra={"ns_per_commit_record": ns_per(benchmark, COMMITS), **usage},
    )


@pytest.mark.benchmark(group="offsets-reopen")
def test_offsets_reopen_reference(benchmark: Any, one_commit: Path) -> None:
    usage = _rounds(benchmark, one_commit)
    record(
        benchmark,
        figure="offsets-reopen",
        title="the same with one commit in the history",
        role="reference",
        unit="ms",
        work=1,
        what="1 commit in __consumer_offsets",
        extra=usage,
    )
