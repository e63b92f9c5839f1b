"""Backpressure driven by consumers: a producer's ``max_lag``.

The producer's own buffer watermarks protect memory; ``max_lag`` protects the log from a
slow consumer. A monitor thread watches the slowest consumer group of every topic the
producer writes to and, with hysteresis, turns the producer's pressure on when that group is
more than ``max_lag`` messages behind and off again once it is back under
``max_lag * low_watermark``. While it is on, ``send`` behaves as with a full buffer:
``"block"`` waits, ``"raise"`` raises :class:`BackpressureError`, ``"shed"`` drops the
lowest priority in use.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from tidelog._core import Producer, TidelogError
from tidelog.stats import group_overview

if TYPE_CHECKING:
    from tidelog.offsets import OffsetStore
    from tidelog.store import Store

__all__ = ["LagMonitor", "slowest_lag"]


def slowest_lag(store: Store, offsets: OffsetStore, topics: list[str]) -> int:
    """Messages the slowest consumer group is behind, over ``topics`` (0 with no groups)."""
    worst = 0
    for per_topic in group_overview(store, offsets).values():
        for topic, info in per_topic.items():
            if topic in topics:
                worst = max(worst, sum(info["lag"].values()))
    return worst


class LagMonitor:
    """Watches consumer lag for one producer on a daemon thread until the producer closes."""

    def __init__(
        self,
        store: Store,
        offsets: OffsetStore,
        producer: Producer,
        max_lag: int,
        low_watermark: float,
        interval: float = 0.02,
    ) -> None:
        """Starts watching; see the module docstring."""
        self.max_lag, self.resume_at = max_lag, int(max_lag * low_watermark)
        self.on = False
        self._producer = weakref.ref(producer)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(weakref.ref(store), offsets, interval),
            name="tidelog-lag-monitor",
            daemon=True,
        )
        self._thread.start()

    def _run(self, store_ref: weakref.ref[Store], offsets: OffsetStore, interval: float) -> None:
        while not self._stop.wait(interval):
            producer, store = self._producer(), store_ref()
            if producer is None or store is None or producer.closed or store.closed:
                return
            try:
                lag = slowest_lag(store, offsets, producer._topics())
            except TidelogError:
                continue  # a topic vanished or the store is closing: look again later
            if not self.on and lag > self.max_lag:
                self.on = True
                producer._set_external_pressure(True)
            elif self.on and lag <= self.resume_at:
                self.on = False
                producer._set_external_pressure(False)
            del producer, store

    def stop(self) -> None:
        """Stops the thread (the producer's pressure is left off)."""
        self._stop.set()
        producer = self._producer()
        if producer is not None and self.on and not producer.closed:
            producer._set_external_pressure(False)
