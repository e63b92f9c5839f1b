"""``await producer.send(...)``: the objects a send returns are reused only when nobody holds them.

The last ``SendDone`` and ``SendResult`` made are kept and rewritten by the next send once
nothing else holds them; one that is still held (by a variable, a task, ``gather``) is never
reused, so every send's awaitable gives its own message's ``SendResult``, each awaitable is
awaited once, and each result keeps its own partition and offset.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import tidelog
import tidelog.aio

Run = Callable[[Coroutine[Any, Any, Any]], Any]


def _stored(store: tidelog.aio.Store, topic: str) -> dict[tuple[int, int], bytes]:
    t = store.sync.topic(topic)
    return {(p, m.offset): bytes(m.value or b"") for p in range(t.partitions) for m in t.read(p, 0)}


def test_awaitables_held_at_once_give_their_own_results(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            await store.create_topic("t", partitions=2)
            producer = await store.producer()
            sent: list[tuple[bytes, Any]] = []
            for i in range(50):
                # Held, interleaved with awaited-at-once sends, tasks and gathers.
                held = [producer.send("t", b"h%d-%d" % (i, j), partition=j % 2) for j in range(3)]
                sent.append((b"a%d" % i, await producer.send("t", b"a%d" % i, partition=i % 2)))
                task = asyncio.ensure_future(producer.send("t", b"k%d" % i))
                (gathered,) = await asyncio.gather(producer.send("t", b"g%d" % i))
                producer.send("t", b"dropped%d" % i)  # type: ignore[unused-coroutine]
                for j, awaitable in enumerate(reversed(held)):
                    sent.append((b"h%d-%d" % (i, 2 - j), await awaitable))
                sent.append((b"k%d" % i, await task))
                sent.append((b"g%d" % i, gathered))
            metas = [meta for _, meta in sent]
            assert len({id(m) for m in metas}) == len(metas), "a result was handed out twice"
            written = [await meta for meta in metas]
            stored = _stored(store, "t")
            assert [stored[w] for w in written] == [value for value, _ in sent]
            # The unawaited sends went into the buffer too.
            assert sum(v.startswith(b"dropped") for v in stored.values()) == 50
            await producer.close()

    run(main())


def test_an_awaited_send_holds_nothing(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            await store.create_topic("t", partitions=1)
            producer = await store.producer()
            done = producer.send("t", b"v")
            meta = await done
            # The next send makes its own result, as ``meta`` is still held.
            second = await producer.send("t", b"w")
            assert second is not meta
            # The awaitable gave its result away and the next send let go of it: nothing
            # keeps it (nor, through it, the producer) alive; the only references are
            # ``meta`` and getrefcount's own.
            assert sys.getrefcount(meta) == 2
            assert await meta == (0, 0) and await second == (0, 1)
            with pytest.raises(RuntimeError, match="already awaited"):
                await done
            await producer.close()

    run(main())


def test_a_held_result_keeps_its_offset_past_many_later_sends(tmp_path: Path, run: Run) -> None:
    """A result reads its message's outcome from its producer's ledger, whose slots the
    sends after it reuse; a result still held at the next send keeps a receipt of its own,
    whether its message was written by then or not."""

    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            await store.create_topic("t", partitions=2)
            one, two = await store.producer(name="one"), await store.producer(name="two")
            sent: list[tuple[bytes, Any]] = []
            for i in range(3):
                for producer in (one, two):
                    value = b"%s-%d" % (str(producer.name).encode(), i)
                    # Held unawaited, awaited and held, held with its message written before
                    # the next send.
                    pending = producer.send("t", value + b"-pending", partition=0)
                    meta = await producer.send("t", value + b"-held", partition=1)
                    written = await producer.send("t", value + b"-written", partition=i % 2)
                    await producer.flush()
                    sent += [
                        (value + b"-pending", pending),
                        (value + b"-held", meta),
                        (value + b"-written", written),
                    ]
                    # Every ledger slot reused, twice, by sends nobody holds.
                    for j in range(2500):
                        await producer.send("t", b"filler", partition=j % 2)
            metas = [
                meta if isinstance(meta, tidelog.aio.SendResult) else await meta for _, meta in sent
            ]
            await one.flush()
            await two.flush()
            stored = _stored(store, "t")
            for (value, _), meta in zip(sent, metas, strict=True):
                at = await meta
                assert stored[at] == value
                assert meta.written_at() == at == (meta.partition, meta.offset)
            await one.close()
            await two.close()

    run(main())


def test_a_reused_result_belongs_to_its_own_send(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            await store.create_topic("t", partitions=3)
            one, two = await store.producer(name="one"), await store.producer(name="two")
            kept: list[tuple[bytes, Any]] = []
            for i in range(300):
                producer = one if i % 2 else two
                value = b"%d" % i
                meta = await producer.send("t", value, partition=i % 3)
                assert meta.producer is producer and meta.partition == i % 3
                assert meta.accepted and meta.target >= 1
                if i % 7 == 0:
                    kept.append((value, meta))  # held: never rewritten by a later send
                del meta  # dropped: the next send rewrites it (another producer's, too)
            written = [await meta for _, meta in kept]
            stored = _stored(store, "t")
            for (value, meta), (partition, offset) in zip(kept, written, strict=True):
                assert stored[(partition, offset)] == value
                assert meta.written_at() == (partition, offset) == (meta.partition, meta.offset)
                assert repr(meta) == f"SendResult(partition={partition}, offset={offset})"
            meta = kept[0][1]
            with pytest.raises(TypeError):
                type(meta)()
            with pytest.raises(AttributeError):
                meta.partition = 1
            await one.close()
            await two.close()

    run(main())


def test_send_call_forms(tmp_path: Path, run: Run) -> None:
    """``send`` and ``send_nowait`` (hand-made native methods) by position or keyword, and
    each wrong call refused at the call, before anything is awaited or buffered."""

    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            await store.create_topic("t", partitions=2)
            async with store.producer() as producer:
                first = await producer.send(topic="t", value=b"a", partition=1)
                built: dict[str, Any] = {"parti" + "tion": 1, "key": b"k"}
                second = producer.send_nowait("t", b"b", **built)
                assert (await first, await second) == ((1, 0), (1, 1))
                for send in (producer.send, producer.send_nowait):
                    with pytest.raises(TypeError, match="missing required argument 'value'"):
                        send("t")  # type: ignore[call-arg]
                    with pytest.raises(TypeError, match="takes 2 positional arguments but 3"):
                        send("t", b"a", b"b")  # type: ignore[call-arg]
                    with pytest.raises(TypeError, match="unexpected keyword argument 'prio'"):
                        send("t", b"a", prio=1)  # type: ignore[call-arg]
                    with pytest.raises(TypeError, match="value must be bytes"):
                        send("t", "a")  # type: ignore[arg-type]
                # None is a tombstone, as for the synchronous producer.
                assert await (await producer.send("t", None, key=b"k", partition=0)) == (0, 0)
                await producer.flush()
            assert _stored(store, "t") == {(1, 0): b"a", (1, 1): b"b", (0, 0): b""}
            [tombstone] = store.sync.topic("t").read(0)
            assert (tombstone.key, tombstone.value) == (b"k", None)

    run(main())
