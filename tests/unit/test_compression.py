"""Compression (API.md, "Compression (version 2)"): ``"none" | "lz4" | "zstd"`` per topic or
per producer; batches compressed whole, the CRC over the compressed bytes, and every reader
(reads, consumers, ``value_buffer()``, transactions, another process, ``dump``/``verify``)
decompressing transparently.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tidelog
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from tidelog import _core
from tidelog.errors import CorruptRecordError, InvalidConfigError

CODECS = ["none", "lz4", "zstd"]


def _json_value(i: int) -> bytes:
    """About 100 bytes of realistic, varied JSON."""
    event = ["click", "view", "purchase", "scroll"][i % 4]
    value = json.dumps(
        {
            "user_id": 10_000 + i * 7 % 90_000,
            "event": event,
            "ts": 1_764_900_000_000 + i,
            "page": f"/products/{i % 97}",
        }
    ).encode()
    return value.ljust(100)


def _batches(store_dir: Path, topic: str = "t", partition: int = 0) -> list[dict[str, Any]]:
    seg_dir = store_dir / "topics" / topic / str(partition)
    out: list[dict[str, Any]] = []
    for seg in _core.segment_files(seg_dir):
        out.extend(_core.inspect_segment(seg, records=True)["batches"])
    return out


def _data(
    msgs: list[tidelog.Message],
) -> list[tuple[int, bytes | None, bytes | None, dict[str, bytes]]]:
    return [(m.offset, m.key, m.value, m.headers) for m in msgs]


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_a_compressed_topic_reads_back_what_was_written_every_way(
    tmp_path: Path, codec: str
) -> None:
    with tidelog.open(tmp_path / "s") as store:
        t = store.create_topic("t", compression=codec)
        assert t.config["compression"] == codec
        assert t.append(b"one", key=b"k", headers={"h": b"v"}) == (0, 0)  # one record, still works
        values = [_json_value(i) for i in range(1000)]
        t.append_batch(values, partition=0)
        buffer = b"".join(values)
        t.append_batch(
            buffer, lengths=[100] * 1000, partition=0
        )  # uniform, straight from the buffer
        t.append_batch(buffer[:5050], lengths=list(range(1, 101)), partition=0)  # compact entries
        expected = [
            b"one",
            *values,
            *values,
            *(buffer[n * (n - 1) // 2 : n * (n + 1) // 2] for n in range(1, 101)),
        ]
        msgs = list(t.read(0))
        assert [m.value for m in msgs] == expected
        assert (msgs[0].key, msgs[0].headers) == (b"k", {"h": b"v"})
        assert [m.offset for m in msgs] == list(range(len(expected)))
        # Stored compressed: every batch names the codec, and takes far less than its values.
        stored = _batches(tmp_path / "s")
        assert {b["compression"] for b in stored} == {codec}
        assert stored[1]["size"] < 100_000 / 3
        # read_batch and value_buffer of one compressed batch: a buffer of the decompressed values.
        for offset, count in [(1, 1000), (5, 10), (1001, 1000), (2001, 100), (2050, 7)]:
            batch = t.read_batch(0, offset, max_messages=count)
            assert batch.values() == expected[offset : offset + count]
            buf, bounds = batch.value_buffer()
            assert bytes(buf) == b"".join(expected[offset : offset + count])
            assert list(bounds) == [
                0,
                *(sum(len(v) for v in expected[offset : offset + k]) for k in range(1, count + 1)),
            ]
            assert list(batch.offsets) == list(range(offset, offset + count))
        # Several batches at once: the joined copy, decompressed too.
        batch = t.read_batch(0, 0, max_messages=3000)
        buf, _ = batch.value_buffer()
        assert bytes(buf) == b"".join(expected[:3000])
        # Lookups by offset and time see records inside compressed batches.
        later = t.append_batch([b"late"], partition=0, timestamp_ms=4_000_000_000_000)[1]
        assert t.offset_for_timestamp(0, 4_000_000_000_000) == later
        assert [m.value for m in t.read(0, timestamp_ms=4_000_000_000_000)] == [b"late"]
        # A consumer group reads it too.
        with store.consumer("t", group="g") as consumer:
            got: list[bytes | None] = []
            while len(got) < len(expected) + 1:
                polled = consumer.poll(max_messages=333, timeout=1)
                assert polled
                got.extend(m.value for m in polled)
                consumer.commit()
            assert got == [*expected, b"late"]


def test_a_producer_compresses_its_batches_over_the_topics_setting(store: tidelog.Store) -> None:
    plain = store.create_topic("plain")
    packed = store.create_topic("packed", compression="zstd")
    values = [_json_value(i) for i in range(500)]
    with store.producer(compression="lz4") as p:
        assert p.compression == "lz4"
        for v in values:
            p.send("plain", v, key=b"key", headers={"n": v[:3]})
        p.flush()
    with store.producer(compression="none") as p:
        for v in values:
            p.send("packed", v)
    with store.producer() as p:
        assert p.compression is None
        for v in values:
            p.send("packed", v)
    assert [m.value for m in plain.read(0)] == values
    assert {m.key for m in plain.read(0)} == {b"key"}
    assert [m.headers for m in plain.read(0)] == [{"n": v[:3]} for v in values]
    assert [m.value for m in packed.read(0)] == values + values
    directory = Path(store.path)
    assert {b["compression"] for b in _batches(directory, "plain")} == {"lz4"}
    codecs = [b["compression"] for b in _batches(directory, "packed")]
    # The "none" producer's batches, then the topic's own codec.
    assert set(codecs[: codecs.index("zstd")]) == {"none"} and set(
        codecs[codecs.index("zstd") :]
    ) == {"zstd"}


def test_unknown_codecs_are_refused_naming_the_value_and_the_choices(
    tmp_path: Path, store: tidelog.Store
) -> None:
    allowed = r'"none", "lz4" or "zstd", got "gzip"'
    with pytest.raises(InvalidConfigError, match=rf"compression must be {allowed}"):
        store.create_topic("t", compression="gzip")
    with pytest.raises(InvalidConfigError, match=rf"compression must be {allowed}"):
        store.producer(compression="gzip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="compression"):
        store.producer(compression=4)  # type: ignore[arg-type]
    store.create_topic("t")
    with pytest.raises(InvalidConfigError, match=rf"compression must be {allowed}"):
        store.alter_topic("t", compression="gzip")
    assert store.topic("t").config["compression"] == "none"
    with pytest.raises(InvalidConfigError, match=rf"compression must be {allowed}"):
        tidelog.open(tmp_path / "other", compression="gzip")


def test_the_store_default_applies_to_new_topics_and_is_stored(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "s", compression="zstd") as store:
        t = store.create_topic("t")
        assert t.config["compression"] == "zstd"
        assert store.create_topic("u", compression="none").config["compression"] == "none"
        t.append_batch([_json_value(i) for i in range(100)])
        with store.consumer("t", group="g") as consumer:
            assert len(consumer.poll(max_messages=1000, timeout=1)) == 100
            consumer.commit()
        # Internal topics (one small record per commit) stay uncompressed.
        codecs = {
            b["compression"]
            for p in range(8)
            for b in _batches(tmp_path / "s", "__consumer_offsets", p)
        }
        assert codecs == {"none"}
    with pytest.raises(InvalidConfigError, match="compression"):
        tidelog.open(tmp_path / "s", compression="lz4")
    with tidelog.open(tmp_path / "s") as store:
        assert len(list(store.topic("t").read(0))) == 100
    assert {b["compression"] for b in _batches(tmp_path / "s")} == {"zstd"}


def test_transactions_on_compressed_topics(store: tidelog.Store) -> None:
    topic = store.create_topic("t", compression="lz4")
    topic.append(b"before")
    with store.producer(name="p") as producer:
        tx = store.transaction(producer)
        for i in range(50):
            tx.send("t", _json_value(i))
        producer.flush()
        topic.append(b"after")
        # read_committed stops at the open transaction; read_uncommitted sees it, pending.
        assert [m.value for m in topic.read(0)] == [b"before"]
        batch = topic.read_batch(0, 0, max_messages=100, isolation="read_uncommitted")
        assert batch.values() == [b"before", *(_json_value(i) for i in range(50)), b"after"]
        assert batch.pending_offsets() == list(range(1, 51))
        tx.commit()
        with store.transaction(producer) as tx2:
            tx2.send("t", b"aborted")
            producer.flush()
            tx2.abort()
    values = [m.value for m in topic.read(0)]
    assert values == [b"before", *(_json_value(i) for i in range(50)), b"after"]
    kinds = [(b["compression"], b["attributes"] & 3) for b in _batches(Path(store.path))]
    assert ("lz4", 1) in kinds, "transactional batches compressed"
    assert all(codec == "none" for codec, attrs in kinds if attrs & 2), "markers stay plain"


def test_an_exactly_once_step_between_compressed_topics(store: tidelog.Store) -> None:
    inputs = store.create_topic("in", compression="zstd")
    out = store.create_topic("out", compression="lz4")
    inputs.append_batch([b"in-%d" % i for i in range(20)])
    with (
        store.consumer("in", group="g", delivery="exactly-once") as consumer,
        store.producer(name="worker") as producer,
    ):
        msgs = consumer.poll(max_messages=100, timeout=1)
        assert len(msgs) == 20
        with store.transaction(producer, consumer) as tx:
            for m in msgs:
                tx.send("out", (m.value or b"").replace(b"in", b"out"))
        assert consumer.committed() == {0: 20}
    assert [m.value for m in out.read(0)] == [b"out-%d" % i for i in range(20)]


def test_mixed_batches_and_a_codec_altered_midway(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with tidelog.open(directory, segment_bytes=64 << 10) as store:
        t = store.create_topic("t")
        written: list[bytes] = []
        for round_, codec in enumerate(["none", "lz4", "none", "zstd", "lz4"]):
            store.alter_topic("t", compression=codec)
            assert t.config["compression"] == codec
            values = [_json_value(round_ * 1000 + i) for i in range(300)]
            t.append_batch(values[:200])
            for v in values[200:]:
                t.append(v, key=b"k%d" % round_)
            written.extend(values)
        assert [m.value for m in t.read(0)] == written
    codecs = [b["compression"] for b in _batches(directory)]
    assert codecs[0] == "none" and codecs[-1] == "lz4"
    assert {"none", "lz4", "zstd"} <= set(codecs)
    assert len({*(str(p) for p in (directory / "topics/t/0").glob("*.log"))}) > 1, "rolled"
    # Another process reads all of it back.
    script = (
        "import sys, tidelog\n"
        "with tidelog.open(sys.argv[1]) as s:\n"
        "    t = s.topic('t')\n"
        "    sys.stdout.buffer.write(b''.join(m.value + b'|' for m in t.read(0)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(directory)], capture_output=True, timeout=60, check=True
    )
    assert proc.stdout == b"".join(v + b"|" for v in written)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dump_and_verify_on_a_compressed_store(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with tidelog.open(directory) as store:
        t = store.create_topic("t", compression="zstd")
        t.append(b"hello", key=b"greeting")
        t.append_batch([_json_value(i) for i in range(100)])
    verify = _cli("verify", "--dir", directory)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    dump = _cli("dump", "--dir", directory, "--records", "t")
    assert dump.returncode == 0, dump.stderr
    assert "zstd" in dump.stdout
    assert "greeting" in dump.stdout and '{"user_id": 10000, "event": "click"' in dump.stdout
    dumped = json.loads(
        _cli("dump", "--dir", directory, "--json", "--records", "t").stdout.splitlines()[0]
    )
    assert [b["compression"] for b in dumped["batches"]] == ["zstd", "zstd"]
    assert len(dumped["batches"][1]["records"]) == 100

    # A body that does not decompress although its CRC matches (a writer bug): verify and
    # readers name the batch; nothing panics.
    log = sorted((directory / "topics/t/0").glob("*.log"))[0]
    data = bytearray(log.read_bytes())
    second = _batches(directory)[1]
    pos, size = second["position"], second["size"]
    data[pos + 68 : pos + size] = bytes(size - 68)
    crc = crc32c(bytes(data[pos + 16 : pos + size]))
    data[pos + 12 : pos + 16] = crc.to_bytes(4, "little")
    log.write_bytes(bytes(data))
    verify = _cli("verify", "--dir", directory)
    assert verify.returncode == 1
    assert "unreadable compressed batch" in verify.stdout + verify.stderr
    with tidelog.open(directory) as store:
        t = store.topic("t")
        assert [m.value for m in t.read_batch(0, 0)] == [b"hello"]
        with pytest.raises(
            CorruptRecordError, match=rf"{log.name}.*position {pos}|position {pos}.*{log.name}"
        ):
            t.read_batch(0, 1)


_values = st.binary(max_size=300) | st.sampled_from([b"", b"x" * 100, _json_value(3)])
_message = st.tuples(
    _values,
    st.none() | st.binary(max_size=20),
    st.dictionaries(st.text(min_size=1, max_size=5), st.binary(max_size=10), max_size=3),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(CODECS),
            st.sampled_from(["append", "batch", "buffer"]),
            st.lists(_message, min_size=1, max_size=30),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_random_messages_under_random_codecs_read_back_equal(
    tmp_path_factory: pytest.TempPathFactory,
    rounds: list[tuple[str, str, list[tuple[bytes, bytes | None, dict[str, bytes]]]]],
) -> None:
    directory = tmp_path_factory.mktemp("prop")
    expected: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
    with tidelog.open(directory / "s", segment_bytes=16 << 10) as store:
        t = store.create_topic("t")
        for codec, how, messages in rounds:
            store.alter_topic("t", compression=codec)
            if how == "append":
                for value, key, headers in messages:
                    t.append(value, key=key, headers=headers, partition=0)
                    expected.append((key, value, headers))
            elif how == "batch":
                t.append_batch([v for v, _, _ in messages], partition=0)
                expected.extend((None, v, {}) for v, _, _ in messages)
            else:
                values = [v for v, _, _ in messages]
                t.append_batch(b"".join(values), lengths=[len(v) for v in values], partition=0)
                expected.extend((None, v, {}) for v in values)
        got = [(m.key, m.value, m.headers) for m in t.read(0)]
        assert got == expected
        offset = len(expected) // 2
        batch = t.read_batch(0, offset, max_messages=len(expected))
        buf, _ = batch.value_buffer()
        assert bytes(buf) == b"".join(v for _, v, _ in expected[offset:])
    with tidelog.open(directory / "s") as store:
        assert [(m.key, m.value, m.headers) for m in store.topic("t").read(0)] == expected
