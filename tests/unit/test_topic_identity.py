"""A topic's identity: deletion seen by every handle, re-creation as a new topic, long names,
and the reserved internal names.

Two Store objects on one directory stand for two processes here (they share only files and
shared memory); tests/concurrency/test_topic_delete_processes.py does it with processes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tidelog


def test_handle_of_a_topic_deleted_elsewhere_refuses_every_call(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as a, tidelog.open(tmp_path) as b:
        t = a.create_topic("t", partitions=2)
        t.append(b"x", partition=0)
        b.delete_topic("t")
        with pytest.raises(tidelog.TopicNotFoundError):
            t.append(b"lost", partition=0)
        with pytest.raises(tidelog.TopicNotFoundError):
            t.append_batch([b"lost"], partition=1)
        with pytest.raises(tidelog.TopicNotFoundError):
            t.end_offset(0)
        with pytest.raises(tidelog.TopicNotFoundError):
            list(t.read(0, 0))
        with pytest.raises(tidelog.TopicNotFoundError):
            a.topic("t")


def test_recreated_topic_never_holds_the_old_messages(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=1 << 16) as a, tidelog.open(tmp_path) as b:
        old = a.create_topic("t")
        for i in range(100):
            old.append(b"old %d" % i)
        b.delete_topic("t")
        new = b.create_topic("t")
        new.append(b"new")
        # Enough to roll the old handle's segment if it still wrote.
        for _ in range(3):
            with pytest.raises(tidelog.TopicNotFoundError):
                old.append_batch([b"o" * 1000] * 60)
        again = a.topic("t")
        assert again is not old
        assert [m.value for m in again.read(0, 0)] == [b"new"]
        again.append(b"new 2")
        assert [m.value for m in b.topic("t").read(0, 0)] == [b"new", b"new 2"]
    with tidelog.open(tmp_path) as c:
        assert [m.value for m in c.topic("t").read(0, 0)] == [b"new", b"new 2"]


def test_producer_of_another_store_fails_on_a_deleted_topic_then_writes_the_new_one(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as a, tidelog.open(tmp_path) as b:
        a.create_topic("t")
        producer = a.producer()
        producer.send("t", b"before")
        producer.flush()
        b.delete_topic("t")
        with pytest.raises(tidelog.TopicNotFoundError):
            producer.send("t", b"lost")
            producer.flush()
        b.create_topic("t")
        producer.send("t", b"after")
        producer.flush()
        producer.close()
        assert [m.value for m in b.topic("t").read(0, 0)] == [b"after"]


def test_consumer_of_a_deleted_topic_raises(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as a, tidelog.open(tmp_path) as b:
        a.create_topic("t").append(b"x")
        consumer = a.consumer("t", group="g")
        assert [m.value for m in consumer.poll(timeout=1.0)] == [b"x"]
        b.delete_topic("t")
        with pytest.raises(tidelog.TopicNotFoundError):
            consumer.poll(timeout=0.1)


def test_topic_meta_has_an_incarnation_and_old_meta_still_opens(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t", partitions=2).append(b"x", partition=1)
    meta = tmp_path / "topics" / "t" / "topic.meta"
    lines = meta.read_text().splitlines()
    assert lines[0] == "partitions 2"
    assert any(line.startswith("incarnation ") and len(line.split()[1]) == 16 for line in lines)
    meta.write_text("partitions 2\n")  # as the first version wrote it
    with tidelog.open(tmp_path) as store:
        t = store.topic("t")
        assert [m.value for m in t.read(1, 0)] == [b"x"]
        t.append(b"y", partition=1)
        store.delete_topic("t")
        assert store.topics() == []
        store.create_topic("t", partitions=2)
        assert store.topic("t").end_offset(1) == 0


@pytest.mark.parametrize("length", [222, 223, 224, 240, 249])
def test_longest_names_create_append_delete_recreate(tmp_path: Path, length: int) -> None:
    name = "n" * length
    with tidelog.open(tmp_path) as store:
        store.create_topic(name, partitions=2).append(b"old", partition=0)
        assert store.topics() == [name]
        store.delete_topic(name)
        assert store.topics() == []
        t = store.create_topic(name, partitions=2)
        t.append(b"new", partition=0)
        assert [m.value for m in t.read(0, 0)] == [b"new"]
    left = sorted(p.name for p in (tmp_path / "topics").iterdir() if p.name != ".lock")
    assert left == [name]


def test_leftovers_of_interrupted_creates_and_deletes_are_cleaned_on_open(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("keep").append(b"x")
    topics = tmp_path / "topics"
    for leftover in [".tmp-0123456789abcdef", ".deleted-fedcba9876543210"]:
        (topics / leftover / "0").mkdir(parents=True)
        (topics / leftover / "topic.meta").write_text("partitions 1\n")
    with tidelog.open(tmp_path) as store:
        assert store.topics() == ["keep"]
        assert [m.value for m in store.topic("keep").read(0, 0)] == [b"x"]
    assert sorted(p.name for p in topics.iterdir() if not p.name.startswith(".lock")) == ["keep"]


def test_internal_topics_are_refused_and_unchanged(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t").append(b"x")
        with store.consumer("t", group="g") as consumer:
            consumer.poll(timeout=1.0)
            consumer.commit()
        before = store.topic("__consumer_offsets").partitions
        with pytest.raises(tidelog.InvalidConfigError, match="reserved"):
            store.create_topic("__consumer_offsets", partitions=3)
        with pytest.raises(tidelog.InvalidConfigError, match="reserved"):
            store.create_topic("__consumer_offsets", partitions=before, exist_ok=True)
        with pytest.raises(tidelog.InvalidConfigError, match="reserved"):
            store.delete_topic("__consumer_offsets")
        with pytest.raises(tidelog.InvalidConfigError, match="reserved"):
            store.create_topic("__mine")
        with pytest.raises(tidelog.InvalidConfigError, match="reserved"):
            store.delete_topic("__missing")
        assert store.topic("__consumer_offsets").partitions == before
        assert "__consumer_offsets" in store.topics(internal=True)
        assert "__consumer_offsets" not in store.topics()
        with store.consumer("t", group="g") as consumer:
            assert consumer.committed() == {0: 1}
    # A name with one underscore, or with "__" inside, is an ordinary name.
    with tidelog.open(tmp_path) as store:
        store.create_topic("_one")
        store.create_topic("a__b")
        store.delete_topic("_one")
        store.delete_topic("a__b")


def test_deleting_a_topic_takes_its_groups_and_queues_along(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t").append(b"x")
        with store.consumer("t", group="g") as consumer:
            consumer.poll(timeout=1.0)
            consumer.commit()
        assert (tmp_path / "groups" / "t").exists()
        store.delete_topic("t")
        assert not (tmp_path / "groups" / "t").exists()
        store.create_topic("t").append(b"y")
        with store.consumer("t", group="g") as consumer:
            assert [m.value for m in consumer.poll(timeout=1.0)] == [b"y"]


def test_a_consumer_of_a_deleted_topic_commits_nothing_into_the_new_one(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as a, tidelog.open(tmp_path) as b:
        a.create_topic("t").append_batch([b"old 0", b"old 1"])
        consumer = a.consumer("t", group="g")
        assert len(consumer.poll(timeout=1.0)) == 2  # delivered, not committed yet
        b.delete_topic("t")
        with pytest.raises(tidelog.TopicNotFoundError):
            consumer.poll(timeout=0.1)
        consumer.close()  # nothing left to commit: no error
        b.create_topic("t").append(b"new")
        with b.consumer("t", group="g") as again:
            assert [m.value for m in again.poll(timeout=1.0)] == [b"new"]
            assert again.committed() == {}


def test_a_work_queue_of_a_deleted_topic_writes_nothing_into_the_new_one(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as a, tidelog.open(tmp_path) as b:
        a.create_topic("t").append(b"old")
        queue = a.work_queue("t", group="q")
        job = queue.acquire(timeout=1.0)
        assert job is not None and job.value == b"old"
        b.delete_topic("t")
        assert not (tmp_path / "work_queues" / "t").exists()
        b.create_topic("t").append(b"new")
        with b.work_queue("t", group="q") as fresh:
            with pytest.raises(tidelog.TopicNotFoundError):
                queue.ack(job)  # written at once, or buffered until the flush
                queue.flush()
            queue.close()  # nothing left to write to: no error
            again = fresh.acquire(timeout=1.0)
            assert again is not None and again.value == b"new" and again.offset == 0
            fresh.ack(again)


def _delete_without_forgetting(store: tidelog.Store, name: str) -> None:
    """The first half of ``delete_topic``: the process dies before the commits are forgotten."""
    store._core.delete_topic(name)


def test_commits_of_a_deleted_topic_never_apply_to_the_topic_created_again(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t").append_batch([b"old %d" % i for i in range(10)])
        with store.consumer("t", group="g") as consumer:
            assert len(consumer.poll(timeout=1.0)) == 10
            consumer.commit()
        _delete_without_forgetting(store, "t")
    with tidelog.open(tmp_path) as store:
        store.create_topic("t").append_batch([b"new %d" % i for i in range(20)])
        with store.consumer("t", group="g") as consumer:
            assert consumer.committed() == {}
            assert store.groups()["g"]["t"]["committed"] == {}
            got = [m.value for m in consumer.poll(timeout=1.0)]
            assert got == [b"new %d" % i for i in range(20)]
        assert store.groups()["g"]["t"]["committed"] == {0: 20}


def test_forgetting_a_deleted_topic_keeps_the_commits_of_the_topic_created_again(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path) as a, tidelog.open(tmp_path) as b:
        old = a.create_topic("t")
        old.append_batch([b"old 0", b"old 1"])
        with a.consumer("t", group="g") as consumer:
            consumer.poll(timeout=1.0)
            consumer.commit()
        deleted = a._core.topic("t").incarnation
        # a deletes; before a forgets the old commits, b creates the topic again and commits.
        _delete_without_forgetting(a, "t")
        b.create_topic("t").append_batch([b"new 0", b"new 1", b"new 2"])
        with b.consumer("t", group="g") as consumer:
            assert len(consumer.poll(timeout=1.0)) == 3
            consumer.commit()
        a._offset_store().forget_topic("t", deleted)
        with b.consumer("t", group="g") as consumer:
            assert consumer.committed() == {0: 3}
            assert consumer.poll(timeout=0.1) == []
