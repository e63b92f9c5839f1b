"""Resident memory while writing then reading a log of ``SCALE.memory_bytes`` (4 GiB at full
scale), sampled from ``/proc/self/status`` every 64 batches (6.4 MB of values).

The figure is the peak growth of VmRSS over its value just before the store is opened; the
RssAnon / RssFile / RssShmem breakdown and the time of the whole write + read go into
``extra_info`` too. Writing uses ``append_batch`` of 1,000 values of 100 bytes; reading uses
``read_batch(max_messages=1000)`` + ``value_buffer()`` and touches one byte of every page of
each buffer, so mapped pages really are faulted in. The reference does the same with the
pure-Python :class:`PyLog` (write) and ``readinto`` (read).
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path
from typing import Any

import pytest
import tidelog

from benches.python.reference import PyLog
from benches.support import (
    BATCH_VALUES,
    GIB,
    SCALE,
    VALUE_BYTES,
    Measured,
    RssTracker,
    make_buffer,
    make_values,
    per_second,
    record,
)

SAMPLE_EVERY = 64
MEMORY_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": "<=", "value": 64.0, "text": "VmRSS growth <= 64 MiB"}
]
BATCHES = max(1, SCALE.memory_bytes // (BATCH_VALUES * VALUE_BYTES))
WHAT = f"{BATCHES * BATCH_VALUES * VALUE_BYTES / GIB:.2f} GiB of values written then read"


def write_then_read_tidelog(path: Path, tracker: RssTracker) -> int:
    """Writes ``BATCHES`` batches, then scans them back touching every page."""
    buffer, lengths = make_buffer()
    with tidelog.open(path, fsync="never") as store:
        topic = store.create_topic("memory", partitions=1)
        for i in range(BATCHES):
            topic.append_batch(buffer, lengths=lengths, partition=0)
            if i % SAMPLE_EVERY == 0:
                tracker.sample()
        tracker.sample()
        end = topic.end_offset(0)
        offset = touched = i = 0
        while offset < end:
            batch = topic.read_batch(0, offset, max_messages=BATCH_VALUES)
            buf, _bounds = batch.value_buffer()
            touched += len(bytes(buf[::4096]))
            offset = batch.next_offset
            i += 1
            if i % SAMPLE_EVERY == 0:
                tracker.sample()
        tracker.sample()
        return end


def write_then_read_pylog(path: Path, tracker: RssTracker) -> int:
    """The same amount written with :class:`PyLog` and read back with ``readinto``."""
    values = make_values()
    with PyLog(path) as log:
        for i in range(BATCHES):
            log.append_batch(values)
            if i % SAMPLE_EVERY == 0:
                tracker.sample()
    tracker.sample()
    buf = bytearray(BATCH_VALUES * (VALUE_BYTES + 4))
    view = memoryview(buf)
    total = i = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            total += n
            i += 1
            if i % SAMPLE_EVERY == 0:
                tracker.sample()
    tracker.sample()
    return total // (VALUE_BYTES + 4)


def _measure(benchmark: Any, fn: Any, path: Path) -> tuple[dict[str, float], int]:
    gc.collect()
    holder: dict[str, Any] = {}

    def target() -> int:
        tracker = RssTracker()
        holder["tracker"] = tracker
        return int(fn(path, tracker))

    measured = Measured(target, warmup=0)
    messages = benchmark.pedantic(measured, rounds=1, warmup_rounds=0)
    growth: dict[str, float] = holder["tracker"].growth()
    growth["rss_samples"] = holder["tracker"].samples
    growth.update(measured.per_call())
    return growth, messages


def _print(summary: list[str], role: str, growth: dict[str, float]) -> None:
    parts = ", ".join(
        f"{k.removeprefix('peak_growth_').removesuffix('_mib')} +{v:,.1f} MiB"
        for k, v in growth.items()
        if k.startswith("peak_growth_")
    )
    summary.append(
        f"   memory  {role}: peak RSS growth over baseline "
        f"({growth['baseline_VmRSS_mib']:.1f} MiB): {parts}"
    )


@pytest.mark.benchmark(group="memory")
def test_memory_tidelog(benchmark: Any, bench_dir: Path, summary: list[str]) -> None:
    growth, messages = _measure(benchmark, write_then_read_tidelog, bench_dir / "store")
    shutil.rmtree(bench_dir / "store", ignore_errors=True)
    assert messages == BATCHES * BATCH_VALUES
    _print(summary, "tidelog", growth)
    print(f"tidelog peak RSS growth: {growth}")
    record(
        benchmark,
        figure="memory",
        title="peak VmRSS growth, write then read (append_batch / read_batch)",
        role="tidelog",
        unit="MiB",
        work=BATCHES * BATCH_VALUES * VALUE_BYTES,
        what=WHAT,
        targets=MEMORY_TARGETS,
        value=growth["peak_growth_VmRSS_mib"],
        extra={"gb_per_s_write_and_read": _gb_per_s(benchmark), **growth},
    )


@pytest.mark.benchmark(group="memory")
def test_memory_reference(benchmark: Any, bench_dir: Path, summary: list[str]) -> None:
    growth, messages = _measure(benchmark, write_then_read_pylog, bench_dir / "pylog.log")
    (bench_dir / "pylog.log").unlink()
    assert messages == BATCHES * BATCH_VALUES
    _print(summary, "reference", growth)
    print(f"reference peak RSS growth: {growth}")
    record(
        benchmark,
        figure="memory",
        title="peak VmRSS growth, PyLog write then readinto",
        role="reference",
        unit="MiB",
        work=BATCHES * BATCH_VALUES * VALUE_BYTES,
        what=WHAT,
        value=growth["peak_growth_VmRSS_mib"],
        extra={"gb_per_s_write_and_read": _gb_per_s(benchmark), **growth},
    )


def _gb_per_s(benchmark: Any) -> float | None:
    """Bytes written plus bytes read, per second of the whole round."""
    rate = per_second(benchmark, 2 * BATCHES * BATCH_VALUES * VALUE_BYTES)
    return None if rate is None else rate / 1e9
