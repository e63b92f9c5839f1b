"""The ``tidelog`` command line (also ``python -m tidelog``).

Every subcommand finds the store the same way: ``--dir DIR`` (given before or after the
subcommand), else the ``TIDELOG_DIR`` environment variable, else the current directory. Only
``create`` makes a missing store; the other commands refuse a directory that is not a store
instead of turning it into one. ``dump`` and ``verify`` read segment files directly, without
opening the store, so they never run recovery on what they are asked to examine.

Exit status: 0 on success, 1 for an error or (``verify``, ``dump``) a problem found, 2 for a
usage error, 130 after Ctrl-C, 143 after SIGTERM and 141 when the reader of stdout went
away (``| head``), as a Unix tool killed by SIGINT, SIGTERM or SIGPIPE would report. SIGTERM
stops a command as cleanly as Ctrl-C does (a group consumer commits what it printed and
leaves its group at once). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import tidelog
from tidelog import _core
from tidelog.errors import (
    OffsetOutOfRangeError,
    RebalanceError,
    TidelogError,
    TopicNotFoundError,
)
from tidelog.producers import named_producers
from tidelog.queue_journal import check_queue, list_queues, queue_files
from tidelog.stats import store_stats, topic_stats

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress

    from tidelog import Message, Topic
    from tidelog.consumer import Consumer
    from tidelog.stats import GroupInfo

__all__ = ["main"]

ENV_DIR = "TIDELOG_DIR"
STORE_MARKER = "tidelog.store"
TOPIC_META = "topic.meta"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
EXIT_TERMINATED = 143  # 128 + SIGTERM
FOLLOW_POLL_SECONDS = 0.02
EXISTENCE_CHECK_SECONDS = 1.0
READ_CHUNK = 1000
SHOWN_BYTES = 60


class CliError(Exception):
    """A user error: printed as one line, then the command exits with ``status``."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        """Raises the usage error instead of printing the usage and exiting."""
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# --- the store ---------------------------------------------------------------------------


def _store_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir or os.environ.get(ENV_DIR) or ".")


def _existing_store_dir(args: argparse.Namespace) -> Path:
    """The store directory, which must already be a tidelog store."""
    path = _store_dir(args)
    if not path.exists():
        raise CliError(f"store directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise CliError(f"{str(path)!r} is not a directory")
    if not (path / STORE_MARKER).is_file():
        raise CliError(
            f"{str(path)!r} is not a tidelog store (no {STORE_MARKER}); pass --dir or set {ENV_DIR}"
        )
    return path


@contextlib.contextmanager
def _open_store(args: argparse.Namespace, *, create: bool = False) -> Iterator[tidelog.Store]:
    path = _store_dir(args) if create else _existing_store_dir(args)
    with tidelog.open(path) as store:
        yield store


def _partition_numbers(topic: Topic, partition: int | None) -> list[int]:
    if partition is None:
        return list(range(topic.partitions))
    if not 0 <= partition < topic.partitions:
        raise CliError(
            f"partition {partition} out of range: topic {topic.name!r} has "
            f"{topic.partitions} partition{'s' if topic.partitions != 1 else ''}"
        )
    return [partition]


# --- output helpers ----------------------------------------------------------------------


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit with status 1 here; main() handles it like any other write.
            self.quiet = True
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    # A pipe gets a wide, uncoloured table rather than one squeezed into 80 columns.
    return _Console(stderr=stderr, width=None if stream.isatty() else 200)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _show_time(ms: int) -> str:
    try:
        when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _show_bytes(data: bytes | None, limit: int = SHOWN_BYTES) -> str:
    """A short, printable rendering of a key or value for a table."""
    if data is None:
        return "-"
    try:
        text = data.decode("utf-8")
        shown = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    except UnicodeDecodeError:
        shown = "0x" + data.hex()
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _json_bytes(out: dict[str, Any], field: str, data: bytes | None) -> None:
    """Stores ``data`` as UTF-8 text, or as base64 with ``<field>_base64: true``."""
    if data is None:
        out[field] = None
        return
    try:
        out[field] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[field] = base64.b64encode(data).decode("ascii")
        out[f"{field}_base64"] = True


def _json_headers(out: dict[str, Any], headers: dict[str, bytes]) -> None:
    """Header values as UTF-8 text; the names of base64 ones listed in ``headers_base64``."""
    shown: dict[str, str] = {}
    encoded: list[str] = []
    for name, value in headers.items():
        try:
            shown[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            shown[name] = base64.b64encode(value).decode("ascii")
            encoded.append(name)
    out["headers"] = shown
    if encoded:
        out["headers_base64"] = encoded


def _message_json(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        "topic": msg.topic,
        "partition": msg.partition,
        "offset": msg.offset,
        "timestamp_ms": msg.timestamp_ms,
    }
    _json_bytes(out, "key", msg.key)
    _json_bytes(out, "value", msg.value)
    _json_headers(out, msg.headers)
    return out


def _json_line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --- topics, create, delete, describe ----------------------------------------------------


def _cmd_topics(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        if not args.long:
            for name in store.topics():
                print(name)
            return 0
        stats = store_stats(store)
    from rich.table import Table

    table = Table("topic", "partitions", "messages", "size", "segments", box=None)
    for col in table.columns[1:]:
        col.justify = "right"
    for name, topic in stats["topics"].items():
        table.add_row(
            name,
            str(len(topic["partitions"])),
            f"{topic['messages']:,}",
            _human_bytes(topic["size_bytes"]),
            str(topic["segments"]),
        )
    _console().print(table)
    return 0


def _cmd_producers(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        finished = store.abort_orphaned_transactions() if args.abort_orphaned else []
        producers = named_producers(store)
    if args.json:
        print(_json_line({"producers": [asdict(p) for p in producers], "finished": finished}))
        return 0
    from rich.table import Table

    table = Table("name", "producer id", "epoch", "alive", "transaction", box=None)
    for p in producers:
        txn = "-"
        if p.transaction is not None:
            where = ", ".join(f"{t}/{n}" for t, n in p.partitions)
            txn = f"{p.transaction}: {where}" if where else p.transaction
        table.add_row(p.name, str(p.producer_id), str(p.epoch), "yes" if p.alive else "no", txn)
    console = _console()
    console.print(table)
    for name in finished:
        console.print(f"finished the orphaned transaction of {name!r}")
    return 0


def _cmd_create(args: argparse.Namespace) -> int:
    with _open_store(args, create=True) as store:
        existed = args.exist_ok and args.topic in store.topics()
        topic = store.create_topic(args.topic, args.partitions, exist_ok=args.exist_ok)
        done = "exists" if existed else "created"
        print(f"topic {topic.name!r} {done} ({topic.partitions} partitions) in {store.path}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        store.delete_topic(args.topic)
    print(f"deleted topic {args.topic!r}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    changes = dict(args.set or [])
    with _open_store(args) as store:
        if changes:
            try:
                config = store.alter_topic(args.topic, **changes)
            except TypeError as e:
                raise CliError(str(e)) from None
        else:
            config = store.topic(args.topic).config
    if args.json:
        print(json.dumps({"topic": args.topic, "config": config}))
    else:
        width = max(map(len, config))
        for key, value in config.items():
            print(f"{key:<{width}}  {'none' if value is None else value}")
    return 0


def _setting(text: str) -> tuple[str, int | str | None]:
    """``key=value``: ``none`` unsets a limit, digits make an integer, anything else a word."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"setting {text!r} is not key=value")
    if value.lower() == "none":
        return key, None
    try:
        return key, int(value)
    except ValueError:
        return key, value


def _cmd_describe(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        topic = store.topic(args.topic)
        stats = topic_stats(topic)
    if args.json:
        print(_json_line({"topic": args.topic, **stats}))
        return 0
    from rich.table import Table

    title = (
        f"{args.topic}: {len(stats['partitions'])} partitions, {stats['messages']:,} messages, "
        f"{_human_bytes(stats['size_bytes'])} in {stats['segments']} segments"
    )
    table = Table(
        "partition", "start offset", "end offset", "messages", "size", "segments", title=title
    )
    for col in table.columns:
        col.justify = "right"
    for p, s in stats["partitions"].items():
        table.add_row(
            str(p),
            str(s["start_offset"]),
            str(s["end_offset"]),
            f"{s['messages']:,}",
            _human_bytes(s["size_bytes"]),
            str(s["segments"]),
        )
    _console().print(table)
    return 0


# --- produce -----------------------------------------------------------------------------


def _stdin_lines() -> Iterator[bytes]:
    if sys.stdin.isatty():
        print("tidelog: one message per line; end with Ctrl-D", file=sys.stderr)
    for line in sys.stdin.buffer:
        yield line[:-1] if line.endswith(b"\n") else line


def _file_values(paths: list[str]) -> Iterator[bytes]:
    for path in paths:
        yield Path(path).read_bytes()


def _cmd_produce(args: argparse.Namespace) -> int:
    headers = dict(args.header) if args.header else None
    key = args.key.encode() if args.key is not None else None
    values = _file_values(args.file) if args.file else _stdin_lines()
    count = 0
    with _open_store(args) as store:
        topic = store.topic(args.topic)
        _partition_numbers(topic, args.partition)
        for value in values:
            partition, offset = topic.append(
                value, key=key, headers=headers, partition=args.partition
            )
            count += 1
            if args.verbose:
                print(f"partition={partition} offset={offset}", flush=True)
    print(f"wrote {count} message{'s' if count != 1 else ''} to {args.topic!r}")
    return 0


# --- consume -----------------------------------------------------------------------------


def _write_raw(out: Any, msg: Message) -> None:
    out.write(msg.value)
    out.write(b"\n")


def _write_json(out: Any, msg: Message) -> None:
    out.write(_json_line(_message_json(msg)).encode() + b"\n")


def _write_hex(out: Any, msg: Message) -> None:
    key = "-" if msg.key is None else msg.key.hex()
    out.write(f"{msg.partition}\t{msg.offset}\t{key}\t{msg.value.hex()}\n".encode())


_WRITERS: dict[str, Callable[[Any, Message], None]] = {
    "raw": _write_raw,
    "json": _write_json,
    "hex": _write_hex,
}


def _start_offset(topic: Topic, partition: int, args: argparse.Namespace) -> int:
    if args.offset is not None:
        start, end = topic.start_offset(partition), topic.end_offset(partition)
        if not start <= args.offset <= end:
            raise CliError(
                f"offset {args.offset} out of range for partition {partition}: "
                f"valid offsets are {start}..{end}"
            )
        return int(args.offset)
    if args.timestamp is not None:
        found = topic.offset_for_timestamp(partition, args.timestamp)
        return topic.end_offset(partition) if found is None else found
    if args.from_end:
        return topic.end_offset(partition)
    return topic.start_offset(partition)


def _check_group_options(args: argparse.Namespace) -> None:
    """Rejects options that make no sense with (or without) ``--group``."""
    if args.group is None:
        if args.delivery is not None:
            raise CliError("--delivery needs --group", EXIT_USAGE)
        return
    for given, option in (
        (args.partition is not None, "--partition"),
        (args.offset is not None, "--offset"),
        (args.timestamp is not None, "--timestamp"),
    ):
        if given:
            raise CliError(
                f"{option} is not allowed with --group: the group assigns the partitions "
                "and resumes from its committed offsets",
                EXIT_USAGE,
            )


def _cmd_consume(args: argparse.Namespace) -> int:
    _check_group_options(args)
    write = _WRITERS[args.format]
    out = sys.stdout.buffer
    remaining: int | None = args.max
    if remaining == 0:
        return 0
    if args.group is not None:
        return _consume_group(args, write, out)
    with _open_store(args) as store:
        topic = store.topic(args.topic)
        partitions = _partition_numbers(topic, args.partition)
        if args.offset is not None and args.partition is None and topic.partitions > 1:
            raise CliError(
                f"--offset needs --partition: topic {topic.name!r} has "
                f"{topic.partitions} partitions",
                EXIT_USAGE,
            )
        position = {p: _start_offset(topic, p, args) for p in partitions}
        # Without --follow, read what exists now: a busy writer cannot keep us going forever.
        stop = None if args.follow else {p: topic.end_offset(p) for p in partitions}
        next_existence_check = time.monotonic() + EXISTENCE_CHECK_SECONDS
        while True:
            delivered = 0
            for p in partitions:
                end = stop[p] if stop is not None else topic.end_offset(p)
                if position[p] >= end:
                    continue
                wanted = min(READ_CHUNK, end - position[p], remaining or READ_CHUNK)
                try:
                    batch = topic.read_batch(p, position[p], max_messages=wanted)
                except OffsetOutOfRangeError:
                    if position[p] >= topic.start_offset(p):
                        raise
                    skipped_to = topic.start_offset(p)
                    print(
                        f"tidelog: partition {p}: offsets {position[p]}..{skipped_to - 1} "
                        "were removed by retention; skipping them",
                        file=sys.stderr,
                    )
                    position[p] = skipped_to
                    continue
                next_offset = position[p]
                for msg in batch:
                    if msg.offset >= end:
                        break
                    write(out, msg)
                    next_offset = msg.offset + 1
                    delivered += 1
                    if remaining is not None:
                        remaining -= 1
                        if remaining == 0:
                            out.flush()
                            return 0
                else:
                    next_offset = max(next_offset, batch.next_offset)
                position[p] = next_offset
            if delivered == 0:
                if stop is not None:
                    break
                out.flush()
                if time.monotonic() >= next_existence_check:
                    # A deleted topic stays readable through our mapping: notice it and stop.
                    store.topic(args.topic)
                    next_existence_check = time.monotonic() + EXISTENCE_CHECK_SECONDS
                time.sleep(FOLLOW_POLL_SECONDS)
            elif stop is None:
                out.flush()  # a follower's reader wants each message as it comes
    out.flush()
    return 0


def _consume_group(
    args: argparse.Namespace, write: Callable[[Any, Message], None], out: Any
) -> int:
    """``consume --group``: prints what this member of the group is given.

    At-least-once: each poll's messages are written and flushed, then committed, so a run
    that stops (Ctrl-C, a closed pipe, a crash) leaves committed only what reached stdout;
    the next run of the group starts there. At-most-once: the consumer commits each poll
    before it is printed.
    """
    remaining: int | None = args.max
    with _open_store(args) as store:
        consumer = store.consumer(
            args.topic,
            group=args.group,
            delivery="at-most-once" if args.delivery == "at-most-once" else "at-least-once",
            start="latest" if args.from_end else "earliest",
        )
        with consumer:
            commit_after_print = consumer.delivery == "at-least-once"
            next_existence_check = time.monotonic() + EXISTENCE_CHECK_SECONDS
            while remaining is None or remaining > 0:
                wanted = consumer.max_poll_messages
                if remaining is not None:
                    wanted = min(wanted, remaining)
                # Without --follow, one empty poll means the member's partitions are read.
                timeout = EXISTENCE_CHECK_SECONDS if args.follow else 0.0
                messages = consumer.poll(wanted, timeout=timeout)
                if not messages:
                    if not args.follow:
                        break
                    if time.monotonic() >= next_existence_check:
                        store.topic(args.topic)  # a deleted topic ends the follow
                        next_existence_check = time.monotonic() + EXISTENCE_CHECK_SECONDS
                    continue
                try:
                    for msg in messages:
                        write(out, msg)
                    out.flush()
                except BaseException as e:
                    if commit_after_print:
                        _settle_unprinted(consumer, messages, out, e)
                    raise
                if commit_after_print:
                    _commit_printed(consumer)
                if remaining is not None:
                    remaining -= len(messages)
    return 0


def _commit_printed(consumer: Consumer) -> None:
    """Commits everything the consumer delivered (it has all been printed)."""
    # RebalanceError: the group moved on since this poll. Whoever owns the partitions now
    # reads these messages again (at-least-once); the next poll takes the new assignment.
    with contextlib.suppress(RebalanceError):
        consumer.commit()


def _settle_unprinted(
    consumer: Consumer, messages: list[Message], out: Any, error: BaseException
) -> None:
    """After a failed write: commits what surely reached stdout and nothing more.

    The consumer would otherwise commit the whole poll when it closes. On Ctrl-C (or
    SIGTERM) the output may still be flushed; after a write error nothing of this poll
    counts as printed, so each partition's commit stays at the first message of the poll.
    """
    if isinstance(error, KeyboardInterrupt):
        try:
            out.flush()
        except OSError:
            pass
        else:
            _commit_printed(consumer)
            return
    first: dict[int, int] = {}
    for msg in messages:
        first.setdefault(msg.partition, msg.offset)
    with contextlib.suppress(TidelogError):
        consumer.commit(first)


# --- groups ------------------------------------------------------------------------------


def _group_overview(store: tidelog.Store) -> dict[str, dict[str, GroupInfo]]:
    """``store.groups()``, without creating the offsets topic in a store that has no groups."""
    from tidelog.groups import list_groups
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
            if name.startswith("__") or (topic_name is not None and name != topic_name):
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
        head = (row["group"], row["topic"], str(row["generation"]))
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
    with _open_store(args) as store:
        if args.watch:
            return _watch_groups(args, store)
        rows = _group_rows(store, args.topic, args.group)
        queues = _queue_rows(store, args.topic, args.group)
    if args.group is not None and not rows and not queues:
        raise _missing_group(args.group, args.topic)
    if args.json:
        print(_json_line({"groups": rows, "work_queues": queues}))
        return 0
    _console().print(_groups_view(rows, queues))
    return 0


def _watch_groups(args: argparse.Namespace, store: tidelog.Store) -> int:
    """Shows the groups again every ``args.interval`` seconds until Ctrl-C."""
    console = _console()

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
                print(_json_line({"time_ms": now_ms, "groups": rows, "work_queues": queues}))
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


# --- dump and verify ---------------------------------------------------------------------


def _partition_dirs(topic_dir: Path) -> list[Path]:
    dirs = [d for d in topic_dir.iterdir() if d.is_dir() and d.name.isdigit()]
    return sorted(dirs, key=lambda d: int(d.name))


def _topic_dir(store_dir: Path, name: str) -> Path:
    topic_dir = store_dir / "topics" / name
    if name.startswith(".") or not (topic_dir / TOPIC_META).is_file():
        raise CliError(f'topic "{name}" does not exist in {str(store_dir)!r}')
    return topic_dir


def _dump_segments(args: argparse.Namespace) -> list[Path]:
    target = args.target
    path = Path(target)
    if target.endswith(".log") or os.sep in target or (os.altsep and os.altsep in target):
        if path.is_file():
            return [path]
        if not path.is_dir():
            raise CliError(f"{target!r} does not exist")
        dirs = _partition_dirs(path) if (path / TOPIC_META).is_file() else [path]
    else:
        dirs = _partition_dirs(_topic_dir(_existing_store_dir(args), target))
    if args.partition is not None:
        dirs = [d for d in dirs if d.name == str(args.partition)]
        if not dirs:
            raise CliError(f"no partition {args.partition} in {target!r}")
    return [seg for d in dirs for seg in _core.segment_files(d)]


def _problem_line(problem: dict[str, Any]) -> str:
    return (
        f"{problem['path']}:{problem['position']}: offset {problem['offset']}: {problem['reason']}"
    )


def _batch_json(batch: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in batch.items() if k != "records"}
    if "records" in batch:
        records = []
        for rec in batch["records"]:
            shown: dict[str, Any] = {"offset": rec["offset"], "timestamp_ms": rec["timestamp_ms"]}
            _json_bytes(shown, "key", rec["key"])
            _json_bytes(shown, "value", rec["value"])
            _json_headers(shown, rec["headers"])
            records.append(shown)
        out["records"] = records
    return out


def _color_enabled() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _plain_table(
    headers: Sequence[str], rows: list[tuple[str, ...]], *, left: int, bad: set[int]
) -> Iterator[str]:
    """Lines of an aligned table: the first ``left`` columns left-aligned, rows in ``bad`` red.

    Plain text rather than a rich table: a segment holds up to hundreds of thousands of
    batches, and rich renders about a millisecond per row.
    """
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    red = _color_enabled()

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    yield line(headers)
    for i, row in enumerate(rows):
        yield f"\x1b[1;31m{line(row)}\x1b[0m" if red and i in bad else line(row)


def _print_segment(report: dict[str, Any], records: bool) -> None:
    batches = report["batches"]
    print(f"segment {report['path']}")
    rows: list[tuple[str, ...]] = []
    bad: set[int] = set()
    for b in batches:
        first, last = b["base_offset"], b["last_offset"]
        attrs = [name for bit, name in ((1, "txn"), (2, "control")) if b["attributes"] & bit]
        if b["compression"] != "none":  # the codec; None: codec bits naming none (damage)
            attrs.append(b["compression"] or "codec?")
        if not b["crc_ok"]:
            bad.add(len(rows))
        rows.append(
            (
                str(b["position"]),
                str(first) if first == last else f"{first}-{last}",
                str(b["record_count"]),
                str(b["size"]),
                f"{b['crc']:08x}",
                "ok" if b["crc_ok"] else "BAD",
                _show_time(b["first_timestamp_ms"]),
                ",".join(attrs) or "-",
                "-" if b["producer_id"] < 0 else str(b["producer_id"]),
                "-" if b["producer_epoch"] < 0 else str(b["producer_epoch"]),
                "-" if b["base_sequence"] < 0 else str(b["base_sequence"]),
            )
        )
    headers = (
        "position",
        "offsets",
        "count",
        "size",
        "crc",
        "crc ok",
        "first timestamp",
        "attrs",
        "producer id",
        "epoch",
        "sequence",
    )
    for line in _plain_table(headers, rows, left=0, bad=bad):
        print(line)
    print(
        f"{len(batches)} batches; valid data ends at position {report['valid_end']} of "
        f"{report['file_len']} bytes; {report['index_entries']} index entries"
    )
    if records:
        rows = []
        for b in batches:
            for r in b.get("records", []):
                headers_shown = ", ".join(
                    f"{n}={_show_bytes(v, 20)}" for n, v in r["headers"].items()
                )
                rows.append(
                    (
                        str(b["position"]),
                        str(r["offset"]),
                        _show_time(r["timestamp_ms"]),
                        _show_bytes(r["key"], 24),
                        _show_bytes(r["value"]),
                        headers_shown or "-",
                    )
                )
        print()
        record_headers = ("batch at", "offset", "timestamp", "key", "value", "headers")
        for line in _plain_table(record_headers, rows, left=6, bad=set()):
            print(line)
    print()


def _cmd_dump(args: argparse.Namespace) -> int:
    segments = _dump_segments(args)
    problems = 0
    for seg in segments:
        report = _core.inspect_segment(seg, records=args.records)
        problems += len(report["problems"])
        if args.json:
            shown = {k: v for k, v in report.items() if k != "batches"}
            shown["batches"] = [_batch_json(b) for b in report["batches"]]
            print(_json_line(shown))
            continue
        _print_segment(report, args.records)
        for problem in report["problems"]:
            print(f"problem: {_problem_line(problem)}")
    return EXIT_ERROR if problems else 0


def _verify_targets(store_dir: Path, names: list[str]) -> list[tuple[str, Path]]:
    """(label, partition directory) for each partition of the named (default: all) topics."""
    if not names:
        topics_dir = store_dir / "topics"
        names = sorted(
            d.name
            for d in (topics_dir.iterdir() if topics_dir.is_dir() else [])
            if not d.name.startswith(".") and (d / TOPIC_META).is_file()
        )
    return [
        (f"{name}/{d.name}", d)
        for name in names
        for d in _partition_dirs(_topic_dir(store_dir, name))
    ]


def _progress(enabled: bool) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        disable=not enabled,
        # Lines printed to a terminal stdout go above the bar instead of through it.
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    store_dir = _existing_store_dir(args)
    targets = _verify_targets(store_dir, args.topics)
    work = [(label, seg) for label, d in targets for seg in _core.segment_files(d)]
    queues = [(t, g) for t, g in list_queues(store_dir) if not args.topics or t in args.topics]
    newest = {label: seg for label, seg in work}  # each partition's active segment
    problems = batches = 0
    with _progress(not args.quiet and sys.stderr.isatty()) as progress:
        task = progress.add_task("verifying", total=len(work) + len(queues))
        previous: tuple[str, int] | None = None  # (partition label, next offset it expects)
        for label, seg in work:
            progress.update(task, description=f"verifying {label}")
            found: list[str] = []
            try:
                report = _core.inspect_segment(seg)
            except (TidelogError, OSError) as e:
                found.append(f"{seg}:0: offset ?: cannot inspect: {e}")
                report = None
            notes: list[str] = []
            if report is not None:
                torn = newest[label] == seg and _torn_tail(report)
                lines = [_problem_line(p) for p in report["problems"]]
                if torn:
                    notes = [
                        f"{line} (torn tail: truncated when the store opens)" for line in lines
                    ]
                else:
                    found += lines
                batches += len(report["batches"])
                base = int(report["base_offset"])
                if previous is not None and previous[0] == label and previous[1] != base:
                    found.append(
                        f"{seg}:0: offset {base}: segment starts at offset {base} but the "
                        f"previous segment ends before offset {previous[1]}"
                    )
                last = report["batches"][-1]["last_offset"] + 1 if report["batches"] else base
                previous = (label, last)
            for line in [*found, *notes]:
                print(line, flush=True)
            problems += len(found)
            progress.advance(task)
        for topic, group in queues:
            # A work queue's state (snapshot and journal): every CRC, and every record
            # applied. A torn tail is not damage: the next member truncates it.
            progress.update(task, description=f"verifying work queue {group} of {topic}")
            try:
                check_queue(queue_files(store_dir, topic, group))
            except (TidelogError, OSError) as e:
                print(f"work queue {group!r} of topic {topic!r}: {e}", flush=True)
                problems += 1
            progress.advance(task)
    for label, d in targets:
        found, notes = _recovery_lines(label, d)
        for line in [*found, *notes]:
            print(line, flush=True)
        problems += len(found)
    if not args.quiet:
        also = f" and {len(queues)} work queues" if queues else ""
        print(
            f"checked {len(work)} segments ({batches} batches) of {len(targets)} partitions"
            f"{also}: {problems or 'no'} problem{'s' if problems != 1 else ''}"
        )
    return EXIT_ERROR if problems else 0


def _torn_tail(report: dict[str, Any]) -> bool:
    """True when a segment's problems are a torn tail (see ``inspect_segment``).

    In a partition's newest segment that is what a crash in the middle of an append leaves,
    and opening the store truncates it (recording it). Index entries pointing past the
    intact batches go with it.
    """
    if not report["torn_tail"]:
        return False
    intact = [b for b in report["batches"] if b["crc_ok"]]
    after = max((b["last_offset"] + 1 for b in intact), default=report["base_offset"])
    return all(p["offset"] >= after for p in report["problems"] if p["path"] != report["path"])


def _event_line(label: str, event: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(event["time_ms"] / 1000, tz=UTC).isoformat(timespec="seconds")
    first, end = event["first_offset"], event["end_offset"]
    offsets = f"offsets {first}..{end - 1}" if end > first else f"from offset {first}"
    where = f" into {event['path']}" if event["path"] else ""
    return (
        f"{label}: {event['kind']}: {offsets} ({event['bytes']} bytes at position "
        f"{event['position']} of segment {event['segment_base']}) removed by recovery at "
        f"{when}{where}"
    )


def _recovery_lines(label: str, partition_dir: Path) -> tuple[list[str], list[str]]:
    """(problems, notes) from what recovery removed from a partition.

    Quarantined data is a problem (damage was found and data moved aside until someone
    looks at it); a truncated torn tail is what a crash leaves, so only a note.
    """
    try:
        events = _core.recovery_events(partition_dir)
    except (TidelogError, OSError) as e:
        return [f"{partition_dir}:0: offset ?: cannot read recovery records: {e}"], []
    problems = [_event_line(label, e) for e in events if e["kind"] == "quarantined"]
    notes = [_event_line(label, e) for e in events if e["kind"] != "quarantined"]
    return problems, notes


def _cmd_repair(args: argparse.Namespace) -> int:
    store_dir = Path(args.store) if args.store else _existing_store_dir(args)
    if not (store_dir / STORE_MARKER).is_file():
        raise CliError(f"{str(store_dir)!r} is not a tidelog store (no {STORE_MARKER})")

    def events() -> list[dict[str, Any]]:
        from tidelog.stats import recovery_events

        names = [
            d.name
            for d in (store_dir / "topics").iterdir()
            if not d.name.startswith(".") and (d / TOPIC_META).is_file()
        ]
        return recovery_events(str(store_dir), sorted(names))

    before = len(events())
    with tidelog.open(store_dir, on_corruption="quarantine") as store:
        # Opening a partition is what recovers it.
        for name in store.topics(internal=True):
            store.topic(name)
    repaired = events()[before:]
    for event in repaired:
        print(_event_line(f"{event['topic']}/{event['partition']}", event))
    if not repaired:
        print("nothing to repair")
    return 0


# --- bench -------------------------------------------------------------------------------


def _bench_phases(
    store: tidelog.Store, n: int, size: int, batch_size: int, progress: Progress
) -> list[tuple[str, float]]:
    value = bytes(range(256)) * (size // 256) + bytes(size % 256)
    one = store.create_topic("bench-append", 1)
    many = store.create_topic("bench-append-batch", 1)
    timings: list[tuple[str, float]] = []

    def phase(name: str, run: Callable[[Callable[[int], None]], None]) -> None:
        task = progress.add_task(name, total=n)
        started = time.perf_counter()
        run(lambda k: progress.advance(task, k))
        timings.append((name, time.perf_counter() - started))

    def append(advance: Callable[[int], None]) -> None:
        for start in range(0, n, batch_size):
            for _ in range(min(batch_size, n - start)):
                one.append(value, partition=0)
            advance(min(batch_size, n - start))

    def append_batch(advance: Callable[[int], None]) -> None:
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            many.append_batch([value] * count, partition=0)
            advance(count)

    def read_batch(advance: Callable[[int], None]) -> None:
        offset = 0
        while offset < n:
            batch = many.read_batch(0, offset, max_messages=batch_size)
            offset = batch.next_offset
            advance(len(batch))

    def iterate(advance: Callable[[int], None]) -> None:
        seen = 0
        for msg in many.read(0, 0):
            msg.value  # noqa: B018 -- materialise the value, as an application would
            seen += 1
            if seen % batch_size == 0:
                advance(batch_size)
        advance(seen % batch_size)

    phase("append (one by one)", append)
    phase("append_batch", append_batch)
    phase("read_batch scan", read_batch)
    phase("Message iteration", iterate)
    return timings


def _cmd_bench(args: argparse.Namespace) -> int:
    n, size = args.messages, args.size
    parent = args.dir  # not $TIDELOG_DIR: a benchmark must not write next to real data
    if parent is not None and not Path(parent).is_dir():
        raise CliError(f"directory {parent!r} does not exist")
    with (
        tempfile.TemporaryDirectory(prefix="tidelog-bench-", dir=parent) as tmp,
        tidelog.open(Path(tmp) / "store", fsync=args.fsync) as store,
        _progress(not args.quiet and sys.stderr.isatty()) as progress,
    ):
        timings = _bench_phases(store, n, size, args.batch, progress)
    rows = [
        {
            "phase": name,
            "messages": n,
            "seconds": seconds,
            "messages_per_second": n / seconds if seconds else float("inf"),
            "mb_per_second": n * size / 1e6 / seconds if seconds else float("inf"),
        }
        for name, seconds in timings
    ]
    if args.json:
        print(_json_line({"messages": n, "size": size, "fsync": args.fsync, "results": rows}))
        return 0
    from rich.table import Table

    table = Table(
        "phase",
        "messages",
        "seconds",
        "msgs/s",
        "MB/s",
        title=f"tidelog bench: {n:,} messages of {size} bytes, fsync={args.fsync}",
    )
    for col in table.columns[1:]:
        col.justify = "right"
    for row in rows:
        table.add_row(
            row["phase"],
            f"{n:,}",
            f"{row['seconds']:.3f}",
            f"{row['messages_per_second']:,.0f}",
            f"{row['mb_per_second']:,.1f}",
        )
    _console().print(table)
    return 0


# --- argument parsing --------------------------------------------------------------------


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_non_negative.__name__ = "non-negative integer"  # argparse names the type in its message


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


_positive.__name__ = "positive integer"


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


_positive_seconds.__name__ = "positive number of seconds"


def _header(text: str) -> tuple[str, bytes]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"header {text!r} is not NAME=VALUE")
    return name, value.encode()


def _timestamp(text: str) -> int:
    """Milliseconds since the epoch, or an ISO 8601 date/time (UTC unless it says)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"timestamp {text!r} is neither milliseconds since the epoch nor ISO 8601"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


_STORE_HELP = f"the store directory (default: ${ENV_DIR}, else the current directory)"

_DESCRIPTION = f"""\
Look at and work with a tidelog store from the shell.

The store is --dir DIR (before or after the subcommand), else ${ENV_DIR}, else the
current directory. Only 'create' makes a new store; other commands refuse a directory that
is not one. Run 'tidelog COMMAND --help' for each command's options.

exit status: 0 ok, 1 error or problem found, 2 usage error, 130 interrupted (Ctrl-C),
141 stdout closed by its reader (e.g. '| head'), 143 terminated (SIGTERM)."""


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="tidelog",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tidelog {tidelog.__version__}")
    parser.add_argument("-d", "--dir", metavar="DIR", default=None, help=_STORE_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], summary: str, details: str = ""
    ) -> _Parser:
        sub: _Parser = commands.add_parser(
            name,
            help=summary,
            description=f"{summary}.\n\n{details}".rstrip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        if name != "bench":
            # SUPPRESS: without it the subcommand's default would hide a --dir given before it.
            sub.add_argument(
                "-d", "--dir", metavar="DIR", default=argparse.SUPPRESS, help=_STORE_HELP
            )
        return sub

    sub = command("topics", _cmd_topics, "List the topics of the store, one per line")
    sub.add_argument(
        "-l", "--long", action="store_true", help="a table with partitions, messages and sizes"
    )

    sub = command(
        "create",
        _cmd_create,
        "Create a topic",
        "Creates the store too if the directory is missing or empty.",
    )
    sub.add_argument("topic", help="topic name: 1-249 characters from [A-Za-z0-9._-]")
    sub.add_argument(
        "-p", "--partitions", type=_positive, default=1, metavar="N", help="default: 1"
    )
    sub.add_argument(
        "--exist-ok",
        action="store_true",
        help="succeed if the topic already exists with N partitions",
    )

    sub = command(
        "producers",
        _cmd_producers,
        "List the named producers: id, epoch, whether one is open, open transaction",
        "A transaction whose producer died holds back the readers of its partitions until\n"
        "an instance of the name opens again; --abort-orphaned finishes such transactions\n"
        "now (only those no live process holds), as held-back consumers also do.",
    )
    sub.add_argument(
        "--abort-orphaned", action="store_true", help="finish dead producers' transactions"
    )
    sub.add_argument("--json", action="store_true", help="one JSON object instead of a table")

    sub = command("delete", _cmd_delete, "Delete a topic and all its messages")
    sub.add_argument("topic")

    sub = command(
        "config",
        _cmd_config,
        "Show or change a topic's settings",
        "Settings that shape files (segment size, index interval, message limit, retention,\n"
        "cleanup policy, compression) are stored with each topic and shared by every process\n"
        "that opens the store. --set changes them for every process at once; segment_bytes\n"
        "and index_interval_bytes shape segments created afterwards. 'none' removes a\n"
        "retention limit.",
    )
    sub.add_argument("topic")
    sub.add_argument(
        "--set",
        action="append",
        type=_setting,
        metavar="KEY=VALUE",
        help="change a setting, e.g. retention_ms=86400000 (repeatable)",
    )
    sub.add_argument("--json", action="store_true", help="one JSON object instead of lines")

    sub = command(
        "describe",
        _cmd_describe,
        "Show a topic's partitions",
        "Per partition: the first retained offset, the next offset to be written, the\n"
        "number of messages, the bytes on disk and the number of segment files.",
    )
    sub.add_argument("topic")
    sub.add_argument("--json", action="store_true", help="one JSON object instead of a table")

    sub = command(
        "produce",
        _cmd_produce,
        "Append messages to a topic",
        "Each line of stdin becomes one message (without its newline), or with --file each\n"
        "file becomes one message. Prints the number of messages written; with -v also the\n"
        "partition and offset of each. Without --partition, messages go by the hash of the\n"
        "key, else round-robin.",
    )
    sub.add_argument("topic")
    sub.add_argument(
        "-f",
        "--file",
        action="append",
        metavar="PATH",
        help="send the contents of PATH as one message (repeatable)",
    )
    sub.add_argument("-k", "--key", help="the key of every message (UTF-8)")
    sub.add_argument(
        "-H",
        "--header",
        action="append",
        type=_header,
        metavar="NAME=VALUE",
        help="a header on every message (repeatable)",
    )
    sub.add_argument(
        "-p", "--partition", type=_non_negative, metavar="N", help="write to partition N"
    )
    sub.add_argument("-v", "--verbose", action="store_true", help="print each offset written")

    sub = command(
        "consume",
        _cmd_consume,
        "Print the messages of a topic",
        "Reads every partition (interleaved) unless --partition is given, from the first\n"
        "retained offset unless told otherwise, and stops at the end of the log unless\n"
        "--follow is given.\n\n"
        "With --group GROUP it reads as one member of a consumer group: the partitions the\n"
        "group assigns to it (other members, in any process, get the rest), starting at\n"
        "the group's committed offsets, and it commits what it printed after each batch\n"
        "reached stdout, so the next run of the group resumes there. Without --follow it\n"
        "stops once its partitions have nothing more.\n\n"
        "formats:\n"
        "  raw   the value and a newline\n"
        "  json  one object per line: topic, partition, offset, timestamp_ms, key, value,\n"
        "        headers; bytes that are not UTF-8 are base64, flagged by key_base64: true,\n"
        "        value_base64: true, or headers_base64: [names]\n"
        "  hex   partition, offset, key (- for none) and value in hex, tab-separated",
    )
    sub.add_argument("topic")
    sub.add_argument("-p", "--partition", type=_non_negative, metavar="N", help="only partition N")
    start = sub.add_mutually_exclusive_group()
    start.add_argument(
        "-o", "--offset", type=_non_negative, metavar="N", help="start at offset N (one partition)"
    )
    start.add_argument(
        "--from-beginning", action="store_true", help="start at the first retained offset (default)"
    )
    start.add_argument(
        "--from-end",
        action="store_true",
        help="only messages appended from now on (with --group: in partitions the group "
        "has not committed yet; the others resume at their commit)",
    )
    start.add_argument(
        "-t",
        "--timestamp",
        type=_timestamp,
        metavar="TIME",
        help="start at the first message with a timestamp >= TIME "
        "(ms since the epoch, or ISO 8601, UTC by default)",
    )
    sub.add_argument(
        "-f", "--follow", action="store_true", help="keep waiting for new messages, like tail -f"
    )
    sub.add_argument("--format", choices=sorted(_WRITERS), default="raw", help="default: raw")
    sub.add_argument(
        "-n", "--max", type=_non_negative, metavar="N", help="stop after N messages in all"
    )
    sub.add_argument(
        "-g",
        "--group",
        metavar="GROUP",
        help="consume as a member of consumer group GROUP: read the partitions the group "
        "assigns to this member, from the group's committed offsets, and commit what is "
        "printed; without a commit a partition starts at its beginning (--from-end: its end)",
    )
    sub.add_argument(
        "--delivery",
        choices=["at-least-once", "at-most-once"],
        default=None,
        help="with --group: commit after printing (at-least-once, the default; a message "
        "may be printed again after a crash) or before (at-most-once; a message may be lost)",
    )

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
        type=_positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="seconds between refreshes with --watch (default: 2)",
    )

    sub = command(
        "dump",
        _cmd_dump,
        "Show the batches (and records) of segment files",
        "SEGMENT_OR_TOPIC is a segment data file (.../00000000000000000000.log), a\n"
        "partition or topic directory (any argument containing '/'), or a topic name of\n"
        "the store. Shows each batch's position, offsets, size, CRC and whether it\n"
        "matches, and producer id, epoch and sequence. Exits 1 if a segment has a problem.",
    )
    sub.add_argument("target", metavar="SEGMENT_OR_TOPIC")
    sub.add_argument("-p", "--partition", type=_non_negative, metavar="N", help="only partition N")
    sub.add_argument("-r", "--records", action="store_true", help="also show every record")
    sub.add_argument(
        "--json", action="store_true", help="one JSON object per segment instead of tables"
    )

    sub = command(
        "verify",
        _cmd_verify,
        "Check every batch CRC and index of the store, and every work queue's state",
        "Reads the segment files without opening the store, so it can run next to writers\n"
        "(the tail of an active segment being written may then show up as a problem).\n"
        "Each work queue's snapshot and journal are checked too (a torn tail left by a\n"
        "crash is not a problem: the next member truncates it).\n"
        "Prints each problem as 'path:position: offset N: reason' and exits 1 if there\n"
        "is any. Also lists what recovery removed: data moved to quarantine is a problem,\n"
        "a truncated torn tail (what a crash leaves) only a note.",
    )
    sub.add_argument("topics", nargs="*", metavar="TOPIC", help="only these topics")
    sub.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary line"
    )

    sub = command(
        "repair",
        _cmd_repair,
        "Recover every partition, moving damaged data aside",
        'Opens every topic of the store with on_corruption="quarantine": damage in a\n'
        "partition's newest segment that is followed by valid batches (which a plain open\n"
        "refuses) is moved, with everything after it, into <partition>/quarantine/ and\n"
        "recorded; torn tails are truncated. Prints what was removed. Run it while no\n"
        "other process has the store open (a partition in use is not recovered).",
    )
    sub.add_argument(
        "store", nargs="?", metavar="DIR", help="the store directory (instead of --dir)"
    )

    sub = command(
        "bench",
        _cmd_bench,
        "Measure append and read throughput on a temporary store",
        "Phases: append one message at a time, append_batch, a read_batch scan and\n"
        "iteration over Message objects. The temporary store is deleted afterwards.",
    )
    sub.add_argument(
        "-d",
        "--dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="create the temporary store inside DIR (default: the system temp directory; "
        f"${ENV_DIR} is not used)",
    )
    sub.add_argument("-n", "--messages", type=_positive, default=100_000, metavar="N")
    sub.add_argument("-s", "--size", type=_non_negative, default=100, metavar="BYTES")
    sub.add_argument("-b", "--batch", type=_positive, default=1000, metavar="N")
    sub.add_argument("--fsync", choices=["never", "interval", "always"], default="never")
    sub.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


# --- entry point -------------------------------------------------------------------------


def _error(message: str) -> None:
    with contextlib.suppress(OSError):
        print(f"tidelog: error: {message}", file=sys.stderr, flush=True)


def _os_error_message(error: OSError) -> str:
    if error.strerror and error.filename is not None:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def _silence_stdout() -> None:
    """Points stdout at /dev/null so the interpreter's final flush cannot fail again.

    This is what the Python documentation recommends after a BrokenPipeError; without it
    Python prints "Exception ignored ... BrokenPipeError" on exit.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``tidelog`` command line.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status: 0 success, 1 error or problem found, 2 usage error, 130 interrupted,
        141 stdout closed by its reader, 143 terminated.
    """
    with _sigterm_interrupts():
        return _main(argv)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the command unwinds and closes what it opened."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turns SIGTERM into :class:`_Terminated` while the command runs (main thread only).

    Without it a terminated group consumer would vanish without committing what it printed
    or leaving its group, which would then wait for its lease to expire.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield  # the embedding program decided what SIGTERM does
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = _build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        status: int = args.run(args)
        sys.stdout.flush()
        return status
    except KeyboardInterrupt as e:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
        except OSError:
            pass
        return EXIT_TERMINATED if isinstance(e, _Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except CliError as e:
        _error(str(e))
        return e.status
    except TidelogError as e:
        # A StorageError is also an OSError: shown as the file and what failed.
        _error(_os_error_message(e) if isinstance(e, OSError) else str(e))
        return EXIT_ERROR
    except OSError as e:
        _error(_os_error_message(e))
        return EXIT_ERROR
