"""The crash torture of ``tests/torture/torture.py``, short, as CI runs it through
``make test``; ``make torture ROUNDS=N`` runs it long. The torture exits non-zero on any
acknowledged message, commit, job or transaction lost, duplicated or corrupted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.crash, pytest.mark.timeout(900)]

TORTURE = Path(__file__).with_name("torture.py")


def torture(tmp_path: Path, kinds: str, rounds: int, *extra: str) -> str:
    args = ["--rounds", str(rounds), "--kinds", kinds, "--dir", str(tmp_path / "store")]
    done = subprocess.run(
        [sys.executable, str(TORTURE), *args, "--seed", "20261204", *extra],
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"TOTAL rounds={rounds} " in done.stdout, done.stdout
    return done.stdout


def test_no_acknowledged_write_is_lost_under_sigkill(tmp_path: Path) -> None:
    out = torture(tmp_path, "append,batch,buffer,producer,commit,queue,txn", 30)
    assert " lost=0 duplicated=0 corrupted=0 " in out


def test_forked_children_with_their_own_store(tmp_path: Path) -> None:
    torture(tmp_path, "fork", 15, "--fsync", "never,interval")


def test_delete_and_create_again_from_another_process(tmp_path: Path) -> None:
    torture(tmp_path, "scratch", 8)


def test_compaction_with_tombstones_readers_and_kills(tmp_path: Path) -> None:
    out = torture(tmp_path, "compact", 12)
    assert " lost=0 duplicated=0 corrupted=0 " in out
