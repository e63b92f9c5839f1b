"""The idempotent sequence check against a small model of its rules.

A state machine makes random ``Topic.append_sequenced`` calls for a few producers in two
partitions: batches that continue the sequence, retries of earlier batches (inside and
outside the window), gaps, partial overlaps, new epochs (starting at 0 or not), writes
from an older epoch, producer ids the partition has never seen, plain appends in between,
and closes and reopens of the store (sometimes deleting the producer-state snapshots, so
the state is rebuilt from the batch headers). Segments are small, so rolls (and snapshots)
happen often. After every call, the offset returned, the duplicate flag or the error type
must be what the model says.

The model (per partition; it keeps nothing but this):

- ``end``: the next offset. Every written batch of ``n`` records takes ``end..end+n``.
- per producer id: ``epoch`` (the newest epoch written) and ``batches``, the last
  ``WINDOW = 5`` batches of that epoch as ``(first sequence, last sequence, first offset)``.

A batch ``(pid, epoch, base, n)`` is judged in this order:

1. unknown ``pid``: written, whatever ``epoch`` and ``base`` (a new or expired producer);
2. ``epoch < newest``: ``ProducerFencedError``;
3. ``epoch > newest``: written if ``base == 0`` (the window restarts with it), else
   ``OutOfOrderSequenceError``;
4. same epoch, ``(base, base + n - 1)`` equal to a remembered batch: a duplicate; the call
   returns that batch's first offset with ``duplicate=True`` and writes nothing;
5. same epoch, ``base == last remembered sequence + 1``: written (the oldest remembered
   batch drops out once there are more than five);
6. anything else (a gap, a partial overlap, a retry older than the window):
   ``OutOfOrderSequenceError``.

Nothing refused or duplicated changes the model. Reopening the store changes nothing
either: the state is a function of the log.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tidelog
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

WINDOW = 5
PARTITIONS = 2
SEGMENT_BYTES = 4096
PRODUCERS = (1, 2, 3)
VALUE = b"v" * 600  # big enough that segments roll every few batches

Outcome = tuple[int, bool] | type[Exception]


@dataclass
class Producer:
    epoch: int
    batches: list[tuple[int, int, int]] = field(default_factory=list)


@dataclass
class Partition:
    end: int = 0
    producers: dict[int, Producer] = field(default_factory=dict)

    def judge(self, pid: int, epoch: int, base: int, n: int) -> Outcome:
        """The model's verdict; applies a written batch."""
        last = base + n - 1
        entry = self.producers.get(pid)
        if entry is None:
            self.producers[pid] = entry = Producer(epoch)
        elif epoch < entry.epoch:
            return tidelog.ProducerFencedError
        elif epoch > entry.epoch:
            if base != 0:
                return tidelog.OutOfOrderSequenceError
            entry.epoch, entry.batches = epoch, []
        else:
            for first, end_seq, offset in entry.batches:
                if (first, end_seq) == (base, last):
                    return (offset, True)
            if base != entry.batches[-1][1] + 1:
                return tidelog.OutOfOrderSequenceError
        offset = self.end
        entry.batches = [*entry.batches, (base, last, offset)][-WINDOW:]
        self.end += n
        return (offset, False)


class SequenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tidelog-seq-"))
        self.store = tidelog.open(self.dir, segment_bytes=SEGMENT_BYTES)
        self.topic = self.store.create_topic("t", partitions=PARTITIONS)
        self.model = [Partition() for _ in range(PARTITIONS)]
        # What each producer sent that was written, per partition: (epoch, base, n), so
        # retries can repeat any of them, inside the window or not.
        self.sent: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        self.epochs = dict.fromkeys(PRODUCERS, 0)
        self.calls = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def call(self, pid: int, epoch: int, base: int, n: int, partition: int) -> None:
        expected = self.model[partition].judge(pid, epoch, base, n)
        values = [VALUE + b"%d:%d:%d" % (pid, epoch, base + i) for i in range(n)]
        try:
            got: Outcome = self.topic.append_sequenced(
                values,
                producer_id=pid,
                producer_epoch=epoch,
                base_sequence=base,
                partition=partition,
            )
        except (tidelog.ProducerFencedError, tidelog.OutOfOrderSequenceError) as e:
            got = type(e)
        self.calls += 1
        if isinstance(got, tuple):
            event("duplicate" if got[1] else "written")
        else:
            event(got.__name__)
        assert got == expected, (
            f"call {self.calls}: producer {pid} epoch {epoch} sequences {base}..{base + n - 1} "
            f"in partition {partition}: store {got}, model {expected}"
        )
        if isinstance(expected, tuple) and not expected[1]:
            self.sent.setdefault((pid, partition), []).append((epoch, base, n))

    def next_sequence(self, pid: int, partition: int) -> int:
        entry = self.model[partition].producers.get(pid)
        if entry is None or entry.epoch != self.epochs[pid]:
            return 0
        return entry.batches[-1][1] + 1

    @rule(
        pid=st.sampled_from(PRODUCERS),
        partition=st.integers(0, PARTITIONS - 1),
        n=st.integers(1, 3),
    )
    def continue_sequence(self, pid: int, partition: int, n: int) -> None:
        self.call(pid, self.epochs[pid], self.next_sequence(pid, partition), n, partition)

    @rule(
        pid=st.sampled_from(PRODUCERS),
        partition=st.integers(0, PARTITIONS - 1),
        back=st.integers(1, 9),
    )
    def retry(self, pid: int, partition: int, back: int) -> None:
        """Repeats the ``back``-th latest written batch (the window holds five)."""
        sent = self.sent.get((pid, partition), [])
        if not sent:
            return
        epoch, base, n = sent[-min(back, len(sent))]
        self.call(pid, epoch, base, n, partition)

    @rule(
        pid=st.sampled_from(PRODUCERS),
        partition=st.integers(0, PARTITIONS - 1),
        skip=st.integers(1, 3),
        n=st.integers(1, 3),
    )
    def gap(self, pid: int, partition: int, skip: int, n: int) -> None:
        self.call(pid, self.epochs[pid], self.next_sequence(pid, partition) + skip, n, partition)

    @rule(
        pid=st.sampled_from(PRODUCERS),
        partition=st.integers(0, PARTITIONS - 1),
        shift=st.sampled_from([(1, 0), (0, 1), (0, -1), (-1, 1)]),
    )
    def overlap(self, pid: int, partition: int, shift: tuple[int, int]) -> None:
        """A batch overlapping the latest one without matching it."""
        sent = self.sent.get((pid, partition), [])
        if not sent:
            return
        epoch, base, n = sent[-1]
        base, n = base + shift[0], n + shift[1]
        if base >= 0 and n >= 1:
            self.call(pid, epoch, base, n, partition)

    @rule(
        pid=st.sampled_from(PRODUCERS),
        partition=st.integers(0, PARTITIONS - 1),
        base=st.sampled_from([0, 0, 0, 1, 4]),
    )
    def new_epoch(self, pid: int, partition: int, base: int) -> None:
        """The producer's next instance: a new epoch, starting at 0 (or wrongly not)."""
        self.epochs[pid] += 1
        self.call(pid, self.epochs[pid], base, 1, partition)

    @rule(
        pid=st.sampled_from(PRODUCERS),
        partition=st.integers(0, PARTITIONS - 1),
        older=st.integers(1, 2),
    )
    def old_epoch(self, pid: int, partition: int, older: int) -> None:
        """A zombie of an earlier instance writes."""
        epoch = self.epochs[pid] - older
        if epoch >= 0:
            self.call(pid, epoch, self.next_sequence(pid, partition), 1, partition)

    @rule(partition=st.integers(0, PARTITIONS - 1), base=st.integers(0, 50))
    def unknown_producer(self, partition: int, base: int) -> None:
        """A producer id the partition never saw may start anywhere."""
        pid = 100 + self.calls
        self.call(pid, 0, base, 1, partition)
        self.call(pid, 0, base + 1, 1, partition)

    @rule(partition=st.integers(0, PARTITIONS - 1))
    def plain(self, partition: int) -> None:
        _, offset = self.topic.append(b"plain", partition=partition)
        assert offset == self.model[partition].end
        self.model[partition].end += 1

    @precondition(lambda self: self.calls > 0)
    @rule(delete_snapshots=st.booleans())
    def reopen(self, delete_snapshots: bool) -> None:
        self.store.close()
        event(f"reopen with {len(list(self.dir.glob('topics/t/*/*.snapshot')))} snapshots")
        if delete_snapshots:
            for path in self.dir.glob("topics/t/*/*.snapshot"):
                path.unlink()
        self.store = tidelog.open(self.dir, segment_bytes=SEGMENT_BYTES)
        self.topic = self.store.topic("t")

    @invariant()
    def ends_match(self) -> None:
        for p in range(PARTITIONS):
            assert self.topic.end_offset(p) == self.model[p].end


TestSequenceModel = SequenceMachine.TestCase
TestSequenceModel.settings = settings(
    max_examples=100,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
