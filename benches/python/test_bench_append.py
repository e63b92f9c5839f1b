"""Append throughput: ``topic.append``, ``append_batch`` (list and buffer), each next to its
reference, plus variants that break the cost of one call down (key, partition, headers...).

Every round appends to a fresh topic (tidelog) or a fresh file (references), created in the
untimed per-round setup; the previous round's topic or file is deleted there too, so all
rounds start from the same state and the data written stays bounded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tidelog

from benches.python.reference import PyLog, mmap_write_file, os_write_file, write_records_inline
from benches.support import (
    BATCH_VALUES,
    SCALE,
    VALUE_BYTES,
    Measured,
    make_buffer,
    make_values,
    ns_per,
    per_second,
    record,
)

VALUE = make_values(1)[0]
VALUES = make_values()
BUFFER, LENGTHS = make_buffer()
#: The same buffer cut into values of 50 and 150 bytes in turn (the same 1,000 values on
#: average): a batch of values of different sizes needs an 8-byte entry per record, which
#: same-size values (one record array) do not.
VARIED_LENGTHS = np.where(np.arange(len(LENGTHS)) % 2 == 0, LENGTHS // 2, LENGTHS + LENGTHS // 2)
APPENDS = SCALE.append_calls
BATCHES = SCALE.batch_calls
ROUNDS = SCALE.rounds

APPEND_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 2_000_000, "text": ">= 2,000,000 msgs/s"},
    {"of": "ratio", "op": ">", "value": 1.0, "text": "faster than the f.write log"},
]
BATCH_LIST_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 5_000_000, "text": ">= 5,000,000 msgs/s"},
]
BATCH_BUFFER_TARGETS: list[dict[str, Any]] = [
    {"of": "ratio", "op": ">=", "value": 0.9, "text": ">= 90% of os.write"},
]


@pytest.fixture(scope="module")
def store(bench_root: Path) -> Iterator[tidelog.Store]:
    """One store for the module; each round gets a fresh topic in it."""
    with tidelog.open(bench_root / "append-store", fsync="never") as s:
        yield s


class FreshTopics:
    """Hands out a new one-partition topic per round, deleting the previous one."""

    def __init__(self, store: tidelog.Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self.count = 0

    def next(self) -> tidelog.Topic:
        """Deletes the previous topic (if any) and creates the next one."""
        if self.count:
            self.store.delete_topic(f"{self.prefix}-{self.count - 1}")
        topic = self.store.create_topic(f"{self.prefix}-{self.count}", partitions=1)
        self.count += 1
        return topic


class FreshFiles:
    """Hands out a new file path per round, deleting the previous file."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self.count = 0
        self.log: PyLog | None = None

    def path(self) -> Path:
        """Deletes the previous file (closing its log) and returns a new path."""
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.count:
            (self.directory / f"{self.prefix}-{self.count - 1}").unlink(missing_ok=True)
        self.count += 1
        return self.directory / f"{self.prefix}-{self.count - 1}"

    def pylog(self) -> PyLog:
        """A :class:`PyLog` on a new file."""
        path = self.path()
        self.log = PyLog(path)
        return self.log


Args = tuple[tuple[Any, ...], dict[str, Any]]


def run(benchmark: Any, target: Callable[..., Any], setup: Callable[[], Args]) -> dict[str, float]:
    """Runs ``target`` for ``ROUNDS`` rounds (plus one warm-up) after a per-round setup.

    Returns the process's resource usage per timed round (setup excluded).
    """
    measured = Measured(target)
    benchmark.pedantic(measured, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    return measured.per_call()


# --------------------------------------------------------------------------- loops
# One function per call shape, so every variant pays the same loop overhead.


def call_loop(fn: Callable[[Any], Any], arg: Any, n: int) -> None:
    for _ in range(n):
        fn(arg)


def append_partition_loop(append: Callable[..., Any], value: bytes, n: int) -> None:
    for _ in range(n):
        append(value, partition=0)


def append_key_loop(append: Callable[..., Any], value: bytes, n: int) -> None:
    key = b"customer-42"
    for _ in range(n):
        append(value, key=key)


def append_timestamp_loop(append: Callable[..., Any], value: bytes, n: int) -> None:
    ts = 1_700_000_000_000
    for _ in range(n):
        append(value, timestamp_ms=ts)


def append_headers_loop(append: Callable[..., Any], value: bytes, n: int) -> None:
    headers = {"trace": b"abc123"}
    for _ in range(n):
        append(value, headers=headers)


def append_batch_one_loop(append_batch: Callable[..., Any], value: bytes, n: int) -> None:
    one = [value]
    for _ in range(n):
        append_batch(one, partition=0)


def pylog_append_loop(log: PyLog, value: bytes, n: int) -> None:
    call_loop(log.append, value, n)
    log.flush()


def batch_list_loop(append_batch: Callable[..., Any], values: list[bytes], n: int) -> None:
    for _ in range(n):
        append_batch(values, partition=0)


def pylog_batch_loop(log: PyLog, values: list[bytes], n: int) -> None:
    append_batch = log.append_batch
    for _ in range(n):
        append_batch(values)
    log.flush()


def batch_buffer_loop(
    append_batch: Callable[..., Any], buffer: bytes, lengths: npt.NDArray[np.int64], n: int
) -> None:
    for _ in range(n):
        append_batch(buffer, lengths=lengths, partition=0)


# --------------------------------------------------------------------------- topic.append

APPEND_WHAT = f"{APPENDS:,} calls/round, {VALUE_BYTES} B values"


@pytest.mark.benchmark(group="append")
def test_append_tidelog(benchmark: Any, store: tidelog.Store) -> None:
    topics = FreshTopics(store, "append")
    usage = run(benchmark, call_loop, lambda: ((topics.next().append, VALUE, APPENDS), {}))
    record(
        benchmark,
        figure="append",
        title="topic.append, 1 msg/call",
        role="tidelog",
        unit="msgs/s",
        work=APPENDS,
        what=APPEND_WHAT,
        targets=APPEND_TARGETS,
        extra={"ns_per_call": ns_per(benchmark, APPENDS), **usage},
    )


@pytest.mark.benchmark(group="append")
def test_append_reference(benchmark: Any, bench_dir: Path) -> None:
    files = FreshFiles(bench_dir, "pylog")
    usage = run(benchmark, pylog_append_loop, lambda: ((files.pylog(), VALUE, APPENDS), {}))
    files.path()
    record(
        benchmark,
        figure="append",
        title="PyLog.append (pack + buffered f.write)",
        role="reference",
        unit="msgs/s",
        work=APPENDS,
        what=APPEND_WHAT + ", flush at the end",
        extra={"ns_per_call": ns_per(benchmark, APPENDS), **usage},
    )


def sqlite_append_loop(conn: sqlite3.Connection, value: bytes, n: int) -> None:
    """One INSERT per message, a COMMIT per 1,000 rows (as compare.py's sqlite3 peer)."""
    execute = conn.execute
    sql = "INSERT INTO log (value) VALUES (?)"
    row = (value,)
    for start in range(0, n, 1000):
        execute("BEGIN")
        for _ in range(min(1000, n - start)):
            execute(sql, row)
        execute("COMMIT")


@pytest.mark.benchmark(group="append")
def test_append_sqlite(benchmark: Any, bench_dir: Path) -> None:
    files = FreshFiles(bench_dir, "sqlite")
    opened: list[sqlite3.Connection] = []

    def setup() -> Args:
        for conn in opened:
            conn.close()
        opened.clear()
        conn = sqlite3.connect(str(files.path()), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE log (offset INTEGER PRIMARY KEY, value BLOB)")
        opened.append(conn)
        return (conn, VALUE, APPENDS), {}

    usage = run(benchmark, sqlite_append_loop, setup)
    for conn in opened:
        conn.close()
    record(
        benchmark,
        figure="append",
        title="sqlite3 INSERT per message, COMMIT per 1,000 rows (WAL, synchronous=NORMAL)",
        role="second-reference",
        unit="msgs/s",
        work=APPENDS,
        what=APPEND_WHAT,
        extra={"ns_per_call": ns_per(benchmark, APPENDS), **usage},
    )


@pytest.mark.benchmark(group="append")
def test_append_reference_inline_loop(benchmark: Any, bench_dir: Path) -> None:
    files = FreshFiles(bench_dir, "inline")
    opened: list[Any] = []

    def setup() -> Args:
        for f in opened:
            f.close()
        opened.clear()
        opened.append(open(files.path(), "wb"))  # noqa: SIM115 - closed in the next setup
        return (opened[0], VALUE, APPENDS), {}

    usage = run(benchmark, write_records_inline, setup)
    for f in opened:
        f.close()
    record(
        benchmark,
        figure="append-inline",
        title="bare loop write(pack(n) + v), no API, no offsets",
        role="variant",
        unit="msgs/s",
        work=APPENDS,
        what=APPEND_WHAT,
        extra={"ns_per_call": ns_per(benchmark, APPENDS), **usage},
    )


# --------------------------------------------------------------------------- breakdown


def _variant(
    benchmark: Any,
    store: tidelog.Store,
    name: str,
    title: str,
    loop: Callable[..., Any],
    pick: Callable[[tidelog.Topic], Any],
    arg: Any = VALUE,
) -> None:
    topics = FreshTopics(store, name)
    usage = run(benchmark, loop, lambda: ((pick(topics.next()), arg, APPENDS), {}))
    record(
        benchmark,
        figure=f"breakdown-{name}",
        title=title,
        role="variant",
        unit="ns/call",
        work=APPENDS,
        what=APPEND_WHAT,
        extra={**usage},
    )


@pytest.mark.benchmark(group="append-breakdown")
def test_breakdown_builtin_call(benchmark: Any, store: tidelog.Store) -> None:
    _variant(benchmark, store, "len", "floor: loop + len(value) (C call)", call_loop, lambda t: len)


@pytest.mark.benchmark(group="append-breakdown")
def test_breakdown_pyo3_call(benchmark: Any, store: tidelog.Store) -> None:
    _variant(
        benchmark,
        store,
        "end-offset",
        "floor: loop + topic.end_offset(0) (PyO3 call, head read)",
        call_loop,
        lambda t: t.end_offset,
        arg=0,
    )


@pytest.mark.benchmark(group="append-breakdown")
def test_breakdown_append(benchmark: Any, store: tidelog.Store) -> None:
    _variant(benchmark, store, "plain", "append(v)", call_loop, lambda t: t.append)


@pytest.mark.benchmark(group="append-breakdown")
def test_breakdown_append_partition(benchmark: Any, store: tidelog.Store) -> None:
    _variant(
        benchmark, store, "partition", "append(v, partition=0)", append_partition_loop, _append
    )


@pytest.mark.benchmark(group="append-breakdown")
def test_breakdown_append_key(benchmark: Any, store: tidelog.Store) -> None:
    _variant(benchmark, store, "key", "append(v, key=11 B)", append_key_loop, _append)


@pytest.mark.benchmark(group="append-breakdown")
def test_breakdown_append_timestamp(benchmark: Any, store: tidelog.Store) -> None:
    _variant(
        benchmark, store, "timestamp", "append(v, timestamp_ms=...)", append_timestamp_loop, _append
    )


@pytest.mark.benchmark(group="append-breakdown")
def test_breakdown_append_headers(benchmark: Any, store: tidelog.Store) -> None:
    _variant(
        benchmark, store, "headers", "append(v, headers={1 header})", append_headers_loop, _append
    )


@pytest.mark.benchmark(group="append-breakdown")
def test_breakdown_append_batch_of_one(benchmark: Any, store: tidelog.Store) -> None:
    _variant(
        benchmark,
        store,
        "batch-of-one",
        "append_batch([v], partition=0) (releases the GIL)",
        append_batch_one_loop,
        lambda t: t.append_batch,
    )


def _append(topic: tidelog.Topic) -> Any:
    return topic.append


# --------------------------------------------------------------------------- append_batch

BATCH_WHAT = f"{BATCHES} calls x {BATCH_VALUES:,} values/round, {VALUE_BYTES} B values"


@pytest.mark.benchmark(group="append-batch-list")
def test_append_batch_list_tidelog(benchmark: Any, store: tidelog.Store) -> None:
    topics = FreshTopics(store, "batch-list")
    usage = run(
        benchmark, batch_list_loop, lambda: ((topics.next().append_batch, VALUES, BATCHES), {})
    )
    record(
        benchmark,
        figure="append-batch-list",
        title="append_batch(list of 1,000)",
        role="tidelog",
        unit="msgs/s",
        work=BATCHES * BATCH_VALUES,
        what=BATCH_WHAT,
        targets=BATCH_LIST_TARGETS,
        extra={**usage},
    )


@pytest.mark.benchmark(group="append-batch-list")
def test_append_batch_list_reference(benchmark: Any, bench_dir: Path) -> None:
    files = FreshFiles(bench_dir, "pylog-batch")
    usage = run(benchmark, pylog_batch_loop, lambda: ((files.pylog(), VALUES, BATCHES), {}))
    files.path()
    record(
        benchmark,
        figure="append-batch-list",
        title="PyLog.append_batch (pack each + join + one write)",
        role="reference",
        unit="msgs/s",
        work=BATCHES * BATCH_VALUES,
        what=BATCH_WHAT,
        extra={**usage},
    )


BUFFER_WHAT = (
    f"{BATCHES} calls x {len(BUFFER):,} B/round ({BATCH_VALUES:,} values of {VALUE_BYTES} B)"
)


@pytest.mark.benchmark(group="append-batch-buffer")
def test_append_batch_buffer_tidelog(benchmark: Any, store: tidelog.Store) -> None:
    topics = FreshTopics(store, "batch-buffer")
    usage = run(
        benchmark,
        batch_buffer_loop,
        lambda: ((topics.next().append_batch, BUFFER, LENGTHS, BATCHES), {}),
    )
    record(
        benchmark,
        figure="append-batch-buffer",
        title="append_batch(buffer, lengths=int64[1000])",
        role="tidelog",
        unit="GB/s",
        work=BATCHES * len(BUFFER),
        what=BUFFER_WHAT,
        targets=BATCH_BUFFER_TARGETS,
        extra={"msgs_per_s": per_second(benchmark, BATCHES * BATCH_VALUES), **usage},
    )


@pytest.mark.benchmark(group="append-batch-buffer")
def test_append_batch_buffer_reference(benchmark: Any, bench_dir: Path) -> None:
    files = FreshFiles(bench_dir, "os-write")
    usage = run(benchmark, os_write_file, lambda: ((files.path(), BUFFER, BATCHES), {}))
    files.path()
    record(
        benchmark,
        figure="append-batch-buffer",
        title="os.write(fd, same buffer) to a new file",
        role="reference",
        unit="GB/s",
        work=BATCHES * len(BUFFER),
        what=BUFFER_WHAT + ", open + close included",
        extra={**usage},
    )


@pytest.mark.benchmark(group="append-batch-buffer")
def test_append_batch_buffer_mmap_floor(benchmark: Any, bench_dir: Path) -> None:
    """Pure-Python copy of the same bytes into a fallocated, mapped file: the mmap floor."""
    files = FreshFiles(bench_dir, "mmap-write")
    usage = run(benchmark, mmap_write_file, lambda: ((files.path(), BUFFER, BATCHES), {}))
    files.path()
    record(
        benchmark,
        figure="append-batch-mmap-floor",
        title="mmap copy of the same buffer into a new fallocated file",
        role="variant",
        unit="GB/s",
        work=BATCHES * len(BUFFER),
        what=BUFFER_WHAT + ", open + fallocate + mmap + close included",
        extra={**usage},
    )


@pytest.mark.benchmark(group="append-batch-buffer")
def test_append_batch_buffer_varied(benchmark: Any, store: tidelog.Store) -> None:
    """The same bytes cut into values of two sizes: compact record entries are written."""
    topics = FreshTopics(store, "batch-varied")
    usage = run(
        benchmark,
        batch_buffer_loop,
        lambda: ((topics.next().append_batch, BUFFER, VARIED_LENGTHS, BATCHES), {}),
    )
    record(
        benchmark,
        figure="append-batch-varied",
        title="append_batch(buffer, lengths=int64[1000] of 50 and 150 B)",
        role="variant",
        unit="GB/s",
        work=BATCHES * len(BUFFER),
        what=BUFFER_WHAT.replace(f"values of {VALUE_BYTES} B", "values of 50 and 150 B"),
        extra={**usage},
    )


@pytest.mark.benchmark(group="append-batch-buffer")
def test_append_batch_one_big_value(benchmark: Any, store: tidelog.Store) -> None:
    """The same bytes as one 100 KB value per call: per-byte cost without per-record cost."""
    topics = FreshTopics(store, "batch-big")
    one = np.array([len(BUFFER)], dtype=np.int64)
    usage = run(
        benchmark,
        batch_buffer_loop,
        lambda: ((topics.next().append_batch, BUFFER, one, BATCHES), {}),
    )
    record(
        benchmark,
        figure="append-batch-one-value",
        title="append_batch(buffer, lengths=[100000]): same bytes, 1 record",
        role="variant",
        unit="GB/s",
        work=BATCHES * len(BUFFER),
        what=f"{BATCHES} calls x {len(BUFFER):,} B/round (1 value)",
        extra={**usage},
    )


def test_values_are_what_the_figures_say() -> None:
    """Guards the payload shape the figures are computed from (not a benchmark)."""
    assert len(VALUE) == VALUE_BYTES
    assert VARIED_LENGTHS.sum() == LENGTHS.sum() == len(BUFFER)
    assert set(VARIED_LENGTHS) == {VALUE_BYTES // 2, VALUE_BYTES + VALUE_BYTES // 2}
    assert len(VALUES) == BATCH_VALUES and all(len(v) == VALUE_BYTES for v in VALUES)
    assert len(BUFFER) == int(LENGTHS.sum()) == BATCH_VALUES * VALUE_BYTES
