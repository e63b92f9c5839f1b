"""The range state of a work queue against a per-offset model, and its journal on disk."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import tidelog
from hypothesis import given, settings
from hypothesis import strategies as st
from tidelog.queue_journal import COMPACT_BYTES, QueueJournal, queue_files, read_state
from tidelog.queue_state import (
    ACK,
    ACQUIRE,
    RELEASE,
    PartitionState,
    QueueState,
    decode_record,
    encode_record,
    runs,
)

N = 24  # offsets the model covers
NOW = 1_000


def test_runs() -> None:
    assert runs([]) == []
    assert runs([3, 4, 4, 5, 9, 10, 12]) == [(3, 6), (9, 11), (12, 13)]


def test_records_round_trip() -> None:
    ops = [(ACQUIRE, 1, 5, 9, 123, 2), (ACK, 0, 0, 1, 0, 0)]
    assert decode_record(encode_record("m-é", ops)) == ("m-é", ops)
    with pytest.raises(tidelog.CorruptRecordError):
        decode_record(encode_record("m", ops)[:-1])


class Model:
    """One partition as a plain dict: offset -> ("done",) or (member, expires, count)."""

    def __init__(self) -> None:
        self.slots: dict[int, tuple[str, int, int] | None] = {}  # None: finished
        self.frontier = 0

    def unfinished(self, o: int) -> bool:
        return self.slots.get(o, ("", 0, 0)) is not None

    def acked_below(self) -> int:
        o = 0
        while o in self.slots and self.slots[o] is None:
            o += 1
        return o


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["acquire", "finish", "release", "extend", "skip"]),
        st.integers(0, N - 1),
        st.integers(1, 6),
        st.sampled_from(["a", "b"]),
        st.sampled_from([0, 500, 2_000]),  # expiry: 0/500 are past NOW, 2000 is not
    ),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS)
def test_partition_state_matches_a_per_offset_model(
    ops: list[tuple[str, int, int, str, int]],
) -> None:
    part, model = PartitionState(), Model()
    finished_total = 0
    for kind, start, length, member, expires in ops:
        end = min(N, start + length)
        span = range(start, end)
        if kind == "acquire":
            # As a member does: only unfinished offsets, handed out count + 1 times.
            if not all(model.unfinished(o) for o in span):
                continue
            counts = {(model.slots.get(o) or ("", 0, 0))[2] for o in span}
            if len(counts) != 1:
                continue
            count = counts.pop() + 1
            part.assign(start, end, member, expires, count)
            for o in range(model.frontier, start):
                model.slots[o] = ("", 0, 0)
            for o in span:
                model.slots[o] = (member, expires, count)
            model.frontier = max(model.frontier, end)
        elif kind == "release":
            if not all(o < model.frontier and model.unfinished(o) for o in span):
                continue
            part.assign(start, end, "", 0, 1)
            for o in span:
                model.slots[o] = ("", 0, 1)
        elif kind == "finish":
            newly = part.finish(start, end)
            expected = sum(1 for o in span if model.unfinished(o))
            assert newly == expected
            finished_total += newly
            for o in range(model.frontier, start):
                model.slots.setdefault(o, ("", 0, 0))
            for o in span:
                model.slots[o] = None
            model.frontier = max(model.frontier, end)
        elif kind == "extend":
            part.extend(start, end, member, expires)
            for o in span:
                slot = model.slots.get(o)
                if slot is not None and o < model.frontier and slot[0] == member:
                    model.slots[o] = (member, expires, slot[2])
        else:
            lost = part.skip_to(start)
            assert lost == sum(1 for o in range(start) if model.unfinished(o))
            for o in range(start):
                model.slots[o] = None
        model.frontier = max(model.frontier, model.acked_below())
        # The ranges agree with the model offset by offset.
        assert part.acked_below == model.acked_below()
        assert part.frontier == model.frontier
        for o in range(N + 2):
            assert part.finished(o) == (not model.unfinished(o)), o
            lease = part.lease_at(o)
            slot = model.slots.get(o)
            if o < model.frontier and slot is not None:
                assert lease is not None and (lease.member, lease.expires, lease.count) == slot
            else:
                assert lease is None
        # Invariants: sorted, disjoint, non-empty; finished runs start above acked_below.
        spans = [(x.start, x.end) for x in part.leases]
        assert all(s < e for s, e in spans) and spans == sorted(spans)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        assert all(s > part.acked_below and s < e for s, e in part.done)
        assert all(a[1] < b[0] for a, b in itertools.pairwise(part.done))
        # Availability: expired or released leases, then the frontier, lowest first.
        available = [
            (o, (model.slots.get(o) or ("", 0, 0))[2])
            for o in range(N)
            if model.unfinished(o)
            and (o >= model.frontier or (model.slots.get(o) or ("", 0, 0))[1] <= NOW)
        ]
        got = [(o, c) for s, e, c in part.available(NOW, N, N) for o in range(s, e)]
        assert got == available
        held_now = [model.slots.get(o) for o in range(model.frontier)]
        assert part.in_flight(NOW) == sum(1 for x in held_now if x is not None and x[1] > NOW)
        for member_ in ("a", "b"):
            held = [
                o
                for o in range(N)
                if o < model.frontier and (slot := model.slots.get(o)) is not None
                if slot[0] == member_
            ]
            for s, e in runs(held):
                assert part.held(s, e, member_)
            if held:
                assert not part.held(held[0], N + 1, member_)


# --------------------------------------------------------------------------- the journal


def _journal(tmp_path: Path, group: str = "g") -> QueueJournal:
    return QueueJournal(queue_files(tmp_path, "jobs", group), 2)


def _ack_batches(journal: QueueJournal, batches: int, size: int = 100) -> None:
    for b in range(batches):
        with journal.locked():
            journal.write("m", [(ACQUIRE, b % 2, b // 2 * size, (b // 2 + 1) * size, 9, 1)])
            journal.write("m", [(ACK, b % 2, b // 2 * size, (b // 2 + 1) * size, 0, 0)])


def test_members_see_each_others_changes_and_a_reopen_sees_them_all(tmp_path: Path) -> None:
    a, b = _journal(tmp_path), _journal(tmp_path)
    with a.locked():
        a.write("a", [(ACQUIRE, 0, 0, 10, 9, 1), (ACK, 0, 0, 4, 0, 0)])
    with b.locked() as state:
        assert state.partitions[0].acked_below == 4 and state.acked == 4
        b.write("b", [(RELEASE, 0, 4, 10, 0, 1)])
    with a.locked() as state:
        assert state.partitions[0].leases[0].member == ""
    a.close()
    b.close()
    state = _journal(tmp_path).state
    assert state.acked == 4 and state.partitions[0].lease_at(5) is not None


def test_the_journal_is_compacted_into_a_snapshot(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _ack_batches(journal, 2_000)
    files = journal.files
    assert journal.generation > 0, "the journal was compacted"
    assert files.size_bytes() < 2 * COMPACT_BYTES
    assert journal.bytes_written > 2 * COMPACT_BYTES
    expected = journal.state.to_json()
    journal.close()
    assert _journal(tmp_path).state.to_json() == expected
    state = read_state(files, 2)
    assert state is not None and state.to_json() == expected
    assert state.acked == 200_000
    assert [p.acked_below for p in state.partitions] == [100_000, 100_000]


def test_a_torn_record_is_cut_off(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _ack_batches(journal, 3)
    path = journal.files.journal
    journal.close()
    with open(path, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a record cut short by a crash
    size = path.stat().st_size
    assert read_state(journal.files, 2) is not None  # readers leave it alone
    reopened = _journal(tmp_path)
    assert reopened.state.acked == 300
    assert path.stat().st_size == size - 11
    with reopened.locked():
        reopened.write("m", [(ACQUIRE, 1, 100, 200, 9, 1), (ACK, 1, 100, 200, 0, 0)])
    reopened.close()
    assert _journal(tmp_path).state.acked == 400


def test_a_crash_between_snapshot_and_new_journal_loses_nothing(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _ack_batches(journal, 4)
    files = journal.files
    old_journal = files.journal.read_bytes()
    with journal.locked():
        journal.compact()
    journal.close()
    # As if the process died after renaming the snapshot, before replacing the journal.
    files.journal.write_bytes(old_journal)
    state = _journal(tmp_path).state
    assert state.acked == 400
    assert [p.acked_below for p in state.partitions] == [200, 200]


def test_a_damaged_snapshot_is_reported(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    _ack_batches(journal, 2)
    with journal.locked():
        journal.compact()
    journal.close()
    raw = bytearray(journal.files.snapshot.read_bytes())
    raw[-2] ^= 0xFF
    journal.files.snapshot.write_bytes(bytes(raw))
    with pytest.raises(tidelog.CorruptRecordError, match="snapshot"):
        _journal(tmp_path)


def test_fsync_always_syncs_every_record(tmp_path: Path) -> None:
    # The core syncs (and counts its fdatasyncs): no Python code calls fsync.
    journal = QueueJournal(queue_files(tmp_path, "jobs", "g"), 1, fsync="always")
    with journal.locked():
        journal.write("m", [(ACQUIRE, 0, 0, 1, 9, 1)])
        journal.write("m", [(ACK, 0, 0, 1, 0, 0)])
    assert journal._log.syncs == 2
    journal.close()


def test_state_json_round_trip() -> None:
    state = QueueState.empty(2)
    state.apply("m", [(ACQUIRE, 0, 0, 5, 9, 1), (ACK, 0, 1, 2, 0, 0), (ACQUIRE, 1, 0, 1, 9, 3)])
    assert (
        QueueState.from_json(state.to_json(), 3).to_json()["partitions"][:2]
        == (state.to_json()["partitions"])
    )
