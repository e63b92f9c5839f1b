"""Messages as Apache Arrow data: :meth:`RecordBatch.to_arrow`, :meth:`Topic.to_arrow`.

Needs the optional ``pyarrow`` package (``pip install 'tidelog[arrow]'``).

Every batch has the columns of :data:`SCHEMA`: ``offset`` (int64), ``timestamp_ms``
(int64, ms since the epoch), ``key`` (large_binary, null without a key), ``value``
(large_binary, null for a tombstone) and ``headers`` (map of header name to value).

The value column shares memory with the segment: its data buffer is the stored batch's
blob of values, memory-mapped (a compressed batch's: the image it was decompressed into),
kept alive by the Arrow buffer for as long as any array uses it. That holds for
``RecordBatch.to_arrow()`` when the batch comes from one stored batch (read with
``max_messages`` no larger than what was appended or produced at once), and in
``Topic.to_arrow()`` for every stored batch of at least :data:`MIN_SHARED_BYTES` of
values; smaller stored batches are copied together into chunks of about
``chunk_bytes``, so a partition written one message at a time is not a table of one-row
chunks. Offsets, timestamps, keys and headers are always gathered into new buffers.
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
    "MIN_SHARED_BYTES",
    "MissingDependencyError",
    "iter_arrow_batches",
    "record_batch_to_arrow",
    "schema",
    "topic_to_arrow",
]

#: Stored batches with at least this many bytes of values become chunks of their own that
#: share the segment's memory; smaller ones are copied together.
MIN_SHARED_BYTES = 64 << 10

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
            pa.field("value", pa.large_binary()),
            pa.field("headers", pa.map_(pa.large_string(), pa.large_binary()), nullable=False),
        ]
    )


def _batch(pa: Any, arrow_schema: Any, piece: tuple[Any, ...]) -> pa.RecordBatch:
    """One ``pyarrow.RecordBatch`` from one piece of ``RecordBatch._arrow_parts``."""
    (
        offsets,
        timestamps,
        values,
        value_bounds,
        value_valid,
        keys,
        key_bounds,
        key_valid,
        header_offsets,
        names,
        name_bounds,
        header_values,
        header_value_bounds,
    ) = piece
    n = len(offsets)

    def bitmap(bits: bytes | None) -> Any:
        return None if bits is None else pa.py_buffer(bits)

    # py_buffer wraps the memoryview without copying; the Arrow buffer keeps it (and so the
    # segment mapping it points into) alive.
    value = pa.Array.from_buffers(
        pa.large_binary(),
        n,
        [bitmap(value_valid), pa.py_buffer(value_bounds), pa.py_buffer(values)],
    )
    key = pa.Array.from_buffers(
        pa.large_binary(),
        n,
        [bitmap(key_valid), pa.py_buffer(key_bounds), pa.py_buffer(keys)],
    )
    entries = len(name_bounds) - 1
    header_names = pa.Array.from_buffers(
        pa.large_string(), entries, [None, pa.py_buffer(name_bounds), pa.py_buffer(names)]
    )
    header_items = pa.Array.from_buffers(
        pa.large_binary(),
        entries,
        [None, pa.py_buffer(header_value_bounds), pa.py_buffer(header_values)],
    )
    headers = pa.MapArray.from_arrays(
        pa.array(header_offsets, pa.int32()), header_names, header_items
    )
    return pa.RecordBatch.from_arrays(
        [pa.array(offsets, pa.int64()), pa.array(timestamps, pa.int64()), key, value, headers],
        schema=arrow_schema,
    )


def record_batch_to_arrow(batch: RecordBatch) -> pa.RecordBatch:
    """The implementation of :meth:`tidelog.RecordBatch.to_arrow`.

    Args:
        batch: Messages read with ``Topic.read_batch``.

    Returns:
        A ``pyarrow.RecordBatch`` with the columns of :func:`schema`, one row per message.
        Its value column shares memory with the segment when the messages come from one
        stored batch; otherwise their values are copied once.

    Raises:
        MissingDependencyError: pyarrow is not installed.
        CorruptRecordError: A record's headers are malformed.
    """
    pa = _pyarrow("RecordBatch.to_arrow()")
    [piece] = batch._arrow_parts()
    return _batch(pa, schema(), piece)


def iter_arrow_batches(
    topic: Topic,
    partition: int,
    *,
    start: int | None = None,
    end: int | None = None,
    chunk_bytes: int = _READ_BYTES,
) -> Iterator[pa.RecordBatch]:
    """The messages ``start..end`` of ``partition`` as ``pyarrow.RecordBatch`` chunks.

    Reads the partition one step of about ``chunk_bytes`` of stored batches at a time, so
    an export of a large partition holds one step in memory (plus the mapped segments).

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

    pa = _pyarrow("Topic.to_arrow()")
    arrow_schema = schema()
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
        for piece in batch._arrow_parts(MIN_SHARED_BYTES):
            # A compacted partition's offsets are sparse: max_messages may reach past end.
            rows = int(np.searchsorted(piece[0], end))
            if rows:
                chunk = _batch(pa, arrow_schema, piece)
                yield chunk if rows == len(chunk) else chunk.slice(0, rows)
            if rows < len(piece[0]):
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
