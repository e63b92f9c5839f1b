"""Power-loss images built from an strace log, in the spirit of ALICE (OSDI'14).

A killed process loses nothing that reached the page cache, so kill tests cannot show a
missing fsync. This module takes a directory as a traced process left it (the page cache at
that instant), a copy of the same directory from before the traced run (everything in it
durable: the caller synced), and the trace of the run, and builds one state the disk may
hold after a power loss at the end of the trace:

- ``lose="all"``: nothing that was not synced reached the disk. A name created, renamed or
  removed in a directory persists only if that directory was fsynced afterwards (otherwise
  the directory keeps the entries its last fsync saw); a file's bytes written after its last
  ``fsync``/``fdatasync`` read as zeros, and its size is the size at that sync (a new file
  never synced is empty).
- ``lose="data"``: every name change persisted (the journal committed them) but unsynced
  file data did not: the classic zero-length file after a rename.

Both are states a POSIX file system may leave (ext4 with ``data=writeback``, or any file
system that orders its journal freely). Files are followed as inodes, so a rename moves
one and ``link`` shares one.

The image is of a restarted machine: each partition's control block names another boot
than the one it was last recovered in, so recovery cannot take the page cache for whole.

Limits, on the optimistic side: writes through a mapping (``msync`` names no file) and
``ftruncate``/``fallocate`` are taken as persisted, except that a size never synced is cut.
An inode that only the trace's own removals or replacements would bring back, and that
the pre-run copy does not hold, cannot be restored; it is listed in ``Image.unrestorable``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

TRACED = (
    "openat,creat,close,write,pwrite64,ftruncate,fallocate,fsync,fdatasync,sync_file_range,"
    "rename,renameat,renameat2,link,linkat,unlink,unlinkat,mkdir,mkdirat,rmdir,msync"
)
"""The system calls the model needs: every name change, data write and sync."""

_LINE = re.compile(r"^(?:(\d+)\s+)?(?:[\d:.]+\s+)?(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def strace_command(log: Path, argv: list[str]) -> list[str]:
    """The command that runs ``argv`` under strace, following threads, logging to ``log``."""
    return ["strace", "-f", "-qq", "-e", f"trace={TRACED}", "-o", str(log), *argv]


def strace_works() -> bool:
    """True when strace is installed and may trace a child here (no ptrace restriction)."""
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-qq", "-e", "trace=none", "true"], capture_output=True)
    return probe.returncode == 0


@dataclass
class _Inode:
    is_dir: bool
    # The path of this inode in the pre-run copy, if it was there.
    origin: str | None = None
    # Directories: name -> inode as the last fsync of the directory saw them.
    durable: dict[str, _Inode] = field(default_factory=dict)
    # Files: size at the last sync, and byte ranges written since.
    synced_size: int = 0
    size: int = 0
    dirty: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Image:
    """What :func:`build_image` produced."""

    path: Path
    unrestorable: list[str]
    dropped: list[str]
    """Names present when the trace ended that the image does not have."""


class _Model:
    def __init__(self, root: Path, before: Path) -> None:
        self.root = str(root)
        self.before = before
        self.tree: dict[str, _Inode] = {}
        self.children: dict[int, dict[str, _Inode]] = {}
        self.fds: dict[int, tuple[str, _Inode]] = {}
        self.positions: dict[int, int] = {}
        self.top = self._load(before, "")

    def _load(self, path: Path, rel: str) -> _Inode:
        if path.is_dir():
            node = _Inode(is_dir=True, origin=rel)
            names = {p.name: self._load(p, f"{rel}/{p.name}") for p in sorted(path.iterdir())}
            self.children[id(node)] = dict(names)
            node.durable = dict(names)
            return node
        size = path.stat().st_size
        return _Inode(is_dir=False, origin=rel, synced_size=size, size=size)

    # Names: paths inside the root are handled, everything else is ignored.
    def _split(self, path: str) -> tuple[_Inode, str] | None:
        path = os.path.normpath(path)
        if path == self.root or not path.startswith(self.root + "/"):
            return None
        parts = path[len(self.root) + 1 :].split("/")
        node = self.top
        for part in parts[:-1]:
            child = self.children.get(id(node), {}).get(part)
            if child is None or not child.is_dir:
                return None
            node = child
        return node, parts[-1]

    def lookup(self, path: str) -> _Inode | None:
        if os.path.normpath(path) == self.root:
            return self.top
        found = self._split(path)
        return None if found is None else self.children[id(found[0])].get(found[1])

    def resolve(self, dirfd: str, path: str) -> str:
        if path.startswith("/") or dirfd == "AT_FDCWD":
            return path
        return os.path.join(self.fds[int(dirfd)][0], path) if int(dirfd) in self.fds else path

    def create(self, path: str, node: _Inode) -> None:
        found = self._split(path)
        if found is not None:
            parent, name = found
            self.children[id(parent)][name] = node
            if node.is_dir:
                self.children.setdefault(id(node), {})

    def remove(self, path: str) -> _Inode | None:
        found = self._split(path)
        if found is None:
            return None
        parent, name = found
        return self.children[id(parent)].pop(name, None)

    def sync(self, node: _Inode) -> None:
        if node.is_dir:
            node.durable = dict(self.children[id(node)])
        else:
            node.synced_size, node.dirty = node.size, []

    def write(self, fd: int, pos: int, count: int) -> None:
        if fd in self.fds and count > 0:
            node = self.fds[fd][1]
            node.dirty.append((pos, pos + count))
            node.size = max(node.size, pos + count)


def _calls(trace: Path) -> list[tuple[str, str, int]]:
    """(name, arguments, result) of each finished call, joining interrupted ones."""
    pending: dict[str, str] = {}
    calls = []
    for raw in trace.read_text(errors="replace").splitlines():
        m = _LINE.match(raw)
        if m is None:
            continue
        pid, rest = m.group(1) or "", m.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"^<\.\.\. \w+ resumed>\s?(.*)$", rest)
        if resumed is not None:
            rest = pending.pop(pid, "") + resumed.group(1)
        call = _CALL.match(rest)
        if call is not None:
            calls.append((call.group(1), call.group(2), int(call.group(3))))
    return calls


def _args(text: str) -> list[str]:
    """Top-level arguments, strings unquoted (paths only: strace prints them whole)."""
    out, depth, current, quoted = [], 0, "", False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            current += c
            if c == "\\":
                current += text[i + 1]
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted, current = True, current + c
        elif c in "[{":
            depth, current = depth + 1, current + c
        elif c in "]}":
            depth, current = depth - 1, current + c
        elif c == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += c
        i += 1
    out.append(current.strip())
    return [
        bytes(m.group(1), "latin-1").decode("unicode_escape")
        if (m := _STRING.fullmatch(a.removesuffix("..."))) is not None
        else a
        for a in out
    ]


def _two_paths(model: _Model, a: list[str], at: bool) -> tuple[str, str]:
    """The source and target of ``rename``/``link`` (``at``: the ``*at`` forms, with fds)."""
    if not at:
        return a[0], a[1]
    return model.resolve(a[0], a[1]), model.resolve(a[2], a[3])


def _replay(model: _Model, trace: Path) -> None:
    for name, text, result in _calls(trace):
        if result < 0:
            continue
        a = _args(text)
        if name in ("openat", "creat"):
            dirfd, path, flags = ("AT_FDCWD", a[0], "O_CREAT|O_TRUNC") if name == "creat" else a[:3]
            path = model.resolve(dirfd, path)
            node = model.lookup(path)
            if node is None and "O_CREAT" in flags:
                node = _Inode(is_dir=False)
                model.create(path, node)
            if node is not None:
                if "O_TRUNC" in flags and not node.is_dir:
                    node.size = 0
                    node.dirty.append((0, 0))
                model.fds[result] = (os.path.normpath(path), node)
                model.positions[result] = 0
        elif name == "close":
            model.fds.pop(int(a[0]), None)
        elif name == "write" and int(a[0]) in model.fds:
            fd = int(a[0])
            model.write(fd, model.positions[fd], result)
            model.positions[fd] += result
        elif name == "pwrite64":
            model.write(int(a[0]), int(a[3]), result)
        elif name in ("fsync", "fdatasync") and int(a[0]) in model.fds:
            model.sync(model.fds[int(a[0])][1])
        elif name in ("ftruncate", "fallocate") and int(a[0]) in model.fds:
            node = model.fds[int(a[0])][1]
            node.size = int(a[1]) if name == "ftruncate" else max(node.size, int(a[2]) + int(a[3]))
        elif name in ("mkdir", "mkdirat"):
            path = a[0] if name == "mkdir" else model.resolve(a[0], a[1])
            model.create(path, _Inode(is_dir=True))
        elif name in ("rename", "renameat", "renameat2"):
            old, new = _two_paths(model, a, at=name != "rename")
            node = model.remove(old)
            if node is not None:
                model.remove(new)
                model.create(new, node)
        elif name in ("link", "linkat"):
            old, new = _two_paths(model, a, at=name == "linkat")
            node = model.lookup(old)
            if node is not None:
                model.create(new, node)
        elif name in ("unlink", "rmdir"):
            model.remove(a[0])
        elif name == "unlinkat":
            model.remove(model.resolve(a[0], a[1]))


def _current_path(model: _Model) -> dict[int, str]:
    paths: dict[int, str] = {}

    def walk(node: _Inode, rel: str) -> None:
        paths.setdefault(id(node), rel)
        for name, child in model.children.get(id(node), {}).items():
            walk(child, f"{rel}/{name}")

    walk(model.top, "")
    return paths


# A partition's control block holds the boot it was last recovered in (docs/FORMAT.md):
# in the image, as after any power loss, that is another boot.
_CONTROL_MAGIC = b"TLCTRL01"
_CONTROL_BOOT = slice(520, 536)


def _forget_boot(f: BinaryIO) -> None:
    f.seek(0)
    if f.read(len(_CONTROL_MAGIC)) == _CONTROL_MAGIC:
        f.seek(_CONTROL_BOOT.start)
        # Not zeros: those mean "no boot recorded", which recovery treats more strictly.
        f.write(b"\xff" * (_CONTROL_BOOT.stop - _CONTROL_BOOT.start))


def build_image(after: Path, before: Path, trace: Path, out: Path, lose: str = "all") -> Image:
    """Writes to ``out`` the state of ``after`` that a power loss may leave.

    Args:
        after: The directory as the traced run left it (its page-cache state).
        before: A copy of the directory from before the run, all of it durable.
        trace: The strace log (run with :func:`strace_command`) of the run on ``after``.
        out: Where the image goes (must not exist).
        lose: ``"all"`` or ``"data"`` (module docs).

    Returns:
        The image, with what it could not restore and what it dropped.
    """
    model = _Model(after.resolve(), before)
    _replay(model, trace)
    now = _current_path(model)
    unrestorable: list[str] = []
    dropped: list[str] = []
    kept: set[int] = set()

    def listing(node: _Inode) -> dict[str, _Inode]:
        return node.durable if lose == "all" else model.children.get(id(node), {})

    def place(node: _Inode, rel: str, dest: Path) -> None:
        kept.add(id(node))
        if node.is_dir:
            dest.mkdir()
            for name, child in sorted(listing(node).items()):
                place(child, f"{rel}/{name}", dest / name)
            return
        source = now.get(id(node))
        if source is not None:
            shutil.copyfile(after / source.lstrip("/"), dest)
        elif node.origin is not None:
            shutil.copyfile(before / node.origin.lstrip("/"), dest)
        else:
            unrestorable.append(rel)
            return
        with open(dest, "r+b") as f:
            for start, end in node.dirty:
                if start < end:
                    f.seek(start)
                    f.write(b"\0" * (end - start))
            f.truncate(node.synced_size)
            _forget_boot(f)

    out.mkdir(parents=True)
    for name, child in sorted(listing(model.top).items()):
        place(child, f"/{name}", out / name)
    for ident, rel in sorted(now.items(), key=lambda kv: kv[1]):
        if ident not in kept and rel:
            dropped.append(rel)
    return Image(out, unrestorable, dropped)
