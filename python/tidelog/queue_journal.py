"""Where a work queue's state lives on disk: a snapshot plus a journal of the changes after it.

The bytes, CRCs, the cross-process lock and the fsyncs belong to the core's state log
(:class:`tidelog._core.StateLog`, ``tidelog_core::statelog``, where the file formats are
documented); this module decides what is in them. Files, in ``<store>/work_queues/<topic>/``
(``<name>`` is the group, hex-escaped as ``~<hex>`` unless it is plain):

- ``<name>.lock``: its lock serializes the members' changes across processes and threads;
- ``<name>.snapshot``: the whole state (:meth:`tidelog.queue_state.QueueState.to_json` as
  UTF-8 JSON) as of generation ``G``, CRC-checked, replaced atomically;
- ``<name>.journal``: CRC-checked records of generation ``G``, each one
  :func:`tidelog.queue_state.encode_record`.

The state is the snapshot with the journal's records applied in order. Once the journal
passes :data:`COMPACT_BYTES`, the member writing to it replaces both with a snapshot of
generation ``G + 1`` and an empty journal (a crash in between loses nothing). So a queue's
state takes at most about ``COMPACT_BYTES`` plus one snapshot on disk, however many messages
pass.

Damage is reported, never turned into redelivered acknowledged jobs: opening a queue (or
``tidelog verify``) raises :class:`~tidelog.CorruptRecordError` naming the file and position.
Only a torn tail (an incomplete last record with nothing valid after it, left by a crash
mid-write) is truncated, and counted (``WorkQueue.stats()["recovery"]``). With
``fsync="always"`` every record is fdatasync-ed before the change it holds counts as made;
with ``"interval"`` the store's background syncer syncs the journal every interval; with
``"never"`` records are in the page cache (they survive the process, not the machine).
Files in the first format (before the core owned them) are converted on first use.
The state the first version of work queues kept in the internal topic ``__work_queues`` is
converted into these files by the core when the store is opened (``tidelog_core::queue_legacy``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from tidelog import _core
from tidelog._core import CorruptRecordError
from tidelog.queue_state import Op, QueueState, decode_record, encode_record

__all__ = [
    "COMPACT_BYTES",
    "QueueFiles",
    "QueueJournal",
    "check_queue",
    "list_queues",
    "queue_files",
    "read_state",
]

#: Journal size that triggers a snapshot (the state on disk stays around this size).
COMPACT_BYTES = 64 << 10


class QueueFiles:
    """The paths of one queue's files (named by the core, as every file of the store)."""

    def __init__(self, store_path: str | os.PathLike[str], topic: str, group: str) -> None:
        self.directory = _core.work_queues_dir(store_path, topic)
        #: The state log's name: the files are ``<name>.lock``, ``.snapshot``, ``.journal``.
        self.name = _core.state_log_name(group)
        self.lock, self.snapshot, self.journal = _core.state_log_files(self.directory, self.name)

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
    return _core.list_work_queues(store_path)


def _load_snapshot(files: QueueFiles, body: bytes | None, partitions: int) -> QueueState:
    """The state a snapshot body holds (an empty state without one)."""
    if body is None:
        return QueueState.empty(partitions)
    try:
        return QueueState.from_json(json.loads(body), partitions)
    except (ValueError, KeyError, TypeError) as e:
        # Its CRC matched: written by a newer version, or a bug.
        raise CorruptRecordError(
            f"work-queue snapshot {files.snapshot} holds no valid state: {e}"
        ) from None


def _apply_records(files: QueueFiles, state: QueueState, records: list[bytes]) -> None:
    for i, payload in enumerate(records):
        try:
            member, ops = decode_record(payload)
            state.apply(member, ops)
        except CorruptRecordError as e:
            where = f"work-queue journal {files.journal}, record {i}"
            raise CorruptRecordError(f"{where}: {e}") from None


def read_state(files: QueueFiles, partitions: int) -> QueueState | None:
    """The queue's current state, read without joining it (None if it has no files).

    Takes the queue's lock shared, so no member writes meanwhile; a torn tail is left alone.

    Raises:
        CorruptRecordError: The state files are damaged (the message names the file).
    """
    if not files.lock.exists():
        return None
    found = _core.read_state_log(files.directory, files.name)
    if found is None:
        return QueueState.empty(partitions)
    _, snapshot, records, _ = found
    state = _load_snapshot(files, snapshot, partitions)
    _apply_records(files, state, records)
    return state


def check_queue(files: QueueFiles) -> tuple[int, int]:
    """Reads and applies every record of a queue's state, for ``tidelog verify``.

    Returns:
        ``(records, torn_bytes)``: the journal's records, and the bytes of a torn tail the
        next member will truncate (not damage: a crash left it).

    Raises:
        CorruptRecordError: The state files are damaged (the message names the file).
    """
    found = _core.read_state_log(files.directory, files.name)
    if found is None:
        return 0, 0
    _, snapshot, records, torn = found
    state = _load_snapshot(files, snapshot, 0)
    _apply_records(files, state, records)
    return len(records), torn


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
        fsync: Literal["never", "always"] = "never",
        core: _core.Store | None = None,
        alive: Callable[[], object] | None = None,
    ) -> None:
        """Opens (creating if needed) the queue's files and loads its state.

        With ``core`` (the store) the journal is synced as the store's ``fsync`` policy
        says; without, as ``fsync`` says. ``alive`` is called before every use of the files and
        raises once the topic was deleted: the files are found by path, and after a deletion
        the path may lead to the queue of a topic created again under the name.
        """
        self.files = files
        self._alive = alive
        self.partitions = partitions
        self.state = QueueState.empty(partitions)
        if core is not None:
            self._log = core.state_log(files.directory, files.name)
        else:
            self._log = _core.StateLog(files.directory, files.name, fsync=fsync)
        try:
            with self.locked():
                pass
        except BaseException:
            self._log.close()
            raise

    @property
    def generation(self) -> int:
        """The generation of the snapshot the journal follows."""
        return self._log.generation

    @property
    def bytes_written(self) -> int:
        """Bytes of records this handle appended (compaction keeps far fewer on disk)."""
        return self._log.bytes_appended

    @property
    def recovery(self) -> dict[str, int]:
        """Torn tails this handle truncated, and the bytes they held."""
        return {"torn_tails": self._log.torn_tails, "bytes_truncated": self._log.bytes_truncated}

    @contextmanager
    def locked(self) -> Iterator[QueueState]:
        """Holds the queue's lock (thread and process) with the state caught up.

        Raises:
            CorruptRecordError: The state files are damaged (nothing is changed).
        """
        if self._alive is not None:
            self._alive()
        reset, snapshot, records = self._log.lock()
        try:
            try:
                if reset:
                    self.state = _load_snapshot(self.files, snapshot, self.partitions)
                _apply_records(self.files, self.state, records)
            except BaseException:
                self._log.invalidate()  # the copy is incomplete: read it all next time
                raise
            yield self.state
        finally:
            self._log.unlock()

    def write(self, member: str, ops: list[Op]) -> None:
        """Appends one record of ``ops`` by ``member`` and applies it.

        Call inside :meth:`locked`. Returns once the record is durable per the fsync policy.
        """
        if not ops:
            return
        size = self._log.append(encode_record(member, ops))
        self.state.apply(member, ops)
        if size >= COMPACT_BYTES:
            self.compact()

    def compact(self) -> None:
        """Writes a snapshot of the state and starts an empty journal (inside :meth:`locked`)."""
        self._log.replace(_snapshot_body(self.state))

    def sync(self) -> None:
        """Makes the journal durable now (for ``fsync="interval"`` at close)."""
        self._log.sync()

    def close(self) -> None:
        """Syncs what the fsync policy deferred and closes the files; idempotent."""
        self._log.close()


def _snapshot_body(state: QueueState) -> bytes:
    return json.dumps(state.to_json(), separators=(",", ":")).encode()
