//! `OffsetCommitter`: a consumer's commits, checked against the partitions' ends and
//! appended to `__consumer_offsets` in one native call (a commit sits in tight loops).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::log::now_ms;
use tidelog_core::{FsyncPolicy, Topic};

use crate::errors::{to_py, OffsetOutOfRangeError};
use crate::gil::run_detached;
use crate::topic::PyTopic;

/// Commits of one group on one incarnation of a topic (see `OffsetStore.committer`).
#[pyclass(frozen, module = "tidelog._core", name = "OffsetCommitter")]
pub struct PyOffsetCommitter {
    /// The topic the group consumes.
    source: Arc<Topic>,
    /// `__consumer_offsets`, and the partition of the group's commits.
    offsets: Arc<Topic>,
    partition: u32,
    /// `group NUL topic`.
    key: Vec<u8>,
    incarnation: u64,
}

#[pymethods]
impl PyOffsetCommitter {
    #[new]
    fn new(
        source: &PyTopic,
        offsets_topic: &PyTopic,
        partition: u32,
        key: Vec<u8>,
        incarnation: u64,
    ) -> PyResult<Self> {
        to_py(offsets_topic.engine().partition(partition))?;
        Ok(PyOffsetCommitter {
            source: source.engine().clone(),
            offsets: offsets_topic.engine().clone(),
            partition,
            key,
            incarnation,
        })
    }

    /// Commits `offsets` (partition -> next offset to read) with `metadata` as one record:
    /// all partitions together or none. Returns once the record is in the page cache; with
    /// `fsync="always"` once it is on disk.
    ///
    /// Raises `OffsetOutOfRangeError` (nothing written) for an offset past its partition's
    /// end, `TopicNotFoundError` if the topic was deleted.
    fn commit(
        &self,
        py: Python<'_>,
        offsets: &Bound<'_, PyDict>,
        metadata: &str,
        generation: i64,
    ) -> PyResult<()> {
        let mut entries = Vec::with_capacity(offsets.len());
        for (p, o) in offsets.iter() {
            let p: u32 = p.extract()?;
            let end = to_py(self.source.partition(p).and_then(|log| log.end_offset()))?;
            // The caller checked `o` is a non-negative int; past i64 it is past any end.
            match o.extract::<i64>() {
                Ok(o) if o as u64 <= end => entries.push((p, o)),
                _ => {
                    return Err(OffsetOutOfRangeError::new_err(format!(
                        "cannot commit offset {o} for '{}' partition {p}: past its end offset {end} (the \
                         next offset to be written); nothing was committed",
                        self.source.name()
                    )))
                }
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        let value =
            tidelog_core::commit_record::encode(generation, self.incarnation, &entries, metadata.as_bytes());
        let record = Record {
            timestamp: now_ms(),
            key: Some(&self.key),
            value: &value,
            headers: &[],
            tombstone: false,
        };
        let meta = BatchMeta::plain(0);
        let log = to_py(self.offsets.partition(self.partition))?;
        // As `Topic.append`: the GIL is let go only when the append lock is contended or an
        // fsync is due.
        if log.config().fsync != FsyncPolicy::Always && to_py(log.append(&[record], meta, false))?.is_some() {
            return Ok(());
        }
        let (timestamp, key, value) = (record.timestamp, &self.key, &value);
        run_detached(py, move || {
            let record = Record { timestamp, key: Some(key), value, headers: &[], tombstone: false };
            log.append(&[record], meta, true).map(drop)
        })
    }
}
