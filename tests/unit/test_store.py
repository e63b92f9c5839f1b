from __future__ import annotations

from pathlib import Path

import pytest
import tidelog


def test_open_creates_directory_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b"
    with tidelog.open(path) as store:
        store.create_topic("orders", partitions=3)
        assert store.topics() == ["orders"]
    with tidelog.open(path) as store:
        topic = store.topic("orders")
        assert (topic.name, topic.partitions) == ("orders", 3)


def test_create_topic_exists(store: tidelog.Store) -> None:
    store.create_topic("t", partitions=2)
    with pytest.raises(tidelog.TopicExistsError):
        store.create_topic("t", partitions=2)
    assert store.create_topic("t", partitions=2, exist_ok=True).partitions == 2
    with pytest.raises(tidelog.TopicExistsError, match="2 partitions"):
        store.create_topic("t", partitions=3, exist_ok=True)


def test_topics_sorted_and_delete(store: tidelog.Store) -> None:
    for name in ["b", "a", "c.d_e-f"]:
        store.create_topic(name)
    assert store.topics() == ["a", "b", "c.d_e-f"]
    topic = store.topic("b")
    store.delete_topic("b")
    assert store.topics() == ["a", "c.d_e-f"]
    with pytest.raises(tidelog.TopicNotFoundError):
        store.topic("b")
    with pytest.raises(tidelog.TopicNotFoundError):
        topic.append(b"x")
    with pytest.raises(tidelog.TopicNotFoundError):
        store.delete_topic("b")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "x" * 250, "sp ace", "ü"])
def test_bad_topic_names(store: tidelog.Store, name: str) -> None:
    with pytest.raises(tidelog.InvalidConfigError, match="topic name"):
        store.create_topic(name)


@pytest.mark.parametrize("partitions", [0, -1, 10_001])
def test_bad_partition_counts(store: tidelog.Store, partitions: int) -> None:
    with pytest.raises(tidelog.InvalidConfigError, match="partitions"):
        store.create_topic("t", partitions=partitions)


def test_wrong_argument_types_name_the_argument(store: tidelog.Store) -> None:
    with pytest.raises(TypeError, match="name"):
        store.create_topic(b"t")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="partitions"):
        store.create_topic("t", partitions="3")  # type: ignore[arg-type]


def test_missing_topic(store: tidelog.Store) -> None:
    with pytest.raises(tidelog.TopicNotFoundError, match="nope"):
        store.topic("nope")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("fsync", "sometimes"),
        ("segment_bytes", 0),
        ("segment_bytes", 100),
        ("max_message_bytes", -1),
        ("fsync_interval_ms", 0),
        ("retention_ms", -5),
    ],
)
def test_bad_options(tmp_path: Path, option: str, value: object) -> None:
    kwargs = {option: value}
    if option == "fsync_interval_ms":
        kwargs["fsync"] = "interval"
    with pytest.raises(tidelog.InvalidConfigError, match=option.split("_ms")[0]):
        tidelog.open(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a store")
    with pytest.raises(tidelog.InvalidConfigError, match="not a tidelog store"):
        tidelog.open(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "not a store"


def test_garbage_in_partition_directory_is_refused(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t")
    (tmp_path / "topics" / "t" / "0" / "junk.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(tidelog.InvalidConfigError, match=r"junk\.bin"):
        tidelog.open(tmp_path)


def test_use_after_close(tmp_path: Path) -> None:
    store = tidelog.open(tmp_path)
    topic = store.create_topic("t")
    store.close()
    store.close()
    assert store.closed
    with pytest.raises(tidelog.StoreClosedError):
        topic.append(b"x")
    with pytest.raises(tidelog.StoreClosedError):
        store.topic("t")
    with pytest.raises(tidelog.StoreClosedError):
        store.topics()


@pytest.mark.parametrize("fsync", ["never", "interval", "always"])
def test_fsync_policies_round_trip(tmp_path: Path, fsync: str) -> None:
    with tidelog.open(tmp_path, fsync=fsync, fsync_interval_ms=5) as store:  # type: ignore[arg-type]
        topic = store.create_topic("t")
        for i in range(50):
            topic.append(str(i).encode())
        store.sync()
    with tidelog.open(tmp_path) as store:
        assert [m.value for m in store.topic("t").read(0)] == [str(i).encode() for i in range(50)]


def test_errors_form_one_hierarchy() -> None:
    for name in [
        "TopicNotFoundError",
        "TopicExistsError",
        "OffsetOutOfRangeError",
        "CorruptRecordError",
        "MessageTooLargeError",
        "BackpressureError",
        "OutOfOrderSequenceError",
        "ProducerFencedError",
        "RebalanceError",
        "StoreLockedError",
        "StoreClosedError",
        "InvalidConfigError",
    ]:
        assert issubclass(getattr(tidelog, name), tidelog.TidelogError)
