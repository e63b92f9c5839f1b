"""Replay a topic into DuckDB through Apache Arrow and query it with SQL.

    python examples/replay_to_duckdb.py [STORE_DIR]

Writes a day of page views (JSON values, keyed by user, a header naming the device) into a
topic of 4 partitions, then replays every partition with ``topic.to_arrow()``: the value
column of each Arrow table points straight into the memory-mapped segments, so DuckDB scans
the stored bytes without tidelog copying them into Python objects. The query decodes the
JSON in DuckDB and ranks pages by views and distinct users; a second query replays only an
offset range: the last 100 messages of each partition.

Needs the optional packages pyarrow and duckdb (``pip install 'tidelog[duckdb]'``).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import tidelog

PAGES = ["/", "/pricing", "/docs", "/blog", "/signup", "/login", "/careers"]
DEVICES = [b"mobile", b"desktop", b"tablet"]
VIEWS = 50_000
PARTITIONS = 4


def fill(topic: tidelog.Topic, seed: int = 7) -> None:
    rng = random.Random(seed)
    start_ms = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    for i in range(VIEWS):
        user = rng.randrange(2_000)
        page = PAGES[min(int(rng.expovariate(0.6)), len(PAGES) - 1)]
        value = json.dumps({"user": user, "page": page, "ms": rng.randrange(50, 3_000)})
        topic.append(
            value.encode(),
            key=b"user-%d" % user,
            headers={"device": rng.choice(DEVICES)},
            timestamp_ms=start_ms + i * 1_700,
        )


def replay(topic: tidelog.Topic, last: int | None = None) -> pa.Table:
    """Every partition of ``topic`` (its ``last`` messages only, if given) as one Arrow table
    with a partition column."""
    tables = []
    for p in range(topic.partitions):
        start = None if last is None else max(topic.start_offset(p), topic.end_offset(p) - last)
        table = topic.to_arrow(p, start=start)
        tables.append(table.append_column("partition", pa.array([p] * table.num_rows, pa.int32())))
    return pa.concat_tables(tables)


def main(argv: list[str]) -> int:
    directory = Path(argv[1]) if len(argv) > 1 else Path(tempfile.mkdtemp(prefix="duckdb-"))
    if (
        directory.exists()
        and any(directory.iterdir())
        and not (directory / "tidelog.store").exists()
    ):
        print(f"{directory} is not empty and not a tidelog store; refusing to use it")
        return 1
    shutil.rmtree(directory, ignore_errors=True)
    with tidelog.open(directory) as store:
        topic = store.create_topic("page-views", partitions=PARTITIONS)
        fill(topic)
        views = replay(topic)
        db = duckdb.connect()
        db.register("views", views)
        print(f"replayed {views.num_rows:,} messages from {PARTITIONS} partitions")
        top = db.sql(
            """
            SELECT json_extract_string(decode(value), '$.page') AS page,
                   count(*) AS views,
                   count(DISTINCT key) AS users,
                   round(avg(CAST(json_extract(decode(value), '$.ms') AS INT))) AS avg_ms
            FROM views
            GROUP BY page
            ORDER BY views DESC, page
            """
        ).fetchall()
        print(f"{'page':<10} {'views':>7} {'users':>6} {'avg ms':>7}")
        for page, n, users, avg_ms in top:
            print(f"{page:<10} {n:>7,} {users:>6,} {avg_ms:>7.0f}")
        by_device = db.sql(
            "SELECT decode(map_extract(headers, 'device')[1]) AS device, count(*) "
            "FROM views GROUP BY device ORDER BY device"
        ).fetchall()
        print("by device: " + ", ".join(f"{d}={n:,}" for d, n in by_device))
        db.register("recent", replay(topic, last=100))
        [(count, first_ms)] = db.sql("SELECT count(*), min(timestamp_ms) FROM recent").fetchall()
        print(f"last 100 of each partition: {count:,} messages, the oldest at {first_ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
