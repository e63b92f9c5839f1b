"""Reopening a store of ``SCALE.reopen_bytes`` (2 GiB at full scale) after SIGKILL of a writer.

A writer child process (``crash_writer.py``) first fills the store. Then every round's
untimed setup closes the store opened by the previous round, starts a new writer child,
waits until it is appending (1,000-value batches), lets it append for a random 5-30 ms and
kills it with SIGKILL, almost always in the middle of an append. The timed part is
``tidelog.open(path)`` + ``store.topic(name)``: recovery (validating the tail of the active
segment and truncating a torn batch) runs when the topic's partitions are opened.

The files are in the page cache (a process crash, not a power loss), so this is the warm
reopen a restarted service sees.
"""

from __future__ import annotations

import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.python.reference import map_every_file
from benches.support import BATCH_VALUES, GIB, SCALE, Measured, record

TOPIC = "crash"
WRITER = Path(__file__).with_name("crash_writer.py")
REOPEN_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<", "value": 200.0, "text": "< 200 ms"}
]


def start_writer(path: Path, fill_bytes: int) -> tuple[subprocess.Popen[str], int]:
    """Starts a writer child and waits until it is appending; returns it and its offset."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), TOPIC, str(fill_bytes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    timeout = 60.0 + fill_bytes / 50e6  # the fill runs at hundreds of MB/s
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"writer did not start: {line!r} (exit status {proc.poll()})")
    return proc, int(line.split()[1])


def kill_mid_append(proc: subprocess.Popen[str], rng: random.Random) -> None:
    """Lets the writer append for 5-30 ms, then SIGKILLs it and reaps it."""
    time.sleep(rng.uniform(0.005, 0.030))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def crashed_store(bench_root: Path) -> Iterator[Path]:
    """A store filled to ``SCALE.reopen_bytes`` by a writer that was then SIGKILLed."""
    path = bench_root / "reopen-store"
    proc, _ = start_writer(path, SCALE.reopen_bytes)
    kill_mid_append(proc, random.Random(1))
    yield path


class Reopener:
    """The per-round setup (crash a writer) and the timed reopen, with their bookkeeping."""

    def __init__(self, path: Path, crash: bool) -> None:
        self.path = path
        self.crash = crash
        self.rng = random.Random(2)
        self.store: tidelog.Store | None = None
        self.open_s: list[float] = []
        self.topic_s: list[float] = []
        self.killed_at: list[int] = []
        self.recovered_end: list[int] = []

    def close_previous(self) -> None:
        """Checks and closes the store the previous round opened."""
        if self.store is None:
            return
        topic = self.store.topic(TOPIC)
        end = topic.end_offset(0)
        # Batches are atomic: recovery keeps whole 1,000-value batches only, and keeps
        # at least what the writer had reported appended before it was killed.
        assert end % BATCH_VALUES == 0, end
        if self.killed_at:
            assert end >= self.killed_at[-1], (end, self.killed_at[-1])
        assert len(topic.read_batch(0, end - BATCH_VALUES, max_messages=BATCH_VALUES)) == 1000
        self.recovered_end.append(end)
        self.store.close()
        self.store = None

    def setup(self) -> None:
        """Untimed: closes the last reopened store, then (if crashing) kills a new writer."""
        self.close_previous()
        if self.crash:
            proc, offset = start_writer(self.path, 0)
            self.killed_at.append(offset)
            kill_mid_append(proc, self.rng)

    def reopen(self) -> None:
        """Timed: ``tidelog.open`` + ``store.topic`` (recovery runs at topic open)."""
        t0 = time.perf_counter()
        store = tidelog.open(self.path, fsync="never")
        t1 = time.perf_counter()
        store.topic(TOPIC)
        t2 = time.perf_counter()
        self.store = store
        self.open_s.append(t1 - t0)
        self.topic_s.append(t2 - t1)

    def breakdown(self) -> dict[str, float]:
        """Median time of the two parts of the timed call, in ms."""
        return {
            "median_open_ms": _median(self.open_s) * 1e3,
            "median_topic_ms": _median(self.topic_s) * 1e3,
            "max_total_ms": max(a + b for a, b in zip(self.open_s, self.topic_s, strict=True))
            * 1e3,
        }


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def _store_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _what(path: Path) -> str:
    segments = sum(1 for _ in path.rglob("*.log"))
    return f"{_store_size(path) / GIB:.2f} GiB store on disk, {segments} segments"


def _reopen_rounds(benchmark: Any, path: Path, crash: bool) -> tuple[Reopener, Measured]:
    """Times ``SCALE.reopen_rounds`` reopens of ``path`` (each after a kill if ``crash``)."""
    reopener = Reopener(path, crash=crash)
    measured = Measured(reopener.reopen)
    benchmark.pedantic(measured, setup=reopener.setup, rounds=SCALE.reopen_rounds, warmup_rounds=1)
    reopener.close_previous()
    return reopener, measured


@pytest.mark.benchmark(group="reopen")
def test_reopen_after_sigkill_tidelog(benchmark: Any, crashed_store: Path) -> None:
    reopener, measured = _reopen_rounds(benchmark, crashed_store, crash=True)
    record(
        benchmark,
        figure="reopen",
        title="tidelog.open + store.topic after SIGKILL of a writer",
        role="tidelog",
        unit="ms",
        work=1,
        what=_what(crashed_store) + f", {SCALE.reopen_rounds} kills",
        targets=REOPEN_TARGETS,
        extra={
            "killed_at_offsets": reopener.killed_at,
            "recovered_end_offsets": reopener.recovered_end,
            **reopener.breakdown(),
            **measured.per_call(),
        },
    )


@pytest.mark.benchmark(group="reopen")
def test_reopen_clean_variant(benchmark: Any, crashed_store: Path) -> None:
    """The same reopen after a clean close: the cost that is not crash recovery."""
    reopener, measured = _reopen_rounds(benchmark, crashed_store, crash=False)
    record(
        benchmark,
        figure="reopen-clean",
        title="tidelog.open + store.topic after a clean close",
        role="variant",
        unit="ms",
        work=1,
        what=_what(crashed_store),
        extra={**reopener.breakdown(), **measured.per_call()},
    )


@pytest.mark.benchmark(group="reopen")
def test_reopen_reference(benchmark: Any, crashed_store: Path) -> None:
    """The floor of any reopen of mapped files: list, open, fstat and mmap every file."""
    measured = Measured(map_every_file)
    mapped = benchmark.pedantic(
        measured, args=(crashed_store,), rounds=SCALE.reopen_rounds, warmup_rounds=1
    )
    record(
        benchmark,
        figure="reopen",
        title="open + fstat + mmap of every file of the store (no checks)",
        role="reference",
        unit="ms",
        work=1,
        what=f"{mapped} files",
        extra={**measured.per_call()},
    )
