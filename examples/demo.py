"""The main demo: order events appended to a local store, reopened, and replayed.

Run it with ``make demo``. It writes to ``./demo-data`` (or the directory given as the first
argument), which it clears first.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import tidelog

ORDERS = 200_000
PARTITIONS = 3


def order_event(i: int) -> bytes:
    return json.dumps({"order": i, "customer": i % 1000, "amount_cents": 100 + i % 9_900}).encode()


def main(directory: str) -> None:
    path = Path(directory)
    shutil.rmtree(path, ignore_errors=True)

    # 1. Append order events, keyed by customer so each customer's orders stay in order.
    events = [order_event(i) for i in range(ORDERS)]
    with tidelog.open(path) as store:
        orders = store.create_topic("orders", partitions=PARTITIONS)
        started = time.perf_counter()
        for i, event in enumerate(events):
            orders.append(event, key=f"customer-{i % 1000}".encode())
        elapsed = time.perf_counter() - started
        rate = ORDERS / elapsed
        print(f"appended {ORDERS:,} orders one by one in {elapsed:.2f}s ({rate:,.0f} msgs/s)")

        started = time.perf_counter()
        for p in range(PARTITIONS):
            orders.append_batch(events[:10_000], partition=p)
        elapsed = time.perf_counter() - started
        print(f"appended {3 * 10_000:,} more in 3 batches in {elapsed * 1000:.1f} ms")
        midpoint_ms = int(time.time() * 1000)
        time.sleep(0.01)
        orders.append(b'{"order": "late"}', partition=0)

    # 2. Reopen (as after a restart or a crash: the tail of every partition is verified).
    started = time.perf_counter()
    with tidelog.open(path) as store:
        reopened_ms = (time.perf_counter() - started) * 1000
        orders = store.topic("orders")
        print(f"reopened in {reopened_ms:.1f} ms: topics {store.topics()}")
        for p in range(orders.partitions):
            print(
                f"  partition {p}: offsets {orders.start_offset(p):,}..{orders.end_offset(p):,}, "
                f"{orders.size_bytes(p) / 1e6:.1f} MB in {orders.segment_count(p)} segment(s)"
            )

        # 3. Replay by offset: the five messages from offset 1000 of partition 0.
        print("replay partition 0 from offset 1000:")
        for msg in orders.read(partition=0, offset=1000):
            print(f"  offset {msg.offset}: key={msg.key!r} value={msg.value.decode()}")
            if msg.offset >= 1004:
                break

        # 4. Replay by timestamp: everything appended after the midpoint.
        late = [m.value for m in orders.read(partition=0, timestamp_ms=midpoint_ms)]
        print(f"replay partition 0 from timestamp {midpoint_ms}: {late}")

        # 5. A full scan, zero-copy, batch by batch.
        started = time.perf_counter()
        total_messages = total_bytes = 0
        for p in range(orders.partitions):
            offset = orders.start_offset(p)
            while offset < orders.end_offset(p):
                batch = orders.read_batch(p, offset, max_messages=10_000)
                buffer, _bounds = batch.value_buffer()
                total_messages += len(batch)
                total_bytes += len(buffer)
                offset = batch.next_offset
        elapsed = time.perf_counter() - started
        print(
            f"scanned {total_messages:,} messages ({total_bytes / 1e6:.1f} MB of values) "
            f"in {elapsed * 1000:.1f} ms ({total_messages / elapsed:,.0f} msgs/s)"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-data")
