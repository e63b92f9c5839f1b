"""At-most-once members in threads stop (close, pause, seek) while holding fetched messages.

In each round a worker's member hands out a few messages of a fetch (the rest stays in its
buffer, committed past); often a second member joins and takes some of its partitions
before it looks again, and sometimes fetches from them at once; then the first stops: it
closes, or pauses a partition first, or seeks to where it is. The other workers do the same
meanwhile. A stale member's give-back races the new owner's claim of the partition under
the group's lock: whichever comes first, no message is handed out twice. Nothing here
asserts a timing.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import tidelog

PARTITIONS = 3
WORKERS = 3
ROUNDS = 30
MESSAGES = 900


def test_at_most_once_give_backs_race_takeovers(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "store") as store:
        topic = store.create_topic("t", partitions=PARTITIONS)
        for i in range(MESSAGES):
            topic.append(b"%d" % i, partition=i % PARTITIONS)
        handed: list[tuple[int, int]] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def member(rng: random.Random) -> tidelog.Consumer:
            return store.consumer(
                "t",
                group="g",
                delivery="at-most-once",
                max_poll_messages=rng.randint(2, 12),
                lease_seconds=30,
            )

        def take(c: tidelog.Consumer, most: int, got: list[tuple[int, int]]) -> None:
            for _ in range(most):
                m = c.next_nowait()
                if m is None:
                    return
                got.append((m.partition, m.offset))

        def work(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(ROUNDS):
                    got: list[tuple[int, int]] = []
                    first = member(rng)
                    take(first, rng.randint(1, 6), got)
                    second = member(rng) if rng.random() < 0.7 else None  # unseen by first
                    if second is not None and rng.random() < 0.5:
                        take(second, 1, got)  # claims what it took over
                        if rng.random() < 0.5:  # and hands out all it fetched
                            take(second, len(second.ready_messages or ()), got)
                    stop = rng.choice(["close", "pause", "seek"])
                    assigned = first.assignment()
                    if stop != "close" and assigned:
                        p = rng.choice(assigned)
                        if stop == "pause":
                            first.pause(p)
                        else:
                            first.seek(p, first.position(p))
                        take(first, rng.randint(0, 3), got)
                    first.close()
                    if second is not None:
                        take(second, rng.randint(0, 6), got)
                        second.close()
                    with lock:
                        handed.extend(got)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with store.consumer("t", group="g", delivery="at-most-once") as last:
            while got := last.poll(max_messages=500, timeout=0):
                handed.extend((m.partition, m.offset) for m in got)
    twice = [m for m, n in Counter(handed).items() if n > 1]
    assert twice == [], f"handed out twice: {sorted(twice)}"
    assert set(handed) <= {(i % PARTITIONS, i // PARTITIONS) for i in range(MESSAGES)}
