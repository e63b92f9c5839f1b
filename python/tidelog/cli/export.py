"""``export``: a topic's messages into a Parquet or Arrow IPC file, through Apache Arrow."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import tidelog
from tidelog.arrow import iter_arrow_batches, schema
from tidelog.cli._common import AddCommand, CliError, existing_store_dir, non_negative
from tidelog.cli._format import human_bytes, progress_bar
from tidelog.errors import TopicNotFoundError

__all__ = ["add_commands", "export_schema"]

_FORMATS = ("parquet", "arrow")
_COMPRESSIONS = ("none", "snappy", "zstd", "lz4")


def export_schema() -> Any:
    """The exported columns: :func:`tidelog.arrow.schema` plus ``partition`` (int32) first."""
    import pyarrow as pa

    base = schema()
    return pa.schema([pa.field("partition", pa.int32(), nullable=False), *base])


def _positionals(args: argparse.Namespace) -> tuple[Path, str, Path]:
    """``[DIR] TOPIC OUT``: the store, the topic and the output file."""
    given = args.positionals
    if len(given) == 3:
        args.dir = given[0]
        given = given[1:]
    elif len(given) != 2:
        raise CliError("expected [DIR] TOPIC OUT (see 'tidelog export --help')", 2)
    return existing_store_dir(args), given[0], Path(given[1])


def _writer(fmt: str, path: Path, arrow_schema: Any, compression: str) -> Any:
    if fmt == "parquet":
        from tidelog._optional import require

        pq = require("tidelog export --format parquet", "pyarrow.parquet", "pyarrow", "arrow")
        codec = None if compression == "none" else compression
        return pq.ParquetWriter(path, arrow_schema, compression=codec)
    import pyarrow as pa

    codec = None if compression in ("none", "snappy") else compression
    options = pa.ipc.IpcWriteOptions(compression=codec)
    return pa.ipc.new_file(path, arrow_schema, options=options)


def _cmd_export(args: argparse.Namespace) -> int:
    from tidelog._optional import require

    pa = require("tidelog export", "pyarrow", "pyarrow", "arrow")
    store_path, topic_name, out = _positionals(args)
    if out.exists() and out.is_dir():
        raise CliError(f"{str(out)!r} is a directory")
    with tidelog.open(store_path) as store:
        try:
            topic = store.topic(topic_name)
        except TopicNotFoundError as e:
            raise CliError(str(e)) from e
        partitions = args.partition if args.partition else list(range(topic.partitions))
        for p in partitions:
            if p >= topic.partitions:
                raise CliError(
                    f"topic {topic_name!r} has {topic.partitions} partitions, not partition {p}"
                )
        # The offsets to go through, for the progress bar: fixed when the export starts.
        bounds = {
            p: (
                topic.start_offset(p) if args.start is None else args.start,
                topic.end_offset(p) if args.end is None else args.end,
            )
            for p in partitions
        }
        arrow_schema = export_schema()
        # Written next to OUT and renamed into place: a failed or interrupted export never
        # leaves a truncated file under the name asked for.
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        rows = values = 0
        try:
            writer = _writer(args.format, tmp, arrow_schema, args.compression)
            with (
                contextlib.closing(writer),
                progress_bar(not args.quiet and sys.stderr.isatty()) as progress,
            ):
                total = sum(max(0, e - s) for s, e in bounds.values())
                task = progress.add_task(f"exporting {topic_name}", total=total)
                for p in partitions:
                    start, end = bounds[p]
                    done = start
                    for chunk in iter_arrow_batches(topic, p, start=start, end=end):
                        column = pa.repeat(pa.scalar(p, pa.int32()), len(chunk))
                        table = pa.Table.from_batches([chunk])
                        table = table.add_column(0, arrow_schema.field("partition"), column)
                        writer.write_table(table)
                        rows += len(chunk)
                        values += _value_bytes(chunk)
                        last = int(chunk.column("offset")[-1].as_py()) + 1
                        progress.advance(task, last - done)
                        done = last
                    progress.advance(task, max(0, end - done))
            os.replace(tmp, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    if not args.quiet:
        print(
            f"exported {rows:,} messages ({human_bytes(values)} of values) from "
            f"{len(partitions)} partition(s) of {topic_name!r} to {out}",
            file=sys.stderr,
        )
    return 0


def _value_bytes(chunk: Any) -> int:
    """Bytes of the chunk's values (its value column's data, offsets and validity aside)."""
    column = chunk.column("value")
    if len(column) == 0:
        return 0
    offsets = column.buffers()[1]
    import numpy as np

    bounds = np.frombuffer(offsets, np.int64, len(column) + 1, column.offset * 8)
    return int(bounds[-1] - bounds[0])


def add_commands(command: AddCommand) -> None:
    """Adds ``export``."""
    sub = command(
        "export",
        _cmd_export,
        "Write a topic's messages to a Parquet or Arrow IPC file",
        "Arguments: [DIR] TOPIC OUT. Columns: partition, offset, timestamp_ms, key, value,\n"
        "headers (a map of header name to value); tombstones have a null value. Every\n"
        "partition by default (-p for some), each from its start offset (--start) to the\n"
        "end offset when the export began (--end), in partition then offset order. OUT is\n"
        "written under a temporary name and renamed when complete. Shows a progress bar on\n"
        "a terminal. Needs pyarrow (pip install 'tidelog[arrow]').",
    )
    sub.add_argument("positionals", nargs="+", metavar="[DIR] TOPIC OUT")
    sub.add_argument("-f", "--format", choices=_FORMATS, default="parquet", help="file format")
    sub.add_argument(
        "-p",
        "--partition",
        type=non_negative,
        action="append",
        metavar="N",
        help="only this partition (repeatable)",
    )
    sub.add_argument("--start", type=non_negative, metavar="OFFSET", help="first offset")
    sub.add_argument("--end", type=non_negative, metavar="OFFSET", help="offset to stop before")
    sub.add_argument(
        "--compression",
        choices=_COMPRESSIONS,
        default="snappy",
        help="Parquet column compression, or Arrow IPC buffer compression (default snappy; "
        "IPC has no snappy and writes uncompressed)",
    )
    sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
