"""Writer child process of the reopen-after-SIGKILL benchmark.

Usage: ``python crash_writer.py STORE TOPIC FILL_BYTES``

Opens (and so recovers) the store, appends 1,000-value batches of 100-byte values until
partition 0 holds ``FILL_BYTES``, appends one more batch, prints ``ready <end offset>`` and
then appends forever, until the parent kills it with SIGKILL in the middle of an append.
"""

from __future__ import annotations

import sys

import numpy as np
import tidelog

VALUES = 1000
VALUE_BYTES = 100


def main(argv: list[str]) -> int:
    """Runs the writer; never returns normally once ready."""
    path, name, fill = argv[0], argv[1], int(argv[2])
    store = tidelog.open(path, fsync="never")
    topic = store.create_topic(name, partitions=1, exist_ok=True)
    rng = np.random.default_rng(7)
    buffer = rng.integers(0, 256, size=VALUES * VALUE_BYTES, dtype=np.uint8).tobytes()
    lengths = np.full(VALUES, VALUE_BYTES, dtype=np.int64)
    append = topic.append_batch
    while topic.size_bytes(0) < fill:
        for _ in range(100):
            append(buffer, lengths=lengths, partition=0)
    append(buffer, lengths=lengths, partition=0)
    print("ready", topic.end_offset(0), flush=True)
    while True:
        append(buffer, lengths=lengths, partition=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
