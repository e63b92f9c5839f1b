#!/usr/bin/env python3
"""Prints the Markdown report of a pytest-benchmark JSON file written by ``benches/``.

Usage: ``python benches/report.py RESULTS.json [--output REPORT.md] [--check]``

The first table has one row per figure of issue #2: tidelog's figure (from the median round
time), its reference's (measured in the same run), their ratio, the target and pass/fail.
The second lists every benchmark, including the variants that break costs down, with the
CPU split (user/system) and page faults per round. With ``--check`` the exit status is 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIGURES = [
    "append",
    "append-batch-list",
    "append-batch-buffer",
    "read-scan",
    "read-iterate",
    "reopen",
    "memory",
    # issue #3: ring buffer and producer (test_bench_ring.py, test_bench_producer.py)
    "ring-push-pop",
    "ring-batch",
    "producer-send",
    "producer-send-4-threads",
    "group-commit",
    # issue #4: consumer groups (test_bench_consumer.py)
    "consume",
    "commit-never",
    "commit-always",
    "latency-p50",
    "latency-p99",
    # issue #5: idempotence and transactions (test_bench_transactions.py)
    "idempotent-send",
    "transactions",
    "producer-state-reopen",
    # issue #6: work queues (test_bench_workqueue.py)
    "workqueue",
    "workqueue-4-procs",
    "workqueue-state",
    # issue 14: consumer-group membership kept by the core (test_bench_groups.py)
    "group-join",
    "group-heartbeat",
    "group-heartbeat-forced",
    "group-generation",
    # issue 15: asyncio (test_aio_bench.py)
    "aio-send",
    "aio-send-uvloop",
    "aio-send-nowait",
    "aio-consume",
    "aio-consume-uvloop",
    "aio-latency-p50",
    "aio-latency-p99",
    "aio-latency-spin-p50",
    "aio-latency-spin-p99",
    "aio-idle-cpu",
    "aio-idle-cpu-spin",
    # issue 16: the kafka:// backend next to plain confluent-kafka (test_bench_kafka_backend.py)
    "kafka-produce",
    "kafka-consume",
]

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


def fmt(value: float | None, unit: str) -> str:
    """A figure with its unit, rounded for reading."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "msgs/s":
        return f"{value / 1e6:,.2f} M msgs/s"
    if unit == "GB/s":
        return f"{value:,.2f} GB/s"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit == "MiB":
        return f"{value:+,.1f} MiB"
    if unit == "ns/call":
        return f"{value:,.0f} ns/call"
    return f"{value:,.3g} {unit}"


def load(path: Path) -> dict[str, Any]:
    """The JSON document."""
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def entries(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Benchmarks that carry a figure, as flat dicts of extra_info plus stats."""
    out = []
    for bench in data.get("benchmarks", []):
        info = dict(bench.get("extra_info", {}))
        if "figure" not in info:
            continue
        info["name"] = bench["name"]
        info["group"] = bench.get("group")
        info["stats"] = bench.get("stats", {})
        out.append(info)
    return out


def check(
    target: dict[str, Any], value: float | None, ratio: float | None, paired: float | None = None
) -> bool | None:
    """Whether one target is met (None when its input is missing).

    ``"of": "paired_ratio"`` checks the median of per-round ratios to a reference round run
    next to each measured one (``paired_ratio`` in the benchmark's extra info).
    """
    subject = {"value": value, "ratio": ratio, "paired_ratio": paired}[target["of"]]
    if subject is None or math.isnan(subject):
        return None
    return OPS[target["op"]](subject, float(target["value"]))


def cpu_text(tl: dict[str, Any], ref: dict[str, Any] | None, unit: str) -> str:
    """tidelog's figure by CPU time, with the reference's and their ratio when known."""
    text = fmt(tl.get("value_cpu"), unit)
    if ref and ref.get("value_cpu") and tl.get("value_cpu"):
        text += f" / {fmt(ref['value_cpu'], unit)} ({tl['value_cpu'] / ref['value_cpu']:.2f}x)"
    return text


def main_table(items: list[dict[str, Any]]) -> tuple[list[str], bool]:
    """The figure table, and whether every target was met."""
    lines = [
        "| figure | tidelog (median) | reference (median) | ratio | target | result "
        "| by CPU time: tidelog / reference (ratio) |",
        "|---|---|---|---|---|---|---|",
    ]
    all_ok = True
    by_role = {(e["figure"], e["role"]): e for e in items}
    for figure in FIGURES:
        tl = by_role.get((figure, "tidelog"))
        if tl is None:
            continue
        ref = by_role.get((figure, "reference"))
        unit = tl["unit"]
        value = tl.get("value")
        ref_value = ref.get("value") if ref else None
        # A ratio of RSS growths is meaningless when the reference grows by ~0.
        ratio = value / ref_value if value is not None and ref_value and unit != "MiB" else None
        paired = tl.get("paired_ratio")
        results = [check(t, value, ratio, paired) for t in tl.get("targets", [])]
        ok = all(r is True for r in results)
        all_ok &= ok
        verdict = "PASS" if ok else ("FAIL" if any(r is False for r in results) else "n/a")
        ratio_text = "n/a" if ratio is None else f"{ratio:.2f}x"
        if paired is not None:
            ratio_text += f"; paired {paired:.2f}x"
            if tl.get("paired_ratio_cpu") is not None:
                ratio_text += f" (by CPU {tl['paired_ratio_cpu']:.2f}x)"
        ref_text = f"{fmt(ref_value, unit)} ({ref['title']})" if ref else "n/a"
        targets = "; ".join(t["text"] for t in tl.get("targets", []))
        cpu = cpu_text(tl, ref, unit)
        lines.append(
            f"| {tl['title']} | {fmt(value, unit)} | {ref_text} | {ratio_text} "
            f"| {targets} | {verdict} | {cpu} |"
        )
        second = by_role.get((figure, "second-reference"))
        if second and value is not None and second.get("value"):
            lines.append(
                f"| {tl['title']} (next to a second reference) | {fmt(value, unit)} "
                f"| {fmt(second['value'], unit)} ({second['title']}) "
                f"| {value / second['value']:.2f}x | none (for comparison) | n/a "
                f"| {cpu_text(tl, second, unit)} |"
            )
    return lines, all_ok


def figure_from_seconds(unit: str, work: float, seconds: float) -> float | None:
    """The figure in ``unit`` of a round doing ``work`` in ``seconds``."""
    if seconds <= 0:
        return None
    if unit == "msgs/s":
        return work / seconds
    if unit == "GB/s":
        return work / seconds / 1e9
    if unit == "ms":
        return seconds * 1e3
    if unit == "ns/call":
        return seconds / work * 1e9
    return None


def from_time(e: dict[str, Any], seconds: float) -> float | None:
    """The figure a round of ``seconds`` gives (None for figures not made of time)."""
    work = float(e.get("work_per_round", math.nan))
    unit = e["unit"]
    if not seconds > 0:  # also None for NaN (no such round in the JSON)
        return None
    return figure_from_seconds(unit, work, seconds)


def detail_table(items: list[dict[str, Any]]) -> list[str]:
    """Every benchmark with its CPU split and page faults per round."""
    lines = [
        "| group | role | benchmark | figure (median) | figure (fastest round) "
        "| figure (median CPU time) | median round | rounds | user / sys CPU per round "
        "| minor faults per round | preempted per round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {f: i for i, f in enumerate(FIGURES)}
    for e in sorted(items, key=lambda e: (str(e["group"]), order.get(e["figure"], 99))):
        stats = e["stats"]
        user = e.get("per_round_cpu_user_s")
        sys_ = e.get("per_round_cpu_sys_s")
        faults = e.get("per_round_minor_faults")
        cpu = "" if user is None or sys_ is None else f"{user * 1e3:,.1f} / {sys_ * 1e3:,.1f} ms"
        extra = ""
        if e.get("ns_per_call") is not None and e["unit"] != "ns/call":
            extra = f" ({e['ns_per_call']:,.0f} ns/call)"
        if e.get("ns_per_msg") is not None:
            extra = f" ({e['ns_per_msg']:,.0f} ns/msg)"
        median = float(stats.get("median", math.nan)) * 1e3
        figure = fmt(e.get("value"), e["unit"]) + extra
        best = fmt(from_time(e, float(stats.get("min", math.nan))), e["unit"])
        by_cpu = fmt(e.get("value_cpu"), e["unit"]) if e.get("value_cpu") else ""
        preempted = e.get("per_round_involuntary_ctx_switches")
        lines.append(
            f"| {e['group']} | {e['role']} | {e['title']} | {figure} | {best} | {by_cpu} "
            f"| {median:,.2f} ms | {stats.get('rounds', '')} "
            f"| {cpu} | {'' if faults is None else f'{faults:,.0f}'} "
            f"| {'' if preempted is None else f'{preempted:,.0f}'} |"
        )
    return lines


def memory_lines(items: list[dict[str, Any]]) -> list[str]:
    """The RSS breakdown of the memory benchmarks."""
    lines = []
    for e in items:
        if e["figure"] != "memory":
            continue
        parts = ", ".join(
            f"{k.removeprefix('peak_growth_').removesuffix('_mib')} {v:+,.1f} MiB"
            for k, v in e.items()
            if k.startswith("peak_growth_")
        )
        lines.append(
            f"- {e['role']}: peak growth over baseline "
            f"(VmRSS {e.get('baseline_VmRSS_mib', 0):,.1f} MiB) — {parts}; {e['what']}"
        )
    return lines


def _load(value: Any) -> str:
    if not isinstance(value, list | tuple):
        return "?"
    return ", ".join(f"{float(v):.2f}" for v in value)


def _build(build: dict[str, Any]) -> str:
    if not build:
        return "?"
    text = f"sha256 {str(build.get('module_sha256', '?'))[:12]}, built {build.get('module_built')}"
    text += f", HEAD {str(build.get('head', '?'))[:12]}"
    dirty = build.get("rust_uncommitted") or []
    if dirty:
        text += f", uncommitted Rust changes in {len(dirty)} files"
        text += f" (diff sha256 {str(build.get('rust_diff_sha256'))[:12]})"
    return text


def report(data: dict[str, Any]) -> tuple[str, bool]:
    """The whole Markdown report, and whether every target was met."""
    items = entries(data)
    table, ok = main_table(items)
    machine = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    scales = sorted({str(e.get("scale")) for e in items})
    head = [
        "## tidelog storage-engine benchmarks",
        "",
        f"- scale: {', '.join(scales)}; run {data.get('datetime', '?')}; "
        f"commit {str(commit.get('id', '?'))[:12]}{' (dirty)' if commit.get('dirty') else ''}",
        f"- machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
        f"{machine.get('cpu', {}).get('count', '?')} CPUs, "
        f"Python {machine.get('python_version', '?')}, {machine.get('system', '')} "
        f"{machine.get('release', '')}",
        '- figures use the median round; 100-byte values, fsync="never", page cache warm',
        f"- load average at start / end: {_load(machine.get('loadavg_at_start'))} / "
        f"{_load(machine.get('loadavg_at_end'))} (2 cores: above ~1 means other work competed)",
        f"- native module measured: {_build(machine.get('tidelog_build', {}))}",
        "",
    ]
    body = [*head, *table, "", "### Memory", "", *memory_lines(items), "", "### All benchmarks"]
    body += ["", *detail_table(items), ""]
    return "\n".join(body), ok


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON file")
    parser.add_argument("--output", type=Path, help="also write the Markdown to this file")
    parser.add_argument("--check", action="store_true", help="exit with 1 if a target is missed")
    args = parser.parse_args(argv)
    text, ok = report(load(args.json))
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
