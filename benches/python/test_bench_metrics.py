"""``store.metrics()`` (issue 17) on a store with 100 partitions and 10 consumer groups.

One topic of 100 partitions, each holding 10 stored batches of 1,000 messages; 10 groups,
each with an offset committed on every partition (half-way, so every partition lags and
``lag_seconds`` reads a message timestamp), and one work queue. Target: under 5 ms per call.
The timestamps of a paused group are cached between calls, so the figure after the first
call is the steady state of a scraper polling every few seconds; the ``uncached`` variant
clears that cache before every call (every group moved since the last scrape).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog
import tidelog.metrics

from benches.support import SCALE, make_buffer, median_seconds, record

PARTITIONS = 100
GROUPS = 10
BATCHES = 2 if SCALE.name == "quick" else 10
CALLS = 20 if SCALE.name == "quick" else 200
TARGETS: list[dict[str, Any]] = [{"of": "value", "op": "<", "value": 5.0, "text": "< 5 ms"}]


@pytest.fixture(scope="module")
def store(bench_root: Path) -> Iterator[tidelog.Store]:
    buffer, lengths = make_buffer()
    with tidelog.open(bench_root / "metrics", fsync="never") as store:
        topic = store.create_topic("t", partitions=PARTITIONS)
        for p in range(PARTITIONS):
            for _ in range(BATCHES):
                topic.append_batch(buffer, lengths=lengths, partition=p)
        half = topic.end_offset(0) // 2
        for g in range(GROUPS):
            with store.consumer("t", group=f"g{g}") as consumer:
                consumer.commit({p: half + g for p in range(PARTITIONS)})
        with store.work_queue("t", group="q") as queue:
            job = queue.acquire(timeout=0)
            assert job is not None
            queue.ack(job)
        yield store


def _calls(store: tidelog.Store, uncached: bool) -> int:
    n = 0
    for _ in range(CALLS):
        if uncached:
            tidelog.metrics._TIMESTAMPS.pop(store, None)
        m = store.metrics()
        n += len(m["groups"])
    return n


def _check(m: dict[str, Any]) -> None:
    assert len(m["topics"]["t"]["partitions"]) == PARTITIONS
    assert len(m["groups"]) == GROUPS
    assert all(v["lag_seconds"] >= 0 for v in m["groups"]["g0"]["t"]["partitions"].values())
    assert m["groups"]["g0"]["t"]["lag_messages"] > 0


@pytest.mark.benchmark(group="store-metrics")
@pytest.mark.parametrize("uncached", [False, True], ids=["cached", "uncached"])
def test_store_metrics_tidelog(benchmark: Any, store: tidelog.Store, uncached: bool) -> None:
    _check(store.metrics())
    n = benchmark.pedantic(_calls, args=(store, uncached), rounds=SCALE.rounds, warmup_rounds=1)
    assert n == GROUPS * CALLS
    med = median_seconds(benchmark)
    record(
        benchmark,
        figure="store-metrics" + ("-uncached" if uncached else ""),
        title="store.metrics()" + (" with no cached timestamps" if uncached else ""),
        role="tidelog" if not uncached else "variant",
        unit="ms",
        work=CALLS,
        what=f"{PARTITIONS} partitions, {GROUPS} groups lagging on all, 1 work queue",
        targets=TARGETS,
        # "ms" is per call here, not per round of CALLS calls.
        value=None if med is None else med / CALLS * 1e3,
    )
