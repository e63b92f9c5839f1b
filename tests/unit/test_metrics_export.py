"""Metrics out: Prometheus scrapes (parsed by prometheus_client's own parser), OpenTelemetry
instruments, ``tidelog metrics`` and ``tidelog top --once`` (issue 17)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tidelog
import tidelog.metrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDELOG_DIR"}
    env.update(NO_COLOR="1", COLUMNS="200")
    return env


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )


def _fill(store: tidelog.Store) -> None:
    now = int(time.time() * 1000)
    t = store.create_topic("orders", partitions=3)
    for i in range(30):
        t.append(b"o%d" % i, partition=i % 3, timestamp_ms=now - 30_000)
    with store.consumer("orders", group="billing") as c:
        c.commit({0: 4, 1: 10})
    with store.work_queue("orders", group="mailers") as q:
        job = q.acquire(timeout=0)
        assert job is not None
        q.ack(job)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_a_prometheus_scrape_holds_the_metrics(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        _fill(store)
        registry = CollectorRegistry()
        collector = tidelog.metrics.register_prometheus(store, registry)
        store.topic("orders").append(b"late", partition=2)
        # Read at scrape time: the append above is in it.
        scraped = _samples(generate_latest(registry).decode())
        m = store.metrics()
        for p in range(3):
            part = m["topics"]["orders"]["partitions"][p]
            labels = {"topic": "orders", "partition": str(p)}
            assert scraped[_key("tidelog_partition_end_offset", **labels)] == part["end_offset"]
            assert scraped[_key("tidelog_partition_messages", **labels)] == part["messages"]
            assert scraped[_key("tidelog_partition_size_bytes", **labels)] == part["size_bytes"]
            g = m["groups"]["billing"]["orders"]["partitions"][p]
            labels = {"group": "billing", "topic": "orders", "partition": str(p)}
            assert scraped[_key("tidelog_group_lag_messages", **labels)] == g["lag_messages"]
            seconds = scraped[_key("tidelog_group_lag_seconds", **labels)]
            assert seconds == 0 if p == 1 else seconds >= 30  # partition 1 is caught up
        assert scraped[_key("tidelog_partition_end_offset", topic="orders", partition="2")] == 11
        lag = _key("tidelog_group_lag_messages", group="billing", topic="orders", partition="2")
        assert scraped[lag] == 11  # nothing committed: from the start
        acked = _key("tidelog_work_queue_acked_messages_total", group="mailers", topic="orders")
        assert scraped[acked] == 1
        assert scraped[_key("tidelog_recovery_events_total", kind="torn_tail")] == 0
        # Every family is named by the conventions: counters end in _total, units are spelled.
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            assert family.name.startswith("tidelog_")
            for s in family.samples:
                if family.type == "counter":
                    assert s.name.endswith(("_total", "_created"))
        registry.unregister(collector)
        assert generate_latest(registry) == b""


def test_a_closed_store_scrapes_empty(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    with tidelog.open(tmp_path) as store:
        _fill(store)
        tidelog.metrics.register_prometheus(store, registry)
    families = text_string_to_metric_families(generate_latest(registry).decode())
    assert not [s for f in families for s in f.samples]


def test_opentelemetry_instruments_observe_the_store(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with tidelog.open(tmp_path) as store:
        _fill(store)
        instruments = tidelog.metrics.register_opentelemetry(store, provider.get_meter("t"))
        assert len(instruments) == len(tidelog.metrics.METRICS)
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[str, list[Any]] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points[metric.name] = list(metric.data.data_points)
        lag = {
            dict(p.attributes)["partition"]: p.value for p in points["tidelog_group_lag_messages"]
        }
        assert lag == {"0": 6, "1": 0, "2": 10}
        ends = {
            dict(p.attributes)["partition"]: p.value for p in points["tidelog_partition_end_offset"]
        }
        assert ends == {"0": 10, "1": 10, "2": 10}
        assert [p.value for p in points["tidelog_work_queue_acked_messages"]] == [1]
    provider.shutdown()


def test_tidelog_metrics_prints_the_text_format(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        _fill(store)
    out = _cli("metrics", tmp_path)
    assert out.returncode == 0, out.stderr
    scraped = _samples(out.stdout)
    lag = _key("tidelog_group_lag_messages", group="billing", topic="orders", partition="0")
    assert scraped[lag] == 6
    # --dir works as for every other command; a directory that is no store is refused.
    again = _cli("--dir", tmp_path, "metrics")
    assert again.returncode == 0 and _samples(again.stdout)[lag] == 6
    bad = _cli("metrics", tmp_path / "nope")
    assert bad.returncode == 1 and "does not exist" in bad.stderr


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _serving(store_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "metrics", str(store_dir), "--serve", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_default_signals,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://\S+", line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        yield proc, match.group(0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_tidelog_metrics_serve_answers_scrapes_while_others_write(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        _fill(store)
        with _serving(tmp_path) as (proc, url):
            first = urllib.request.urlopen(url, timeout=30).read().decode()
            end = _key("tidelog_partition_end_offset", topic="orders", partition="1")
            assert _samples(first)[end] == 10
            store.topic("orders").append(b"new", partition=1)
            second = urllib.request.urlopen(url, timeout=30).read().decode()
            assert _samples(second)[end] == 11
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 143


def test_tidelog_metrics_serve_refuses_a_bad_address(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        _fill(store)
    out = _cli("metrics", tmp_path, "--serve", "nowhere")
    assert out.returncode == 2 and "HOST:PORT" in out.stderr


def test_top_once_shows_topics_groups_producers_and_queues(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        _fill(store)
        with store.producer(name="checkout") as producer:
            producer.send("orders", b"p")
            producer.flush()
            # Another process's view of a store this one is writing.
            out = _cli("top", tmp_path, "--once")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for title in ("topics", "consumer groups", "producers", "work queues", "recovery:"):
        assert title in text
    row = next(line for line in text.splitlines() if "billing" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[:4] == ["billing", "orders", "0", "17"]  # 6 + 0 + 10, and the producer's 1
    assert re.fullmatch(r"\d+\.\ds", cells[4]) and float(cells[4][:-1]) >= 30
    topic_row = next(line for line in text.splitlines() if line.startswith("│ orders"))
    assert [c.strip() for c in topic_row.strip("│ ").split("│")][1:3] == ["3", "31"]
    assert "checkout" in text  # the named producer, open in this process
    queue_row = next(line for line in text.splitlines() if "mailers" in line)
    assert [c.strip() for c in queue_row.strip("│ ").split("│")][2:6] == ["30", "0", "0", "1"]
