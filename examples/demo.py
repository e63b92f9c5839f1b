"""The main demo: the classic fan-out on a local store.

Order events are appended to a topic by a buffered producer; three consumer groups
(billing, inventory, notifications) each read every order independently, at their own pace,
committing their offsets; a restart shows that everything survived and that each group
resumes where it stopped; finally the log is replayed by offset and by timestamp.

Run it with ``make demo``. It writes to ``./demo-data`` (or the directory given as the first
argument), which it clears first if it holds a tidelog store; it refuses any other
non-empty directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import tidelog

ORDERS = 300_000
PARTITIONS = 3
GROUPS = ("billing", "inventory", "notifications")


def order_event(i: int) -> bytes:
    return json.dumps({"order": i, "customer": i % 1000, "amount_cents": 100 + i % 9_900}).encode()


def produce(store: tidelog.Store) -> None:
    store.create_topic("orders", partitions=PARTITIONS)
    events = [order_event(i) for i in range(ORDERS)]
    started = time.perf_counter()
    with store.producer(name="checkout") as producer:
        for i, event in enumerate(events):
            # Keyed by customer: each customer's orders stay in order, in one partition.
            producer.send("orders", event, key=b"customer-%d" % (i % 1000))
        producer.flush()
        stats = producer.stats()
    elapsed = time.perf_counter() - started
    print(
        f"produced {stats['written']:,} orders in {elapsed:.2f}s ({ORDERS / elapsed:,.0f} msgs/s, "
        f"backpressure episodes: {stats['high_watermark_hits']})"
    )


def consume(store: tidelog.Store, group: str, limit: int | None = None) -> int:
    """Reads (up to ``limit``) orders as ``group``; returns how many it processed."""
    processed = revenue = 0
    started = time.perf_counter()
    with store.consumer("orders", group=group) as consumer:
        while limit is None or processed < limit:
            want = 500 if limit is None else min(500, limit - processed)
            batch = consumer.poll(max_messages=want, timeout=0.2)
            if not batch:
                break
            for msg in batch:
                if group == "billing":
                    revenue += json.loads(msg.value or b"")["amount_cents"]
            processed += len(batch)
            consumer.commit()
        lag = sum(consumer.lag().values())
    elapsed = time.perf_counter() - started
    extra = f", revenue ${revenue / 100:,.2f}" if group == "billing" else ""
    print(
        f"  {group:<13} processed {processed:>7,} in {elapsed:5.2f}s "
        f"({processed / max(elapsed, 1e-9):>10,.0f} msgs/s), lag now {lag:,}{extra}"
    )
    return processed


def main(directory: str) -> None:
    path = Path(directory)
    if path.exists() and any(path.iterdir()):
        if not (path / "tidelog.store").is_file():
            raise SystemExit(f"{path} is not empty and holds no tidelog store: not clearing it")
        shutil.rmtree(path)

    with tidelog.open(path) as store:
        produce(store)
        print("fan-out: every group reads every order independently")
        consume(store, "billing")
        consume(store, "inventory")
        consume(store, "notifications", limit=100_000)  # a slow consumer falls behind
        midpoint_ms = int(time.time() * 1000)
        time.sleep(0.01)
        store.topic("orders").append(b'{"order": "late"}', partition=0)

    # Restart (as after a crash: the tail of every partition is verified on open).
    started = time.perf_counter()
    with tidelog.open(path) as store:
        orders = store.topic("orders")
        print(f"reopened in {(time.perf_counter() - started) * 1000:.1f} ms")
        for p in range(orders.partitions):
            print(
                f"  partition {p}: offsets {orders.start_offset(p):,}..{orders.end_offset(p):,}, "
                f"{orders.size_bytes(p) / 1e6:.1f} MB"
            )
        for group, topics in sorted(store.groups().items()):
            info = topics["orders"]
            lag = sum(info["lag"].values())
            print(f"  group {group:<13} committed {info['committed']}, lag {lag:,}")
        print("the slow group resumes where it stopped:")
        consume(store, "notifications")

        print("replay partition 0 from offset 1000:")
        for msg in orders.read(partition=0, offset=1000):
            print(f"  offset {msg.offset}: key={msg.key!r} value={(msg.value or b'').decode()}")
            if msg.offset >= 1002:
                break
        late = [m.value for m in orders.read(partition=0, timestamp_ms=midpoint_ms)]
        print(f"replay partition 0 from timestamp {midpoint_ms}: {late}")

        started = time.perf_counter()
        total = value_bytes = 0
        for p in range(orders.partitions):
            offset = orders.start_offset(p)
            while offset < orders.end_offset(p):
                batch = orders.read_batch(p, offset, max_messages=10_000)
                values, _bounds = batch.value_buffer()  # all values, one buffer
                total += len(batch)
                value_bytes += len(values)
                offset = batch.next_offset
        elapsed = time.perf_counter() - started
        print(f"scanned {total:,} messages ({value_bytes / 1e6:.1f} MB) in {elapsed * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "store", nargs="?", default="demo-data", help="store directory (default: demo-data)"
    )
    main(parser.parse_args().store)
