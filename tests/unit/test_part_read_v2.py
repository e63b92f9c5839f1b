"""Reading a large stored batch in parts: an iterator's chunks, a consumer's polls and
`read_batch` calls that continue where the last one ended must hand out exactly the
records of one whole read, whatever the part sizes, the codec, and however many
partitions a thread reads in turn (the core remembers a few part-read batches per thread
so it need not check and walk the whole batch again for every part).
"""

from __future__ import annotations

from pathlib import Path

import tidelog
from hypothesis import given, settings
from hypothesis import strategies as st

RECORDS = 3_000


def _values(partition: int) -> list[bytes]:
    return [f"p{partition} value {i} ".encode() * (i % 7 + 1) for i in range(RECORDS)]


def _store_with_big_batches(path: Path, partitions: int, compression: str) -> tidelog.Store:
    store = tidelog.open(path, fsync="never")
    topic = store.create_topic("t", partitions=partitions, compression=compression)
    for p in range(partitions):
        topic.append_batch(_values(p), partition=p)
        topic.append_batch([b"after"], partition=p)
    return store


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=12),
    compression=st.sampled_from(["none", "zstd"]),
    start=st.integers(min_value=0, max_value=RECORDS),
)
def test_reads_in_parts_across_partitions_match_the_whole(
    tmp_path_factory: object, sizes: list[int], compression: str, start: int
) -> None:
    path = tmp_path_factory.mktemp("parts")  # type: ignore[attr-defined]
    partitions = 6  # more than the batches a thread remembers
    with _store_with_big_batches(path, partitions, compression) as store:
        topic = store.topic("t")
        expected = {p: [*_values(p), b"after"][start:] for p in range(partitions)}
        got: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        position = dict.fromkeys(range(partitions), start)
        turn = 0
        while any(position[p] < RECORDS + 1 for p in range(partitions)):
            for p in range(partitions):
                batch = topic.read_batch(p, position[p], max_messages=sizes[turn % len(sizes)])
                turn += 1
                values = [m.value for m in batch]
                buffer, bounds = batch.value_buffer()
                assert [
                    bytes(buffer[bounds[i] : bounds[i + 1]]) for i in range(len(batch))
                ] == values
                assert [m.offset for m in batch] == list(
                    range(position[p], position[p] + len(batch))
                )
                got[p].extend(v for v in values if v is not None)
                position[p] += len(batch)
        assert got == expected


def test_iterating_one_huge_batch_yields_every_record(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, fsync="never") as store:
        topic = store.create_topic("t")
        values = [i.to_bytes(4, "little") * (i % 5 + 1) for i in range(100_000)]
        topic.append_batch(values)
        assert [(m.offset, m.value) for m in topic.read(0, 0)] == list(enumerate(values))
        assert [m.value for m in topic.read(0, 99_990)] == values[99_990:]


def test_a_consumer_polls_a_huge_batch_in_order(tmp_path: Path) -> None:
    with tidelog.open(tmp_path, fsync="never") as store:
        topic = store.create_topic("t")
        values = [str(i).encode() for i in range(50_000)]
        topic.append_batch(values)
        seen: list[bytes | None] = []
        with store.consumer("t", group="g") as consumer:
            while len(seen) < len(values):
                seen.extend(m.value for m in consumer.poll(max_messages=333, timeout=1.0))
        assert seen == values
