"""A delayed release is held back for at least its whole delay.

Deadlines are kept in whole milliseconds of the wall clock (members in other processes
compare them), and a release made 0.9 ms into a millisecond came back up to 0.9 ms before
its delay was over (found as a flaky assertion of test_workqueue.py under load).
"""

from __future__ import annotations

import time

import pytest
import tidelog


def test_a_delayed_release_is_not_handed_out_before_its_delay_even_within_a_millisecond(
    store: tidelog.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_topic("jobs").append(b"job")
    queue = store.work_queue("jobs", group="w")
    job = queue.acquire(timeout=0)
    assert job is not None
    now = [1_700_000_000.0009]  # 0.9 ms into a millisecond
    monkeypatch.setattr(time, "time", lambda: now[0])
    queue.release(job, delay=0.5)
    now[0] += 0.4995  # half a millisecond short of the delay
    assert queue.acquire(timeout=0) is None
    now[0] += 0.0006  # past it
    again = queue.acquire(timeout=0)
    assert again is not None and again.offset == job.offset
    queue.ack(again)
    monkeypatch.undo()
    queue.close()
