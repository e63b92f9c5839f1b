"""Managing topics: ``topics``, ``create``, ``producers``, ``delete``, ``config``, ``describe``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from tidelog.cli._common import AddCommand, CliError, is_kafka, open_store, positive
from tidelog.cli._format import human_bytes, json_line, rich_console
from tidelog.producers import named_producers
from tidelog.stats import topic_stats

__all__ = ["add_commands"]


def _cmd_topics(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if not args.long:
            for name in store.topics():
                print(name)
            return 0
        stats = store.stats()
    from rich.table import Table

    table = Table("topic", "partitions", "messages", "size", "segments", box=None)
    for col in table.columns[1:]:
        col.justify = "right"
    for name, topic in stats["topics"].items():
        table.add_row(
            name,
            str(len(topic["partitions"])),
            f"{topic['messages']:,}",
            _bytes(topic["size_bytes"]),
            _or_dash(topic["segments"]),
        )
    rich_console().print(table)
    return 0


def _bytes(n: int | None) -> str:
    """``human_bytes``; None (a figure a kafka:// store cannot know) prints as -."""
    return "-" if n is None else human_bytes(n)


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def _cmd_producers(args: argparse.Namespace) -> int:
    if is_kafka(args):
        raise CliError(
            "'tidelog producers' works on local stores only: on Kafka the transaction "
            "coordinator keeps the named (transactional) producers; list them with the "
            "broker's kafka-transactions.sh"
        )
    with open_store(args) as store:
        finished = store.abort_orphaned_transactions() if args.abort_orphaned else []
        producers = named_producers(store)
    if args.json:
        print(json_line({"producers": [asdict(p) for p in producers], "finished": finished}))
        return 0
    from rich.table import Table

    table = Table("name", "producer id", "epoch", "alive", "transaction", box=None)
    for p in producers:
        txn = "-"
        if p.transaction is not None:
            where = ", ".join(f"{t}/{n}" for t, n in p.partitions)
            txn = f"{p.transaction}: {where}" if where else p.transaction
        table.add_row(p.name, str(p.producer_id), str(p.epoch), "yes" if p.alive else "no", txn)
    console = rich_console()
    console.print(table)
    for name in finished:
        console.print(f"finished the orphaned transaction of {name!r}")
    return 0


def _cmd_create(args: argparse.Namespace) -> int:
    with open_store(args, create=True) as store:
        existed = args.exist_ok and args.topic in store.topics()
        topic = store.create_topic(args.topic, args.partitions, exist_ok=args.exist_ok)
        done = "exists" if existed else "created"
        print(f"topic {topic.name!r} {done} ({topic.partitions} partitions) in {store.path}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        store.delete_topic(args.topic)
    print(f"deleted topic {args.topic!r}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    changes = dict(args.set or [])
    with open_store(args) as store:
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


def _describe_kafka(args: argparse.Namespace) -> int:
    """``describe`` of a kafka:// topic: offsets from the broker; sizes are the broker's."""
    with open_store(args) as store:
        store.topic(args.topic)  # TopicNotFoundError for an unknown topic
        stats = store.stats()["topics"].get(args.topic)
        if stats is None:
            raise CliError(f"topic {args.topic!r} was deleted meanwhile")
        policy = store.topic(args.topic).config.get("cleanup_policy")
    if args.json:
        print(json_line({"topic": args.topic, **stats, "cleanup_policy": policy}))
        return 0
    from rich.table import Table

    title = (
        f"{args.topic}: {len(stats['partitions'])} partitions, {stats['messages']:,} "
        f"messages, cleanup_policy={policy} (sizes and segments are the broker's)"
    )
    table = Table("partition", "start offset", "end offset", "messages", title=title)
    for col in table.columns:
        col.justify = "right"
    for p, s in stats["partitions"].items():
        table.add_row(str(p), str(s["start_offset"]), str(s["end_offset"]), f"{s['messages']:,}")
    rich_console().print(table)
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    if is_kafka(args):
        return _describe_kafka(args)
    with open_store(args) as store:
        topic = store.topic(args.topic)
        stats = topic_stats(topic)
        policy = topic.config["cleanup_policy"]
        dirty = {p: topic.dirty_ratio(p) for p in range(topic.partitions)}
        dirty_total = topic.dirty_ratio()
        # A compacted partition's offsets are sparse: end - start counts offsets, not what
        # it holds, so its records are counted (a read of the topic, nothing copied).
        records = (
            {p: topic.record_count(p) for p in range(topic.partitions)}
            if "compact" in str(policy).split(",")
            else None
        )
    if args.json:
        described = {"topic": args.topic, **stats}
        if records is not None:
            described["records"] = sum(records.values())
            described["partitions"] = {
                p: {**s, "records": records[p]} for p, s in stats["partitions"].items()
            }
        described.update(
            cleanup_policy=policy, dirty_ratio=dirty_total, partition_dirty_ratios=dirty
        )
        print(json_line(described))
        return 0
    from rich.table import Table

    count = (
        f"{stats['messages']:,} messages"
        if records is None
        else f"{sum(records.values()):,} records (counted: compaction leaves offsets sparse)"
    )
    title = (
        f"{args.topic}: {len(stats['partitions'])} partitions, {count}, "
        f"{human_bytes(stats['size_bytes'])} in {stats['segments']} segments, "
        f"cleanup_policy={policy}, dirty ratio {dirty_total:.2f}"
    )
    table = Table(
        "partition",
        "start offset",
        "end offset",
        "messages" if records is None else "records",
        "size",
        "segments",
        "dirty ratio",
        title=title,
    )
    for col in table.columns:
        col.justify = "right"
    for p, s in stats["partitions"].items():
        table.add_row(
            str(p),
            str(s["start_offset"]),
            str(s["end_offset"]),
            f"{s['messages'] if records is None else records[p]:,}",
            human_bytes(s["size_bytes"]),
            str(s["segments"]),
            f"{dirty[p]:.2f}",
        )
    rich_console().print(table)
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        topic = store.topic(args.topic)
        before = topic.dirty_ratio()
        done = topic.compact()
        after = topic.dirty_ratio()
    report = {"topic": args.topic, **done, "dirty_ratio_before": before, "dirty_ratio_after": after}
    if args.json:
        print(json_line(report))
        return 0
    print(
        f"{args.topic}: {done['segments_before']} segments -> {done['segments_after']}, "
        f"{human_bytes(done['bytes_read'])} -> {human_bytes(done['bytes_written'])}, "
        f"{done['records_removed']:,} of {done['records_read']:,} records removed "
        f"({done['tombstones_removed']:,} tombstones); dirty ratio {before:.2f} -> {after:.2f}"
    )
    return 0


def add_commands(command: AddCommand) -> None:
    """Adds the topic commands: topics, create, producers, delete, config, describe, compact."""
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
    sub.add_argument("-p", "--partitions", type=positive, default=1, metavar="N", help="default: 1")
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
        "now (only those no live process holds), as held-back consumers also do; a Kafka\n"
        "client's transaction (tidelog serve --kafka) only once its transaction.timeout.ms\n"
        "has passed (the client may still commit it through the server's next run).",
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
        "number of messages (of a compacted topic: its records, counted, as its offsets\n"
        "are sparse), the bytes on disk, the number of segment files, the dirty ratio.",
    )
    sub.add_argument("topic")
    sub.add_argument("--json", action="store_true", help="one JSON object instead of a table")

    sub = command(
        "compact",
        _cmd_compact,
        "Compact a topic's closed segments now",
        "Keeps the newest message of each key (cleanup_policy compact or compact,delete);\n"
        "prints what it rewrote and the dirty ratio before and after.",
    )
    sub.add_argument("topic")
    sub.add_argument("--json", action="store_true", help="one JSON object instead of a line")
