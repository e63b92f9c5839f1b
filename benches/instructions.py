#!/usr/bin/env python3
"""Instructions per message of the hot paths, counted by valgrind's callgrind.

Usage: ``python benches/instructions.py [KIND ...]`` (every kind by default)

Timed runs of these paths spread by 10-20% on a shared 2-core VM; instruction counts do not.
Each kind runs twice under callgrind, with ``SMALL`` and ``LARGE`` messages, and the main
thread's difference is divided by the difference in messages: what one more message costs
the calling thread, start-up and other threads (the producer's writer) left out. Needs
``valgrind`` on the PATH (Debian: ``apt-get install valgrind``).

Producing to one partition: the sends from a coroutine (the sync one too, so that all pay
the same loop), into a buffer large enough that nothing waits; the appends from a plain loop:

* ``sync``: ``Producer.send(topic, value)``;
* ``nowait``: ``tidelog.aio.Producer.send_nowait(topic, value)``, no await;
* ``await``: ``await tidelog.aio.Producer.send(topic, value)``;
* ``append``: ``Topic.append(value)``.

The three sends move between runs (``sync`` 1,485-2,027 on one build): depending on how
valgrind schedules the threads, some of the writing (``write_groups``, ``encode_batch``) is
counted on the main thread. Compare the medians of several runs of them.

Consuming ``LARGE`` messages appended first (by both runs, so the appends cancel out), one
message per call, as a consumer that keeps up with its producer does:

* ``read``: ``Topic.read_batch(0, offset, max_messages=1)`` and ``values()``;
* ``poll``: a group member's ``poll(1, 0)`` (committing what the previous one returned) and
  the message's ``value``;
* ``iterate``: ``for message in topic.read(0, 0)`` and each ``value``.
"""

from __future__ import annotations

import asyncio
import itertools
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
WRITES = ("sync", "nowait", "await", "append")
READS = ("read", "poll", "iterate")
KINDS = WRITES + READS


def child(kind: str, count: int, directory: str) -> None:
    """Sends or reads ``count`` messages of 100 bytes the ``kind`` way, then exits at once."""
    value = os.urandom(100)
    store = tidelog.open(directory, fsync="never")
    topic = store.create_topic("t", partitions=1)
    if kind in READS:
        for _ in range(LARGE):
            topic.append(value)
        read(kind, store, topic, count)
    elif kind == "append":
        for _ in range(count):
            topic.append(value)
    else:
        produce(kind, store, count, value)
    # No flush or close: their writes would land on this thread and be counted.
    os._exit(0)


def read(kind: str, store: tidelog.Store, topic: tidelog.Topic, count: int) -> None:
    """Reads ``count`` of the messages of ``topic``, one per call, the ``kind`` way."""
    if kind == "read":
        read_batch, offset = topic.read_batch, 0
        for _ in range(count):
            batch = read_batch(0, offset, max_messages=1)
            offset = batch.next_offset
            [v for v in batch.values()]
    elif kind == "poll":
        consumer = store.consumer("t", group="g", start="earliest")
        poll = consumer.poll
        for _ in range(count):
            [m.value for m in poll(1, 0)]
    else:
        for message in itertools.islice(topic.read(0, 0), count):
            _ = message.value


def produce(kind: str, store: tidelog.Store, count: int, value: bytes) -> None:
    """Sends ``count`` messages the ``kind`` way, with a producer."""
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
