"""``max_lag`` on both backends: a producer held back by its topic's slowest consumer group.

Locally the groups' commits come from the store's files; on Kafka from the group
coordinator through the admin client (tidelog/kafka/lag.py). The bound of API.md: no more
than ``max_lag + buffer_messages`` messages are written past the slowest group's committed
offset while pressure is on.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import tidelog

from conformance.test_api import PATIENCE, poll_until

MAX_LAG = 20
BUFFER = 8


def test_max_lag_holds_the_producer_until_the_group_catches_up(store: Any) -> None:
    t = store.create_topic("lagged")
    t.append(b"first", partition=0)
    group = f"lag-{uuid.uuid4().hex[:8]}"
    with store.consumer("lagged", group=group) as c:
        assert len(poll_until(c, 1)) == 1
        c.commit()
        with store.producer(
            max_lag=MAX_LAG, buffer_messages=BUFFER, on_full="block", block_timeout=0.5
        ) as p:
            sent = 0
            with pytest.raises(tidelog.BackpressureError):
                for _ in range(50 * MAX_LAG):
                    p.send("lagged", b"x", partition=0)
                    sent += 1
            assert sent <= MAX_LAG + 2 * BUFFER
            assert t.end_offset(0) - 1 <= MAX_LAG + BUFFER
            assert p.stats()["high_watermark_hits"] >= 1

            # The group catches up: what waited is written, and sends go through again.
            end = time.monotonic() + PATIENCE
            while time.monotonic() < end:
                c.poll(timeout=0.2)
                c.commit()
                if p.flush(timeout=0.1) and c.lag() == {0: 0}:
                    break
            assert c.lag() == {0: 0}
            assert t.end_offset(0) == 1 + sent
            assert p.send("lagged", b"after", partition=0)
            assert p.flush(timeout=PATIENCE)
        assert t.end_offset(0) == 2 + sent


def test_max_lag_without_groups_never_holds_back(store: Any) -> None:
    store.create_topic("free")
    with store.producer(max_lag=5, on_full="raise") as p:
        for i in range(3 * 5):
            p.send("free", b"%d" % i, partition=0)
        assert p.flush(timeout=PATIENCE)
    assert store.topic("free").end_offset(0) == 15
