"""Work queues: acquire, ack, release, reject, extend, lock expiry, dead letters, durability."""

from __future__ import annotations

import struct
import tempfile
import threading
import time
from pathlib import Path

import pytest
import tidelog
from finalization import LONG_FINALIZATION, ends_cleanly
from hypothesis import given, settings
from hypothesis import strategies as st
from tidelog.queue_journal import queue_files, read_state
from tidelog.workqueue import COUNT_HEADER, REASON_HEADER


def _fill(store: tidelog.Store, n: int, partitions: int = 1, name: str = "jobs") -> None:
    topic = store.create_topic(name, partitions=partitions)
    for i in range(n):
        topic.append(b"job-%d" % i, key=b"k%d" % i, headers={"h": b"v"}, partition=i % partitions)


def test_acquire_and_ack_each_message_once(store: tidelog.Store) -> None:
    _fill(store, 10, partitions=2)
    with store.work_queue("jobs", group="w") as queue:
        seen = []
        while (job := queue.acquire(timeout=0)) is not None:
            assert isinstance(job, tidelog.Job)
            assert job.delivery_count == 1
            assert job.message.value == job.value
            assert job.key is not None and job.headers == {"h": b"v"}
            assert job.topic == "jobs" and job.timestamp_ms > 0
            assert repr(job) == f"<tidelog.Job jobs/{job.partition}@{job.offset} delivery_count=1>"
            seen.append(job.value or b"")
            queue.ack(job)
        assert sorted(seen) == sorted(b"job-%d" % i for i in range(10))
        stats = queue.stats()
        assert stats["acked"] == 10 and stats["backlog"] == 0 and stats["in_flight"] == 0
        assert stats["partitions"] == {
            0: {"acked_below": 5, "end_offset": 5, "in_flight": 0, "backlog": 0, "lag": 0},
            1: {"acked_below": 5, "end_offset": 5, "in_flight": 0, "backlog": 0, "lag": 0},
        }
        assert "jobs" in repr(queue)


def test_iteration_blocks_for_new_messages(store: tidelog.Store) -> None:
    topic = store.create_topic("jobs")

    def later() -> None:
        time.sleep(0.1)
        topic.append(b"late")

    threading.Thread(target=later).start()
    with store.work_queue("jobs", group="w") as queue:
        job = next(iter(queue))
        assert job.value == b"late"
        queue.ack(job)
        assert queue.acquire(timeout=0.05) is None


def test_a_held_message_goes_to_one_member_only(store: tidelog.Store) -> None:
    _fill(store, 1)
    a = store.work_queue("jobs", group="w")
    b = store.work_queue("jobs", group="w")
    job = a.acquire(timeout=0)
    assert job is not None
    assert b.acquire(timeout=0) is None
    with pytest.raises(tidelog.LockLostError):
        b.ack(job)
    a.ack(job)
    with pytest.raises(tidelog.LockLostError):
        a.ack(job)  # acknowledged once only


def test_release_redelivers_with_the_count_kept(store: tidelog.Store) -> None:
    _fill(store, 1)
    with store.work_queue("jobs", group="w") as queue:
        job = queue.acquire(timeout=0)
        assert job is not None
        queue.release(job)
        with pytest.raises(tidelog.LockLostError):
            queue.release(job)
        again = queue.acquire(timeout=0)
        assert again is not None and again.offset == job.offset and again.delivery_count == 2
        queue.ack(again)


def test_release_with_a_delay_holds_the_message_back_from_every_member(
    store: tidelog.Store,
) -> None:
    _fill(store, 2)
    a = store.work_queue("jobs", group="w")
    b = store.work_queue("jobs", group="w")
    first = a.acquire(timeout=0)
    assert first is not None
    released = time.monotonic()
    a.release(first, delay=0.5)
    with pytest.raises(tidelog.LockLostError):
        a.ack(first)  # released: no longer held by anyone
    # Waiting for its delay: backlog, not in flight.
    counts = store.stats()["work_queues"]["w"]["jobs"]
    assert (counts["in_flight"], counts["backlog"]) == (0, 2)
    # Before the delay ends, members get the other message and then nothing.
    other = b.acquire(timeout=0)
    assert other is not None and other.offset != first.offset
    b.ack(other)
    assert a.acquire(timeout=0.1) is None and b.acquire(timeout=0) is None
    # A member waiting for work is woken when the delay is over, not earlier.
    again = b.acquire(timeout=5.0)
    assert again is not None and again.offset == first.offset
    assert time.monotonic() - released >= 0.5
    assert again.delivery_count == 2
    b.ack(again)
    a.close()
    b.close()


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), "1"])
def test_release_delay_is_checked(store: tidelog.Store, delay: object) -> None:
    _fill(store, 1)
    with store.work_queue("jobs", group="w") as queue:
        job = queue.acquire(timeout=0)
        assert job is not None
        error = TypeError if isinstance(delay, str) else tidelog.InvalidConfigError
        with pytest.raises(error, match="delay"):
            queue.release(job, delay=delay)  # type: ignore[arg-type]
        queue.ack(job)  # still held: nothing changed


def test_expired_lock_makes_the_message_available(store: tidelog.Store) -> None:
    _fill(store, 1)
    a = store.work_queue("jobs", group="w", lock_timeout=0.2)
    b = store.work_queue("jobs", group="w", lock_timeout=0.2)
    job = a.acquire(timeout=0)
    assert job is not None
    assert b.acquire(timeout=0) is None
    taken = b.acquire(timeout=2.0)  # waits for the lock to expire
    assert taken is not None and taken.offset == job.offset and taken.delivery_count == 2
    with pytest.raises(tidelog.LockLostError):
        a.ack(job)  # too late: b holds it now
    b.ack(taken)


def test_extend_keeps_a_long_job(store: tidelog.Store) -> None:
    _fill(store, 1)
    a = store.work_queue("jobs", group="w", lock_timeout=0.2)
    b = store.work_queue("jobs", group="w", lock_timeout=0.2)
    job = a.acquire(timeout=0)
    assert job is not None
    for _ in range(4):
        a.extend(job, 0.2)
        assert b.acquire(timeout=0.1) is None
    a.ack(job)
    assert b.acquire(timeout=0.3) is None


def test_max_deliveries_sends_a_poison_message_to_the_dead_letter_topic(
    store: tidelog.Store,
) -> None:
    _fill(store, 2)
    with store.work_queue("jobs", group="w", max_deliveries=3, dead_letter="jobs.dead") as queue:
        counts = []
        while (job := queue.acquire(timeout=0)) is not None and job.offset == 0:
            counts.append(job.delivery_count)
            queue.release(job)  # the poison message fails every time
        assert counts == [1, 2, 3]
        assert job is not None and job.offset == 1
        queue.ack(job)
        assert queue.stats()["dead_lettered"] == 1
        assert queue.stats()["partitions"][0]["acked_below"] == 2
    dead = list(store.topic("jobs.dead").read(0, 0))
    assert len(dead) == 1
    assert dead[0].value == b"job-0" and dead[0].key == b"k0"
    assert dead[0].headers[REASON_HEADER] == b"max_deliveries"
    assert dead[0].headers[COUNT_HEADER] == b"3"
    assert dead[0].headers["tidelog.dead_letter.offset"] == b"0"
    assert dead[0].headers["h"] == b"v"


def test_reject_dead_letters_at_once(store: tidelog.Store) -> None:
    _fill(store, 1)
    with store.work_queue("jobs", group="w", dead_letter="dl") as queue:
        job = queue.acquire(timeout=0)
        assert job is not None
        queue.reject(job)
        with pytest.raises(tidelog.LockLostError):
            queue.reject(job)
        assert queue.acquire(timeout=0) is None
    (dead,) = store.topic("dl").read(0, 0)
    assert dead.headers[REASON_HEADER] == b"rejected" and dead.headers[COUNT_HEADER] == b"1"


def test_without_dead_letter_topic_messages_are_archived_and_counted(
    store: tidelog.Store,
) -> None:
    _fill(store, 2)
    with store.work_queue("jobs", group="w", max_deliveries=1) as queue:
        job = queue.acquire(timeout=0)
        assert job is not None
        queue.reject(job)
        job = queue.acquire(timeout=0)
        assert job is not None
        queue.release(job)  # its one delivery is used up
        assert queue.acquire(timeout=0) is None
        assert queue.stats()["archived"] == 2 and queue.stats()["dead_lettered"] == 0
    assert store.topics() == ["jobs"]


def test_state_survives_reopening(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "s") as store:
        _fill(store, 5)
        queue = store.work_queue("jobs", group="w")
        for _ in range(3):
            job = queue.acquire(timeout=0)
            assert job is not None
            queue.ack(job)
        held = queue.acquire(timeout=0)
        assert held is not None and held.offset == 3
        # store.close() closes the queue, which releases what it holds
    assert queue.closed
    with tidelog.open(tmp_path / "s") as store:
        queue = store.work_queue("jobs", group="w")
        job = queue.acquire(timeout=0)
        assert job is not None and job.offset == 3 and job.delivery_count == 2
        assert queue.stats()["acked"] == 3
        assert queue.stats()["partitions"][0]["acked_below"] == 3
        assert queue.state_bytes() > 0


def test_queues_are_independent_of_each_other_and_of_consumer_groups(
    store: tidelog.Store,
) -> None:
    _fill(store, 3)
    a = store.work_queue("jobs", group="a")
    b = store.work_queue("jobs", group="b")
    for queue in (a, b):
        for _ in range(3):
            job = queue.acquire(timeout=0)
            assert job is not None
            queue.ack(job)
    with store.consumer("jobs", group="c") as consumer:
        assert len(consumer.poll(timeout=0)) == 3


def test_threads_share_a_queue_without_duplicates(store: tidelog.Store) -> None:
    _fill(store, 200, partitions=3)
    acked: list[tuple[int, int]] = []
    guard = threading.Lock()

    def work() -> None:
        with store.work_queue("jobs", group="w") as queue:
            while (job := queue.acquire(timeout=0.1)) is not None:
                queue.ack(job)
                with guard:
                    acked.append((job.partition, job.offset))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acked) == 200 and len(set(acked)) == 200


def test_closed_queue_raises(store: tidelog.Store) -> None:
    _fill(store, 1)
    queue = store.work_queue("jobs", group="w")
    job = queue.acquire(timeout=0)
    assert job is not None
    queue.close()
    queue.close()
    with pytest.raises(tidelog.StoreClosedError):
        queue.acquire(timeout=0)
    for settle in (queue.ack, queue.release, queue.reject, lambda j: queue.ack_many([j])):
        with pytest.raises(tidelog.StoreClosedError):
            settle(job)


def test_bad_arguments(store: tidelog.Store) -> None:
    _fill(store, 1)
    with pytest.raises(TypeError):
        store.work_queue(1, group="w")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.work_queue("jobs", group="")
    with pytest.raises(TypeError):
        store.work_queue("jobs", group="w", lock_timeout="1")  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidConfigError):
        store.work_queue("jobs", group="w", lock_timeout=0)
    with pytest.raises(TypeError):
        store.work_queue("jobs", group="w", max_deliveries=2.0)  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidConfigError):
        store.work_queue("jobs", group="w", max_deliveries=0)
    with pytest.raises(TypeError):
        store.work_queue("jobs", group="w", dead_letter=b"x")  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidConfigError):
        store.work_queue("jobs", group="w", dead_letter="jobs")
    with pytest.raises(tidelog.TopicNotFoundError):
        store.work_queue("missing", group="w")
    with store.work_queue("jobs", group="w") as queue:
        with pytest.raises(TypeError):
            queue.acquire(timeout="1")  # type: ignore[arg-type]
        job = queue.acquire(timeout=0)
        assert job is not None
        with pytest.raises(TypeError):
            queue.ack(job.message)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            queue.extend(job, "1")  # type: ignore[arg-type]
        with pytest.raises(tidelog.InvalidConfigError):
            queue.extend(job, 0)
        other = store.work_queue("jobs", group="other")
        with pytest.raises(tidelog.LockLostError):
            other.ack(job)
        queue.ack(job)


def test_acked_below_advances_as_a_contiguous_prefix_completes(store: tidelog.Store) -> None:
    _fill(store, 10)
    with store.work_queue("jobs", group="w") as queue:
        first = queue.acquire(timeout=0)
        assert first is not None and first.offset == 0
        for _ in range(9):
            job = queue.acquire(timeout=0)
            assert job is not None
            queue.ack(job)
        part = queue._journal.state.partitions[0]
        assert part.acked_below == 0 and part.done == [(1, 10)]
        queue.ack(first)
        part = queue._journal.state.partitions[0]
        assert part.acked_below == 10
        assert not part.done and not part.leases


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(0, 1), st.integers(1, 3)),
        st.tuples(
            st.sampled_from(["ack", "release", "reject", "foreign"]),
            st.integers(0, 1),
            st.integers(0, 3),
        ),
        st.tuples(st.sampled_from(["ack_many", "flush", "reopen"]), st.integers(0, 1), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_acknowledgement_state_matches_a_model(ops: list[tuple[str, int, int]]) -> None:
    """Random batched acquire / buffered ack / ack_many / release / reject / flush / reopen
    sequences of two members against a plain per-message model of the queue.

    The model also says when a buffered ack is written: when it settles the last job of its
    batch, or with the member's next change (acquire, release, reject, ack_many, flush, close).
    """
    n, max_deliveries = 8, 2
    count = [0] * n  # deliveries so far
    held: list[list[tuple[int, tidelog.Job, int]]] = [[], []]  # per member: offset, job, batch
    outstanding: dict[int, int] = {}  # batch -> jobs not settled
    pending: list[set[int]] = [set(), set()]  # acked, not written yet
    released: set[int] = set()
    finished: dict[int, str] = {}  # offset -> "acked" or "archived"
    frontier = 0
    batches = 0
    with tempfile.TemporaryDirectory() as d:
        store = tidelog.open(d)
        _fill(store, n)

        def members() -> list[tidelog.WorkQueue]:
            return [
                store.work_queue("jobs", group="w", max_deliveries=max_deliveries) for _ in range(2)
            ]

        def written(m: int) -> None:
            for o in pending[m]:
                finished[o] = "acked"
            pending[m].clear()

        def settle(m: int, index: int) -> tuple[int, tidelog.Job]:
            o, job, batch = held[m].pop(index)
            outstanding[batch] -= 1
            return o, job

        queues = members()
        try:
            for op, m, i in ops:
                if op == "acquire":
                    written(m)
                    expected: list[int] = []
                    while len(expected) < i:
                        candidates = sorted(released) + list(range(frontier, n))
                        if not candidates:
                            break
                        o = candidates[0]
                        if o == frontier:
                            frontier += 1
                        released.discard(o)
                        if count[o] >= max_deliveries:
                            finished[o] = "archived"
                        else:
                            expected.append(o)
                    jobs = queues[m].acquire_many(i, timeout=0)
                    assert sorted(j.offset for j in jobs) == expected
                    batches += 1
                    outstanding[batches] = len(jobs)
                    for job in jobs:
                        count[job.offset] += 1
                        assert job.delivery_count == count[job.offset]
                        held[m].append((job.offset, job, batches))
                elif op == "reopen":
                    for member in range(2):
                        written(member)
                        released.update(o for o, _, _ in held[member])
                        held[member].clear()
                    store.close()
                    store = tidelog.open(d)
                    queues = members()
                elif op == "foreign":
                    if held[m]:
                        with pytest.raises(tidelog.LockLostError):
                            queues[1 - m].ack(held[m][i % len(held[m])][1])
                elif op == "flush":
                    queues[m].flush()
                    written(m)
                elif op == "ack_many":
                    jobs = [job for _, job, _ in held[m]]
                    pending[m].update(o for o, _, _ in held[m])
                    while held[m]:
                        settle(m, 0)
                    queues[m].ack_many(jobs)
                    written(m)
                elif held[m]:
                    batch = held[m][i % len(held[m])][2]
                    o, job = settle(m, i % len(held[m]))
                    if op == "ack":
                        queues[m].ack(job)
                        pending[m].add(o)
                        if outstanding[batch] == 0:
                            written(m)
                    elif op == "release":
                        queues[m].release(job)
                        written(m)
                        released.add(o)
                    else:
                        queues[m].reject(job)
                        written(m)
                        finished[o] = "archived"
                    with pytest.raises(tidelog.LockLostError):
                        queues[m].ack(job)  # settled once only
                stats = queues[0].stats()
                assert stats["acked"] == sum(1 for v in finished.values() if v == "acked")
                assert stats["archived"] == sum(1 for v in finished.values() if v == "archived")
                in_flight = len(held[0]) + len(held[1]) + len(pending[0]) + len(pending[1])
                assert stats["in_flight"] == in_flight
                below = next((o for o in range(n) if o not in finished), n)
                assert stats["partitions"][0]["acked_below"] == below
                assert stats["backlog"] == n - len(finished) - in_flight
        finally:
            store.close()


# --- batches, buffered acks, retention, stats -----------------------------------------


def test_acquire_many_and_ack_many(store: tidelog.Store) -> None:
    _fill(store, 10, partitions=2)
    with store.work_queue("jobs", group="w") as queue:
        jobs = queue.acquire_many(6, timeout=0)
        assert len(jobs) == 6 and len({(j.partition, j.offset) for j in jobs}) == 6
        assert all(j.delivery_count == 1 for j in jobs)
        assert queue.stats()["in_flight"] == 6
        queue.ack_many(jobs)
        rest = queue.acquire_many(100, timeout=0)
        assert len(rest) == 4
        with pytest.raises(tidelog.LockLostError):
            queue.ack_many([*rest, jobs[0]])  # nothing is acked when one is not held
        queue.ack_many(rest)
        assert queue.acquire_many(5, timeout=0) == []
        stats = queue.stats()
        assert stats["acked"] == 10 and stats["lag"] == 0
        with pytest.raises(TypeError):
            queue.acquire_many(1.5)  # type: ignore[arg-type]
        with pytest.raises(tidelog.InvalidConfigError):
            queue.acquire_many(0)


def test_iteration_prefetches_batches_and_coalesces_acks(store: tidelog.Store) -> None:
    n = 5_000
    _fill(store, n)
    with store.work_queue("jobs", group="w") as queue:
        offsets = []
        for job in queue.jobs(idle_timeout=0):
            offsets.append(job.offset)
            queue.ack(job)
        assert offsets == list(range(n))
        assert queue.stats()["acked"] == n
        # Far fewer records than messages: acquisitions and acks were batched.
        assert queue._journal.bytes_written < n * 8


def test_a_buffered_ack_is_durable_at_the_documented_points(store: tidelog.Store) -> None:
    _fill(store, 3)
    files = queue_files(store.path, "jobs", "w")

    def acked() -> int:
        state = read_state(files, 1)
        assert state is not None
        return state.acked

    with store.work_queue("jobs", group="w") as queue:
        a, b, c = queue.acquire_many(3, timeout=0)
        queue.ack(a)
        assert acked() == 0 and queue.stats()["member"]["pending_acks"] == 1
        queue.flush()
        assert acked() == 1
        queue.ack(b)
        assert acked() == 1
        queue.ack(c)  # the last job of the batch: written before ack returns
        assert acked() == 3
        assert queue.stats()["member"]["pending_acks"] == 0


def test_close_writes_buffered_acks_and_gives_back_prefetched_jobs(store: tidelog.Store) -> None:
    _fill(store, 50)
    with store.work_queue("jobs", group="w") as queue:
        taken = [next(queue) for _ in range(4)]  # batches of 1, 2, then 4 (3 prefetched)
        assert queue.stats()["member"]["prefetched"] > 0
        for job in taken[:2]:
            queue.ack(job)
    with store.work_queue("jobs", group="w") as queue:
        assert queue.stats()["acked"] == 2
        handed_out = queue.acquire_many(2, timeout=0)
        assert [(j.offset, j.delivery_count) for j in handed_out] == [(2, 2), (3, 2)]
        prefetched = queue.acquire(timeout=0)
        assert prefetched is not None and (prefetched.offset, prefetched.delivery_count) == (4, 1)


def test_a_buffered_ack_of_a_lock_another_member_took_raises(store: tidelog.Store) -> None:
    _fill(store, 2)
    a = store.work_queue("jobs", group="w", lock_timeout=0.2)
    b = store.work_queue("jobs", group="w", lock_timeout=0.2)
    first, second = a.acquire_many(2, timeout=0)
    taken = b.acquire_many(2, timeout=2.0)  # waits for the locks to expire
    assert [j.offset for j in taken] == [0, 1] and taken[0].delivery_count == 2
    with pytest.raises(tidelog.LockLostError):
        a.ack(first)
    assert a.stats()["member"]["acks_lost"] == 1
    b.ack_many(taken)
    assert b.stats()["acked"] == 2
    with pytest.raises(tidelog.LockLostError):
        a.release(second)


def test_release_rings_the_topic_doorbell(store: tidelog.Store) -> None:
    _fill(store, 1)
    bell = tidelog._core.Doorbell(Path(store.path) / "topics" / "jobs" / "doorbell")
    with store.work_queue("jobs", group="w") as queue:
        job = queue.acquire(timeout=0)
        assert job is not None
        ticket = bell.ticket()
        queue.release(job)
        assert bell.ticket() != ticket, "waiting members are woken"
        assert bell.wait(ticket, 0) is True


def test_a_waiting_member_gets_a_released_job(store: tidelog.Store) -> None:
    _fill(store, 1)
    a = store.work_queue("jobs", group="w")
    b = store.work_queue("jobs", group="w")
    job = a.acquire(timeout=0)
    assert job is not None
    got: list[tidelog.Job | None] = []
    waiter = threading.Thread(target=lambda: got.append(b.acquire(timeout=30)))
    waiter.start()
    time.sleep(0.05)
    a.release(job)
    waiter.join()
    assert got[0] is not None and got[0].offset == 0 and got[0].delivery_count == 2


def test_retention_deleting_unfinished_messages_is_skipped_and_counted(tmp_path: Path) -> None:
    with tidelog.open(tmp_path / "s", segment_bytes=1 << 14, retention_bytes=1 << 14) as store:
        topic = store.create_topic("jobs")
        with store.work_queue("jobs", group="w") as queue:
            for i in range(10):
                topic.append(b"%0100d" % i)
            done = queue.acquire_many(10, timeout=0)
            assert len(done) == 10
            queue.ack_many(done)
            for i in range(10, 2_000):
                topic.append(b"%0100d" % i)
            start = topic.start_offset(0)
            assert start > 10, "retention deleted old segments"
            stats = queue.stats()
            assert stats["skipped"] == start - 10 and stats["lag"] == 2_000 - start
            job = queue.acquire(timeout=0)
            assert job is not None and job.offset == start
            queue.ack(job)
            stats = queue.stats()
            assert stats["skipped"] == start - 10 and stats["acked"] == 11
            assert stats["partitions"][0]["acked_below"] == start + 1
        stats = store.stats()["work_queues"]["w"]["jobs"]
        assert stats["skipped"] == start - 10 and stats["acked"] == 11


def test_store_stats_lists_work_queues(store: tidelog.Store) -> None:
    _fill(store, 6)
    assert store.stats()["work_queues"] == {}
    with store.work_queue("jobs", group="w", max_deliveries=1, dead_letter="dl") as queue:
        a, b, c, d = queue.acquire_many(4, timeout=0)
        queue.ack(a)
        queue.reject(b)
        queue.release(c)
        stats = store.stats()["work_queues"]["w"]["jobs"]
        assert stats["acked"] == 1 and stats["dead_lettered"] == 1 and stats["archived"] == 0
        assert stats["in_flight"] == 1 and stats["backlog"] == 3 and stats["lag"] == 4
        assert stats["partitions"][0]["acked_below"] == 2
        assert stats["state_bytes"] == queue.state_bytes() > 0
        queue.ack(d)
    with store.work_queue("jobs", group="x", max_deliveries=1) as other:
        (job,) = other.acquire_many(1, timeout=0)
        other.reject(job)
    overview = store.stats()["work_queues"]
    assert sorted(overview) == ["w", "x"]
    assert overview["x"]["jobs"]["archived"] == 1 and overview["x"]["jobs"]["dead_lettered"] == 0


def test_delete_topic_forgets_its_queues(store: tidelog.Store) -> None:
    _fill(store, 3)
    with store.work_queue("jobs", group="w") as queue:
        queue.ack_many(queue.acquire_many(3, timeout=0))
    store.delete_topic("jobs")
    assert store.stats()["work_queues"] == {}
    assert not (Path(store.path) / "work_queues" / "jobs").exists()
    _fill(store, 3)
    with store.work_queue("jobs", group="w") as queue:
        assert queue.stats()["acked"] == 0
        assert [j.offset for j in queue.acquire_many(3, timeout=0)] == [0, 1, 2]


def test_a_job_reads_like_its_message(store: tidelog.Store) -> None:
    _fill(store, 2, partitions=2)
    with store.work_queue("jobs", group="w") as queue:
        for job in queue.acquire_many(2, timeout=0):
            m = job.message
            assert (job.value, job.key, job.headers) == (m.value, m.key, m.headers)
            assert (job.offset, job.partition, job.topic) == (m.offset, m.partition, "jobs")
            assert job.timestamp_ms == m.timestamp_ms and job.delivery_count == 1
            queue.ack(job)


def test_bad_prefetch(store: tidelog.Store) -> None:
    _fill(store, 1)
    with pytest.raises(TypeError, match="prefetch"):
        store.work_queue("jobs", group="w", prefetch=2.0)  # type: ignore[arg-type]
    with pytest.raises(tidelog.InvalidConfigError, match="prefetch"):
        store.work_queue("jobs", group="w", prefetch=0)


def test_fsync_interval_syncs_the_journal_by_the_interval_and_at_close(tmp_path: Path) -> None:
    # The core syncs (and counts its fdatasyncs): no Python code calls fsync.
    with tidelog.open(tmp_path / "s", fsync="interval", fsync_interval_ms=3_600_000) as store:
        _fill(store, 3)
        with store.work_queue("jobs", group="w") as queue:
            for job in queue.acquire_many(3, timeout=0):
                queue.ack(job)
            assert queue.stats()["acked"] == 3
            log = queue._journal._log
            assert log.syncs == 0  # within the interval: the page cache only
        assert log.syncs == 1  # close syncs what was written


def _legacy_record(kind: int, offset: int, expires: int = 0, count: int = 0) -> bytes:
    member = b"old-member" if kind == 1 else b""
    return struct.pack("<BIqqI", kind, 0, offset, expires, count) + member


def test_state_recorded_by_the_first_version_is_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "s"
    far = int(time.time() * 1000) + 3_600_000
    with tidelog.open(path) as store:
        _fill(store, 8)
        legacy = store._core.create_topic("__work_queues", 8, exist_ok=True, internal=True)
        records = [_legacy_record(1, o, far, 1) for o in range(6)]
        records += [_legacy_record(2, o) for o in (0, 1, 2)]
        records += [_legacy_record(3, 3, count=1), _legacy_record(4, 5, count=1)]
        route = tidelog._core.partition_for_key(b"w", 8)
        for value in records:
            legacy.append(value, key=b"w\0jobs", partition=route)
            legacy.append(value, key=b"other\0jobs", partition=route)  # another queue's
    # Opening the store converts the records (in the core), then deletes their topic.
    with tidelog.open(path) as store:
        assert "__work_queues" not in store.topics(internal=True)
        with store.work_queue("jobs", group="w") as queue:
            stats = queue.stats()
            assert (stats["acked"], stats["dead_lettered"], stats["in_flight"]) == (3, 1, 1)
            assert stats["partitions"][0]["acked_below"] == 3
            assert queue_files(store.path, "jobs", "w").journal.exists()
            jobs = queue.acquire_many(10, timeout=0)  # 4 is still held by the old member
            assert [(j.offset, j.delivery_count) for j in jobs] == [(3, 2), (6, 1), (7, 1)]
            queue.ack_many(jobs)
        with store.work_queue("jobs", group="other") as queue:
            assert queue.stats()["acked"] == 3
    with tidelog.open(path) as store:
        with store.work_queue("jobs", group="w") as queue:
            assert queue.stats()["acked"] == 6  # carried over once, not again
        store.delete_topic("jobs")
        _fill(store, 8)
        with store.work_queue("jobs", group="w") as queue:
            assert queue.stats()["acked"] == 0  # a new topic of the name starts empty
            assert len(queue.acquire_many(10, timeout=0)) == 8


# A daemon thread inside `for job in queue` while the process ends: the native __next__
# calls the member's _next_slow when its prefetched jobs run out, whose locks and waits
# let go of the GIL; a thread taking it back during finalization is ended by a forced
# unwind, which aborted the process under a PyO3 method's panic guard (4 of 12 processes
# that ended while three daemon threads worked one member). The child makes the timing
# certain: its _next_slow signals the main thread, which then exits, and sleeps (letting go
# of the GIL) into the interpreter's finalization (its last collection has cyclic garbage to
# go through).
_EXIT_WHILE_A_DAEMON_ITERATES = (
    LONG_FINALIZATION
    + """
import sys, tempfile, threading, time
import tidelog
from tidelog.workqueue import WorkQueue

inside = threading.Event()
slow = WorkQueue._next_slow

def next_slow(self):
    inside.set()
    time.sleep(0.02)
    return slow(self)

WorkQueue._next_slow = next_slow
store = tidelog.open(tempfile.mkdtemp(dir=sys.argv[1]), fsync="never")
store.create_topic("jobs")
queue = store.work_queue("jobs", group="workers")

def work():
    for job in queue:
        queue.ack(job)

threading.Thread(target=work, daemon=True).start()
assert inside.wait(10)
"""
)


def test_exiting_while_a_daemon_thread_iterates_does_not_abort(tmp_path: Path) -> None:
    ends_cleanly(_EXIT_WHILE_A_DAEMON_ITERATES, str(tmp_path))
