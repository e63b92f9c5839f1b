"""tidelog itself, through its public Python API.

The group workload and the latency consumer use ``store.consumer(...)`` (API.md) when
``Store`` has it; with a build that does not, the group workload is ``n/a (not yet
implemented)`` and the latency figure comes from an interim polling reader (``end_offset``
checked every ``--poll-us``), labelled as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from benches.peers.base import (
    NOT_YET,
    Adapter,
    Level,
    NotApplicable,
    Sender,
    Skip,
    Spec,
    Timed,
    chunks,
)

TOPIC = "bench"
GROUP = "bench"


def _tidelog() -> Any:
    try:
        import tidelog
    except ImportError as exc:  # pragma: no cover - the package is the project itself
        raise Skip(f"tidelog is not importable ({exc}); run `.venv/bin/maturin develop`") from exc
    return tidelog


def _has_consumer(store: Any) -> bool:
    return callable(getattr(store, "consumer", None))


class TidelogAdapter(Adapter):
    key = "tidelog"
    label = "tidelog"
    kind = "tidelog"
    levels = ("never", "always")

    def __init__(self, level: Level, workdir: Path, spec: Spec) -> None:
        super().__init__(level, workdir, spec)
        self._consumer_api: bool | None = None

    def check(self) -> None:
        _tidelog()

    def version(self) -> str:
        return str(_tidelog().__version__)

    def durability(self) -> str:
        if self.level == "always":
            return 'fsync="always": fdatasync before each append returns'
        return 'fsync="never": page cache (survives a process crash, not a power loss)'

    def notes(self) -> list[str]:
        notes = [
            "append: `topic.append(v)`; batch: `topic.append_batch(list, partition=0)`; "
            "read: `topic.read_batch(0, offset, max_messages=batch).values()`.",
        ]
        if not self._consumer_api:
            notes.append(
                "consume: " + NOT_YET + " (consumer groups are being built; the adapter "
                "switches to `store.consumer(...)` + `commit()` as soon as `Store` has it)."
            )
            notes.append(
                "latency: INTERIM polling reader in the other process (`end_offset` checked "
                f"every {self.spec.poll_s * 1e6:g} µs, then `read_batch`), not the blocking "
                "consumer of the API, which does not exist yet."
            )
        else:
            notes.append(
                "consume: `store.consumer(topic, group=..., delivery='at-least-once', "
                "max_poll_messages=batch)`, then `poll(max_messages=batch)` + `commit()` per "
                "batch (joining the group is not timed)."
            )
            notes.append(
                "latency: `store.consumer(...)` in the other process, blocking in "
                "`poll(timeout=0.1)` (woken by the append, no polling interval)."
            )
        return notes

    def latency_interim(self) -> str | None:
        if self._consumer_api is False:
            return "INTERIM polling reader (no blocking consumer in this build)"
        return None

    def _open(self, slot: str) -> tuple[Any, Any]:
        tidelog = _tidelog()
        store = tidelog.open(self.path(slot), fsync=self.level)
        if self._consumer_api is None:
            self._consumer_api = _has_consumer(store)
        topic = store.create_topic(TOPIC, partitions=1, exist_ok=True)
        return store, topic

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        store, topic = self._open(slot)
        return self.put_each(values, topic.append, close=store.close)

    def append_batch(self, slot: str, values: Sequence[bytes]) -> Timed:
        store, topic = self._open(slot)
        batch = self.spec.batch

        def run() -> int:
            append_batch = topic.append_batch
            for part in chunks(values, batch):
                append_batch(list(part), partition=0)
            return len(values)

        return Timed(run=run, close=store.close)

    def read_all(self, slot: str, count: int) -> Timed:
        store, topic = self._open(slot)
        batch = self.spec.batch

        def run() -> int:
            read_batch = topic.read_batch
            offset, end, done = 0, topic.end_offset(0), 0
            while offset < end:
                b = read_batch(0, offset, max_messages=batch)
                done += len(b.values())
                offset = b.next_offset
            return done

        return Timed(run=run, close=store.close)

    def consume_group(self, slot: str, count: int) -> Timed:
        store, _topic = self._open(slot)
        if not _has_consumer(store):
            store.close()
            raise NotApplicable(NOT_YET)
        batch = self.spec.batch
        consumer = store.consumer(
            TOPIC,
            group=GROUP,
            delivery="at-least-once",
            start="earliest",
            max_poll_messages=batch,  # poll() hands out at most this many (default 500)
        )

        def run() -> int:
            done = 0
            while done < count:
                msgs = consumer.poll(max_messages=batch, timeout=5.0)
                if not msgs:
                    break
                for m in msgs:
                    _ = m.value
                done += len(msgs)
                consumer.commit()
            return done

        def close() -> None:
            consumer.close()
            store.close()

        return Timed(run=run, close=close)

    def latency_sender(self, slot: str) -> Sender:
        store, topic = self._open(slot)
        append = topic.append

        def send(value: bytes) -> None:
            append(value)

        return Sender(send=send, close=store.close)

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        tidelog = _tidelog()
        store = tidelog.open(config["path"], fsync=config["level"])
        try:
            if _has_consumer(store):
                consumer = store.consumer(TOPIC, group=GROUP, start="earliest")
                try:
                    ready()
                    got = 0
                    while got < count and time.monotonic() < deadline:
                        msgs = consumer.poll(max_messages=1000, timeout=0.1)
                        if msgs:
                            got += len(msgs)
                            yield [m.value for m in msgs]
                finally:
                    consumer.close()
                return
            # Interim: a polling reader (no blocking consumer in the API yet).
            topic = store.topic(TOPIC)
            end_offset, read_batch, sleep = topic.end_offset, topic.read_batch, time.sleep
            ready()
            pos = got = 0
            while got < count and time.monotonic() < deadline:
                if end_offset(0) > pos:
                    b = read_batch(0, pos, max_messages=1000)
                    pos = b.next_offset
                    values = b.values()
                    got += len(values)
                    yield values
                else:
                    sleep(poll_s)
        finally:
            store.close()
