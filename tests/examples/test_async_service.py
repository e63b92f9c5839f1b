"""examples/async_service.py serves real HTTP: every accepted order is billed, notified and
counted by the sync analytics process, once each."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tidelog

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "async_service.py"
ORDERS = 60


async def _drive(base: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/health") as r:
            assert r.status == 200 and await r.text() == "ok"
        async with http.post(f"{base}/orders", data=b"not json") as r:
            assert r.status == 400

        async def order(i: int) -> str:
            body = {"customer": f"c-{i % 7}", "amount_cents": 100 + i}
            async with http.post(f"{base}/orders", json=body) as r:
                assert r.status == 201, await r.text()
                reply = await r.json()
                assert reply["status"] == "accepted"
                return str(reply["id"])

        ids = await asyncio.gather(*(order(i) for i in range(ORDERS)))
        assert len(set(ids)) == ORDERS
        deadline = time.monotonic() + 60
        while True:
            async with http.get(f"{base}/stats") as r:
                stats: dict[str, Any] = await r.json()
            if stats["billed"] == stats["notified"] == stats["analytics_orders"] == ORDERS:
                return stats
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_orders_through_http_reach_every_consumer_once(tmp_path: Path, loop: str) -> None:
    store_dir = tmp_path / "shop"
    args = [sys.executable, str(EXAMPLE), "--store", str(store_dir), "--port", "0"]
    if loop == "uvloop":
        args.append("--uvloop")
    service = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None
        line = service.stdout.readline().strip()
        assert line.startswith("listening on http://"), line
        stats = asyncio.run(_drive(line.removeprefix("listening on ")))
        assert stats["accepted"] == ORDERS
        expected: Counter[str] = Counter()
        for i in range(ORDERS):
            expected[f"c-{i % 7}"] += 100 + i
        assert stats["revenue_cents_by_customer"] == dict(expected)
        service.send_signal(signal.SIGTERM)
        out, _ = service.communicate(timeout=60)
        assert service.returncode == 0
        assert "stopped:" in out
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
    with tidelog.open(store_dir) as store:
        invoiced: Counter[str] = Counter()
        for p in range(store.topic("invoices").partitions):
            for msg in store.topic("invoices").read(p, 0):
                invoiced[json.loads(msg.value or b"{}")["order"]] += 1
        assert len(invoiced) == ORDERS and set(invoiced.values()) == {1}
        notes = store.topic("notifications")
        assert sum(notes.end_offset(p) for p in range(notes.partitions)) == ORDERS
