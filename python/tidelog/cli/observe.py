"""``metrics`` (Prometheus text, once or served) and ``top`` (a live view of a store)."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tidelog
from tidelog.cli._common import (
    ENV_DIR,
    AddCommand,
    CliError,
    existing_store_dir,
    is_kafka,
    positive_seconds,
)
from tidelog.cli._format import human_bytes, rich_console
from tidelog.producers import named_producers

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ["add_commands", "top_view"]


def _store_path(args: argparse.Namespace) -> Path | str:
    """The positional DIR if given, else ``--dir`` / ``$TIDELOG_DIR`` / the current directory.

    A ``kafka://`` URL is returned as it is: ``metrics`` and ``top`` read
    ``store.metrics()``, which a Kafka store has too.
    """
    if args.store is not None:
        args.dir = args.store
    if is_kafka(args):
        return str(args.dir or os.environ[ENV_DIR])
    return existing_store_dir(args)


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an argparse type); ``[::1]:9464`` for IPv6."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(text)
    return host.strip("[]"), int(port)


_address.__name__ = "HOST:PORT address"


# --- metrics -----------------------------------------------------------------------------


def _cmd_metrics(args: argparse.Namespace) -> int:
    from tidelog.metrics import prometheus_text, serve_prometheus

    with tidelog.open(_store_path(args)) as store:
        if args.serve is None:
            sys.stdout.write(prometheus_text(store).decode())
            return 0
        host, port = args.serve
        try:
            server, _thread = serve_prometheus(store, host, port)
        except OSError as e:
            raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        try:
            shown = f"[{host}]" if ":" in host else host
            print(f"serving metrics on http://{shown}:{server.server_port}/metrics", flush=True)
            threading.Event().wait()  # until Ctrl-C or SIGTERM
        finally:
            server.shutdown()
            server.server_close()
    return 0


# --- top ---------------------------------------------------------------------------------


@dataclass
class _Frame:
    """One snapshot of the store, with what rates need from the previous one."""

    metrics: dict[str, Any]
    producers: list[dict[str, Any]]
    taken: float = field(default_factory=time.monotonic)


def _rate(now: float | None, before: float | None, seconds: float) -> str:
    if now is None or before is None or seconds <= 0:
        return "-"
    return f"{max(0.0, now - before) / seconds:,.0f}/s"


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def top_view(frame: _Frame, previous: _Frame | None, caption: str) -> RenderableType:
    """The tables of ``tidelog top``: topics, groups, producers, work queues."""
    from rich.console import Group
    from rich.table import Table

    m = frame.metrics
    dt = frame.taken - previous.taken if previous else 0.0
    before = previous.metrics if previous else None

    topics = Table(title="topics", title_justify="left", expand=False)
    for name in ("topic", "partitions", "messages", "size", "end offsets", "append rate"):
        topics.add_column(name, justify="left" if name == "topic" else "right")
    for name, t in sorted(m["topics"].items()):
        ends = sum(p["end_offset"] for p in t["partitions"].values())
        old = before["topics"].get(name) if before else None
        old_ends = sum(p["end_offset"] for p in old["partitions"].values()) if old else None
        topics.add_row(
            name,
            str(len(t["partitions"])),
            f"{t['messages']:,}",
            "-" if t["size_bytes"] is None else human_bytes(t["size_bytes"]),  # Kafka: None
            f"{ends:,}",
            _rate(ends, old_ends, dt),
        )

    groups = Table(title="consumer groups", title_justify="left")
    for name in ("group", "topic", "members", "lag (messages)", "lag (time)", "consume rate"):
        groups.add_column(name, justify="left" if name in ("group", "topic") else "right")
    for group, by_topic in sorted(m["groups"].items()):
        for topic, g in sorted(by_topic.items()):
            done = _consumed(g)
            old = before["groups"].get(group, {}).get(topic) if before else None
            groups.add_row(
                group,
                topic,
                str(g["members"]),
                f"{g['lag_messages']:,}",
                _seconds(g["lag_seconds"]),
                _rate(done, _consumed(old) if old else None, dt),
            )

    producers = Table(title="producers", title_justify="left")
    for name in ("producer", "id", "epoch", "open", "transaction"):
        producers.add_column(name, justify="left" if name == "producer" else "right")
    for p in frame.producers:
        producers.add_row(
            p["name"],
            str(p["producer_id"]),
            str(p["epoch"]),
            "yes" if p["alive"] else "no",
            p["transaction"] or "-",
        )

    queues = Table(title="work queues", title_justify="left")
    columns = ("queue", "topic", "backlog", "in flight", "redelivered", "acked", "dead-lettered")
    for name in columns:
        queues.add_column(name, justify="left" if name in ("queue", "topic") else "right")
    for group, by_topic in sorted(m["work_queues"].items()):
        for topic, q in sorted(by_topic.items()):
            queues.add_row(
                group,
                topic,
                f"{q['backlog']:,}",
                f"{q['in_flight']:,}",
                f"{q['redelivered']:,}",
                f"{q['acked']:,}",
                f"{q['dead_lettered']:,}",
            )
    lost = "recovery: " + ", ".join(
        f"{counts['events']} {kind.replace('_', ' ')} ({human_bytes(counts['bytes'])})"
        for kind, counts in m["recovery"].items()
    )
    parts: list[RenderableType] = [topics, groups, producers, queues, lost, caption]
    return Group(*parts)


def _consumed(g: dict[str, Any]) -> float | None:
    """Committed offsets summed over partitions (None where nothing is committed yet)."""
    committed = [p["committed"] for p in g["partitions"].values() if p["committed"] is not None]
    return float(sum(committed)) if committed else None


def _frame(store: tidelog.Store) -> _Frame:
    # A kafka:// store's named producers are the transaction coordinator's: none listed.
    named = named_producers(store) if isinstance(store, tidelog.Store) else []
    return _Frame(metrics=store.metrics(), producers=[vars(p) for p in named])


def _cmd_top(args: argparse.Namespace) -> int:
    console = rich_console()
    with tidelog.open(_store_path(args)) as store:

        def caption() -> str:
            now = datetime.now().astimezone().strftime("%H:%M:%S")
            if args.once:
                return f"{store.path} at {now}"
            return f"{store.path} at {now}, every {args.interval:g} s; Ctrl-C to stop"

        frame = _frame(store)
        if args.once:
            console.print(top_view(frame, None, caption()))
            return 0
        from rich.live import Live

        with Live(
            top_view(frame, None, caption()), console=console, auto_refresh=False, screen=False
        ) as live:
            while True:
                time.sleep(args.interval)
                previous, frame = frame, _frame(store)
                live.update(top_view(frame, previous, caption()), refresh=True)


def add_commands(command: AddCommand) -> None:
    """Adds ``metrics`` and ``top``."""
    sub = command(
        "metrics",
        _cmd_metrics,
        "Print the store's metrics in the Prometheus text format, or serve them",
        "Without --serve, prints every metric once (see tidelog.metrics.METRICS: partitions,\n"
        "consumer groups with lag in messages and seconds, work queues, recovery counts).\n"
        "With --serve HOST:PORT, answers Prometheus scrapes over HTTP until Ctrl-C or\n"
        "SIGTERM, reading the store at every scrape (port 0 picks a free port; the address\n"
        "is printed). Producers are those of this process only, so none here. Needs the\n"
        "prometheus_client package (pip install 'tidelog[prometheus]').",
    )
    sub.add_argument("store", nargs="?", metavar="DIR", help="the store directory")
    sub.add_argument(
        "--serve", metavar="HOST:PORT", type=_address, help="serve over HTTP on this address"
    )

    sub = command(
        "top",
        _cmd_top,
        "Show topics, consumer groups, producers and work queues live",
        "Refreshes every --interval seconds until Ctrl-C: per topic the retained messages,\n"
        "size, end offsets and append rate; per consumer group its live members, lag in\n"
        "messages and in seconds (age of the oldest unconsumed message) and consume rate;\n"
        "the named producers; per work queue its backlog, in-flight, redelivered,\n"
        "acknowledged and dead-lettered messages. Works while other processes write.\n"
        "--once prints one frame (rates need two, so they show as -).",
    )
    sub.add_argument("store", nargs="?", metavar="DIR", help="the store directory")
    sub.add_argument("--once", action="store_true", help="print one frame and exit")
    sub.add_argument(
        "-n",
        "--interval",
        type=positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes (default 1)",
    )
