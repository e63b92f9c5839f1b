from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tidelog

# pytest-timeout (thread method, see pyproject.toml) ends a hung run by dumping every Python
# thread's stack and the test's captured output. A hang inside native code shows there only
# as the call into it, so shortly before that the watchdog below writes every native
# thread's stack to the captured stderr (gdb, where installed and allowed to attach).
_NATIVE_STACKS_BEFORE_TIMEOUT = 10.0


def _allow_gdb_to_attach() -> None:
    # Yama's ptrace_scope=1 lets only ancestors attach; gdb is our child.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_ptracer, any_process = 0x59616D61, ctypes.c_ulong(2**64 - 1)
        libc.prctl(pr_set_ptracer, any_process, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _dump_native_stacks(nodeid: str) -> None:
    gdb = shutil.which("gdb")
    if gdb is None:
        os.write(2, f"\n[watchdog] {nodeid} is hanging; no gdb for native stacks\n".encode())
        return
    _allow_gdb_to_attach()
    try:
        out = subprocess.run(
            [gdb, "-p", str(os.getpid()), "-batch", "-ex", "thread apply all bt 30"],
            capture_output=True,
            timeout=_NATIVE_STACKS_BEFORE_TIMEOUT - 2,
            check=False,
        )
        text = out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        text = f"gdb failed: {e}".encode()
    os.write(2, f"\n[watchdog] native stacks of {nodeid}:\n".encode() + text)


@pytest.fixture(autouse=True)
def _native_stacks_on_hang(request: pytest.FixtureRequest) -> Iterator[None]:
    timeout = float(request.config.getini("timeout") or 0)
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        timeout = float(marker.args[0])
    if timeout <= _NATIVE_STACKS_BEFORE_TIMEOUT:
        yield
        return
    timer = threading.Timer(
        timeout - _NATIVE_STACKS_BEFORE_TIMEOUT, _dump_native_stacks, args=(request.node.nodeid,)
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tidelog.Store]:
    with tidelog.open(tmp_path / "store") as s:
        yield s
