#!/usr/bin/env python3
"""Runs one benchmark scenario in a loop, for profiling it with ``perf``.

Usage::

    perf record -F 1999 -g -o /tmp/perf.data -- \\
        .venv/bin/python benches/profile_scenario.py append --seconds 5
    perf report -i /tmp/perf.data --no-children --sort dso,sym

Scenarios: ``append`` (one message per call), ``batch-list``, ``batch-buffer``,
``os-write``, ``scan`` (read_batch + value_buffer over a 256 MiB partition), ``iterate``
(Message objects over the same partition). Like the benchmark rounds, the write scenarios
start over in a new topic (or file) every 64 MB. The data lives in a temporary directory
under ``TIDELOG_BENCH_DIR`` (default ``target/bench-data``), deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads (see conftest.py)

import tidelog

from benches.support import (
    BATCH_VALUES,
    MIB,
    VALUE_BYTES,
    bench_data_root,
    make_buffer,
    make_values,
)

SCAN_BYTES = 256 * MIB
#: Values written to one topic (or file) before starting over in a new one.
ROUND_BYTES = 64_000_000


class Fresh:
    """Like the benchmarks' rounds: a new topic (or file) every ``ROUND_BYTES`` of values,
    the previous one deleted, so dirty page-cache writeback never builds up."""

    def __init__(self, store: tidelog.Store, directory: Path) -> None:
        self.store = store
        self.directory = directory
        self.count = 0
        self.written = ROUND_BYTES
        self.topic: tidelog.Topic | None = None
        self.fd = -1

    def next_topic(self, nbytes: int) -> tidelog.Topic:
        """The current topic, replaced by a new one when a round's bytes are written."""
        self.written += nbytes
        if self.topic is None or self.written > ROUND_BYTES:
            if self.topic is not None:
                self.store.delete_topic(f"profile-{self.count - 1}")
            self.topic = self.store.create_topic(f"profile-{self.count}", partitions=1)
            self.count += 1
            self.written = nbytes
        return self.topic

    def next_fd(self, nbytes: int) -> int:
        """The current file, replaced by a new one when a round's bytes are written."""
        self.written += nbytes
        if self.fd < 0 or self.written > ROUND_BYTES:
            if self.fd >= 0:
                os.close(self.fd)
                os.unlink(self.directory / f"raw-{self.count - 1}")
            path = self.directory / f"raw-{self.count}"
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.count += 1
            self.written = nbytes
        return self.fd


def scenario(name: str, store: tidelog.Store, directory: Path) -> Callable[[], int]:
    """Returns a function doing one unit of the scenario and returning messages done."""
    values = make_values()
    buffer, lengths = make_buffer()
    value = values[0]
    fresh = Fresh(store, directory)
    if name == "append":

        def append() -> int:
            topic_append = fresh.next_topic(10_000 * VALUE_BYTES).append
            for _ in range(10_000):
                topic_append(value)
            return 10_000

        return append
    if name == "batch-list":

        def batch_list() -> int:
            fresh.next_topic(len(buffer)).append_batch(values, partition=0)
            return BATCH_VALUES

        return batch_list
    if name == "batch-buffer":

        def batch_buffer() -> int:
            fresh.next_topic(len(buffer)).append_batch(buffer, lengths=lengths, partition=0)
            return BATCH_VALUES

        return batch_buffer
    if name == "os-write":

        def write() -> int:
            os.write(fresh.next_fd(len(buffer)), buffer)
            return BATCH_VALUES

        return write
    if name in ("scan", "iterate"):
        topic = store.create_topic("scan", partitions=1)
        while topic.size_bytes(0) < SCAN_BYTES:
            topic.append_batch(buffer, lengths=lengths, partition=0)
        end = topic.end_offset(0)

        def scan() -> int:
            offset = 0
            while offset < end:
                batch = topic.read_batch(0, offset, max_messages=BATCH_VALUES)
                buf, _bounds = batch.value_buffer()
                len(buf)
                offset = batch.next_offset
            return end

        def iterate() -> int:
            n = 0
            for _msg in topic.read(0, 0):
                n += 1
            return n

        return scan if name == "scan" else iterate
    raise SystemExit(f"unknown scenario {name!r}")


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description="Loop one benchmark scenario for perf.")
    parser.add_argument(
        "scenario", choices=["append", "batch-list", "batch-buffer", "os-write", "scan", "iterate"]
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    root = bench_data_root()
    root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="profile-", dir=root))
    store = tidelog.open(directory / "store", fsync="never")
    try:
        run = scenario(args.scenario, store, directory)
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            done += run()
        elapsed = time.perf_counter() - start
        print(f"{args.scenario}: {done / elapsed:,.0f} msgs/s over {elapsed:.1f} s")
    finally:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
