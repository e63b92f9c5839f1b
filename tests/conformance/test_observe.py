"""What a store tells about itself, on both backends: groups(), stats(), metrics(), latest().

Group names are unique per test: the Kafka broker is shared by the session and keeps groups
after their topics are dropped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import tidelog.metrics

from conformance.test_api import poll_until


def test_groups_stats_and_metrics_describe_a_lagging_group(store: Any) -> None:
    t = store.create_topic("obs", partitions=2)
    with store.producer() as producer:
        for i in range(5):
            producer.send("obs", b"%d" % i, partition=0 if i < 3 else 1)
        producer.flush()
        group = f"obs-{uuid.uuid4().hex[:8]}"
        with store.consumer("obs", group=group) as c:
            assert len(poll_until(c, 5)) == 5
            c.commit({0: 2, 1: 2})
            time.sleep(0.01)  # the message at offset 2 is now older than now_ms

            info = store.groups()[group]["obs"]
            assert info["committed"] == {0: 2, 1: 2}
            assert info["lag"] == {0: 1, 1: 0}
            assert sorted(p for ps in info["members"].values() for p in ps) == [0, 1]

            stats = store.stats()
            topic = stats["topics"]["obs"]
            assert topic["messages"] == 5
            assert topic["partitions"][0]["start_offset"] == 0
            assert topic["partitions"][0]["end_offset"] == 3
            assert topic["partitions"][1]["messages"] == 2
            assert stats["groups"][group]["obs"]["lag"] == {0: 1, 1: 0}
            (figures,) = stats["producers"].values()
            assert figures["sent"] == 5
            assert figures["written"] == 5

            m = store.metrics()
            g = m["groups"][group]["obs"]
            assert g["members"] == 1
            assert g["lag_messages"] == 1
            assert g["partitions"][0]["committed"] == 2
            assert g["partitions"][0]["lag_messages"] == 1
            assert g["partitions"][0]["lag_seconds"] > 0
            assert g["partitions"][1]["lag_seconds"] == 0.0
            assert m["topics"]["obs"]["partitions"][1]["end_offset"] == 2
            (pm,) = m["producers"].values()
            assert pm["sent"] == 5

            exported = {
                (spec.name, labels.get("group"), labels.get("partition")): value
                for spec, labels, value in tidelog.metrics.samples(m)
            }
            assert exported["tidelog_group_lag_messages", group, "0"] == 1.0
            assert exported["tidelog_partition_end_offset", None, "0"] == 3.0
    assert t.end_offset(0) == 3


def test_groups_leave_out_topics_without_groups(store: Any) -> None:
    store.create_topic("quiet")
    assert all("quiet" not in topics for topics in store.groups().values())
    assert store.stats()["topics"]["quiet"]["messages"] == 0


def test_latest_is_the_newest_value_per_key(store: Any) -> None:
    t = store.create_topic("kv", partitions=2, cleanup_policy="compact")
    t.append(b"1", key=b"a")
    t.append(b"2", key=b"b")
    t.append(b"3", key=b"a")
    t.append(b"4", key=b"c")
    t.append(None, key=b"b")  # a tombstone: b is deleted
    assert dict(t.latest()) == {b"a": b"3", b"c": b"4"}
