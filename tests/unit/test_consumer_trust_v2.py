"""What a consumer hands out when things go wrong (version 2: trust).

A fetch over several partitions that fails part way must not move past what it read but
did not hand out.
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import tidelog


def fill(topic: tidelog.Topic, n: int) -> None:
    for i in range(n):
        topic.append(b"%d" % i, partition=i % topic.partitions)


def test_a_fetch_failing_part_way_moves_past_nothing_it_read(tmp_path: Path) -> None:
    # A read of partition 1 stops at damage, and the next read there raises: a poll that
    # read partition 0 first in its round did not hand that out, so later polls (once the
    # application set partition 1 aside) must deliver it, not skip it.
    with tidelog.open(tmp_path, index_interval_bytes=256) as store:
        t = store.create_topic("t", partitions=2)
        for i in range(5):
            t.append(b"ok %d" % i, partition=0)
        for i in range(300):
            t.append(b"job %05d" % i, partition=1)
    log = Path(sorted(glob.glob(f"{tmp_path}/topics/t/1/*.log"))[-1])
    with open(log, "r+b") as f:
        f.seek(2000)
        byte = f.read(1)[0]
        f.seek(2000)
        f.write(bytes([byte ^ 4]))
    with tidelog.open(tmp_path) as store:
        t = store.topic("t")
        consumer = store.consumer("t", group="g")
        got = consumer.poll(max_messages=3, timeout=0)  # partition 0 first, up to the limit
        got += consumer.poll(max_messages=1000, timeout=0)  # 1 up to the damage, then 0
        assert [m.value for m in got if m.partition == 0] == [b"ok %d" % i for i in range(5)]
        t.append(b"ok 5", partition=0)
        with pytest.raises(tidelog.CorruptRecordError):
            consumer.poll(max_messages=1000, timeout=0)  # 0 first this time, then 1 raises
        consumer.pause(1)  # the application sets the damaged partition aside
        t.append(b"ok 6", partition=0)
        got = consumer.poll(max_messages=1000, timeout=0)
        assert [m.value for m in got] == [b"ok 5", b"ok 6"]
        consumer.close()
        assert consumer.committed()[0] == 7
