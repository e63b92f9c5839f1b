"""``groups``: consumer groups (members, committed offsets, lag) and work queues, once or live."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import tidelog
from tidelog import _core
from tidelog.cli._common import AddCommand, CliError, open_store, positive_seconds
from tidelog.cli._format import json_line, rich_console
from tidelog.errors import TopicNotFoundError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from tidelog.stats import GroupInfo

__all__ = ["add_commands"]


def _group_overview(store: tidelog.Store) -> dict[str, dict[str, GroupInfo]]:
    """``store.groups()``, without creating the offsets topic in a store that has no groups."""
    from tidelog.groups import list_groups

    if not isinstance(store, tidelog.Store):
        return store.groups()  # kafka://: the broker's groups, nothing created
    from tidelog.offsets import OFFSETS_TOPIC

    if OFFSETS_TOPIC not in store.topics(internal=True) and not list_groups(store.path):
        return {}
    return store.groups()


def _group_rows(
    store: tidelog.Store, topic_name: str | None, group_name: str | None
) -> list[dict[str, Any]]:
    """One plain-data entry per (group, topic): members, and per partition the offsets."""
    if topic_name is not None:
        store.topic(topic_name)  # TopicNotFoundError for an unknown topic
    rows: list[dict[str, Any]] = []
    for group, topics in sorted(_group_overview(store).items()):
        if group_name is not None and group != group_name:
            continue
        for name, info in sorted(topics.items()):
            if name.startswith(_core.INTERNAL_PREFIX) or (
                topic_name is not None and name != topic_name
            ):
                continue
            try:
                topic = store.topic(name)
            except TopicNotFoundError:
                continue  # deleted since the overview was taken
            owners = {p: m for m, ps in info["members"].items() for p in ps}
            partitions = [
                {
                    "partition": p,
                    "member": owners.get(p),
                    "committed": info["committed"].get(p),
                    "end_offset": topic.end_offset(p),
                    "lag": info["lag"][p],
                }
                for p in range(topic.partitions)
            ]
            rows.append(
                {
                    "group": group,
                    "topic": name,
                    "generation": info["generation"],
                    "members": {m: sorted(ps) for m, ps in sorted(info["members"].items())},
                    "partitions": partitions,
                    "lag": sum(part["lag"] for part in partitions),
                }
            )
    return rows


def _missing_group(group: str, topic: str | None) -> CliError:
    if topic is None:
        return CliError(f'group "{group}" does not exist')
    return CliError(f'group "{group}" has no members or committed offsets on topic "{topic}"')


def _groups_table(rows: list[dict[str, Any]], caption: str | None = None) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return Text("no consumer groups" + (f"\n{caption}" if caption else ""))
    table = Table(
        "group",
        "topic",
        "generation",
        "partition",
        "member",
        "committed",
        "end offset",
        "lag",
        caption=caption,
        box=None,
    )
    for i in (2, 3, 5, 6, 7):
        table.columns[i].justify = "right"
    for row in rows:
        generation = "-" if row["generation"] is None else str(row["generation"])  # Kafka: None
        head = (row["group"], row["topic"], generation)
        for part in row["partitions"]:
            committed = part["committed"]
            table.add_row(
                *head,
                str(part["partition"]),
                part["member"] or "-",
                "-" if committed is None else str(committed),
                str(part["end_offset"]),
                str(part["lag"]),
            )
        # Members beyond the partition count own nothing; show them, as Kafka's tools do.
        for member, owned in row["members"].items():
            if not owned:
                table.add_row(*head, "-", member, "-", "-", "-")
        table.rows[-1].end_section = True
    return table


def _queue_rows(
    store: tidelog.Store, topic_name: str | None, group_name: str | None
) -> list[dict[str, Any]]:
    """One plain-data entry per work queue: its counts, and per partition its offsets."""
    from tidelog.stats import work_queue_overview

    rows: list[dict[str, Any]] = []
    if not isinstance(store, tidelog.Store):
        return rows  # kafka://: librdkafka cannot list share groups (README.md)
    for queue, topics in sorted(work_queue_overview(store).items()):
        if group_name is not None and queue != group_name:
            continue
        for name, info in sorted(topics.items()):
            if topic_name is not None and name != topic_name:
                continue
            row: dict[str, Any] = {"queue": queue, "topic": name}
            row.update({k: v for k, v in info.items() if k != "partitions"})
            row["partitions"] = [{"partition": p, **v} for p, v in info["partitions"].items()]
            rows.append(row)
    return rows


def _queues_table(rows: list[dict[str, Any]]) -> RenderableType:
    """Work queues: per partition the offsets, in-flight, backlog and lag; then the totals.

    The total row also has what was acknowledged, dead-lettered, archived and skipped.
    """
    from rich.table import Table

    table = Table(
        "work queue",
        "topic",
        "partition",
        "acked below",
        "end offset",
        "in flight",
        "backlog",
        "lag",
        "acked",
        "dead-lettered",
        "archived",
        "skipped",
        box=None,
    )
    for i in range(2, 12):
        table.columns[i].justify = "right"
    for row in rows:
        head = (row["queue"], row["topic"])
        for part in row["partitions"]:
            table.add_row(
                *head,
                str(part["partition"]),
                str(part["acked_below"]),
                str(part["end_offset"]),
                str(part["in_flight"]),
                str(part["backlog"]),
                str(part["lag"]),
                "",
                "",
                "",
                "",
            )
        table.add_row(
            *head,
            "all",
            "",
            "",
            *(
                str(row[k])
                for k in (
                    "in_flight",
                    "backlog",
                    "lag",
                    "acked",
                    "dead_lettered",
                    "archived",
                    "skipped",
                )
            ),
            end_section=True,
        )
    return table


def _groups_view(
    rows: list[dict[str, Any]], queues: list[dict[str, Any]], caption: str | None = None
) -> RenderableType:
    """The consumer groups table, then (if any) the work queues table."""
    from rich.console import Group

    if not queues:
        return _groups_table(rows, caption)
    parts: list[RenderableType] = []
    if rows:
        parts.append(_groups_table(rows))
    parts.append(_queues_table(queues))
    if caption:
        from rich.text import Text

        parts.append(Text(caption))
    return Group(*parts)


def _cmd_groups(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if args.watch:
            return _watch_groups(args, store)
        rows = _group_rows(store, args.topic, args.group)
        queues = _queue_rows(store, args.topic, args.group)
    if args.group is not None and not rows and not queues:
        raise _missing_group(args.group, args.topic)
    if args.json:
        print(json_line({"groups": rows, "work_queues": queues}))
        return 0
    rich_console().print(_groups_view(rows, queues))
    return 0


def _watch_groups(args: argparse.Namespace, store: tidelog.Store) -> int:
    """Shows the groups again every ``args.interval`` seconds until Ctrl-C."""
    console = rich_console()

    def caption() -> str:
        now = datetime.now().astimezone().strftime("%H:%M:%S")
        return f"updated {now}, every {args.interval:g} s; Ctrl-C to stop"

    def snapshot() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return (
            _group_rows(store, args.topic, args.group),
            _queue_rows(store, args.topic, args.group),
        )

    if args.json or not sys.stdout.isatty():
        # Not a terminal: a snapshot per interval, which a reader can take line by line.
        while True:
            rows, queues = snapshot()
            if args.json:
                now_ms = int(time.time() * 1000)
                print(json_line({"time_ms": now_ms, "groups": rows, "work_queues": queues}))
            else:
                console.print(_groups_view(rows, queues, caption()))
            sys.stdout.flush()
            time.sleep(args.interval)
    from rich.live import Live

    rows, queues = snapshot()
    with Live(_groups_view(rows, queues, caption()), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(args.interval)
            rows, queues = snapshot()
            live.update(_groups_view(rows, queues, caption()), refresh=True)


def add_commands(command: AddCommand) -> None:
    """Adds ``groups``."""
    sub = command(
        "groups",
        _cmd_groups,
        "Show consumer groups (members, committed offsets, lag) and work queues",
        "One row per group, topic and partition: the group's generation (it grows with\n"
        "every rebalance), the live member that owns the partition (- if none), the\n"
        "committed offset (the next one the group reads; - if none yet), the partition's\n"
        "end offset and the lag (messages not yet committed, counted from the start of the\n"
        "partition when nothing is committed). Internal topics are not shown.\n\n"
        "Work queues follow in a second table: per partition the acknowledged-below\n"
        "offset, the end offset, messages in flight (held under an unexpired lock), the\n"
        "backlog (waiting) and the lag (both); per queue the totals and how many messages\n"
        "were acknowledged, dead-lettered, archived (no dead-letter topic) and skipped\n"
        "(deleted by retention before they were finished).\n\n"
        '--json prints one object: {"groups": [{"group", "topic", "generation",\n'
        '"members": {member: [partitions]}, "partitions": [{"partition", "member",\n'
        '"committed", "end_offset", "lag"}], "lag"}], "work_queues": [{"queue", "topic",\n'
        '"in_flight", "backlog", "lag", "acked", "dead_lettered", "archived", "skipped",\n'
        '"state_bytes", "partitions": [{"partition", "acked_below", "end_offset",\n'
        '"in_flight", "backlog", "lag"}]}]} (null for none); with --watch, one such line\n'
        'per refresh, with "time_ms".',
    )
    sub.add_argument("topic", nargs="?", metavar="TOPIC", help="only groups of this topic")
    sub.add_argument("-g", "--group", metavar="GROUP", help="only this group")
    sub.add_argument("--json", action="store_true", help="JSON instead of a table")
    sub.add_argument("-w", "--watch", action="store_true", help="refresh the view until Ctrl-C")
    sub.add_argument(
        "-i",
        "--interval",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes with --watch (default: 2)",
    )
