"""`tidelog describe` of a compacted topic counts the records a read yields (its offsets
are sparse once compacted, so end - start overcounts), from the core's
``Topic.record_count``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tidelog


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)], capture_output=True, text=True
    )


def test_describe_counts_the_records_of_a_compacted_topic(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", 2, cleanup_policy="compact", segment_bytes=4096)
        for i in range(300):
            topic.append(b"x" * 50, key=b"k%d" % (i % 5), partition=i % 2)
        topic.append(None, key=b"k1", partition=1)  # a tombstone is still a record
        topic.compact()
        counted = {p: sum(1 for _ in topic.read(p)) for p in range(2)}
        assert sum(counted.values()) < 301
        assert {p: topic.record_count(p) for p in range(2)} == counted
        assert topic.record_count() == sum(counted.values())
        with pytest.raises(tidelog.PartitionNotFoundError):
            topic.record_count(5)
    done = cli("-d", tmp_path, "describe", "c", "--json")
    assert done.returncode == 0, done.stderr
    described = json.loads(done.stdout)
    assert described["records"] == sum(counted.values())
    assert {p: s["records"] for p, s in described["partitions"].items()} == {
        str(p): n for p, n in counted.items()
    }
    assert described["messages"] == 301  # end - start, as for any topic
    text = cli("-d", tmp_path, "describe", "c").stdout
    assert f"{sum(counted.values())} records (counted" in " ".join(text.split())
    header = next(line for line in text.splitlines() if "partition" in line)
    assert "records" in header and "messages" not in header


def test_describe_of_a_plain_topic_keeps_counting_offsets(tmp_path: Path) -> None:
    with tidelog.open(tmp_path) as store:
        topic = store.create_topic("plain")
        topic.append_batch([b"a", b"b", b"c"])
        assert topic.record_count() == 3
    described = json.loads(cli("-d", tmp_path, "describe", "plain", "--json").stdout)
    assert described["messages"] == 3 and "records" not in described
