"""Takeovers while a member polls in another thread (version 2: trust).

Member a polls in a thread (with one partition it waits and reads in one native call,
``Topic.wait_messages``) while, again and again, its lease is taken from it (as when it
stalls), member b joins, takes partitions, hands out and commits some messages, and leaves,
as messages keep coming. a finds generations it never saw: at-most-once must never hand a
message out twice, at-least-once never lose one. Whatever the timing, the promises hold:
nothing here asserts a timing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import tidelog
from tidelog.consumer import Delivery

ROUNDS = 200


@pytest.mark.parametrize("partitions", [1, 2])
@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once"])
def test_takeovers_while_a_member_polls(
    tmp_path: Path, delivery: Delivery, partitions: int
) -> None:
    with tidelog.open(tmp_path / "store") as store:
        topic = store.create_topic("t", partitions=partitions)
        handed: list[tuple[int, int]] = []
        lock = threading.Lock()
        stop = threading.Event()
        a = store.consumer("t", group="g", delivery=delivery, lease_seconds=30, max_poll_messages=5)

        def poll_a() -> None:
            while not stop.is_set():
                got = a.poll(timeout=0.05)
                with lock:
                    handed.extend((m.partition, m.offset) for m in got)

        thread = threading.Thread(target=poll_a)
        thread.start()
        n = 0

        def append(count: int) -> None:
            nonlocal n
            for _ in range(count):
                topic.append(b"%d" % n, partition=n % partitions)
                n += 1

        try:
            for r in range(ROUNDS):
                append(3)
                if r % 3 == 0:
                    lease = a._membership._lease
                    if lease is not None:
                        a._membership._group.release_lease(*lease)
                b = store.consumer(
                    "t", group="g", delivery=delivery, lease_seconds=30, max_poll_messages=2
                )
                got = b.poll(timeout=0.001)
                with lock:
                    handed.extend((m.partition, m.offset) for m in got)
                append(2)
                b.close()
            # a takes what is left (with every partition, once b is gone for good); the
            # cap only ends a run that lost messages (the assertions below say which).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and thread.is_alive():
                with lock:
                    if len(set(handed)) == n:
                        break
                stop.wait(0.01)
        finally:
            stop.set()
            thread.join()
            a.close()
        counts = Counter(handed)
        if delivery == "at-most-once":
            assert [m for m, c in counts.items() if c > 1] == [], "handed out twice"
        assert len(counts) == n, "never handed out: " + str(
            sorted({(i % partitions, i // partitions) for i in range(n)} - set(counts))
        )
