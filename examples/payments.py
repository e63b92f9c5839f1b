"""Payments, exactly once: every payment request is charged once, whatever crashes.

Clients submit payment requests, each with a unique payment id; like real clients they
retry after a timeout, so some requests arrive twice. A processor process reads the requests
with an exactly-once consumer and, for each, in ONE transaction:

- appends the charge to the ``payments.ledger`` topic (unless that payment id was already
  charged: the retry is answered without charging again), and
- commits its input offset.

The processor is SIGKILLed at random moments and restarted. Each restart opens the named
producer ``payment-processor`` again: the new instance fences the old one and aborts the
transaction it left open, so a half-processed request leaves no trace and is processed again.
The set of charged ids is rebuilt from the ledger on start, which is consistent with the
committed offsets because both are committed together.

At the end the ledger holds each payment exactly once and the totals match what clients asked
for. Run it with ``make payments`` (or ``python examples/payments.py --help``).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import tidelog

REQUESTS = "payments.requests"
LEDGER = "payments.ledger"
GROUP = "payment-processor"
PARTITIONS = 4
LEASE = 0.5  # seconds: a killed processor's partitions move on quickly


def submit(store: tidelog.Store, payments: int, retry_rate: float, seed: int) -> dict[str, int]:
    """Clients submit every payment, retrying some; returns the amount per payment id."""
    rng = random.Random(seed)
    amounts: dict[str, int] = {}
    with store.producer(name="checkout-clients") as producer:
        for i in range(payments):
            payment_id = f"pay-{i:06d}"
            amounts[payment_id] = rng.randint(100, 50_000)
            request = json.dumps({"id": payment_id, "cents": amounts[payment_id]}).encode()
            copies = 2 if rng.random() < retry_rate else 1
            for _ in range(copies):
                producer.send(REQUESTS, request, key=payment_id.encode())
        producer.flush()
    return amounts


def charged_ids(store: tidelog.Store) -> set[str]:
    """Payment ids in the ledger (committed transactions only: that is all a reader sees)."""
    ledger = store.topic(LEDGER)
    return {
        json.loads(m.value or b"")["id"] for p in range(ledger.partitions) for m in ledger.read(p)
    }


def process(path: str, delay_ms: float) -> None:
    """The processor: runs until the requests are drained (or it is killed)."""
    # Opening the named producer first fences a previous instance and finishes the
    # transaction it left, so what is read next is settled.
    with (
        tidelog.open(path) as store,
        store.producer(name=GROUP) as producer,
        store.consumer(REQUESTS, group=GROUP, delivery="exactly-once", lease_seconds=LEASE) as c,
    ):
        charged = charged_ids(store)
        requests = store.topic(REQUESTS)
        while True:
            batch = c.poll(max_messages=20, timeout=0.2)
            if not batch:
                committed = c.committed()
                ends = {p: requests.end_offset(p) for p in range(requests.partitions)}
                if all(committed.get(p, 0) >= end for p, end in ends.items()):
                    return  # every request is processed and committed
                continue
            with store.transaction(producer, c) as tx:
                fresh: list[str] = []
                for msg in batch:
                    request = json.loads(msg.value or b"")
                    if request["id"] in charged or request["id"] in fresh:
                        continue  # a client retry: already charged
                    fresh.append(request["id"])
                    tx.send(LEDGER, msg.value or b"", key=msg.key)
                time.sleep(delay_ms / 1000)  # the card network takes a moment
            charged.update(fresh)


def run_with_crashes(path: str, kills: int, delay_ms: float, seed: int) -> int:
    """Runs processor processes, killing them at random moments; returns the kills done."""
    rng = random.Random(seed)
    command = [sys.executable, __file__, "--store", path, "--role", "processor"]
    command += ["--delay-ms", str(delay_ms)]
    done = 0
    while True:
        child = subprocess.Popen(command)
        if done < kills:
            try:
                child.wait(timeout=rng.uniform(0.05, 0.4))
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
                child.wait()
                done += 1
                continue
        if child.wait() != 0:
            raise SystemExit(f"processor failed with exit status {child.returncode}")
        return done


def verify(store: tidelog.Store, amounts: dict[str, int]) -> bool:
    ledger = store.topic(LEDGER)
    seen: dict[str, int] = {}
    total = 0
    for p in range(ledger.partitions):
        for msg in ledger.read(p):
            entry = json.loads(msg.value or b"")
            seen[entry["id"]] = seen.get(entry["id"], 0) + 1
            total += entry["cents"]
    duplicated = [i for i, n in seen.items() if n > 1]
    missing = sorted(set(amounts) - set(seen))
    expected = sum(amounts.values())
    print(f"ledger: {sum(seen.values()):,} charges for {len(amounts):,} payments")
    print(f"  charged twice: {len(duplicated)}, never charged: {len(missing)}")
    print(f"  total charged: {total / 100:,.2f}, total requested: {expected / 100:,.2f}")
    return not duplicated and not missing and total == expected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="payments-data", help="store directory (cleared)")
    parser.add_argument("--payments", type=int, default=2_000, help="payments to submit")
    parser.add_argument("--retry-rate", type=float, default=0.1, help="share sent twice")
    parser.add_argument("--kills", type=int, default=5, help="processor crashes to cause")
    parser.add_argument("--delay-ms", type=float, default=2.0, help="work per transaction")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--role", choices=("main", "processor"), default="main")
    args = parser.parse_args()
    if args.role == "processor":
        process(args.store, args.delay_ms)
        return 0
    shutil.rmtree(args.store, ignore_errors=True)
    Path(args.store).mkdir(parents=True)
    with tidelog.open(args.store) as store:
        store.create_topic(REQUESTS, partitions=PARTITIONS)
        store.create_topic(LEDGER, partitions=PARTITIONS)
        amounts = submit(store, args.payments, args.retry_rate, args.seed)
        sent = sum(store.topic(REQUESTS).end_offset(p) for p in range(PARTITIONS))
    print(f"submitted {len(amounts):,} payments as {sent:,} requests (client retries included)")
    started = time.perf_counter()
    kills = run_with_crashes(args.store, args.kills, args.delay_ms, args.seed)
    elapsed = time.perf_counter() - started
    print(f"processed in {elapsed:.2f}s with {kills} processor crashes (SIGKILL) and restarts")
    with tidelog.open(args.store) as store:
        ok = verify(store, amounts)
    print("every payment charged exactly once" if ok else "MISMATCH: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
