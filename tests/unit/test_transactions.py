"""Transactions: outputs and input offsets committed as one unit, read_committed readers.

``store.transaction(producer, consumer)`` must make every output it sent visible at once
(across topics and partitions) together with the consumer's new offsets, or, on an
exception, nothing, rewinding the consumer. A newer instance of a named producer fences
the old one and aborts its open transaction. Readers never see open or aborted data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tidelog
from tidelog import _core
from tidelog.producers import named_producers


def transaction_state(producers: Path, name: str) -> bytes | None:
    """The newest record of a named producer's transaction state log (None: no log)."""
    contents = _core.read_state_log(producers, f"{name}.txn")
    if contents is None:
        return None
    _generation, snapshot, records, _torn = contents
    return records[-1] if records else snapshot


def decide_commit(producers: Path, name: str) -> None:
    """Marks ``name``'s open transaction as decided for commit, as a crash right after the
    decision leaves it (the markers not written yet)."""
    log = _core.StateLog(producers, f"{name}.txn")
    try:
        _changed, snapshot, records = log.lock()
        state = records[-1] if records else snapshot
        assert state is not None and state.startswith(b"ongoing\n"), state
        log.append(b"commit\n" + state[len(b"ongoing\n") :])
        log.unlock()
    finally:
        log.close()


def visible(topic: tidelog.Topic) -> list[bytes]:
    return [(m.value or b"") for p in range(topic.partitions) for m in topic.read(p)]


def fill(topic: tidelog.Topic, n: int) -> None:
    for i in range(n):
        topic.append(b"in-%d" % i, partition=i % topic.partitions)


def test_commit_makes_outputs_visible_atomically_across_topics(store: tidelog.Store) -> None:
    a = store.create_topic("a", partitions=2)
    b = store.create_topic("b", partitions=3)
    with store.producer(name="p") as producer:
        with store.transaction(producer) as tx:
            for i in range(10):
                tx.send("a", b"a%d" % i, partition=i % 2)
                tx.send("b", b"b%d" % i, partition=i % 3)
            assert producer.in_transaction
            producer.flush()
            # Written to every partition, yet nothing visible before the commit.
            assert all(a.end_offset(p) > 0 for p in range(2))
            assert all(b.end_offset(p) > 0 for p in range(3))
            assert visible(a) == [] and visible(b) == []
            assert all(len(a.read_batch(p)) == 0 for p in range(2))
        assert not producer.in_transaction and tx.done
        assert sorted(visible(a)) == sorted(b"a%d" % i for i in range(10))
        assert sorted(visible(b)) == sorted(b"b%d" % i for i in range(10))
        # Markers take offsets but are never read as messages.
        assert a.end_offset(0) == 5 + 1
        assert [m.offset for m in a.read(0)] == [0, 1, 2, 3, 4]


def test_exactly_once_step_commits_outputs_and_offsets(store: tidelog.Store) -> None:
    inputs = store.create_topic("in", partitions=2)
    out = store.create_topic("out")
    fill(inputs, 6)
    with (
        store.consumer("in", group="g", delivery="exactly-once") as consumer,
        store.producer(name="worker") as producer,
    ):
        msgs = consumer.poll(max_messages=100, timeout=1)
        assert len(msgs) == 6
        with store.transaction(producer, consumer) as tx:
            for m in msgs:
                tx.send("out", (m.value or b"").replace(b"in", b"out"))
        assert consumer.committed() == {0: 3, 1: 3}
        assert sorted(visible(out)) == sorted(b"out-%d" % i for i in range(6))
        assert consumer.poll(timeout=0) == []
    assert store.groups()["g"]["in"]["committed"] == {0: 3, 1: 3}


class Boom(Exception):
    pass


def test_an_exception_aborts_and_the_consumer_rewinds(store: tidelog.Store) -> None:
    inputs = store.create_topic("in")
    out = store.create_topic("out", partitions=2)
    fill(inputs, 5)
    with (
        store.consumer("in", group="g", delivery="exactly-once") as consumer,
        store.producer(name="worker") as producer,
    ):
        first = consumer.poll(max_messages=2, timeout=1)
        with store.transaction(producer, consumer) as tx:
            tx.send("out", b"committed-0", partition=0)
        assert consumer.committed() == {0: 2}
        batch = consumer.poll(max_messages=2, timeout=1)
        assert [m.offset for m in batch] == [2, 3]
        with pytest.raises(Boom), store.transaction(producer, consumer) as tx:
            for m in batch:
                tx.send("out", b"aborted-" + (m.value or b""), partition=m.offset % 2)
            producer.flush()
            raise Boom
        assert tx.done and not producer.in_transaction
        assert consumer.committed() == {0: 2}, "an aborted transaction commits no offset"
        assert visible(out) == [b"committed-0"]
        # The same inputs come again, then get processed for good.
        again = consumer.poll(max_messages=2, timeout=1)
        assert [m.offset for m in again] == [2, 3]
        with store.transaction(producer, consumer) as tx:
            for m in again:
                tx.send("out", b"done-" + (m.value or b""), partition=m.offset % 2)
        assert consumer.committed() == {0: 4}
        assert sorted(visible(out)) == [b"committed-0", b"done-in-2", b"done-in-3"]
        assert [m.offset for m in first] == [0, 1]
    # No aborted output is ever readable, from any offset.
    for p in range(2):
        for offset in range(out.start_offset(p), out.end_offset(p) + 1):
            assert not any((m.value or b"").startswith(b"aborted") for m in out.read(p, offset))


def test_an_abort_before_any_commit_rewinds_to_the_start(store: tidelog.Store) -> None:
    inputs = store.create_topic("in")
    store.create_topic("out")
    fill(inputs, 3)
    with (
        store.consumer("in", group="g", delivery="exactly-once") as consumer,
        store.producer(name="worker") as producer,
    ):
        for m in consumer:
            with pytest.raises(Boom), store.transaction(producer, consumer) as tx:
                tx.send("out", (m.value or b""))
                raise Boom
            break
        assert consumer.committed() == {}
        assert [m.offset for m in consumer.poll(timeout=1)] == [0, 1, 2]


def test_exactly_once_consumers_commit_only_through_transactions(store: tidelog.Store) -> None:
    inputs = store.create_topic("in")
    fill(inputs, 3)
    with store.consumer("in", group="g", delivery="exactly-once") as consumer:
        assert len(consumer.poll(timeout=1)) == 3
        with pytest.raises(tidelog.InvalidConfigError, match="transaction"):
            consumer.commit()
        with pytest.raises(tidelog.InvalidConfigError):
            consumer.commit({0: 1})
        # Moving on without a transaction is refused (a transaction per step); closing
        # commits nothing either.
        with pytest.raises(tidelog.InvalidConfigError, match="transaction per step"):
            consumer.poll(timeout=0)
        with pytest.raises(tidelog.InvalidConfigError, match="transaction per step"):
            next(consumer)
    assert "g" not in store.groups() or store.groups()["g"]["in"]["committed"] == {}
    with store.consumer("in", group="g", delivery="exactly-once") as consumer:
        assert [m.offset for m in consumer.poll(timeout=1)] == [0, 1, 2]


def test_transaction_preconditions(store: tidelog.Store) -> None:
    store.create_topic("in")
    with store.producer() as unnamed, pytest.raises(tidelog.InvalidConfigError, match="named"):
        store.transaction(unnamed)
    with (
        store.producer(name="plain", idempotent=False) as plain,
        pytest.raises(tidelog.InvalidConfigError),
    ):
        store.transaction(plain)
    with (
        store.producer(name="shed", on_full="shed") as shed,
        pytest.raises(tidelog.InvalidConfigError, match="shed"),
    ):
        store.transaction(shed)
    with (
        store.producer(name="p") as producer,
        store.consumer("in", group="g") as at_least_once,
    ):
        with pytest.raises(tidelog.InvalidConfigError, match="exactly-once"):
            store.transaction(producer, at_least_once)
        assert not producer.in_transaction
        with store.transaction(producer) as tx:
            with pytest.raises(tidelog.InvalidConfigError, match="already open"):
                store.transaction(producer)
            tx.send("in", b"x")
        with pytest.raises(tidelog.InvalidConfigError):
            tx.send("in", b"after the end")
        with pytest.raises(TypeError, match="producer"):
            store.transaction(object())  # type: ignore[arg-type]


def test_a_new_instance_fences_the_old_and_aborts_its_transaction(store: tidelog.Store) -> None:
    out = store.create_topic("out", partitions=2)
    old = store.producer(name="worker")
    tx = store.transaction(old)
    tx.send("out", b"old-0", partition=0)
    tx.send("out", b"old-1", partition=1)
    old.flush()
    new = store.producer(name="worker")
    assert new.producer_epoch == (old.producer_epoch or 0) + 1
    # The new instance aborted the old transaction when it opened: nothing is held back.
    assert visible(out) == []
    new.send("out", b"new", partition=0)
    new.flush()
    assert visible(out) == [b"new"]
    with pytest.raises(tidelog.ProducerFencedError):
        tx.commit()
    with pytest.raises(tidelog.ProducerFencedError):
        old.send("out", b"old-2")
        old.flush()
    with pytest.raises(tidelog.ProducerFencedError):
        store.transaction(old)
    new.close()
    with pytest.raises(tidelog.ProducerFencedError):
        old.close()
    assert visible(out) == [b"new"]


def test_the_old_instance_cannot_commit_a_transaction_fenced_mid_way(
    store: tidelog.Store,
) -> None:
    inputs = store.create_topic("in")
    out = store.create_topic("out")
    fill(inputs, 4)
    consumer = store.consumer("in", group="g", delivery="exactly-once")
    old = store.producer(name="worker")
    msgs = consumer.poll(timeout=1)
    with pytest.raises(tidelog.ProducerFencedError), store.transaction(old, consumer) as tx:
        for m in msgs:
            tx.send("out", (m.value or b""))
        old.flush()
        store.producer(name="worker").close()  # a newer instance takes over
    assert visible(out) == []
    assert consumer.committed() == {}
    consumer.close()


def test_reads_stop_at_an_open_transaction(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    topic.append(b"before")
    with store.producer(name="p") as producer:
        tx = store.transaction(producer)
        tx.send("t", b"in-tx")
        producer.flush()
        topic.append(b"after")  # a plain message written after the open transaction
        assert visible(topic) == [b"before"]
        batch = topic.read_batch(0, 1)
        assert (len(batch), batch.next_offset) == (0, 1)
        with store.consumer("t", group="g") as consumer:
            assert [m.value for m in consumer.poll(timeout=0.2)] == [b"before"]
            tx.commit()
            assert [m.value for m in consumer.poll(timeout=1)] == [b"in-tx", b"after"]
    assert visible(topic) == [b"before", b"in-tx", b"after"]


def test_an_aborted_transaction_releases_the_messages_after_it(store: tidelog.Store) -> None:
    topic = store.create_topic("t")
    with store.producer(name="p") as producer:
        tx = store.transaction(producer)
        tx.send("t", b"in-tx")
        producer.flush()
        topic.append(b"after")
        assert visible(topic) == []
        tx.abort()
    assert visible(topic) == [b"after"]


def test_a_consumer_starting_at_latest_does_not_skip_an_open_transaction(
    store: tidelog.Store,
) -> None:
    # Kafka's read_committed "latest" is the last stable offset: a transaction still open
    # when the consumer joins is delivered once it commits.
    topic = store.create_topic("t")
    topic.append(b"old")
    with store.producer(name="p") as producer:
        tx = store.transaction(producer)
        tx.send("t", b"in-tx")
        producer.flush()
        topic.append(b"after")
        with store.consumer("t", group="late", start="latest") as consumer:
            assert consumer.poll(timeout=0.1) == []
            tx.commit()
            got = [m.value for m in consumer.poll(timeout=1)]
    assert got == [b"in-tx", b"after"]


def test_groups_see_gaps_but_never_aborted_data(store: tidelog.Store) -> None:
    topic = store.create_topic("t", partitions=2)
    expected = []
    with store.producer(name="p") as producer:
        for i in range(12):
            with store.transaction(producer) as tx:
                for j in range(3):
                    tx.send("t", b"c%d-%d" % (i, j), partition=(i + j) % 2)
            expected += [b"c%d-%d" % (i, j) for j in range(3)]
            with pytest.raises(Boom), store.transaction(producer) as tx:
                for j in range(2):
                    tx.send("t", b"aborted-%d-%d" % (i, j), partition=(i + j) % 2)
                producer.flush()
                raise Boom
    got: list[tidelog.Message] = []
    with store.consumer("t", group="g", max_poll_messages=4) as consumer:
        while True:
            batch = consumer.poll(timeout=0.2)
            if not batch:
                break
            got += batch
    assert sorted((m.value or b"") for m in got) == sorted(expected)
    for p in range(2):
        offsets = [m.offset for m in got if m.partition == p]
        assert offsets == sorted(offsets)
        assert offsets[-1] - offsets[0] + 1 > len(offsets), "markers and aborts leave gaps"
    committed = store.groups()["g"]["t"]["committed"]
    for p in range(2):
        last = max(m.offset for m in got if m.partition == p)
        assert last + 1 <= committed[p] <= topic.end_offset(p)
    with store.consumer("t", group="g") as again:
        assert again.poll(timeout=0.1) == [], "nothing delivered twice"


def test_transaction_state_survives_reopen(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("t")
        with store.producer(name="p") as producer:
            with store.transaction(producer) as tx:
                tx.send("t", b"committed")
            with pytest.raises(Boom), store.transaction(producer) as tx:
                tx.send("t", b"aborted")
                producer.flush()
                raise Boom
        topic.append(b"plain")
    with tidelog.open(tmp_path) as store:
        assert visible(store.topic("t")) == [b"committed", b"plain"]


def test_a_consumer_opened_before_the_takeover_sees_the_finished_commit(tmp_path: Path) -> None:
    # A crash after a commit was decided (the registry's transaction file says "commit")
    # but before its markers were written: the producer's next instance finishes the
    # commit. A consumer opened first (the order of the API example) must not take the
    # offsets from before that transaction, or its inputs are processed twice.
    with tidelog.open(tmp_path) as store:
        ins = store.create_topic("in")
        store.create_topic("out")
        fill(ins, 3)
        first = store.consumer("in", group="g", delivery="exactly-once")
        old = store.producer(name="x")
        msgs = first.poll(timeout=1)
        tx = store.transaction(old, first)
        for m in msgs:
            tx.send("out", b"out-" + (m.value or b""))
        first.transaction_send_offsets(old)  # what commit() sends
        old.flush()
        decide_commit(tmp_path / "producers", "x")  # decided, no markers
        first.close()
        with store.consumer("in", group="g", delivery="exactly-once") as consumer:
            with store.producer(name="x"):  # finishes the decided commit
                pass
            assert visible(store.topic("out")) == [b"out-in-0", b"out-in-1", b"out-in-2"]
            assert consumer.committed() == {0: 3}
            assert consumer.poll(timeout=0.2) == [], "committed inputs delivered again"
        with pytest.raises(tidelog.ProducerFencedError):
            old.close()


def test_an_open_offset_commit_does_not_hide_other_groups_commits(tmp_path: Path) -> None:
    # Group commits share the 8 partitions of __consumer_offsets (by the group's hash). A
    # transaction caught between sending its offsets record and its markers (a crash in
    # commit, until the producer's name reopens) must not hide the plain commits other
    # groups make after it in the same partition from other processes.
    def slot(group: str) -> int:
        return _core.partition_for_key(group.encode(), 8)

    pipeline = "pipeline"
    billing = next(g for g in (f"billing{i}" for i in range(1000)) if slot(g) == slot(pipeline))
    with tidelog.open(tmp_path) as store:
        ins = store.create_topic("in")
        store.create_topic("out")
        fill(ins, 10)
        consumer = store.consumer("in", group=pipeline, delivery="exactly-once")
        producer = store.producer(name="x")
        consumer.poll(max_messages=2, timeout=1)
        tx = store.transaction(producer, consumer)
        tx.send("out", b"o")
        consumer.transaction_send_offsets(producer)  # mid-commit
        producer.flush()
        with store.consumer("in", group=billing, delivery="at-most-once") as other:
            assert len(other.poll(max_messages=5, timeout=1)) == 5
            assert other.committed() == {0: 5}
        with tidelog.open(tmp_path) as elsewhere:  # another process's view of the store
            assert elsewhere.groups()[billing]["in"]["committed"] == {0: 5}
            with elsewhere.consumer("in", group=billing, delivery="at-most-once") as again:
                assert [m.offset for m in again.poll(max_messages=1, timeout=1)] == [5]
        tx.abort()
        consumer.close()


ZOMBIE = r"""
import sys, tidelog
with tidelog.open(sys.argv[1]) as store:
    producer = store.producer(name="worker")
    tx = store.transaction(producer)
    tx.send("out", b"zombie")
    producer.flush()
    print("open", flush=True)
    sys.stdin.readline()  # the parent opened a newer instance meanwhile
    try:
        tx.commit()
        print("committed", flush=True)
    except tidelog.ProducerFencedError as e:
        print("fenced", e, flush=True)
    try:
        producer.close()
    except tidelog.ProducerFencedError:
        pass
"""


def test_fencing_a_transaction_across_processes(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        out = store.create_topic("out")
        child = subprocess.Popen(
            [sys.executable, "-c", ZOMBIE, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline() == "open\n"
        assert visible(out) == []
        with store.producer(name="worker") as producer:  # aborts the child's transaction
            assert producer.producer_epoch == 1
            producer.send("out", b"new")
        child.stdin.write("go\n")
        child.stdin.close()
        answer = child.stdout.read()
        child.stdout.close()
        assert child.wait(timeout=60) == 0
        assert answer.startswith("fenced") and "worker" in answer, answer
        assert visible(out) == [b"new"]


def test_a_writing_process_sees_other_processes_transactions_end(tmp_path: Path) -> None:
    # Store handle ``a`` stands for a process that writes sequenced batches (an idempotent
    # producer) to a partition where another process runs transactions: its own reads
    # must skip the aborted transaction and serve the committed one.
    with tidelog.open(tmp_path) as a, tidelog.open(tmp_path) as b:
        ta = a.create_topic("t")
        ta.append_sequenced([b"a0"], producer_id=1000, producer_epoch=0, base_sequence=0)
        with b.producer(name="w") as producer:
            with pytest.raises(Boom), b.transaction(producer) as tx:
                tx.send("t", b"aborted")
                producer.flush()
                raise Boom
            tx = b.transaction(producer)
            tx.send("t", b"committed")
            producer.flush()
            assert visible(ta) == [b"a0"]
            tx.commit()
        ta.append_sequenced([b"a1"], producer_id=1000, producer_epoch=0, base_sequence=1)
        assert visible(b.topic("t")) == [b"a0", b"committed", b"a1"]
        assert visible(ta) == [b"a0", b"committed", b"a1"]
    with tidelog.open(tmp_path) as fresh:
        assert visible(fresh.topic("t")) == [b"a0", b"committed", b"a1"]


PLAN = r"""
import random


def plan(name, rounds):
    # Per transaction: its messages as (value, partition), whether it commits, and the
    # partition of a plain message appended while it is open.
    rng = random.Random(name)
    for i in range(rounds):
        commit = rng.random() < 0.6
        mark = "C" if commit else "A"
        sends = [
            (f"{name}:{i}:{j}:{mark}".encode(), rng.randint(0, 1))
            for j in range(rng.randint(1, 4))
        ]
        yield sends, commit, rng.random() < 0.5, rng.randint(0, 1)
"""

TX_WRITER = (
    PLAN
    + r"""
import sys, tidelog
path, name, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
with tidelog.open(path, segment_bytes=8192) as store:
    topic = store.topic("t")
    with store.producer(name=name, linger_ms=0) as producer:
        for i, (sends, commit, flush, plain) in enumerate(plan(name, rounds)):
            tx = store.transaction(producer)
            for value, partition in sends:
                tx.send("t", value, partition=partition)
            if flush:
                producer.flush()
            topic.append(f"plain:{name}:{i}".encode(), partition=plain)
            if commit:
                tx.commit()
            else:
                tx.abort()
"""
)


def test_transactional_writers_in_several_processes(tmp_path: Path) -> None:
    # Three processes run transactions (committed or aborted) and plain appends on the same
    # partitions while this one reads: no aborted message is ever served, and in the end
    # the committed ones and the plain ones are all there, once, with or without the
    # producer-state snapshots the rolls wrote.
    names, rounds = ["w0", "w1", "w2"], 150
    with tidelog.open(tmp_path, segment_bytes=8192) as store:
        topic = store.create_topic("t", partitions=2)
        writers = [
            subprocess.Popen([sys.executable, "-c", TX_WRITER, str(tmp_path), name, str(rounds)])
            for name in names
        ]
        while any(w.poll() is None for w in writers):
            served = visible(topic)
            assert not [v for v in served if v.endswith(b":A")], "aborted data served"
        assert [w.wait() for w in writers] == [0, 0, 0]
        final = visible(topic)
    namespace: dict[str, Any] = {}
    exec(PLAN, namespace)
    expected = [f"plain:{n}:{i}".encode() for n in names for i in range(rounds)]
    for name in names:
        for sends, commit, _, _ in namespace["plan"](name, rounds):
            expected += [value for value, _ in sends if commit]
    assert sorted(final) == sorted(expected)
    with tidelog.open(tmp_path, segment_bytes=8192) as store:
        assert store.topic("t").segment_count(0) > 2
        assert visible(store.topic("t")) == final, "the same after reopening (snapshots)"
    for path in tmp_path.glob("topics/t/*/*.snapshot"):
        path.unlink()
    with tidelog.open(tmp_path, segment_bytes=8192) as store:
        assert visible(store.topic("t")) == final, "the same rebuilt from the batch headers"


def test_a_chain_of_exactly_once_steps_ends_with_no_lag(store: tidelog.Store) -> None:
    # Stage two reads what stage one wrote in transactions: its input ends with a commit
    # marker, which the committed position must pass, or the lag would never reach zero.
    inputs, middle = store.create_topic("in"), store.create_topic("mid")
    store.create_topic("out")
    fill(inputs, 4)
    for source, target, name in (("in", "mid", "one"), ("mid", "out", "two")):
        with (
            store.consumer(source, group=name, delivery="exactly-once") as consumer,
            store.producer(name=name) as producer,
        ):
            for msg in consumer.poll(timeout=1):
                with store.transaction(producer, consumer) as tx:
                    tx.send(target, (msg.value or b""))
            assert consumer.lag() == {0: 0}
            assert consumer.committed() == {0: store.topic(source).end_offset(0)}
    assert middle.end_offset(0) == 8  # four outputs, four commit markers
    assert visible(store.topic("out")) == visible(inputs)


def test_a_transaction_over_a_partition_lost_to_a_rebalance_aborts(store: tidelog.Store) -> None:
    inputs = store.create_topic("in", partitions=2)
    store.create_topic("out")
    for p in (0, 1):
        inputs.append(b"in-%d" % p, partition=p)
    with (
        store.consumer("in", group="g", delivery="exactly-once") as first,
        store.producer(name="x") as producer,
    ):
        msgs = first.poll(timeout=1)
        assert {m.partition for m in msgs} == {0, 1}
        tx = store.transaction(producer, first)
        for m in msgs:
            tx.send("out", b"out-" + (m.value or b""))
        with store.consumer("in", group="g", delivery="exactly-once") as second:
            deadline = 50
            while len(first.assignment()) == 2 and deadline:
                first.poll(timeout=0.05)  # heartbeats: the rebalance takes a partition away
                deadline -= 1
            assert len(first.assignment()) == 1 and len(second.assignment()) == 1
            with pytest.raises(tidelog.RebalanceError):
                tx.commit()
    assert visible(store.topic("out")) == []
    with store.consumer("in", group="g", delivery="exactly-once") as again:
        assert sorted((m.value or b"") for m in again.poll(timeout=1)) == [b"in-0", b"in-1"]


def test_closing_a_producer_aborts_its_open_transaction(store: tidelog.Store) -> None:
    # Left open, the transaction would hold back every reader of its partitions until the
    # producer's name opened again.
    topic = store.create_topic("t")
    producer = store.producer(name="p")
    tx = store.transaction(producer)
    tx.send("t", b"unfinished")
    producer.flush()
    topic.append(b"plain")
    assert visible(topic) == []
    producer.close()
    assert visible(topic) == [b"plain"]
    assert transaction_state(Path(store.path) / "producers", "p") == b"none\n"


def test_a_first_format_transaction_file_is_finished_by_the_next_instance(tmp_path: Path) -> None:
    # Stores written before the state log keep a plain-text <name>.txn file: an open
    # transaction left there (by a crash) is aborted by the name's next instance, which
    # deletes the file; from then on the state log holds the name's transactions.
    with tidelog.open(tmp_path) as store:
        out = store.create_topic("out")
        old = store.producer(name="x")
        tx = store.transaction(old)
        tx.send("out", b"left open")
        old.flush()
        producers = tmp_path / "producers"
        assert transaction_state(producers, "x") == b"ongoing\nout\t0\n"
        # What the first format held at this point (the state log replaced by it).
        for suffix in (".journal", ".snapshot"):
            (producers / f"x.txn{suffix}").unlink(missing_ok=True)
        (producers / "x.txn").write_text("ongoing\nout\t0\n")
        [named] = named_producers(store)
        assert (named.transaction, named.partitions) == ("ongoing", [("out", 0)])
        with store.producer(name="x") as new:
            assert not (producers / "x.txn").exists()
            out.append(b"plain")
            assert visible(out) == [b"plain"]
            tx2 = store.transaction(new)
            tx2.send("out", b"next")
            tx2.commit()
        assert visible(out) == [b"plain", b"next"]
        assert transaction_state(producers, "x") == b"none\n"
        with pytest.raises(tidelog.ProducerFencedError):
            old.close()


def test_damaged_transaction_state_is_reported_naming_the_file(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("out")
        with store.producer(name="x") as producer:
            tx = store.transaction(producer)
            tx.send("out", b"a")
            tx.commit()
    journal = tmp_path / "producers" / "x.txn.journal"
    data = bytearray(journal.read_bytes())
    # Inside the first record (24-byte journal header, 20-byte frame header), which valid
    # records follow: damage, not a torn tail.
    data[24 + 20 + 2] ^= 0xFF
    journal.write_bytes(bytes(data))
    with (
        tidelog.open(tmp_path) as store,
        pytest.raises(tidelog.CorruptRecordError, match=r"x\.txn\.journal"),
    ):
        store.producer(name="x")
    verify = subprocess.run(
        [sys.executable, "-m", "tidelog", "verify", "-q", "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 1, verify
    assert "transaction state of producer 'x'" in verify.stdout, verify.stdout


def test_the_transaction_state_stays_small_over_many_transactions(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, fsync="never") as store:
        out = store.create_topic("out")
        with store.producer(name="x") as producer:
            for i in range(3_000):
                producer.begin_transaction()
                producer.send("out", b"%d" % i)
                producer.commit_transaction()
        assert len(visible(out)) == 3_000
    producers = tmp_path / "producers"
    assert transaction_state(producers, "x") == b"none\n"
    assert (producers / "x.txn.journal").stat().st_size < 128 << 10
