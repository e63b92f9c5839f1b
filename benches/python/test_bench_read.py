"""Read throughput over one partition of ``SCALE.scan_bytes`` (1 GiB at full scale).

The partition is written once per module with ``append_batch`` of 1,000 values of 100 bytes;
the reference :class:`PyLog` file holds the same messages. Both are in the page cache when
the scans run (they were just written), so these are warm-cache figures.

* zero-copy scan: ``read_batch(max_messages=1000)`` + ``value_buffer()``, touching only
  ``len(buf)``; GB/s of value bytes. Reference: ``readinto`` of the whole PyLog file into a
  reused 100 KB buffer (one copy out of the page cache); GB/s of file bytes.
* ``Message`` iteration: ``for msg in topic.read(0, 0)``; msgs/s. Reference: iterating
  ``(offset, value)`` of the PyLog file parsed in 1 MiB chunks. Second reference, the floor
  of making one object per message (issue 19): the same ``read_batch(max_messages=1000)``
  chunks iterated as plain tuples of a ``Message``'s fields, ``(topic, partition, offset,
  timestamp_ms, key, value, headers)``, built by ``zip`` (in C) from the batch's columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.python.reference import PyLog, read_pylog, readinto_file
from benches.support import (
    BATCH_VALUES,
    GIB,
    SCALE,
    VALUE_BYTES,
    Measured,
    make_buffer,
    make_values,
    ns_per,
    per_second,
    record,
)

SCAN_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 3.0, "text": ">= 3 GB/s"}
]
ITER_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 2_000_000, "text": ">= 2,000,000 msgs/s"}
]


@dataclass
class ScanData:
    """The partition and the reference file the read benchmarks scan."""

    topic: tidelog.Topic
    pylog: Path
    messages: int
    value_bytes: int
    partition_bytes: int
    pylog_bytes: int
    segments: int

    def what(self) -> str:
        return (
            f"{self.partition_bytes / GIB:.3f} GiB partition, {self.segments} segments, "
            f"{self.messages:,} msgs of {VALUE_BYTES} B"
        )


@pytest.fixture(scope="module")
def scan_data(bench_root: Path) -> Iterator[ScanData]:
    """Writes the partition (and the same messages to a PyLog file) once for the module."""
    directory = bench_root / "read"
    directory.mkdir()
    buffer, lengths = make_buffer()
    values = make_values()
    with tidelog.open(directory / "store", fsync="never") as store:
        topic = store.create_topic("scan", partitions=1)
        while topic.size_bytes(0) < SCALE.scan_bytes:
            for _ in range(16):
                topic.append_batch(buffer, lengths=lengths, partition=0)
        messages = topic.end_offset(0)
        with PyLog(directory / "pylog.log") as log:
            for _ in range(messages // BATCH_VALUES):
                log.append_batch(values)
        yield ScanData(
            topic=topic,
            pylog=directory / "pylog.log",
            messages=messages,
            value_bytes=messages * VALUE_BYTES,
            partition_bytes=topic.size_bytes(0),
            pylog_bytes=(directory / "pylog.log").stat().st_size,
            segments=topic.segment_count(0),
        )


def scan_value_buffers(topic: tidelog.Topic, end: int) -> int:
    """Zero-copy scan of partition 0; returns the value bytes seen."""
    read_batch = topic.read_batch
    offset = total = 0
    while offset < end:
        batch = read_batch(0, offset, max_messages=BATCH_VALUES)
        buf, _bounds = batch.value_buffer()
        total += len(buf)
        offset = batch.next_offset
    return total


def scan_batches_only(topic: tidelog.Topic, end: int) -> int:
    """The same scan without ``value_buffer()``: the cost of ``read_batch`` alone."""
    read_batch = topic.read_batch
    offset = total = 0
    while offset < end:
        batch = read_batch(0, offset, max_messages=BATCH_VALUES)
        total += len(batch)
        offset = batch.next_offset
    return total


def iterate_messages(topic: tidelog.Topic) -> int:
    """Iterates every message of partition 0 as ``tidelog.Message``; returns the count."""
    n = 0
    for _msg in topic.read(partition=0, offset=0):
        n += 1
    return n


def iterate_batches(topic: tidelog.Topic, end: int) -> int:
    """Iterates every message via ``read_batch`` + iteration of each ``RecordBatch``."""
    read_batch = topic.read_batch
    offset = n = 0
    while offset < end:
        batch = read_batch(0, offset, max_messages=BATCH_VALUES)
        for _msg in batch:
            n += 1
        offset = batch.next_offset
    return n


def iterate_tuples(topic: tidelog.Topic, end: int) -> int:
    """The floor of :func:`iterate_batches`: every message as a plain tuple of the fields a
    ``Message`` holds, ``(topic, partition, offset, timestamp_ms, key, value, headers)``
    (values as ``bytes``, offsets and timestamps as ints, no key, raw headers), built in C by
    ``zip`` over the columns of the same ``read_batch`` chunks; returns the count."""
    read_batch = topic.read_batch
    name = topic.name
    offset = n = 0
    while offset < end:
        batch = read_batch(0, offset, max_messages=BATCH_VALUES)
        rows = zip(
            repeat(name),
            repeat(0),
            batch.offsets.tolist(),
            batch.timestamps.tolist(),
            repeat(None),
            batch.values(),
            repeat(b""),
        )
        for _row in rows:
            n += 1
        offset = batch.next_offset
    return n


def iterate_pylog(path: Path) -> int:
    """Iterates every record of the reference log; returns the count."""
    n = 0
    for _rec in read_pylog(path):
        n += 1
    return n


def _run(benchmark: Any, rounds: int, target: Any, *args: Any) -> tuple[Any, dict[str, float]]:
    measured = Measured(target)
    result = benchmark.pedantic(measured, args=args, rounds=rounds, warmup_rounds=1)
    return result, measured.per_call()


# --------------------------------------------------------------------------- zero-copy scan


@pytest.mark.benchmark(group="read-scan")
def test_read_batch_scan_tidelog(benchmark: Any, scan_data: ScanData) -> None:
    total, usage = _run(
        benchmark, SCALE.scan_rounds, scan_value_buffers, scan_data.topic, scan_data.messages
    )
    assert total == scan_data.value_bytes
    record(
        benchmark,
        figure="read-scan",
        title="read_batch(max_messages=1000) + value_buffer() scan",
        role="tidelog",
        unit="GB/s",
        work=scan_data.value_bytes,
        what=scan_data.what() + "; GB/s of value bytes",
        targets=SCAN_TARGETS,
        extra={"msgs_per_s": per_second(benchmark, scan_data.messages), **usage},
    )


@pytest.mark.benchmark(group="read-scan")
def test_read_batch_scan_reference(benchmark: Any, scan_data: ScanData) -> None:
    chunk = BATCH_VALUES * (VALUE_BYTES + 4)
    total, usage = _run(benchmark, SCALE.scan_rounds, readinto_file, scan_data.pylog, chunk)
    assert total == scan_data.pylog_bytes
    record(
        benchmark,
        figure="read-scan",
        title="readinto(104 KB buffer) of the PyLog file",
        role="reference",
        unit="GB/s",
        work=scan_data.pylog_bytes,
        what=f"{scan_data.pylog_bytes / GIB:.3f} GiB file, page cache; GB/s of file bytes",
        extra={**usage},
    )


@pytest.mark.benchmark(group="read-scan")
def test_read_batch_only_variant(benchmark: Any, scan_data: ScanData) -> None:
    total, usage = _run(
        benchmark, SCALE.scan_rounds, scan_batches_only, scan_data.topic, scan_data.messages
    )
    assert total == scan_data.messages
    record(
        benchmark,
        figure="read-scan-no-buffer",
        title="read_batch(max_messages=1000) scan without value_buffer()",
        role="variant",
        unit="GB/s",
        work=scan_data.value_bytes,
        what=scan_data.what(),
        extra={"ns_per_batch": ns_per(benchmark, scan_data.messages // BATCH_VALUES), **usage},
    )


# --------------------------------------------------------------------------- Message iteration


@pytest.mark.benchmark(group="read-iterate")
def test_read_iterate_tidelog(benchmark: Any, scan_data: ScanData) -> None:
    n, usage = _run(benchmark, SCALE.iter_rounds, iterate_messages, scan_data.topic)
    assert n == scan_data.messages
    record(
        benchmark,
        figure="read-iterate",
        title="for msg in topic.read(0, 0) (Message objects)",
        role="tidelog",
        unit="msgs/s",
        work=scan_data.messages,
        what=scan_data.what(),
        targets=ITER_TARGETS,
        extra={"ns_per_msg": ns_per(benchmark, scan_data.messages), **usage},
    )


@pytest.mark.benchmark(group="read-iterate")
def test_read_iterate_reference(benchmark: Any, scan_data: ScanData) -> None:
    n, usage = _run(benchmark, SCALE.iter_rounds, iterate_pylog, scan_data.pylog)
    assert n == scan_data.messages
    record(
        benchmark,
        figure="read-iterate",
        title="PyLog: (offset, value) parsed from 1 MiB chunks",
        role="reference",
        unit="msgs/s",
        work=scan_data.messages,
        what=f"{scan_data.pylog_bytes / GIB:.3f} GiB file, {scan_data.messages:,} records",
        extra={"ns_per_msg": ns_per(benchmark, scan_data.messages), **usage},
    )


@pytest.mark.benchmark(group="read-iterate")
def test_read_iterate_tuples_floor(benchmark: Any, scan_data: ScanData) -> None:
    n, usage = _run(
        benchmark, SCALE.iter_rounds, iterate_tuples, scan_data.topic, scan_data.messages
    )
    assert n == scan_data.messages
    record(
        benchmark,
        figure="read-iterate",
        title="floor: the same messages as plain tuples of Message's 7 fields (zip, in C)",
        role="second-reference",
        unit="msgs/s",
        work=scan_data.messages,
        what=scan_data.what() + "; read_batch(max_messages=1000) chunks",
        extra={"ns_per_msg": ns_per(benchmark, scan_data.messages), **usage},
    )


@pytest.mark.benchmark(group="read-iterate")
def test_read_iterate_batches_variant(benchmark: Any, scan_data: ScanData) -> None:
    n, usage = _run(
        benchmark, SCALE.iter_rounds, iterate_batches, scan_data.topic, scan_data.messages
    )
    assert n == scan_data.messages
    record(
        benchmark,
        figure="read-iterate-batches",
        title="for msg in read_batch(max_messages=1000) (Message objects)",
        role="variant",
        unit="msgs/s",
        work=scan_data.messages,
        what=scan_data.what(),
        extra={"ns_per_msg": ns_per(benchmark, scan_data.messages), **usage},
    )


# --------------------------------------------------------------------------- batch shapes
# The same iteration over the two shapes a new user writes: one message per `append`
# call (one stored batch each), and one `append_batch` of every message (one stored batch
# read in many parts: each part continues where the last ended).

SHAPE_MESSAGES = SCALE.append_calls * 2


@pytest.fixture(scope="module")
def shaped_topics(bench_root: Path) -> Iterator[tuple[tidelog.Topic, tidelog.Topic]]:
    with tidelog.open(bench_root / "read-shapes", fsync="never") as store:
        singles = store.create_topic("singles")
        append = singles.append
        value = make_values(1)[0]
        for _ in range(SHAPE_MESSAGES):
            append(value)
        one = store.create_topic("one-batch")
        one.append_batch([value] * SHAPE_MESSAGES)
        yield singles, one


@pytest.mark.benchmark(group="read-iterate-shapes")
@pytest.mark.parametrize("shape", ["singles", "one-batch"])
def test_read_iterate_shape_variant(
    benchmark: Any, shaped_topics: tuple[tidelog.Topic, tidelog.Topic], shape: str
) -> None:
    topic = shaped_topics[0] if shape == "singles" else shaped_topics[1]
    n, usage = _run(benchmark, SCALE.iter_rounds, iterate_messages, topic)
    assert n == SHAPE_MESSAGES
    title = {
        "singles": "for msg in topic.read(0, 0), messages appended one per call",
        "one-batch": "for msg in topic.read(0, 0), every message in one append_batch",
    }[shape]
    record(
        benchmark,
        figure=f"read-iterate-{shape}",
        title=title,
        role="variant",
        unit="msgs/s",
        work=SHAPE_MESSAGES,
        what=f"{SHAPE_MESSAGES:,} messages of {VALUE_BYTES} B",
        extra={"ns_per_msg": ns_per(benchmark, SHAPE_MESSAGES), **usage},
    )
