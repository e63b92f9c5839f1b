"""Kafka transactions across a restart of `tidelog serve` (stopped cleanly, or killed).

Kafka's transaction coordinator keeps its transactions in ``__transaction_state``: after a
restart (or a failover) it still knows every transaction left open, lets its producer go on
with it and commit it, aborts it once ``transaction.timeout.ms`` has passed since it began
(the start is recorded with it), and aborts it when the transactional id initialises again
(fencing the old epoch). Its offsets (TxnOffsetCommit) apply only if it commits. The server
does the same from the store's record of the transaction, so read_committed readers (Kafka
consumers and the store's own) are never held back past the transaction's timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from tidelog.offsets import OffsetStore

# Bounds on waits for something that must happen; never a measure of speed.
_PATIENCE = 30.0


class _Served:
    """`tidelog serve DIR --kafka` in its own process, restartable on the same port."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.address = "127.0.0.1:0"
        self.child: subprocess.Popen[str] | None = None

    def start(self) -> str:
        child = subprocess.Popen(
            [sys.executable, "-m", "tidelog", "serve", str(self.path), "--kafka", self.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
            env={**os.environ, "TIDELOG_DIR": ""},
        )
        self.child = child
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("serving Kafka on 127.0.0.1:"), (line, child.stderr)
        self.address = line.split()[-1]
        return self.address

    def stop(self, how: signal.Signals) -> None:
        assert self.child is not None
        self.child.send_signal(how)
        self.child.communicate(timeout=_PATIENCE)
        self.child = None


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Served]:
    path = tmp_path / "store"
    tidelog.open(path).close()
    served = _Served(path)
    try:
        yield served
    finally:
        if served.child is not None:
            served.stop(signal.SIGKILL)


_STOPS = [
    pytest.param(signal.SIGTERM, id="stopped"),
    pytest.param(signal.SIGKILL, id="killed"),
]


def _wait_for(what: str, condition: Any) -> None:
    deadline = time.monotonic() + _PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _stable(topic: tidelog.Topic) -> bool:
    return all(topic.last_stable_offset(p) == topic.end_offset(p) for p in range(topic.partitions))


def _open_transaction(store: tidelog.Store, address: str, timeout_ms: int) -> Producer:
    """A transaction of "tx" left open: records on both partitions of "out", offsets of
    group "etl" on "in" sent to it, no EndTxn."""
    producer = Producer(
        {
            "bootstrap.servers": address,
            "transactional.id": "tx",
            "transaction.timeout.ms": timeout_ms,
        }
    )
    producer.init_transactions(_PATIENCE)
    producer.begin_transaction()
    for i in range(4):
        producer.produce("out", b"open-%d" % i, partition=i % 2)
    group = Consumer({"bootstrap.servers": address, "group.id": "etl"})
    try:
        producer.send_offsets_to_transaction(
            [TopicPartition("in", 0, 3)], group.consumer_group_metadata(), _PATIENCE
        )
    finally:
        group.close()
    assert producer.flush(_PATIENCE) == 0
    out = store.topic("out")
    assert not _stable(out)
    return producer


def _committed_values(address: str, topic: str, partitions: int, count: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": "reader",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list[bytes] = []
        deadline = time.monotonic() + _PATIENCE
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                value = msg.value()
                assert value is not None
                got.append(value)
        extra = consumer.poll(1.0)
        assert extra is None or extra.error() is not None, extra.value()
        return sorted(got)
    finally:
        consumer.close()


def _etl_offsets(store: tidelog.Store) -> dict[int, int]:
    source = store.topic("in")
    committed = OffsetStore(store.native).committed("etl", "in", source.incarnation)
    return {p: c.offset for p, c in committed.items()}


def _setup(store: tidelog.Store) -> None:
    source = store.create_topic("in", 1)
    for i in range(3):
        source.append(b"%d" % i, partition=0)
    store.create_topic("out", 2)


def _fenced(producer: Producer) -> KafkaError:
    with pytest.raises(KafkaException) as raised:
        producer.commit_transaction(_PATIENCE)
    error: KafkaError = raised.value.args[0]
    return error


@pytest.mark.parametrize("stop", _STOPS)
def test_an_open_transaction_is_aborted_after_its_timeout_across_a_restart(
    served: _Served, stop: signal.Signals
) -> None:
    with tidelog.open(served.path) as store:
        _setup(store)
        address = served.start()
        producer = _open_transaction(store, address, timeout_ms=3000)
        served.stop(stop)
        served.start()
        out = store.topic("out")
        # No word from the producer: its timeout ends the transaction, read_committed
        # readers (the store's and Kafka's) move past it.
        reader = store.consumer("out", group="store-reader")
        got: list[bytes | None] = []

        def aborted() -> bool:
            # The store's consumer polls meanwhile (and may check for orphans).
            got.extend(m.value for m in reader.poll(timeout=0.05))
            return _stable(out)

        _wait_for("the open transaction aborted after its timeout", aborted)
        assert [m.value for p in range(2) for m in out.read(p)] == []
        assert _committed_values(served.address, "out", 2, 0) == []
        # Its offsets were never applied.
        assert _etl_offsets(store) == {}
        # The producer that left it open is fenced when it goes on.
        error = _fenced(producer)
        assert error.fatal() and error.code() == KafkaError._FENCED, error
        # A new instance carries on.
        fresh = Producer({"bootstrap.servers": served.address, "transactional.id": "tx"})
        fresh.init_transactions(_PATIENCE)
        fresh.begin_transaction()
        fresh.produce("out", b"after", partition=1)
        fresh.commit_transaction(_PATIENCE)
        assert _committed_values(served.address, "out", 2, 1) == [b"after"]
        while b"after" not in got:
            got += [m.value for m in reader.poll(timeout=_PATIENCE)]
        assert got == [b"after"]
        reader.close()


@pytest.mark.parametrize("stop", _STOPS)
def test_reinitialising_the_id_after_a_restart_aborts_and_fences(
    served: _Served, stop: signal.Signals
) -> None:
    with tidelog.open(served.path) as store:
        _setup(store)
        address = served.start()
        old = _open_transaction(store, address, timeout_ms=600_000)
        served.stop(stop)
        served.start()
        fresh = Producer({"bootstrap.servers": served.address, "transactional.id": "tx"})
        fresh.init_transactions(_PATIENCE)
        # The new instance's InitProducerId aborted the old one's transaction.
        assert _stable(store.topic("out"))
        assert _etl_offsets(store) == {}
        error = _fenced(old)
        assert error.fatal() and error.code() == KafkaError._FENCED, error
        fresh.begin_transaction()
        fresh.produce("out", b"new", partition=0)
        fresh.commit_transaction(_PATIENCE)
        assert _committed_values(served.address, "out", 2, 1) == [b"new"]


@pytest.mark.parametrize("stop", _STOPS)
def test_the_producer_commits_its_transaction_after_a_restart(
    served: _Served, stop: signal.Signals
) -> None:
    # Within its timeout, the transaction outlives the server: acknowledged records and
    # offsets commit when the producer commits, as after a coordinator failover on Kafka.
    with tidelog.open(served.path) as store:
        _setup(store)
        address = served.start()
        producer = _open_transaction(store, address, timeout_ms=600_000)
        served.stop(stop)
        served.start()
        producer.produce("out", b"after the restart", partition=0)
        producer.commit_transaction(_PATIENCE)
        expected = sorted([b"open-%d" % i for i in range(4)] + [b"after the restart"])
        assert _committed_values(served.address, "out", 2, 5) == expected
        assert _etl_offsets(store) == {0: 3}


def test_an_idle_transactional_producer_goes_on_after_a_restart(served: _Served) -> None:
    with tidelog.open(served.path) as store:
        _setup(store)
        address = served.start()
        producer = Producer({"bootstrap.servers": address, "transactional.id": "tx"})
        producer.init_transactions(_PATIENCE)
        producer.begin_transaction()
        producer.produce("out", b"before", partition=0)
        producer.commit_transaction(_PATIENCE)
        served.stop(signal.SIGKILL)
        served.start()
        producer.begin_transaction()
        producer.produce("out", b"after", partition=0)
        producer.commit_transaction(_PATIENCE)
        assert _committed_values(served.address, "out", 2, 2) == [b"after", b"before"]


def test_an_idle_producer_taken_up_after_a_restart_keeps_its_timeout(served: _Served) -> None:
    # Its transaction.timeout.ms came with InitProducerId, before the restart.
    with tidelog.open(served.path) as store:
        _setup(store)
        address = served.start()
        producer = Producer(
            {"bootstrap.servers": address, "transactional.id": "tx", "transaction.timeout.ms": 2000}
        )
        producer.init_transactions(_PATIENCE)
        served.stop(signal.SIGKILL)
        served.start()
        producer.begin_transaction()
        producer.produce("out", b"left open", partition=0)
        assert producer.flush(_PATIENCE) == 0
        out = store.topic("out")
        assert not _stable(out)
        _wait_for("the transaction aborted after 2 s", lambda: _stable(out))
        assert [m.value for m in out.read(0)] == []


def test_a_dead_servers_transaction_is_not_an_orphan_until_its_timeout(
    served: _Served,
) -> None:
    # The store's own readers finish transactions whose producer died; a Kafka client's
    # transaction whose server died is still its client's until its timeout passes.
    with tidelog.open(served.path) as store:
        _setup(store)
        address = served.start()
        _open_transaction(store, address, timeout_ms=600_000)
        served.stop(signal.SIGKILL)
        assert store.abort_orphaned_transactions() == []
        assert not _stable(store.topic("out"))


def test_a_dead_servers_transaction_past_its_timeout_is_finished_by_readers(
    served: _Served,
) -> None:
    with tidelog.open(served.path) as store:
        _setup(store)
        address = served.start()
        _open_transaction(store, address, timeout_ms=1000)
        served.stop(signal.SIGKILL)
        out = store.topic("out")
        # No server: the store's readers end it once its timeout has passed.
        _wait_for(
            "the orphaned transaction aborted",
            lambda: bool(store.abort_orphaned_transactions()) or _stable(out),
        )
        assert _stable(out)
        assert _etl_offsets(store) == {}
        assert [m.value for p in range(2) for m in out.read(p)] == []


def test_serve_kafka_closed_and_served_again_in_one_process(tmp_path: Path) -> None:
    # The closed server lets go of the transactional ids, so the next one takes them up.
    with tidelog.open(tmp_path / "store") as store:
        _setup(store)
        first = store.serve_kafka("127.0.0.1:0")
        address = first.address
        producer = _open_transaction(store, address, timeout_ms=600_000)
        first.close()
        with store.serve_kafka(address):
            producer.commit_transaction(_PATIENCE)
            assert _committed_values(address, "out", 2, 4) == [b"open-%d" % i for i in range(4)]
            assert _etl_offsets(store) == {0: 3}


_LOCAL_OPENER = r"""
import sys, time, tidelog
with tidelog.open(sys.argv[1]) as store:
    producer = store.producer(name="local")
    tx = store.transaction(producer)
    tx.send("out", b"never visible", partition=0)
    producer.flush()
    print("open", flush=True)
    time.sleep(3600)
"""


def test_a_kafka_consumer_is_not_held_back_by_a_dead_local_producer(served: _Served) -> None:
    # The store's own transactions have no timeout: a dead producer's is finished by the
    # readers it holds back (the store's consumers do it), Kafka consumers of the server too.
    with tidelog.open(served.path) as store:
        _setup(store)
        address = served.start()
        child = subprocess.Popen(
            [sys.executable, "-c", _LOCAL_OPENER, str(served.path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().startswith("open")
            store.topic("out").append(b"after", partition=0)
        finally:
            child.kill()
            child.communicate(timeout=_PATIENCE)
        assert _committed_values(address, "out", 2, 1) == [b"after"]
