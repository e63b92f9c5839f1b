"""The tests that interrupt a child with SIGINT pass when the suite runs with SIGINT ignored.

``nohup make test`` and a shell's background jobs start the suite with SIGINT ignored, and a
child inherits that; Python then installs no KeyboardInterrupt handler, so a child that must
stop on Ctrl-C would run on. Those tests reset the disposition in their children.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# One of each kind: a CLI child, a CLI group consumer, and a script that signals itself.
SCENARIOS = [
    "tests/unit/test_ring.py::test_ctrl_c_interrupts_a_blocked_pop",
    "tests/unit/test_cli.py::test_consume_follow_sees_new_messages_and_stops_on_ctrl_c",
    "tests/unit/test_cli_groups.py::test_follow_from_end_then_ctrl_c",
]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.timeout(400)
def test_sigint_scenarios_pass_with_sigint_ignored() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SCENARIOS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=360,
        preexec_fn=_ignore_sigint,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(SCENARIOS)} passed" in out.stdout, out.stdout
