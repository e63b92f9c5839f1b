"""examples/replay_to_duckdb.py replays a topic through Arrow into DuckDB and queries it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "replay_to_duckdb.py"

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")


def test_the_replay_counts_every_view_and_answers_the_queries(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "replayed 50,000 messages from 4 partitions" in text
    rows = re.findall(r"^(/\S*) +([\d,]+) +([\d,]+) +(\d+)$", text, re.MULTILINE)
    assert len(rows) == 7
    views = [int(n.replace(",", "")) for _, n, _, _ in rows]
    assert sum(views) == 50_000 and views == sorted(views, reverse=True)
    assert all(int(u.replace(",", "")) <= 2_000 for _, _, u, _ in rows)
    assert all(50 <= int(ms) < 3_000 for *_, ms in rows)
    devices = dict(re.findall(r"(desktop|mobile|tablet)=([\d,]+)", text))
    assert sum(int(n.replace(",", "")) for n in devices.values()) == 50_000
    assert "last 100 of each partition: 400 messages" in text


def test_it_refuses_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "refusing" in out.stdout
    assert (tmp_path / "mine.txt").read_text() == "keep me"
