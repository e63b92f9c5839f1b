"""The kafka:// async store's member makings and its close, without a broker: the synchronous
store is a stand-in whose constructors wait in their thread as a round trip does."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import tidelog

pytest.importorskip("confluent_kafka")

from tidelog.aio.kafka import KafkaAioStore

from .conftest import Run

PATIENCE = 10.0


class _Consumer:
    delivery = "at-least-once"

    def __init__(self, topic: str, group: str, release: threading.Event | None) -> None:
        self.topic, self.group = topic, group
        self.closed = False
        self._release = release

    def close(self) -> None:
        if self._release is not None:
            self._release.wait(PATIENCE)
        self.closed = True


class _SyncStore:
    """As :class:`tidelog.kafka.store.KafkaStore`: a constructor checks that the store is
    open, then makes its round trips (here: waits for ``go`` when told to)."""

    def __init__(self) -> None:
        self.closed = False
        self.made: list[_Consumer] = []
        self.inside = threading.Event()
        self.go = threading.Event()
        self.hold_making = False
        self.first_closes = threading.Event()

    def consumer(self, topic: str, *, group: str, **options: Any) -> _Consumer:
        if self.closed:
            raise tidelog.StoreClosedError("the store is closed")
        if self.hold_making:
            self.inside.set()
            self.go.wait(PATIENCE)
        member = _Consumer(topic, group, None if self.made else self.first_closes)
        self.made.append(member)
        return member

    def close(self) -> None:
        self.closed = True


def test_a_member_made_while_the_store_closes_is_not_left_open(run: Run[None]) -> None:
    """``store.close()`` closes the members; while it waits for one to close, another task
    awaits ``store.consumer(...)``. That making must be refused, or the member it makes
    closed with the store: not left in the group, open, on a closed store."""
    sync = _SyncStore()

    async def main() -> None:
        store = KafkaAioStore(sync)  # type: ignore[arg-type]
        await store.consumer("t", group="first")
        closing = asyncio.create_task(store.close())
        await asyncio.sleep(0.05)  # close is waiting for the first member's close
        sync.hold_making = True
        making = asyncio.create_task(store.consumer("t", group="second"))
        async with asyncio.timeout(PATIENCE):
            while not (sync.inside.is_set() or making.done()):
                await asyncio.sleep(0.01)
        sync.first_closes.set()
        await closing
        sync.go.set()
        try:
            member = await making
        except tidelog.StoreClosedError:
            return
        assert member.closed, "a member made while the store closed was left open"

    run(main())
