"""Messages out as Arrow and Parquet: round trips, zero-copy values, sparse partitions."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tidelog
import tidelog.arrow
from tidelog._optional import MissingDependencyError


def _rows(messages: Any) -> list[dict[str, Any]]:
    return [
        {
            "offset": m.offset,
            "timestamp_ms": m.timestamp_ms,
            "key": m.key,
            "value": m.value,
            "headers": m.headers,
        }
        for m in messages
    ]


def _table_rows(table: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.to_pylist()
    for r in rows:
        r["headers"] = dict(r["headers"])
    return rows


def _mixed(topic: tidelog.Topic, partition: int = 0) -> None:
    """Keys (none, empty, set), headers (none, several, an empty value), empty values and
    tombstones, in single appends and a batch."""
    topic.append(b"plain", partition=partition)
    topic.append(b"", key=b"", partition=partition)
    topic.append(
        b"v", key=b"k", headers={"a": b"1", "b": b"", "c": b"\x00\xff"}, partition=partition
    )
    topic.append(None, key=b"gone", headers={"why": b"deleted"}, partition=partition)
    topic.append_batch([b"x" * 1000, b"", b"yz"], partition=partition)
    topic.append(b"\x00" * 3, key=b"\xff", timestamp_ms=12345, partition=partition)


def test_a_record_batch_round_trips(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        _mixed(t)
        batch = t.read_batch(0, 0)
        rb = batch.to_arrow()
        assert isinstance(rb, pa.RecordBatch)
        assert rb.schema == tidelog.arrow.schema()
        assert rb.schema.names == ["offset", "timestamp_ms", "key", "value", "headers"]
        assert _table_rows(rb) == _rows(batch)
        assert rb.column("value").null_count == 1  # the tombstone
        assert rb.column("key").null_count == 4
        rb.validate(full=True)


_VIEW = np.dtype([("len", "<i4"), ("prefix", "S4"), ("buffer", "<i4"), ("offset", "<i4")])


def _value_addresses(column: pa.Array) -> list[int]:
    """Where each value of a binary_view array lies in memory (its data buffer + offset)."""
    buffers = column.buffers()
    views = np.frombuffer(buffers[1], _VIEW, len(column), column.offset * 16)
    return [buffers[2 + int(v["buffer"])].address + int(v["offset"]) for v in views]


def test_values_share_memory_with_the_segment(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        values = [b"%06d" % i * 20 for i in range(5000)]
        t.append_batch(values[:2500])
        t.append_batch(values[2500:])
        batch = t.read_batch(0, 0, max_messages=2500)
        rb = batch.to_arrow()
        buf, bounds = batch.value_buffer()
        mapped = np.frombuffer(buf, np.uint8).ctypes.data
        # The bytes of the mapping, not a copy of them.
        assert _value_addresses(rb.column("value")) == [mapped + int(b) for b in bounds[:-1]]
        # Across stored batches too: one view buffer spans both, with no copy.
        both = t.read_batch(0, 0, max_messages=5000)
        assert len(both) == 5000
        second = t.read_batch(0, 2500, max_messages=2500).value_buffer()
        start2 = np.frombuffer(second[0], np.uint8).ctypes.data
        addresses = _value_addresses(both.to_arrow().column("value"))
        assert addresses[:2500] == [mapped + int(b) for b in bounds[:-1]]
        assert addresses[2500:] == [start2 + int(b) for b in second[1][:-1]]
        table = t.to_arrow(0)
        assert _value_addresses(table.column("value").chunks[0])[:3] == addresses[:3]
        del batch, both, buf, second, rb
    # The Arrow buffers keep the mapping alive after the store closed and the batch is gone.
    gc.collect()
    assert table.column("value").to_pylist() == values
    assert table.column("offset").to_pylist() == list(range(5000))


def test_short_values_live_in_their_views(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        values = [b"", b"a", b"x" * 12, b"y" * 13, b"z" * 200]
        t.append_batch(values)
        column = t.read_batch(0, 0).to_arrow().column("value")
        column.validate(full=True)
        assert column.to_pylist() == values
        assert len(column.buffers()) == 3  # the two long values share one data buffer


def test_a_topic_round_trips_with_small_batches_joined(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=256 << 10) as store:
        t = store.create_topic("t", partitions=2)
        for _ in range(3):
            _mixed(t, 1)
        for i in range(2000):
            t.append(b"m%d" % i, key=b"%d" % (i % 10), partition=1)
        big = [os.urandom(100) for _ in range(2000)]
        t.append_batch(big, partition=1)
        for i in range(10):
            t.append(b"tail%d" % i, partition=1)
        assert t.segment_count(1) > 1
        table = t.to_arrow(1)
        assert table.schema == tidelog.arrow.schema()
        assert _table_rows(table) == _rows(t.read(1, 0))
        # 2000 single appends do not become 2000 chunks: one per read step.
        assert table.column("value").num_chunks < 5
        first_big = 3 * 8 + 2000
        assert table.column("value").to_pylist()[first_big : first_big + 2000] == big
        assert t.to_arrow(0).num_rows == 0
        assert t.to_arrow(1, start=5, end=5).num_rows == 0
        part = t.to_arrow(1, start=7, end=2030)
        assert part.column("offset").to_pylist() == list(range(7, 2030))


def test_a_compressed_topic_round_trips(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t", compression="zstd")
        _mixed(t)
        t.append_batch([b"%d" % i * 50 for i in range(3000)])
        table = t.to_arrow(0)
        assert _table_rows(table) == _rows(t.read(0, 0))
        batch = t.read_batch(0, 8, max_messages=3000)
        assert batch.to_arrow().column("value").to_pylist() == batch.values()


def test_a_compacted_partition_is_sparse(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=4096) as store:
        t = store.create_topic("t", cleanup_policy="compact", delete_retention_ms=3_600_000)
        for round_ in range(20):
            for k in range(10):
                t.append(b"%d-%d" % (k, round_), key=b"key%d" % k, headers={"r": b"%d" % round_})
        t.append(None, key=b"key3")
        t.compact()
        read = _rows(t.read(0, 0))
        offsets = [r["offset"] for r in read]
        assert len(offsets) < t.end_offset(0) - t.start_offset(0)  # sparse: compaction removed some
        assert _table_rows(t.to_arrow(0)) == read
        # start and end are offsets, not positions: a range with holes gets what is there.
        lo, hi = offsets[2] + 1, offsets[-3]
        sliced = t.to_arrow(0, start=lo, end=hi)
        assert sliced.column("offset").to_pylist() == [o for o in offsets if lo <= o < hi]
        assert sliced.column("value").null_count <= 1


def test_bad_ranges_are_errors(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        t.append_batch([b"a", b"b", b"c"])
        with pytest.raises(tidelog.OffsetOutOfRangeError, match="past the end offset 3"):
            t.to_arrow(0, end=4)
        with pytest.raises(tidelog.InvalidConfigError, match="start"):
            t.to_arrow(0, start=2, end=1)
        with pytest.raises(tidelog.OffsetOutOfRangeError):
            t.to_arrow(0, start=-1)
        with pytest.raises(TypeError, match="start"):
            t.to_arrow(0, start="1")  # type: ignore[arg-type]
        with pytest.raises(tidelog.PartitionNotFoundError):
            t.to_arrow(1)


def test_without_pyarrow_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        t.append(b"x")
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        with pytest.raises(MissingDependencyError, match=r"pip install pyarrow"):
            t.read_batch(0, 0).to_arrow()
        with pytest.raises(ImportError, match=r"tidelog\[arrow\]"):
            t.to_arrow(0)


def test_parquet_round_trip(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "store") as store:
        t = store.create_topic("t")
        _mixed(t)
        table = t.to_arrow(0)
        pq.write_table(table, tmp_path / "t.parquet")
        back = pq.read_table(tmp_path / "t.parquet")
        assert back.schema == table.schema
        assert _table_rows(back) == _rows(t.read(0, 0))


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_tidelog_export(tmp_path: Path, fmt: str) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        t = store.create_topic("t", partitions=2)
        _mixed(t, 0)
        _mixed(t, 1)
        t.append_batch([b"z" * 100] * 1000, partition=1)
        expected = [{"partition": p, **r} for p in (0, 1) for r in _rows(t.read(p, 0))]
    out = tmp_path / f"t.{fmt}"
    done = _cli("export", store_dir, "t", out, "--format", fmt)
    assert done.returncode == 0, done.stderr
    assert "exported 1,016 messages" in done.stderr
    if fmt == "parquet":
        back = pq.read_table(out)
    else:
        with pa.memory_map(str(out)) as source:
            back = pa.ipc.open_file(source).read_all()
    assert _table_rows(back) == expected
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # One partition and a range; --dir instead of the positional DIR.
    one = tmp_path / "one.parquet"
    done = _cli(
        "--dir", store_dir, "export", "t", one, "-p", "1", "--start", "2", "--end", "5", "-q"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert pq.read_table(one).column("offset").to_pylist() == [2, 3, 4]


def test_tidelog_export_errors(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        store.create_topic("t").append(b"x")
    missing = _cli("export", store_dir, "nope", tmp_path / "o.parquet")
    assert missing.returncode == 1 and "nope" in missing.stderr
    bad_partition = _cli("export", store_dir, "t", tmp_path / "o.parquet", "-p", "3")
    assert bad_partition.returncode == 1 and "partition 3" in bad_partition.stderr
    past = _cli("export", store_dir, "t", tmp_path / "o.parquet", "--end", "9")
    assert past.returncode == 1 and "past the end offset" in past.stderr
    into_dir = _cli("export", store_dir, "t", tmp_path)
    assert into_dir.returncode == 1 and "is a directory" in into_dir.stderr
    assert not (tmp_path / "o.parquet").exists()
    usage = _cli("export", store_dir)
    assert usage.returncode == 2
