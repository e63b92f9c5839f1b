"""``await producer.send(...)``: the awaitable a send returns is reused only when nobody holds it.

The last ``SendDone`` made is kept and reused by the next send once the await dropped it; one
that is still held (by a variable, a task, ``gather``) is never reused, so every send's
awaitable gives its own message's ``SendResult``, and each is awaited once.
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
    t = store.topic(topic)
    return {
        (p, m.offset): bytes(m.value or b"")
        for p in range(t.partitions)
        for m in t.read(p, 0)
    }


def test_awaitables_held_at_once_give_their_own_results(tmp_path: Path, run: Run) -> None:
    async def main() -> None:
        async with tidelog.aio.open(tmp_path, fsync="never") as store:
            await store.create_topic("t", partitions=2)
            producer = store.producer()
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
            producer = store.producer()
            done = producer.send("t", b"v")
            meta = await done
            # The awaitable gave its result away: it keeps no SendResult (nor, through it,
            # the producer) alive; the only references are ``meta`` and getrefcount's own.
            assert sys.getrefcount(meta) == 2
            with pytest.raises(RuntimeError, match="already awaited"):
                await done
            await producer.close()

    run(main())
