"""The payments example runs end to end: crashes included, every payment charged once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payments.py"


@pytest.mark.crash
def test_payments_are_charged_exactly_once_across_crashes(tmp_path: Path) -> None:
    args = ["--store", str(tmp_path / "store"), "--payments", "600", "--kills", "6"]
    args += ["--seed", "3", "--delay-ms", "5"]
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every payment charged exactly once" in result.stdout
    assert "charged twice: 0, never charged: 0" in result.stdout
    crashes = re.search(r"with (\d+) processor crashes", result.stdout)
    assert crashes is not None and int(crashes.group(1)) >= 1, result.stdout
