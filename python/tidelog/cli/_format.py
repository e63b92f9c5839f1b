"""Output shared by the commands: rich consoles, sizes and times, JSON lines, plain tables."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from tidelog import Message

__all__ = [
    "color_enabled",
    "human_bytes",
    "json_bytes",
    "json_headers",
    "json_line",
    "message_json",
    "plain_table",
    "progress_bar",
    "rich_console",
    "show_bytes",
    "show_time",
]

SHOWN_BYTES = 60


def rich_console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit with status 1 here; main() handles it like any other write.
            self.quiet = True
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    # A pipe gets a wide, uncoloured table rather than one squeezed into 80 columns.
    return _Console(stderr=stderr, width=None if stream.isatty() else 200)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def show_time(ms: int) -> str:
    try:
        when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def show_bytes(data: bytes | None, limit: int = SHOWN_BYTES) -> str:
    """A short, printable rendering of a key or value for a table."""
    if data is None:
        return "-"
    try:
        text = data.decode("utf-8")
        shown = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    except UnicodeDecodeError:
        shown = "0x" + data.hex()
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def json_bytes(out: dict[str, Any], field: str, data: bytes | None) -> None:
    """Stores ``data`` as UTF-8 text, or as base64 with ``<field>_base64: true``."""
    if data is None:
        out[field] = None
        return
    try:
        out[field] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[field] = base64.b64encode(data).decode("ascii")
        out[f"{field}_base64"] = True


def json_headers(out: dict[str, Any], headers: dict[str, bytes]) -> None:
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


def message_json(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        "topic": msg.topic,
        "partition": msg.partition,
        "offset": msg.offset,
        "timestamp_ms": msg.timestamp_ms,
    }
    json_bytes(out, "key", msg.key)
    json_bytes(out, "value", msg.value)
    json_headers(out, msg.headers)
    return out


def json_line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def color_enabled() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def plain_table(
    headers: Sequence[str], rows: list[tuple[str, ...]], *, left: int, bad: set[int]
) -> Iterator[str]:
    """Lines of an aligned table: the first ``left`` columns left-aligned, rows in ``bad`` red.

    Plain text rather than a rich table: a segment holds up to hundreds of thousands of
    batches, and rich renders about a millisecond per row.
    """
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    red = color_enabled()

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    yield line(headers)
    for i, row in enumerate(rows):
        yield f"\x1b[1;31m{line(row)}\x1b[0m" if red and i in bad else line(row)


def progress_bar(enabled: bool) -> Progress:
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
        console=rich_console(stderr=True),
        disable=not enabled,
        # Lines printed to a terminal stdout go above the bar instead of through it.
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=False,
    )
