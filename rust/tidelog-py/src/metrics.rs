//! `partition_metrics` and `timestamp_at`: the per-partition figures behind
//! `Store.metrics()`, read in one native call per topic so a scrape of a store with many
//! partitions stays in microseconds.
//!
//! Everything here reads the shared control block (the published head) and the process's
//! view of the segments, as `end_offset()` does: it sees other processes' appends at once,
//! takes no lock a writer waits for, and adds nothing to the append path.

use pyo3::prelude::*;

use crate::args;
use crate::gil::run_detached;
use crate::topic::PyTopic;

/// One partition's figures: `(start_offset, end_offset, size_bytes, segments, dirty_bytes,
/// closed_bytes, max_timestamp_ms)`.
type PartitionFigures = (u64, u64, u64, usize, u64, u64, Option<i64>);

/// The figures of every partition of `topic`, in partition order: a list of tuples
/// `(start_offset, end_offset, size_bytes, segments, dirty_bytes, closed_bytes,
/// max_timestamp_ms)`.
///
/// `dirty_bytes` and `closed_bytes` are the compaction dirty ratio's parts (bytes of closed
/// segments compaction has not seen yet, and of all closed segments); `max_timestamp_ms` is the newest timestamp in the active segment (None while it is empty).
#[pyfunction]
pub fn partition_metrics(py: Python<'_>, topic: &PyTopic) -> PyResult<Vec<PartitionFigures>> {
    let topic = topic.engine().clone();
    run_detached(py, move || {
        topic
            .partitions()?
            .iter()
            .map(|log| {
                let head = log.head()?;
                let dirty = log.dirty_ratio()?;
                Ok((
                    head.log_start,
                    log.end_offset()?.max(head.next_offset),
                    log.size_bytes()?,
                    log.segment_count()?,
                    dirty.dirty_bytes,
                    dirty.total_bytes,
                    (head.max_timestamp != i64::MIN).then_some(head.max_timestamp),
                ))
            })
            .collect()
    })
}

/// The timestamp (ms since the epoch) of the message at `offset` of `partition`: the
/// first message at or after it that a committed read returns, or None at the end of the
/// log (nothing unconsumed). An offset below the start reads from the start (retention
/// removed the older messages: the oldest unconsumed one is the first retained).
#[pyfunction]
pub fn timestamp_at(
    py: Python<'_>,
    topic: &PyTopic,
    partition: &Bound<'_, PyAny>,
    offset: &Bound<'_, PyAny>,
) -> PyResult<Option<i64>> {
    let partition = args::int_in(partition, "partition", 0, u32::MAX)?;
    let offset = args::int_in(offset, "offset", 0, u64::MAX)?;
    let topic = topic.engine().clone();
    run_detached(py, move || {
        let log = topic.partition(partition)?;
        let start = log.start_offset()?;
        let end = log.end_offset()?;
        let at = offset.max(start);
        if at >= end {
            return Ok(None);
        }
        let read = log.read(at, 1, 1)?;
        Ok(read.chunks.first().and_then(|c| c.records().next()).map(|r| r.timestamp))
    })
}
