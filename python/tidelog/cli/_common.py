"""What every command shares: the exit statuses, user errors, finding the store, argument types."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, Protocol

import tidelog
from tidelog import _core

__all__ = [
    "ENV_DIR",
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "STORE_HELP",
    "STORE_MARKER",
    "TOPIC_META",
    "AddCommand",
    "CliError",
    "Parser",
    "existing_store_dir",
    "is_kafka",
    "non_negative",
    "open_store",
    "positive",
    "positive_seconds",
    "store_dir",
]

ENV_DIR = "TIDELOG_DIR"
STORE_MARKER = "tidelog.store"
TOPIC_META = _core.TOPIC_META_FILE
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
EXIT_TERMINATED = 143  # 128 + SIGTERM

STORE_HELP = (
    f"the store directory, or a kafka://host:port URL (default: ${ENV_DIR}, else the current "
    "directory)"
)
KAFKA_SCHEME = "kafka://"


class CliError(Exception):
    """A user error: printed as one line, then the command exits with ``status``."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        """Raises the usage error instead of printing the usage and exiting."""
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


class AddCommand(Protocol):
    """Adds a subcommand to the ``tidelog`` parser and returns the subcommand's parser."""

    def __call__(
        self, name: str, run: Callable[[argparse.Namespace], int], summary: str, details: str = ""
    ) -> Parser:
        """Adds ``name``, run by ``run``; ``summary`` is its one-line help."""
        ...


# --- the store ---------------------------------------------------------------------------


def _location(args: argparse.Namespace) -> str:
    return str(args.dir or os.environ.get(ENV_DIR) or ".")


def is_kafka(args: argparse.Namespace) -> bool:
    """Whether the store named by ``--dir`` / ``$TIDELOG_DIR`` is a ``kafka://`` URL."""
    return _location(args).startswith(KAFKA_SCHEME)


def store_dir(args: argparse.Namespace) -> Path:
    """``--dir``, else ``$TIDELOG_DIR``, else the current directory (a local store's).

    Raises:
        CliError: The store is a ``kafka://`` URL: the command reads a local store's files.
    """
    if is_kafka(args):
        command = getattr(args, "command", None) or "this command"
        raise CliError(
            f"'tidelog {command}' works on local stores only (it reads or writes the store's "
            f"files); {_location(args)} is a Kafka cluster"
        )
    return Path(_location(args))


def existing_store_dir(args: argparse.Namespace) -> Path:
    """The store directory, which must already be a tidelog store (never a kafka:// URL)."""
    path = store_dir(args)
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
def open_store(args: argparse.Namespace, *, create: bool = False) -> Iterator[tidelog.Store]:
    """Opens the store, which must exist unless ``create``; a ``kafka://`` URL opens Kafka.

    A kafka:// store has the same API (see :mod:`tidelog.kafka`); what it cannot do raises
    a :class:`tidelog.TidelogError` that the command prints.
    """
    if is_kafka(args):
        with tidelog.open(_location(args)) as kafka:
            yield kafka
        return
    path = store_dir(args) if create else existing_store_dir(args)
    with tidelog.open(path) as store:
        yield store


# --- argument types ----------------------------------------------------------------------


def non_negative(text: str) -> int:
    """An integer >= 0 (an argparse type)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


non_negative.__name__ = "non-negative integer"  # argparse names the type in its message


def positive(text: str) -> int:
    """An integer > 0 (an argparse type)."""
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


positive.__name__ = "positive integer"


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (an argparse type)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


positive_seconds.__name__ = "positive number of seconds"
