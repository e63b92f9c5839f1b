"""An async HTTP service on tidelog: orders in through an outbox, consumers in the same loop.

An aiohttp service takes orders (``POST /orders`` with a JSON body such as
``{"customer": "c-7", "amount_cents": 1250}``). The handler writes the order through an async
producer and answers ``201`` only once the order is in the log (the outbox pattern: nothing
is acknowledged that is not stored; what happens next is the consumers' business and
survives a crash of the service). In the same process and event loop:

- a **billing** task (consumer group ``billing``) turns each order into an invoice on the
  ``invoices`` topic, exactly once: the invoice and the order's offset commit in one
  transaction;
- a **notifications** task (group ``notifications``, at-least-once) "sends" a confirmation
  per order (here: counts it, and appends it to ``notifications``).

Next to them a **synchronous** consumer process (group ``analytics``, plain ``tidelog``,
no asyncio) reads the same orders and keeps revenue per customer. ``GET /stats`` shows what
each has done; ``GET /health`` answers ``ok``.

Run it::

    pip install aiohttp            # or: pip install "tidelog[aio]"
    python examples/async_service.py --store ./shop-data --port 8080
    curl -X POST localhost:8080/orders -d '{"customer": "c-7", "amount_cents": 1250}'
    curl localhost:8080/stats

SIGINT or SIGTERM stop it: the HTTP server first, then the consumers commit and leave, the
producer flushes, and the analytics process is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import tidelog
import tidelog.aio
from aiohttp import web

ORDERS = "orders"
INVOICES = "invoices"
NOTIFICATIONS = "notifications"
ANALYTICS = "analytics"
PARTITIONS = 4

STORE = web.AppKey("store", tidelog.aio.Store)
PRODUCER = web.AppKey("producer", tidelog.aio.Producer)


@dataclasses.dataclass
class Counts:
    """What this process has done."""

    accepted: int = 0
    billed: int = 0
    notified: int = 0


COUNTS = web.AppKey("counts", Counts)


# --------------------------------------------------------------------------- HTTP


async def create_order(request: web.Request) -> web.Response:
    """Validates the order, writes it to the log, answers once it is written."""
    try:
        body = await request.json()
        customer = str(body["customer"])
        amount = int(body["amount_cents"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(
            text='expected JSON {"customer": str, "amount_cents": int}'
        ) from None
    if amount <= 0 or not customer:
        raise web.HTTPBadRequest(text="amount_cents must be > 0 and customer non-empty")
    order = {"id": uuid.uuid4().hex, "customer": customer, "amount_cents": amount}
    producer = request.app[PRODUCER]
    sent = await producer.send(ORDERS, json.dumps(order).encode(), key=customer.encode())
    await sent  # in the log: now it may be acknowledged
    request.app[COUNTS].accepted += 1
    return web.json_response({"id": order["id"], "status": "accepted"}, status=201)


async def stats(request: web.Request) -> web.Response:
    """What the service and every consumer have done so far."""
    store = request.app[STORE]
    counts: dict[str, Any] = dataclasses.asdict(request.app[COUNTS])
    analytics = await store.topic(ANALYTICS)
    latest: dict[str, Any] = {}
    end = analytics.end_offset(0)
    if end:
        last = analytics.read_batch(0, end - 1, max_messages=1)[0]
        latest = json.loads(last.value or b"{}")
    counts["analytics_orders"] = latest.get("orders", 0)
    counts["revenue_cents_by_customer"] = latest.get("revenue_cents", {})
    return web.json_response(counts)


async def health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


# --------------------------------------------------------------------------- async consumers


async def billing(store: tidelog.aio.Store, counts: Counts) -> None:
    """Order -> invoice, exactly once (the invoice and the offset commit together)."""
    producer = await store.producer(name="billing")
    consumer = await store.consumer(ORDERS, group="billing", delivery="exactly-once")
    try:
        while True:
            orders = await consumer.poll(max_messages=100, timeout=1.0)
            if not orders:
                continue
            async with store.transaction(producer, consumer) as tx:
                for msg in orders:
                    order = json.loads(msg.value or b"{}")
                    invoice = {"order": order["id"], "due_cents": order["amount_cents"]}
                    await tx.send(INVOICES, json.dumps(invoice).encode(), key=msg.key)
            counts.billed += len(orders)
    finally:
        await consumer.close()
        await producer.close()


async def notifications(store: tidelog.aio.Store, counts: Counts) -> None:
    """One confirmation per order, at-least-once (committed once handled)."""
    producer = await store.producer()
    consumer = await store.consumer(ORDERS, group="notifications")
    try:
        async for msg in consumer:
            order = json.loads(msg.value or b"{}")
            text = f"thank you {order['customer']}, order {order['id'][:8]} is confirmed"
            await producer.send(NOTIFICATIONS, text.encode(), key=msg.key)
            counts.notified += 1
    finally:
        await consumer.close()
        await producer.close()


# --------------------------------------------------------------------------- sync process


def analytics_process(store_dir: str) -> None:
    """The synchronous consumer process: revenue per customer, published on ``analytics``."""
    stop = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with tidelog.open(store_dir) as store:
        out = store.topic(ANALYTICS)
        consumer = store.consumer(ORDERS, group="analytics")
        revenue: dict[str, int] = {}
        total = 0
        # Resume from the last published snapshot. At-least-once: a crash between publishing
        # and committing counts that batch twice (billing shows the exactly-once way).
        end = out.end_offset(0)
        if end:
            last = json.loads(out.read_batch(0, end - 1, max_messages=1)[0].value or b"{}")
            revenue, total = last["revenue_cents"], last["orders"]
        print("analytics ready", flush=True)
        while not stop:
            orders = consumer.poll(max_messages=500, timeout=0.2)
            if not orders:
                continue
            for msg in orders:
                order = json.loads(msg.value or b"{}")
                revenue[order["customer"]] = (
                    revenue.get(order["customer"], 0) + order["amount_cents"]
                )
            total += len(orders)
            snapshot = {"orders": total, "revenue_cents": revenue, "at": time.time()}
            out.append(json.dumps(snapshot).encode(), partition=0)
            consumer.commit()
        consumer.close()


# --------------------------------------------------------------------------- main


async def serve(store_dir: Path, host: str, port: int) -> None:
    """Runs the service until SIGINT or SIGTERM."""
    async with tidelog.aio.open(store_dir) as store:
        for name, partitions in ((ORDERS, PARTITIONS), (INVOICES, PARTITIONS)):
            await store.create_topic(name, partitions=partitions, exist_ok=True)
        await store.create_topic(NOTIFICATIONS, partitions=PARTITIONS, exist_ok=True)
        await store.create_topic(ANALYTICS, partitions=1, exist_ok=True)
        analytics = subprocess.Popen(
            [sys.executable, __file__, "analytics", "--store", str(store_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert analytics.stdout is not None
        if analytics.stdout.readline().strip() != "analytics ready":
            raise SystemExit("the analytics process did not start")

        counts = Counts()
        app = web.Application()
        app[STORE] = store
        app[PRODUCER] = await store.producer(name="orders-api")
        app[COUNTS] = counts
        app.add_routes(
            [
                web.post("/orders", create_order),
                web.get("/stats", stats),
                web.get("/health", health),
            ]
        )
        tasks = [
            asyncio.create_task(billing(store, counts), name="billing"),
            asyncio.create_task(notifications(store, counts), name="notifications"),
        ]
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        print(f"listening on http://{host}:{bound}", flush=True)

        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            done, _ = await asyncio.wait(
                [asyncio.create_task(stopping.wait()), *tasks],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in done:
                if task in tasks:
                    task.result()  # a consumer failed: report it
        finally:
            await runner.cleanup()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app[PRODUCER].close()
            analytics.terminate()
            analytics.wait(timeout=30)
            analytics.stdout.close()
        print(f"stopped: {json.dumps(dataclasses.asdict(counts))}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", nargs="?", default="service", choices=["service", "analytics"])
    parser.add_argument("--store", type=Path, default=Path("shop-data"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.role == "analytics":
        analytics_process(os.fspath(args.store))
        return
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.store, args.host, args.port))
    else:
        asyncio.run(serve(args.store, args.host, args.port))


if __name__ == "__main__":
    main()
