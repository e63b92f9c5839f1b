"""Objects the application still holds while the store recycles or releases what is behind
them (version 2: trust).

``Job`` and ``Message`` objects come from free lists, a roll releases the sealed segment's
mappings on a background thread, and ``async for`` hands out fetched messages straight from
the synchronous member's deque. None of that may change what a held object shows or what
acknowledging it does, and a forked child must not take the parent's fetched messages.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import tidelog


def test_jobs_held_across_free_list_churn_keep_their_message_and_their_lock(
    store: tidelog.Store,
) -> None:
    # Every seventh job is kept unacknowledged (with its value and message) while thousands
    # of others are made, acked and dropped: the kept ones still show their own message,
    # their acks succeed, and no job comes twice or goes missing.
    topic = store.create_topic("jobs")
    n = 5_000
    for i in range(n):
        topic.append(b"job %d" % i, key=b"k%d" % i)
    kept: list[tuple[tidelog.Job, bytes | None, tidelog.Message]] = []
    handed: list[int] = []
    with store.work_queue("jobs", group="w", lock_timeout=60.0) as queue:
        for job in queue.jobs(idle_timeout=0):
            handed.append(job.offset)
            if job.offset % 7 == 0:
                kept.append((job, job.value, job.message))
            else:
                queue.ack(job)
        gc.collect()
        assert sorted(handed) == list(range(n))
        for job, value, message in kept:
            i = job.offset
            assert value == job.value == message.value == b"job %d" % i
            assert job.message is message and message.key == b"k%d" % i
            assert job.delivery_count == 1
            queue.ack(job)
        queue.flush()
        assert queue.stats()["acked"] == n
    with store.work_queue("jobs", group="w") as again:
        assert list(again.jobs(idle_timeout=0)) == []


def test_a_value_buffer_outlives_rolls_and_the_release_of_its_segment(tmp_path: Path) -> None:
    # A zero-copy view of the active segment is held while the segment fills, is sealed
    # (its active mappings released on the background thread), and is deleted by
    # retention: the view keeps showing the bytes it showed.
    with tidelog.open(tmp_path / "store") as store:
        topic = store.create_topic("t", segment_bytes=4096, retention_bytes=8192)
        for i in range(20):
            topic.append(b"first %02d" % i)
        buf, bounds = topic.read_batch(0, 0, max_messages=20).value_buffer()
        view = memoryview(buf)
        expected = b"".join(b"first %02d" % i for i in range(20))
        assert bytes(view) == expected and list(bounds)[-1] == len(expected)
        del buf
        for i in range(2_000):
            topic.append(b"%04d" % i + b"." * 60)
        topic.enforce_retention()
        assert topic.start_offset(0) > 20, "the viewed segment is gone"
        gc.collect()
        assert bytes(view) == expected
        view.release()


FORKED_ASYNC_FOR = r"""
import asyncio, os, sys
import tidelog, tidelog.aio

async def main(path):
    async with tidelog.aio.open(path) as store:
        topic = await store.create_topic("t")
        for i in range(10):
            topic.append(b"%d" % i)
        consumer = await store.consumer("t", group="g")
        it = aiter(consumer)
        assert (await anext(it)).offset == 0  # the other nine wait in the fetched deque
        pid = os.fork()
        if pid == 0:
            async def child():
                try:
                    m = await anext(it)
                except tidelog.StoreClosedError:
                    return 0
                print("child took", m.offset, flush=True)
                return 1
            os._exit(asyncio.run(child()))
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status), flush=True)
        print("parent takes", [(await anext(it)).offset for _ in range(9)], flush=True)
        await consumer.close()
        async with store.consumer("t", group="g") as again:
            print("committed", await again.committed(), flush=True)

asyncio.run(main(sys.argv[1]))
"""


def test_a_forked_child_cannot_take_what_async_for_fetched(tmp_path: Path) -> None:
    # async for takes fetched messages from the member's deque without a call; in a child
    # forked after the fetch it must raise as every other call there does, and the parent
    # goes on with all of them.
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FORKED_ASYNC_FOR), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "child status 0" in proc.stdout, proc.stdout + proc.stderr
    assert f"parent takes {list(range(1, 10))}" in proc.stdout, proc.stdout
    assert "committed {0: 10}" in proc.stdout, proc.stdout
