"""The end-to-end latency workload: a paced sender here, a consumer in another process.

Every message starts with the sender's ``time.monotonic_ns()``; the consumer process
subtracts it from its own clock reading when the message reaches it (CLOCK_MONOTONIC is one
clock for all processes of the machine). The sender paces messages at ``rate`` per second so
the figure is the latency of a lightly loaded system, not of a saturated queue.

Before the measured messages, the sender sends warm-up messages (stamp ``-1``) every 10 ms
until the consumer reports the first one: connection set-up, metadata look-ups and the first
fetch are not part of the figure, for any system.
"""

from __future__ import annotations

import array
import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from benches.peers.base import STAMP, Adapter


@dataclass
class LatencyResult:
    """Latencies in microseconds of the messages that arrived."""

    sent: int
    received: int
    p50_us: float | None
    p99_us: float | None
    max_us: float | None
    notes: list[str] = field(default_factory=list)


def latency_child(
    key: str, config: dict[str, Any], count: int, poll_s: float, seconds: float, conn: Connection
) -> None:
    """Entry point of the consumer process (spawned)."""
    from benches.peers import ADAPTER_BY_KEY

    cls = ADAPTER_BY_KEY[key]
    deadline = time.monotonic() + seconds
    lat = array.array("q")
    unpack = STAMP.unpack_from
    try:

        def ready() -> None:
            conn.send(("ready",))

        warm = False
        # The adapter's own count would include the warm-up messages: stop here instead.
        batches = cls.latency_consume(config, count + (1 << 30), ready, deadline, poll_s)
        for batch in batches:
            now = time.monotonic_ns()
            for v in batch:
                stamp = unpack(v)[0]
                if stamp < 0:
                    if not warm:
                        conn.send(("warm",))
                        warm = True
                    continue
                lat.append(now - stamp)
            if len(lat) >= count:
                break
        batches.close()
        conn.send(("done", lat.tobytes()))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_latency(
    adapter: Adapter, slot: str, count: int, size: int, rate: float, poll_s: float
) -> LatencyResult:
    """Sends ``count`` paced messages of ``size`` bytes and collects the consumer's latencies."""
    sender = adapter.latency_sender(slot)  # NotApplicable propagates to the caller
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    seconds = 200.0 + count / rate
    proc = ctx.Process(
        target=latency_child,
        args=(adapter.key, adapter.child_config(slot), count, poll_s, seconds, writer),
        daemon=True,
    )
    proc.start()
    writer.close()
    try:
        if not reader.poll(90.0):
            raise RuntimeError("the consumer process did not get ready within 90 s")
        msg = reader.recv()
        if msg[0] == "error":
            raise RuntimeError(f"consumer process: {msg[1]}")
        pad = b"\0" * max(0, size - STAMP.size)
        pack, send, clock = STAMP.pack, sender.send, time.monotonic_ns
        warm_until = time.monotonic() + 90.0
        while True:
            send(pack(-1) + pad)
            if reader.poll(0.01):
                break
            if time.monotonic() > warm_until:
                raise RuntimeError("no warm-up message reached the consumer within 90 s")
        msg = reader.recv()
        if msg[0] == "error":
            raise RuntimeError(f"consumer process: {msg[1]}")
        interval_ns = int(1e9 / rate)
        start = clock()
        for i in range(count):
            due = start + i * interval_ns
            wait = due - clock()
            if wait > 0:
                time.sleep(wait / 1e9)
            send(pack(clock()) + pad)
        if not reader.poll(seconds):
            raise RuntimeError("the consumer process did not report back")
        msg = reader.recv()
        if msg[0] == "error":
            raise RuntimeError(f"consumer process: {msg[1]}")
    finally:
        sender.close()
        proc.join(10.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        reader.close()
    lat = np.frombuffer(msg[1], dtype=np.int64) / 1e3
    result = LatencyResult(sent=count, received=len(lat), p50_us=None, p99_us=None, max_us=None)
    if len(lat):
        result.p50_us = float(np.percentile(lat, 50))
        result.p99_us = float(np.percentile(lat, 99))
        result.max_us = float(lat.max())
    if len(lat) < count:
        result.notes.append(f"only {len(lat):,} of {count:,} messages arrived in time")
    tenth = max(1, len(lat) // 10)
    if len(lat) >= 20:
        first, last = float(np.median(lat[:tenth])), float(np.median(lat[-tenth:]))
        if last > 5 * first and last > 10_000:
            result.notes.append(
                f"the consumer fell behind the {rate:g}/s send rate (latency grew from "
                f"{first / 1e3:.3g} ms over the first 10% of messages to {last / 1e3:.3g} ms over "
                "the last 10%): p50/p99 include the backlog"
            )
    return result
