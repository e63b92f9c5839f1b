"""Messages in and out of a topic: ``produce``, and ``consume`` (also ``--follow``, ``--group``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidelog.cli._common import (
    EXIT_USAGE,
    AddCommand,
    CliError,
    is_kafka,
    non_negative,
    open_store,
)
from tidelog.cli._format import json_line, message_json
from tidelog.errors import OffsetOutOfRangeError, RebalanceError, TidelogError

if TYPE_CHECKING:
    from tidelog import Message, Topic
    from tidelog.consumer import Consumer

__all__ = ["add_commands"]

FOLLOW_POLL_SECONDS = 0.02
EXISTENCE_CHECK_SECONDS = 1.0
#: How long `consume --group` without --follow waits for a Kafka group to assign partitions.
KAFKA_JOIN_SECONDS = 30.0
READ_CHUNK = 1000


def _partition_numbers(topic: Topic, partition: int | None) -> list[int]:
    if partition is None:
        return list(range(topic.partitions))
    if not 0 <= partition < topic.partitions:
        raise CliError(
            f"partition {partition} out of range: topic {topic.name!r} has "
            f"{topic.partitions} partition{'s' if topic.partitions != 1 else ''}"
        )
    return [partition]


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
    with open_store(args) as store:
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
    out.write(msg.value or b"")  # a tombstone: an empty line
    out.write(b"\n")


def _write_json(out: Any, msg: Message) -> None:
    out.write(json_line(message_json(msg)).encode() + b"\n")


def _write_hex(out: Any, msg: Message) -> None:
    key = "-" if msg.key is None else msg.key.hex()
    value = "-" if msg.value is None else msg.value.hex()
    out.write(f"{msg.partition}\t{msg.offset}\t{key}\t{value}\n".encode())


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
    with open_store(args) as store:
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
    with open_store(args) as store:
        consumer = store.consumer(
            args.topic,
            group=args.group,
            delivery="at-most-once" if args.delivery == "at-most-once" else "at-least-once",
            start="latest" if args.from_end else "earliest",
        )
        with consumer:
            commit_after_print = consumer.delivery == "at-least-once"
            kafka = is_kafka(args)
            join_deadline = time.monotonic() + KAFKA_JOIN_SECONDS
            next_existence_check = time.monotonic() + EXISTENCE_CHECK_SECONDS
            while remaining is None or remaining > 0:
                wanted = consumer.max_poll_messages
                if remaining is not None:
                    wanted = min(wanted, remaining)
                # Without --follow, one empty poll means the member's partitions are read.
                timeout = EXISTENCE_CHECK_SECONDS if args.follow else (0.2 if kafka else 0.0)
                messages = consumer.poll(wanted, timeout=timeout)
                if not messages:
                    if not args.follow and not kafka:
                        break
                    if kafka and not args.follow:
                        # Kafka assigns partitions and fetches asynchronously: an empty
                        # poll ends the read once the member owns partitions and has
                        # committed up to their end (or the join takes too long).
                        owned = consumer.assignment()
                        lag = consumer.lag() if owned else {}
                        if (owned and not any(lag[p] for p in owned)) or (
                            time.monotonic() > join_deadline
                        ):
                            break
                        continue
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


# --- argument parsing --------------------------------------------------------------------


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


def add_commands(command: AddCommand) -> None:
    """Adds ``produce`` and ``consume``."""
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
        "-p", "--partition", type=non_negative, metavar="N", help="write to partition N"
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
    sub.add_argument("-p", "--partition", type=non_negative, metavar="N", help="only partition N")
    start = sub.add_mutually_exclusive_group()
    start.add_argument(
        "-o", "--offset", type=non_negative, metavar="N", help="start at offset N (one partition)"
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
        "-n", "--max", type=non_negative, metavar="N", help="stop after N messages in all"
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
