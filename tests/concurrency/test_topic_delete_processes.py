"""delete_topic in one process while another appends or produces to the topic.

Once the delete returns, the other process's calls on the topic raise TopicNotFoundError;
every write it was told succeeded is in the old topic (checked on hard links to the old
segment files, which outlive the deletion), and a topic created again under the name holds
only its own messages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import tidelog
from tidelog import _core

SEGMENT_BYTES = 32 << 20

# Appends b"old <i>" to partition 0 of topic "t" (or sends them through a producer, flushing
# every 100) until a call raises, and reports "<acknowledged> <error class>" in `errored`.
# Once the parent has created the topic again (`recreated` exists), the old handle must
# still refuse to append, and the topic opened again by name must be the new one: the
# child adds to the report whether the old handle refused and how many messages of the
# new topic are not the parent's.
APPENDER = textwrap.dedent(
    """
    import os, sys, time
    import tidelog
    store_dir, ready, errored, recreated, report, mode, segment_bytes = sys.argv[1:8]
    store = tidelog.open(store_dir, segment_bytes=int(segment_bytes))
    topic = store.topic("t")
    acked = 0
    error = "none"
    producer = store.producer(name="child") if mode == "producer" else None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if producer is None:
                topic.append(b"old %d" % acked, partition=0)
                acked += 1
            else:
                for i in range(acked, acked + 100):
                    producer.send("t", b"old %d" % i, partition=0)
                producer.flush()
                acked += 100
            if acked == 1000:
                open(ready, "w").close()
    except tidelog.TidelogError as e:
        error = type(e).__name__
    with open(errored + ".tmp", "w") as f:
        f.write("%d %s\\n" % (acked, error))
    os.rename(errored + ".tmp", errored)
    while not os.path.exists(recreated):
        time.sleep(0.005)
    try:
        topic.append(b"late", partition=0)
        refused = "appended"
    except tidelog.TopicNotFoundError:
        refused = "refused"
    values = [m.value for m in store.topic("t").read(0, 0)]
    with open(report, "w") as f:
        f.write("%s %d\\n" % (refused, sum(not v.startswith(b"new") for v in values)))
    if producer is not None:
        try:
            producer.close()
        except tidelog.TidelogError:
            pass
    store.close()
    """
)


def _wait_for(path: Path, child: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 90
    while not path.exists():
        if child.poll() is not None:
            raise AssertionError(f"the child exited (status {child.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the child never {what}")
        time.sleep(0.005)


def _run(tmp_path: Path, mode: str) -> None:
    store_dir = tmp_path / "store"
    ready, errored, recreated, report = (tmp_path / n for n in ("ready", "err", "new", "report"))
    store = tidelog.open(store_dir, segment_bytes=SEGMENT_BYTES)
    store.create_topic("t")
    args = [str(p) for p in (store_dir, ready, errored, recreated, report)]
    child = subprocess.Popen([sys.executable, "-c", APPENDER, *args, mode, str(SEGMENT_BYTES)])
    try:
        _wait_for(ready, child, "appended")
        # Hard links keep the old segment's bytes readable after the deletion.
        kept = tmp_path / "kept"
        kept.mkdir()
        part = store_dir / "topics" / "t" / "0"
        for f in part.iterdir():
            if f.suffix == ".log":
                os.link(f, kept / f.name)
        store.delete_topic("t")
        _wait_for(errored, child, "saw the deletion (it kept appending to the deleted topic)")
        new = store.create_topic("t")
        new.append(b"new 0", partition=0)
        recreated.touch()
        child.wait(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    acked_s, error = errored.read_text().split()
    acked = int(acked_s)
    assert error == "TopicNotFoundError"
    refused, foreign = report.read_text().split()
    assert refused == "refused", "the old handle appended to the re-created topic"
    assert int(foreign) == 0, "the re-created topic holds the old topic's messages"
    assert [m.value for m in store.topic("t").read(0, 0)] == [b"new 0"]
    old: list[bytes] = []
    for f in sorted(kept.iterdir()):
        for batch in _core.inspect_segment(f, records=True)["batches"]:
            old.extend(r["value"] for r in batch["records"])
    # Everything acknowledged is in the old topic, in order; a producer may also have
    # written (unacknowledged) messages of its last flush before it saw the deletion.
    assert old[:acked] == [b"old %d" % i for i in range(acked)]
    if mode == "append":
        assert len(old) == acked
    else:
        assert len(old) < acked + 100
    store.close()


def test_appender_in_another_process_sees_the_deletion(tmp_path: Path) -> None:
    _run(tmp_path, "append")


def test_producer_in_another_process_sees_the_deletion(tmp_path: Path) -> None:
    _run(tmp_path, "producer")
