"""Where a work queue's state lives on disk: a snapshot plus a journal of the changes after it.

Files, in ``<store>/work_queues/<topic>/`` (``<name>`` is the group, hex-escaped as
``~<hex>`` unless it is plain):

- ``<name>.lock``: empty; an exclusive ``flock`` of it serializes the members' changes
  across processes (a thread mutex does it within one process);
- ``<name>.snapshot``: the whole state as of generation ``G`` — 8 bytes magic ``TLWQSNAP``,
  u64 generation, u32 CRC-32 of the rest, then the state as UTF-8 JSON; replaced atomically
  (written to ``.tmp``, fsynced, renamed, directory fsynced);
- ``<name>.journal``: 8 bytes magic ``TLWQJRNL``, u64 generation, then records, each u32
  length, u32 CRC-32 of the payload, payload (see :func:`tidelog.queue_state.encode_record`).

The state is the snapshot with the journal's records applied in order, when both have the
same generation. Once the journal passes :data:`COMPACT_BYTES`, the member writing to it
writes a snapshot of generation ``G + 1`` and then an empty journal of generation ``G + 1``
(each atomically). A crash between the two leaves a journal of generation ``G``, which the
next member ignores (the snapshot already holds it) and replaces. So a queue's state takes
at most about ``COMPACT_BYTES`` plus one snapshot on disk, however many messages pass.

A record is written with one ``pwrite`` while the lock is held, so a reader holding the lock
sees whole records, except after a crash mid-write (or a power loss): the first record whose
length or CRC does not check ends the journal, and a member holding the lock truncates it
there, as the log's recovery truncates a torn tail. With ``fsync="always"`` every record is
fdatasync-ed before the change it holds counts as made; with ``"interval"`` the journal is
fdatasync-ed when a write finds the last sync older than the store's interval; with
``"never"`` records are in the page cache (they survive the process, not the machine).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tidelog._core import CorruptRecordError
from tidelog.groups import _plain
from tidelog.queue_state import Op, QueueState, decode_record, encode_record

__all__ = [
    "COMPACT_BYTES",
    "QueueFiles",
    "QueueJournal",
    "list_queues",
    "queue_files",
    "read_state",
]

#: Journal size that triggers a snapshot (the state on disk stays around this size).
COMPACT_BYTES = 64 << 10
_SNAP_MAGIC = b"TLWQSNAP"
_JOURNAL_MAGIC = b"TLWQJRNL"
_SNAP_HEADER = struct.Struct("<8sQI")
_JOURNAL_HEADER = struct.Struct("<8sQ")
_FRAME = struct.Struct("<II")


class QueueFiles:
    """The paths of one queue's files."""

    def __init__(self, store_path: str | os.PathLike[str], topic: str, group: str) -> None:
        self.directory = Path(store_path) / "work_queues" / topic
        name = group if _plain(group) else "~" + group.encode().hex()
        self.lock = self.directory / f"{name}.lock"
        self.snapshot = self.directory / f"{name}.snapshot"
        self.journal = self.directory / f"{name}.journal"

    def size_bytes(self) -> int:
        """Bytes of the queue's state on disk (snapshot plus journal)."""
        total = 0
        for path in (self.snapshot, self.journal):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total


def queue_files(store_path: str | os.PathLike[str], topic: str, group: str) -> QueueFiles:
    """The files of the queue ``group`` on ``topic``."""
    return QueueFiles(store_path, topic, group)


def list_queues(store_path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every (topic, group) that has a work queue in the store, sorted."""
    root = Path(store_path) / "work_queues"
    found: set[tuple[str, str]] = set()
    if not root.is_dir():
        return []
    for topic_dir in root.iterdir():
        if not topic_dir.is_dir():
            continue
        for f in topic_dir.iterdir():
            if f.suffix not in (".snapshot", ".journal"):
                continue
            name = f.stem
            if name.startswith("~"):
                try:
                    name = bytes.fromhex(name[1:]).decode()
                except ValueError:
                    continue
            found.add((topic_dir.name, name))
    return sorted(found)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replaces ``path`` with ``data``: temp file, fsync, rename, directory fsync."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _load_snapshot(files: QueueFiles, partitions: int) -> tuple[QueueState, int]:
    """The snapshot's state and generation (an empty state of generation 0 if none)."""
    try:
        data = files.snapshot.read_bytes()
    except FileNotFoundError:
        return QueueState.empty(partitions), 0
    if len(data) < _SNAP_HEADER.size:
        raise CorruptRecordError(f"work-queue snapshot {files.snapshot} is truncated")
    magic, generation, crc = _SNAP_HEADER.unpack_from(data, 0)
    body = data[_SNAP_HEADER.size :]
    if magic != _SNAP_MAGIC or zlib.crc32(body) != crc:
        raise CorruptRecordError(f"work-queue snapshot {files.snapshot} is damaged (bad CRC)")
    return QueueState.from_json(json.loads(body), partitions), generation


def _parse(data: bytes, state: QueueState) -> int:
    """Applies the whole records at the start of ``data``; returns the bytes they take."""
    at, n = 0, len(data)
    while at + _FRAME.size <= n:
        length, crc = _FRAME.unpack_from(data, at)
        end = at + _FRAME.size + length
        if end > n:
            break
        payload = data[at + _FRAME.size : end]
        if zlib.crc32(payload) != crc:
            break
        member, ops = decode_record(payload)
        state.apply(member, ops)
        at = end
    return at


def read_state(files: QueueFiles, partitions: int) -> QueueState | None:
    """The queue's current state, read without joining it (None if it has no files).

    Takes the queue's lock shared, so no member writes meanwhile; a torn tail is left alone.
    """
    if not files.lock.exists():
        return None
    fd = os.open(files.lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        state, generation = _load_snapshot(files, partitions)
        try:
            data = files.journal.read_bytes()
        except FileNotFoundError:
            return state
        if len(data) >= _JOURNAL_HEADER.size:
            magic, jgen = _JOURNAL_HEADER.unpack_from(data, 0)
            if magic == _JOURNAL_MAGIC and jgen == generation:
                _parse(data[_JOURNAL_HEADER.size :], state)
        return state
    finally:
        os.close(fd)


class QueueJournal:
    """One member's handle on a queue's state files, and its copy of the state.

    Use :meth:`locked` around every read-modify-write of the state: it takes the lock and
    applies what other members wrote since; :meth:`write` then appends a record and applies it.
    """

    def __init__(
        self,
        files: QueueFiles,
        partitions: int,
        *,
        fsync: str = "never",
        fsync_interval_s: float = 1.0,
        legacy: Callable[[], QueueState | None] | None = None,
        alive: Callable[[], object] | None = None,
    ) -> None:
        """Opens (creating if needed) the queue's files and loads its state.

        ``legacy`` gives the state to start a new queue (no snapshot, no journal) from, if
        any: it is written as the first snapshot (see :mod:`tidelog.queue_legacy`).
        ``alive`` is called before every use of the files and raises once the topic was
        deleted: the files are found by path, and after a deletion the path may lead to the
        queue of a topic created again under the name.
        """
        self.files = files
        self._legacy = legacy
        self._alive = alive
        self.partitions = partitions
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.state = QueueState.empty(partitions)
        self.generation = 0
        self._fd = -1
        self._inode = -1
        self._pos = 0
        self._last_sync = time.monotonic()
        #: Bytes of records this handle appended (compaction keeps far fewer on disk).
        self.bytes_written = 0
        self._mutex = threading.Lock()
        files.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o644)
        with self.locked():
            pass

    @contextmanager
    def locked(self) -> Iterator[QueueState]:
        """Holds the queue's lock (thread and process) with the state caught up."""
        with self._mutex:
            if self._alive is not None:
                self._alive()
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._catch_up()
                yield self.state
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        try:
            inode = os.stat(self.files.journal).st_ino
        except FileNotFoundError:
            inode = -2  # never equal to an open journal's: reload (it is created again)
        if inode != self._inode:
            self._reload()
        else:
            self._read_new()

    def _reload(self) -> None:
        """Loads the snapshot and (re)opens the journal of its generation."""
        state, generation = _load_snapshot(self.files, self.partitions)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            fd = os.open(self.files.journal, os.O_RDWR)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            head = os.pread(fd, _JOURNAL_HEADER.size, 0)
            magic, jgen = (
                _JOURNAL_HEADER.unpack(head) if len(head) == _JOURNAL_HEADER.size else (b"", -1)
            )
            if magic != _JOURNAL_MAGIC or jgen != generation:
                if magic == _JOURNAL_MAGIC and jgen > generation:
                    os.close(fd)
                    raise CorruptRecordError(
                        f"work-queue journal {self.files.journal} (generation {jgen}) is newer "
                        f"than its snapshot (generation {generation})"
                    )
                # Left by a crash between writing a snapshot and its new journal (the
                # snapshot holds all of it), or by a crash while creating the journal.
                os.close(fd)
                fd = -1
        if fd < 0:
            if generation == 0 and self._legacy is not None and not self.files.snapshot.exists():
                imported = self._legacy()
                if imported is not None:
                    # Carried over from the first version's records: the first snapshot.
                    state, generation = imported, 1
                    self._write_snapshot(state, generation)
            _write_atomic(self.files.journal, _JOURNAL_HEADER.pack(_JOURNAL_MAGIC, generation))
            fd = os.open(self.files.journal, os.O_RDWR)
        self._fd = fd
        self._inode = os.fstat(fd).st_ino
        self._pos = _JOURNAL_HEADER.size
        self.state = state
        self.generation = generation
        self._read_new()

    def _read_new(self) -> None:
        size = os.fstat(self._fd).st_size
        if size <= self._pos:
            return
        data = os.pread(self._fd, size - self._pos, self._pos)
        used = _parse(data, self.state)
        self._pos += used
        if used < len(data):
            # A torn or damaged tail: nobody is writing (we hold the lock), so it was left
            # by a crash. Cut it off so the next record follows the last whole one.
            os.ftruncate(self._fd, self._pos)

    def write(self, member: str, ops: list[Op]) -> None:
        """Appends one record of ``ops`` by ``member`` and applies it.

        Call inside :meth:`locked`. Returns once the record is durable per the fsync policy.
        """
        if not ops:
            return
        payload = encode_record(member, ops)
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        os.pwrite(self._fd, frame, self._pos)
        self._pos += len(frame)
        self.bytes_written += len(frame)
        if self.fsync == "always" or (
            self.fsync == "interval" and time.monotonic() - self._last_sync >= self.fsync_interval_s
        ):
            os.fdatasync(self._fd)
            self._last_sync = time.monotonic()
        self.state.apply(member, ops)
        if self._pos >= COMPACT_BYTES:
            self.compact()

    def compact(self) -> None:
        """Writes a snapshot of the state and starts an empty journal (inside :meth:`locked`)."""
        generation = self.generation + 1
        self._write_snapshot(self.state, generation)
        _write_atomic(self.files.journal, _JOURNAL_HEADER.pack(_JOURNAL_MAGIC, generation))
        os.close(self._fd)
        self._fd = os.open(self.files.journal, os.O_RDWR)
        self._inode = os.fstat(self._fd).st_ino
        self._pos = _JOURNAL_HEADER.size
        self.generation = generation

    def _write_snapshot(self, state: QueueState, generation: int) -> None:
        body = json.dumps(state.to_json(), separators=(",", ":")).encode()
        header = _SNAP_HEADER.pack(_SNAP_MAGIC, generation, zlib.crc32(body))
        _write_atomic(self.files.snapshot, header + body)

    def sync(self) -> None:
        """Fdatasyncs the journal (for ``fsync="interval"`` at close)."""
        with self._mutex:
            if self._fd >= 0:
                os.fdatasync(self._fd)
                self._last_sync = time.monotonic()

    def close(self) -> None:
        """Closes the files; idempotent."""
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
