"""``tidelog mirror``: forward a local topic to Apache Kafka, exactly once, in order."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import tidelog
from tidelog.cli._common import AddCommand, CliError, existing_store_dir, positive

__all__ = ["add_commands"]


def _cmd_mirror(args: argparse.Namespace) -> int:
    values = list(args.args)
    if len(values) == 3:
        args.dir = values.pop(0)
    elif len(values) != 2:
        raise CliError("usage: tidelog mirror [DIR] TOPIC kafka://HOST:PORT", 2)
    topic, url = values
    if not url.startswith("kafka://"):
        raise CliError(f"the destination must be a kafka:// URL, got {url!r}", 2)
    path: Path = existing_store_dir(args)
    from tidelog.kafka import open_kafka
    from tidelog.kafka.mirror import Mirror, MirrorProgress

    def show(progress: MirrorProgress) -> None:
        if args.json:
            print(json.dumps(progress), flush=True)
        else:
            lag = sum(progress["lag"].values())
            print(f"mirrored {progress['sent']} messages; lag {lag}", file=sys.stderr, flush=True)

    with tidelog.open(path) as local, open_kafka(url) as kafka:
        mirror = Mirror(local, kafka, topic, to=args.to, group=args.group, max_batch=args.batch)
        try:
            mirror.run(until_caught_up=args.until_caught_up, progress=show)
        finally:
            mirror.close()
    return 0


def add_commands(command: AddCommand) -> None:
    """Adds ``mirror``."""
    sub = command(
        "mirror",
        _cmd_mirror,
        "Forward a local topic to Apache Kafka, exactly once and in order per partition",
        "Partition i goes to partition i of the Kafka topic (created with the same count if\n"
        "missing). Every round is one Kafka transaction holding the messages and the\n"
        "mirror's position (offsets of consumer group --group on the Kafka topic), so a\n"
        "crash or restart loses and duplicates nothing. Runs until SIGINT/SIGTERM, or with\n"
        "--until-caught-up until everything written before it started has arrived.\n"
        "Progress (messages sent, lag) goes to stderr once a second.",
    )
    sub.usage = (
        "tidelog mirror [-h] [-d DIR] [--to TOPIC] [-g NAME] [--until-caught-up] "
        "[--batch N] [--json] [DIR] TOPIC kafka://HOST:PORT"
    )
    sub.add_argument(
        "args", nargs="+", metavar="[DIR] TOPIC URL", help="store, local topic, kafka://HOST:PORT"
    )
    sub.add_argument("--to", metavar="TOPIC", help="the Kafka topic (default: the same name)")
    sub.add_argument("-g", "--group", metavar="NAME", help="the mirror's group / transactional.id")
    sub.add_argument("--until-caught-up", action="store_true", help="exit once caught up")
    sub.add_argument(
        "--batch", type=positive, default=5000, help="messages per partition per round"
    )
    sub.add_argument("--json", action="store_true", help="progress as JSON lines on stdout")
