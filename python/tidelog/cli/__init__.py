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

This module assembles the parser and runs a command; each family of commands lives in its
own module, with its arguments: :mod:`~tidelog.cli.admin` (topics, create, producers,
delete, config, describe), :mod:`~tidelog.cli.messages` (produce, consume),
:mod:`~tidelog.cli.groups`, :mod:`~tidelog.cli.inspection` (dump, verify, repair),
:mod:`~tidelog.cli.observe` (metrics, top), :mod:`~tidelog.cli.export`,
:mod:`~tidelog.cli.bench`, :mod:`~tidelog.cli.mirror` (a local topic to Apache Kafka) and
:mod:`~tidelog.cli.serve` (the store to Kafka clients);
``_common`` and ``_format`` hold what they share.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import tidelog
from tidelog.cli import (
    admin,
    bench,
    export,
    groups,
    inspection,
    messages,
    mirror,
    observe,
    serve,
)
from tidelog.cli._common import (
    ENV_DIR,
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    STORE_HELP,
    CliError,
    Parser,
)
from tidelog.errors import TidelogError

__all__ = ["main"]

_DESCRIPTION = f"""\
Look at and work with a tidelog store from the shell.

The store is --dir DIR (before or after the subcommand), else ${ENV_DIR}, else the
current directory. Only 'create' makes a new store; other commands refuse a directory that
is not one. Run 'tidelog COMMAND --help' for each command's options.

exit status: 0 ok, 1 error or problem found, 2 usage error, 130 interrupted (Ctrl-C),
141 stdout closed by its reader (e.g. '| head'), 143 terminated (SIGTERM)."""


def _build_parser() -> Parser:
    parser = Parser(
        prog="tidelog",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tidelog {tidelog.__version__}")
    parser.add_argument("-d", "--dir", metavar="DIR", default=None, help=STORE_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], summary: str, details: str = ""
    ) -> Parser:
        sub: Parser = commands.add_parser(
            name,
            help=summary,
            description=f"{summary}.\n\n{details}".rstrip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        if name != "bench":
            # SUPPRESS: without it the subcommand's default would hide a --dir given before it.
            sub.add_argument(
                "-d", "--dir", metavar="DIR", default=argparse.SUPPRESS, help=STORE_HELP
            )
        return sub

    # Each family adds its subcommands; `tidelog --help` lists them in this order.
    admin.add_commands(command)
    messages.add_commands(command)
    groups.add_commands(command)
    inspection.add_commands(command)
    observe.add_commands(command)
    export.add_commands(command)
    bench.add_commands(command)
    mirror.add_commands(command)
    serve.add_commands(command)
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
