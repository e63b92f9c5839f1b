"""Fault injection: the core's file I/O fails as a real disk does (a full disk, EIO, a short
write, a failed fdatasync), and nothing acknowledged is lost, nothing half-written is ever
read, and the store works again once the fault is gone (for a failed sync: after a reopen,
since a retried sync could report success for pages the kernel dropped)."""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tidelog
from tidelog import _core

SEGMENT = 64 << 10


@pytest.fixture(autouse=True)
def _no_faults_left() -> Iterator[None]:
    _core._clear_faults()
    yield
    _core._clear_faults()


def _open(path: Path, **kwargs: object) -> tidelog.Store:
    return tidelog.open(path, segment_bytes=SEGMENT, max_message_bytes=4096, **kwargs)  # type: ignore[arg-type]


def _assert_os_error(exc: BaseException, code: int) -> None:
    assert isinstance(exc, OSError), repr(exc)
    assert isinstance(exc, tidelog.TidelogError), repr(exc)
    assert exc.errno == code, repr(exc)


def _values(store: tidelog.Store, name: str = "t") -> list[bytes]:
    return [(m.value or b"") for m in store.topic(name).read(0)]


def _fill_until_roll_fails(topic: tidelog.Topic, acked: list[bytes]) -> int:
    """Appends 1 KB values until one fails; returns the failures' count (0 or 1)."""
    for _ in range(200):
        v = b"x" * 1000 + b"%d" % len(acked)
        try:
            assert topic.append(v, partition=0) == (0, len(acked))
        except OSError as e:
            _assert_os_error(e, errno.ENOSPC)
            return 1
        acked.append(v)
    return 0


def test_a_full_disk_at_roll_raises_enospc_and_loses_nothing(tmp_path: Path) -> None:
    acked: list[bytes] = []
    with _open(tmp_path / "s") as store:
        topic = store.create_topic("t")
        # The disk is full when the segment must roll: the new segment cannot be allocated.
        _core._inject_fault("allocate", ".log", errno=errno.ENOSPC, times=1)
        assert _fill_until_roll_fails(topic, acked) == 1
        assert _values(store) == acked
        # Space is back: the roll succeeds and appends continue at the next offset.
        for i in range(100):
            v = b"after %d" % i
            assert topic.append(v, partition=0) == (0, len(acked))
            acked.append(v)
        assert _values(store) == acked
    with _open(tmp_path / "s") as store:
        assert _values(store) == acked


def test_a_roll_that_cannot_be_undone_stops_the_partition_until_a_reopen(tmp_path: Path) -> None:
    """The trimmed active segment cannot grow back either (another process took the space):
    nothing may be written through the mapping past the file's end, so the partition
    refuses appends; a reopen recovers and nothing acknowledged is lost."""
    acked: list[bytes] = []
    with _open(tmp_path / "s") as store:
        topic = store.create_topic("t")
        _core._inject_fault("allocate", ".log", errno=errno.ENOSPC, times=2)
        assert _fill_until_roll_fails(topic, acked) == 1
        with pytest.raises(OSError) as refused:
            topic.append(b"refused", partition=0)
        _assert_os_error(refused.value, errno.EIO)
        assert _values(store) == acked
    with _open(tmp_path / "s") as store:
        assert _values(store) == acked
        assert store.topic("t").append(b"after", partition=0) == (0, len(acked))


def test_a_failed_fdatasync_is_never_retried_into_a_success(tmp_path: Path) -> None:
    with _open(tmp_path / "s", fsync="always") as store:
        topic = store.create_topic("t")
        acked = [b"a", b"b"]
        for v in acked:
            topic.append(v, partition=0)
        _core._inject_fault("sync", ".log", errno=errno.EIO, times=1)
        with pytest.raises(OSError) as failed:
            topic.append(b"unknown outcome", partition=0)
        _assert_os_error(failed.value, errno.EIO)
        # The fault is used up, but the kernel may have dropped the pages it could not
        # write: no later append or sync of this partition may report success.
        for _ in range(3):
            with pytest.raises(OSError) as again:
                topic.append(b"refused", partition=0)
            _assert_os_error(again.value, errno.EIO)
        with pytest.raises(OSError):
            topic.append_batch([b"refused"] * 3, partition=0)
        with pytest.raises(OSError):
            store.close()
    with _open(tmp_path / "s", fsync="always") as store:
        values = _values(store)
        # The failed append's outcome is unknown; nothing refused afterwards is there.
        assert values in (acked, [*acked, b"unknown outcome"])
        topic = store.topic("t")
        assert topic.append(b"c", partition=0) == (0, len(values))
        assert _values(store) == [*values, b"c"]


def test_a_failed_background_sync_stops_the_partition(tmp_path: Path) -> None:
    with _open(tmp_path / "s", fsync="interval", fsync_interval_ms=5) as store:
        topic = store.create_topic("t")
        topic.append(b"first", partition=0)
        _core._inject_fault("sync", ".log", errno=errno.EIO, times=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                topic.append(b"more", partition=0)
            except OSError as e:
                _assert_os_error(e, errno.EIO)
                break
            assert time.monotonic() < deadline, "the background sync never reported the fault"
            time.sleep(0.002)
        with pytest.raises(OSError):
            topic.append(b"refused", partition=0)
        with pytest.raises(OSError):
            store.close()
    with _open(tmp_path / "s") as store:
        values = _values(store)
        assert values[0] == b"first"
        assert b"refused" not in values
        assert set(values[1:]) <= {b"more"}


def test_a_short_write_of_a_large_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    lengths = np.full(400, 100, dtype=np.int64)  # 40 KB: written with pwrite
    first = bytes(range(100)) * 400
    second = b"s" * 40_000
    with _open(tmp_path / "s") as store:
        topic = store.create_topic("t")
        topic.append(b"before", partition=0)
        _core._inject_fault("write", ".log", errno=errno.ENOSPC, short=True)
        with pytest.raises(OSError) as failed:
            topic.append_batch(first, lengths=lengths, partition=0)
        _assert_os_error(failed.value, errno.ENOSPC)
        assert topic.end_offset(0) == 1
        # The half-written batch was never published: the next one takes its place.
        assert topic.append(b"small", partition=0) == (0, 1)
        assert topic.append_batch(second, lengths=lengths, partition=0) == (0, 2)
    with _open(tmp_path / "s") as store:
        values = _values(store)
        assert values == [b"before", b"small", *[b"s" * 100] * 400]


def test_unreadable_producer_snapshots_fall_back_to_the_log(tmp_path: Path) -> None:
    with _open(tmp_path / "s") as store:
        store.create_topic("t")
        with store.producer(name="p") as producer:
            for i in range(300):
                producer.send("t", b"%d" % i + b"y" * 900, partition=0)
            producer.flush()
        assert store.topic("t").end_offset(0) == 300
    _core._inject_fault("read", ".snapshot", errno=errno.EIO, times=None)
    with _open(tmp_path / "s") as store:
        with store.producer(name="p") as producer:
            for i in range(300, 310):
                producer.send("t", b"%d" % i, partition=0)
            producer.flush()
        values = _values(store)
        assert len(values) == 310
        assert [v[: len(b"%d" % i)] for i, v in enumerate(values)] == [
            b"%d" % i for i in range(310)
        ]


def test_fault_hook_rejects_bad_arguments() -> None:
    with pytest.raises(tidelog.InvalidConfigError, match="unknown fault operation"):
        _core._inject_fault("explode")
    with pytest.raises(tidelog.InvalidConfigError, match="errno"):
        _core._inject_fault("write", errno=0)


def test_a_producer_whose_sync_failed_stops_and_reports_it(tmp_path: Path) -> None:
    with _open(tmp_path / "s", fsync="always") as store:
        store.create_topic("t")
        producer = store.producer(name="p")
        producer.send("t", b"a", partition=0)
        producer.flush()
        _core._inject_fault("sync", ".log", errno=errno.EIO, times=1)
        producer.send("t", b"b", partition=0)
        with pytest.raises(tidelog.TidelogError):
            producer.flush(timeout=30)
        with pytest.raises(tidelog.TidelogError):
            producer.send("t", b"c", partition=0)
            producer.flush(timeout=30)
        with pytest.raises(tidelog.TidelogError):
            producer.close()
        with pytest.raises(OSError):
            store.close()
    with _open(tmp_path / "s", fsync="always") as store:
        values = _values(store)
        assert values in ([b"a"], [b"a", b"b"])
        with store.producer(name="p") as producer:
            producer.send("t", b"d", partition=0)
            producer.flush()
        assert _values(store) == [*values, b"d"]


def test_a_producer_whose_writer_panics_reports_it_instead_of_hanging(tmp_path: Path) -> None:
    # A panic stands in for any bug that stops the writer thread: `flush()` without a
    # timeout, a blocked `send` and `close` must all return (with the error), not wait
    # forever for a thread that is gone.
    with _open(tmp_path / "s", fsync="always") as store:
        store.create_topic("t")
        producer = store.producer(buffer_messages=16)
        producer.send("t", b"a", partition=0)
        producer.flush()
        _core._inject_fault("sync", ".log", times=1, panic=True)
        producer.send("t", b"b", partition=0)
        with pytest.raises(tidelog.TidelogError, match="writer thread panicked"):
            producer.flush()
        with pytest.raises(tidelog.TidelogError, match="writer thread panicked"):
            for _ in range(100):  # more than the buffer holds: would block without the error
                producer.send("t", b"c", partition=0)
        with pytest.raises(tidelog.TidelogError, match="writer thread panicked"):
            producer.close()
        _core._clear_faults()
        # The store itself is still usable; the producer's unwritten messages are not there.
        store.topic("t").append(b"d", partition=0)
    with _open(tmp_path / "s") as store:
        assert _values(store)[0] == b"a"
        assert _values(store)[-1] == b"d"
