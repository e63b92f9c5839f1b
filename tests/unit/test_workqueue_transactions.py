"""Work queues over a topic written with transactions: only committed messages are handed
out, and the offsets without a message (markers, aborted messages) never hold the queue up."""

from __future__ import annotations

import pytest
import tidelog


class Boom(Exception):
    pass


def test_a_queue_hands_out_committed_messages_only(store: tidelog.Store) -> None:
    topic = store.create_topic("jobs")
    with store.producer(name="writer") as producer:
        with store.transaction(producer) as tx:
            tx.send("jobs", b"c1")
            tx.send("jobs", b"c2")
        with pytest.raises(Boom), store.transaction(producer) as tx:
            tx.send("jobs", b"aborted")
            producer.flush()
            raise Boom
        topic.append(b"plain")
        still_open = store.transaction(producer)
        still_open.send("jobs", b"late")
        producer.flush()
        with store.work_queue("jobs", group="q", lock_timeout=5) as queue:
            jobs = queue.acquire_many(100, timeout=0.2)
            assert [job.value for job in jobs] == [b"c1", b"c2", b"plain"]
            queue.ack_many(jobs)
            assert queue.acquire_many(100, timeout=0.1) == [], "the open transaction waits"
            still_open.commit()
            late = queue.acquire_many(100, timeout=1)
            assert [job.value for job in late] == [b"late"]
            queue.ack_many(late)
    with store.work_queue("jobs", group="q") as queue:
        assert queue.acquire(timeout=0.1) is None, "nothing comes back"
        stats = queue.stats()
    # Every offset is finished (markers and the aborted message included), so nothing
    # lingers as unfinished, and only real messages are counted as acknowledged.
    assert stats["lag"] == 0 and stats["in_flight"] == 0, stats
    assert stats["acked"] == 4, stats
