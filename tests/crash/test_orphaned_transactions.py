"""A transaction whose producer died and never reopened does not hold readers back forever:
readers finish it once no instance of the producer's name is alive (in any process), and a
live producer's open transaction is never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tidelog

pytestmark = pytest.mark.crash

OPENER = r"""
import sys, time, tidelog
with tidelog.open(sys.argv[1]) as store:
    producer = store.producer(name="orphan")
    tx = store.transaction(producer)
    tx.send("out", b"never-visible")
    producer.flush()
    print("open", flush=True)
    time.sleep(3600)
"""


def start_opener(store_dir: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(store_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("open"), child.stderr.read() if child.stderr else ""
    return child


def test_a_dead_producers_transaction_is_finished_by_a_held_back_consumer(
    tmp_path: Path,
) -> None:
    store_dir = tmp_path / "store"
    with tidelog.open(store_dir) as store:
        store.create_topic("out")
    child = start_opener(store_dir)
    try:
        with tidelog.open(store_dir) as store:
            out = store.topic("out")
            out.append(b"after")
            # The owner is alive: nothing is finished, readers wait.
            assert store.abort_orphaned_transactions() == []
            assert [m.value for m in out.read(0)] == []
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            # A consumer held back by the open transaction finishes it by itself.
            with store.consumer("out", group="g") as consumer:
                got: list[bytes] = []
                deadline = time.monotonic() + 10
                while not got and time.monotonic() < deadline:
                    got = [(m.value or b"") for m in consumer.poll(timeout=0.2)]
            assert got == [b"after"]
            assert [m.value for m in out.read(0)] == [b"after"]
            assert store.abort_orphaned_transactions() == [], "nothing left to finish"
            # The dead epoch is fenced; the next instance simply goes on.
            with store.producer(name="orphan") as producer:
                assert producer.producer_epoch == 2
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def test_a_live_producer_in_this_process_is_not_an_orphan(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("out")
        with store.producer(name="alive") as producer:
            tx = store.transaction(producer)
            tx.send("out", b"pending")
            producer.flush()
            assert store.abort_orphaned_transactions() == []
            tx.commit()
        assert [m.value for m in store.topic("out").read(0)] == [b"pending"]
