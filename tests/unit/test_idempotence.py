"""Idempotence through the Python API: sequenced appends, producer identities and fencing.

``Topic.append_sequenced`` is the native sequenced append (what an idempotent producer's
writer does per batch), so these tests drive the sequence check directly; the producer
tests check the identities the registry hands out and that they survive reopening.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tidelog


def seq(
    topic: tidelog.Topic,
    values: list[bytes],
    pid: int,
    epoch: int,
    base: int,
    partition: int = 0,
) -> tuple[int, bool]:
    return topic.append_sequenced(
        values, producer_id=pid, producer_epoch=epoch, base_sequence=base, partition=partition
    )


def values_of(topic: tidelog.Topic, partition: int = 0) -> list[bytes]:
    return [(m.value or b"") for m in topic.read(partition)]


def test_duplicates_return_the_original_offsets(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    topic.append(b"plain", partition=0)
    assert seq(topic, [b"a", b"b"], 11, 0, 0) == (1, False)
    assert seq(topic, [b"c"], 11, 0, 2) == (3, False)
    assert seq(topic, [b"a", b"b"], 11, 0, 0) == (1, True)
    assert seq(topic, [b"c"], 11, 0, 2) == (3, True)
    assert topic.end_offset(0) == 4
    assert values_of(topic) == [b"plain", b"a", b"b", b"c"]
    # Sequences are per partition: the same numbers in partition 1 are new there.
    assert seq(topic, [b"x", b"y"], 11, 0, 0, partition=1) == (0, False)
    assert seq(topic, [b"x", b"y"], 11, 0, 0, partition=1) == (0, True)
    assert seq(topic, [b"d"], 11, 0, 3) == (4, False)


def test_gaps_raise_out_of_order_with_a_clear_message(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    seq(topic, [b"a", b"b", b"c"], 3, 0, 0)
    with pytest.raises(tidelog.OutOfOrderSequenceError, match=r"expected sequence 3.*got 5") as e:
        seq(topic, [b"x"], 3, 0, 5)
    assert "producer 3" in str(e.value)
    assert isinstance(e.value, tidelog.TidelogError)
    with pytest.raises(tidelog.OutOfOrderSequenceError):
        seq(topic, [b"x"], 3, 0, 1)  # inside the first batch, not a whole batch
    with pytest.raises(tidelog.OutOfOrderSequenceError):
        seq(topic, [b"x", b"y", b"z", b"w"], 3, 0, 0)  # same start, different length
    assert topic.end_offset(0) == 3
    assert seq(topic, [b"d"], 3, 0, 3) == (3, False)


def test_the_window_is_five_batches(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    for i in range(7):
        assert seq(topic, [b"%d" % i], 1, 0, i) == (i, False)
    for i in range(2, 7):
        assert seq(topic, [b"%d" % i], 1, 0, i) == (i, True)
    for i in range(2):
        with pytest.raises(tidelog.OutOfOrderSequenceError):
            seq(topic, [b"%d" % i], 1, 0, i)
    assert topic.end_offset(0) == 7


def test_older_epochs_are_fenced(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    seq(topic, [b"a"], 5, 0, 0)
    seq(topic, [b"b"], 5, 1, 0)
    with pytest.raises(tidelog.ProducerFencedError, match=r"epoch 0.*epoch 1") as e:
        seq(topic, [b"c"], 5, 0, 1)
    assert "5" in str(e.value)
    with pytest.raises(tidelog.OutOfOrderSequenceError, match="sequence 0"):
        seq(topic, [b"c"], 5, 2, 1)  # a new epoch starts at 0
    assert seq(topic, [b"c"], 5, 2, 0) == (2, False)
    assert values_of(topic) == [b"a", b"b", b"c"]


def test_append_sequenced_checks_its_arguments(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    for bad in (
        {"producer_id": -1, "producer_epoch": 0, "base_sequence": 0},
        {"producer_id": 1, "producer_epoch": -1, "base_sequence": 0},
        {"producer_id": 1, "producer_epoch": 0, "base_sequence": -1},
    ):
        with pytest.raises(
            tidelog.InvalidConfigError, match=next(k for k, v in bad.items() if v == -1)
        ):
            topic.append_sequenced([b"a"], **bad)
    with pytest.raises(tidelog.InvalidConfigError):
        topic.append_sequenced([], producer_id=1, producer_epoch=0, base_sequence=0)
    with pytest.raises(tidelog.InvalidConfigError, match="producer_epoch must be between 0 and"):
        topic.append_sequenced([b"a"], producer_id=1, producer_epoch=1 << 15, base_sequence=0)
    with pytest.raises(tidelog.InvalidConfigError, match="base_sequence must be between 0 and"):
        topic.append_sequenced([b"a"], producer_id=1, producer_epoch=0, base_sequence=1 << 31)
    assert topic.end_offset(0) == 0


def test_duplicates_are_detected_after_the_store_reopens(tmp_path: Path) -> None:
    # Small segments: the later rounds roll and snapshot the producer state.
    with tidelog.open(tmp_path, segment_bytes=4096) as store:
        topic = store.create_topic("t")
        for i in range(10):
            seq(topic, [b"%d-a" % i, b"%d-b" % i], 21, 3, 2 * i)
        seq(topic, [b"other"], 22, 0, 0)
    with tidelog.open(tmp_path, segment_bytes=4096) as store:
        topic = store.topic("t")
        for i in range(5, 10):
            assert seq(topic, [b"retry", b"retry"], 21, 3, 2 * i) == (2 * i, True)
        assert seq(topic, [b"other"], 22, 0, 0) == (20, True)
        with pytest.raises(tidelog.OutOfOrderSequenceError):
            seq(topic, [b"gap"], 21, 3, 21)
        with pytest.raises(tidelog.ProducerFencedError):
            seq(topic, [b"old"], 21, 2, 20)
        assert seq(topic, [b"next"], 21, 3, 20) == (21, False)
    with tidelog.open(tmp_path, segment_bytes=4096) as store:
        topic = store.topic("t")
        for i in range(300):
            seq(topic, [b"x" * 20], 23, 0, i)
        assert topic.segment_count(0) > 1
    with tidelog.open(tmp_path, segment_bytes=4096) as store:
        topic = store.topic("t")
        assert seq(topic, [b"x" * 20], 23, 0, 299)[1] is True
        assert seq(topic, [b"next"], 21, 3, 20) == (21, True)
        assert values_of(topic).count(b"next") == 1


def test_named_producers_keep_their_id_and_bump_the_epoch(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t")
        first = store.producer(name="billing")
        assert first.idempotent and first.name == "billing"
        pid, epoch = first.producer_id, first.producer_epoch
        assert pid is not None and epoch is not None
        first.send("t", b"1")
        first.close()
        second = store.producer(name="billing")
        assert (second.producer_id, second.producer_epoch) == (pid, epoch + 1)
        other = store.producer(name="shipping")
        assert other.producer_id not in (None, pid)
        second.close()
        other.close()
    with tidelog.open(tmp_path) as store:
        third = store.producer(name="billing")
        assert (third.producer_id, third.producer_epoch) == (pid, epoch + 2)
        # A new epoch starts its sequences at 0 in every partition.
        third.send("t", b"2")
        third.flush()
        third.close()
        assert [m.value for m in store.topic("t").read(0)] == [b"1", b"2"]


def test_unnamed_and_non_idempotent_producers(store: tidelog.Store) -> None:
    store.create_topic("t")
    ids = set()
    for _ in range(5):
        with store.producer() as p:
            assert p.idempotent and p.name is None
            assert p.producer_id is not None and p.producer_epoch == 0
            ids.add(p.producer_id)
    assert len(ids) == 5, "every unnamed producer gets its own id"
    with store.producer(name="n", idempotent=False) as p:
        assert not p.idempotent
        assert (p.producer_id, p.producer_epoch) == (None, None)
        p.send("t", b"plain")
    with store.producer(idempotent=False) as p:
        assert p.producer_id is None
        p.send("t", b"plain")
    with store.producer(name="n") as named:
        assert named.producer_id not in ids


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../x", "a b", "x" * 201, "é", "a\0b"])
def test_bad_producer_names(store: tidelog.Store, name: str) -> None:
    with pytest.raises(tidelog.InvalidConfigError, match="producer name"):
        store.producer(name=name)


def test_a_producer_name_of_the_wrong_type_names_the_argument(store: tidelog.Store) -> None:
    with pytest.raises(TypeError, match="name"):
        store.producer(name=5)  # type: ignore[arg-type]


def test_a_newer_instance_fences_the_older_one(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    old = store.producer(name="worker")
    old.send("t", b"old-1")
    old.flush()
    new = store.producer(name="worker")
    with pytest.raises(tidelog.ProducerFencedError, match="worker"):
        old.send("t", b"old-2")
        old.flush()
    with pytest.raises(tidelog.ProducerFencedError):
        old.flush()  # stays fenced
    new.send("t", b"new-1")
    new.flush()
    new.close()
    with pytest.raises(tidelog.ProducerFencedError):
        old.close()
    assert [m.value for m in topic.read(0)] == [b"old-1", b"new-1"]


FENCER = r"""
import sys, tidelog
with tidelog.open(sys.argv[1]) as store:
    with store.producer(name="worker") as p:
        print(p.producer_id, p.producer_epoch, flush=True)
        p.send("t", b"from-child")
"""


def test_fencing_across_processes(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t")
        old = store.producer(name="worker")
        old.send("t", b"from-parent")
        old.flush()
        out = subprocess.run(
            [sys.executable, "-c", FENCER, str(tmp_path)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        assert (int(out[0]), int(out[1])) == (old.producer_id, (old.producer_epoch or 0) + 1)
        with pytest.raises(tidelog.ProducerFencedError):
            old.send("t", b"late")
            old.flush()
        with pytest.raises(tidelog.ProducerFencedError):
            old.close()
        assert [m.value for m in topic.read(0)] == [b"from-parent", b"from-child"]


def test_a_retry_through_another_store_handle_is_a_duplicate(tmp_path: Path) -> None:
    # Two handles of one store, as two processes have: each keeps its own producer state,
    # which must cover the batches the other one wrote before judging a batch.
    with tidelog.open(tmp_path) as a, tidelog.open(tmp_path) as b:
        ta = a.create_topic("t")
        tb = b.topic("t")
        assert seq(ta, [b"a0"], 1, 0, 0) == (0, False)
        assert seq(tb, [b"b0", b"b1"], 2, 0, 0) == (1, False)
        assert seq(ta, [b"a1"], 1, 0, 1) == (3, False)
        assert seq(ta, [b"b0", b"b1"], 2, 0, 0) == (1, True), "a retry written twice"
        with pytest.raises(tidelog.OutOfOrderSequenceError):
            seq(ta, [b"gap"], 2, 0, 5)
        assert values_of(ta) == [b"a0", b"b0", b"b1", b"a1"]
