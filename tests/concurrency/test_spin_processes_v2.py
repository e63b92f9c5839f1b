"""A consumer in another process spinning on the doorbell (``spin_us``, issue 19) gets every
message a writer here appends, whether it lands while the consumer spins, as it gives up the
spin, or while it sleeps: a missed ring would show as a ``poll`` that waited out its timeout.
No timing is asserted.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import tidelog

CONSUMER = textwrap.dedent(
    """
    import sys
    import tidelog

    path, n, spin_us = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with tidelog.open(path) as store:
        with store.consumer("t", group="g", spin_us=spin_us) as consumer:
            print("ready", flush=True)
            got = []
            while len(got) < n:
                batch = consumer.poll(timeout=30)
                if not batch:
                    print(f"a poll waited out its timeout at {len(got)} of {n}", flush=True)
                    sys.exit(1)
                got.extend(int(m.value) for m in batch)
    assert sorted(got) == list(range(n)), "lost or repeated messages"
    print("got", len(got), flush=True)
    """
)


@pytest.mark.parametrize("spin_us", [0, 5, 200])
def test_a_spinning_consumer_process_gets_every_message(tmp_path: Path, spin_us: int) -> None:
    n = 1500
    path = tmp_path / "store"
    with tidelog.open(path) as store:
        topic = store.create_topic("t", partitions=2)
        child = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, str(path), str(n), str(spin_us)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            pause = threading.Event()
            for i in range(n):
                topic.append(b"%d" % i)
                # Gaps of 0 to 0.6 ms, so sends cross the consumer's spin at every point.
                if i % 4:
                    pause.wait(0.0002 * (i % 4))
            out, err = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert child.returncode == 0, (out + err).decode()
    assert out.endswith(b"got %d\n" % n)
