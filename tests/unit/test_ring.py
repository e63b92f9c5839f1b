from __future__ import annotations

import threading
import time

import pytest
import tidelog


def test_fifo_and_capacity() -> None:
    ring = tidelog.RingBuffer(3)
    assert ring.capacity == 4
    assert [ring.try_push(i) for i in range(5)] == [True, True, True, True, False]
    assert len(ring) == 4
    assert ring.try_pop() == 0
    assert ring.pop_many(10) == [1, 2, 3]
    assert ring.try_pop() is None
    assert len(ring) == 0


def test_batch_push_takes_what_fits() -> None:
    ring = tidelog.RingBuffer(4)
    assert ring.push_many(["a", "b", "c", "d", "e"]) == 4
    assert ring.pop_many(2) == ["a", "b"]
    assert ring.push_many([{"x": 1}, None]) == 2
    assert ring.pop_many(100) == ["c", "d", {"x": 1}, None]


def test_blocking_calls_time_out() -> None:
    ring = tidelog.RingBuffer(2)
    with pytest.raises(TimeoutError):
        ring.pop(timeout=0.01)
    ring.push(1)
    ring.push(2)
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        ring.push(3, timeout=0.05)
    assert time.perf_counter() - started >= 0.04
    with pytest.raises(ValueError, match="timeout"):
        ring.pop(timeout=-1)


def test_bad_capacity() -> None:
    with pytest.raises(tidelog.InvalidConfigError):
        tidelog.RingBuffer(0)
    with pytest.raises(tidelog.InvalidConfigError):
        tidelog.RingBuffer(-5)


def test_blocked_pop_is_woken_by_a_push_from_another_thread() -> None:
    ring = tidelog.RingBuffer(8)
    got: list[object] = []
    consumer = threading.Thread(target=lambda: got.append(ring.pop(timeout=5)))
    consumer.start()
    time.sleep(0.05)
    ring.push("hello")
    consumer.join(timeout=5)
    assert got == ["hello"]


def test_threads_count_every_item_exactly_once() -> None:
    ring = tidelog.RingBuffer(64)
    producers, per_producer = 4, 5000
    received: list[list[tuple[int, int]]] = [[] for _ in range(4)]

    def produce(p: int) -> None:
        for i in range(per_producer):
            ring.push((p, i), timeout=10)

    def consume(c: int) -> None:
        while True:
            item = ring.pop(timeout=10)
            if item is None:
                return
            received[c].append(item)

    consumers = [threading.Thread(target=consume, args=(c,)) for c in range(4)]
    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in consumers + threads:
        t.start()
    for t in threads:
        t.join()
    for _ in consumers:
        ring.push(None, timeout=10)
    for t in consumers:
        t.join()
    everything = [item for r in received for item in r]
    assert sorted(everything) == [(p, i) for p in range(producers) for i in range(per_producer)]
    for r in received:  # each consumer sees each producer's items in order
        for p in range(producers):
            mine = [i for q, i in r if q == p]
            assert mine == sorted(mine)


def test_ctrl_c_interrupts_a_blocked_pop() -> None:
    import subprocess
    import sys

    script = (
        "import os, signal, threading, tidelog\n"
        # Whatever the suite's own SIGINT disposition (nohup ignores it), Ctrl-C interrupts.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "r = tidelog.RingBuffer(4)\n"
        "threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "try:\n"
        "    r.pop()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "interrupted", out.stderr
