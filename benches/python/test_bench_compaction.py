"""Compaction: throughput of ``topic.compact()``, reads of a compacted topic, appends while
a compaction runs.

* compaction throughput: a partition of ``SCALE.scan_bytes / 4`` (256 MiB at full scale) of
  100-byte values under 10,000 keys, appended one keyed message at a time (so full record
  entries); every round compacts a fresh copy of it; GB/s of input (bytes of the closed
  segments rewritten). Target: at least 0.2 GB/s.
* reads: ``for msg in topic.read(0)`` over a compacted partition (sparse offsets, batches
  rewritten with gaps) against an uncompacted one holding the same number of messages of
  the same size and keys; msgs/s. Target: the same msgs/s (ratio >= 0.95).
* appends during compaction: keyed ``topic.append`` calls on partition 0 while another
  thread compacts partition 1 over and over at the background cleaner's default budget
  (100 MiB/s read plus written; the cleaner holds the append lock only to plan and to
  swap), against the same appends alone; msgs/s. Target: ratio >= 0.9. The variant
  ``unpaced`` compacts as fast as it can (a whole core on this 2-core machine).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.support import SCALE, VALUE_BYTES, Measured, per_second, record

#: Keys of the compacted partition: about ten versions of each.
KEYS = max(SCALE.scan_bytes // 4 // 1600, 100)
VALUE = b"v" * VALUE_BYTES


def segment_bytes(total: int) -> int:
    """Segments of a sixteenth of the data (16 MiB at full scale), so most of it is closed."""
    return min(max(total // 16, 64 << 10), 16 << 20)


def fill(topic: tidelog.Topic, partition: int, total_bytes: int, keys: int) -> int:
    """Appends keyed messages until the partition holds ``total_bytes``; returns how many."""
    append = topic.append
    n = 0
    while topic.size_bytes(partition) < total_bytes:
        for _ in range(10_000):
            append(VALUE, key=b"key-%08d" % (n % keys), partition=partition)
            n += 1
    return n


@dataclass
class Prepared:
    """A store whose partition 0 is full of keyed messages, not compacted yet."""

    path: Path
    input_bytes: int
    messages: int


@pytest.fixture(scope="module")
def prepared(bench_root: Path) -> Iterator[Prepared]:
    path = bench_root / "compaction-source"
    with tidelog.open(path, cleaner_interval_ms=None) as store:
        topic = store.create_topic(
            "c",
            partitions=2,
            cleanup_policy="compact",
            segment_bytes=segment_bytes(max(SCALE.scan_bytes // 4, 1 << 20)),
        )
        messages = fill(topic, 0, max(SCALE.scan_bytes // 4, 1 << 20), KEYS)
        input_bytes = topic.size_bytes(0)
    yield Prepared(path, input_bytes, messages)


@pytest.mark.benchmark(group="compaction")
def test_compaction_throughput(benchmark: Any, prepared: Prepared, bench_dir: Path) -> None:
    state: dict[str, Any] = {}
    copies = iter(range(1_000))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        if "store" in state:
            state.pop("store").close()
        target = bench_dir / f"copy-{next(copies)}"
        shutil.rmtree(bench_dir, ignore_errors=True)
        shutil.copytree(prepared.path, target)
        store = tidelog.open(target, cleaner_interval_ms=None)
        state["store"] = store
        return (store.topic("c"),), {}

    done: list[dict[str, int]] = []
    measured = Measured(lambda topic: done.append(topic.compact()))
    benchmark.pedantic(measured, setup=setup, rounds=SCALE.scan_rounds, warmup_rounds=0)
    state.pop("store").close()
    read = done[-1]["bytes_read"]
    assert done[-1]["records_removed"] > 0
    record(
        benchmark,
        figure="compaction",
        title="topic.compact() of one partition",
        role="tidelog",
        unit="GB/s",
        work=read,
        what=(
            f"{read / (1 << 20):.0f} MiB of closed segments, {prepared.messages:,} keyed msgs "
            f"of {VALUE_BYTES} B under {KEYS:,} keys -> "
            f"{done[-1]['bytes_written'] / (1 << 20):.1f} MiB; GB/s of input"
        ),
        targets=[{"of": "value", "op": ">=", "value": 0.2, "text": ">= 200 MB/s"}],
        extra={**measured.per_call(), **done[-1]},
    )


@dataclass
class ReadPair:
    compacted: tidelog.Topic
    plain: tidelog.Topic
    messages: int


@pytest.fixture(scope="module")
def read_pair(bench_root: Path) -> Iterator[ReadPair]:
    path = bench_root / "compaction-read"
    target = max(SCALE.scan_bytes // 8, 1 << 20)
    with tidelog.open(path, cleaner_interval_ms=None) as store:
        compacted = store.create_topic(
            "compacted", cleanup_policy="compact", segment_bytes=segment_bytes(2 * target)
        )
        # Every key written twice, the second time after the first pass: compaction keeps
        # the second copies, half of the offsets become gaps.
        n = 0
        while compacted.size_bytes(0) < 2 * target:
            for _ in range(10_000):
                compacted.append(VALUE, key=b"key-%09d" % (n % (1 << 40)), partition=0)
                n += 1
        half = n // 2
        n = 0
        for i in range(half):
            compacted.append(VALUE, key=b"key-%09d" % i, partition=0)
        compacted.append(VALUE, key=b"roll", partition=0)
        compacted.compact()
        kept = sum(1 for _ in compacted.read(0))
        plain = store.create_topic("plain", segment_bytes=segment_bytes(2 * target))
        for i in range(kept):
            plain.append(VALUE, key=b"key-%09d" % i, partition=0)
        yield ReadPair(compacted, plain, kept)


def iterate(topic: tidelog.Topic) -> int:
    n = 0
    for _msg in topic.read(0, offset=topic.start_offset(0)):
        n += 1
    return n


@pytest.mark.benchmark(group="compaction-read")
@pytest.mark.parametrize("which", ["compacted", "plain"])
def test_read_compacted_vs_plain(benchmark: Any, read_pair: ReadPair, which: str) -> None:
    topic = read_pair.compacted if which == "compacted" else read_pair.plain
    measured = Measured(iterate)
    count = benchmark.pedantic(
        measured, args=(topic,), rounds=SCALE.iter_rounds + 2, warmup_rounds=1
    )
    assert count >= read_pair.messages
    record(
        benchmark,
        figure="compaction-read",
        title=f"for msg in topic.read(0): {which} partition",
        role="tidelog" if which == "compacted" else "reference",
        unit="msgs/s",
        work=count,
        what=f"{count:,} keyed msgs of {VALUE_BYTES} B",
        targets=[{"of": "ratio", "op": ">=", "value": 0.95, "text": "same msgs/s as uncompacted"}]
        if which == "compacted"
        else None,
        extra={**measured.per_call()},
    )


def append_keyed(topic: tidelog.Topic, n: int) -> int:
    append = topic.append
    for i in range(n):
        append(VALUE, key=b"key-%08d" % (i % KEYS), partition=0)
    return n


@pytest.mark.benchmark(group="compaction-append")
@pytest.mark.parametrize("mode", ["paced", "unpaced", "alone"])
def test_appends_during_compaction(
    benchmark: Any, prepared: Prepared, bench_dir: Path, mode: str
) -> None:
    during = mode != "alone"
    budget = 100 << 20 if mode == "paced" else None
    target = bench_dir / "store"
    shutil.copytree(prepared.path, target)
    stop = threading.Event()
    compactions = [0]
    with tidelog.open(target, cleaner_interval_ms=None) as store:
        topic = store.topic("c")
        # Partition 1 gets the prepared partition's messages to compact over and over.
        other = tidelog.open(target, cleaner_interval_ms=None)
        # Every key once: each compaction rewrites all of it again (real work every time,
        # none of it under the GIL).
        fill(other.topic("c"), 1, max(SCALE.scan_bytes // 16, 1 << 20), 1 << 62)

        def compact_forever() -> None:
            t = other.topic("c")
            while not stop.is_set():
                t.compact(bytes_per_second=budget)
                compactions[0] += 1

        thread = threading.Thread(target=compact_forever) if during else None
        if thread:
            thread.start()
        n = SCALE.append_calls
        try:
            measured = Measured(append_keyed)
            benchmark.pedantic(measured, args=(topic, n), rounds=SCALE.rounds, warmup_rounds=1)
        finally:
            stop.set()
            if thread:
                thread.join()
            other.close()
    record(
        benchmark,
        figure="compaction-append",
        title="keyed topic.append "
        + {
            "paced": "during compaction of another partition at 100 MiB/s",
            "unpaced": "during unpaced compaction of another partition",
            "alone": "alone",
        }[mode],
        role="tidelog" if mode == "paced" else "variant" if mode == "unpaced" else "reference",
        unit="msgs/s",
        work=n,
        what=f"{n:,} appends of {VALUE_BYTES} B per round; {compactions[0]} compactions meanwhile",
        targets=[{"of": "ratio", "op": ">=", "value": 0.9, "text": "at most 10% slower"}]
        if mode == "paced"
        else None,
        extra={**measured.per_call(), "msgs_per_s": per_second(benchmark, n)},
    )
