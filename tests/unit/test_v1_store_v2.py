"""A store written by the first release opens with its offsets and queue state (issue 14).

``tests/fixtures/v1_store.tar.gz`` was written by that release's code (commit 98cd52e, see
``tests/fixtures/make_v1_store.py`` for what it holds): queue files in the first journal
format, group state as JSON, committed offsets of record version 1, and the records the first
increment of work queues kept in ``__work_queues``, which opening the store converts (in the
core) once and then deletes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import tidelog

FIXTURE = Path(__file__).parent.parent / "fixtures" / "v1_store.tar.gz"


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(path, filter="data")
    return path


def _jobs(queue: tidelog.WorkQueue) -> list[tuple[int, int, int]]:
    """Every job the queue hands out now, as (partition, offset, delivery count)."""
    jobs = queue.acquire_many(100, timeout=0)
    queue.ack_many(jobs)
    return sorted((j.partition, j.offset, j.delivery_count) for j in jobs)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "NO_COLOR": "1"},
    )


def test_work_queues_keep_what_was_acknowledged_dead_lettered_and_in_flight(v1_store: Path) -> None:
    with tidelog.open(v1_store) as store:
        for group in ("w", "odd name"):
            with store.work_queue("jobs", group=group) as queue:
                stats = queue.stats()
                assert (stats["acked"], stats["dead_lettered"], stats["in_flight"]) == (4, 1, 3)
                # 0-3 acknowledged, 4 dead-lettered, 5-7 held by the member that died.
                assert _jobs(queue) == [(0, 8, 1), (0, 9, 1)] + [(1, o, 1) for o in range(10)]
        assert store.topic("dead").end_offset(0) == 2


def test_the_first_increments_records_are_converted_once(v1_store: Path) -> None:
    with tidelog.open(v1_store) as store:
        assert "__work_queues" not in store.topics(internal=True)
        assert not (v1_store / "topics" / "__work_queues").exists()
        assert not (v1_store / "work_queues" / "gone" / ".no-legacy").exists()
        with store.work_queue("jobs", group="old") as queue:
            stats = queue.stats()
            assert (stats["acked"], stats["dead_lettered"], stats["in_flight"]) == (4, 1, 1)
            # p0: 0-2 acked, 3 released once, 4 held, 5 dead; p1: 0 handed out twice
            # (lock expired), 1 acked.
            expected = [(0, 3, 2)] + [(0, o, 1) for o in range(6, 10)]
            expected += [(1, 0, 3)] + [(1, o, 1) for o in range(2, 10)]
            assert _jobs(queue) == expected
        # The topic deleted (and created again) since: its queue starts empty.
        with store.work_queue("gone", group="x") as queue:
            assert queue.stats()["acked"] == 0
            assert _jobs(queue) == [(0, 0, 1), (0, 1, 1), (0, 2, 1)]
    with tidelog.open(v1_store) as store, store.work_queue("jobs", group="old") as queue:
        assert queue.stats()["acked"] == 18  # what the first open acknowledged stays
        assert _jobs(queue) == []


def test_committed_offsets_and_groups_are_kept(v1_store: Path) -> None:
    with tidelog.open(v1_store) as store:
        consumer = store.consumer("jobs", group="readers")
        seen: list[tuple[int, int]] = []
        while batch := consumer.poll(max_messages=100, timeout=0.2):
            seen += [(m.partition, m.offset) for m in batch]
        consumer.close()
        assert len(seen) == 13  # 7 of the 20 were committed


def test_verify_accepts_the_store_before_and_after_opening(v1_store: Path) -> None:
    assert _cli("verify", "-q", "-d", v1_store).returncode == 0
    with tidelog.open(v1_store) as store, store.work_queue("jobs", group="w"):
        pass
    result = _cli("verify", "-q", "-d", v1_store)
    assert result.returncode == 0, result.stdout + result.stderr
