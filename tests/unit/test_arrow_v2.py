"""``to_arrow()`` built natively and imported through the Arrow C data interface (issue 17,
second part): every entry layout (full, compact, uniform), reads that start inside a stored
batch or span several, values shared with the segment, and buffers that outlive the store."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import tidelog
import tidelog.arrow

_VIEW = np.dtype([("len", "<i4"), ("prefix", "S4"), ("buffer", "<i4"), ("offset", "<i4")])


def _rows(messages: Any) -> list[tuple[int, int, bytes | None, bytes | None, dict[str, bytes]]]:
    return [(m.offset, m.timestamp_ms, m.key, m.value, dict(m.headers)) for m in messages]


def _arrow_rows(
    batch: pa.RecordBatch | pa.Table,
) -> list[tuple[int, int, bytes | None, bytes | None, dict[str, bytes]]]:
    return [
        (r["offset"], r["timestamp_ms"], r["key"], r["value"], dict(r["headers"]))
        for r in batch.to_pylist()
    ]


def _addresses(column: pa.Array) -> list[int | None]:
    """Where each long value of a binary_view array lies (None for inline values)."""
    buffers = column.buffers()
    views = np.frombuffer(buffers[1], _VIEW, len(column), column.offset * 16)
    return [
        buffers[2 + int(v["buffer"])].address + int(v["offset"]) if v["len"] > 12 else None
        for v in views
    ]


def _layouts(topic: tidelog.Topic) -> list[bytes | None]:
    """Appends one batch of each entry layout; returns the values in offset order."""
    uniform = [b"u%03d" % i + b"-" * 20 for i in range(50)]  # one size: no entries
    compact = [b"c%d" % i * (i % 9) for i in range(50)]  # sizes vary, no keys: compact
    full: list[bytes | None] = [None if i % 7 == 0 else b"f%d" % i * 5 for i in range(50)]
    topic.append_batch(uniform)
    topic.append_batch(compact)
    topic.append_batch(full)  # tombstones: full entries
    shorts = [b"s%d" % (i % 10) for i in range(50)]  # one size, inline in their views
    topic.append_batch(shorts)
    return [*uniform, *compact, *full, *shorts]


@pytest.mark.parametrize("start", [0, 1, 25, 49, 50, 77, 149, 150, 199])
def test_every_layout_round_trips_from_any_start(tmp_path: Path, start: int) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        values = _layouts(t)
        for max_messages in (1, 3, 60, 1000):
            batch = t.read_batch(0, start, max_messages=max_messages)
            rb = batch.to_arrow()
            rb.validate(full=True)
            assert rb.schema == tidelog.arrow.schema()
            assert _arrow_rows(rb) == _rows(batch)
            assert rb.column("value").to_pylist() == values[start : start + len(batch)]


def test_long_values_point_into_the_segment_in_every_layout(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        _layouts(t)
        for start in (0, 50, 100):
            for skip in (0, 7):
                batch = t.read_batch(0, start + skip, max_messages=50 - skip)
                buf, bounds = batch.value_buffer()
                base = np.frombuffer(buf, np.uint8).ctypes.data if len(buf) else 0
                expected = [
                    base + int(bounds[i]) if bounds[i + 1] - bounds[i] > 12 else None
                    for i in range(len(batch))
                ]
                assert _addresses(batch.to_arrow().column("value")) == expected
        # A read across the four stored batches: one data buffer spans them in the mapping.
        column = t.read_batch(0, 0, max_messages=1000).to_arrow().column("value")
        assert len(column.buffers()) == 3


def test_a_compressed_batch_shares_its_decompressed_image(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t", compression="zstd")
        uniform = [b"value %05d " % i * 4 for i in range(300)]
        compact = [b"value %05d " % i * (2 + i % 3) for i in range(300)]
        t.append_batch(uniform)
        t.append_batch(compact)
        for start, values in ((0, uniform), (300, compact)):
            batch = t.read_batch(0, start + 10, max_messages=100)
            rb = batch.to_arrow()
            rb.validate(full=True)
            assert rb.column("value").to_pylist() == values[10:110]
            assert rb.column("offset").to_pylist() == list(range(start + 10, start + 110))
            buf, bounds = batch.value_buffer()
            base = np.frombuffer(buf, np.uint8).ctypes.data
            assert _addresses(rb.column("value")) == [base + int(b) for b in bounds[:-1]]


def test_arrays_outlive_the_batch_and_the_store(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        values = _layouts(t)
        rb = t.read_batch(0, 0, max_messages=1000).to_arrow()
        value_column = rb.column("value")
        offsets = rb.column("offset")
    del rb
    gc.collect()
    assert value_column.to_pylist() == values
    assert offsets.to_pylist() == list(range(len(values)))


def test_an_empty_read_is_an_empty_batch(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        t.append(b"x")
        rb = t.read_batch(0, 1).to_arrow()
        rb.validate(full=True)
        assert rb.num_rows == 0 and rb.schema == tidelog.arrow.schema()


def test_a_topic_with_headers_and_keys_in_many_chunks(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        for i in range(300):
            t.append(b"%d" % i * (i % 30), key=b"k%d" % i, headers={"n": b"%d" % i})
        table = t.to_arrow(0, start=5, end=290)
        table.validate(full=True)
        assert _arrow_rows(table) == _rows(t.read(0, 5))[:285]
        chunks = list(tidelog.arrow.iter_arrow_batches(t, 0, start=5, end=290, chunk_bytes=512))
        assert len(chunks) > 1
        assert sum(len(c) for c in chunks) == 285


def test_a_batch_of_short_values_keeps_no_data_buffer(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        t.append_batch([b"%d" % i for i in range(100)])  # compact entries, all inline
        t.append_batch([b"ab" for _ in range(100)])  # uniform, inline
        column = t.read_batch(0, 0, max_messages=1000).to_arrow().column("value")
        assert len(column) == 200
        assert len(column.buffers()) == 2  # validity and views: nothing points at the segment
