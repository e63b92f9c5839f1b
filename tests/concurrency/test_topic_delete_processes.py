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

# Appends b"old <i>" to partition 0 of topic "t" until a call raises TopicNotFoundError,
# then writes "<acknowledged> <error class>" to the report file and re-opens the topic by
# name (which must be the re-created one, holding only the parent's messages).
APPENDER = textwrap.dedent(
    """
    import sys, time
    import tidelog
    store_dir, ready, report, mode = sys.argv[1:5]
    store = tidelog.open(store_dir, segment_bytes=int(sys.argv[5]))
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
    # Whatever the parent re-created: it must hold none of our messages.
    while True:
        try:
            again = store.topic("t")
            break
        except tidelog.TopicNotFoundError:
            time.sleep(0.01)
    while again.end_offset(0) == 0:
        time.sleep(0.01)
    values = [m.value for m in again.read(0, 0)]
    with open(report, "w") as f:
        f.write("%d %s %d\\n" % (acked, error, sum(not v.startswith(b"new") for v in values)))
    if producer is not None:
        try:
            producer.close()
        except tidelog.TidelogError:
            pass
    store.close()
    """
)


def _run(tmp_path: Path, mode: str) -> None:
    store_dir = tmp_path / "store"
    ready, report = tmp_path / "ready", tmp_path / "report"
    store = tidelog.open(store_dir, segment_bytes=SEGMENT_BYTES)
    store.create_topic("t")
    args = [str(store_dir), str(ready), str(report), mode, str(SEGMENT_BYTES)]
    child = subprocess.Popen([sys.executable, "-c", APPENDER, *args])
    try:
        while not ready.exists():
            assert child.poll() is None, "the child died before appending"
            time.sleep(0.005)
        # Hard links keep the old segment's bytes readable after the deletion.
        kept = tmp_path / "kept"
        kept.mkdir()
        part = store_dir / "topics" / "t" / "0"
        for f in part.iterdir():
            if f.suffix == ".log":
                os.link(f, kept / f.name)
        store.delete_topic("t")
        new = store.create_topic("t")
        new.append(b"new 0", partition=0)
        try:
            child.wait(timeout=90)
        except subprocess.TimeoutExpired:
            raise AssertionError("the child kept appending to the deleted topic") from None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0
    acked_s, error, foreign = report.read_text().split()
    acked = int(acked_s)
    assert error == "TopicNotFoundError"
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
