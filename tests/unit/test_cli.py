"""The ``tidelog`` command line, run as a real subprocess on real stores."""

from __future__ import annotations

import base64
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tidelog
from tidelog import _core

COMMANDS = [
    "topics",
    "create",
    "delete",
    "describe",
    "produce",
    "consume",
    "groups",
    "producers",
    "dump",
    "verify",
    "repair",
    "bench",
]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_DIR"}
    env.update(NO_COLOR="1", **extra)
    return env


def tidelog_cli(
    *args: str | Path,
    input: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env or _env(),
    )


def _default_sigint() -> None:
    """In the child: Ctrl-C interrupts it even if this suite runs with SIGINT ignored
    (``nohup``, a background job), whose disposition a child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(*args: str | Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        preexec_fn=_default_sigint,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert proc.returncode == status, proc
    assert proc.stderr.startswith("tidelog: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A store with topic ``orders`` (3 partitions, 30 messages) and empty topic ``empty``."""
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        orders = store.create_topic("orders", partitions=3)
        for i in range(30):
            orders.append(f"m{i}".encode(), partition=i % 3, timestamp_ms=1000 + i)
        store.create_topic("empty")
    return path


@pytest.fixture
def small_segments(tmp_path: Path) -> Path:
    """A closed store whose topic ``t`` has several 8 KiB segments per partition."""
    path = tmp_path / "small"
    with tidelog.open(path, segment_bytes=8192) as store:
        topic = store.create_topic("t", partitions=2)
        for i in range(400):
            topic.append(b"v" * 60 + str(i).encode(), key=b"k", partition=i % 2)
    return path


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# --- help and usage ----------------------------------------------------------------------


def test_help_lists_every_subcommand() -> None:
    proc = tidelog_cli("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", proc.stdout, re.MULTILINE), command
    assert "TIDELOG_DIR" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help_with_dir(command: str) -> None:
    proc = tidelog_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--dir" in proc.stdout
    assert proc.stdout.startswith(f"usage: tidelog {command}")


def test_no_subcommand_is_a_usage_error() -> None:
    proc = tidelog_cli()
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_main_module_and_console_script_agree(store_dir: Path) -> None:
    script = Path(sys.executable).with_name("tidelog")
    if not script.exists():
        pytest.skip("console script not installed next to the interpreter")
    proc = subprocess.run(
        [script, "--dir", store_dir, "topics"], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 0
    assert proc.stdout == tidelog_cli("--dir", store_dir, "topics").stdout


# --- topics, create, delete, describe ----------------------------------------------------


def test_store_argument_before_after_env_and_cwd(store_dir: Path) -> None:
    expected = "empty\norders\n"
    assert tidelog_cli("--dir", store_dir, "topics").stdout == expected
    assert tidelog_cli("topics", "--dir", store_dir).stdout == expected
    assert tidelog_cli("topics", env=_env(TIDELOG_DIR=str(store_dir))).stdout == expected
    assert tidelog_cli("topics", cwd=store_dir).stdout == expected
    # --dir wins over the environment.
    other = store_dir.parent / "missing"
    proc = tidelog_cli("topics", "-d", store_dir, env=_env(TIDELOG_DIR=str(other)))
    assert proc.stdout == expected


def test_create_describe_delete(tmp_path: Path) -> None:
    store = tmp_path / "new" / "store"
    proc = tidelog_cli("create", "events", "--partitions", "4", "--dir", store)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"topic 'events' created (4 partitions) in {store}\n"
    proc = tidelog_cli("create", "events", "-p", "4", "--exist-ok", "-d", store)
    assert proc.stdout == f"topic 'events' exists (4 partitions) in {store}\n"
    assert_one_line_error(tidelog_cli("create", "events", "-d", store), 1, "already exists")
    assert_one_line_error(
        tidelog_cli("create", "events", "-p", "2", "--exist-ok", "-d", store), 1, "events"
    )
    with tidelog.open(store) as s:
        s.topic("events").append(b"x", partition=2)

    proc = tidelog_cli("describe", "events", "-d", store)
    assert proc.returncode == 0, proc.stderr
    assert "events: 4 partitions, 1 messages" in proc.stdout
    proc = tidelog_cli("describe", "events", "--json", "-d", store)
    described = json.loads(proc.stdout)
    assert described["messages"] == 1
    assert described["partitions"]["2"]["end_offset"] == 1
    assert described["partitions"]["0"]["segments"] == 1

    long = tidelog_cli("topics", "-l", "-d", store)
    assert re.search(r"events\s+4\s+1\s", long.stdout), long.stdout
    proc = tidelog_cli("delete", "events", "-d", store)
    assert (proc.returncode, proc.stdout) == (0, "deleted topic 'events'\n")
    assert tidelog_cli("topics", "-d", store).stdout == ""
    assert_one_line_error(tidelog_cli("delete", "events", "-d", store), 1, '"events"')


def test_store_stats_matches_describe(store_dir: Path) -> None:
    with tidelog.open(store_dir) as store:
        stats = store.stats()
    assert stats["path"] == str(store_dir)
    assert set(stats["topics"]) == {"orders", "empty"}
    assert stats["groups"] == {} and stats["producers"] == {}
    orders = stats["topics"]["orders"]
    assert orders["messages"] == 30
    assert orders["partitions"][1] == {
        "start_offset": 0,
        "end_offset": 10,
        "messages": 10,
        "size_bytes": orders["partitions"][1]["size_bytes"],
        "segments": 1,
    }
    assert orders["size_bytes"] == sum(p["size_bytes"] for p in orders["partitions"].values())
    described = json.loads(tidelog_cli("describe", "orders", "--json", "-d", store_dir).stdout)
    assert described["partitions"]["1"] == orders["partitions"][1]


# --- produce and consume -----------------------------------------------------------------


def test_produce_lines_and_consume_json(store_dir: Path) -> None:
    proc = tidelog_cli(
        "produce",
        "empty",
        "--key",
        "user-1",
        "-H",
        "source=cli",
        "-H",
        "n=1",
        "-v",
        "-d",
        store_dir,
        input=b"first\n\nthird line\r\nno newline",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "partition=0 offset=0",
        "partition=0 offset=1",
        "partition=0 offset=2",
        "partition=0 offset=3",
        "wrote 4 messages to 'empty'",
    ]
    records = jsonl(tidelog_cli("consume", "empty", "--format", "json", "-d", store_dir).stdout)
    assert [r["value"] for r in records] == ["first", "", "third line\r", "no newline"]
    assert [r["offset"] for r in records] == [0, 1, 2, 3]
    assert records[0]["key"] == "user-1"
    assert records[0]["headers"] == {"source": "cli", "n": "1"}
    assert records[0]["topic"] == "empty" and records[0]["partition"] == 0
    assert isinstance(records[0]["timestamp_ms"], int)


def test_produce_files_binary_and_partition(store_dir: Path, tmp_path: Path) -> None:
    blob = bytes(range(256))
    (tmp_path / "a.bin").write_bytes(blob)
    (tmp_path / "b.txt").write_bytes(b"two\nlines")
    proc = tidelog_cli(
        "produce",
        "orders",
        "--file",
        tmp_path / "a.bin",
        "-f",
        tmp_path / "b.txt",
        "--partition",
        "2",
        "-H",
        "raw=\u00e9",
        "-d",
        store_dir,
    )
    assert (proc.returncode, proc.stdout) == (0, "wrote 2 messages to 'orders'\n"), proc.stderr
    args = ("consume", "orders", "-p", "2", "-o", "10", "--format", "json", "-d", store_dir)
    first, second = jsonl(tidelog_cli(*args).stdout)
    assert first["value_base64"] is True
    assert base64.b64decode(first["value"]) == blob
    assert first["key"] is None and "key_base64" not in first
    assert first["headers"] == {"raw": "\u00e9"}
    assert (second["offset"], second["value"]) == (11, "two\nlines")
    assert "value_base64" not in second
    hex_lines = tidelog_cli(
        "consume", "orders", "-p", "2", "-o", "10", "--format", "hex", "-d", store_dir
    )
    assert hex_lines.stdout.splitlines()[0] == f"2\t10\t-\t{blob.hex()}"


def test_consume_positions_and_max(store_dir: Path) -> None:
    def values(*args: str) -> list[str]:
        proc = tidelog_cli("consume", "orders", *args, "-d", store_dir)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    everything = values()
    assert sorted(everything) == sorted(f"m{i}" for i in range(30))
    assert values("--from-beginning") == everything
    assert values("-p", "1") == [f"m{i}" for i in range(1, 30, 3)]
    assert values("-p", "1", "--offset", "8") == ["m25", "m28"]
    assert values("-p", "1", "--offset", "10") == []
    assert values("--timestamp", "1027") == ["m27", "m28", "m29"]
    assert values("-p", "0", "--timestamp", "1970-01-01T00:00:01.024") == ["m24", "m27"]
    assert values("--from-end") == []
    assert len(values("--max", "7")) == 7
    assert values("-p", "2", "-n", "2", "--format", "raw") == ["m2", "m5"]


def test_consume_bad_positions(store_dir: Path) -> None:
    assert_one_line_error(
        tidelog_cli("consume", "orders", "--offset", "3", "-d", store_dir), 2, "--partition"
    )
    assert_one_line_error(
        tidelog_cli("consume", "orders", "-p", "0", "-o", "11", "-d", store_dir), 1, "0..10"
    )
    assert_one_line_error(
        tidelog_cli("consume", "orders", "-p", "3", "-d", store_dir), 1, "3 partitions"
    )
    assert_one_line_error(
        tidelog_cli("consume", "orders", "-o", "1", "--from-end", "-d", store_dir), 2, "not allowed"
    )
    assert_one_line_error(
        tidelog_cli("consume", "orders", "-t", "yesterday", "-d", store_dir), 2, "ISO 8601"
    )
    assert_one_line_error(
        tidelog_cli("consume", "orders", "--format", "xml", "-d", store_dir), 2, "xml"
    )


def test_consume_closed_pipe_exits_quietly(store_dir: Path) -> None:
    with tidelog.open(store_dir) as store:
        # Far more than a pipe buffer, so the consumer is still writing when the pipe closes.
        store.topic("empty").append_batch([b"x" * 100] * 20_000, partition=0)
    with spawn("consume", "empty", "-d", store_dir) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"x" * 100 + b"\n"
        proc.stdout.close()
        assert proc.wait(timeout=30) == 141
        assert proc.stderr.read() == b""


def test_consume_into_head(store_dir: Path) -> None:
    with tidelog.open(store_dir) as store:
        store.topic("empty").append_batch([b"y" * 100] * 20_000, partition=0)
    command = f"{sys.executable} -m tidelog consume empty --format json -d {store_dir} | head -1"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert json.loads(proc.stdout)["offset"] == 0
    assert proc.stderr == ""
    assert proc.returncode == 141


def _read_line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "no output from the consumer"
    return proc.stdout.readline()


def test_consume_follow_sees_new_messages_and_stops_on_ctrl_c(store_dir: Path) -> None:
    with tidelog.open(store_dir) as store:
        topic = store.topic("empty")
        topic.append(b"before")
        with spawn("consume", "empty", "--follow", "--format", "json", "-d", store_dir) as proc:
            assert json.loads(_read_line(proc))["value"] == "before"
            topic.append(b"after", key=b"k")
            record = json.loads(_read_line(proc))
            assert (record["offset"], record["value"], record["key"]) == (1, "after", "k")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
            assert proc.stderr is not None
            assert proc.stderr.read() == b""


def test_follow_with_from_end_skips_history(store_dir: Path) -> None:
    with spawn("consume", "orders", "-f", "--from-end", "-p", "0", "-d", store_dir) as proc:
        assert proc.stdout is not None
        # However long the command takes to start (under load, seconds), what it prints
        # first is one of the messages appended after it started, never the history:
        # append until it prints, each message marking when it was appended.
        with tidelog.open(store_dir) as store, selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            topic = store.topic("orders")
            for i in range(300):
                topic.append(b"new %d" % i, partition=0)
                if selector.select(0.1):
                    break
            first = proc.stdout.readline()
        assert first.startswith(b"new "), first
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130


# --- dump and verify ---------------------------------------------------------------------


def _segments(store: Path, topic: str, partition: int) -> list[Path]:
    return _core.segment_files(store / "topics" / topic / str(partition))


def test_dump_segment_and_topic(small_segments: Path) -> None:
    segments = _segments(small_segments, "t", 0)
    assert len(segments) >= 3
    proc = tidelog_cli("dump", segments[0])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"segment {segments[0]}"
    assert lines[1].split()[:6] == ["position", "offsets", "count", "size", "crc", "crc"]
    assert lines[2].split()[:3] == ["0", "0", "1"]
    assert " BAD " not in proc.stdout

    proc = tidelog_cli("dump", "t", "--partition", "1", "--records", "--json", "-d", small_segments)
    reports = jsonl(proc.stdout)
    assert [r["path"] for r in reports] == [str(p) for p in _segments(small_segments, "t", 1)]
    batches = [b for r in reports for b in r["batches"]]
    assert [b["base_offset"] for b in batches] == list(range(200))
    assert all(b["crc_ok"] and b["producer_id"] == -1 for b in batches)
    assert batches[5]["records"][0] == {
        "offset": 5,
        "timestamp_ms": batches[5]["first_timestamp_ms"],
        "key": "k",
        "value": "v" * 60 + "11",
        "headers": {},
    }
    table = tidelog_cli("dump", "t", "-r", "-d", small_segments).stdout
    # Every record of both partitions, its value cut short.
    assert len(re.findall(r"^\d+ +\d+ +\S+ \S+Z +k +v{59}… +-$", table, re.M)) == 400
    by_dir = tidelog_cli("dump", small_segments / "topics" / "t" / "0", "--json")
    assert len(jsonl(by_dir.stdout)) == len(segments)


def _corrupt(store: Path) -> tuple[Path, int, int]:
    """Flips a bit inside a record value of a sealed segment; returns (file, position, offset)."""
    segment = _segments(store, "t", 0)[1]
    batch = _core.inspect_segment(segment)["batches"][3]
    data = bytearray(segment.read_bytes())
    data[batch["position"] + batch["size"] - 10] ^= 0x40  # inside the value blob
    segment.write_bytes(bytes(data))
    return segment, batch["position"], batch["base_offset"]


def test_verify_clean_and_corrupted(small_segments: Path) -> None:
    proc = tidelog_cli("verify", "-d", small_segments)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert re.fullmatch(
        r"checked \d+ segments \(400 batches\) of 2 partitions: no problems\n", proc.stdout
    )
    assert tidelog_cli("verify", "--quiet", "-d", small_segments).stdout == ""

    segment, position, offset = _corrupt(small_segments)
    proc = tidelog_cli("verify", "-d", small_segments)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == f"{segment}:{position}: offset {offset}: CRC32C mismatch"
    assert proc.stdout.splitlines()[-1].endswith(": 1 problem")
    assert "Traceback" not in proc.stderr
    quiet = tidelog_cli("verify", "t", "-q", "-d", small_segments)
    assert (quiet.returncode, quiet.stdout.count("\n")) == (1, 1)

    dump = tidelog_cli("dump", segment)
    assert dump.returncode == 1
    assert re.search(
        rf"^\s*{position}\s+{offset}\s+1\s+\d+\s+[0-9a-f]{{8}}\s+BAD\s", dump.stdout, re.M
    )
    assert f"problem: {segment}:{position}: offset {offset}: CRC32C mismatch" in dump.stdout

    # Reading through the corrupt batch is an error, reported in one line.
    assert_one_line_error(tidelog_cli("consume", "t", "-p", "0", "-d", small_segments), 1, "CRC")


def test_verify_names_a_broken_offset_sequence(small_segments: Path) -> None:
    segments = _segments(small_segments, "t", 1)
    segments[1].unlink()
    proc = tidelog_cli("verify", "-q", "-d", small_segments)
    assert proc.returncode == 1
    assert any("previous segment ends" in line for line in proc.stdout.splitlines()), proc.stdout


# --- bench -------------------------------------------------------------------------------


def test_bench_table_and_json(tmp_path: Path) -> None:
    proc = tidelog_cli("bench", "--messages", "3000", "--size", "64", "--dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    for phase in ["append (one by one)", "append_batch", "read_batch scan", "Message iteration"]:
        assert phase in proc.stdout
    assert "msgs/s" in proc.stdout and "MB/s" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # the temporary store is gone
    result = json.loads(tidelog_cli("bench", "-n", "500", "-s", "8", "-b", "100", "--json").stdout)
    assert [r["messages"] for r in result["results"]] == [500] * 4
    assert all(r["messages_per_second"] > 0 for r in result["results"])


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["topics"],
        ["describe", "orders"],
        ["delete", "orders"],
        ["produce", "orders"],
        ["consume", "orders"],
        ["consume", "orders", "--group", "g"],
        ["groups"],
        ["dump", "orders"],
        ["verify"],
    ],
)
def test_missing_store_directory_is_an_error_and_not_created(
    tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "nope"
    assert_one_line_error(tidelog_cli(*args, "--dir", missing), 1, "does not exist")
    assert not missing.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["describe", "nope"],
        ["delete", "nope"],
        ["produce", "nope"],
        ["consume", "nope"],
        ["consume", "nope", "--group", "g"],
        ["groups", "nope"],
        ["dump", "nope"],
        ["verify", "nope"],
    ],
)
def test_unknown_topic_is_one_line(store_dir: Path, args: list[str]) -> None:
    assert_one_line_error(tidelog_cli(*args, "-d", store_dir, input=b"x\n"), 1, '"nope"')


def test_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(tidelog_cli("topics", "-d", tmp_path), 1, "not a tidelog store")
    assert_one_line_error(tidelog_cli("create", "t", "-d", tmp_path), 1, "not a tidelog store")
    assert_one_line_error(tidelog_cli("dump", tmp_path / "x.log"), 1, "does not exist")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["consume", "orders", "--max", "x"], ["--max", "'x'"]),
        (["produce", "orders", "-H", "novalue"], ["NAME=VALUE"]),
        (["create", "t", "--partitions", "0"], ["--partitions"]),
        (["create", "bad/name"], ["invalid topic name"]),
        (["bench", "-n", "-5"], ["--messages"]),
        (["frobnicate"], ["invalid choice"]),
        (["topics", "--bogus"], ["--bogus"]),
    ],
)
def test_bad_arguments_are_one_line(store_dir: Path, args: list[str], words: list[str]) -> None:
    proc = tidelog_cli(*args, "-d", store_dir)
    status = 1 if args == ["create", "bad/name"] else 2
    assert_one_line_error(proc, status, *words)


def test_message_too_large_is_one_line(store_dir: Path, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (2 << 20))
    assert_one_line_error(
        tidelog_cli("produce", "orders", "--file", big, "-d", store_dir), 1, "max_message_bytes"
    )
    assert_one_line_error(
        tidelog_cli("produce", "orders", "--file", tmp_path / "absent", "-d", store_dir),
        1,
        "No such file",
    )


def test_follow_stops_when_the_topic_is_deleted(store_dir: Path) -> None:
    with spawn("consume", "empty", "--follow", "-d", store_dir) as proc:
        time.sleep(0.3)
        with tidelog.open(store_dir) as store:
            store.delete_topic("empty")
        assert proc.wait(timeout=10) == 1
        assert proc.stderr is not None
        assert proc.stderr.read() == b'tidelog: error: topic "empty" does not exist\n'
