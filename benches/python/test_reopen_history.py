"""Reopening a store whose history holds ``N`` commits and ``N`` acknowledgements (issue 14).

* ``reopen-history``: ``tidelog.open`` + a consumer of each of ``GROUPS`` groups reading its
  ``committed()`` offsets + a work-queue member's first ``acquire`` (the close comes untimed
  before the next round), on a store whose
  ``__consumer_offsets`` received ``N`` commit records (``GROUPS`` groups x ``PARTITIONS``
  partitions, each commit call one batch of ``PARTITIONS`` records) and whose work queue
  acknowledged ``N`` messages (``acquire_many(1000)`` + ``ack_many``); full scale: N = 10 M.
  The store is built with ``fsync="never"`` and the offsets topic compacted
  (``topic.compact()``, as the background cleaner would) before the rounds. The reference is
  the same reopen of a store with the same live state and a history of one commit per
  partition and ``PARTITIONS`` acknowledgements: the difference is what the history costs.

Target: under 50 ms (the issue's figure for 10 M commits and 10 M acknowledgements).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog
from tidelog.offsets import OFFSETS_TOPIC

from benches.support import GIB, SCALE, Measured, record

QUICK = SCALE.name == "quick"
#: Commit records and acknowledgements in the history (full scale: 10,000,000 each; a
#: numeric scale multiplies it as it does the scanned bytes).
N = 20_000 if QUICK else max(20_000, 10_000_000 * SCALE.scan_bytes // GIB)
GROUPS = 10
PARTITIONS = 10
ROUNDS = SCALE.reopen_rounds
TARGETS = [{"of": "value", "op": "<", "value": 50.0, "text": "< 50 ms"}]


def _fill(path: Path, commits: int, acks: int) -> dict[str, float]:
    """A store with ``commits`` commit records and ``acks`` acknowledgements in its history."""
    took: dict[str, float] = {}
    with tidelog.open(path, fsync="never") as store:
        source = store.create_topic("source", partitions=PARTITIONS)
        for p in range(PARTITIONS):
            source.append_batch([b"x" * 100] * 1_000, partition=p)
        started = time.perf_counter()
        rounds = max(1, commits // (GROUPS * PARTITIONS))
        for g in range(GROUPS):
            with store.consumer("source", group=f"g{g}", lease_seconds=600.0) as consumer:
                commit = consumer.commit
                for i in range(rounds):
                    commit(dict.fromkeys(range(PARTITIONS), i % 1_000 + 1))
        took["commit_s"] = time.perf_counter() - started
        jobs = store.create_topic("jobs", partitions=1)
        value = b"j" * 16
        for start in range(0, acks, 100_000):
            jobs.append_batch([value] * min(100_000, acks - start))
        started = time.perf_counter()
        with store.work_queue("jobs", group="workers", lock_timeout=600.0) as queue:
            done = 0
            while done < acks:
                batch = queue.acquire_many(1_000, timeout=0)
                queue.ack_many(batch)
                done += len(batch)
        took["ack_s"] = time.perf_counter() - started
        started = time.perf_counter()
        store.native.topic(OFFSETS_TOPIC).compact()
        took["compact_s"] = time.perf_counter() - started
    return took


@pytest.fixture(scope="module")
def history(bench_root: Path) -> Iterator[tuple[Path, dict[str, float]]]:
    path = bench_root / "reopen-history"
    took = _fill(path, N, N)
    yield path, took


@pytest.fixture(scope="module")
def live_only(bench_root: Path) -> Iterator[Path]:
    path = bench_root / "reopen-live"
    _fill(path, GROUPS * PARTITIONS, PARTITIONS)
    yield path


class Reopen:
    """Timed: open the store, each group's committed offsets, the queue's first acquire.

    The store is left open and closed untimed before the next round (closing trims every
    partition's pre-allocated files: the cost of the previous session, not of a reopen).
    """

    def __init__(self) -> None:
        self.store: tidelog.Store | None = None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def __call__(self, path: Path) -> dict[int, int]:
        self.close()
        store = self.store = tidelog.open(path, fsync="never")
        committed: dict[int, int] = {}
        for g in range(GROUPS):
            consumer = store.consumer("source", group=f"g{g}", lease_seconds=600.0)
            committed = consumer.committed()
        queue = store.work_queue("jobs", group="workers", lock_timeout=600.0)
        assert queue.acquire(timeout=0) is None
        return committed


def _rounds(benchmark: Any, path: Path) -> dict[str, float]:
    timed = Reopen()
    measured = Measured(timed)
    try:
        committed = benchmark.pedantic(
            measured, args=(path,), setup=timed.close, rounds=ROUNDS, warmup_rounds=1
        )
    finally:
        timed.close()
    assert len(committed) == PARTITIONS, committed
    return measured.per_call()


@pytest.mark.benchmark(group="reopen-history")
def test_reopen_history_tidelog(benchmark: Any, history: tuple[Path, dict[str, float]]) -> None:
    path, took = history
    usage = _rounds(benchmark, path)
    record(
        benchmark,
        figure="reopen-history",
        title=f"open + {GROUPS} consumers' committed() + a queue's first acquire, {N:,} commits "
        f"and {N:,} acks in the history",
        role="tidelog",
        unit="ms",
        work=1,
        what=f"{N:,} commit records ({GROUPS} groups x {PARTITIONS} partitions) and {N:,} "
        "acknowledgements, offsets topic compacted",
        targets=TARGETS,
        extra={**took, **usage},
    )


@pytest.mark.benchmark(group="reopen-history")
def test_reopen_history_reference(benchmark: Any, live_only: Path) -> None:
    usage = _rounds(benchmark, live_only)
    record(
        benchmark,
        figure="reopen-history",
        title="the same with only the live state in the history",
        role="reference",
        unit="ms",
        work=1,
        what=f"{GROUPS * PARTITIONS} commit records and {PARTITIONS} acknowledgements",
        extra=usage,
    )
