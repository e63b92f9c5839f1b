"""``store.metrics()`` checked against what the store really holds (issue 17)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tidelog
from tidelog._optional import MissingDependencyError


def _open(path: Path) -> tidelog.Store:
    return tidelog.open(path)


def test_partition_figures_match_the_topic(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=4096) as store:
        t = store.create_topic("t", partitions=3)
        for i in range(300):
            t.append(b"x" * 50, partition=i % 3)
        t.append_batch([b"a", b"b"], partition=1)
        m = store.metrics()
        assert set(m["topics"]) == {"t"}
        parts = m["topics"]["t"]["partitions"]
        for p in range(3):
            got = parts[p]
            assert got["start_offset"] == t.start_offset(p)
            assert got["end_offset"] == t.end_offset(p)
            assert got["messages"] == t.end_offset(p) - t.start_offset(p)
            assert got["size_bytes"] == t.size_bytes(p)
            assert got["segments"] == t.segment_count(p) > 1
            assert got["dirty_ratio"] == pytest.approx(t.dirty_ratio(p))
            assert got["last_timestamp_ms"] is not None
        assert parts[1]["end_offset"] == 102
        assert m["topics"]["t"]["messages"] == 302
        assert m["topics"]["t"]["size_bytes"] == sum(t.size_bytes(p) for p in range(3))
        # The store's own topics are not listed; nothing ran, so no group, queue or producer.
        assert m["groups"] == {} and m["work_queues"] == {} and m["producers"] == {}
        assert tidelog._core.OFFSETS_TOPIC not in store.topics(internal=True)  # not made for it


def test_group_lag_is_end_minus_committed(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t", partitions=4)
        for i in range(400):
            t.append(b"%d" % i, partition=i % 4)
        with store.consumer("t", group="g") as c:
            c.commit({0: 10, 1: 100, 2: 0})
            c.commit({0: 10, 1: 100, 2: 0})
            for i in range(8):
                t.append(b"more", partition=i % 4)
            m = store.metrics()
        g = m["groups"]["g"]["t"]
        for p in range(4):
            end = t.end_offset(p)
            committed = {0: 10, 1: 100, 2: 0}.get(p)
            got = g["partitions"][p]
            assert got["end_offset"] == end
            assert got["committed"] == committed
            # Nothing committed: counted from the start, as consumer.lag() does.
            assert got["lag_messages"] == end - (committed if committed is not None else 0)
        assert g["partitions"][1]["lag_messages"] == 2
        assert g["lag_messages"] == sum(v["lag_messages"] for v in g["partitions"].values())
        assert g["members"] == 1 or g["members"] == 0  # the member may have left already
        assert store.groups()["g"]["t"]["lag"] == {
            p: v["lag_messages"] for p, v in g["partitions"].items()
        }


def test_lag_seconds_is_the_age_of_the_oldest_unconsumed_message(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t", partitions=2)
        t.append(b"old", partition=0, timestamp_ms=now - 60_000)
        t.append(b"newer", partition=0, timestamp_ms=now - 10_000)
        t.append(b"x", partition=1, timestamp_ms=now - 5_000)
        with store.consumer("t", group="g") as c:
            c.commit({0: 0, 1: 1})

            def seconds() -> tuple[float, float, float, float]:
                before = time.time() * 1000
                parts = store.metrics()["groups"]["g"]["t"]["partitions"]
                after = time.time() * 1000
                return parts[0]["lag_seconds"], parts[1]["lag_seconds"], before, after

            lag0, lag1, before, after = seconds()
            assert (before - (now - 60_000)) / 1000 - 0.002 <= lag0
            assert lag0 <= (after - (now - 60_000)) / 1000 + 0.002
            assert lag1 == 0.0  # caught up
            # The group is paused (nothing committed): its lag in seconds grows with the clock.
            time.sleep(0.05)
            again, _, before2, _ = seconds()
            assert again >= lag0 + (before2 - after) / 1000 - 0.002
            # Moving past the oldest message: the next one's age.
            c.commit({0: 1})
            lag0, _, before, after = seconds()
            assert (before - (now - 10_000)) / 1000 - 0.002 <= lag0
            assert lag0 <= (after - (now - 10_000)) / 1000 + 0.002
            c.commit({0: 2})
            assert seconds()[0] == 0.0
        # A message from the future (a producer's clock ahead) is no negative lag.
        t.append(b"future", partition=1, timestamp_ms=now + 3_600_000)
        assert store.metrics()["groups"]["g"]["t"]["partitions"][1]["lag_seconds"] == 0.0


def test_a_store_other_processes_write(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t", partitions=2)
        assert store.metrics()["topics"]["t"]["messages"] == 0
        writer = textwrap.dedent(
            f"""
            import tidelog
            with tidelog.open({str(tmp_path)!r}) as store:
                t = store.topic("t")
                for i in range(50):
                    t.append(b"x", partition=i % 2)
                with store.consumer("t", group="remote") as c:
                    c.commit({{0: 20, 1: 5}})
            """
        )
        subprocess.run([sys.executable, "-c", writer], check=True, timeout=60)
        m = store.metrics()
        assert [m["topics"]["t"]["partitions"][p]["end_offset"] for p in (0, 1)] == [25, 25]
        parts = m["groups"]["remote"]["t"]["partitions"]
        assert [parts[p]["committed"] for p in (0, 1)] == [20, 5]
        assert [parts[p]["lag_messages"] for p in (0, 1)] == [5, 20]
        assert m["groups"]["remote"]["t"]["members"] == 0  # it left


def test_producer_figures_are_the_producers_own(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t")
        with store.producer(
            name="shedder",
            buffer_messages=100,
            high_watermark=1.0,
            low_watermark=0.5,
            on_full="shed",
            linger_ms=5000,
        ) as producer:
            time.sleep(0.05)
            for i in range(300):
                producer.send("t", b"%d" % i, priority=[0, 2, 1][i % 3])
            producer.flush()
            stats = producer.stats()
            got = store.metrics()["producers"]["shedder"]
        assert got["sent"] == stats["sent"]
        assert got["written"] == stats["written"] == store.topic("t").end_offset(0)
        assert got["dropped"] == dict(stats["dropped"])
        assert sum(got["dropped"].values()) + got["written"] == 300
        assert got["high_watermark_hits"] == stats["high_watermark_hits"] >= 1
        assert got["blocked_seconds"] == stats["blocked_seconds"]
        assert store.metrics()["producers"] == {}  # closed producers are left out


def test_work_queue_figures(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("jobs")
        for i in range(10):
            t.append(b"%d" % i)
        with store.work_queue("jobs", group="w", dead_letter="jobs.dead") as queue:
            first = queue.acquire(timeout=0)
            assert first is not None
            queue.release(first)
            again = queue.acquire(timeout=0)
            assert again is not None and again.delivery_count == 2
            bad = queue.acquire(timeout=0)
            assert bad is not None
            queue.reject(bad)
            done = queue.acquire(timeout=0)
            assert done is not None
            queue.ack(done)
            queue.flush()
            q = store.metrics()["work_queues"]["w"]["jobs"]
            assert q["dead_lettered"] == 1
            assert q["acked"] == 1
            assert q["redelivered"] >= 1  # `again`, held for the second time
            assert q["in_flight"] >= 1
            assert q["backlog"] + q["in_flight"] == 10 - 2
            queue.ack(again)
        q = store.metrics()["work_queues"]["w"]["jobs"]
        # A lifetime counter: `again` was handed out a second time, finished or not.
        assert q["acked"] == 2 and q["redelivered"] == 1 and q["in_flight"] == 0
        assert q["backlog"] == 7


def test_recovery_counts_a_torn_tail(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        for i in range(20):
            t.append(b"job %05d" % i)
    log = sorted((tmp_path / "topics" / "t" / "0").glob("*.log"))[-1]
    size = len(log.read_bytes().rstrip(b"\0"))
    with open(log, "r+b") as f:
        f.seek(size - 4)
        f.write(b"\0" * 4)
    with tidelog.open(tmp_path) as store:
        rec = store.metrics()["recovery"]
        (event,) = store.stats()["recovery"]
        assert rec["torn_tail"] == {"events": 1, "bytes": event["bytes"]}
        assert event["bytes"] > 0
        assert rec["quarantined"] == {"events": 0, "bytes": 0}


def test_a_deleted_topic_is_left_out(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("a")
        store.create_topic("b").append(b"x")
        with store.consumer("b", group="g") as c:
            c.commit({0: 1})
        store.delete_topic("b")
        m = store.metrics()
        assert set(m["topics"]) == {"a"}
        assert "b" not in m["groups"].get("g", {})


def test_a_closed_store_raises(tmp_path: Path) -> None:
    store = tidelog.open(tmp_path)
    store.close()
    with pytest.raises(tidelog.StoreClosedError):
        store.metrics()


def test_the_missing_dependency_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tidelog.metrics

    for name in ("prometheus_client", "prometheus_client.core", "opentelemetry.metrics"):
        monkeypatch.setitem(sys.modules, name, None)
    with tidelog.open(tmp_path) as store:
        with pytest.raises(MissingDependencyError) as info:
            tidelog.metrics.register_prometheus(store)
        assert "pip install prometheus_client" in str(info.value)
        assert isinstance(info.value, tidelog.TidelogError)
        assert isinstance(info.value, ImportError)
        again = pickle.loads(pickle.dumps(info.value))
        assert type(again) is MissingDependencyError and str(again) == str(info.value)
        with pytest.raises(MissingDependencyError, match="opentelemetry-api"):
            tidelog.metrics.register_opentelemetry(store)


def test_lag_seconds_of_groups_inside_one_stored_batch(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    with tidelog.open(tmp_path) as store:
        t = store.create_topic("t")
        t.append_batch([b"a%d" % i for i in range(10)], timestamp_ms=now - 50_000)
        t.append_batch([b"b%d" % i for i in range(10)], timestamp_ms=now - 20_000)
        for group, offset in (("x", 3), ("y", 7), ("z", 10), ("w", 19), ("v", 20)):
            with store.consumer("t", group=group) as c:
                c.commit({0: offset})
        before = time.time() * 1000
        groups = store.metrics()["groups"]
        after = time.time() * 1000

        def age(group: str) -> float:
            seconds: float = groups[group]["t"]["partitions"][0]["lag_seconds"]
            return seconds

        for group, stamp in (("x", now - 50_000), ("y", now - 50_000), ("z", now - 20_000)):
            assert (before - stamp) / 1000 - 0.002 <= age(group) <= (after - stamp) / 1000 + 0.002
        assert age("w") == age("z")  # the same batch, the same timestamp
        assert age("v") == 0.0
        assert groups["x"]["t"]["lag_messages"] == 17


def test_lag_seconds_at_a_compacted_hole_is_the_next_message(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    with tidelog.open(tmp_path, segment_bytes=4096) as store:
        t = store.create_topic("t", cleanup_policy="compact")
        for i in range(200):
            t.append(b"v%d" % i, key=b"k%d" % (i % 5), timestamp_ms=now - 100_000 + i * 100)
        t.compact()
        kept = [m.offset for m in t.read(0, 0)]
        hole = next(o for o in range(kept[-1]) if o not in kept)
        after_hole = next(o for o in kept if o > hole)
        expected = next(m.timestamp_ms for m in t.read(0, after_hole))
        with store.consumer("t", group="g") as c:
            c.commit({0: hole})
        before = time.time() * 1000
        seconds = store.metrics()["groups"]["g"]["t"]["partitions"][0]["lag_seconds"]
        assert (before - expected) / 1000 - 0.002 <= seconds <= (before - expected) / 1000 + 1
