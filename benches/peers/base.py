"""The adapter interface every compared system implements, and helpers shared by adapters.

An adapter runs the workloads of ``benches/compare.py`` against one system at one durability
level. Each workload method prepares what it needs (a fresh store, stream or topic named by
``slot``) and returns a :class:`Timed`: the runner times only ``Timed.run``. ``run`` must
leave the messages at the durability the adapter names (e.g. flushed to the page cache)
before it returns, and returns how many messages it handled.

A method raises :class:`NotApplicable` with a short reason when the system cannot do that
workload (the reason is printed in the table cell), :class:`Skip` when the whole system
cannot run here (package not installed, server binary missing).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import socket
import struct
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

#: ``"never"``: each figure is for data in the page cache (a process crash loses nothing
#: acknowledged, a power loss may). ``"always"``: data is fsynced before it is acknowledged.
Level = Literal["never", "always"]
Kind = Literal["tidelog", "embedded", "server"]

#: The cell text for a workload tidelog will have but does not have yet.
NOT_YET = "n/a (not yet implemented)"

#: Every latency message starts with the sender's ``time.monotonic_ns()`` (CLOCK_MONOTONIC,
#: the same clock in every process of the machine).
STAMP = struct.Struct("<q")


class Skip(Exception):
    """The system cannot run here at all; the message says why and how to fix it."""


class NotApplicable(Exception):
    """The system cannot do this workload (or this durability); the message says why."""


@dataclass
class Timed:
    """A prepared workload: ``run`` is timed, ``close`` (untimed) releases what it holds."""

    run: Callable[[], int]
    close: Callable[[], None] = lambda: None
    #: Set by ``run`` or the preparation: how the workload was done, shown under the table.
    notes: list[str] = field(default_factory=list)


@dataclass
class Sender:
    """The producing side of the latency workload, in the benchmark process."""

    send: Callable[[bytes], None]
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Spec:
    """The workload parameters."""

    count: int
    size: int
    batch: int
    #: A workload that handles one message per call stops after this many seconds and reports
    #: the rate over the messages done (slow peers, fsync per message).
    budget_s: float
    poll_s: float


class Adapter:
    """One system at one durability level. Subclasses override the workload methods."""

    #: Short identifier used on the command line (``--systems``) and in the latency child.
    key: ClassVar[str]
    #: Display name.
    label: ClassVar[str]
    kind: ClassVar[Kind]
    #: Durability levels the system can be configured for.
    levels: ClassVar[tuple[Level, ...]] = ("never",)
    #: Workloads in which an acknowledged message is NOT yet durable at the row's level (e.g.
    #: a commit every 1000 rows), mapped to why. Marked in the table and left out of the
    #: computed "tidelog relative to the peers" comparison.
    weaker: ClassVar[dict[str, str]] = {}

    def __init__(self, level: Level, workdir: Path, spec: Spec) -> None:
        self.level = level
        self.workdir = workdir
        self.spec = spec

    # -- description -------------------------------------------------------------------------

    def check(self) -> None:
        """Raises :class:`Skip` if the system cannot run here."""

    def version(self) -> str:
        """The version(s) measured."""
        return ""

    def durability(self) -> str:
        """What an acknowledged message survives in this mode, and the settings behind it."""
        raise NotImplementedError

    def notes(self) -> list[str]:
        """How each workload is done for this system (printed under the table)."""
        return []

    def latency_interim(self) -> str | None:
        """Set when the latency figure comes from a stand-in for the real consumer."""
        return None

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> None:
        """Starts what the system needs for the whole run (a server); untimed."""

    @classmethod
    def shutdown(cls) -> None:
        """Stops what :meth:`start` started for any instance (called once at the end)."""

    def path(self, slot: str) -> Path:
        """A fresh directory for ``slot`` under the work directory."""
        p = self.workdir / f"{self.key}-{self.level}-{slot}"
        p.mkdir(parents=True, exist_ok=True)
        return p

    # -- workloads ---------------------------------------------------------------------------

    def append_one(self, slot: str, values: Sequence[bytes]) -> Timed:
        """Appends ``values`` one call per message (each durable at the level on return)."""
        raise NotApplicable("n/a")

    def append_batch(self, slot: str, values: Sequence[bytes]) -> Timed:
        """Appends ``values`` in batches of ``spec.batch`` messages per call."""
        raise NotApplicable("n/a (no batch API)")

    def fill(self, slot: str, values: Sequence[bytes]) -> None:
        """Untimed: puts ``values`` into ``slot`` the fastest way, for the read workloads."""
        spec = self.spec
        self.spec = replace(spec, budget_s=float("inf"))
        try:
            try:
                timed = self.append_batch(slot, values)
            except NotApplicable:
                timed = self.append_one(slot, values)
            try:
                done = timed.run()
            finally:
                timed.close()
        finally:
            self.spec = spec
        if done != len(values):
            raise RuntimeError(f"fill wrote {done} of {len(values)} messages")

    def put_each(
        self,
        values: Sequence[bytes],
        put: Callable[[bytes], object],
        close: Callable[[], None] = lambda: None,
    ) -> Timed:
        """The usual ``append_one``: ``put(v)`` per value within ``spec.budget_s``."""
        timed = Timed(run=lambda: 0, close=close)
        timed.run = lambda: loop_with_budget(values, put, self.spec.budget_s, timed)
        return timed

    def read_all(self, slot: str, count: int) -> Timed:
        """Reads every message of ``slot`` back as ``bytes`` (without consuming if possible)."""
        raise NotApplicable("n/a")

    def consume_group(self, slot: str, count: int) -> Timed:
        """Consumes ``slot`` as a consumer group member, committing every ``spec.batch``."""
        raise NotApplicable("n/a")

    def latency_sender(self, slot: str) -> Sender:
        """Prepares ``slot`` for the latency workload and returns the producing side."""
        raise NotApplicable("n/a")

    def child_config(self, slot: str) -> dict[str, Any]:
        """Picklable settings for :meth:`latency_consume` in the consumer process."""
        return {"slot": slot, "path": str(self.path(slot)), "level": self.level}

    @classmethod
    def latency_consume(
        cls,
        config: dict[str, Any],
        count: int,
        ready: Callable[[], None],
        deadline: float,
        poll_s: float,
    ) -> Generator[list[bytes], None, None]:
        """Runs in another process: yields values as they arrive (blocking or polling).

        Calls ``ready()`` once it is subscribed and waiting, stops after ``count`` values or
        at ``deadline`` (``time.monotonic()``).
        """
        raise NotApplicable("n/a")
        yield []  # pragma: no cover - makes this a generator


# -- helpers ---------------------------------------------------------------------------------


def optional_import(module: str, dist: str | None = None) -> Any:
    """Imports an optional peer library, typed ``Any``; raises :class:`Skip` if missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = dist or module
        raise Skip(
            f"Python package {name!r} is not installed ({exc}); "
            "install the peers with `.venv/bin/pip install -e .[bench]`"
        ) from exc


def dist_version(dist: str) -> str:
    """The installed version of a distribution, or ``"?"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def chunks(values: Sequence[bytes], n: int) -> Iterator[Sequence[bytes]]:
    """Consecutive slices of ``values`` of at most ``n`` items."""
    for i in range(0, len(values), n):
        yield values[i : i + n]


def deadline_after(seconds: float) -> float:
    """``time.monotonic()`` + ``seconds``."""
    return time.monotonic() + seconds


def budget_note(done: int, total: int, budget_s: float) -> str:
    """The note for a workload stopped by its time budget."""
    return f"stopped by the {budget_s:g} s budget after {done:,} of {total:,} messages"


def loop_with_budget(
    values: Sequence[bytes], put: Callable[[bytes], object], budget_s: float, timed: Timed
) -> int:
    """Calls ``put`` per value, checking the time budget every 1000 values."""
    deadline = deadline_after(budget_s)
    done = 0
    for part in chunks(values, 1000):
        for v in part:
            put(v)
        done += len(part)
        if time.monotonic() > deadline and done < len(values):
            timed.notes.append(budget_note(done, len(values), budget_s))
            break
    return done


class Budget:
    """The time budget of one workload run: ``over(done)`` is checked between chunks."""

    def __init__(self, seconds: float, total: int, timed: Timed) -> None:
        self.seconds, self.total, self.timed = seconds, total, timed
        self.deadline = time.monotonic() + seconds

    def over(self, done: int) -> bool:
        """True (and a note on the workload) once the budget is spent before ``total``."""
        if done < self.total and time.monotonic() > self.deadline:
            self.timed.notes.append(budget_note(done, self.total, self.seconds))
            return True
        return False


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, alive: Callable[[], bool]) -> bool:
    """Waits until 127.0.0.1:``port`` accepts connections; False on timeout or death."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False
