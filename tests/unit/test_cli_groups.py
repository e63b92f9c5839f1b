"""``tidelog groups`` and ``tidelog consume --group``, run as real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_DIR"}
    env.update(NO_COLOR="1", **extra)
    return env


def tidelog_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )


def _default_sigint() -> None:
    """In the child: Ctrl-C interrupts it even if this suite runs with SIGINT ignored
    (``nohup``, a background job), whose disposition a child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def spawn(*args: str | Path, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A running ``tidelog`` command, killed if the test leaves it running."""
    popen.setdefault("stdout", subprocess.PIPE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        bufsize=0,  # readline() then never reads past the line: select() sees what is left
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=popen.pop("env", _env()),
        preexec_fn=_default_sigint,
        **popen,
    )
    with proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _read_line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "no output"
    return proc.stdout.readline()


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert proc.returncode == status, proc
    assert proc.stderr.startswith("tidelog: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    for word in words:
        assert word in proc.stderr


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A store with topic ``orders`` (3 partitions of 10 messages) and topic ``other``."""
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        orders = store.create_topic("orders", partitions=3)
        for i in range(30):
            orders.append(f"m{i}".encode(), partition=i % 3)
        store.create_topic("other")
    return path


def consume(store: Path, group: str, *args: str) -> list[dict[str, Any]]:
    """Runs ``consume orders --group`` as JSON lines and returns the records it printed."""
    proc = tidelog_cli(
        "consume", "orders", "--group", group, "--format", "json", *args, "-d", store
    )
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    return jsonl(proc.stdout)


def groups_json(store: Path, *args: str) -> list[dict[str, Any]]:
    proc = tidelog_cli("groups", "--json", *args, "-d", store)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    shown: list[dict[str, Any]] = json.loads(proc.stdout)["groups"]
    return shown


def wait_for_member(store: Path, group: str, timeout: float = 10.0) -> None:
    """Waits until ``group`` has a live member (it joins a moment after starting)."""
    deadline = time.monotonic() + timeout
    while not any(e["group"] == group and e["members"] for e in groups_json(store)):
        assert time.monotonic() < deadline, f"no member of {group!r} joined"
        time.sleep(0.05)


def next_offsets(records: list[dict[str, Any]]) -> dict[int, int]:
    """The offset after the last printed record of each partition."""
    out: dict[int, int] = {}
    for r in records:
        out[r["partition"]] = max(out.get(r["partition"], 0), r["offset"] + 1)
    return out


def committed_of(entry: dict[str, Any]) -> dict[int, int | None]:
    return {p["partition"]: p["committed"] for p in entry["partitions"]}


# --- groups ------------------------------------------------------------------------------


def test_groups_shows_commits_and_lag_exactly(store_dir: Path) -> None:
    printed = consume(store_dir, "billing", "--max", "12")
    assert len(printed) == 12
    done = next_offsets(printed)

    (entry,) = groups_json(store_dir)
    assert entry["group"] == "billing" and entry["topic"] == "orders"
    assert entry["members"] == {}  # the consumer left when it exited
    assert committed_of(entry) == {p: done.get(p) for p in range(3)}
    assert [p["end_offset"] for p in entry["partitions"]] == [10, 10, 10]
    assert [p["lag"] for p in entry["partitions"]] == [10 - done.get(p, 0) for p in range(3)]
    assert entry["lag"] == 30 - 12
    assert all(p["member"] is None for p in entry["partitions"])

    table = tidelog_cli("groups", "-d", store_dir)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "group",
        "topic",
        "generation",
        "partition",
        "member",
        "committed",
        "end",
        "offset",
        "lag",
    ]
    for p in range(3):
        committed = str(done[p]) if p in done else "-"
        row = ["billing", "orders", str(entry["generation"]), str(p), "-", committed, "10"]
        assert lines[1 + p].split() == [*row, str(10 - done.get(p, 0))]
    # The internal offsets topic is never shown, nor listed by 'topics'.
    assert "__consumer_offsets" not in table.stdout
    assert tidelog_cli("topics", "-d", store_dir).stdout == "orders\nother\n"


def test_two_groups_are_independent(store_dir: Path) -> None:
    everything = consume(store_dir, "a")
    assert sorted(r["value"] for r in everything) == sorted(f"m{i}" for i in range(30))
    first = consume(store_dir, "b", "-n", "5")
    assert consume(store_dir, "a") == []  # a is done; b's progress does not move it

    shown = {e["group"]: e for e in groups_json(store_dir)}
    assert set(shown) == {"a", "b"}
    assert committed_of(shown["a"]) == {0: 10, 1: 10, 2: 10}
    assert shown["a"]["lag"] == 0
    assert shown["b"]["lag"] == 25
    assert [e["group"] for e in groups_json(store_dir, "--group", "b")] == ["b"]
    assert [e["group"] for e in groups_json(store_dir, "orders", "-g", "a")] == ["a"]
    assert groups_json(store_dir, "other") == []

    rest = consume(store_dir, "b")
    assert sorted(r["value"] for r in first + rest) == sorted(f"m{i}" for i in range(30))


def test_consume_group_resumes_where_the_last_run_stopped(store_dir: Path) -> None:
    runs = [consume(store_dir, "resume", "--max", "7") for _ in range(4)]
    runs.append(consume(store_dir, "resume"))
    assert [len(r) for r in runs] == [7, 7, 7, 7, 2]
    seen = [(r["partition"], r["offset"]) for run in runs for r in run]
    assert sorted(seen) == [(p, o) for p in range(3) for o in range(10)]  # each exactly once
    # Within a partition a group reads in order.
    for p in range(3):
        offsets = [o for q, o in seen if q == p]
        assert offsets == sorted(offsets)

    with tidelog.open(store_dir) as store:
        store.topic("orders").append(b"late", partition=1)
    late = consume(store_dir, "resume")
    assert [(r["partition"], r["offset"], r["value"]) for r in late] == [(1, 10, "late")]
    (entry,) = groups_json(store_dir, "-g", "resume")
    assert committed_of(entry) == {0: 10, 1: 11, 2: 10}


def test_consume_group_raw_and_hex_formats(store_dir: Path) -> None:
    raw = tidelog_cli("consume", "orders", "-g", "fmt", "-n", "2", "-d", store_dir)
    assert raw.returncode == 0 and len(raw.stdout.splitlines()) == 2
    hexed = tidelog_cli("consume", "orders", "-g", "fmt", "--format", "hex", "-d", store_dir)
    rows = [line.split("\t") for line in hexed.stdout.splitlines()]
    assert len(rows) == 28
    assert all(bytes.fromhex(value).startswith(b"m") for _, _, _, value in rows)


def test_at_most_once_commits_what_it_hands_out(store_dir: Path) -> None:
    printed = consume(store_dir, "amo", "--delivery", "at-most-once", "-n", "4")
    (entry,) = groups_json(store_dir, "-g", "amo")
    assert committed_of(entry) == {p: next_offsets(printed).get(p) for p in range(3)}


def test_groups_json_shape_with_a_live_member(store_dir: Path) -> None:
    with spawn("consume", "orders", "-g", "live", "--follow", "-d", store_dir) as proc:
        for _ in range(30):
            _read_line(proc)
        deadline = time.monotonic() + 10
        while True:  # the commit follows the output by a moment
            (entry,) = groups_json(store_dir)
            if entry["lag"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert proc.stderr is not None and proc.stderr.read() == b""
    assert set(entry) == {"group", "topic", "generation", "members", "partitions", "lag"}
    assert entry["lag"] == 0
    assert isinstance(entry["generation"], int) and entry["generation"] >= 1
    (member,) = entry["members"]
    assert entry["members"][member] == [0, 1, 2]
    assert f"-{proc.pid}-" in member  # host-pid-random
    assert entry["partitions"] == [
        {"partition": p, "member": member, "committed": 10, "end_offset": 10, "lag": 0}
        for p in range(3)
    ]
    # Ctrl-C left the group at once.
    assert groups_json(store_dir)[0]["members"] == {}


def test_no_groups(store_dir: Path) -> None:
    assert groups_json(store_dir) == []
    proc = tidelog_cli("groups", "-d", store_dir)
    assert (proc.returncode, proc.stdout) == (0, "no consumer groups\n")
    # Looking does not create the internal offsets topic.
    assert not (store_dir / "topics" / "__consumer_offsets").exists()


# --- consume --group: stopping -------------------------------------------------------


def test_closed_pipe_commits_nothing_unprinted(tmp_path: Path) -> None:
    store_dir = tmp_path / "big"
    with tidelog.open(store_dir) as store:
        # Each value is larger than a pipe buffer: the first poll cannot be written whole
        # before the reader goes away.
        store.create_topic("big").append_batch([b"x" * 100_000] * 20, partition=0)
    with spawn("consume", "big", "-g", "pipe", "-d", store_dir) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = b""
        while b"\n" not in first:
            first += proc.stdout.read(65536)
        assert first.split(b"\n")[0] == b"x" * 100_000
        proc.stdout.close()
        assert proc.wait(timeout=30) == 141
        assert proc.stderr.read() == b""
    proc2 = tidelog_cli("groups", "big", "--json", "-d", store_dir)
    (entry,) = json.loads(proc2.stdout)["groups"]
    assert entry["partitions"][0]["committed"] in (None, 0)
    assert entry["lag"] == 20
    # So the next run prints everything again (at-least-once), and then commits it.
    again = tidelog_cli("consume", "big", "-g", "pipe", "--format", "hex", "-d", store_dir)
    assert len(again.stdout.splitlines()) == 20
    (entry,) = json.loads(tidelog_cli("groups", "--json", "-d", store_dir).stdout)["groups"]
    assert entry["partitions"][0]["committed"] == 20


def test_follow_from_end_then_ctrl_c(store_dir: Path) -> None:
    args = ("consume", "orders", "-g", "tail", "--from-end", "-f", "--format", "json")
    with spawn(*args, "-d", store_dir) as proc:
        wait_for_member(store_dir, "tail")
        with tidelog.open(store_dir) as store:
            store.topic("orders").append(b"new", partition=2)
        record = json.loads(_read_line(proc))
        assert (record["partition"], record["offset"], record["value"]) == (2, 10, "new")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert proc.stderr is not None and proc.stderr.read() == b""
    (entry,) = groups_json(store_dir, "-g", "tail")
    assert committed_of(entry) == {0: None, 1: None, 2: 11}


def test_sigterm_commits_and_leaves_the_group_at_once(store_dir: Path) -> None:
    with spawn("consume", "orders", "-g", "term", "-f", "-d", store_dir) as proc:
        values = [_read_line(proc) for _ in range(30)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
        assert proc.stderr is not None and proc.stderr.read() == b""
    assert sorted(values) == sorted(f"m{i}\n".encode() for i in range(30))
    (entry,) = groups_json(store_dir)
    # Gone without waiting for its lease, and everything it printed is committed.
    assert (entry["members"], entry["lag"]) == ({}, 0)


# --- groups --watch ----------------------------------------------------------------------


def _read_until(fd: int, wanted: bytes, timeout: float = 10.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while wanted not in seen:
            left = deadline - time.monotonic()
            assert left > 0 and selector.select(left), f"no {wanted!r} in {seen!r}"
            try:
                seen += os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
    return seen


def test_watch_renders_live_and_stops_on_ctrl_c(store_dir: Path) -> None:
    consume(store_dir, "watched", "-n", "3")
    primary, secondary = pty.openpty()
    try:
        args = ("groups", "--watch", "-i", "0.2", "-d", store_dir)
        with spawn(*args, stdout=secondary, env=_env(TERM="xterm", COLUMNS="120")) as proc:
            os.close(secondary)
            secondary = -1
            screen = _read_until(primary, b"Ctrl-C to stop")
            screen += _read_until(primary, b"Ctrl-C to stop")  # a second frame: it refreshes
            assert b"watched" in screen and b"lag" in screen
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
            assert proc.stderr is not None and proc.stderr.read() == b""
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)


def test_watch_json_lines_when_not_a_terminal(store_dir: Path) -> None:
    consume(store_dir, "watched", "-n", "3")
    with spawn("groups", "orders", "--watch", "--json", "--interval", "0.1", "-d", store_dir) as p:
        frames = [json.loads(_read_line(p)) for _ in range(2)]
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=10) == 130
        assert p.stderr is not None and p.stderr.read() == b""
    assert frames[0]["time_ms"] <= frames[1]["time_ms"]
    assert [e["group"] for e in frames[1]["groups"]] == ["watched"]
    assert frames[1]["groups"][0]["lag"] == 27


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["groups", "nope"], 1, ['topic "nope" does not exist']),
        (["groups", "--group", "nope"], 1, ['group "nope" does not exist']),
        (["groups", "orders", "-g", "nope"], 1, ['group "nope"', 'topic "orders"']),
        (["groups", "--interval", "0"], 2, ["--interval"]),
        (["consume", "nope", "--group", "g"], 1, ['topic "nope" does not exist']),
        (["consume", "orders", "-g", "g", "-p", "0"], 2, ["--partition", "--group"]),
        (["consume", "orders", "-g", "g", "-t", "0"], 2, ["--timestamp", "--group"]),
        (["consume", "orders", "--delivery", "at-most-once"], 2, ["--delivery needs --group"]),
        (["consume", "orders", "-g", "g", "--delivery", "exactly"], 2, ["--delivery"]),
    ],
)
def test_errors_are_one_line(
    store_dir: Path, args: list[str], status: int, words: list[str]
) -> None:
    assert_one_line_error(tidelog_cli(*args, "-d", store_dir), status, *words)


def test_groups_on_a_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert_one_line_error(tidelog_cli("groups", "-d", missing), 1, "does not exist")
    assert not missing.exists()


# --- store.stats() -----------------------------------------------------------------------


def test_store_stats_has_groups_and_producers(store_dir: Path) -> None:
    with tidelog.open(store_dir) as store:
        stats = store.stats()
        assert (stats["groups"], stats["producers"]) == ({}, {})
        assert "__consumer_offsets" not in store.topics(internal=True)  # not created by looking
    printed = consume(store_dir, "stats", "-n", "4")
    with tidelog.open(store_dir) as store:
        with store.producer(name="writer") as producer:
            producer.send("other", b"x")
            producer.flush()
            stats = store.stats()
        assert stats["groups"] == store.groups()
        info = stats["groups"]["stats"]["orders"]
        assert info["committed"] == next_offsets(printed)
        assert sum(info["lag"].values()) == 26
        assert list(stats["producers"]) == ["writer"]
        assert stats["producers"]["writer"]["written"] == 1
        assert store.stats()["producers"] == {}  # closed producers are gone


# --- work queues -------------------------------------------------------------------------


def test_groups_shows_work_queues(store_dir: Path) -> None:
    with (
        tidelog.open(store_dir) as store,
        store.work_queue("orders", group="transcoders", dead_letter="orders.dead") as q,
    ):
        jobs = q.acquire_many(30, timeout=0)
        first = {p: min(j.offset for j in jobs if j.partition == p) for p in range(3)}
        q.ack_many([j for j in jobs if j.offset != first[j.partition]][:20])
        q.reject(next(j for j in jobs if j.partition == 0 and j.offset == first[0]))
        # The rest stays held by this member (in flight) while the CLI looks.
        proc = tidelog_cli("groups", "--json", "-d", store_dir)
        table = tidelog_cli("groups", "orders", "-g", "transcoders", "-d", store_dir)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["groups"] == []
    (queue,) = shown["work_queues"]
    assert (queue["queue"], queue["topic"]) == ("transcoders", "orders")
    assert queue["acked"] == 20 and queue["dead_lettered"] == 1 and queue["archived"] == 0
    assert queue["in_flight"] == 9 and queue["backlog"] == 0 and queue["lag"] == 9
    assert [p["end_offset"] for p in queue["partitions"]] == [10, 10, 10]
    assert table.returncode == 0, table.stderr
    assert "work queue" in table.stdout and "transcoders" in table.stdout
    assert "dead-lettered" in table.stdout
    # After the member closed, its jobs are back in the backlog.
    (queue,) = json.loads(tidelog_cli("groups", "--json", "-d", store_dir).stdout)["work_queues"]
    assert queue["in_flight"] == 0 and queue["backlog"] == 9
