"""``store.metrics()`` (issue 17, second part): the lifetime compaction count kept by the core,
work queues' redeliveries as a lifetime counter, and lag in seconds found inside stored batches
of every entry layout."""

from __future__ import annotations

import time
from pathlib import Path

import tidelog
import tidelog.metrics
from prometheus_client.parser import text_string_to_metric_families

Scrape = dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]


def _scrape(store: tidelog.Store) -> Scrape:
    """``{family: (type, {labels: value})}`` of a Prometheus scrape of ``store``."""
    text = tidelog.metrics.prometheus_text(store).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        values = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        out[family.name] = (family.type, values)
    return out


def _fill(topic: tidelog.Topic, n: int, keys: int) -> None:
    for i in range(n):
        topic.append(b"%d-" % i + b"x" * 100, key=b"k%d" % (i % keys))


def _compactions(store: tidelog.Store, topic: str = "c") -> int:
    count: int = store.metrics()["topics"][topic]["partitions"][0]["compactions"]
    return count


def test_compactions_count_each_compaction_that_did_work_and_survive_recovery(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        store.create_topic("plain")
        assert _compactions(store) == 0
        _fill(topic, 300, keys=10)
        assert topic.compact()["records_removed"] > 0
        assert _compactions(store) == 1
        # Nothing new sealed: this compaction has nothing to do and is not counted.
        topic.compact()
        assert _compactions(store) == 1
        _fill(topic, 300, keys=10)
        topic.compact()
        assert _compactions(store) == 2
        assert _compactions(store, "plain") == 0
        family = _scrape(store)["tidelog_partition_compactions"]
        assert family[0] == "counter"
        assert family[1][(("partition", "0"), ("topic", "c"))] == 2.0
    # Reopening runs recovery (which re-lists segments and bumps the control block's own
    # count of segment swaps): the count of compactions does not move.
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        assert _compactions(store) == 2
        _fill(store.topic("c"), 300, keys=10)
        store.topic("c").compact()
        assert _compactions(store) == 3


def test_redelivered_is_a_lifetime_counter(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("jobs")
        for i in range(10):
            t.append(b"%d" % i)
        with store.work_queue("jobs", group="w") as queue:
            first = queue.acquire(timeout=0)
            assert first is not None
            queue.release(first)
            again = queue.acquire(timeout=0)
            assert again is not None and again.delivery_count == 2
            queue.release(again)
            third = queue.acquire(timeout=0)
            assert third is not None and third.delivery_count == 3
            queue.ack(third)
            queue.flush()
            q = store.metrics()["work_queues"]["w"]["jobs"]
            # Handed out again twice, though finished now.
            assert q["redelivered"] == 2
            family = _scrape(store)["tidelog_work_queue_redelivered_messages"]
            assert family[0] == "counter"
            assert family[1][(("group", "w"), ("topic", "jobs"))] == 2.0
    # The count is part of the queue's state: another process (or a reopen) reads it too.
    with tidelog.open(tmp_path) as store:
        assert store.metrics()["work_queues"]["w"]["jobs"]["redelivered"] == 2


def test_lag_seconds_inside_batches_of_every_layout(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        # Full entries (tombstones), compact entries (values of several sizes), uniform (one
        # size).
        full = [b"v%d" % i if i % 5 else None for i in range(40)]
        t.append_batch(full, timestamp_ms=now - 90_000)
        t.append_batch([b"x" * (i % 7) for i in range(40)], timestamp_ms=now - 60_000)
        t.append_batch([b"y" * 8 for _ in range(40)], timestamp_ms=now - 30_000)
        stamps = {m.offset: m.timestamp_ms for m in t.read(0, 0)}
        offsets = [0, 1, 17, 39, 40, 41, 63, 79, 80, 99, 119]
        for offset in offsets:
            with store.consumer("t", group=f"g{offset}") as c:
                c.commit({0: offset})
        before = time.time() * 1000
        groups = store.metrics()["groups"]
        after = time.time() * 1000
        for offset in offsets:
            seconds = groups[f"g{offset}"]["t"]["partitions"][0]["lag_seconds"]
            stamp = stamps[offset]
            assert (before - stamp) / 1000 - 0.002 <= seconds <= (after - stamp) / 1000 + 0.002
            assert groups[f"g{offset}"]["t"]["lag_messages"] == 120 - offset
