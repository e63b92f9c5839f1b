#!/usr/bin/env python3
"""Writes ``benches/results/workqueue.md``: the work-queue figures as medians of several runs.

Usage: ``python benches/workqueue_summary.py [RUN.json ...]`` (default: the
``benches/results/workqueue-*.json`` files, each written by
``pytest benches/python/test_bench_workqueue.py --benchmark-only --benchmark-json=...``).
The table gives, per benchmark, the median over the runs of each run's median-round figure,
and every run's figure; the full report of the first run follows.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benches.report import entries, fmt, load, report

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    """Entry point."""
    paths = [Path(a) for a in argv] or sorted(RESULTS.glob("workqueue-*.json"))
    if not paths:
        print("no workqueue-*.json results", file=sys.stderr)
        return 1
    runs = [load(p) for p in paths]
    rows: dict[tuple[str, str, str, str], list[float]] = {}
    for data in runs:
        for e in entries(data):
            rows.setdefault((e["figure"], e["role"], e["title"], e["unit"]), []).append(e["value"])
    lines = [
        f"## Work queue benchmarks (issue #6): medians of {len(runs)} runs",
        "",
        "Regenerate: run `.venv/bin/python -m pytest benches/python/test_bench_workqueue.py "
        "--benchmark-only --benchmark-json=benches/results/workqueue-N.json` for N = 1, 2, 3, "
        "then `.venv/bin/python benches/workqueue_summary.py`. Each run's figure comes from its "
        "median round; the table gives the median over the runs and each run's figure. The "
        f"full report of {paths[0].name} follows.",
        "",
        "| figure | role | what | median of runs | runs |",
        "|---|---|---|---|---|",
    ]
    for (figure, role, title, unit), values in sorted(rows.items()):
        each = ", ".join(fmt(v, unit) for v in values)
        lines.append(
            f"| {figure} | {role} | {title} | {fmt(statistics.median(values), unit)} | {each} |"
        )
    text, _ = report(runs[0])
    out = RESULTS / "workqueue.md"
    out.write_text("\n".join(lines) + "\n\n" + text + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
