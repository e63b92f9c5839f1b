"""The command line on both backends: ``--dir`` names a store directory or a kafka:// URL.

Commands run in this process (``tidelog.cli.main``) to keep the suite fast; the local store
is opened by the command as a second process would, beside the fixture's.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from tidelog.cli import main


def run(store: Any, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--dir", store.path, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_topics_produce_consume_describe_groups_metrics(
    store: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(store, capsys, "create", "t", "--partitions", "2")[0] == 0
    code, out, _ = run(store, capsys, "topics")
    assert (code, out.split()) == (0, ["t"])
    code, out, _ = run(store, capsys, "topics", "-l")
    assert code == 0 and "t" in out

    (tmp_path / "a").write_bytes(b"first")
    (tmp_path / "b").write_bytes(b"second")
    args = ("produce", "t", "-p", "0", "-f", str(tmp_path / "a"), "-f", str(tmp_path / "b"))
    assert run(store, capsys, *args)[0] == 0
    code, out, _ = run(store, capsys, "consume", "t", "-p", "0")
    assert (code, out) == (0, "first\nsecond\n")

    code, out, _ = run(store, capsys, "describe", "t", "--json")
    described = json.loads(out)
    assert code == 0 and described["messages"] == 2
    assert described["partitions"]["0"]["end_offset"] == 2
    assert run(store, capsys, "describe", "t")[0] == 0

    group = f"cli-{uuid.uuid4().hex[:8]}"
    code, out, _ = run(store, capsys, "consume", "t", "--group", group)
    assert (code, sorted(out.split())) == (0, ["first", "second"])
    code, out, _ = run(store, capsys, "groups", "t", "--group", group, "--json")
    (row,) = json.loads(out)["groups"]
    assert code == 0 and row["group"] == group and row["lag"] == 0
    assert {p["partition"]: p["committed"] for p in row["partitions"]} == {0: 2, 1: None}
    assert run(store, capsys, "groups", "t", "--group", group)[0] == 0

    code, out, _ = run(store, capsys, "metrics")
    assert code == 0
    assert 'tidelog_partition_end_offset{partition="0",topic="t"} 2.0' in out
    assert "tidelog_group_lag_messages" in out
    assert run(store, capsys, "top", "--once")[0] == 0

    assert run(store, capsys, "delete", "t")[0] == 0
    assert "t" not in store.topics()
