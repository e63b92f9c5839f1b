"""``tidelog producers``: the named producers, their epochs and open transactions, and
finishing the transactions of producers that died."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tidelog
from tidelog.producers import named_producers

OPENER = r"""
import sys, tidelog
store = tidelog.open(sys.argv[1])
producer = store.producer(name="dies")
tx = store.transaction(producer)
tx.send("out", b"x", partition=1)
producer.flush()
print("open", flush=True)
sys.stdin.read()
"""


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_lists_named_producers_and_finishes_an_orphaned_transaction(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("out", partitions=2)
        with store.producer(name="steady"):
            pass
        with store.producer(name="steady"):
            pass
    child = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().startswith("open")
    listed = {p.name: p for p in named_producers(tmp_path)}
    assert listed["steady"].epoch == 1 and not listed["steady"].alive
    assert listed["dies"].alive and listed["dies"].transaction == "ongoing"
    assert listed["dies"].partitions == [("out", 1)]
    alive = run("--dir", tmp_path, "producers", "--abort-orphaned", "--json")
    assert alive.returncode == 0, alive.stderr
    assert json.loads(alive.stdout)["finished"] == [], "a live owner's transaction is kept"
    child.kill()
    child.wait()
    child.stdout.close()
    child.stdin.close()
    table = run("--dir", tmp_path, "producers")
    assert table.returncode == 0, table.stderr
    assert "dies" in table.stdout and "ongoing: out/1" in table.stdout
    finished = run("--dir", tmp_path, "producers", "--abort-orphaned", "--json")
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["finished"] == ["dies"]
    dies = next(p for p in report["producers"] if p["name"] == "dies")
    assert dies["transaction"] is None and dies["epoch"] == 1 and not dies["alive"]
    with tidelog.open(tmp_path) as store:
        assert list(store.topic("out").read(1)) == []
        assert store.topic("out").last_stable_offset(1) == store.topic("out").end_offset(1)
