"""Messages as Apache Arrow data: :meth:`RecordBatch.to_arrow`, :meth:`Topic.to_arrow`.

Needs the optional ``pyarrow`` package (``pip install 'tidelog[arrow]'``).

Every batch has the columns of :func:`schema`: ``offset`` (int64), ``timestamp_ms``
(int64, ms since the epoch), ``key`` (large_binary, null without a key), ``value``
(binary_view, null for a tombstone) and ``headers`` (map of header name to value).

The value column shares memory with the segment: it is an Arrow ``binary_view`` array
whose views point into the memory-mapped segment (a compressed batch's values: into the
image it was decompressed into), kept alive by the Arrow buffers for as long as any array
uses them, also after the store is closed. No value is copied, however many stored batches
a read spans (values of at most 12 bytes live inside their 16-byte view, as the Arrow format
requires). Offsets, timestamps, keys and headers are gathered into new buffers. The native
module builds every column and hands the batch to pyarrow in one import through the Arrow C
data interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from tidelog._core import OffsetOutOfRangeError
from tidelog._optional import MissingDependencyError, require

if TYPE_CHECKING:
    import pyarrow as pa

    from tidelog._core import RecordBatch, Topic

__all__ = [
    "MissingDependencyError",
    "iter_arrow_batches",
    "record_batch_to_arrow",
    "schema",
    "topic_to_arrow",
]

#: Bytes of stored batches read per step of :func:`topic_to_arrow`.
_READ_BYTES = 16 << 20


def _pyarrow(feature: str) -> Any:
    return require(feature, "pyarrow", "pyarrow", "arrow")


def schema() -> pa.Schema:
    """The schema of every Arrow batch of messages (needs pyarrow)."""
    pa = _pyarrow("tidelog.arrow.schema()")
    return pa.schema(
        [
            pa.field("offset", pa.int64(), nullable=False),
            pa.field("timestamp_ms", pa.int64(), nullable=False),
            pa.field("key", pa.large_binary()),
            pa.field("value", pa.binary_view()),
            pa.field("headers", pa.map_(pa.large_string(), pa.large_binary()), nullable=False),
        ]
    )


def _c_importer() -> tuple[Any, pa.Schema]:
    """``(pyarrow, schema())``: what ``RecordBatch.to_arrow()`` imports its columns with.

    Raises:
        MissingDependencyError: pyarrow is not installed.
    """
    return _pyarrow("RecordBatch.to_arrow()"), schema()


def record_batch_to_arrow(batch: RecordBatch) -> pa.RecordBatch:
    """The implementation of :meth:`tidelog.RecordBatch.to_arrow`.

    Args:
        batch: Messages read with ``Topic.read_batch``.

    Returns:
        A ``pyarrow.RecordBatch`` with the columns of :func:`schema`, one row per message,
        whose value column shares memory with the segment.

    Raises:
        MissingDependencyError: pyarrow is not installed.
        CorruptRecordError: A record's headers are malformed.
    """
    _pyarrow("RecordBatch.to_arrow()")
    return batch.to_arrow()


def iter_arrow_batches(
    topic: Topic,
    partition: int,
    *,
    start: int | None = None,
    end: int | None = None,
    chunk_bytes: int = _READ_BYTES,
) -> Iterator[pa.RecordBatch]:
    """The messages ``start..end`` of ``partition`` as ``pyarrow.RecordBatch`` chunks.

    Reads the partition one step of about ``chunk_bytes`` of stored batches at a time (one
    chunk per step), so an export of a large partition holds one step's keys, headers and
    views in memory, and maps the segments for the values.

    Args:
        topic: The topic.
        partition: The partition number.
        start: The first offset; the partition's start offset by default. Offsets below the
            start (removed by retention) are an error, as for ``read_batch``.
        end: The offset to stop before; the end offset when the call began by default (a
            later ``end`` than the log's end is an error). Messages appended meanwhile are
            left out.
        chunk_bytes: About how many bytes of stored batches each read step covers.

    Yields:
        Chunks in offset order; a compacted partition's missing offsets are simply absent.

    Raises:
        MissingDependencyError: pyarrow is not installed.
        OffsetOutOfRangeError: ``start`` or ``end`` lies outside the partition.
        InvalidConfigError: ``start`` is greater than ``end``.
    """
    from tidelog.errors import InvalidConfigError

    _pyarrow("Topic.to_arrow()")
    first = topic.start_offset(partition)
    last = topic.end_offset(partition)
    start = first if start is None else _offset(start, "start")
    end = last if end is None else _offset(end, "end")
    if end > last:
        raise OffsetOutOfRangeError(
            f"end {end} is past the end offset {last} of partition {partition} of "
            f"topic {topic.name!r}"
        )
    if start > end:
        raise InvalidConfigError(f"start ({start}) must not be greater than end ({end})")
    offset = start
    while offset < end:
        batch = topic.read_batch(
            partition, offset, max_messages=end - offset, max_bytes=chunk_bytes
        )
        if len(batch) == 0 and batch.next_offset <= offset:
            break  # a transaction still open: a committed read stops before it
        chunk = batch.to_arrow()
        rows = len(chunk)
        if batch.next_offset > end:
            # A compacted partition's offsets are sparse: max_messages may reach past end.
            rows = int(np.searchsorted(chunk.column(0).to_numpy(), end))
        if rows:
            yield chunk if rows == len(chunk) else chunk.slice(0, rows)
        if rows < len(chunk):
            return
        offset = batch.next_offset


def _offset(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise OffsetOutOfRangeError(f"{name} must not be negative, got {value}")
    return value


def topic_to_arrow(
    topic: Topic, partition: int, start: int | None = None, end: int | None = None
) -> pa.Table:
    """The implementation of :meth:`tidelog.Topic.to_arrow`.

    Args:
        topic: The topic.
        partition: The partition number.
        start: The first offset (default: the partition's start offset).
        end: The offset to stop before (default: the end offset when the call began).

    Returns:
        A ``pyarrow.Table`` with the columns of :func:`schema`, in offset order; see
        :func:`iter_arrow_batches` for the chunks it is made of and the errors.
    """
    pa = _pyarrow("Topic.to_arrow()")
    return pa.Table.from_batches(
        list(iter_arrow_batches(topic, partition, start=start, end=end)), schema=schema()
    )
