from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import tidelog


def test_append_and_read_back(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    assert topic.append(b"v0", key=b"k", headers={"h": b"1"}, timestamp_ms=1000) == (0, 0)
    assert topic.append(b"v1") == (0, 1)
    first, second = list(topic.read(0))
    assert (first.topic, first.partition, first.offset, first.timestamp_ms) == ("t", 0, 0, 1000)
    assert (first.key, first.value, first.headers) == (b"k", b"v0", {"h": b"1"})
    assert (second.key, second.value, second.headers) == (None, b"v1", {})
    assert topic.start_offset(0) == 0
    assert topic.end_offset(0) == 2


def test_keyed_partitioning_is_stable(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=8)
    chosen = {topic.append(b"x", key=b"customer-42")[0] for _ in range(10)}
    assert len(chosen) == 1
    # Kafka's default partitioner: murmur2(key) & 0x7fffffff % 8.
    assert topic.append(b"x", key=b"foobar")[0] == (-790332482 & 0x7FFFFFFF) % 8


def test_round_robin_without_key(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=3)
    assert sorted(topic.append(b"x")[0] for _ in range(6)) == [0, 0, 1, 1, 2, 2]


def test_append_batch_list_and_buffer(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    assert topic.append_batch([b"a", b"bb", b""], partition=0) == (0, 0)
    assert topic.append_batch(b"xyyzzz", lengths=np.array([1, 2, 3]), partition=0) == (0, 3)
    assert topic.append_batch(bytearray(b"pq"), lengths=[1, 1], partition=0) == (0, 6)
    assert [m.value for m in topic.read(0)] == [b"a", b"bb", b"", b"x", b"yy", b"zzz", b"p", b"q"]


@pytest.mark.parametrize("fsync", ["never", "always"])
@pytest.mark.parametrize("shape", ["same-size", "varied"])
def test_large_buffer_batches_round_trip(
    tmp_path: Path, fsync: Literal["never", "always"], shape: str
) -> None:
    """Batches over 32 KB are written from the caller's buffer with their CRC computed on
    another thread: every value, offset and timestamp must read back, also after a reopen
    (which checks the tail's CRCs), and same-size values must take no record entries."""
    rng = np.random.default_rng(7)
    n = 600
    lengths = np.full(n, 100) if shape == "same-size" else rng.integers(0, 200, n)
    buffers = [rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8).tobytes() for _ in range(3)]
    expected: list[bytes] = []
    with tidelog.open(tmp_path / "s", fsync=fsync) as store:
        topic = store.create_topic("t")
        for i, buffer in enumerate(buffers):
            # A bytearray is written with the GIL held, bytes without: both paths.
            values = bytearray(buffer) if i == 1 else buffer
            assert topic.append_batch(
                values, lengths=lengths, partition=0, timestamp_ms=5000 + i
            ) == (0, i * n)
            cuts = np.cumsum(lengths)[:-1]
            expected += [bytes(v) for v in np.split(np.frombuffer(buffer, dtype=np.uint8), cuts)]
        entries = 0 if shape == "same-size" else 8 * n
        assert topic.size_bytes(0) == 3 * (64 + entries + int(lengths.sum()))
    with tidelog.open(tmp_path / "s") as store:
        messages = list(store.topic("t").read(0, 0))
        assert [m.value for m in messages] == expected
        assert [m.offset for m in messages] == list(range(3 * n))
        assert {m.timestamp_ms for m in messages[n : 2 * n]} == {5001}
        blob, offsets = store.topic("t").read_batch(0, n, max_messages=n).value_buffer()
        assert blob.tobytes() == buffers[1]
        assert list(np.diff(offsets)) == list(lengths)


def test_buffer_batches_from_many_threads(store: tidelog.Store) -> None:
    """Concurrent large appends share the one CRC helper: each batch still gets its own CRC
    (a wrong one would fail the re-read below)."""
    import threading

    topic = store.create_topic("t")
    lengths = np.full(500, 80)

    def writer(k: int) -> None:
        for j in range(40):
            topic.append_batch(bytes([k * 40 + j]) * 40_000, lengths=lengths, partition=0)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen: dict[int, int] = {}
    for message in topic.read(0, 0):
        assert len(set(message.value or b"")) == 1
        seen[(message.value or b"")[0]] = seen.get((message.value or b"")[0], 0) + 1
    assert seen == {b: 500 for b in range(160)}


def test_append_batch_bad_input(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    with pytest.raises(TypeError, match=r"values\[1\]"):
        topic.append_batch([b"a", "b"])  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidConfigError, match="sum"):
        topic.append_batch(b"abc", lengths=[1, 1])
    with pytest.raises(tidelog.InvalidConfigError, match="negative"):
        topic.append_batch(b"abc", lengths=[4, -1])
    with pytest.raises(tidelog.InvalidConfigError, match="empty"):
        topic.append_batch([])
    with pytest.raises(TypeError, match="values"):
        topic.append_batch(123, lengths=[1])  # type: ignore[arg-type]
    big = np.full(400, 100)
    big[7] = (1 << 20) + 1  # the default max_message_bytes, plus one
    with pytest.raises(tidelog.MessageTooLargeError, match="max_message_bytes"):
        topic.append_batch(b"v" * int(big.sum()), lengths=big)
    assert topic.end_offset(0) == 0


def test_bad_values_name_the_argument(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    with pytest.raises(TypeError, match="value must be bytes, got str"):
        topic.append("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be bytes"):
        topic.append(b"x", key="k")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header"):
        topic.append(b"x", headers={"h": "v"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header names"):
        topic.append(b"x", headers={1: b"v"})  # type: ignore[arg-type]
    assert topic.end_offset(0) == 0


def test_append_call_forms(store: tidelog.Store) -> None:
    """Every way of calling ``append`` (a hand-made native method): by position or keyword,
    keywords in any order or built at run time, and each wrong call refused with the
    argument named and nothing appended."""
    topic = store.create_topic("t", partitions=2)
    assert topic.append(value=b"a", partition=1) == (1, 0)
    assert topic.append(b"b", timestamp_ms=7, partition=1, key=b"k", headers=None) == (1, 1)
    built: dict[str, Any] = {"par" + "tition": 1}  # a keyword that is not an interned name
    assert topic.append(b"c", **built) == (1, 2)
    assert topic.append(None, key=b"k", partition=0) == (0, 0)  # a tombstone
    calls: list[tuple[tuple[object, ...], dict[str, object], str]] = [
        ((), {}, "missing required argument 'value'"),
        ((), {"key": b"k"}, "missing required argument 'value'"),
        ((b"a", b"b"), {}, r"takes 1 positional argument but 2 were given"),
        ((b"a",), {"value": b"b"}, "multiple values for argument 'value'"),
        ((b"a",), {"partitions": 1}, "unexpected keyword argument 'partitions'"),
        ((b"a",), {"partition": "1"}, "partition must be int, got str"),
        ((b"a",), {"timestamp_ms": 1.5}, "timestamp_ms must be int, got float"),
    ]
    for args, kwargs, message in calls:
        with pytest.raises(TypeError, match=message):
            topic.append(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(tidelog.PartitionNotFoundError):
        topic.append(b"a", partition=2)
    assert (topic.end_offset(0), topic.end_offset(1)) == (1, 3)
    [tombstone] = topic.read(0)
    assert (tombstone.key, tombstone.value) == (b"k", None)
    assert [m.timestamp_ms for m in topic.read(1)][1] == 7
    assert "partition=None" in str(inspect.signature(topic.append))
    assert topic.append.__doc__ and "(partition, offset)" in topic.append.__doc__


def test_message_too_large(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, max_message_bytes=1000) as store:
        topic = store.create_topic("t")
        topic.append(b"x" * 1000)
        with pytest.raises(tidelog.MessageTooLargeError, match="1001"):
            topic.append(b"x" * 1001)
        with pytest.raises(tidelog.MessageTooLargeError):
            topic.append_batch([b"ok", b"x" * 5000])
        assert topic.end_offset(0) == 1


def test_unknown_partition(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    with pytest.raises(tidelog.PartitionNotFoundError, match="2 partitions"):
        topic.append(b"x", partition=2)
    with pytest.raises(tidelog.PartitionNotFoundError):
        topic.read_batch(-1)
    with pytest.raises(tidelog.PartitionNotFoundError):
        topic.end_offset(5)


def test_offsets_out_of_range(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    topic.append_batch([b"a", b"b"])
    assert len(topic.read_batch(0, 2)) == 0
    assert list(topic.read(0, 2)) == []
    with pytest.raises(tidelog.OffsetOutOfRangeError, match="offset 3"):
        topic.read_batch(0, 3)
    with pytest.raises(tidelog.OffsetOutOfRangeError):
        topic.read(0, 3)
    # Below the start, as any offset under start_offset (issue 13: not InvalidConfigError).
    with pytest.raises(tidelog.OffsetOutOfRangeError, match="offset -1"):
        topic.read_batch(0, -1)


def test_read_batch_views(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    topic.append_batch([b"a", b"bb", b"ccc", b"dddd"], timestamp_ms=5)
    batch = topic.read_batch(0, 1, max_messages=2)
    assert len(batch) == 2
    assert batch.next_offset == 3
    assert batch.values() == [b"bb", b"ccc"]
    assert batch.offsets.tolist() == [1, 2]
    assert batch.offsets.dtype == np.int64
    assert batch[-1].value == b"ccc"
    with pytest.raises(IndexError):
        batch[2]
    buf, bounds = batch.value_buffer()
    assert bounds.tolist() == [0, 2, 5]
    assert bytes(buf) == b"bbccc"
    assert buf.readonly
    assert [m.offset for m in batch] == [1, 2]


def test_value_buffer_across_stored_batches(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    topic.append_batch([b"a", b"bb"])
    topic.append(b"ccc")
    buf, bounds = topic.read_batch(0).value_buffer()
    assert bytes(buf) == b"abbccc"
    assert bounds.tolist() == [0, 1, 3, 6]


def test_zero_copy_buffer_outlives_store_and_deletion(tmp_path: Path) -> None:
    store = tidelog.open(tmp_path)
    topic = store.create_topic("t")
    topic.append_batch([b"hello", b"world"])
    buf, _ = topic.read_batch(0).value_buffer()
    store.delete_topic("t")
    store.close()
    assert bytes(buf) == b"helloworld"


def test_read_by_timestamp(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    for ts in [100, 200, 150, 300]:
        topic.append(str(ts).encode(), timestamp_ms=ts)
    assert topic.offset_for_timestamp(0, 0) == 0
    assert topic.offset_for_timestamp(0, 150) == 1
    assert topic.offset_for_timestamp(0, 201) == 3
    assert topic.offset_for_timestamp(0, 301) is None
    assert [m.value for m in topic.read(0, timestamp_ms=160)] == [b"200", b"150", b"300"]
    assert list(topic.read(0, timestamp_ms=1000)) == []
    with pytest.raises(tidelog.InvalidConfigError):
        topic.read(0, 1, timestamp_ms=5)


def test_segments_roll_and_reads_cross_them(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=8192, max_message_bytes=1024) as store:
        topic = store.create_topic("t")
        values = [bytes([i % 251]) * 300 for i in range(200)]
        for v in values:
            topic.append(v, timestamp_ms=1_000 + len(v))
        assert topic.segment_count(0) > 5
        assert [m.value for m in topic.read(0)] == values
        assert [m.value for m in topic.read(0, 150)] == values[150:]
    with tidelog.open(tmp_path, segment_bytes=8192, max_message_bytes=1024) as store:
        assert [m.value for m in store.topic("t").read(0)] == values


def test_retention_by_bytes_advances_start(tmp_path: Path) -> None:
    opts = {"segment_bytes": 8192, "max_message_bytes": 1024, "retention_bytes": 20_000}
    with tidelog.open(tmp_path, **opts) as store:  # type: ignore[arg-type]
        topic = store.create_topic("t")
        for i in range(300):
            topic.append(str(i).encode() * 50)
        start = topic.start_offset(0)
        assert start > 0
        assert topic.size_bytes(0) <= 20_000 + 8192
        assert next(iter(topic.read(0))).offset == start
        with pytest.raises(tidelog.OffsetOutOfRangeError):
            topic.read_batch(0, 0)
        assert topic.end_offset(0) == 300


def test_retention_by_age(tmp_path: Path) -> None:
    opts = {"segment_bytes": 8192, "max_message_bytes": 1024, "retention_ms": 60_000}
    with tidelog.open(tmp_path, **opts) as store:  # type: ignore[arg-type]
        topic = store.create_topic("t")
        for _ in range(100):
            topic.append(b"o" * 200, timestamp_ms=1_000)  # ancient
        for _ in range(5):
            topic.append(b"n" * 200)
        topic.enforce_retention()
        # Every sealed segment held only ancient messages; the active one survives whole.
        remaining = list(topic.read(0))
        assert topic.start_offset(0) == remaining[0].offset > 50
        assert [(m.value or b"")[:1] for m in remaining[-5:]] == [b"n"] * 5
        assert topic.segment_count(0) == 1


def test_corruption_names_the_damaged_batch_and_keeps_the_good_ones(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=8192) as store:
        topic = store.create_topic("t")
        for i in range(4):
            topic.append_batch([b"%d-%d" % (i, j) * 10 for j in range(5)])  # offsets 5i..5i+4
        for _ in range(60):
            topic.append(b"f" * 200)  # roll, so the first batches are in a sealed segment
        assert topic.segment_count(0) > 1
    segment = tmp_path / "topics" / "t" / "0" / "00000000000000000000.log"
    data = bytearray(segment.read_bytes())
    at = data.index(b"2-3" * 10)  # a value inside the third batch (offsets 10..14)
    data[at] ^= 0x01
    segment.write_bytes(bytes(data))
    with tidelog.open(tmp_path, segment_bytes=8192) as store:
        topic = store.topic("t")
        good = topic.read_batch(0, 0)
        assert good.offsets.tolist() == list(range(10))
        with pytest.raises(
            tidelog.CorruptRecordError, match=r"00000000000000000000\.log.*offset 10"
        ):
            topic.read_batch(0, good.next_offset)
        assert topic.read_batch(0, 15, max_messages=5).offsets.tolist() == list(range(15, 20))
