"""The store's layout and defaults come from the core (``_core`` paths and ``DEFAULTS``)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import tidelog
from tidelog import _core


def test_the_core_names_the_directories_a_store_holds(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("orders", partitions=2)
        assert _core.topics_dir(tmp_path) == tmp_path / "topics"
        assert _core.topic_dir(tmp_path, "orders") == _core.topics_dir(tmp_path) / "orders"
        topic_dir = _core.topic_dir(tmp_path, "orders")
        assert (topic_dir / _core.TOPIC_META_FILE).is_file()
        for p in range(2):
            partition = _core.partition_dir(tmp_path, "orders", p)
            assert partition == topic_dir / str(p)
            assert partition.is_dir()
            assert all(
                s.name.endswith(_core.SEGMENT_DATA_SUFFIX) for s in _core.segment_files(partition)
            )
            assert _core.segment_files(partition)
        assert _core.work_queues_dir(tmp_path, "orders").parent.parent == tmp_path
        assert _core.producers_dir(tmp_path).parent == tmp_path


def test_internal_topic_names_carry_the_internal_prefix() -> None:
    assert _core.OFFSETS_TOPIC.startswith(_core.INTERNAL_PREFIX)
    assert _core.LEGACY_WORK_QUEUES_TOPIC.startswith(_core.INTERNAL_PREFIX)
    assert _core.TXN_LOCK_SUFFIX.startswith(_core.TXN_SUFFIX)


def test_partition_dir_checks_the_partition(tmp_path: Path) -> None:
    with pytest.raises(tidelog.InvalidConfigError, match="partition"):
        _core.partition_dir(tmp_path, "t", -1)


def test_open_takes_its_defaults_from_the_core() -> None:
    params = inspect.signature(tidelog.open).parameters
    own = [
        "segment_ms",
        "fsync",
        "fsync_interval_ms",
        "producer_expiry_ms",
        "on_corruption",
        "cleaner_interval_ms",
        "min_cleanable_dirty_ratio",
        "cleaner_bytes_per_second",
    ]
    for name in own:
        assert params[name].default == _core.DEFAULTS[name], name
    assert inspect.signature(tidelog.Store).parameters.keys() == params.keys()
    for name in own:
        assert inspect.signature(tidelog.Store).parameters[name].default == _core.DEFAULTS[name]


def test_defaults_cover_every_option_and_cannot_be_changed() -> None:
    params = inspect.signature(tidelog.open).parameters
    assert set(_core.DEFAULTS) == set(params) - {"path"}
    with pytest.raises(TypeError):
        _core.DEFAULTS["fsync"] = "always"  # type: ignore[index]


def test_a_new_store_stores_the_core_defaults(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        stored = store.settings
        for name, value in stored.items():
            assert value == _core.DEFAULTS[name], name
        assert store.fsync == _core.DEFAULTS["fsync"]


def test_delete_topic_removes_the_topics_state_in_the_core(tmp_path: Path) -> None:
    # The core alone: no Python step between the topic's deletion and its state's.
    with tidelog.open(tmp_path) as store:
        store.create_topic("t").append(b"x")
        store.create_topic("other")
        for name in ("t", "other"):
            queues = _core.work_queues_dir(tmp_path, name)
            queues.mkdir(parents=True, exist_ok=True)
            (queues / "state").write_bytes(b"old")
        store._core.delete_topic("t")
        assert not _core.work_queues_dir(tmp_path, "t").exists()
        assert (_core.work_queues_dir(tmp_path, "other") / "state").exists()
        assert not _core.topic_dir(tmp_path, "t").exists()
        assert store.topics() == ["other"]


def test_producer_options_take_their_defaults_from_the_core() -> None:
    params = inspect.signature(tidelog.Store.producer).parameters
    for name, value in _core.PRODUCER_DEFAULTS.items():
        assert params[name].default == value, name


def test_work_queue_files_are_named_and_listed_by_the_core(tmp_path: Path) -> None:
    from tidelog.queue_journal import list_queues, queue_files

    with tidelog.open(tmp_path) as store:
        store.create_topic("jobs")
        store.topic("jobs").append(b"job")
        for group in ("plain-name_1.x", "with space/é", ".hidden"):
            with store.work_queue("jobs", group=group) as queue:
                job = queue.acquire(timeout=1.0)
                assert job is not None
                queue.release(job)
        files = queue_files(tmp_path, "jobs", "with space/é")
        assert files.directory == _core.work_queues_dir(tmp_path, "jobs")
        assert files.name == "~" + "with space/é".encode().hex()
        assert files.snapshot.exists() or files.journal.exists()
        assert queue_files(tmp_path, "jobs", "plain-name_1.x").name == "plain-name_1.x"
        assert queue_files(tmp_path, "jobs", ".hidden").name == "~" + b".hidden".hex()
        assert list_queues(tmp_path) == sorted(
            ("jobs", g) for g in ("plain-name_1.x", "with space/é", ".hidden")
        )
