"""A topic checked against a plain in-memory model: a list of segments of batches per partition.

The model knows the batch format's sizes, so it predicts exactly when a segment rolls and
which segments size-based retention removes; the store's start and end offsets must match it
after every step. Besides appends and reads, the machine closes and reopens the store, and
damages the tail of a partition's active segment while the store is closed (recovery must
drop exactly the damaged last batch, or zero junk written after the valid data).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tidelog
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

SEGMENT_BYTES = 4096
MAX_MESSAGE_BYTES = 2048
BATCH_HEADER_LEN = 64
RECORD_ENTRY_LEN = 20
#: A batch whose records have no keys and no headers uses 8-byte compact entries, or none
#: if its values are also all one size and its timestamps one ("uniform").
COMPACT_ENTRY_LEN = 8
TOPIC = "t"


@dataclass(frozen=True)
class Msg:
    """One message as the model remembers it."""

    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


@dataclass
class Batch:
    base: int
    msgs: list[Msg]

    @property
    def size(self) -> int:
        first = self.msgs[0]
        if any(m.key is not None or m.headers for m in self.msgs):
            entry = RECORD_ENTRY_LEN
        elif all(
            len(m.value) == len(first.value) and m.timestamp == first.timestamp for m in self.msgs
        ):
            entry = 0
        else:
            entry = COMPACT_ENTRY_LEN
        return BATCH_HEADER_LEN + sum(entry + encoded_len(m) for m in self.msgs)

    @property
    def next_offset(self) -> int:
        return self.base + len(self.msgs)


@dataclass
class Segment:
    base: int
    batches: list[Batch] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def next_offset(self) -> int:
        return self.batches[-1].next_offset if self.batches else self.base


def headers_len(headers: tuple[tuple[str, bytes], ...]) -> int:
    if not headers:
        return 0
    return 2 + sum(2 + len(name.encode()) + 4 + len(value) for name, value in headers)


def encoded_len(m: Msg) -> int:
    """Bytes of a record besides its entry."""
    return len(m.key or b"") + len(m.value) + headers_len(m.headers)


class PartitionModel:
    """Segments of batches, rolled and retained the way the store does it."""

    def __init__(self, retention_bytes: int | None) -> None:
        self.segments = [Segment(0)]
        self.retention_bytes = retention_bytes

    @property
    def start(self) -> int:
        return self.segments[0].base

    @property
    def end(self) -> int:
        return self.segments[-1].next_offset

    def messages(self) -> list[tuple[int, Msg]]:
        return [
            (b.base + i, m) for s in self.segments for b in s.batches for i, m in enumerate(b.msgs)
        ]

    def append(self, msgs: list[Msg]) -> int:
        batch = Batch(self.end, msgs)
        active = self.segments[-1]
        if active.size > 0 and active.size + batch.size > SEGMENT_BYTES:
            self.segments.append(Segment(self.end))
            self.apply_retention()
        self.segments[-1].batches.append(batch)
        event(f"a partition reached {min(len(self.segments), 4)} segments")
        return batch.base

    def apply_retention(self) -> None:
        if self.retention_bytes is None:
            return
        total = sum(s.size for s in self.segments)
        while len(self.segments) > 1 and total > self.retention_bytes:
            total -= self.segments.pop(0).size
            event("retention removed a segment")

    def drop_last_batch(self) -> None:
        self.segments[-1].batches.pop()


def garbage(n: int, seed: int) -> bytes:
    """Deterministic junk without zero bytes."""
    return bytes((i * 31 + seed * 17) % 255 + 1 for i in range(n))


def parse_batches(data: bytes, base: int) -> tuple[list[tuple[int, int, int]], int]:
    """Walks the batch headers of a data file: (position, base offset, length) of each batch
    while offsets stay continuous, and the end of the valid data."""
    pos, expected, out = 0, base, []
    while pos + BATCH_HEADER_LEN <= len(data):
        offset, length = struct.unpack_from("<QI", data, pos)
        total = length + 12
        if offset != expected or total < BATCH_HEADER_LEN or pos + total > len(data):
            break
        (last_delta,) = struct.unpack_from("<I", data, pos + 20)
        out.append((pos, offset, total))
        expected = offset + last_delta + 1
        pos += total
    return out, pos


keys = st.none() | st.binary(max_size=12)
# Small random values, and large ones (cheap to generate) that fill segments quickly.
values = st.binary(max_size=40) | st.builds(
    lambda n, b: bytes([b]) * n, st.integers(200, 1200), st.integers(0, 255)
)
header_sets = st.lists(
    st.tuples(st.text(st.characters(codec="utf-8"), max_size=6), st.binary(max_size=12)),
    max_size=3,
    unique_by=lambda h: h[0],
).map(tuple)
timestamps = st.none() | st.integers(0, 5_000)
partitions = st.none() | st.integers(0, 7)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tidelog-model-"))
        self.store: tidelog.Store | None = None
        self.topic: tidelog.Topic | None = None
        self.models: list[PartitionModel] = []
        self.options: dict[str, int | None] = {}

    # -- set-up, reopening and damage ---------------------------------------------------

    @initialize(
        n_partitions=st.integers(1, 3),
        retention_bytes=st.sampled_from([None, 10_000, 20_000]),
        index_interval_bytes=st.sampled_from([64, 1024, 4096]),
    )
    def create(
        self, n_partitions: int, retention_bytes: int | None, index_interval_bytes: int
    ) -> None:
        self.options = {
            "retention_bytes": retention_bytes,
            "index_interval_bytes": index_interval_bytes,
        }
        self.open()
        assert self.store is not None
        self.topic = self.store.create_topic(TOPIC, partitions=n_partitions)
        self.models = [PartitionModel(retention_bytes) for _ in range(n_partitions)]

    def open(self) -> None:
        self.store = tidelog.open(
            self.dir / "store",
            segment_bytes=SEGMENT_BYTES,
            max_message_bytes=MAX_MESSAGE_BYTES,
            retention_bytes=self.options["retention_bytes"],
            index_interval_bytes=self.options["index_interval_bytes"] or 4096,
        )
        if self.models:
            self.topic = self.store.topic(TOPIC)

    def close(self) -> None:
        # Drop every handle, so the next open is the only user of the partitions and runs
        # recovery.
        self.topic = None
        if self.store is not None:
            self.store.close()
        self.store = None

    def teardown(self) -> None:
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def t(self) -> tidelog.Topic:
        assert self.topic is not None
        return self.topic

    @rule()
    def reopen(self) -> None:
        self.close()
        self.open()

    @rule(
        partition=st.integers(0, 7),
        mode=st.sampled_from(["zero", "garble", "truncate", "garbage-after"]),
        n=st.integers(1, 100_000),
        seed=st.integers(0, 255),
    )
    def torn_tail(self, partition: int, mode: str, n: int, seed: int) -> None:
        p = partition % len(self.models)
        model = self.models[p]
        self.close()
        pdir = self.dir / "store" / "topics" / TOPIC / str(p)
        last = max(pdir.glob("*.log"))
        base = int(last.name.removesuffix(".log"))
        data = last.read_bytes()
        batches, end = parse_batches(data, base)
        # The files agree with the model's picture of the active segment.
        active = model.segments[-1]
        assert base == active.base
        assert [(o, size) for _, o, size in batches] == [(b.base, b.size) for b in active.batches]
        if mode == "garbage-after" or not batches:
            # The file may be trimmed to its contents (closing trims it) or pre-allocated;
            # junk goes right after the valid data either way, within the segment capacity
            # so the model's roll points stay valid.
            junk = garbage(min(n % 200 + 1, SEGMENT_BYTES - end), seed)
            with last.open("r+b") as f:
                f.seek(end)
                f.write(junk)
            if junk:
                event("junk written after the valid data")
        else:
            _, _, size = batches[-1]
            n = n % size + 1
            old = data[end - n : end]
            if mode == "zero":
                new = bytes(n)
            elif mode == "garble":
                new = bytes(b ^ g for b, g in zip(old, garbage(n, seed), strict=True))
            else:
                new = bytes(n)  # truncation: the file grows back with zeros at open
            if mode == "truncate":
                os.truncate(last, end - n)
            else:
                with last.open("r+b") as f:
                    f.seek(end - n)
                    f.write(new)
            if new != old:
                model.drop_last_batch()
                event(f"torn tail ({mode}) dropped the last batch")
        self.open()
        # Recovery left nothing but zeros after the valid data.
        data = last.read_bytes()
        _, new_end = parse_batches(data, base)
        assert new_end == active.size
        assert data[new_end:].count(0) == len(data) - new_end

    # -- appends -------------------------------------------------------------------------

    def _store_timestamp(self, p: int, offset: int) -> int:
        return self.t.read_batch(p, offset, max_messages=1)[0].timestamp_ms

    @rule(
        value=values,
        key=keys,
        headers=header_sets,
        partition=partitions,
        timestamp=timestamps,
    )
    def append(
        self,
        value: bytes,
        key: bytes | None,
        headers: tuple[tuple[str, bytes], ...],
        partition: int | None,
        timestamp: int | None,
    ) -> None:
        wanted = None if partition is None else partition % len(self.models)
        before = int(time.time() * 1000)
        p, offset = self.t.append(
            value, key=key, headers=dict(headers), partition=wanted, timestamp_ms=timestamp
        )
        after = int(time.time() * 1000)
        if wanted is not None:
            assert p == wanted
        if timestamp is None:
            timestamp = self._store_timestamp(p, offset)
            assert before - 1000 <= timestamp <= after + 1000
        expected = self.models[p].append([Msg(value, key, headers, timestamp)])
        assert offset == expected

    @rule(
        batch=st.lists(values, min_size=1, max_size=3),
        partition=partitions,
        timestamp=timestamps,
        form=st.sampled_from(["list", "bytes", "numpy"]),
    )
    def append_batch(
        self, batch: list[bytes], partition: int | None, timestamp: int | None, form: str
    ) -> None:
        wanted = None if partition is None else partition % len(self.models)
        if form == "list":
            p, offset = self.t.append_batch(batch, partition=wanted, timestamp_ms=timestamp)
        else:
            lengths = [len(v) for v in batch]
            p, offset = self.t.append_batch(
                b"".join(batch),
                lengths=np.array(lengths, dtype=np.int64) if form == "numpy" else lengths,
                partition=wanted,
                timestamp_ms=timestamp,
            )
        if wanted is not None:
            assert p == wanted
        if timestamp is None:
            timestamp = self._store_timestamp(p, offset)
        expected = self.models[p].append([Msg(v, None, (), timestamp) for v in batch])
        assert offset == expected

    @rule(
        partition=st.integers(0, 7),
        msgs=st.lists(st.tuples(values, keys, st.integers(0, 5_000)), min_size=1, max_size=40),
    )
    def append_many(self, partition: int, msgs: list[tuple[bytes, bytes | None, int]]) -> None:
        # Fills segments quickly, so rolls and retention happen within a few steps.
        p = partition % len(self.models)
        for value, key, timestamp in msgs:
            got = self.t.append(value, key=key, partition=p, timestamp_ms=timestamp)
            assert got == (p, self.models[p].append([Msg(value, key, (), timestamp)]))

    @rule(partition=st.integers(0, 7), extra=st.integers(1, 100))
    def append_too_large(self, partition: int, extra: int) -> None:
        p = partition % len(self.models)
        with pytest.raises(tidelog.MessageTooLargeError):
            self.t.append(b"x" * (MAX_MESSAGE_BYTES + extra), partition=p)

    @precondition(lambda self: self.options.get("retention_bytes") is not None)
    @rule()
    def enforce_retention(self) -> None:
        self.t.enforce_retention()
        for model in self.models:
            model.apply_retention()

    # -- reads ---------------------------------------------------------------------------

    def check_messages(self, p: int, got: list[tidelog.Message], start: int) -> None:
        expected = self.models[p].messages()
        expected = [(o, m) for o, m in expected if o >= start]
        assert len(got) <= len(expected)
        for msg, (offset, m) in zip(got, expected, strict=False):
            assert (msg.topic, msg.partition, msg.offset) == (TOPIC, p, offset)
            assert (msg.value, msg.key, msg.timestamp_ms) == (m.value, m.key, m.timestamp)
            assert msg.headers == dict(m.headers)

    @rule(partition=st.integers(0, 7), where=st.floats(0, 1), max_messages=st.integers(1, 50))
    def read_batch(self, partition: int, where: float, max_messages: int) -> None:
        p = partition % len(self.models)
        model = self.models[p]
        offset = model.start + int(where * (model.end - model.start))
        batch = self.t.read_batch(p, offset, max_messages=max_messages)
        got = list(batch)
        # A read returns at least one message when there is one, never more than asked,
        # and always the messages that follow the offset.
        assert len(got) <= max_messages
        assert (len(got) > 0) == (offset < model.end)
        self.check_messages(p, got, offset)
        assert batch.next_offset == offset + len(got)
        assert batch.offsets.tolist() == list(range(offset, offset + len(got)))
        assert batch.values() == [m.value for m in got]
        buf, bounds = batch.value_buffer()
        assert len(bounds) == len(got) + 1
        joined = bytes(buf)
        assert [joined[bounds[i] : bounds[i + 1]] for i in range(len(got))] == batch.values()

    @rule(partition=st.integers(0, 7), where=st.floats(0, 1))
    def read_iterator(self, partition: int, where: float) -> None:
        p = partition % len(self.models)
        model = self.models[p]
        offset = model.start + int(where * (model.end - model.start))
        got = list(self.t.read(p, offset))
        assert len(got) == model.end - offset
        self.check_messages(p, got, offset)

    @rule(partition=st.integers(0, 7), below=st.booleans(), distance=st.integers(1, 1000))
    def read_out_of_range(self, partition: int, below: bool, distance: int) -> None:
        p = partition % len(self.models)
        model = self.models[p]
        if below:
            if model.start == 0:
                return
            offset = max(0, model.start - distance)
        else:
            offset = model.end + distance
        with pytest.raises(tidelog.OffsetOutOfRangeError):
            self.t.read_batch(p, offset)
        with pytest.raises(tidelog.OffsetOutOfRangeError):
            self.t.read(p, offset)

    @rule(partition=st.integers(0, 7), data=st.data())
    def read_by_timestamp(self, partition: int, data: st.DataObject) -> None:
        p = partition % len(self.models)
        msgs = self.models[p].messages()
        near = [m.timestamp + d for _, m in msgs for d in (-1, 0, 1)]
        t = data.draw(st.sampled_from(near) if near else st.integers(-10, 6_000))
        expected = next((o for o, m in msgs if m.timestamp >= t), None)
        assert self.t.offset_for_timestamp(p, t) == expected
        got = list(self.t.read(p, timestamp_ms=t))
        if expected is None:
            assert got == []
        else:
            assert len(got) == self.models[p].end - expected
            self.check_messages(p, got, expected)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def offsets_match_the_model(self) -> None:
        if self.topic is None:
            return
        for p, model in enumerate(self.models):
            assert self.t.start_offset(p) == model.start
            assert self.t.end_offset(p) == model.end

    @invariant()
    def sizes_match_the_model(self) -> None:
        if self.topic is None:
            return
        for p, model in enumerate(self.models):
            assert self.t.segment_count(p) == len(model.segments)
            assert self.t.size_bytes(p) == sum(s.size for s in model.segments)


LogMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestLogModel = LogMachine.TestCase
