"""``tidelog.RingBuffer`` from Python (issue #3): ``push`` + ``pop`` pairs and
``push_many`` / ``pop_many`` of 1,000, each next to Python's ``queue.Queue`` measured in the
same run (the ratio to beat), plus variants that place the figures between floors.

All calls run in one thread and never wait (the buffer is never full or empty when a call
is made), so the figures are the per-call cost of the Python binding and the ring's fast
path, the same as for ``queue.Queue``'s uncontended ``put`` + ``get``.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
import tidelog

from benches.support import SCALE, Measured, make_values, ns_per, record

VALUE = make_values(1)[0]
#: Items per ``push_many`` / ``pop_many`` call.
BATCH = 1000
ROUNDS = SCALE.rounds
QUICK = SCALE.name == "quick"
#: push + pop pairs per round (RingBuffer and the C-level floors).
PAIRS = 100_000 if QUICK else 1_000_000
#: put + get pairs per round of the (much slower) pure-Python queues.
QUEUE_PAIRS = 20_000 if QUICK else 200_000
#: push_many + pop_many calls per round.
BATCH_CALLS = 200 if QUICK else 2_000
CAPACITY = 4096

PAIR_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 5_000_000, "text": ">= 5,000,000 pairs/s"},
    {"of": "ratio", "op": ">=", "value": 10.0, "text": ">= 10x queue.Queue"},
]
BATCH_TARGETS: list[dict[str, Any]] = [
    {"of": "value", "op": ">=", "value": 50_000_000, "text": ">= 50,000,000 items/s"},
    {"of": "ratio", "op": ">=", "value": 10.0, "text": ">= 10x queue.Queue"},
]


def run(benchmark: Any, target: Callable[..., Any], *args: Any) -> dict[str, float]:
    """Runs ``target(*args)`` for ``ROUNDS`` rounds (plus one warm-up); usage per round."""
    measured = Measured(target)
    benchmark.pedantic(measured, args=args, rounds=ROUNDS, warmup_rounds=1)
    return measured.per_call()


# --------------------------------------------------------------------------- loops


def pair_loop(push: Callable[[Any], Any], pop: Callable[[], Any], item: Any, n: int) -> None:
    """``n`` times: one push then one pop (the same loop for every queue)."""
    for _ in range(n):
        push(item)
        pop()


def batch_loop(
    push_many: Callable[[list[Any]], Any], pop_many: Callable[[int], Any], items: list[Any], n: int
) -> None:
    """``n`` times: push ``items`` then pop as many."""
    size = len(items)
    for _ in range(n):
        push_many(items)
        pop_many(size)


def queue_batch_loop(q: queue.Queue[Any], items: list[Any], n: int) -> None:
    """The batch workload with ``queue.Queue``, which has no batch calls: item by item."""
    put, get = q.put, q.get
    for _ in range(n):
        for item in items:
            put(item)
        for _ in items:
            get()


# --------------------------------------------------------------------------- push + pop

PAIR_WHAT = f"{PAIRS:,} x (push(v) + pop()) per round, one thread, never waiting"
QUEUE_WHAT = f"{QUEUE_PAIRS:,} x (put(v) + get()) per round, one thread, never waiting"


@pytest.mark.benchmark(group="ring-push-pop")
def test_ring_push_pop_tidelog(benchmark: Any) -> None:
    ring = tidelog.RingBuffer(CAPACITY)
    usage = run(benchmark, pair_loop, ring.push, ring.pop, VALUE, PAIRS)
    assert len(ring) == 0
    record(
        benchmark,
        figure="ring-push-pop",
        title="RingBuffer.push + pop (pairs/s)",
        role="tidelog",
        unit="msgs/s",
        work=PAIRS,
        what=PAIR_WHAT,
        targets=PAIR_TARGETS,
        extra={"ns_per_pair": ns_per(benchmark, PAIRS), **usage},
    )


@pytest.mark.benchmark(group="ring-push-pop")
def test_ring_push_pop_reference(benchmark: Any) -> None:
    q: queue.Queue[Any] = queue.Queue(CAPACITY)
    usage = run(benchmark, pair_loop, q.put, q.get, VALUE, QUEUE_PAIRS)
    record(
        benchmark,
        figure="ring-push-pop",
        title="queue.Queue.put + get (pairs/s)",
        role="reference",
        unit="msgs/s",
        work=QUEUE_PAIRS,
        what=QUEUE_WHAT,
        extra={"ns_per_pair": ns_per(benchmark, QUEUE_PAIRS), **usage},
    )


@pytest.mark.benchmark(group="ring-push-pop")
def test_ring_try_push_pop(benchmark: Any) -> None:
    ring = tidelog.RingBuffer(CAPACITY)
    usage = run(benchmark, pair_loop, ring.try_push, ring.try_pop, VALUE, PAIRS)
    record(
        benchmark,
        figure="ring-try-push-pop",
        title="RingBuffer.try_push + try_pop (pairs/s)",
        role="variant",
        unit="msgs/s",
        work=PAIRS,
        what=PAIR_WHAT.replace("push(v) + pop()", "try_push(v) + try_pop()"),
        extra={"ns_per_pair": ns_per(benchmark, PAIRS), **usage},
    )


@pytest.mark.benchmark(group="ring-push-pop")
def test_ring_simple_queue(benchmark: Any) -> None:
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    usage = run(benchmark, pair_loop, q.put, q.get, VALUE, PAIRS)
    record(
        benchmark,
        figure="ring-simple-queue",
        title="queue.SimpleQueue.put + get (C, unbounded; pairs/s)",
        role="variant",
        unit="msgs/s",
        work=PAIRS,
        what=PAIR_WHAT.replace("push(v) + pop()", "put(v) + get()"),
        extra={"ns_per_pair": ns_per(benchmark, PAIRS), **usage},
    )


@pytest.mark.benchmark(group="ring-push-pop")
def test_ring_deque_floor(benchmark: Any) -> None:
    d: deque[Any] = deque()
    usage = run(benchmark, pair_loop, d.append, d.popleft, VALUE, PAIRS)
    record(
        benchmark,
        figure="ring-deque-floor",
        title="floor: deque.append + popleft (two C calls, no locking; pairs/s)",
        role="variant",
        unit="msgs/s",
        work=PAIRS,
        what=PAIR_WHAT.replace("push(v) + pop()", "append(v) + popleft()"),
        extra={"ns_per_pair": ns_per(benchmark, PAIRS), **usage},
    )


# --------------------------------------------------------------------------- batches

ITEMS = [VALUE] * BATCH
BATCH_WHAT = (
    f"{BATCH_CALLS:,} x (push_many(list of {BATCH:,}) + pop_many({BATCH:,})) per round, one thread"
)
QUEUE_BATCH_CALLS = max(1, QUEUE_PAIRS // BATCH)


@pytest.mark.benchmark(group="ring-batch")
def test_ring_batch_tidelog(benchmark: Any) -> None:
    ring = tidelog.RingBuffer(CAPACITY)
    usage = run(benchmark, batch_loop, ring.push_many, ring.pop_many, ITEMS, BATCH_CALLS)
    assert len(ring) == 0
    record(
        benchmark,
        figure="ring-batch",
        title=f"RingBuffer.push_many + pop_many of {BATCH:,} (items/s)",
        role="tidelog",
        unit="msgs/s",
        work=BATCH_CALLS * BATCH,
        what=BATCH_WHAT,
        targets=BATCH_TARGETS,
        extra={"ns_per_item": ns_per(benchmark, BATCH_CALLS * BATCH), **usage},
    )


@pytest.mark.benchmark(group="ring-batch")
def test_ring_batch_reference(benchmark: Any) -> None:
    q: queue.Queue[Any] = queue.Queue(CAPACITY)
    usage = run(benchmark, queue_batch_loop, q, ITEMS, QUEUE_BATCH_CALLS)
    record(
        benchmark,
        figure="ring-batch",
        title=f"queue.Queue: {BATCH:,} put then {BATCH:,} get (no batch calls; items/s)",
        role="reference",
        unit="msgs/s",
        work=QUEUE_BATCH_CALLS * BATCH,
        what=f"{QUEUE_BATCH_CALLS:,} x ({BATCH:,} put(v) + {BATCH:,} get()) per round",
        extra={"ns_per_item": ns_per(benchmark, QUEUE_BATCH_CALLS * BATCH), **usage},
    )


@pytest.mark.benchmark(group="ring-batch")
def test_ring_batch_deque_floor(benchmark: Any) -> None:
    d: deque[Any] = deque()

    def pop_many(n: int) -> list[Any]:
        popleft = d.popleft
        return [popleft() for _ in range(n)]

    usage = run(benchmark, batch_loop, d.extend, pop_many, ITEMS, BATCH_CALLS)
    record(
        benchmark,
        figure="ring-batch-deque",
        title="deque.extend(list) + list of popleft() (no locking; items/s)",
        role="variant",
        unit="msgs/s",
        work=BATCH_CALLS * BATCH,
        what=BATCH_WHAT.replace("push_many", "extend").replace("pop_many", "popleft x"),
        extra={"ns_per_item": ns_per(benchmark, BATCH_CALLS * BATCH), **usage},
    )


@pytest.mark.benchmark(group="ring-batch")
def test_ring_batch_list_floor(benchmark: Any) -> None:
    """The two list copies a batch push + pop has to make at least (C, no locking)."""
    holder: list[Any] = []

    def copy_in(items: list[Any]) -> None:
        holder[:] = items

    def copy_out(n: int) -> list[Any]:
        out = holder[:n]
        del holder[:n]
        return out

    usage = run(benchmark, batch_loop, copy_in, copy_out, ITEMS, BATCH_CALLS)
    record(
        benchmark,
        figure="ring-batch-list-floor",
        title="floor: list slice copy in + slice copy out (items/s)",
        role="variant",
        unit="msgs/s",
        work=BATCH_CALLS * BATCH,
        what=BATCH_WHAT.replace("push_many", "holder[:] =").replace("pop_many", "holder[:n]"),
        extra={"ns_per_item": ns_per(benchmark, BATCH_CALLS * BATCH), **usage},
    )
