#!/usr/bin/env python3
"""Runs the Python benchmarks of two checkouts side by side and compares every figure.

Usage: ``python benches/ab.py BASE_DIR NEW_DIR [--rounds N] [--files PATTERN ...] [--out DIR]``

Each directory is a tidelog checkout with its own built ``.venv`` (``make build``). The
benchmark files are run alternately, base then new, file by file and ``--rounds`` times, so
both builds see the same machine load; the report takes each figure's median over the
rounds and gives the change from base to new, oriented so that a negative change is a
slowdown whatever the unit. With ``--limit PCT`` the exit status is 1 when a tidelog or
variant figure got more than PCT percent worse.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HIGHER_IS_BETTER = {"msgs/s", "GB/s"}


def run(checkout: Path, bench_file: str, out: Path) -> None:
    """One pytest-benchmark run of ``bench_file`` in ``checkout``, JSON to ``out``."""
    cmd = [
        str(checkout / ".venv" / "bin" / "python"),
        "-m",
        "pytest",
        str(checkout / "benches" / "python" / bench_file),
        "-q",
        "--benchmark-only",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={out}",
    ]
    subprocess.run(cmd, cwd=checkout, check=True, stdout=subprocess.DEVNULL)


def figures(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(group, title) -> extra_info of every benchmark that carries a figure."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "figure" in info and info.get("value") is not None:
            out[(str(bench.get("group")), str(info["title"]))] = info
    return out


def gain(unit: str, base: float, new: float) -> float:
    """Change from base to new in percent, positive when new is better."""
    if base == 0:
        return 0.0
    if unit in HIGHER_IS_BETTER:
        return (new / base - 1.0) * 100.0
    return (base / new - 1.0) * 100.0 if new else 0.0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("base", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--files", nargs="*", default=None, help="benchmark file names")
    parser.add_argument("--out", type=Path, default=Path("target/ab"))
    parser.add_argument("--limit", type=float, default=None, help="fail above this % slowdown")
    args = parser.parse_args(argv)
    files = args.files or sorted(
        p.name for p in (args.new / "benches" / "python").glob("test_bench_*.py")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    samples: dict[str, dict[tuple[str, str], list[float]]] = {"base": {}, "new": {}}
    units: dict[tuple[str, str], tuple[str, str]] = {}
    for r in range(args.rounds):
        for name in files:
            for side, checkout in (("base", args.base), ("new", args.new)):
                out = args.out / f"{side}-{r}-{name}.json"
                print(f"round {r + 1}: {side} {name}", file=sys.stderr, flush=True)
                run(checkout.resolve(), name, out.resolve())
                for key, info in figures(out).items():
                    samples[side].setdefault(key, []).append(float(info["value"]))
                    units[key] = (str(info["unit"]), str(info["role"]))
    print("| group | role | benchmark | base (median) | new (median) | change |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for key in sorted(units):
        if key not in samples["base"] or key not in samples["new"]:
            continue
        unit, role = units[key]
        base = statistics.median(samples["base"][key])
        new = statistics.median(samples["new"][key])
        change = gain(unit, base, new)
        if role in ("tidelog", "variant") and unit != "MiB":
            worst = min(worst, change)
        print(
            f"| {key[0]} | {role} | {key[1]} | {base:,.4g} {unit} | {new:,.4g} {unit} "
            f"| {change:+.1f}% |"
        )
    print(f"\nworst tidelog/variant change: {worst:+.1f}%")
    if args.limit is not None and worst < -args.limit:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
