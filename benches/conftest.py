"""Fixtures shared by the benchmarks, and a summary of their figures at the end of the run."""

from __future__ import annotations

import os

# numpy's OpenBLAS worker threads spin after use and show up in profiles; the benchmarks do
# no linear algebra. Must be set before numpy is first imported (writer children inherit it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benches.support import REPO, SCALE, bench_data_root

#: Lines printed in the terminal summary (figures of the benchmarks that ran).
_SUMMARY: list[str] = []
#: 1, 5 and 15-minute load averages when the session started.
_LOADAVG_AT_START: list[float] = []


@pytest.fixture(scope="session")
def bench_root() -> Iterator[Path]:
    """A fresh directory for this session's data, deleted at the end."""
    parent = bench_data_root()
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bench_dir(bench_root: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory for one benchmark's data, deleted when the benchmark ends."""
    path = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=bench_root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def summary() -> list[str]:
    """Lines a benchmark wants printed in the terminal summary."""
    return _SUMMARY


def _describe(info: dict[str, Any]) -> str | None:
    value = info.get("value")
    if value is None or "figure" not in info:
        return None
    return f"{info['role']:>9}  {info['title']}: {value:,.3f} {info['unit']}  ({info['what']})"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Prints every benchmark's figure (throughput, latency, RSS growth) after the run."""
    session = getattr(terminalreporter.config, "_benchmarksession", None)
    lines: list[str] = []
    for bench in getattr(session, "benchmarks", []) or []:
        line = _describe(dict(bench.extra_info))
        if line:
            lines.append(line)
    if not lines and not _SUMMARY:
        return
    terminalreporter.section(f"tidelog benchmark figures (scale: {SCALE.name})")
    for line in lines + _SUMMARY:
        terminalreporter.write_line(line)


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout


def _build_info() -> dict[str, Any]:
    """What was measured: the native module's hash and the state of the Rust sources."""
    import tidelog._core as core  # the module actually loaded by the benchmarks

    so = Path(core.__file__ or "")
    # Relative to the repository when it lies inside it: results are committed.
    info: dict[str, Any] = {"module": str(so.relative_to(REPO) if so.is_relative_to(REPO) else so)}
    if so.is_file():
        info["module_sha256"] = hashlib.sha256(so.read_bytes()).hexdigest()
        info["module_built"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.localtime(so.stat().st_mtime)
        )
    info["head"] = _git("rev-parse", "HEAD").strip()
    info["rust_uncommitted"] = [
        line[3:] for line in _git("status", "--porcelain", "--", "rust").splitlines()
    ]
    diff = _git("diff", "HEAD", "--", "rust")
    info["rust_diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest() if diff else None
    return info


def pytest_sessionstart(session: pytest.Session) -> None:
    """Notes the load average before anything runs."""
    _LOADAVG_AT_START[:] = os.getloadavg()


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    """Adds the scale, the load average and the build measured to the JSON's machine_info."""
    machine_info["bench_scale"] = SCALE.name
    machine_info["loadavg_at_start"] = list(_LOADAVG_AT_START)
    machine_info["tidelog_build"] = _build_info()


def pytest_benchmark_update_json(
    config: Any, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    """Adds the load average at the end of the run (other work on the machine skews timings)."""
    output_json.setdefault("machine_info", {})["loadavg_at_end"] = os.getloadavg()
