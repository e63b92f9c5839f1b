"""``bench``: append and read throughput on a temporary store."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import tidelog
from tidelog.cli._common import ENV_DIR, AddCommand, CliError, non_negative, positive
from tidelog.cli._format import json_line, progress_bar, rich_console

if TYPE_CHECKING:
    from rich.progress import Progress


__all__ = ["add_commands"]


def _bench_phases(
    store: tidelog.Store, n: int, size: int, batch_size: int, progress: Progress
) -> list[tuple[str, float]]:
    value = bytes(range(256)) * (size // 256) + bytes(size % 256)
    one = store.create_topic("bench-append", 1)
    many = store.create_topic("bench-append-batch", 1)
    timings: list[tuple[str, float]] = []

    def phase(name: str, run: Callable[[Callable[[int], None]], None]) -> None:
        task = progress.add_task(name, total=n)
        started = time.perf_counter()
        run(lambda k: progress.advance(task, k))
        timings.append((name, time.perf_counter() - started))

    def append(advance: Callable[[int], None]) -> None:
        for start in range(0, n, batch_size):
            for _ in range(min(batch_size, n - start)):
                one.append(value, partition=0)
            advance(min(batch_size, n - start))

    def append_batch(advance: Callable[[int], None]) -> None:
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            many.append_batch([value] * count, partition=0)
            advance(count)

    def read_batch(advance: Callable[[int], None]) -> None:
        offset = 0
        while offset < n:
            batch = many.read_batch(0, offset, max_messages=batch_size)
            offset = batch.next_offset
            advance(len(batch))

    def iterate(advance: Callable[[int], None]) -> None:
        seen = 0
        for msg in many.read(0, 0):
            msg.value  # noqa: B018 -- materialise the value, as an application would
            seen += 1
            if seen % batch_size == 0:
                advance(batch_size)
        advance(seen % batch_size)

    phase("append (one by one)", append)
    phase("append_batch", append_batch)
    phase("read_batch scan", read_batch)
    phase("Message iteration", iterate)
    return timings


def _cmd_bench(args: argparse.Namespace) -> int:
    n, size = args.messages, args.size
    parent = args.dir  # not $TIDELOG_DIR: a benchmark must not write next to real data
    if parent is not None and not Path(parent).is_dir():
        raise CliError(f"directory {parent!r} does not exist")
    with (
        tempfile.TemporaryDirectory(prefix="tidelog-bench-", dir=parent) as tmp,
        tidelog.open(Path(tmp) / "store", fsync=args.fsync) as store,
        progress_bar(not args.quiet and sys.stderr.isatty()) as progress,
    ):
        timings = _bench_phases(store, n, size, args.batch, progress)
    rows = [
        {
            "phase": name,
            "messages": n,
            "seconds": seconds,
            "messages_per_second": n / seconds if seconds else float("inf"),
            "mb_per_second": n * size / 1e6 / seconds if seconds else float("inf"),
        }
        for name, seconds in timings
    ]
    if args.json:
        print(json_line({"messages": n, "size": size, "fsync": args.fsync, "results": rows}))
        return 0
    from rich.table import Table

    table = Table(
        "phase",
        "messages",
        "seconds",
        "msgs/s",
        "MB/s",
        title=f"tidelog bench: {n:,} messages of {size} bytes, fsync={args.fsync}",
    )
    for col in table.columns[1:]:
        col.justify = "right"
    for row in rows:
        table.add_row(
            row["phase"],
            f"{n:,}",
            f"{row['seconds']:.3f}",
            f"{row['messages_per_second']:,.0f}",
            f"{row['mb_per_second']:,.1f}",
        )
    rich_console().print(table)
    return 0


def add_commands(command: AddCommand) -> None:
    """Adds ``bench``."""
    sub = command(
        "bench",
        _cmd_bench,
        "Measure append and read throughput on a temporary store",
        "Phases: append one message at a time, append_batch, a read_batch scan and\n"
        "iteration over Message objects. The temporary store is deleted afterwards.",
    )
    sub.add_argument(
        "-d",
        "--dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="create the temporary store inside DIR (default: the system temp directory; "
        f"${ENV_DIR} is not used)",
    )
    sub.add_argument("-n", "--messages", type=positive, default=100_000, metavar="N")
    sub.add_argument("-s", "--size", type=non_negative, default=100, metavar="BYTES")
    sub.add_argument("-b", "--batch", type=positive, default=1000, metavar="N")
    sub.add_argument("--fsync", choices=["never", "interval", "always"], default="never")
    sub.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
