"""Messages out as Arrow (issue 17): ``to_arrow`` and Parquet export over one partition.

The partition (``SCALE.scan_bytes``: 1 GiB at full scale) is written once per module with
``append_batch`` of 1,000 values of 100 bytes, as in ``test_bench_read.py``, and is in the
page cache when the scans run (warm-cache figures). All figures are GB/s of value bytes.

* ``arrow-scan``: ``read_batch(max_messages=1000)`` + ``to_arrow()`` over the partition;
  reference: the zero-copy scan (``read_batch`` + ``value_buffer()``), measured in the same
  run; target ``>= 3 GB/s``.
* ``arrow-table``: ``topic.to_arrow(0)`` of the whole partition into one ``pyarrow.Table``.
* ``parquet-export``: ``iter_arrow_batches`` written by ``pyarrow.parquet.ParquetWriter``
  (uncompressed, as ``tidelog export --compression none`` does) to a file; target
  ``>= 0.3 GB/s`` (300 MB/s of values).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tidelog
from tidelog.arrow import iter_arrow_batches, schema

from benches.support import BATCH_VALUES, GIB, SCALE, VALUE_BYTES, Measured, make_buffer, record

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ARROW_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 3.0, "text": ">= 3 GB/s"}
]
PARQUET_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 0.3, "text": ">= 300 MB/s of values"}
]


@dataclass
class Partition:
    topic: tidelog.Topic
    messages: int
    value_bytes: int
    directory: Path

    def what(self) -> str:
        size = self.topic.size_bytes(0)
        return f"{size / GIB:.3f} GiB partition, {self.messages:,} msgs of {VALUE_BYTES} B"


@pytest.fixture(scope="module")
def partition(bench_root: Path) -> Iterator[Partition]:
    directory = bench_root / "arrow"
    directory.mkdir()
    buffer, lengths = make_buffer()
    with tidelog.open(directory / "store", fsync="never") as store:
        topic = store.create_topic("scan", partitions=1)
        while topic.size_bytes(0) < SCALE.scan_bytes:
            for _ in range(16):
                topic.append_batch(buffer, lengths=lengths, partition=0)
        messages = topic.end_offset(0)
        yield Partition(topic, messages, messages * VALUE_BYTES, directory)


def scan_value_buffers(topic: tidelog.Topic, end: int) -> int:
    read_batch = topic.read_batch
    offset = total = 0
    while offset < end:
        batch = read_batch(0, offset, max_messages=BATCH_VALUES)
        buf, _bounds = batch.value_buffer()
        total += len(buf)
        offset = batch.next_offset
    return total


def scan_to_arrow(topic: tidelog.Topic, end: int) -> int:
    read_batch = topic.read_batch
    offset = total = 0
    while offset < end:
        batch = read_batch(0, offset, max_messages=BATCH_VALUES)
        total += batch.to_arrow().num_rows
        offset = batch.next_offset
    return total


def whole_table(topic: tidelog.Topic) -> int:
    table: int = topic.to_arrow(0).num_rows
    return table


def export_parquet(topic: tidelog.Topic, path: Path) -> int:
    rows = 0
    with pq.ParquetWriter(path, schema(), compression=None) as writer:
        for chunk in iter_arrow_batches(topic, 0):
            writer.write_batch(chunk)
            rows += chunk.num_rows
    path.unlink()
    return rows


def _run(benchmark: Any, target: Any, *args: Any) -> tuple[Any, dict[str, float]]:
    measured = Measured(target)
    result = benchmark.pedantic(measured, args=args, rounds=SCALE.scan_rounds, warmup_rounds=1)
    return result, measured.per_call()


@pytest.mark.benchmark(group="arrow-scan")
def test_arrow_scan_reference(benchmark: Any, partition: Partition) -> None:
    total, usage = _run(benchmark, scan_value_buffers, partition.topic, partition.messages)
    assert total == partition.value_bytes
    record(
        benchmark,
        figure="arrow-scan",
        title="read_batch(max_messages=1000) + value_buffer() scan (zero-copy)",
        role="reference",
        unit="GB/s",
        work=partition.value_bytes,
        what=partition.what() + "; GB/s of value bytes",
        extra=usage,
    )


@pytest.mark.benchmark(group="arrow-scan")
def test_arrow_scan_tidelog(benchmark: Any, partition: Partition) -> None:
    rows, usage = _run(benchmark, scan_to_arrow, partition.topic, partition.messages)
    assert rows == partition.messages
    record(
        benchmark,
        figure="arrow-scan",
        title="read_batch(max_messages=1000) + to_arrow() scan",
        role="tidelog",
        unit="GB/s",
        work=partition.value_bytes,
        what=partition.what() + "; GB/s of value bytes",
        targets=ARROW_TARGETS,
        extra=usage,
    )


@pytest.mark.benchmark(group="arrow-table")
def test_arrow_table_variant(benchmark: Any, partition: Partition) -> None:
    rows, usage = _run(benchmark, whole_table, partition.topic)
    assert rows == partition.messages
    record(
        benchmark,
        figure="arrow-table",
        title="topic.to_arrow(0): the whole partition as one pyarrow.Table",
        role="variant",
        unit="GB/s",
        work=partition.value_bytes,
        what=partition.what() + "; GB/s of value bytes",
        extra=usage,
    )


@pytest.mark.benchmark(group="parquet-export")
def test_parquet_export_tidelog(benchmark: Any, partition: Partition) -> None:
    path = partition.directory / "export.parquet"
    rows, usage = _run(benchmark, export_parquet, partition.topic, path)
    assert rows == partition.messages
    record(
        benchmark,
        figure="parquet-export",
        title="iter_arrow_batches -> ParquetWriter (uncompressed) to a file",
        role="tidelog",
        unit="GB/s",
        work=partition.value_bytes,
        what=partition.what() + "; GB/s of value bytes written",
        targets=PARQUET_TARGETS,
        extra=usage,
    )
