"""Reference implementations the tidelog figures are compared with, in the same run.

* :class:`PyLog`: the log a Python programmer writes without tidelog: length-prefixed records
  (``struct.pack("<I", len(value)) + value``) appended to a buffered file, one offset per
  record, read back by parsing the file in chunks.
* :func:`os_write_file` / :func:`readinto_file`: the page-cache bandwidth of plain
  ``os.write`` to a new file and of ``readinto`` from a cached file.
* :func:`map_every_file`: the floor of any reopen of a memory-mapped store: list the store,
  then open, ``fstat`` and ``mmap`` every file in it (no validation at all).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO

_PREFIX = struct.Struct("<I")
_pack = _PREFIX.pack
_unpack_from = _PREFIX.unpack_from
_PREFIX_BYTES = _PREFIX.size


class PyLog:
    """A pure-Python append-only log of length-prefixed records in one buffered file.

    It has the same contract as ``Topic.append``: each call appends one record and returns
    its offset. Like tidelog with ``fsync="never"`` it does not fsync; unlike tidelog it
    keeps up to one buffer (8 KiB) of records in the process until :meth:`flush`.
    """

    __slots__ = ("_file", "_next", "_write")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file = open(path, "ab")  # noqa: SIM115 - closed by close()/__exit__
        self._write = self._file.write
        self._next = 0

    def append(self, value: bytes) -> int:
        """Appends one record and returns its offset."""
        self._write(_pack(len(value)) + value)
        offset = self._next
        self._next = offset + 1
        return offset

    def append_batch(self, values: list[bytes]) -> int:
        """Appends records with one ``write`` call and returns the first offset."""
        parts: list[bytes] = []
        add = parts.append
        for value in values:
            add(_pack(len(value)))
            add(value)
        self._write(b"".join(parts))
        first = self._next
        self._next = first + len(values)
        return first

    def flush(self) -> None:
        """Hands buffered records to the kernel (page cache)."""
        self._file.flush()

    def close(self) -> None:
        """Flushes and closes the file."""
        self._file.close()

    def __enter__(self) -> PyLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_pylog(
    path: str | os.PathLike[str], chunk_bytes: int = 1 << 20
) -> Iterator[tuple[int, bytes]]:
    """Iterates ``(offset, value)`` over a :class:`PyLog` file, parsing it in chunks.

    A torn last record (a crash mid-write) ends the iteration.
    """
    offset = 0
    with open(path, "rb") as f:
        rest = b""
        while chunk := f.read(chunk_bytes):
            buf = rest + chunk if rest else chunk
            pos, end = 0, len(buf)
            while pos + _PREFIX_BYTES <= end:
                (n,) = _unpack_from(buf, pos)
                stop = pos + _PREFIX_BYTES + n
                if stop > end:
                    break
                yield offset, buf[pos + _PREFIX_BYTES : stop]
                offset += 1
                pos = stop
            rest = buf[pos:]


def os_write_file(path: str | os.PathLike[str], buffer: bytes, count: int) -> None:
    """Writes ``buffer`` ``count`` times to the (new, opened here) file ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write = os.write
        for _ in range(count):
            write(fd, buffer)
    finally:
        os.close(fd)


def readinto_file(path: str | os.PathLike[str], chunk_bytes: int) -> int:
    """Reads the whole file into one reused buffer of ``chunk_bytes``; returns bytes read."""
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as f:
        readinto = f.readinto
        while n := readinto(view):
            total += n
    return total


def map_every_file(root: str | os.PathLike[str]) -> int:
    """Lists ``root`` recursively and opens, stats and maps every non-empty file in it.

    The mappings are dropped again; returns the number of files mapped.
    """
    mapped = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                if size:
                    mmap.mmap(fd, size, prot=mmap.PROT_READ).close()
                    mapped += 1
            finally:
                os.close(fd)
    return mapped


def write_records_inline(file: BinaryIO, value: bytes, count: int) -> None:
    """The bare loop a :class:`PyLog` wraps: ``write(pack(len(v)) + v)`` with no method
    call and no offset bookkeeping, then one flush. A lower bound for any Python-level log.
    """
    write = file.write
    for _ in range(count):
        write(_pack(len(value)) + value)
    file.flush()


def mmap_write_file(path: str | os.PathLike[str], buffer: bytes, count: int) -> None:
    """Copies ``buffer`` ``count`` times into a new file through a shared memory map.

    The file is created and ``posix_fallocate``d to its final size first (as tidelog does
    for a segment), so this is the floor of any writer that appends through ``mmap``:
    the kernel must supply each new page (zero-filled) before the copy lands in it.
    """
    size = len(buffer) * count
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
        with mmap.mmap(fd, size) as m:
            n = len(buffer)
            for i in range(count):
                m[i * n : (i + 1) * n] = buffer
    finally:
        os.close(fd)
