"""`tidelog compact TOPIC` and the dirty ratio in `tidelog describe`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tidelog


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *map(str, args)], capture_output=True, text=True
    )


def test_compact_and_describe_show_the_dirty_ratio(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, cleaner_interval_ms=None) as store:
        topic = store.create_topic("c", cleanup_policy="compact", segment_bytes=4096)
        for i in range(300):
            topic.append(b"x" * 50, key=b"k%d" % (i % 5))
    described = json.loads(cli("-d", tmp_path, "describe", "c", "--json").stdout)
    assert described["cleanup_policy"] == "compact"
    assert described["dirty_ratio"] == 1.0
    assert described["partition_dirty_ratios"] == {"0": 1.0}
    assert "dirty ratio" in cli("-d", tmp_path, "describe", "c").stdout
    done = cli("-d", tmp_path, "compact", "c", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["records_removed"] > 200
    assert (report["dirty_ratio_before"], report["dirty_ratio_after"]) == (1.0, 0.0)
    text = cli("-d", tmp_path, "compact", "c")
    assert text.returncode == 0 and "dirty ratio 0.00 -> 0.00" in text.stdout
    with tidelog.open(tmp_path) as store:
        store.create_topic("plain")
    refused = cli("-d", tmp_path, "compact", "plain")
    assert refused.returncode == 1 and "not compacted" in refused.stderr
