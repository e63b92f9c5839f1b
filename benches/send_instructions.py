#!/usr/bin/env python3
"""Instructions per message of the producers' sends, counted by valgrind's callgrind.

Usage: ``python benches/send_instructions.py [sync|nowait|await ...]``

Timed runs of the sends spread by 10-20% on a shared 2-core VM; instruction counts do not.
Each kind runs twice under callgrind, with ``SMALL`` and ``LARGE`` sends to one partition
from a coroutine (the sync one too, so that both pay the same loop), into a buffer large
enough that nothing waits, and the main thread's difference is divided by the difference in
sends: what one more message costs the sending thread, start-up and the writer thread left
out. Needs ``valgrind`` on the PATH (Debian: ``apt-get install valgrind``).

* ``sync``: ``Producer.send(topic, value)``;
* ``nowait``: ``tidelog.aio.Producer.send_nowait(topic, value)``, no await;
* ``await``: ``await tidelog.aio.Producer.send(topic, value)``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tidelog
import tidelog.aio

SMALL, LARGE = 20_000, 70_000
KINDS = ("sync", "nowait", "await")


def child(kind: str, count: int, directory: str) -> None:
    """Sends ``count`` messages of 100 bytes the ``kind`` way, then exits at once."""
    value = os.urandom(100)
    store = tidelog.open(directory, fsync="never")
    store.create_topic("t", partitions=1)
    loop = asyncio.new_event_loop()
    aio = loop.run_until_complete(tidelog.aio.Store(store).producer(buffer_messages=10_000_000))
    sync = store.producer(buffer_messages=10_000_000)

    async def plain(send: Callable[[str, bytes], Any]) -> None:
        for _ in range(count):
            send("t", value)

    async def awaited(send: Callable[[str, bytes], Any]) -> None:
        for _ in range(count):
            await send("t", value)

    if kind == "sync":
        loop.run_until_complete(plain(sync.send))
    elif kind == "nowait":
        loop.run_until_complete(plain(aio.send_nowait))
    else:
        loop.run_until_complete(awaited(aio.send))
    # No flush or close: their writes would land on this thread and be counted.
    os._exit(0)


def main_thread_instructions(kind: str, count: int, out: Path) -> int:
    """Runs the child under callgrind (its store next to ``out``); its main thread's count."""
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--separate-threads=yes",
            sys.executable,
            __file__,
            "--child",
            kind,
            str(count),
            f"{out}-store",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    text = Path(f"{out}-01").read_text(encoding="utf-8")
    found = re.search(r"^summary: (\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no summary line in {out}-01")
    return int(found.group(1))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]), argv[3])
        return
    kinds = argv or list(KINDS)
    for kind in kinds:
        if kind not in KINDS:
            raise SystemExit(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    with tempfile.TemporaryDirectory() as scratch:
        for kind in kinds:
            small = main_thread_instructions(kind, SMALL, Path(scratch) / f"{kind}-small")
            large = main_thread_instructions(kind, LARGE, Path(scratch) / f"{kind}-large")
            print(f"{kind:7} {(large - small) / (LARGE - SMALL):8.0f} instructions per message")


if __name__ == "__main__":
    main(sys.argv[1:])
