"""A compacted topic checked against a dict of the newest value per key.

Random appends (keys from a small set, tombstones among them, single messages and batches
of producers), rolls forced by small segments, compactions, reopens and reads in between.
After every step: ``dict(topic.latest())`` equals the oracle, and reading the partition
from its start yields rising offsets, each record exactly the one appended at that offset,
and every key's newest record (a tombstone too, until compaction may drop it).
"""

from __future__ import annotations

import shutil
import tempfile

import tidelog
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

KEYS = [b"k%d" % i for i in range(6)]
TOPIC = "profiles"


class CompactionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tidelog-compaction-model-")
        self.delete_retention_ms = 86_400_000
        self.store = tidelog.open(self.dir)
        self.topic = self.store.create_topic(
            TOPIC,
            partitions=1,
            cleanup_policy="compact",
            segment_bytes=4096,
            delete_retention_ms=self.delete_retention_ms,
        )
        #: Everything appended: offset -> (key, value or None).
        self.appended: dict[int, tuple[bytes, bytes | None]] = {}
        #: The oracle: newest value per key, tombstoned keys absent.
        self.latest: dict[bytes, bytes] = {}
        #: Newest offset per key, tombstones included.
        self.newest: dict[bytes, int] = {}
        self.counter = 0

    def _value(self, size: int) -> bytes:
        self.counter += 1
        return b"v%d-" % self.counter + b"x" * size

    def _record(self, offset: int, key: bytes, value: bytes | None) -> None:
        self.appended[offset] = (key, value)
        self.newest[key] = offset
        if value is None:
            self.latest.pop(key, None)
        else:
            self.latest[key] = value

    @rule(
        items=st.lists(
            st.tuples(st.sampled_from(KEYS), st.integers(0, 900), st.booleans()),
            min_size=1,
            max_size=12,
        )
    )
    def append(self, items: list[tuple[bytes, int, bool]]) -> None:
        for key, size, tombstone in items:
            value = None if tombstone else self._value(size)
            _, offset = self.topic.append(value, key=key, partition=0)
            self._record(offset, key, value)

    @rule(codec=st.sampled_from(["none", "lz4", "zstd"]))
    def switch_compression(self, codec: str) -> None:
        # Batches written from now on use the codec: the partition mixes compressed and
        # plain batches, which compaction reads and rewrites alike.
        self.store.alter_topic(TOPIC, compression=codec)

    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=8), size=st.integers(0, 60))
    def produce(self, keys: list[bytes], size: int) -> None:
        with self.store.producer(linger_ms=0) as producer:
            sent = [(k, self._value(size)) for k in keys]
            for k, v in sent:
                producer.send(TOPIC, v, key=k, partition=0)
            producer.flush()
        # The producer's messages are the newest ones, in send order.
        end = self.topic.end_offset(0)
        for i, (k, v) in enumerate(sent):
            self._record(end - len(sent) + i, k, v)

    @rule()
    def compact(self) -> None:
        self.topic.compact()

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = tidelog.open(self.dir)
        self.topic = self.store.topic(TOPIC)

    @rule()
    def expire_tombstones(self) -> None:
        # From now on compaction may remove tombstones (delete_retention_ms=0).
        self.store.alter_topic(TOPIC, delete_retention_ms=0)
        self.delete_retention_ms = 0

    @invariant()
    def latest_matches_the_oracle(self) -> None:
        assert dict(self.topic.latest()) == self.latest

    @invariant()
    def reads_are_what_was_appended(self) -> None:
        start = self.topic.start_offset(0)
        msgs = list(self.topic.read(0, offset=start))
        offsets = [m.offset for m in msgs]
        assert offsets == sorted(set(offsets)), "offsets rise"
        for m in msgs:
            assert m.key is not None
            assert self.appended[m.offset] == (m.key, m.value), m.offset
        present = set(offsets)
        for key, offset in self.newest.items():
            tombstone = self.appended[offset][1] is None
            if not (tombstone and self.delete_retention_ms == 0):
                assert offset in present, (key, offset)
        # A removed offset reads as the next message.
        gaps = [o for o in range(start, self.topic.end_offset(0)) if o not in present]
        if gaps:
            after = [o for o in offsets if o > gaps[0]]
            got = [m.offset for m in self.topic.read_batch(0, gaps[0], max_messages=1)]
            assert got == after[:1]

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


CompactionMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCompactionModel = CompactionMachine.TestCase
