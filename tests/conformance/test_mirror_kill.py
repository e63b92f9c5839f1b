"""``tidelog mirror`` killed at random points while a local producer keeps writing.

After 20 SIGKILLs and a final catch-up run, every local message is in Kafka exactly once,
in order, partition i in partition i.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tidelog

from benches.kafka.broker import KafkaBroker

pytestmark = [pytest.mark.kafka, pytest.mark.crash, pytest.mark.timeout(600)]

PARTITIONS = 3

_WRITER = """
import sys, time, tidelog
with tidelog.open(sys.argv[1]) as store:
    topic = store.topic("edge")
    seq = 0
    while True:
        p = seq % 3
        topic.append(b"%d" % seq, key=b"k%d" % (seq % 7), headers={"seq": b"%d" % seq},
                     partition=p)
        seq += 1
        if seq % 50 == 0:
            time.sleep(0.01)
"""


def _default_signals() -> None:
    # The child must not inherit the test runner's dispositions (SIG_IGN would survive exec).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _mirror(store: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tidelog", "mirror", str(store), "edge", url, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_default_signals,
    )


def _values(topic: object, partition: int, count: int = 0) -> list[bytes | None]:
    # Kafka writes a transaction's commit markers just after commit_transaction returns:
    # wait until ``count`` messages are visible (or 30 s passed), then compare.
    end = time.monotonic() + 30
    while True:
        values = [m.value for m in topic.read(partition)]  # type: ignore[attr-defined]
        if len(values) >= count or time.monotonic() > end:
            return values
        time.sleep(0.05)


def test_mirror_survives_sigkill_exactly_once_in_order(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    url = f"kafka://{kafka_broker.bootstrap}"
    store_dir = tmp_path / "edge-store"
    with tidelog.open(store_dir) as local:
        local.create_topic("edge", partitions=PARTITIONS)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(store_dir)], preexec_fn=_default_signals
    )
    rng = random.Random(int(os.environ.get("TIDELOG_SEED", "16")))
    try:
        for _ in range(20):
            mirror = _mirror(store_dir, url)
            time.sleep(rng.uniform(0.2, 2.5))  # from start-up to mid-transaction
            assert mirror.poll() is None, mirror.stderr.read() if mirror.stderr else b""
            mirror.send_signal(signal.SIGKILL)
            mirror.communicate(timeout=30)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    final = _mirror(store_dir, url, "--until-caught-up")
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode(errors="replace")
    with tidelog.open(store_dir) as local, tidelog.open(url) as kafka:
        src, dest = local.topic("edge"), kafka.topic("edge")
        total = 0
        for p in range(PARTITIONS):
            expected = _values(src, p)
            assert _values(dest, p, len(expected)) == expected
            total += len(expected)
        assert total > 1000  # the writer really wrote while the mirror was killed
        sample = next(iter(dest.read(0)))
        assert sample.headers["seq"] == sample.value
        kafka.delete_topic("edge")


def test_mirror_stops_cleanly_on_sigterm(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    url = f"kafka://{kafka_broker.bootstrap}"
    store_dir = tmp_path / "edge-store"
    with tidelog.open(store_dir) as local:
        local.create_topic("edge", partitions=PARTITIONS).append_batch(
            [b"%d" % i for i in range(100)], partition=1
        )
    mirror = _mirror(store_dir, url)
    with tidelog.open(url) as kafka:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if "edge" in kafka.topics() and kafka.topic("edge").end_offset(1) > 100:
                break
            time.sleep(0.1)
        mirror.send_signal(signal.SIGTERM)
        _, err = mirror.communicate(timeout=60)
        assert mirror.returncode == 143, err.decode(errors="replace")
        assert b"mirrored 100 messages" in err
        assert _values(kafka.topic("edge"), 1, 100) == [b"%d" % i for i in range(100)]
        kafka.delete_topic("edge")
