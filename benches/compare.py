"""tidelog next to what Python users pick today: one workload, every system, one run.

Workload: N messages of S bytes (default 200,000 x 100 B), each system at a named durability:

* ``append``: one call per message, each durable at the system's level when the call returns;
* ``batch``: batches of ``--batch`` messages per call;
* ``read``: every message read back as ``bytes`` (non-destructively where the system can);
* ``consume``: a consumer-group member reading everything, committing every batch;
* ``latency``: p50 / p99 from send to a consumer in another process, ``--latency-messages``
  paced at ``--latency-rate`` per second.

Systems: tidelog; embedded peers (persist-queue file Queue and SQLiteAckQueue, litequeue,
diskcache.Deque, queuelib FifoDiskQueue, a plain sqlite3 table, a naive length-prefixed file);
servers on 127.0.0.1 started and stopped here (Redis Streams from Debian's redis-server,
Apache Kafka as one KRaft broker from the Maven Central jars fetched by
``benches/kafka/fetch.sh``). A peer that is not installed is skipped with a line saying how
to install it. Every run first measures the machine's limits (memcpy and page-cache write
bandwidth, fdatasync latency) so each figure can be read as a fraction of them.

Usage (from the repository root)::

    .venv/bin/python benches/compare.py                 # full run, writes benches/results/
    .venv/bin/python benches/compare.py --quick         # CI smoke run: < 60 s, no servers
    .venv/bin/python benches/compare.py --fsync both    # also the fsync-per-commit level
    .venv/bin/python benches/compare.py --systems tidelog,sqlite3,redis

Output: ``compare.md`` (tables, command, date, CPU, versions), ``compare.png`` (log-scale bar
chart) and ``compare.json`` (every figure) in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a script: make the `benches` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benches.peers import ADAPTER_BY_KEY, ADAPTERS
from benches.peers.base import (
    Adapter,
    Level,
    NotApplicable,
    Skip,
    Spec,
    Timed,
    dist_version,
)
from benches.peers.latency import run_latency

REPO = Path(__file__).resolve().parent.parent
THROUGHPUT = ("append", "batch", "read", "consume")
#: A workload whose first round took less than this is repeated up to ``--rounds`` times.
REPEAT_BELOW_S = 2.0
TITLES = {
    "append": "append (1 per call)",
    "batch": "append (batches)",
    "read": "read all",
    "consume": "consume + commit",
    "latency": "latency",
}


# -- results ---------------------------------------------------------------------------------


@dataclass
class Cell:
    """One workload of one system: a rate, or the reason there is none."""

    rate: float | None = None
    seconds: float | None = None
    count: int | None = None
    cpu_s: float | None = None
    text: str = ""
    notes: list[str] = field(default_factory=list)
    #: The rate of every round run (the figure is their median).
    rounds: list[float] = field(default_factory=list)


@dataclass
class Latency:
    p50_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    received: int | None = None
    text: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Row:
    key: str
    label: str
    kind: str
    level: str
    durability: str = ""
    version: str = ""
    cells: dict[str, Cell] = field(default_factory=dict)
    latency: Latency = field(default_factory=Latency)
    notes: list[str] = field(default_factory=list)
    #: Workloads whose acknowledgement is weaker than the row's level, and why.
    weaker: dict[str, str] = field(default_factory=dict)


@dataclass
class Limits:
    memcpy_gbps: float
    write_gbps: float
    fdatasync_ms: float


# -- formatting ------------------------------------------------------------------------------


def fmt_rate(rate: float) -> str:
    """Messages per second, three significant digits (``2.31 M``, ``45.2 k``)."""
    for div, unit in ((1e6, " M"), (1e3, " k")):
        if rate >= div:
            return f"{rate / div:.3g}{unit}"
    return f"{rate:.3g}"


def fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:.3g} ms"
    return f"{us:.3g} µs"


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text if len(text) < 120 else text[:117] + "..."


# -- the machine -----------------------------------------------------------------------------


def measure_limits(workdir: Path, mib: int) -> Limits:
    """memcpy GB/s (numpy), sequential write GB/s to the page cache, fdatasync latency."""
    n = mib << 20
    src = np.ones(n, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    memcpy = n / best / 1e9
    del src, dst

    chunk = os.urandom(1 << 20)
    path = workdir / "limits.bin"
    best = math.inf
    for _ in range(3):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            t0 = time.perf_counter()
            for _ in range(mib):
                os.write(fd, chunk)
            best = min(best, time.perf_counter() - t0)
        finally:
            os.close(fd)
            path.unlink()
    write = n / best / 1e9

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        block = b"\0" * 4096
        for _ in range(20):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return Limits(memcpy, write, float(np.median(times)) * 1e3)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def tidelog_build() -> str:
    """The measured tidelog: commit, uncommitted changes, hash of the native module."""
    parts = []
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "rust", "python"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        parts.append(f"commit {head}" + (" + uncommitted changes" if dirty else ""))
    except (OSError, subprocess.SubprocessError):
        parts.append("commit ?")
    try:
        core = importlib.import_module("tidelog._core")
        digest = hashlib.sha256(Path(str(core.__file__)).read_bytes()).hexdigest()[:12]
        parts.append(f"native module sha256 {digest}")
    except (ImportError, OSError):
        pass
    return ", ".join(parts)


# -- running ---------------------------------------------------------------------------------


def make_values(count: int, size: int) -> list[bytes]:
    """``count`` distinct pseudo-random values of ``size`` bytes (the same in every run)."""
    rng = np.random.default_rng(20240601)
    blob = rng.integers(0, 256, size=count * size, dtype=np.uint8).tobytes()
    return [blob[i * size : (i + 1) * size] for i in range(count)]


def timed_cell(prepare: Any, expect: int) -> Cell:
    """Prepares (untimed), runs (timed) and closes one workload."""
    try:
        timed: Timed = prepare()
    except NotApplicable as exc:
        return Cell(text=str(exc))
    gc.collect()
    try:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        done = timed.run()
        seconds = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        timed.close()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    cell = Cell(rate=done / seconds if seconds > 0 else None, seconds=seconds, count=done)
    cell.cpu_s = cpu
    cell.notes = list(timed.notes)
    if done < expect and not cell.notes:
        cell.notes.append(f"handled {done:,} of {expect:,} messages")
    return cell


def run_system(adapter: Adapter, values: Sequence[bytes], args: argparse.Namespace) -> Row:
    row = Row(adapter.key, adapter.label, adapter.kind, adapter.level)
    row.durability = adapter.durability()
    row.weaker = dict(type(adapter).weaker)
    count = len(values)
    tag = f"[{adapter.label} / fsync={adapter.level}]"

    def attempt(name: str, once: Callable[[str], Cell]) -> None:
        """Runs a workload; repeats it (fresh slot each time) while a round is short."""
        try:
            cells = [once(name)]
            while (
                len(cells) < args.rounds
                and cells[0].rate is not None
                and (cells[0].seconds or 0.0) < REPEAT_BELOW_S
                and not cells[0].notes
            ):
                cells.append(once(f"{name}{len(cells)}"))
            rated = sorted((c for c in cells if c.rate is not None), key=lambda c: c.rate or 0.0)
            cell = rated[len(rated) // 2] if rated else cells[0]
            cell.rounds = [c.rate for c in cells if c.rate is not None]
        except Exception as exc:
            cell = Cell(text=f"error: {short_error(exc)}")
        row.cells[name] = cell
        if cell.rate is not None:
            extra = f" ({'; '.join(cell.notes)})" if cell.notes else ""
            spread = ""
            if len(cell.rounds) > 1:
                spread = f", median of {', '.join(fmt_rate(r) for r in cell.rounds)}"
            print(
                f"{tag} {TITLES[name]}: {fmt_rate(cell.rate)} msgs/s "
                f"in {cell.seconds:.2f} s{spread}{extra}",
                flush=True,
            )
        else:
            print(f"{tag} {TITLES[name]}: {cell.text}", flush=True)

    def filled(slot: str, workload: Callable[[str, int], Timed]) -> Cell:
        adapter.fill(slot, values)
        return timed_cell(lambda: workload(slot, count), count)

    attempt("append", lambda slot: timed_cell(lambda: adapter.append_one(slot, values), count))
    attempt("batch", lambda slot: timed_cell(lambda: adapter.append_batch(slot, values), count))
    attempt("read", lambda slot: filled(slot, adapter.read_all))
    attempt("consume", lambda slot: filled(slot, adapter.consume_group))

    lat = row.latency
    try:
        res = run_latency(
            adapter,
            "latency",
            args.latency_messages,
            args.size,
            args.latency_rate,
            args.poll_us / 1e6,
        )
        lat.p50_us, lat.p99_us, lat.max_us = res.p50_us, res.p99_us, res.max_us
        lat.received, lat.notes = res.received, res.notes
        if adapter.latency_interim():
            lat.notes.insert(0, adapter.latency_interim() or "")
        if res.p50_us is None:
            lat.text = "no message arrived"
    except NotApplicable as exc:
        lat.text = str(exc)
    except Exception as exc:
        lat.text = f"error: {short_error(exc)}"
    if lat.p50_us is not None and lat.p99_us is not None:
        extra = f" ({'; '.join(lat.notes)})" if lat.notes else ""
        print(f"{tag} latency: p50 {fmt_us(lat.p50_us)}, p99 {fmt_us(lat.p99_us)}{extra}")
    else:
        print(f"{tag} latency: {lat.text}", flush=True)
    row.version = adapter.version()
    row.notes = adapter.notes()
    return row


# -- output ----------------------------------------------------------------------------------


def cell_text(cell: Cell | None, weaker: bool = False) -> str:
    if cell is None:
        return ""
    if cell.rate is None:
        return cell.text
    return fmt_rate(cell.rate) + ("*" if cell.notes else "") + ("†" if weaker else "")


def row_name(row: Row, levels: Sequence[str]) -> str:
    name = f"**{row.label}**" if row.kind == "tidelog" else row.label
    return f"{name} (fsync={row.level})" if len(levels) > 1 else name


def summary_lines(rows: list[Row], levels: Sequence[str]) -> list[str]:
    """tidelog divided by the best embedded library, the naive file and the best server."""
    out = []
    for level in levels:
        at = [r for r in rows if r.level == level]
        tide = next((r for r in at if r.kind == "tidelog"), None)
        if tide is None:
            continue
        for w in THROUGHPUT:
            mine = tide.cells.get(w)
            if mine is None or mine.rate is None:
                out.append(
                    f"- fsync={level}, {TITLES[w]}: tidelog has no figure ({cell_text(mine)})."
                )
                continue
            parts = []
            libraries = [r for r in at if r.kind == "embedded" and r.key != "naive-file"]
            groups = (
                ("best embedded library", libraries),
                ("naive file", [r for r in at if r.key == "naive-file"]),
                ("best server", [r for r in at if r.kind == "server"]),
            )
            for title, group in groups:
                rated = [
                    (r.cells[w].rate, r)
                    for r in group
                    if w in r.cells and r.cells[w].rate and w not in r.weaker
                ]
                if not rated:
                    continue
                rate, best = max(rated, key=lambda t: t[0] or 0.0)
                assert rate is not None
                parts.append(
                    f"{mine.rate / rate:.3g}x the {title} ({best.label}, {fmt_rate(rate)})"
                )
            if parts:
                out.append(
                    f"- fsync={level}, {TITLES[w]}: tidelog {fmt_rate(mine.rate)} msgs/s = "
                    + "; ".join(parts)
                    + "."
                )
        lat = tide.latency
        if lat.p50_us is not None and lat.p99_us is not None:
            parts = []
            for title, group in (
                ("best embedded peer", [r for r in at if r.kind == "embedded"]),
                ("best server", [r for r in at if r.kind == "server"]),
            ):
                timed = [r for r in group if r.latency.p50_us is not None]
                if timed:
                    best = min(timed, key=lambda r: r.latency.p50_us or math.inf)
                    assert best.latency.p50_us is not None and best.latency.p99_us is not None
                    parts.append(
                        f"the {title}: {best.label}, {fmt_us(best.latency.p50_us)} / "
                        f"{fmt_us(best.latency.p99_us)}"
                    )
            out.append(
                f"- fsync={level}, latency p50 / p99: tidelog {fmt_us(lat.p50_us)} / "
                f"{fmt_us(lat.p99_us)}" + ("; " + "; ".join(parts) if parts else "") + "."
            )
    return out


def write_markdown(
    path: Path,
    rows: list[Row],
    skipped: list[str],
    limits: Limits,
    meta: dict[str, Any],
    levels: Sequence[str],
) -> None:
    size = meta["size"]
    lines = [
        "# tidelog next to the alternatives",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} "
        "(do not edit by hand: rerun the command).",
        "",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']:.0f} GiB, "
        f"Linux {meta['kernel']}; load average {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end.",
        f"- Software: Python {meta['python']}, numpy {meta['numpy']}; tidelog "
        f"{meta['tidelog']} ({meta['tidelog_build']}).",
        f"- Workload: {meta['count']:,} messages of {size} bytes; batches of {meta['batch']:,}; "
        f"a workload still running after {meta['budget_s']:g} s stops there and reports the "
        "rate of the messages it handled (marked *)"
        + (
            f"; a workload faster than {REPEAT_BELOW_S:g} s runs {meta['rounds']} times on "
            "fresh data and the median counts. "
            if meta["rounds"] > 1
            else ". "
        )
        + f"Latency: {meta['latency_messages']:,} messages sent at {meta['latency_rate']:g}/s "
        "from this process to a consumer in another process; polling readers sleep "
        f"{meta['poll_us']:g} µs when they find nothing.",
        f"- Machine limits, measured in this run: memcpy {limits.memcpy_gbps:.2f} GB/s "
        f"(numpy copy of {meta['limits_mib']} MiB); sequential write to the page cache "
        f"{limits.write_gbps:.2f} GB/s (1 MiB `os.write`s); fdatasync of a 4 KiB append "
        f"{limits.fdatasync_ms:.2f} ms (median).",
        "",
        "## Messages per second and end-to-end latency",
        "",
        "| system | durability (what an acknowledged message survives) | "
        + " | ".join(TITLES[w] for w in THROUGHPUT)
        + " | latency p50 | latency p99 |",
        "|---|---|" + "---:|" * (len(THROUGHPUT) + 2),
    ]
    for r in rows:
        lat = r.latency
        p50 = fmt_us(lat.p50_us) if lat.p50_us is not None else lat.text
        p99 = fmt_us(lat.p99_us) if lat.p99_us is not None else lat.text
        if lat.p50_us is not None and lat.notes:
            p50 += "*"
            p99 += "*"
        lines.append(
            f"| {row_name(r, levels)} | {r.durability} | "
            + " | ".join(cell_text(r.cells.get(w), w in r.weaker) for w in THROUGHPUT)
            + f" | {p50} | {p99} |"
        )
    lines += [
        "",
        "\\* see the notes below. † weaker than the row's durability in this workload "
        "(see the notes); left out of the computed comparison.",
        "",
        "## As a fraction of the machine's limits",
        "",
        f"Payload bandwidth (messages/s x {size} B) divided by the page-cache write bandwidth "
        "for the appends, and by the memcpy bandwidth for read and consume.",
        "",
        "| system | " + " | ".join(TITLES[w] for w in THROUGHPUT) + " |",
        "|---|" + "---:|" * len(THROUGHPUT),
    ]
    for r in rows:
        cells = []
        for w in THROUGHPUT:
            c = r.cells.get(w)
            if c is None or c.rate is None:
                cells.append("")
                continue
            limit = limits.write_gbps if w in ("append", "batch") else limits.memcpy_gbps
            cells.append(f"{c.rate * size / 1e9 / limit * 100:.2g}%")
        lines.append(f"| {row_name(r, levels)} | " + " | ".join(cells) + " |")
    summary = summary_lines(rows, levels)
    if summary:
        lines += [
            "",
            "## tidelog relative to the peers (computed)",
            "",
            "At equal durability only (cells marked † are left out); the best of each group.",
            "",
            *summary,
        ]
    lines += ["", "## How each system was driven", ""]
    seen: set[str] = set()
    seen_weaker: set[str] = set()
    for r in rows:
        notes = [] if r.key in seen else list(r.notes)
        seen.add(r.key)
        for w in THROUGHPUT:
            c = r.cells.get(w)
            if w in r.weaker and r.key not in seen_weaker:
                notes.append(f"† {TITLES[w]}: {r.weaker[w]}.")
            if c is not None and c.notes:
                notes.append(f"{TITLES[w]} (fsync={r.level}): " + "; ".join(c.notes) + ".")
        seen_weaker.add(r.key)
        if r.latency.notes:
            notes.append(f"latency (fsync={r.level}): " + "; ".join(r.latency.notes) + ".")
        if notes:
            lines.append(f"- **{r.label}** ({r.version}):")
            lines += [f"  - {n}" for n in notes]
    if skipped:
        lines += ["", "## Skipped", "", *[f"- {s}" for s in skipped]]
    if meta["png_name"]:
        lines += [
            "",
            "## Chart",
            "",
            f"![messages per second per workload and system]({meta['png_name']})",
        ]
    lines.append("")
    path.write_text("\n".join(lines))


def write_chart(path: Path, rows: list[Row], levels: Sequence[str], meta: dict[str, Any]) -> bool:
    """Log-scale grouped bars: msgs/s per workload (left), latency p50/p99 (right)."""
    if not rows:
        print("nothing was measured: no chart")
        return False
    try:
        mpl = importlib.import_module("matplotlib")
    except ImportError:
        print("matplotlib not installed: no chart (`.venv/bin/pip install -e .[bench]`)")
        return False
    mpl.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    names = [f"{r.label}" + (f" [{r.level}]" if len(levels) > 1 else "") for r in rows]
    # One colour per system (tidelog red, the peers tab10 without its red); fsync=always hatched.
    tab10 = plt.get_cmap("tab10")
    palette = [tab10(i) for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    keys = [a.key for a in ADAPTERS if a.kind != "tidelog"]
    colors = [
        "#d62728" if r.kind == "tidelog" else palette[keys.index(r.key) % len(palette)]
        for r in rows
    ]
    hatches = ["//" if r.level == "always" else "" for r in rows]
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(16, 7), gridspec_kw={"width_ratios": [3, 1.3]}, constrained_layout=True
    )
    n = len(rows)
    width = 0.8 / max(n, 1)
    for i, r in enumerate(rows):
        xs, ys = [], []
        for j, w in enumerate(THROUGHPUT):
            c = r.cells.get(w)
            x = j + (i - (n - 1) / 2) * width
            if c is not None and c.rate:
                xs.append(x)
                ys.append(c.rate)
            else:
                ax.text(x, 1.2, "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
        ax.bar(
            xs,
            ys,
            width=width,
            color=colors[i],
            hatch=hatches[i],
            label=names[i],
            edgecolor="black",
            lw=0.3,
        )
        for x, y in zip(xs, ys, strict=True):
            ax.text(x, y * 1.1, fmt_rate(y), rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set_yscale("log")
    top = max((c.rate for r in rows for c in r.cells.values() if c.rate), default=10.0)
    ax.set_ylim(1, top * 30)  # room for the value labels
    ax.set_xticks(range(len(THROUGHPUT)), [TITLES[w] for w in THROUGHPUT])
    ax.set_ylabel("messages / s (log scale)")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_title(
        f"{meta['count']:,} messages x {meta['size']} B, batches of {meta['batch']:,}"
        + ("" if len(levels) > 1 else f", fsync={levels[0]} equivalents")
    )
    for i, r in enumerate(rows):
        lat = r.latency
        for j, v in enumerate((lat.p50_us, lat.p99_us)):
            x = j + (i - (n - 1) / 2) * width
            if v:
                ax2.bar(
                    [x],
                    [v],
                    width=width,
                    color=colors[i],
                    hatch=hatches[i],
                    edgecolor="black",
                    lw=0.3,
                )
                ax2.text(x, v * 1.1, fmt_us(v), rotation=90, ha="center", va="bottom", fontsize=6)
            else:
                ax2.text(x, 1.2, "n/a", rotation=90, ha="center", va="bottom", fontsize=6)
    ax2.set_yscale("log")
    worst = max((v for r in rows for v in (r.latency.p50_us, r.latency.p99_us) if v), default=10.0)
    ax2.set_ylim(1, worst * 30)
    ax2.set_xticks([0, 1], ["p50", "p99"])
    ax2.set_ylabel("µs from send to another process (log scale)")
    ax2.grid(axis="y", which="both", alpha=0.3)
    ax2.set_title(f"latency, {meta['latency_messages']:,} msgs at {meta['latency_rate']:g}/s")
    fig.legend(loc="outside lower center", ncol=min(5, n), fontsize=8)
    fig.suptitle(f"tidelog vs. alternatives — {meta['cpu']}, {meta['date']}", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--quick", action="store_true", help="CI smoke run: small sizes, no servers")
    p.add_argument("-n", "--count", type=int, help="messages (default 200000; quick 10000)")
    p.add_argument("--size", type=int, default=100, help="bytes per message, >= 8 (100)")
    p.add_argument("--batch", type=int, default=1000, help="messages per batch / commit (1000)")
    p.add_argument("--latency-messages", type=int, help="default 2000; quick 300")
    p.add_argument("--latency-rate", type=float, default=1000.0, help="messages/s sent (1000)")
    p.add_argument("--poll-us", type=float, default=100.0, help="sleep of polling readers (100)")
    p.add_argument("--budget", type=float, help="max s per workload (15; quick 2)")
    p.add_argument(
        "--rounds",
        type=int,
        help=f"runs of a workload faster than {REPEAT_BELOW_S:g} s; median counts (3; quick 1)",
    )
    p.add_argument(
        "--fsync",
        choices=("never", "always", "both"),
        default="never",
        help="durability level(s): page cache (never, the default), fsync before ack (always)",
    )
    p.add_argument(
        "--systems",
        default="all",
        help="comma-separated keys: " + ",".join(a.key for a in ADAPTERS),
    )
    p.add_argument("--no-servers", action="store_true", help="skip Redis and Kafka")
    p.add_argument("--out-dir", type=Path, help="default benches/results (quick: target/)")
    p.add_argument("--data-dir", type=Path, help="default $TIDELOG_BENCH_DIR or target/")
    p.add_argument("--keep-data", action="store_true", help="do not delete the data written")
    p.add_argument("--limits-mib", type=int, help="MiB for the limit probes (256; quick 32)")
    args = p.parse_args(argv)
    q = args.quick
    args.count = args.count or (10_000 if q else 200_000)
    args.latency_messages = args.latency_messages or (300 if q else 2000)
    args.budget = args.budget or (2.0 if q else 15.0)
    args.rounds = args.rounds or (1 if q else 3)
    args.limits_mib = args.limits_mib or (32 if q else 256)
    args.out_dir = args.out_dir or (
        REPO / "target" / "compare-quick" if q else REPO / "benches" / "results"
    )
    if args.size < 8:
        p.error("--size must be at least 8 (the latency timestamp)")
    return args


def run_one(
    cls: type[Adapter],
    level: Level,
    workdir: Path,
    spec: Spec,
    values: Sequence[bytes],
    args: argparse.Namespace,
    levels: Sequence[Level],
    skipped: list[str],
) -> Row | None:
    """Runs every workload of one system at one level; None (and a line) if it is skipped."""
    if cls.kind == "server" and (args.quick or args.no_servers):
        if level == levels[0]:
            why = "--quick" if args.quick else "--no-servers"
            skipped.append(f"{cls.label}: skipped by {why}.")
            print(f"skip {cls.label}: {why}")
        return None
    if level not in cls.levels:
        msg = f"{cls.label} at fsync={level}: the library has no such mode."
        skipped.append(msg)
        print(f"skip {msg}")
        return None
    adapter = cls(level, workdir, spec)
    try:
        adapter.check()
        adapter.start()
    except Exception as exc:
        why = str(exc) if isinstance(exc, Skip) else f"failed to start: {short_error(exc)}"
        if not any(s.startswith(cls.label + ":") for s in skipped):
            skipped.append(f"{cls.label}: {why}")
        print(f"skip {cls.label}: {why}", flush=True)
        return None
    return run_system(adapter, values, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    levels: list[Level] = ["never", "always"] if args.fsync == "both" else [args.fsync]
    wanted = [s.strip() for s in args.systems.split(",")] if args.systems != "all" else []
    unknown = [s for s in wanted if s not in ADAPTER_BY_KEY]
    if unknown:
        print(f"unknown systems: {', '.join(unknown)}", file=sys.stderr)
        return 2
    classes = [a for a in ADAPTERS if not wanted or a.key in wanted]

    base = args.data_dir or Path(
        os.environ.get("TIDELOG_BENCH_DIR", REPO / "target" / "bench-data")
    )
    base.mkdir(parents=True, exist_ok=True)
    workdir = base / f"compare-{os.getpid()}-{int(time.time())}"
    workdir.mkdir()
    args.out_dir.mkdir(parents=True, exist_ok=True)

    try:
        script = os.path.relpath(Path(__file__).resolve(), Path.cwd())
        python = os.path.relpath(sys.executable, Path.cwd())
    except ValueError:
        script, python = str(Path(__file__).resolve()), sys.executable
    meta: dict[str, Any] = {
        "command": shlex.join([python, script, *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tidelog": dist_version("tidelog"),
        "tidelog_build": tidelog_build(),
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "count": args.count,
        "size": args.size,
        "batch": args.batch,
        "budget_s": args.budget,
        "rounds": args.rounds,
        "latency_messages": args.latency_messages,
        "latency_rate": args.latency_rate,
        "poll_us": args.poll_us,
        "limits_mib": args.limits_mib,
        "levels": levels,
        "png_name": "compare.png",
    }
    print(f"# {meta['command']}\n# {meta['date']}, {meta['cpu']}, {meta['cores']} cores")
    print(f"# data in {workdir}")
    limits = measure_limits(workdir, args.limits_mib)
    print(
        f"machine limits: memcpy {limits.memcpy_gbps:.2f} GB/s, page-cache write "
        f"{limits.write_gbps:.2f} GB/s, fdatasync {limits.fdatasync_ms:.2f} ms",
        flush=True,
    )
    spec = Spec(args.count, args.size, args.batch, args.budget, args.poll_us / 1e6)
    values = make_values(args.count, args.size)
    rows: list[Row] = []
    skipped: list[str] = []
    try:
        # System by system (both levels), so each server runs only while it is measured.
        for cls in classes:
            try:
                for level in levels:
                    row = run_one(cls, level, workdir, spec, values, args, levels, skipped)
                    if row is not None:
                        rows.append(row)
            finally:
                try:
                    cls.shutdown()
                except Exception as exc:
                    print(f"stopping {cls.label}: {short_error(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        if not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    rows.sort(key=lambda r: levels.index(cast(Level, r.level)))

    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    png = args.out_dir / "compare.png"
    if not write_chart(png, rows, levels, meta):
        png = Path("(no chart)")
        meta["png_name"] = None
    md = args.out_dir / "compare.md"
    write_markdown(md, rows, skipped, limits, meta, levels)
    (args.out_dir / "compare.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "limits": asdict(limits),
                "rows": [asdict(r) for r in rows],
                "skipped": skipped,
            },
            indent=1,
        )
        + "\n"
    )
    print()
    print(md.read_text())
    print(f"wrote {md}, {png} and compare.json in {meta['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
