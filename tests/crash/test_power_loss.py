"""Power loss at the instant a call returned: the acknowledged state must be on disk.

Each case runs a workload under strace up to one acknowledged call and stops the process
there; :mod:`power_loss` turns the directory it left (the page cache) into what a power
loss could leave, given the syncs the trace shows, and the store is reopened from that.
With ``fsync="always"`` the acknowledged data must all be there; with any policy the store
must open and serve no damaged or changed data.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import tidelog
from power_loss import build_image, strace_command, strace_works

pytestmark = [
    pytest.mark.crash,
    pytest.mark.skipif(
        not strace_works(),
        reason="needs strace (Debian package strace) and permission to trace a child process",
    ),
]

PRELUDE = """
import os, sys
import tidelog
STORE = sys.argv[1]
def ack():
    # The instant the acknowledged call returned: stop, as a power loss would, with every
    # file as the page cache holds it and nothing run after (no close, no destructor).
    os.write(2, b"ACK\\n")
    os._exit(0)
"""


@dataclass
class Run:
    after: Path
    before: Path
    trace: Path
    tmp: Path

    def image(self, lose: str = "all", trace: Path | None = None, name: str = "image") -> Path:
        img = build_image(self.after, self.before, trace or self.trace, self.tmp / name, lose)
        return img.path / "data"

    def images(self) -> list[Path]:
        """The store after each kind of power loss (see :mod:`power_loss`)."""
        return [self.image(lose, name=lose) for lose in ("all", "data")]


def run(tmp_path: Path, body: str, setup: str = "") -> Run:
    """Runs ``setup``, then ``body`` traced up to its ``ack()``; the store is ``root/data``."""
    root = tmp_path / "root"
    root.mkdir()
    store = root / "data"
    for name, code in (("setup", setup), ("body", body)):
        if not code:
            continue
        script = tmp_path / f"{name}.py"
        script.write_text(PRELUDE + textwrap.dedent(code))
        argv = [sys.executable, str(script), str(store)]
        if name == "body":
            # The model takes this copy as on disk; the real disk is never cut, so it need
            # not be synced.
            shutil.copytree(root, tmp_path / "before", symlinks=True)
            argv = strace_command(tmp_path / "trace", argv)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if name == "body":
            assert "ACK" in done.stderr, done.stderr
    return Run(root, tmp_path / "before", tmp_path / "trace", tmp_path)


def values(topic: tidelog.Topic, partition: int = 0) -> list[bytes | None]:
    start = topic.start_offset(partition)
    return [m.value for m in topic.read(partition=partition, offset=start)]


def test_a_fresh_store_and_its_first_appends_survive(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        """
        store = tidelog.open(STORE, fsync="always")
        t = store.create_topic("t", partitions=1)
        for i in range(3):
            t.append(b"v%d" % i, partition=0)
        ack()
        """,
    )
    for lose in ("all", "data"):
        with tidelog.open(r.image(lose, name=lose)) as store:
            assert values(store.topic("t")) == [b"v0", b"v1", b"v2"], lose


def test_a_new_topic_in_an_existing_store_keeps_its_first_append(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        setup="""
        tidelog.open(STORE, fsync="always").close()
        """,
        body="""
        store = tidelog.open(STORE, fsync="always")
        store.create_topic("u", partitions=2).append(b"first", partition=1)
        ack()
        """,
    )
    for image in r.images():
        with tidelog.open(image) as store:
            assert values(store.topic("u"), 1) == [b"first"]


ROLLING = """
store = tidelog.open(STORE, fsync="always", segment_bytes=4096)
t = store.topic("t")
for i in range(12):
    t.append(b"%02d" % i + b"." * 1000, partition=0)
ack()
"""
ROLLING_SETUP = """
tidelog.open(STORE, fsync="always", segment_bytes=4096).create_topic("t", partitions=1)
"""


def test_appends_after_segment_rolls_survive(tmp_path: Path) -> None:
    r = run(tmp_path, ROLLING, ROLLING_SETUP)
    for image in r.images():
        with tidelog.open(image) as store:
            assert [(v or b"")[:2] for v in values(store.topic("t"))] == [
                b"%02d" % i for i in range(12)
            ]


def _without_directory_syncs(trace: Path, out: Path) -> Path:
    """The trace with every fsync of a directory taken out."""
    dir_fds: set[str] = set()
    lines = []
    for line in trace.read_text().splitlines():
        opened = re.search(r'openat\(AT_FDCWD, "([^"]+)", [^)]*\) = (\d+)', line)
        if opened is not None:
            if Path(opened.group(1)).is_dir():
                dir_fds.add(opened.group(2))
            else:
                dir_fds.discard(opened.group(2))
        synced = re.search(r"\bfsync\((\d+)\)", line)
        if synced is not None and synced.group(1) in dir_fds:
            continue
        lines.append(line)
    out.write_text("\n".join(lines) + "\n")
    return out


def test_the_image_loses_new_segments_when_their_directory_was_not_synced(tmp_path: Path) -> None:
    # The model must be able to fail: the same run, with the directory fsyncs of its rolls
    # taken out of the trace, leaves an image without the rolled segments.
    r = run(tmp_path, ROLLING, ROLLING_SETUP)
    doctored = _without_directory_syncs(r.trace, tmp_path / "doctored")
    img = build_image(r.after, r.before, doctored, tmp_path / "img")
    assert any(p.endswith(".log") for p in img.dropped), img.dropped
    with tidelog.open(img.path / "data") as store:
        assert len(values(store.topic("t"))) < 12


def test_the_model_keeps_only_synced_names_and_bytes(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        setup="""
        os.makedirs(STORE)
        with open(os.path.join(STORE, "old"), "wb") as f:
            f.write(b"old")
        """,
        body="""
        def put(name, data, sync_file=True):
            fd = os.open(os.path.join(STORE, name), os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(fd, data, 0)
            if sync_file:
                os.fdatasync(fd)
            os.close(fd)
        def sync_dir():
            fd = os.open(STORE, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        put("durable", b"1")
        put("unsynced-data", b"2", sync_file=False)
        sync_dir()
        put("unsynced-name", b"3")
        os.rename(os.path.join(STORE, "durable"), os.path.join(STORE, "renamed"))
        os.unlink(os.path.join(STORE, "old"))
        ack()
        """,
    )

    def files(img: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in img.iterdir()}

    assert files(r.image("all", name="all")) == {
        "old": b"old",
        "durable": b"1",
        "unsynced-data": b"",
    }
    assert files(r.image("data", name="data")) == {
        "renamed": b"1",
        "unsynced-data": b"",
        "unsynced-name": b"3",
    }


#: Topic "t" of one partition holding v0, v1 and v2 (synced).
THREE_MESSAGES = """
store = tidelog.open(STORE, fsync="always")
t = store.create_topic("t", partitions=1)
for i in range(3):
    t.append(b"v%d" % i, partition=0)
store.close()
"""


def test_a_committed_consumer_offset_survives(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        setup=THREE_MESSAGES,
        body="""
        store = tidelog.open(STORE, fsync="always")
        c = store.consumer("t", group="g")
        assert len(c.poll(max_messages=2, timeout=5.0)) == 2
        c.commit()
        ack()
        """,
    )
    for image in r.images():
        with tidelog.open(image) as store, store.consumer("t", group="g") as c:
            assert c.committed() == {0: 2}


def test_a_flushed_work_queue_ack_survives(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        setup=THREE_MESSAGES,
        body="""
        store = tidelog.open(STORE, fsync="always")
        q = store.work_queue("t", group="w", prefetch=1)
        job = q.acquire(5.0)
        assert job is not None and job.value == b"v0"
        q.ack(job)
        q.flush()
        ack()
        """,
    )
    for image in r.images():
        with tidelog.open(image) as store, store.work_queue("t", group="w", lock_timeout=60) as q:
            got: list[bytes] = []
            while (job := q.acquire(0.2)) is not None:
                assert job.value is not None
                got.append(job.value)
                q.ack(job)
            assert sorted(got) == [b"v1", b"v2"]


def test_a_named_producer_keeps_its_identity(tmp_path: Path) -> None:
    # A producer that lost its identity would come back with the same id and sequence 0,
    # and its next batch would be taken for a retry of the first and dropped.
    r = run(
        tmp_path,
        setup="""
        tidelog.open(STORE, fsync="always").create_topic("t", partitions=1)
        """,
        body="""
        store = tidelog.open(STORE, fsync="always")
        p = store.producer(name="p", idempotent=True)
        p.send("t", b"first", partition=0)
        p.flush()
        ack()
        """,
    )
    for image in r.images():
        with tidelog.open(image, fsync="always") as store:
            with store.producer(name="p", idempotent=True) as p:
                p.send("t", b"second", partition=0)
                p.flush()
            assert values(store.topic("t")) == [b"first", b"second"]


def test_a_committed_transaction_survives(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        setup="""
        store = tidelog.open(STORE, fsync="always")
        store.create_topic("src", partitions=1).append(b"in", partition=0)
        store.create_topic("out", partitions=1)
        store.close()
        """,
        body="""
        store = tidelog.open(STORE, fsync="always")
        c = store.consumer("src", group="eo", delivery="exactly-once")
        p = store.producer(name="tx", idempotent=True)
        assert len(c.poll(max_messages=1, timeout=5.0)) == 1
        with store.transaction(p, c) as tx:
            tx.send("out", b"result", partition=0)
        ack()
        """,
    )
    for image in r.images():
        with tidelog.open(image) as store:
            assert values(store.topic("out")) == [b"result"]
            with store.consumer("src", group="eo", delivery="exactly-once") as c:
                assert c.committed() == {0: 1}


def test_a_deleted_topic_stays_deleted(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        setup="""
        store = tidelog.open(STORE, fsync="always")
        store.create_topic("z", partitions=2).append(b"old", partition=0)
        store.create_topic("keep", partitions=1).append(b"k", partition=0)
        store.close()
        """,
        body="""
        store = tidelog.open(STORE, fsync="always")
        store.delete_topic("z")
        ack()
        """,
    )
    for image in r.images():
        with tidelog.open(image) as store:
            assert store.topics() == ["keep"]
            assert values(store.topic("keep")) == [b"k"]
            assert values(store.create_topic("z", partitions=1)) == []


COMPACTED_SETUP = """
store = tidelog.open(STORE, fsync="always", segment_bytes=4096)
k = store.create_topic("k", partitions=1, cleanup_policy="compact")
# Keys written once live on only in the rewritten segments.
for i in range(5):
    k.append(b"solo%d" % i, key=b"solo%d" % i, partition=0)
for r in range(4):
    for i in range(10):
        k.append(b"%d-%d:" % (r, i) + b"." * 300, key=b"key%d" % i, partition=0)
dump(store, "before.txt")
store.close()
"""
DUMP = """
def dump(store, name):
    k = store.topic("k")
    rows = [(m.offset, m.key, m.value) for m in k.read(partition=0, offset=k.start_offset(0))]
    with open(os.path.join(os.path.dirname(os.path.dirname(STORE)), name), "w") as f:
        f.write(repr(rows))
"""


def dumped(store: tidelog.Store) -> str:
    k = store.topic("k")
    return repr([(m.offset, m.key, m.value) for m in k.read(partition=0, offset=k.start_offset(0))])


@pytest.mark.parametrize("fsync", ["always", "never"])
@pytest.mark.parametrize("lose", ["all", "data"])
def test_compaction_never_damages_what_it_rewrote(tmp_path: Path, fsync: str, lose: str) -> None:
    # The compacted segments replace segments that were already on disk: whatever the
    # policy, a power loss after the swap must leave either the old segments or the
    # rewritten ones, whole (here: the old ones were synced before the run).
    r = run(
        tmp_path,
        setup=DUMP + COMPACTED_SETUP,
        body=DUMP
        + textwrap.dedent(
            f"""
            store = tidelog.open(STORE, fsync={fsync!r})
            stats = store.topic("k").compact()
            assert stats["segments_before"] > stats["segments_after"], stats
            dump(store, "after.txt")
            ack()
            """
        ),
    )
    before, after = (tmp_path / "before.txt").read_text(), (tmp_path / "after.txt").read_text()
    assert before != after
    with tidelog.open(r.image(lose)) as store:
        got = dumped(store)
    if fsync == "always":
        assert got == after
    else:
        assert got in (before, after)
