"""Settings that shape files are stored with the store and the topic, shared by every process.

Two `Store` objects on one directory in one process reproduce the multi-process defects
(each maps the files itself, exactly as another process would); the tests that need another
interpreter spawn one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tidelog
from tidelog.errors import InvalidConfigError

SETTINGS = {
    "segment_bytes",
    "index_interval_bytes",
    "max_message_bytes",
    "retention_bytes",
    "retention_ms",
    "cleanup_policy",
    "delete_retention_ms",
    "compression",
}


def _read_all(topic: tidelog.Topic, partition: int = 0) -> list[bytes]:
    return [
        (m.value or b"")
        for m in topic.read(partition=partition, offset=topic.start_offset(partition))
    ]


# --- the defects of issue 13 item 5 ------------------------------------------------------


def test_a_reader_opened_with_smaller_segments_never_sees_false_corruption(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as first:
        first.create_topic("t").append(b"first")
    # Today this reader maps the active segment with its own (smaller) capacity and then
    # reports the writer's batches past it as corrupt; now the stored setting wins.
    with pytest.raises(InvalidConfigError) as raised:
        tidelog.open(tmp_path, segment_bytes=64 << 10)
    message = str(raised.value)
    assert "segment_bytes" in message and str(64 << 10) in message and str(64 << 20) in message
    assert "alter_topic" in message and "tidelog config" in message
    reader = tidelog.open(tmp_path)
    writer = tidelog.open(tmp_path)
    try:
        t_reader, t_writer = reader.topic("t"), writer.topic("t")
        values = [b"v%06d" % i + b"." * 1000 for i in range(300)]
        for v in values:
            t_writer.append(v)
        assert _read_all(t_reader) == [b"first", *values]
    finally:
        writer.close()
        reader.close()


def test_another_index_interval_is_refused_instead_of_filling_the_index(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=64 << 10) as first:
        first.create_topic("t").append(b"x")
    with pytest.raises(InvalidConfigError, match=r"index_interval_bytes=64 .*4096"):
        tidelog.open(tmp_path, index_interval_bytes=64)


def test_one_process_retention_does_not_delete_for_everyone(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=8 << 10) as first:
        t = first.create_topic("t")
        for i in range(100):
            t.append(b"%04d" % i + b"." * 500)
    with pytest.raises(InvalidConfigError, match="retention_bytes"):
        tidelog.open(tmp_path, retention_bytes=8 << 10)
    with tidelog.open(tmp_path) as again:
        t = again.topic("t")
        t.append(b"more")
        assert t.start_offset(0) == 0
        assert len(_read_all(t)) == 101


def test_segments_keep_the_geometry_they_were_created_with(tmp_path: Path) -> None:
    a = tidelog.open(tmp_path)
    b = tidelog.open(tmp_path)
    try:
        ta = a.create_topic("t", segment_bytes=64 << 10, index_interval_bytes=4096)
        ta.append(b"first")
        tb = b.topic("t")  # maps the active segment as created: 64 KiB, few index slots
        b.alter_topic("t", segment_bytes=1 << 20, index_interval_bytes=64)
        # A third opener sees the new settings but must map segment 0 as it was created.
        c = tidelog.open(tmp_path)
        try:
            tc = c.topic("t")
            values = [b"c%05d" % i + b"." * 100 for i in range(2000)]
            for i, v in enumerate(values):
                (tc if i % 2 else ta).append(v)
            assert _read_all(tb) == [b"first", *values]
            assert _read_all(tc) == _read_all(ta) == _read_all(tb)
            # Reads by offset use the indexes of every segment.
            for offset in (1, 700, 1500, 2000):
                assert next(iter(tb.read(partition=0, offset=offset))).offset == offset
        finally:
            c.close()
        logs = sorted((tmp_path / "topics" / "t" / "0").glob("*.log"))
        assert len(logs) == 2
        assert logs[0].stat().st_size <= 64 << 10
        # The segment created after the change has the new size and index cadence: 8-byte
        # offset index entries, one per 64 bytes of a 1 MiB segment, plus two.
        assert logs[1].stat().st_size == 1 << 20
        assert logs[1].with_suffix(".index").stat().st_size == ((1 << 20) // 64 + 2) * 8
    finally:
        b.close()
        a.close()


def test_alter_topic_is_seen_by_another_process_without_reopening(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t", max_message_bytes=4096)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, tidelog
                store = tidelog.open(sys.argv[1])
                t = store.topic("t")
                t.append(b"x" * 3000)
                print("ready", flush=True)
                sys.stdin.readline()
                try:
                    t.append(b"x" * 3000)
                    print("appended", flush=True)
                except tidelog.MessageTooLargeError as e:
                    print("too large", str(e), flush=True)
                print(sorted(t.config.items()), flush=True)
                store.close()
                """
            ),
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        with tidelog.open(tmp_path) as store:
            store.alter_topic("t", max_message_bytes=1000, retention_ms=3_600_000)
        child.stdin.write("go\n")
        child.stdin.flush()
        verdict = child.stdout.readline()
        config = child.stdout.readline()
    finally:
        child.stdin.close()
        status = child.wait(timeout=60)
        child.stdout.close()
    assert status == 0
    assert verdict.startswith("too large"), verdict
    assert "1000" in verdict
    assert "('max_message_bytes', 1000)" in config and "('retention_ms', 3600000)" in config


def test_retention_uses_the_topic_setting_in_every_process(tmp_path: Path) -> None:
    a = tidelog.open(tmp_path)
    b = tidelog.open(tmp_path)
    try:
        ta = a.create_topic("t", segment_bytes=8 << 10)
        tb = b.topic("t")
        for i in range(60):
            ta.append(b"%04d" % i + b"." * 500)
        assert ta.start_offset(0) == 0
        a.alter_topic("t", retention_bytes=16 << 10)
        # b rolls (and so applies retention) with the limit a set, without reopening.
        for i in range(60, 80):
            tb.append(b"%04d" % i + b"." * 500)
        start = tb.start_offset(0)
        assert start > 0
        assert ta.start_offset(0) == start
        size = sum(p.stat().st_size for p in (tmp_path / "topics" / "t" / "0").glob("*.log"))
        assert size <= (16 << 10) + 2 * (8 << 10)
        assert [int(v[:4]) for v in _read_all(ta)] == list(range(start, 80))
    finally:
        b.close()
        a.close()


# --- storing and showing settings -------------------------------------------------------


def test_open_creates_the_store_with_the_keywords_and_they_become_topic_defaults(
    tmp_path: Path,
) -> None:
    with tidelog.open(tmp_path, segment_bytes=1 << 20, retention_ms=60_000) as store:
        t = store.create_topic("t", partitions=2)
        assert set(t.config) == SETTINGS
        assert t.config["segment_bytes"] == 1 << 20
        assert t.config["retention_ms"] == 60_000
        assert t.config["retention_bytes"] is None
        assert t.config["max_message_bytes"] == 512 << 10
        assert t.config["cleanup_policy"] == "delete"
        assert t.config["compression"] == "none"
        own = store.create_topic("own", segment_bytes=4 << 20, retention_ms=None)
        assert own.config["segment_bytes"] == 4 << 20
        assert own.config["retention_ms"] is None
    # Reopening without keywords, or with the same values, uses the stored ones.
    with tidelog.open(tmp_path) as store:
        assert store.settings["segment_bytes"] == 1 << 20
        assert store.topic("own").config["segment_bytes"] == 4 << 20
    with tidelog.open(tmp_path, segment_bytes=1 << 20, retention_ms=60_000) as store:
        assert store.topic("t").config["retention_ms"] == 60_000
    assert (tmp_path / "tidelog.settings").is_file()


def test_alter_topic_persists_and_keeps_the_other_settings(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t", retention_ms=1000, segment_bytes=1 << 20)
        assert store.create_topic("t", exist_ok=True, retention_ms=1000).name == "t"
        with pytest.raises(tidelog.TopicExistsError, match="retention_ms=1000, not 5"):
            store.create_topic("t", exist_ok=True, retention_ms=5)
        store.alter_topic("t", retention_ms=None, retention_bytes=10 << 20)
        t = store.topic("t")
        assert t.config["retention_ms"] is None
        assert t.config["retention_bytes"] == 10 << 20
        assert t.config["segment_bytes"] == 1 << 20
    with tidelog.open(tmp_path) as store:
        assert store.topic("t").config["retention_bytes"] == 10 << 20
        assert "partitions 1" in (tmp_path / "topics" / "t" / "topic.meta").read_text()


def test_a_store_made_before_settings_were_stored_still_opens(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, segment_bytes=1 << 20) as store:
        store.create_topic("t", partitions=2).append(b"old", partition=1)
    # What an older tidelog left: no settings file, topic.meta with the partition count only.
    (tmp_path / "tidelog.settings").unlink()
    (tmp_path / "topics" / "t" / "topic.meta").write_text("partitions 2\n")
    # The first open records the keywords it was given (here what the old users passed).
    with tidelog.open(tmp_path, segment_bytes=1 << 20) as store:
        t = store.topic("t")
        assert t.partitions == 2
        assert [m.value for m in t.read(partition=1, offset=0)] == [b"old"]
        assert t.config["segment_bytes"] == 1 << 20
        t.append(b"new", partition=1)
    assert "segment_bytes 1048576" in (tmp_path / "tidelog.settings").read_text()
    with pytest.raises(InvalidConfigError, match="segment_bytes"):
        tidelog.open(tmp_path, segment_bytes=2 << 20)


def test_unsupported_and_bad_values_are_refused_by_name(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        with pytest.raises(InvalidConfigError, match=r"cleanup_policy.*keep"):
            store.create_topic("a", cleanup_policy="keep")
        with pytest.raises(InvalidConfigError, match=r'compression.*"gzip"'):
            store.create_topic("a", compression="gzip")
        with pytest.raises(InvalidConfigError, match=r"segment_bytes.*100"):
            store.create_topic("a", segment_bytes=100)
        with pytest.raises(InvalidConfigError, match=r"retention_ms.*-5"):
            store.create_topic("a", retention_ms=-5)
        with pytest.raises(InvalidConfigError, match="max_message_bytes"):
            store.create_topic("a", segment_bytes=8 << 10, max_message_bytes=1 << 20)
        assert store.topics() == []
        store.create_topic("t")
        with pytest.raises(InvalidConfigError, match=r"cleanup_policy.*keep"):
            store.alter_topic("t", cleanup_policy="keep")
        with pytest.raises(InvalidConfigError, match="change max_message_bytes too"):
            store.alter_topic("t", segment_bytes=8 << 10)
        store.alter_topic("t", segment_bytes=8 << 10, max_message_bytes=4 << 10)
        with pytest.raises(InvalidConfigError, match=r"retention_ms.*2\*\*63"):
            store.alter_topic("t", retention_ms=2**70)
        with pytest.raises(InvalidConfigError, match="no_such_setting"):
            store.alter_topic("t", no_such_setting=1)
        with pytest.raises(InvalidConfigError, match="reserved"):
            store.alter_topic("__consumer_offsets", retention_ms=1)
        with pytest.raises(tidelog.TopicNotFoundError):
            store.alter_topic("missing", retention_ms=1)
        with pytest.raises(TypeError, match="retention_ms"):
            store.alter_topic("t", retention_ms="soon")
        assert store.topic("t").config["cleanup_policy"] == "delete"
        store.alter_topic("t", cleanup_policy="delete", compression="none")
    with pytest.raises(InvalidConfigError, match=r'compression.*"gzip"'):
        tidelog.open(tmp_path / "other", compression="gzip")
    assert not (tmp_path / "other" / "tidelog.settings").exists()


def test_fsync_stays_per_process(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, fsync="always") as store:
        store.create_topic("t").append(b"x")
    with tidelog.open(tmp_path, fsync="interval", fsync_interval_ms=50) as store:
        assert store.fsync == "interval"
        store.topic("t").append(b"y")


def test_cli_config_shows_and_sets(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        store.create_topic("t")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tidelog", "config", "--dir", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    shown = cli("t")
    assert shown.returncode == 0, shown.stderr
    assert "segment_bytes" in shown.stdout and str(64 << 20) in shown.stdout
    changed = cli("t", "--set", "retention_ms=60000", "--set", "retention_bytes=none")
    assert changed.returncode == 0, changed.stderr
    with tidelog.open(tmp_path) as store:
        assert store.topic("t").config["retention_ms"] == 60_000
    bad = cli("t", "--set", "compression=gzip")
    assert bad.returncode != 0
    assert '"gzip"' in bad.stderr and "Traceback" not in bad.stderr
    malformed = cli("t", "--set", "retention_ms")
    assert malformed.returncode != 0 and "key=value" in malformed.stderr
