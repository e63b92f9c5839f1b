"""Embedded (in-process) alternatives: what a Python programmer picks today without tidelog.

Each adapter names the durability of its mode. Settings the benchmark changes from the
library's defaults to match tidelog's level are named in :meth:`durability`.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, ClassVar

from benches.peers.base import (
    Adapter,
    Budget,
    NotApplicable,
    Sender,
    Timed,
    budget_note,
    chunks,
    deadline_after,
    dist_version,
    loop_with_budget,
    optional_import,
)

_PREFIX = struct.Struct("<I")
_pack = _PREFIX.pack
_unpack_from = _PREFIX.unpack_from


# -- a naive length-prefixed file ------------------------------------------------------------


class NaiveFileAdapter(Adapter):
    """``os.write(fd, pack("<I", len(v)) + v)`` to one file opened with O_APPEND."""

    key = "naive-file"
    label = "naive length-prefixed file"
    kind = "embedded"
    levels = ("never", "always")

    def version(self) -> str:
        return "(os.write)"

    def durability(self) -> str:
        if self.level == "always":
            return "os.write + os.fdatasync per append / per batch"
        return "os.write per append / per batch: page cache (survives a process crash)"

    def notes(self) -> list[str]:
        return [
            "read: `readinto` 1 MiB chunks, parse prefixes, one `bytes` per value; consume: "
            "the same, writing the next offset to an offsets file (`os.pwrite`) per batch.",
            "latency: the reader polls the file (`os.pread` from its position).",
        ]

    def _file(self, slot: str) -> str:
        return str(self.path(slot) / "log")

    def _open(self, slot: str) -> int:
        return os.open(self._file(slot), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        fd = self._open(slot)
        sync = self.level == "always"

        def put(v: bytes) -> None:
            os.write(fd, _pack(len(v)) + v)
            if sync:
                os.fdatasync(fd)

        return self.put_each(values, put, close=lambda: os.close(fd))

    def append_batch(self, slot: str, values: Sequence[bytes]) -> Timed:
        fd = self._open(slot)
        batch, sync = self.spec.batch, self.level == "always"

        def run() -> int:
            write, pack = os.write, _pack
            for part in chunks(values, batch):
                parts: list[bytes] = []
                add = parts.append
                for v in part:
                    add(pack(len(v)))
                    add(v)
                write(fd, b"".join(parts))
                if sync:
                    os.fdatasync(fd)
            return len(values)

        return Timed(run=run, close=lambda: os.close(fd))

    @staticmethod
    def _records(path: str, chunk_bytes: int = 1 << 20) -> Generator[list[bytes], None, None]:
        """Yields the complete records of the file, one list per chunk read."""
        buf = bytearray(chunk_bytes)
        view = memoryview(buf)
        rest = b""
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                data = rest + view[:n] if rest else bytes(view[:n])
                out: list[bytes] = []
                add = out.append
                pos, end = 0, len(data)
                while pos + 4 <= end:
                    (size,) = _unpack_from(data, pos)
                    stop = pos + 4 + size
                    if stop > end:
                        break
                    add(data[pos + 4 : stop])
                    pos = stop
                rest = data[pos:]
                yield out

    def read_all(self, slot: str, count: int) -> Timed:
        path = self._file(slot)

        def run() -> int:
            return sum(len(part) for part in self._records(path))

        return Timed(run=run)

    def consume_group(self, slot: str, count: int) -> Timed:
        path = self._file(slot)
        ofd = os.open(str(self.path(slot) / "offsets"), os.O_WRONLY | os.O_CREAT, 0o644)
        batch, sync = self.spec.batch, self.level == "always"

        def commit(offset: int) -> None:
            os.pwrite(ofd, struct.pack("<q", offset), 0)
            if sync:
                os.fdatasync(ofd)

        def run() -> int:
            done = pending = 0
            for part in self._records(path):
                for _v in part:
                    done += 1
                    pending += 1
                    if pending == batch:
                        commit(done)
                        pending = 0
            if pending:
                commit(done)
            return done

        return Timed(run=run, close=lambda: os.close(ofd))

    def latency_sender(self, slot: str) -> Sender:
        fd = self._open(slot)
        sync = self.level == "always"

        def send(v: bytes) -> None:
            os.write(fd, _pack(len(v)) + v)
            if sync:
                os.fdatasync(fd)

        return Sender(send=send, close=lambda: os.close(fd))

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        fd = os.open(os.path.join(config["path"], "log"), os.O_RDONLY)
        try:
            ready()
            pos, got, rest = 0, 0, b""
            while got < count and time.monotonic() < deadline:
                data = os.pread(fd, 1 << 20, pos)
                if not data:
                    time.sleep(poll_s)
                    continue
                pos += len(data)
                buf = rest + data if rest else data
                out: list[bytes] = []
                p, end = 0, len(buf)
                while p + 4 <= end:
                    (size,) = _unpack_from(buf, p)
                    if p + 4 + size > end:
                        break
                    out.append(buf[p + 4 : p + 4 + size])
                    p += 4 + size
                rest = buf[p:]
                if out:
                    got += len(out)
                    yield out
        finally:
            os.close(fd)


# -- a plain sqlite3 table -------------------------------------------------------------------


class SqliteTableAdapter(Adapter):
    """A table ``log(offset INTEGER PRIMARY KEY, value BLOB)`` with the stdlib ``sqlite3``."""

    key = "sqlite3"
    label = "sqlite3 table"
    kind = "embedded"
    levels = ("never", "always")
    weaker: ClassVar[dict[str, str]] = {
        "append": "one COMMIT per 1000 rows: a row is durable only at the next commit",
    }

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def durability(self) -> str:
        if self.level == "always":
            return "WAL, synchronous=FULL: fsync per commit (commit per 1000 rows)"
        return (
            "WAL, synchronous=NORMAL, commit per 1000 rows: page cache at each commit "
            "(rows since the last commit are lost in a crash)"
        )

    def notes(self) -> list[str]:
        return [
            "append: one `INSERT` per message, `COMMIT` every 1000 rows; batch: `executemany` "
            "+ `COMMIT` per batch; read: `SELECT value ORDER BY offset` + `fetchmany`.",
            "consume: `SELECT ... WHERE offset >= ? LIMIT batch`, then an `offsets` row "
            "upserted and committed per batch; latency: one commit per message, the reader "
            "polls `SELECT ... WHERE offset > ?`.",
        ]

    def _connect(self, slot: str) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path(slot) / "log.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.level == "always" else "NORMAL"
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute("CREATE TABLE IF NOT EXISTS log (offset INTEGER PRIMARY KEY, value BLOB)")
        conn.execute("CREATE TABLE IF NOT EXISTS offsets (grp TEXT PRIMARY KEY, next INTEGER)")
        return conn

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        conn = self._connect(slot)
        timed = Timed(run=lambda: 0, close=conn.close)
        sql = "INSERT INTO log (value) VALUES (?)"

        def run() -> int:
            execute = conn.execute
            deadline = deadline_after(self.spec.budget_s)
            done = 0
            for part in chunks(values, 1000):
                execute("BEGIN")
                for v in part:
                    execute(sql, (v,))
                execute("COMMIT")
                done += len(part)
                if time.monotonic() > deadline and done < len(values):
                    timed.notes.append(budget_note(done, len(values), self.spec.budget_s))
                    break
            return done

        timed.run = run
        return timed

    def append_batch(self, slot: str, values: Sequence[bytes]) -> Timed:
        conn = self._connect(slot)
        batch = self.spec.batch

        def run() -> int:
            for part in chunks(values, batch):
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO log (value) VALUES (?)", [(v,) for v in part])
                conn.execute("COMMIT")
            return len(values)

        return Timed(run=run, close=conn.close)

    def read_all(self, slot: str, count: int) -> Timed:
        conn = self._connect(slot)
        batch = self.spec.batch

        def run() -> int:
            cur = conn.execute("SELECT value FROM log ORDER BY offset")
            done = 0
            while rows := cur.fetchmany(batch):
                done += len([r[0] for r in rows])
            return done

        return Timed(run=run, close=conn.close)

    def consume_group(self, slot: str, count: int) -> Timed:
        conn = self._connect(slot)
        batch = self.spec.batch

        def run() -> int:
            row = conn.execute("SELECT next FROM offsets WHERE grp = 'g'").fetchone()
            nxt, done = (row[0] if row else 1), 0
            select = "SELECT offset, value FROM log WHERE offset >= ? ORDER BY offset LIMIT ?"
            while True:
                rows = conn.execute(select, (nxt, batch)).fetchall()
                if not rows:
                    break
                _values = [r[1] for r in rows]
                nxt = rows[-1][0] + 1
                conn.execute("BEGIN")
                conn.execute("INSERT OR REPLACE INTO offsets (grp, next) VALUES ('g', ?)", (nxt,))
                conn.execute("COMMIT")
                done += len(rows)
            return done

        return Timed(run=run, close=conn.close)

    def latency_sender(self, slot: str) -> Sender:
        conn = self._connect(slot)

        def send(v: bytes) -> None:
            conn.execute("INSERT INTO log (value) VALUES (?)", (v,))  # autocommit

        return Sender(send=send, close=conn.close)

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        conn = sqlite3.connect(os.path.join(config["path"], "log.db"), isolation_level=None)
        try:
            select = "SELECT offset, value FROM log WHERE offset > ? ORDER BY offset LIMIT 1000"
            ready()
            last = got = 0
            while got < count and time.monotonic() < deadline:
                rows = conn.execute(select, (last,)).fetchall()
                if not rows:
                    time.sleep(poll_s)
                    continue
                last = rows[-1][0]
                got += len(rows)
                yield [r[1] for r in rows]
        finally:
            conn.close()


# -- persist-queue ---------------------------------------------------------------------------


class PersistQueueFileAdapter(Adapter):
    """``persistqueue.Queue``: pickled items in chunk files plus an ``info`` file."""

    key = "persistqueue-file"
    label = "persist-queue Queue (file)"
    kind = "embedded"
    #: Its only fsync is at a chunk-file roll; it has no per-put fsync mode.
    levels = ("never",)
    CHUNK = 1_000_000

    def check(self) -> None:
        optional_import("persistqueue", "persist-queue")

    def version(self) -> str:
        return dist_version("persist-queue")

    def durability(self) -> str:
        return (
            "page cache: each put writes + flushes the item and rewrites the info file "
            f"(chunksize={self.CHUNK:,}: no chunk-roll fsync in the run; the default 100 "
            "fsyncs every 100 puts)"
        )

    def notes(self) -> list[str]:
        return [
            "append: `put(v)` (pickle serializer, the default); batch: n/a (no batch API).",
            "read: `get()` without `task_done()` (no non-destructive read; progress not "
            "persisted); consume: `get()` x batch then `task_done()` x batch (the info file "
            "is saved once per batch).",
            "latency: n/a: the queue's head/tail state lives in the writer's memory; another "
            "process only sees what was there when it opened the queue.",
        ]

    def _queue(self, slot: str) -> Any:
        pq = optional_import("persistqueue", "persist-queue")
        return pq.Queue(str(self.path(slot)), chunksize=self.CHUNK, tempdir=str(self.path(slot)))

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        return self.put_each(values, self._queue(slot).put)

    def fill(self, slot: str, values: Sequence[bytes]) -> None:
        q = self._queue(slot)
        # Untimed, and put() rewrites the info file each time (~0.4 ms here): write it once
        # at the end instead. The files left are the same as after len(values) puts.
        save = q._saveinfo
        q._saveinfo = lambda: None
        try:
            for v in values:
                q.put(v)
        finally:
            q._saveinfo = save
            save()

    def read_all(self, slot: str, count: int) -> Timed:
        q = self._queue(slot)
        timed = Timed(run=lambda: 0)

        def run() -> int:
            get, done, budget = q.get_nowait, 0, Budget(self.spec.budget_s, count, timed)
            while done < count:
                for _ in range(min(1000, count - done)):
                    get()
                done += min(1000, count - done)
                if budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def consume_group(self, slot: str, count: int) -> Timed:
        q = self._queue(slot)
        batch = self.spec.batch
        timed = Timed(run=lambda: 0)

        def run() -> int:
            done, budget = 0, Budget(self.spec.budget_s, count, timed)
            while done < count:
                n = min(batch, count - done)
                for _ in range(n):
                    q.get_nowait()
                for _ in range(n):
                    q.task_done()
                done += n
                if budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def latency_sender(self, slot: str) -> Sender:
        raise NotApplicable("n/a (single process: queue state is in the writer's memory)")


class PersistQueueSqliteAckAdapter(Adapter):
    """``persistqueue.SQLiteAckQueue``: one SQLite row per item with an ack status."""

    key = "persistqueue-sqliteack"
    label = "persist-queue SQLiteAckQueue"
    kind = "embedded"
    levels = ("never", "always")

    def check(self) -> None:
        optional_import("persistqueue", "persist-queue")

    def version(self) -> str:
        return f"{dist_version('persist-queue')} (SQLite {sqlite3.sqlite_version})"

    def durability(self) -> str:
        if self.level == "always":
            return "WAL, synchronous=FULL (its default): fsync per put / get / ack commit"
        return (
            "WAL, synchronous=NORMAL (set by the benchmark; its default FULL fsyncs every "
            "commit): page cache at each put / get / ack commit"
        )

    def notes(self) -> list[str]:
        return [
            "append: `put(v)` (one commit each); batch: n/a (no batch API); read: `queue()` "
            "(every row, non-destructive).",
            "consume: `get(raw=True)` + `ack(id=...)` per message (two commits per message: "
            "no batch ack); latency: the reader polls `get(block=False)` + `ack`.",
            "why consume slows down: each `get()` runs `WHERE _id > 0 AND status < 2 ORDER BY "
            "_id LIMIT 1`, which steps over every row already acked (O(consumed) per get).",
        ]

    @staticmethod
    def _queue(path: str, level: str, fast: bool = False) -> Any:
        pq = optional_import("persistqueue", "persist-queue")
        q = pq.SQLiteAckQueue(path)
        sync = "OFF" if fast else ("FULL" if level == "always" else "NORMAL")
        # One connection when multithreading=False: _putter is _getter.
        q._putter.execute(f"PRAGMA synchronous={sync}")
        return q

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        q = self._queue(str(self.path(slot)), self.level)
        return self.put_each(values, q.put, close=q.close)

    def fill(self, slot: str, values: Sequence[bytes]) -> None:
        q = self._queue(str(self.path(slot)), self.level, fast=True)
        for v in values:
            q.put(v)
        q.close()

    def read_all(self, slot: str, count: int) -> Timed:
        q = self._queue(str(self.path(slot)), self.level)

        def run() -> int:
            return len([row["data"] for row in q.queue()])

        return Timed(run=run, close=q.close)

    def consume_group(self, slot: str, count: int) -> Timed:
        q = self._queue(str(self.path(slot)), self.level)
        timed = Timed(run=lambda: 0, close=q.close)

        def run() -> int:
            get, ack = q.get, q.ack
            budget = Budget(self.spec.budget_s, count, timed)
            done = 0
            while done < count:
                for _ in range(min(1000, count - done)):
                    item = get(block=False, raw=True)
                    ack(id=item["pqid"])
                    done += 1
                if budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def latency_sender(self, slot: str) -> Sender:
        q = self._queue(str(self.path(slot)), self.level)
        return Sender(send=q.put, close=q.close)

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        pq = optional_import("persistqueue", "persist-queue")
        q = cls._queue(config["path"], config["level"])
        try:
            ready()
            got = 0
            while got < count and time.monotonic() < deadline:
                try:
                    item = q.get(block=False, raw=True)
                except pq.Empty:
                    time.sleep(poll_s)
                    continue
                q.ack(id=item["pqid"])
                got += 1
                yield [item["data"]]
        finally:
            q.close()


# -- litequeue -------------------------------------------------------------------------------


class LiteQueueAdapter(Adapter):
    """``litequeue.LiteQueue``: a SQLite table of messages with a status column."""

    key = "litequeue"
    label = "litequeue"
    kind = "embedded"
    levels = ("never", "always")

    def check(self) -> None:
        optional_import("litequeue")

    def version(self) -> str:
        return f"{dist_version('litequeue')} (SQLite {sqlite3.sqlite_version})"

    def durability(self) -> str:
        if self.level == "always":
            return "WAL, synchronous=FULL (set by the benchmark): fsync per commit"
        return "WAL, synchronous=NORMAL (its default): page cache at each commit"

    def notes(self) -> list[str]:
        return [
            "append: `put(v)` (autocommit); batch: `put` x batch inside `with "
            "q.transaction()`; read: `pop()` (no read-all API: each pop locks the message "
            "in its own transaction).",
            "consume: `pop()` x batch, then `done(id)` x batch in one transaction; latency: "
            "the reader polls `pop()` + `done()`.",
            "why read and consume are slow: each `pop()` selects the first ready message "
            "`ORDER BY message_id` through the status index plus a temporary B-tree sort of "
            "every ready message (its query plan), so a pop costs O(queue depth).",
        ]

    @staticmethod
    def _open(path: str, level: str) -> Any:
        lq = optional_import("litequeue")
        q = lq.LiteQueue(os.path.join(path, "queue.db"))
        if level == "always":
            q.conn.execute("PRAGMA synchronous=FULL")
        return q

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        q = self._open(str(self.path(slot)), self.level)
        return self.put_each(values, q.put, close=q.close)

    def append_batch(self, slot: str, values: Sequence[bytes]) -> Timed:
        q = self._open(str(self.path(slot)), self.level)
        batch = self.spec.batch

        timed = Timed(run=lambda: 0, close=q.close)

        def run() -> int:
            put, done, budget = q.put, 0, Budget(self.spec.budget_s, len(values), timed)
            for part in chunks(values, batch):
                with q.transaction():
                    for v in part:
                        put(v)
                done += len(part)
                if budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def read_all(self, slot: str, count: int) -> Timed:
        q = self._open(str(self.path(slot)), self.level)

        timed = Timed(run=lambda: 0, close=q.close)

        def run() -> int:
            pop, done, budget = q.pop, 0, Budget(self.spec.budget_s, count, timed)
            while (m := pop()) is not None:
                _ = m.data
                done += 1
                if done % 10 == 0 and budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def consume_group(self, slot: str, count: int) -> Timed:
        q = self._open(str(self.path(slot)), self.level)
        batch = self.spec.batch
        timed = Timed(run=lambda: 0, close=q.close)

        def run() -> int:
            deadline = deadline_after(self.spec.budget_s)
            done = 0
            stop = False
            while done < count and not stop:
                ids = []
                for _ in range(batch):
                    m = q.pop()
                    if m is None:
                        break
                    ids.append(m.message_id)
                    # A pop can take many ms on a deep queue: commit a partial batch and stop.
                    if len(ids) % 10 == 0 and time.monotonic() > deadline:
                        stop = True
                        break
                if not ids:
                    break
                with q.transaction():
                    for i in ids:
                        q.done(i)
                done += len(ids)
                if (stop or time.monotonic() > deadline) and done < count:
                    timed.notes.append(budget_note(done, count, self.spec.budget_s))
                    break
            return done

        timed.run = run
        return timed

    def latency_sender(self, slot: str) -> Sender:
        q = self._open(str(self.path(slot)), self.level)
        return Sender(send=q.put, close=q.close)

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        q = cls._open(config["path"], config["level"])
        try:
            ready()
            got = 0
            while got < count and time.monotonic() < deadline:
                m = q.pop()
                if m is None:
                    time.sleep(poll_s)
                    continue
                q.done(m.message_id)
                got += 1
                yield [m.data]
        finally:
            q.close()


# -- diskcache.Deque -------------------------------------------------------------------------


class DiskcacheDequeAdapter(Adapter):
    """``diskcache.Deque``: a persistent deque on diskcache's SQLite-backed ``Cache``."""

    key = "diskcache"
    label = "diskcache.Deque"
    kind = "embedded"
    levels = ("never", "always")

    def check(self) -> None:
        optional_import("diskcache")

    def version(self) -> str:
        return f"{dist_version('diskcache')} (SQLite {sqlite3.sqlite_version})"

    def durability(self) -> str:
        if self.level == "always":
            return "WAL, sqlite_synchronous=2 (FULL, set by the benchmark): fsync per commit"
        return "WAL, sqlite_synchronous=1 (NORMAL, its default): page cache at each commit"

    def notes(self) -> list[str]:
        return [
            "append: `append(v)` (a transaction each); batch: `extend(batch)` inside `with "
            "d.transact()`; read: iteration (non-destructive).",
            "consume: `popleft()` x batch inside `with d.transact()` (commit per batch); "
            "latency: the reader polls `popleft()`.",
        ]

    @staticmethod
    def _open(path: str, level: str) -> Any:
        dc = optional_import("diskcache")
        sync = 2 if level == "always" else 1
        cache = dc.Cache(path, eviction_policy="none", sqlite_synchronous=sync)
        return dc.Deque.fromcache(cache)

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        d = self._open(str(self.path(slot)), self.level)
        return self.put_each(values, d.append, close=d.cache.close)

    def append_batch(self, slot: str, values: Sequence[bytes]) -> Timed:
        d = self._open(str(self.path(slot)), self.level)
        batch = self.spec.batch

        timed = Timed(run=lambda: 0, close=d.cache.close)

        def run() -> int:
            done, budget = 0, Budget(self.spec.budget_s, len(values), timed)
            for part in chunks(values, batch):
                with d.transact():
                    d.extend(part)
                done += len(part)
                if budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def read_all(self, slot: str, count: int) -> Timed:
        d = self._open(str(self.path(slot)), self.level)
        timed = Timed(run=lambda: 0, close=d.cache.close)

        def run() -> int:
            done, budget = 0, Budget(self.spec.budget_s, count, timed)
            for _v in d:
                done += 1
                if done % 1000 == 0 and budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def consume_group(self, slot: str, count: int) -> Timed:
        d = self._open(str(self.path(slot)), self.level)
        batch = self.spec.batch

        timed = Timed(run=lambda: 0, close=d.cache.close)

        def run() -> int:
            done, budget = 0, Budget(self.spec.budget_s, count, timed)
            popleft = d.popleft
            while done < count:
                n = min(batch, count - done)
                with d.transact():
                    for _ in range(n):
                        popleft()
                done += n
                if budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def latency_sender(self, slot: str) -> Sender:
        d = self._open(str(self.path(slot)), self.level)
        return Sender(send=d.append, close=d.cache.close)

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        d = cls._open(config["path"], config["level"])
        try:
            ready()
            got = 0
            while got < count and time.monotonic() < deadline:
                try:
                    v = d.popleft()
                except IndexError:
                    time.sleep(poll_s)
                    continue
                got += 1
                yield [v]
        finally:
            d.cache.close()


# -- queuelib --------------------------------------------------------------------------------


class QueuelibFifoAdapter(Adapter):
    """``queuelib.FifoDiskQueue``: length-prefixed records in chunk files (Scrapy's queue)."""

    key = "queuelib"
    label = "queuelib FifoDiskQueue"
    kind = "embedded"
    levels = ("never",)
    weaker: ClassVar[dict[str, str]] = {
        "append": "the queue index is saved only by close()",
    }

    def check(self) -> None:
        optional_import("queuelib")

    def version(self) -> str:
        return dist_version("queuelib")

    def durability(self) -> str:
        return (
            "page cache for the data (os.write per push), but the queue index (info.json) "
            "is written only by close(): a crash before close() loses the queue"
        )

    def notes(self) -> list[str]:
        return [
            "append: `push(v)`, then `close()` (which saves the index) inside the timing; "
            "batch: n/a (no batch API); read: `pop()` (destructive; no read API).",
            "consume: n/a (no ack or commit: progress is saved only by close()); latency: "
            "n/a (the index lives in the writer's memory).",
        ]

    def _queue(self, slot: str) -> Any:
        ql = optional_import("queuelib")
        return ql.FifoDiskQueue(str(self.path(slot) / "q"))

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        q = self._queue(slot)
        timed = Timed(run=lambda: 0)

        def run() -> int:
            done = loop_with_budget(values, q.push, self.spec.budget_s, timed)
            q.close()
            return done

        timed.run = run
        return timed

    def fill(self, slot: str, values: Sequence[bytes]) -> None:
        q = self._queue(slot)
        for v in values:
            q.push(v)
        q.close()

    def read_all(self, slot: str, count: int) -> Timed:
        q = self._queue(slot)

        timed = Timed(run=lambda: 0, close=q.close)

        def run() -> int:
            pop, done, budget = q.pop, 0, Budget(self.spec.budget_s, count, timed)
            while pop() is not None:
                done += 1
                if done % 1000 == 0 and budget.over(done):
                    break
            return done

        timed.run = run
        return timed

    def consume_group(self, slot: str, count: int) -> Timed:
        raise NotApplicable("n/a (no ack/commit: progress saved only by close())")

    def latency_sender(self, slot: str) -> Sender:
        raise NotApplicable("n/a (single process: queue index in the writer's memory)")
