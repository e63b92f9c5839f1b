# ruff: noqa: E501  (the tables below keep one entry point per line)
"""The errors contract (API.md, "Errors"), checked over every public entry point.

- every error is a ``TidelogError``; an operating-system failure is a ``StorageError`` that is
  also an ``OSError`` and keeps the errno, the message and the file name;
- numbers out of range raise a ``TidelogError``, never ``OverflowError`` or ``struct.error``;
- wrong argument types raise ``TypeError`` naming the argument;
- every error pickles to the same type and message, also across a worker process.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tidelog
import tidelog.errors
from tidelog import _core

BIG = 2**70
SURROGATE = "a\udc80"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A store with topic ``t`` (2 partitions, 3 messages in partition 0) and friends."""
    store = tidelog.open(tmp_path / "store")
    topic = store.create_topic("t", partitions=2)
    topic.append_batch([b"a", b"b", b"c"], partition=0)
    producer = store.producer()
    consumer = store.consumer("t", group="g")
    queue = store.work_queue("t", group="q")
    try:
        yield {
            "store": store,
            "topic": topic,
            "producer": producer,
            "consumer": consumer,
            "queue": queue,
            "dir": tmp_path,
        }
    finally:
        store.close()


Call = Callable[[dict[str, Any]], object]


# --- out-of-range numbers --------------------------------------------------------------------

OUT_OF_RANGE: list[tuple[str, Call, type[tidelog.TidelogError] | None]] = [
    ("append partition", lambda e: e["topic"].append(b"x", partition=BIG), tidelog.PartitionNotFoundError),
    ("append timestamp", lambda e: e["topic"].append(b"x", timestamp_ms=BIG), tidelog.InvalidConfigError),
    ("append_batch partition", lambda e: e["topic"].append_batch([b"x"], partition=BIG), tidelog.PartitionNotFoundError),
    ("append_batch timestamp", lambda e: e["topic"].append_batch([b"x"], partition=0, timestamp_ms=-BIG), tidelog.InvalidConfigError),
    ("read offset 2**63", lambda e: e["topic"].read(0, 2**63), tidelog.OffsetOutOfRangeError),
    ("read offset -1", lambda e: e["topic"].read(0, -1), tidelog.OffsetOutOfRangeError),
    ("read partition", lambda e: e["topic"].read(BIG, 0), tidelog.PartitionNotFoundError),
    ("read timestamp", lambda e: e["topic"].read(0, timestamp_ms=BIG), tidelog.InvalidConfigError),
    ("read_batch offset -1", lambda e: e["topic"].read_batch(0, -1), tidelog.OffsetOutOfRangeError),
    ("read_batch offset 2**64", lambda e: e["topic"].read_batch(0, 2**64), tidelog.OffsetOutOfRangeError),
    ("read_batch max_messages", lambda e: e["topic"].read_batch(0, 0, max_messages=-BIG), tidelog.InvalidConfigError),
    ("end_offset", lambda e: e["topic"].end_offset(BIG), tidelog.PartitionNotFoundError),
    ("start_offset", lambda e: e["topic"].start_offset(-BIG), tidelog.PartitionNotFoundError),
    ("offset_for_timestamp", lambda e: e["topic"].offset_for_timestamp(0, BIG), tidelog.InvalidConfigError),
    ("wait ticket", lambda e: e["topic"].wait(BIG, 0.0), tidelog.InvalidConfigError),
    ("append_sequenced id", lambda e: e["topic"].append_sequenced([b"x"], producer_id=BIG, producer_epoch=0, base_sequence=0), tidelog.InvalidConfigError),
    ("open segment_bytes", lambda e: tidelog.open(e["dir"] / "s1", segment_bytes=BIG), tidelog.InvalidConfigError),
    ("open segment_ms", lambda e: tidelog.open(e["dir"] / "s2", segment_ms=BIG), tidelog.InvalidConfigError),
    ("open retention_bytes", lambda e: tidelog.open(e["dir"] / "s3", retention_bytes=BIG), tidelog.InvalidConfigError),
    ("open retention_ms", lambda e: tidelog.open(e["dir"] / "s4", retention_ms=BIG), tidelog.InvalidConfigError),
    ("open fsync_interval_ms", lambda e: tidelog.open(e["dir"] / "s5", fsync="interval", fsync_interval_ms=BIG), tidelog.InvalidConfigError),
    ("open max_message_bytes", lambda e: tidelog.open(e["dir"] / "s6", max_message_bytes=BIG), tidelog.InvalidConfigError),
    ("open index_interval_bytes", lambda e: tidelog.open(e["dir"] / "s7", index_interval_bytes=BIG), tidelog.InvalidConfigError),
    ("create_topic partitions", lambda e: e["store"].create_topic("u", partitions=BIG), tidelog.InvalidConfigError),
    ("producer buffer_messages", lambda e: e["store"].producer(buffer_messages=BIG), tidelog.InvalidConfigError),
    ("producer block_timeout 1e300", lambda e: e["store"].producer(block_timeout=1e300).close(), None),
    ("producer block_timeout nan", lambda e: e["store"].producer(block_timeout=float("nan")), tidelog.InvalidConfigError),
    ("flush timeout inf", lambda e: e["producer"].flush(timeout=float("inf")), None),
    ("producer max_lag", lambda e: e["store"].producer(max_lag=BIG), tidelog.InvalidConfigError),
    ("send partition", lambda e: e["producer"].send("t", b"x", partition=BIG), tidelog.PartitionNotFoundError),
    ("send priority", lambda e: e["producer"].send("t", b"x", priority=2**40), tidelog.InvalidConfigError),
    ("commit 2**63", lambda e: e["consumer"].commit({0: 2**63}), tidelog.OffsetOutOfRangeError),
    ("commit past the end", lambda e: e["consumer"].commit({0: 4}), tidelog.OffsetOutOfRangeError),
    ("commit metadata too long", lambda e: e["consumer"].commit({0: 1}, metadata="x" * 70_000), tidelog.InvalidConfigError),
    ("seek", lambda e: e["consumer"].seek(0, BIG), tidelog.OffsetOutOfRangeError),
    ("poll max_messages 0", lambda e: e["consumer"].poll(max_messages=0, timeout=0), tidelog.InvalidConfigError),
    ("poll max_messages -1", lambda e: e["consumer"].poll(max_messages=-1, timeout=0), tidelog.InvalidConfigError),
    ("consumer max_poll_messages", lambda e: e["store"].consumer("t", group="h", max_poll_messages=0), tidelog.InvalidConfigError),
    ("consumer lease inf", lambda e: e["store"].consumer("t", group="h", lease_seconds=float("inf")), tidelog.InvalidConfigError),
    ("consumer lease 1e300", lambda e: e["store"].consumer("t", group="h", lease_seconds=1e300), tidelog.InvalidConfigError),
    ("consumer lease nan", lambda e: e["store"].consumer("t", group="h", lease_seconds=float("nan")), tidelog.InvalidConfigError),
    ("work_queue lock_timeout inf", lambda e: e["store"].work_queue("t", group="h", lock_timeout=float("inf")), tidelog.InvalidConfigError),
    ("work_queue lock_timeout 1e300", lambda e: e["store"].work_queue("t", group="h", lock_timeout=1e300), tidelog.InvalidConfigError),
    ("work_queue max_deliveries", lambda e: e["store"].work_queue("t", group="h", max_deliveries=BIG), tidelog.InvalidConfigError),
    ("acquire_many", lambda e: e["queue"].acquire_many(BIG, timeout=0), None),
    ("ring capacity", lambda e: tidelog.RingBuffer(BIG), tidelog.InvalidConfigError),
    ("ring pop_many", lambda e: tidelog.RingBuffer(4).pop_many(-1), tidelog.InvalidConfigError),
    ("partition_for_key", lambda e: _core.partition_for_key(b"k", BIG), tidelog.InvalidConfigError),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "expected"), [c[1:] for c in OUT_OF_RANGE], ids=[c[0] for c in OUT_OF_RANGE]
)
def test_numbers_out_of_range_raise_tidelog_errors(
    env: dict[str, Any], call: Call, expected: type[tidelog.TidelogError] | None
) -> None:
    if expected is None:
        call(env)  # a huge limit is just no limit
        return
    with pytest.raises(expected) as caught:
        call(env)
    assert not isinstance(caught.value, (OverflowError, struct.error))


def test_work_queue_extend_out_of_range(env: dict[str, Any]) -> None:
    env["topic"].append(b"job", partition=1)
    job = env["queue"].acquire(timeout=1)
    assert job is not None
    for seconds in (float("inf"), 1e300, float("nan")):
        with pytest.raises(tidelog.InvalidConfigError, match="seconds"):
            env["queue"].extend(job, seconds)
    env["queue"].ack(job)


def test_a_record_batch_index_behaves_as_a_list_index(env: dict[str, Any]) -> None:
    batch = env["topic"].read_batch(0, 0)
    assert batch[-3].value == b"a"
    for index in (3, -4, BIG, -BIG):
        with pytest.raises(IndexError):
            batch[index]
    with pytest.raises(TypeError, match="index"):
        batch["0"]


def test_a_rejected_commit_changes_nothing(env: dict[str, Any]) -> None:
    consumer = env["consumer"]
    consumer.commit({0: 2})
    for bad in ({0: 4}, {0: 3, 1: 1}, {0: 2**63}):
        with pytest.raises(tidelog.OffsetOutOfRangeError, match="offset"):
            consumer.commit(bad)
        assert consumer.committed() == {0: 2}
        assert consumer.lag() == {0: 1, 1: 0}
    consumer.commit({0: 3, 1: 0})  # exactly the end is fine
    assert consumer.committed() == {0: 3, 1: 0}


def test_poll_zero_is_an_error_even_with_messages_waiting(env: dict[str, Any]) -> None:
    consumer = env["consumer"]
    with pytest.raises(tidelog.InvalidConfigError, match="max_messages"):
        consumer.poll(max_messages=0, timeout=0)
    assert [m.value for m in consumer.poll(max_messages=2, timeout=1)] == [b"a", b"b"]
    with pytest.raises(tidelog.InvalidConfigError, match="max_messages"):
        consumer.poll(max_messages=0, timeout=0)  # also with a buffered remainder
    assert [m.value for m in consumer.poll(max_messages=5, timeout=1)] == [b"c"]


def test_read_at_minus_one_names_the_valid_range(env: dict[str, Any]) -> None:
    with pytest.raises(tidelog.OffsetOutOfRangeError, match=r"-1.*0\.\.=3"):
        env["topic"].read_batch(0, -1)


# --- wrong argument types --------------------------------------------------------------------

WRONG_TYPES: list[tuple[str, Call, str]] = [
    ("append partition str", lambda e: e["topic"].append(b"x", partition="0"), "partition"),
    ("append partition bool", lambda e: e["topic"].append(b"x", partition=True), "partition"),
    ("append partition float", lambda e: e["topic"].append(b"x", partition=1.0), "partition"),
    ("append timestamp", lambda e: e["topic"].append(b"x", timestamp_ms="0"), "timestamp_ms"),
    ("append headers", lambda e: e["topic"].append(b"x", headers=5), "headers"),
    ("append header value", lambda e: e["topic"].append(b"x", headers={"h": "v"}), "header"),
    ("append_batch partition", lambda e: e["topic"].append_batch([b"x"], partition="0"), "partition"),
    ("append_batch timestamp", lambda e: e["topic"].append_batch([b"x"], timestamp_ms=1.5), "timestamp_ms"),
    ("read partition", lambda e: e["topic"].read("0"), "partition"),
    ("read offset", lambda e: e["topic"].read(0, "1"), "offset"),
    ("read_batch partition bool", lambda e: e["topic"].read_batch(False, 0), "partition"),
    ("read_batch max_messages", lambda e: e["topic"].read_batch(0, 0, max_messages="1"), "max_messages"),
    ("read_batch isolation", lambda e: e["topic"].read_batch(0, 0, isolation=1), "isolation"),
    ("end_offset", lambda e: e["topic"].end_offset("0"), "partition"),
    ("offset_for_timestamp", lambda e: e["topic"].offset_for_timestamp(0, "0"), "timestamp_ms"),
    ("open path", lambda e: tidelog.open(123), "path"),  # type: ignore[arg-type]
    ("open segment_bytes", lambda e: tidelog.open(e["dir"] / "x", segment_bytes="1"), "segment_bytes"),  # type: ignore[arg-type]
    ("open max_message_bytes", lambda e: tidelog.open(e["dir"] / "x", max_message_bytes="1"), "max_message_bytes"),  # type: ignore[arg-type]
    ("open fsync", lambda e: tidelog.open(e["dir"] / "x", fsync=1), "fsync"),  # type: ignore[arg-type]
    ("producer buffer_messages", lambda e: e["store"].producer(buffer_messages="1"), "buffer_messages"),
    ("producer high_watermark", lambda e: e["store"].producer(high_watermark="x"), "high_watermark"),
    ("producer on_full", lambda e: e["store"].producer(on_full=1), "on_full"),
    ("producer name", lambda e: e["store"].producer(name=1), "name"),
    ("send topic", lambda e: e["producer"].send(1, b"x"), "topic"),
    ("send partition", lambda e: e["producer"].send("t", b"x", partition="0"), "partition"),
    ("send partition bool", lambda e: e["producer"].send("t", b"x", partition=True), "partition"),
    ("send priority", lambda e: e["producer"].send("t", b"x", priority="1"), "priority"),
    ("send headers", lambda e: e["producer"].send("t", b"x", headers=1), "headers"),
    ("flush timeout", lambda e: e["producer"].flush(timeout="1"), "timeout"),
    ("commit offsets", lambda e: e["consumer"].commit("x"), "offsets"),
    ("commit partition bool", lambda e: e["consumer"].commit({True: 1}), "partition"),
    ("commit offset str", lambda e: e["consumer"].commit({0: "1"}), "offset"),
    ("commit metadata", lambda e: e["consumer"].commit({0: 1}, metadata=1), "metadata"),
    ("seek partition bool", lambda e: e["consumer"].seek(True, 1), "partition"),
    ("seek offset", lambda e: e["consumer"].seek(0, "1"), "offset"),
    ("pause partition", lambda e: e["consumer"].pause("0"), "partition"),
    ("poll max_messages", lambda e: e["consumer"].poll(max_messages="1"), "max_messages"),
    ("poll timeout", lambda e: e["consumer"].poll(timeout="1"), "timeout"),
    ("consumer max_poll_messages", lambda e: e["store"].consumer("t", group="h", max_poll_messages=True), "max_poll_messages"),
    ("consumer lease_seconds", lambda e: e["store"].consumer("t", group="h", lease_seconds="1"), "lease_seconds"),
    ("work_queue topic", lambda e: e["store"].work_queue(1, group="h"), "topic"),
    ("ring capacity", lambda e: tidelog.RingBuffer("4"), "capacity"),  # type: ignore[arg-type]
    ("ring pop_many", lambda e: tidelog.RingBuffer(4).pop_many("1"), "max"),  # type: ignore[arg-type]
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "arg"), [c[1:] for c in WRONG_TYPES], ids=[c[0] for c in WRONG_TYPES]
)
def test_wrong_types_raise_type_error_naming_the_argument(
    env: dict[str, Any], call: Call, arg: str
) -> None:
    with pytest.raises(TypeError) as caught:
        call(env)
    assert arg in str(caught.value)


# --- names that are not valid Unicode --------------------------------------------------------

SURROGATES: list[tuple[str, Call, type[tidelog.TidelogError]]] = [
    ("create_topic", lambda e: e["store"].create_topic(SURROGATE), tidelog.InvalidConfigError),
    ("topic", lambda e: e["store"].topic(SURROGATE), tidelog.TopicNotFoundError),
    ("delete_topic", lambda e: e["store"].delete_topic(SURROGATE), tidelog.TopicNotFoundError),
    ("header name", lambda e: e["topic"].append(b"x", headers={SURROGATE: b"v"}), tidelog.InvalidConfigError),
    ("producer name", lambda e: e["store"].producer(name=SURROGATE), tidelog.InvalidConfigError),
    ("send topic", lambda e: e["producer"].send(SURROGATE, b"x"), tidelog.TopicNotFoundError),
    ("consumer topic", lambda e: e["store"].consumer(SURROGATE, group="g"), tidelog.TopicNotFoundError),
    ("consumer group", lambda e: e["store"].consumer("t", group=SURROGATE), tidelog.InvalidConfigError),
    ("commit metadata", lambda e: e["consumer"].commit({0: 1}, metadata=SURROGATE), tidelog.InvalidConfigError),
    ("work_queue group", lambda e: e["store"].work_queue("t", group=SURROGATE), tidelog.InvalidConfigError),
    ("work_queue dead_letter", lambda e: e["store"].work_queue("t", group="h", dead_letter=SURROGATE), tidelog.InvalidConfigError),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "expected"), [c[1:] for c in SURROGATES], ids=[c[0] for c in SURROGATES]
)
def test_names_with_surrogates_raise_tidelog_errors(
    env: dict[str, Any], call: Call, expected: type[tidelog.TidelogError]
) -> None:
    with pytest.raises(expected) as caught:
        call(env)
    assert not isinstance(caught.value, UnicodeError)


# --- a closed store --------------------------------------------------------------------------

CLOSED: list[tuple[str, Call]] = [
    ("producer", lambda e: e["store"].producer()),
    ("consumer", lambda e: e["store"].consumer("t", group="g")),
    ("work_queue", lambda e: e["store"].work_queue("t", group="q")),
    ("topic", lambda e: e["store"].topic("t")),
    ("create_topic", lambda e: e["store"].create_topic("u")),
    ("delete_topic", lambda e: e["store"].delete_topic("t")),
    ("topics", lambda e: e["store"].topics()),
    ("sync", lambda e: e["store"].sync()),
    ("stats", lambda e: e["store"].stats()),
    ("groups", lambda e: e["store"].groups()),
    ("abort_orphaned_transactions", lambda e: e["store"].abort_orphaned_transactions()),
    ("append", lambda e: e["topic"].append(b"x")),
    ("send", lambda e: e["producer"].send("t", b"x")),
    ("poll", lambda e: e["consumer"].poll(timeout=0)),
    ("acquire", lambda e: e["queue"].acquire(timeout=0)),
]


@pytest.mark.parametrize("call", [c[1] for c in CLOSED], ids=[c[0] for c in CLOSED])
def test_every_call_on_a_closed_store_raises_store_closed(env: dict[str, Any], call: Call) -> None:
    env["store"].close()
    with pytest.raises(tidelog.StoreClosedError):
        call(env)


def test_a_transaction_on_a_closed_store_raises_store_closed(tmp_path: Path) -> None:
    store = tidelog.open(tmp_path)
    store.create_topic("t")
    producer = store.producer(name="p")
    store.close()
    with pytest.raises(tidelog.StoreClosedError):
        store.transaction(producer)


# --- operating-system failures ---------------------------------------------------------------


def assert_storage_error(error: BaseException, code: int, filename: str | Path) -> None:
    assert isinstance(error, tidelog.StorageError)
    assert isinstance(error, tidelog.TidelogError)
    assert isinstance(error, OSError)
    assert error.errno == code, error
    assert error.strerror
    assert error.filename == os.fspath(filename)
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.errno) == (type(error), str(error), error.errno)


def test_a_store_path_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"")
    with pytest.raises(OSError) as caught:
        tidelog.open(path)
    assert_storage_error(caught.value, errno.EEXIST, path)
    with pytest.raises(tidelog.TidelogError):
        tidelog.open(path / "below")


def test_the_store_error_is_caught_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"")
    with pytest.raises(tidelog.TidelogError):
        tidelog.open(path)
    with pytest.raises(OSError):
        tidelog.open(path)


def test_a_store_marker_holding_garbage(tmp_path: Path) -> None:
    tidelog.open(tmp_path / "s").close()
    (tmp_path / "s" / "tidelog.store").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(tidelog.TidelogError, match=r"tidelog\.store"):
        tidelog.open(tmp_path / "s")


def test_topic_metadata_holding_garbage(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t")
    (tmp_path / "topics" / "t" / "topic.meta").write_bytes(b"\xff\xfe\x80")
    # Every topic is opened by tidelog.open, which reports it.
    with pytest.raises(tidelog.CorruptRecordError, match=r"topic\.meta"):
        tidelog.open(tmp_path)


# Makes a store with a topic in a process of its own, so no file stays open for writing.
_MAKE_STORE = """
import sys, tidelog
with tidelog.open(sys.argv[1], segment_bytes=1 << 16) as store:
    store.create_topic("t").append(b"x")
"""


def _in_a_mount_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Runs ``script`` with a 1 MiB tmpfs mounted at ``tmp_path / "mnt"`` (as root or not)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(
        ["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mnt)],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace: {probe.stderr!r}")
    shell = f'mount -t tmpfs -o size=1m none "{mnt}" && exec "{sys.executable}" -c "$0"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell, textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MNT": str(mnt), "MAKE": _MAKE_STORE},
    )


def test_a_full_disk_raises_enospc(tmp_path: Path) -> None:
    out = _in_a_mount_namespace(
        """
        import errno, os, pickle, tidelog
        store = tidelog.open(os.environ["MNT"] + "/store", segment_bytes=4 << 20)
        try:
            store.create_topic("t")
        except OSError as e:
            assert isinstance(e, tidelog.StorageError), type(e)
            assert e.errno == errno.ENOSPC, e
            assert e.filename and e.filename.startswith(os.environ["MNT"]), e
            assert type(pickle.loads(pickle.dumps(e))) is tidelog.StorageError
            print("ENOSPC", e)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "ENOSPC [Errno 28]" in out.stdout, out.stdout


def test_a_read_only_store(tmp_path: Path) -> None:
    out = _in_a_mount_namespace(
        """
        import errno, os, subprocess, sys, tidelog
        path = os.environ["MNT"] + "/store"
        # In a process of its own, so no file stays open for writing (remount would fail).
        subprocess.run([sys.executable, "-c", os.environ["MAKE"], path], check=True)
        subprocess.run(["mount", "-o", "remount,ro", os.environ["MNT"]], check=True)
        for attempt in (
            lambda: tidelog.open(path).create_topic("u"),
            lambda: tidelog.open(path).topic("t").append(b"y"),
            lambda: tidelog.open(path + "/new"),
        ):
            try:
                attempt()
            except tidelog.TidelogError as e:
                assert isinstance(e, OSError) and e.errno == errno.EROFS, repr(e)
                print("EROFS")
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["EROFS"] * 3, out.stdout


def test_a_file_size_limit_is_a_storage_error(tmp_path: Path) -> None:
    script = f"""
        import errno, resource, signal, tidelog
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        store = tidelog.open({str(tmp_path)!r}, segment_bytes=4 << 20)
        try:
            store.create_topic("t")
        except tidelog.StorageError as e:
            assert e.errno == errno.EFBIG, e
            print("EFBIG")
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "EFBIG", out.stderr


# --- pickling --------------------------------------------------------------------------------


def _exception_classes() -> list[type[BaseException]]:
    classes = [getattr(tidelog.errors, name) for name in tidelog.errors.__all__]
    classes += [getattr(tidelog, name) for name in tidelog.__all__]
    found = {c for c in classes if isinstance(c, type) and issubclass(c, BaseException)}
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: c.__name__)
def test_every_exception_class_pickles(cls: type[BaseException]) -> None:
    assert issubclass(cls, tidelog.TidelogError)
    error = (
        cls(errno.ENOSPC, "No space left on device", "/x")
        if issubclass(cls, OSError)
        else cls("boom")
    )
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls
    assert str(again) == str(error)
    assert cls.__module__.startswith("tidelog") and not cls.__module__.startswith("tidelog._core")


def test_storage_error_is_listed_and_documented() -> None:
    assert "StorageError" in tidelog.__all__ and "StorageError" in tidelog.errors.__all__
    assert tidelog.StorageError is tidelog.errors.StorageError is _core.StorageError
    assert tidelog.StorageError.__mro__[1:3] == (tidelog.TidelogError, OSError)
    assert tidelog.StorageError.__doc__


def test_an_error_raised_in_a_worker_process_is_raised_again_in_the_parent(tmp_path: Path) -> None:
    tidelog.open(tmp_path / "s").close()
    (tmp_path / "file").write_bytes(b"")
    code_missing = f"import tidelog; tidelog.open({str(tmp_path / 's')!r}).topic('missing')"
    code_file = f"import tidelog; tidelog.open({str(tmp_path / 'file')!r})"
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        with pytest.raises(tidelog.TopicNotFoundError, match="missing"):
            pool.apply(exec, (code_missing,))
        with pytest.raises(tidelog.StorageError) as caught:
            pool.apply(exec, (code_file,))
    assert caught.value.errno == errno.EEXIST


def test_file_errors_of_the_python_layer_are_storage_errors(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t")
        for kind in ("groups", "work_queues"):
            (tmp_path / kind).mkdir(exist_ok=True)
            (tmp_path / kind / "t").write_bytes(b"not a directory")
        with pytest.raises(tidelog.StorageError) as consumer_error:
            store.consumer("t", group="g")
        with pytest.raises(tidelog.StorageError) as queue_error:
            store.work_queue("t", group="q")
    for caught in (consumer_error, queue_error):
        assert caught.value.errno in (errno.EEXIST, errno.ENOTDIR)
        assert str(tmp_path) in caught.value.filename


def test_the_cli_shows_a_storage_error_as_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    out = subprocess.run(
        [sys.executable, "-m", "tidelog", "create", "t", "--dir", str(tmp_path / "file")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr == f"tidelog: error: {tmp_path / 'file'}: create directory: File exists\n"
