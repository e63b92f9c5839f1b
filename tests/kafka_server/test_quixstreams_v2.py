"""examples/quix_totals.py, a Quix Streams application, runs unmodified on `serve_kafka()`.

Both processing guarantees, each over two runs: the second instance starts without local
state and must recover the running totals from the changelog topic the first one wrote.

Quix Streams declares confluent-kafka < 2.13 (3.28.1, the newest), which the project's
pinned 2.16.1 does not meet, so it lives in its own virtualenv (``.venv-quix``, made by
``make build`` from pyproject's ``quix`` extra) and the application runs there, as its own
process with its own client: that is also how it meets a broker in real life.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import tidelog
from tidelog.kafka_server import KafkaServer
from tidelog.offsets import OffsetStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "quix_totals.py"
PYTHON = Path(os.environ.get("TIDELOG_QUIX_PYTHON", REPO / ".venv-quix" / "bin" / "python"))

if not PYTHON.exists():
    pytest.skip(
        f"no Quix Streams interpreter at {PYTHON} (make build creates .venv-quix)",
        allow_module_level=True,
    )


def _run(address: str, state_dir: Path, *args: str) -> str:
    out = subprocess.run(
        [str(PYTHON), str(EXAMPLE), "--broker", address, "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-5000:]
    return out.stdout


def _expected(orders: int) -> dict[str, tuple[int, int]]:
    """Each customer's (total, orders) after the first ``orders`` orders (as the example)."""
    totals: dict[str, tuple[int, int]] = {}
    for i in range(orders):
        customer = f"customer-{i % 7}"
        total, count = totals.get(customer, (0, 0))
        totals[customer] = (total + i % 50 + 1, count + 1)
    return totals


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_totals_are_kept_across_instances(
    store: tidelog.Store, server: KafkaServer, tmp_path: Path, guarantee: str
) -> None:
    flags = ["--exactly-once"] if guarantee == "exactly-once" else []
    first = _run(server.address, tmp_path / "state-1", "--produce", "60", *flags)
    assert "processed 60 orders" in first, first
    # A new instance with no local state: its totals come back from the changelog topic.
    second = _run(server.address, tmp_path / "state-2", "--produce", "40", "--start", "60", *flags)
    assert "processed 40 orders" in second, second
    expected = _expected(100)
    for customer, (total, count) in expected.items():
        assert f"{customer}: total {total} over {count} orders" in second, second

    totals = store.topic("totals")
    written = [json.loads(m.value or b"") for p in range(totals.partitions) for m in totals.read(p)]
    assert len(written) == 100
    last = {v["customer"]: (v["total"], v["orders"]) for v in written}
    assert last == expected
    changelogs = [t for t in store.topics() if t.startswith("changelog__")]
    assert changelogs, store.topics()
    assert sum(store.topic(t).record_count() for t in changelogs) >= 14
    orders = store.topic("orders")
    committed = OffsetStore(store.native).committed("quix-totals", "orders", orders.incarnation)
    assert {p: c.offset for p, c in committed.items()} == {0: 100}
