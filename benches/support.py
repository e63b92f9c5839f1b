"""Shared settings and measuring helpers for the tidelog benchmarks.

Scale: ``TIDELOG_BENCH_SCALE`` selects the data sizes and round counts.

* unset, ``full`` or ``1``: the sizes of issue #2 (1 GiB scan, 2 GiB reopen, 4 GiB memory).
* ``quick``: tiny sizes and few rounds, for CI (the whole benches dir runs in well under 60 s).
* a number such as ``0.25``: the full sizes multiplied by it, with the full round counts.

``TIDELOG_BENCH_DIR`` picks where data is written (default: ``target/bench-data`` in the
repository); everything written there is deleted when the session ends.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from benches.report import figure_from_seconds

REPO = Path(__file__).resolve().parent.parent
GIB = 1 << 30
MIB = 1 << 20

#: Size of every value written by the benchmarks.
VALUE_BYTES = 100
#: Values per ``append_batch`` call.
BATCH_VALUES = 1000

Unit = Literal["msgs/s", "GB/s", "ms", "MiB", "ns/call"]
#: ``second-reference``: a further reference for the same figure, reported next to the first
#: with its ratio, without a target of its own.
Role = Literal["tidelog", "reference", "second-reference", "variant"]


@dataclass(frozen=True)
class Scale:
    """Sizes and round counts of one benchmark run."""

    name: str
    #: Appends (one message per call) timed in one round.
    append_calls: int
    #: ``append_batch`` calls (of ``BATCH_VALUES`` values) timed in one round.
    batch_calls: int
    #: Bytes of the partition scanned by the read benchmarks.
    scan_bytes: int
    #: Bytes of the store reopened after SIGKILL.
    reopen_bytes: int
    #: Bytes written then read by the memory benchmark.
    memory_bytes: int
    #: Rounds of the cheap (append) benchmarks.
    rounds: int
    #: Rounds of the scans of the whole partition.
    scan_rounds: int
    #: Rounds of the Message iteration over the whole partition.
    iter_rounds: int
    #: Kill-and-reopen rounds.
    reopen_rounds: int


FULL = Scale(
    name="full",
    append_calls=100_000,
    batch_calls=640,  # 64 MB of values: one segment roll per round
    scan_bytes=1 * GIB,
    reopen_bytes=2 * GIB,
    memory_bytes=4 * GIB,
    rounds=15,
    scan_rounds=7,
    iter_rounds=3,
    reopen_rounds=9,
)

QUICK = Scale(
    name="quick",
    append_calls=5_000,
    batch_calls=20,
    scan_bytes=4 * MIB,
    reopen_bytes=8 * MIB,
    memory_bytes=16 * MIB,
    rounds=3,
    scan_rounds=3,
    iter_rounds=2,
    reopen_rounds=3,
)


def scale_from_env(value: str | None = None) -> Scale:
    """The scale selected by ``TIDELOG_BENCH_SCALE`` (or by ``value``)."""
    raw = (os.environ.get("TIDELOG_BENCH_SCALE", "full") if value is None else value).strip()
    if raw.lower() in ("", "full", "1"):
        return FULL
    if raw.lower() == "quick":
        return QUICK
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(
            f"TIDELOG_BENCH_SCALE must be 'full', 'quick' or a positive number, got {raw!r}"
        ) from None
    if factor <= 0:
        raise ValueError(f"TIDELOG_BENCH_SCALE must be positive, got {raw!r}")

    def scaled(n: int) -> int:
        return max(MIB, int(n * factor))

    return Scale(
        name=f"x{factor:g}",
        append_calls=max(1000, int(FULL.append_calls * min(factor, 1.0))),
        batch_calls=max(10, int(FULL.batch_calls * min(factor, 1.0))),
        scan_bytes=scaled(FULL.scan_bytes),
        reopen_bytes=scaled(FULL.reopen_bytes),
        memory_bytes=scaled(FULL.memory_bytes),
        rounds=FULL.rounds,
        scan_rounds=FULL.scan_rounds,
        iter_rounds=FULL.iter_rounds,
        reopen_rounds=FULL.reopen_rounds,
    )


SCALE = scale_from_env()


def bench_data_root() -> Path:
    """Where the benchmarks write their data."""
    return Path(os.environ.get("TIDELOG_BENCH_DIR", REPO / "target" / "bench-data"))


# --------------------------------------------------------------------------- payloads


def make_values(n: int = BATCH_VALUES, size: int = VALUE_BYTES, seed: int = 2) -> list[bytes]:
    """``n`` distinct pseudo-random values of ``size`` bytes (deterministic)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=n * size, dtype=np.uint8).tobytes()
    return [raw[i * size : (i + 1) * size] for i in range(n)]


def make_buffer(
    n: int = BATCH_VALUES, size: int = VALUE_BYTES
) -> tuple[bytes, npt.NDArray[np.int64]]:
    """The values of :func:`make_values` as one ``bytes`` buffer plus int64 lengths."""
    return b"".join(make_values(n, size)), np.full(n, size, dtype=np.int64)


# --------------------------------------------------------------------------- measuring


@dataclass
class Rusage:
    """Resource usage of this process over a block (see :func:`rusage`)."""

    wall_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    minflt: int = 0
    majflt: int = 0
    nvcsw: int = 0
    nivcsw: int = 0

    def per(self, n: int, prefix: str = "") -> dict[str, float]:
        """The usage divided by ``n`` (e.g. by the number of rounds), as a plain dict."""
        n = max(n, 1)
        return {
            f"{prefix}wall_s": self.wall_s / n,
            f"{prefix}cpu_user_s": self.user_s / n,
            f"{prefix}cpu_sys_s": self.sys_s / n,
            f"{prefix}minor_faults": self.minflt / n,
            f"{prefix}major_faults": self.majflt / n,
            f"{prefix}voluntary_ctx_switches": self.nvcsw / n,
            f"{prefix}involuntary_ctx_switches": self.nivcsw / n,
        }


class Measured:
    """Wraps a benchmark target to measure its resource usage over the timed calls only.

    Besides the sums from ``getrusage``, it keeps the CPU time of this process (all its
    threads, user + system, ``time.process_time``) of every call: on a shared machine the
    median CPU time per round is much less disturbed by other processes than wall time.
    The first ``warmup`` calls are left out of that median. The wrapper costs about 3 us
    per round, inside the timing.
    """

    def __init__(self, target: Callable[..., Any], warmup: int = 1) -> None:
        self.target = target
        self.warmup = warmup
        self.usage = Rusage()
        self.calls = 0
        self.cpu_s: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cpu = time.process_time()
        with rusage() as one:
            result = self.target(*args, **kwargs)
        self.cpu_s.append(time.process_time() - cpu)
        total = self.usage
        total.wall_s += one.wall_s
        total.user_s += one.user_s
        total.sys_s += one.sys_s
        total.minflt += one.minflt
        total.majflt += one.majflt
        total.nvcsw += one.nvcsw
        total.nivcsw += one.nivcsw
        self.calls += 1
        return result

    def per_call(self) -> dict[str, float]:
        """Average usage of one timed call (warm-up rounds included), keys ``per_round_*``,
        plus ``per_round_cpu_s_median``, the median CPU time of the measured rounds.
        """
        out = self.usage.per(self.calls, prefix="per_round_")
        timed = self.cpu_s[self.warmup :] or self.cpu_s
        if timed:
            out["per_round_cpu_s_median"] = statistics.median(timed)
        return out


@contextmanager
def rusage() -> Iterator[Rusage]:
    """Measures CPU time (user and system), page faults and context switches of a block."""
    out = Rusage()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.wall_s = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        out.user_s = after.ru_utime - before.ru_utime
        out.sys_s = after.ru_stime - before.ru_stime
        out.minflt = after.ru_minflt - before.ru_minflt
        out.majflt = after.ru_majflt - before.ru_majflt
        out.nvcsw = after.ru_nvcsw - before.ru_nvcsw
        out.nivcsw = after.ru_nivcsw - before.ru_nivcsw


RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


def read_rss() -> dict[str, int]:
    """This process's resident memory from ``/proc/self/status``, in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in RSS_FIELDS:
                out[name] = int(rest.split()[0]) * 1024  # the kernel reports kB
    return out


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); false if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


@dataclass
class RssTracker:
    """Peak growth of each RSS figure over a baseline, sampled by :meth:`sample`."""

    baseline: dict[str, int] = field(default_factory=read_rss)
    peak: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    hwm_reset: bool = False

    def __post_init__(self) -> None:
        self.hwm_reset = reset_peak_rss()
        if self.hwm_reset:
            self.baseline = read_rss()
        self.peak = dict(self.baseline)

    def sample(self) -> dict[str, int]:
        """Reads the RSS now and updates the peaks; returns the reading."""
        now = read_rss()
        for k, v in now.items():
            self.peak[k] = max(self.peak.get(k, v), v)
        self.samples += 1
        return now

    def growth(self) -> dict[str, float]:
        """Peak growth over the baseline of each field, in MiB."""
        self.sample()
        out = {
            f"peak_growth_{k}_mib": (self.peak[k] - self.baseline.get(k, 0)) / MIB
            for k in RSS_FIELDS
            if k in self.peak and k != "VmHWM"
        }
        if self.hwm_reset and "VmHWM" in self.peak:
            out["peak_growth_VmHWM_mib"] = (self.peak["VmHWM"] - self.baseline["VmRSS"]) / MIB
        out["baseline_VmRSS_mib"] = self.baseline.get("VmRSS", 0) / MIB
        return out


# --------------------------------------------------------------------------- recording


def median_seconds(benchmark: Any) -> float | None:
    """The median round time of a finished benchmark, or None when benchmarks are off."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return None
    return float(stats.stats.median)


def record(
    benchmark: Any,
    *,
    figure: str,
    title: str,
    role: Role,
    unit: Unit,
    work: float,
    what: str,
    targets: list[dict[str, Any]] | None = None,
    value: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> float | None:
    """Stores the figure of a finished benchmark in ``benchmark.extra_info``.

    ``work`` is what one round does: messages (msgs/s), bytes (GB/s) or calls (ns/call).
    The figure is computed from the median round time unless ``value`` is given (memory).
    ``extra`` adds more keys (resource usage, breakdowns).
    ``targets`` are dicts ``{"of": "value" | "ratio", "op": ">=" | ">" | "<=" | "<",
    "value": x, "text": "..."}`` checked by ``benches/report.py``; ``ratio`` is this
    figure divided by its reference's.
    """
    med = median_seconds(benchmark)
    if value is None and med is not None:
        value = figure_from_seconds(unit, work, med)
    cpu = (extra or {}).get("per_round_cpu_s_median")
    info = benchmark.extra_info
    if cpu and unit != "MiB":
        info["value_cpu"] = figure_from_seconds(unit, work, float(cpu))
    info.update(
        figure=figure,
        title=title,
        role=role,
        unit=unit,
        work_per_round=work,
        what=what,
        value=value,
        median_s=med,
        scale=SCALE.name,
    )
    if targets:
        info["targets"] = targets
    info.update(extra or {})
    return value


def per_second(benchmark: Any, n: float) -> float | None:
    """``n`` divided by the median round time (None when benchmarks are off)."""
    med = median_seconds(benchmark)
    return None if med is None else n / med


def ns_per(benchmark: Any, n: float) -> float | None:
    """The median round time divided by ``n``, in nanoseconds."""
    med = median_seconds(benchmark)
    return None if med is None else med / max(n, 1) * 1e9


class Paired:
    """The reference's work, run and timed in the setup of each measured round: both see
    the same load, so on a shared machine the median of the per-round ratios is steadier
    than the ratio of two tests' medians, measured minutes apart.

    Args:
        prepare: Untimed, before the timed part (a fresh topic; a consumer that joined).
        work: The timed part, given what ``prepare`` returned.
        finish: Untimed, after it (closing the consumer).
    """

    def __init__(
        self,
        prepare: Callable[[], Any],
        work: Callable[[Any], None],
        finish: Callable[[Any], None] = lambda _: None,
    ) -> None:
        self.prepare, self.work, self.finish = prepare, work, finish
        self.wall_s: list[float] = []
        self.cpu_s: list[float] = []

    def run(self) -> None:
        state = self.prepare()
        wall, cpu = time.perf_counter(), time.process_time()
        self.work(state)
        self.cpu_s.append(time.process_time() - cpu)
        self.wall_s.append(time.perf_counter() - wall)
        self.finish(state)

    def ratios(self, benchmark: Any, measured: Measured) -> dict[str, float]:
        """Medians of reference time / measured time per pair (the warm-up pair left out)."""
        stats = getattr(benchmark, "stats", None)
        if stats is None:
            return {}
        walls, cpus = self.wall_s[-len(stats.stats.data) :], self.cpu_s[1:]
        return {
            "paired_ratio": statistics.median(
                r / m for r, m in zip(walls, stats.stats.data, strict=True)
            ),
            "paired_ratio_cpu": statistics.median(
                r / m for r, m in zip(cpus, measured.cpu_s[1:], strict=True)
            ),
        }
