"""``tidelog serve DIR --kafka HOST:PORT``: the store, answering the Kafka wire protocol."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import tidelog
from tidelog.cli._common import AddCommand, CliError, existing_store_dir

__all__ = ["add_commands"]


def _store_path(args: argparse.Namespace) -> Path:
    if args.store is not None:
        args.dir = args.store
    return existing_store_dir(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.kafka is None:
        raise CliError("say what to serve: --kafka HOST:PORT")
    try:
        from tidelog.kafka_server import KafkaServer
    except ImportError as e:
        raise CliError(f"serving Kafka needs {e.name} (pip install 'tidelog[kafka]')") from None
    with tidelog.open(_store_path(args)) as store:
        server = KafkaServer(store, args.kafka, auto_create_topics=not args.no_auto_create)
        try:
            print(f"serving Kafka on {server.address}", flush=True)
            # Ctrl-C and SIGTERM (turned into KeyboardInterrupt by main) end the wait.
            threading.Event().wait()
        finally:
            server.close()
            print("stopped", file=sys.stderr, flush=True)
    return 0


def add_commands(command: AddCommand) -> None:
    """Adds ``serve``."""
    sub = command(
        "serve",
        _cmd_serve,
        "Serve the store to Kafka clients over the Kafka wire protocol",
        "With --kafka HOST:PORT (loopback, 127.0.0.1, unless you say otherwise; port 0\n"
        "picks a free port and the address is printed), Kafka clients (confluent-kafka,\n"
        "the Java client, ...) create topics, produce, fetch and join consumer groups on\n"
        "the store, next to every process that opens it. Runs until Ctrl-C or SIGTERM.",
    )
    sub.add_argument("store", nargs="?", metavar="DIR", help="the store directory")
    sub.add_argument("--kafka", metavar="HOST:PORT", help="serve the Kafka protocol here")
    sub.add_argument(
        "--no-auto-create",
        action="store_true",
        help="do not create topics clients ask metadata for (Kafka's default is to)",
    )
