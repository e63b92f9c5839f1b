"""The main demo (`make demo`) runs end to end, and never clears a directory that is not
a tidelog store."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_fan_out_demo_runs_twice_on_its_own_store(tmp_path: Path) -> None:
    store = tmp_path / "demo"
    for _ in range(2):  # the second run clears the first run's store
        result = run(str(store))
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert re.search(r"produced 300,000 orders", out), out
        for group in ("billing", "inventory"):
            assert re.search(rf"{group} +processed 300,000 .* lag now 0", out), out
        assert "the slow group resumes where it stopped" in out
        assert re.search(r"notifications processed 200,001 .* lag now 0", out), out
        assert "scanned 300,001 messages" in out


def test_the_demo_refuses_to_clear_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("not a store")
    result = run(str(keep))
    assert result.returncode != 0
    assert "holds no tidelog store" in result.stderr
    assert (keep / "notes.txt").read_text() == "not a store"
