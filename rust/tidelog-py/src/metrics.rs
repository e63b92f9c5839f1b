//! `partition_metrics` and `timestamp_at`: the per-partition figures behind
//! `Store.metrics()`, read in one native call per topic so a scrape of a store with many
//! partitions stays in microseconds.
//!
//! Everything here reads the shared control block (the published head) and the process's
//! view of the segments, as `end_offset()` does: it sees other processes' appends at once,
//! takes no lock a writer waits for, and adds nothing to the append path.

use pyo3::prelude::*;
use tidelog_core::log::lost::{read_events, LossKind};
use tidelog_core::log::ReadChunk;

use crate::gil::run_detached;
use crate::topic::PyTopic;

/// One partition's figures: `(start_offset, end_offset, size_bytes, segments, dirty_bytes,
/// closed_bytes, max_timestamp_ms, recovery, compactions)`.
type PartitionFigures = (u64, u64, u64, usize, u64, u64, Option<i64>, Recovered, u64);

/// `(kind, events, bytes)` for every kind of [`LossKind`], by its report name.
type Recovered = Vec<(&'static str, u64, u64)>;

/// The figures of every partition of `topic`, in partition order: a list of tuples
/// `(start_offset, end_offset, size_bytes, segments, dirty_bytes, closed_bytes,
/// max_timestamp_ms, recovery, compactions)`, where `recovery` lists `(kind, events, bytes)`
/// for every kind of recovery event ("torn_tail", "quarantined", "unsynced").
///
/// `dirty_bytes` and `closed_bytes` are the compaction dirty ratio's parts (bytes of closed
/// segments compaction has not seen yet, and of all closed segments); `max_timestamp_ms` is the newest timestamp in the active segment (None while it is empty);
/// `compactions` the compactions done over the partition's lifetime (kept with the
/// cleaner's checkpoint, so recoveries and reopens do not move it).
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
                let mut lost: Recovered = LossKind::ALL.iter().map(|k| (k.name(), 0, 0)).collect();
                for event in read_events(log.dir())? {
                    for (_, events, bytes) in lost.iter_mut().filter(|k| k.0 == event.kind.name()) {
                        (*events, *bytes) = (*events + 1, *bytes + event.bytes);
                    }
                }
                Ok((
                    head.log_start,
                    log.end_offset()?.max(head.next_offset),
                    log.size_bytes()?,
                    log.segment_count()?,
                    dirty.dirty_bytes,
                    dirty.total_bytes,
                    (head.max_timestamp != i64::MIN).then_some(head.max_timestamp),
                    lost,
                    dirty.compactions,
                ))
            })
            .collect()
    })
}

/// The timestamps (ms since the epoch) of the messages at `(partition, offset)` of
/// `wanted`: for each, the first message at or after the offset that a committed read
/// returns, or None at the end of the log (nothing unconsumed). An offset below the start
/// reads from the start (retention removed the older messages: the oldest unconsumed one
/// is the first retained).
///
/// Offsets that fall in the stored batch read for an earlier one of the same partition are
/// answered from it (every group of a topic is asked in one call, and groups are often in
/// the same batch): one CRC-checked read per batch, not per group, and the record found by
/// a binary search over the batch's entries, not by walking its records.
#[pyfunction]
pub fn timestamps_at(py: Python<'_>, topic: &PyTopic, wanted: Vec<(u32, u64)>) -> PyResult<Vec<Option<i64>>> {
    let topic = topic.engine().clone();
    run_detached(py, move || {
        let mut last: Option<(u32, ReadChunk)> = None;
        wanted
            .into_iter()
            .map(|(partition, offset)| {
                let log = topic.partition(partition)?;
                let at = offset.max(log.start_offset()?);
                if at >= log.end_offset()? {
                    return Ok(None);
                }
                if let Some((p, chunk)) = &last {
                    if *p == partition {
                        if let Some(found) = timestamp_in(chunk, at) {
                            return Ok(Some(found));
                        }
                    }
                }
                let read = log.read(at, 1, 1)?;
                let Some(chunk) = read.chunks.into_iter().next() else { return Ok(None) };
                let found = chunk.records().next().map(|r| r.timestamp);
                last = Some((partition, chunk));
                Ok(found)
            })
            .collect()
    })
}

/// The timestamp of the first record at or after `at` in the whole stored batch of `chunk`
/// (not only the records the read wanted), if the batch holds `at` and such a record.
fn timestamp_in(chunk: &ReadChunk, at: u64) -> Option<i64> {
    let batch = chunk.batch();
    let count = batch.header.record_count as usize;
    if at < batch.header.base_offset || at >= batch.header.next_offset() || count == 0 {
        return None;
    }
    // Offsets grow within a batch (a compacted one's are sparse): the first at or after `at`.
    let mut span = 0..count;
    while !span.is_empty() {
        let mid = span.start + span.len() / 2;
        if batch.offset_and_timestamp(mid)?.0 < at {
            span.start = mid + 1;
        } else {
            span.end = mid;
        }
    }
    (span.start < count).then(|| batch.offset_and_timestamp(span.start)).flatten().map(|(_, ts)| ts)
}
