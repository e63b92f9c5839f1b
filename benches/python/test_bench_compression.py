"""Compression (issue 14): appends to and reads from lz4 and zstd topics next to the same
work on an uncompressed topic, and the bytes each codec leaves on disk.

The values are realistic JSON events of about 100 bytes, different in every message
(user id, event, timestamp, page), as ``append_batch`` lists of 1,000. Every append round
writes to a fresh topic made in the untimed setup (the previous one deleted there), as in
``test_bench_append.py``; the reads scan topics written once per module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.support import BATCH_VALUES, MIB, SCALE, Measured, per_second, record

BATCHES = SCALE.batch_calls
ROUNDS = SCALE.rounds
EVENTS = ("click", "view", "add_to_cart", "purchase", "scroll")
PAGES = ("/products/shoes/trail-runner", "/products/hats/wool-beanie", "/cart", "/checkout/payment")


def json_value(i: int) -> bytes:
    """One event of about 100 bytes; no two alike."""
    value = json.dumps(
        {
            "user_id": 10_000 + (i * 7919) % 90_000,
            "event": EVENTS[i % len(EVENTS)],
            "ts": 1_764_900_000_000 + i * 13,
            "page": f"{PAGES[(i // 5) % len(PAGES)]}/{i % 1000}",
        },
        separators=(",", ":"),
    ).encode()
    return value.ljust(100)


#: One ``append_batch`` list; every call appends the same list (each batch is compressed
#: on its own, so repeating it across batches does not help the codecs).
VALUES = [json_value(i) for i in range(BATCH_VALUES)]
VALUE_BYTES = sum(map(len, VALUES)) // len(VALUES)
LZ4_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 5_000_000, "text": ">= 5,000,000 msgs/s"},
]
SIZE_TARGETS: list[dict[str, Any]] = [
    {"of": "ratio", "op": "<=", "value": 1 / 3, "text": "zstd at least 3x smaller than none"},
]
APPEND_WHAT = (
    f"{BATCHES} calls/round of append_batch(list of {BATCH_VALUES:,} JSON values, ~{VALUE_BYTES} B)"
)


@pytest.fixture(scope="module")
def store(bench_root: Path) -> Iterator[tidelog.Store]:
    with tidelog.open(bench_root / "compression-store", fsync="never") as s:
        yield s


class FreshTopics:
    """A new one-partition topic of one codec per round, the previous one deleted."""

    def __init__(self, store: tidelog.Store, codec: str) -> None:
        self.store, self.codec, self.count = store, codec, 0

    def next(self) -> tidelog.Topic:
        if self.count:
            self.store.delete_topic(f"append-{self.codec}-{self.count - 1}")
        self.count += 1
        return self.store.create_topic(
            f"append-{self.codec}-{self.count - 1}", compression=self.codec
        )


def batch_list_loop(append_batch: Callable[..., Any], values: list[bytes], n: int) -> None:
    for _ in range(n):
        append_batch(values, partition=0)


def _append(benchmark: Any, store: tidelog.Store, codec: str, role: Any) -> None:
    topics = FreshTopics(store, codec)
    measured = Measured(batch_list_loop)
    benchmark.pedantic(
        measured,
        setup=lambda: ((topics.next().append_batch, VALUES, BATCHES), {}),
        rounds=ROUNDS,
        warmup_rounds=1,
    )
    record(
        benchmark,
        figure="compression-append" + ("-zstd" if codec == "zstd" else ""),
        title=f'append_batch(list of 1,000 JSON), compression="{codec}"',
        role=role,
        unit="msgs/s",
        work=BATCHES * BATCH_VALUES,
        what=APPEND_WHAT,
        targets=LZ4_TARGETS if codec == "lz4" else None,
        extra=measured.per_call(),
    )


@pytest.mark.benchmark(group="compression-append")
def test_append_batch_lz4(benchmark: Any, store: tidelog.Store) -> None:
    _append(benchmark, store, "lz4", "tidelog")


@pytest.mark.benchmark(group="compression-append")
def test_append_batch_none(benchmark: Any, store: tidelog.Store) -> None:
    _append(benchmark, store, "none", "reference")


@pytest.mark.benchmark(group="compression-append")
def test_append_batch_zstd(benchmark: Any, store: tidelog.Store) -> None:
    _append(benchmark, store, "zstd", "variant")


# ---------------------------------------------------------------------- bytes on disk and reads


@dataclass
class Written:
    """A topic of one codec holding ``messages`` JSON values, written once per module."""

    topic: tidelog.Topic
    messages: int
    size_bytes: int


@pytest.fixture(scope="module")
def written(store: tidelog.Store) -> dict[str, Written]:
    out = {}
    for codec in ("none", "lz4", "zstd"):
        topic = store.create_topic(f"scan-{codec}", compression=codec)
        for _ in range(BATCHES):
            topic.append_batch(VALUES, partition=0)
        out[codec] = Written(topic, topic.end_offset(0), topic.size_bytes(0))
    return out


def _size(benchmark: Any, written: dict[str, Written], codec: str, role: Any) -> None:
    w = written[codec]
    # Timed: nothing worth timing (the figure is the size); one call keeps the record shape.
    benchmark.pedantic(w.topic.size_bytes, args=(0,), rounds=1, warmup_rounds=0)
    record(
        benchmark,
        figure="compression-size" if codec != "lz4" else "compression-size-lz4",
        title=f'bytes on disk, compression="{codec}"',
        role=role,
        unit="MiB",
        work=0,
        value=w.size_bytes / MIB,
        what=f"{w.messages:,} JSON values of ~{VALUE_BYTES} B in batches of {BATCH_VALUES:,}",
        targets=SIZE_TARGETS if role == "tidelog" else None,
        extra={"ratio_to_none": w.size_bytes / written["none"].size_bytes},
    )


@pytest.mark.benchmark(group="compression-size")
def test_size_zstd(benchmark: Any, written: dict[str, Written]) -> None:
    _size(benchmark, written, "zstd", "tidelog")


@pytest.mark.benchmark(group="compression-size")
def test_size_none(benchmark: Any, written: dict[str, Written]) -> None:
    _size(benchmark, written, "none", "reference")


@pytest.mark.benchmark(group="compression-size")
def test_size_lz4(benchmark: Any, written: dict[str, Written]) -> None:
    _size(benchmark, written, "lz4", "variant")


def iterate_messages(topic: tidelog.Topic) -> int:
    n = 0
    for _msg in topic.read(partition=0, offset=0):
        n += 1
    return n


def scan_value_buffers(topic: tidelog.Topic, end: int) -> int:
    read_batch = topic.read_batch
    offset = total = 0
    while offset < end:
        batch = read_batch(0, offset, max_messages=BATCH_VALUES)
        buf, _bounds = batch.value_buffer()
        total += len(buf)
        offset = batch.next_offset
    return total


def _read(benchmark: Any, written: dict[str, Written], codec: str, role: Any, scan: bool) -> None:
    w = written[codec]
    measured = Measured(scan_value_buffers if scan else iterate_messages)
    args = (w.topic, w.messages) if scan else (w.topic,)
    result = benchmark.pedantic(measured, args=args, rounds=SCALE.scan_rounds, warmup_rounds=1)
    assert result == (w.messages * 100 if scan else w.messages)
    how = (
        "read_batch(max_messages=1000) + value_buffer() scan"
        if scan
        else "for msg in topic.read(0, 0)"
    )
    record(
        benchmark,
        figure=("compression-scan" if scan else "compression-read")
        + ("-zstd" if codec == "zstd" else ""),
        title=f'{how}, compression="{codec}"',
        role=role,
        unit="msgs/s",
        work=w.messages,
        what=f"{w.messages:,} JSON values of ~{VALUE_BYTES} B, page cache warm",
        extra={"msgs_per_s": per_second(benchmark, w.messages), **measured.per_call()},
    )


@pytest.mark.benchmark(group="compression-read")
def test_read_messages_lz4(benchmark: Any, written: dict[str, Written]) -> None:
    _read(benchmark, written, "lz4", "tidelog", scan=False)


@pytest.mark.benchmark(group="compression-read")
def test_read_messages_none(benchmark: Any, written: dict[str, Written]) -> None:
    _read(benchmark, written, "none", "reference", scan=False)


@pytest.mark.benchmark(group="compression-read")
def test_read_messages_zstd(benchmark: Any, written: dict[str, Written]) -> None:
    _read(benchmark, written, "zstd", "variant", scan=False)


@pytest.mark.benchmark(group="compression-scan")
def test_scan_lz4(benchmark: Any, written: dict[str, Written]) -> None:
    _read(benchmark, written, "lz4", "tidelog", scan=True)


@pytest.mark.benchmark(group="compression-scan")
def test_scan_none(benchmark: Any, written: dict[str, Written]) -> None:
    _read(benchmark, written, "none", "reference", scan=True)


@pytest.mark.benchmark(group="compression-scan")
def test_scan_zstd(benchmark: Any, written: dict[str, Written]) -> None:
    _read(benchmark, written, "zstd", "variant", scan=True)
