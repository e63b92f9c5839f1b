//! Committed offsets: `OffsetTable` (the newest commit of every group, read back from
//! `__consumer_offsets` by the core's table) and `OffsetCommitter` (a consumer's commits,
//! checked against the partitions' ends and appended in one native call: a commit sits in
//! tight loops). The record bytes are the core's (`tidelog_core::offsets::record`).
//!
//! A committer bound to its group's membership state refuses, under the append lock of the
//! group's offsets partition, a commit of a generation older than the group's: so no
//! commit of a member that lost its partitions lands after one of the member that took them
//! (the table passes over such a record anyway, see `tidelog_core::offsets::table`; this
//! keeps it out of the log and tells the member).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt};
use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::group::Group;
use tidelog_core::log::{now_ms, Admission};
use tidelog_core::offsets::{record, OffsetTable, OnUndecodable};
use tidelog_core::{Error, FsyncPolicy, Topic};

use crate::errors::{to_py, InvalidConfigError, OffsetOutOfRangeError, RebalanceError};
use crate::gil::run_detached;
use crate::group::PyGroup;
use crate::store::PyStore;
use crate::topic::PyTopic;

/// A record's key and value, as Python bytes.
type KeyValue<'py> = (Bound<'py, PyBytes>, Bound<'py, PyBytes>);

/// Commits of one group on one incarnation of a topic (see `OffsetTable.committer`).
#[pyclass(frozen, module = "tidelog._core", name = "OffsetCommitter")]
pub struct PyOffsetCommitter {
    /// The topic the group consumes.
    source: Arc<Topic>,
    /// `__consumer_offsets`, and the partition of the group's commits.
    offsets: Arc<Topic>,
    partition: u32,
    /// Per partition of `source`, the key of its commit records (made once: a commit
    /// builds no key).
    keys: Vec<Vec<u8>>,
    /// The group's membership state: a commit of an older generation than its current one
    /// is refused (`None`: commits are not checked).
    members: Option<Arc<Group>>,
}

/// The metadata of a commit, checked to fit its 16-bit length.
fn checked_metadata(metadata: &str) -> PyResult<&[u8]> {
    if metadata.len() > usize::from(u16::MAX) {
        return Err(InvalidConfigError::new_err(format!(
            "commit metadata is {} bytes long: at most {} fit",
            metadata.len(),
            u16::MAX
        )));
    }
    Ok(metadata.as_bytes())
}

#[pymethods]
impl PyOffsetCommitter {
    /// Commits `offsets` (partition -> next offset to read) with `metadata`: one record per
    /// partition, all in one batch, so all partitions are committed together or none.
    /// Returns once the batch is in the page cache; with `fsync="always"` once it is on
    /// disk.
    ///
    /// Raises `OffsetOutOfRangeError` (nothing written) for an offset past its partition's
    /// end, `TopicNotFoundError` if the topic was deleted, `RebalanceError` (nothing
    /// written) if the committer is bound to the group's membership and `generation` (not
    /// −1) is older than the group's.
    fn commit(
        &self,
        py: Python<'_>,
        offsets: &Bound<'_, PyDict>,
        metadata: &str,
        generation: i64,
    ) -> PyResult<()> {
        if self.write(py, offsets, metadata, generation)? {
            return Ok(());
        }
        Err(RebalanceError::new_err(format!(
            "commit of generation {generation} refused: the group is at generation {} (it \
             rebalanced; the partitions may be another member's); nothing was committed",
            self.members.as_ref().map_or(0, |g| g.current_generation())
        )))
    }

    /// `commit` of the common case, for the consumer's hot path: commits and returns True
    /// only if `offsets` is a non-empty dict whose keys are exact ints in `owned` (the
    /// member's partitions) and whose values are exact non-negative ints; anything else
    /// returns False with nothing written, and the consumer's full checks then explain it
    /// (a commit in Python spent ~250 ns on those checks alone, a quarter of its time).
    /// So does a commit the group's generation refuses.
    ///
    /// Raises what `commit` raises for offsets that pass those checks, but
    /// `RebalanceError`.
    fn commit_owned(
        &self,
        py: Python<'_>,
        offsets: &Bound<'_, PyAny>,
        metadata: &str,
        generation: i64,
        owned: &Bound<'_, PyDict>,
    ) -> PyResult<bool> {
        let Ok(offsets) = offsets.cast_exact::<PyDict>() else { return Ok(false) };
        if offsets.is_empty() {
            return Ok(false);
        }
        for (p, o) in offsets.iter() {
            let exact = p.is_exact_instance_of::<PyInt>() && o.is_exact_instance_of::<PyInt>();
            if !(exact && o.extract::<i64>().is_ok_and(|o| o >= 0) && owned.contains(&p)?) {
                return Ok(false);
            }
        }
        self.write(py, offsets, metadata, generation)
    }
}

impl PyOffsetCommitter {
    /// Writes the commit; false (nothing written) if the group's generation refused it.
    fn write(
        &self,
        py: Python<'_>,
        offsets: &Bound<'_, PyDict>,
        metadata: &str,
        generation: i64,
    ) -> PyResult<bool> {
        let metadata = checked_metadata(metadata)?;
        if let (1, true, Some((p, o))) = (offsets.len(), metadata.is_empty(), offsets.iter().next()) {
            // The common commit, with nothing on the heap.
            let (p, o) = self.checked(&p, &o)?;
            let value = record::value_without_metadata(generation, o);
            let record = Record {
                timestamp: now_ms(),
                key: Some(&self.keys[p as usize]),
                value: &value,
                headers: &[],
                tombstone: false,
            };
            return self.append(py, &[record], generation);
        }
        let mut entries = Vec::with_capacity(offsets.len());
        for (p, o) in offsets.iter() {
            entries.push(self.checked(&p, &o)?);
        }
        if entries.is_empty() {
            return Ok(true);
        }
        let value_len = record::VALUE_LEN + metadata.len();
        let mut values = Vec::with_capacity(entries.len() * value_len);
        for &(_, o) in &entries {
            record::encode_value(&mut values, generation, o, metadata);
        }
        let timestamp = now_ms();
        let records: Vec<Record<'_>> = entries
            .iter()
            .zip(values.chunks_exact(value_len))
            .map(|(&(p, _), value)| Record {
                timestamp,
                key: Some(&self.keys[p as usize]),
                value,
                headers: &[],
                tombstone: false,
            })
            .collect();
        self.append(py, &records, generation)
    }

    /// Partition `p` and offset `o` of a commit, checked: the partition exists (so it has
    /// a key) and the offset is not past its end.
    fn checked(&self, p: &Bound<'_, PyAny>, o: &Bound<'_, PyAny>) -> PyResult<(u32, u64)> {
        let p: u32 = p.extract()?;
        let end = to_py(self.source.partition(p).and_then(|log| log.end_offset()))?;
        // The caller checked `o` is a non-negative int; past i64 it is past any end.
        match o.extract::<i64>() {
            Ok(o) if o as u64 <= end => Ok((p, o as u64)),
            _ => Err(OffsetOutOfRangeError::new_err(format!(
                "cannot commit offset {o} for '{}' partition {p}: past its end offset {end} (the next \
                 offset to be written); nothing was committed",
                self.source.name()
            ))),
        }
    }

    /// Appends the records of one commit of `generation` as one batch; false (nothing
    /// written) if the group is at a newer generation, checked under the append lock.
    fn append(&self, py: Python<'_>, records: &[Record<'_>], generation: i64) -> PyResult<bool> {
        let meta = BatchMeta::plain(0);
        let log = to_py(self.offsets.partition(self.partition))?;
        let members = self.members.as_deref();
        // A member's generation is the group's unless a rebalance it has not seen moved
        // the group on; generations never go back (`tidelog_core::group`, invariant 1).
        let admit = move || match members {
            Some(group) if generation >= 0 => group.current_generation() <= generation as u64,
            _ => true,
        };
        // As `Topic.append`: the GIL is let go only when the append lock is contended or an
        // fsync is due.
        if log.config().fsync != FsyncPolicy::Always {
            if let Some(admission) = to_py(log.try_append_if(records, meta, admit))? {
                return Ok(matches!(admission, Admission::Written(_)));
            }
        }
        let admission = run_detached(py, move || log.append_if(records, meta, admit))?;
        Ok(matches!(admission, Admission::Written(_)))
    }
}

/// The committed offsets of every consumer group of a store, read back from
/// `__consumer_offsets` (which is created if needed). Each look first applies the records
/// appended since the last one, in any process; safe to share between threads.
#[pyclass(frozen, module = "tidelog._core", name = "OffsetTable")]
pub struct PyOffsetTable {
    table: Mutex<OffsetTable>,
    topic: Arc<Topic>,
}

impl PyOffsetTable {
    /// Runs `f` on the table without the GIL. The lock is taken once the GIL is let go, so
    /// a thread holding it never waits for the GIL.
    fn with_table<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut OffsetTable) -> tidelog_core::Result<T> + Send,
    ) -> PyResult<T> {
        run_detached(py, || {
            let mut table = self
                .table
                .lock()
                .map_err(|_| Error::Internal("the offset table's lock is poisoned".into()))?;
            f(&mut table)
        })
    }
}

#[pymethods]
impl PyOffsetTable {
    #[new]
    fn new(py: Python<'_>, store: &PyStore) -> PyResult<Self> {
        store.check_open()?;
        let store = store.inner().clone();
        let table = run_detached(py, move || OffsetTable::open(&store, OnUndecodable::Fail))?;
        let topic = table.topic().clone();
        Ok(PyOffsetTable { table: Mutex::new(table), topic })
    }

    /// `group`'s newest commit of every partition of `topic` that applies to its
    /// `incarnation`: partition -> (next offset, metadata, commit time in ms).
    ///
    /// Raises `CorruptRecordError` naming the segment file for a record that cannot be
    /// decoded.
    fn committed<'py>(
        &self,
        py: Python<'py>,
        group: &str,
        topic: &str,
        incarnation: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let commits = self.with_table(py, |t| {
            t.catch_up(t.partition_of(group))?;
            let commits = t.committed(group, topic, incarnation);
            Ok(commits.map(|(p, c)| (p, c.offset, c.metadata.clone(), c.timestamp_ms)).collect::<Vec<_>>())
        })?;
        let out = PyDict::new(py);
        for (p, offset, metadata, timestamp) in commits {
            out.set_item(p, (offset, metadata, timestamp))?;
        }
        Ok(out)
    }

    /// The highest group generation among `group`'s commits of `topic`'s `incarnation`
    /// (−1: none): a group's generations start above it (see `Group.write`).
    fn highest_generation(
        &self,
        py: Python<'_>,
        group: &str,
        topic: &str,
        incarnation: u64,
    ) -> PyResult<i64> {
        self.with_table(py, |t| {
            t.catch_up(t.partition_of(group))?;
            Ok(t.committed(group, topic, incarnation).map(|(_, c)| c.generation).max().unwrap_or(-1))
        })
    }

    /// Every (group, topic name) with a commit, for any incarnation of the topic.
    fn groups(&self, py: Python<'_>) -> PyResult<HashSet<(String, String)>> {
        self.with_table(py, |t| {
            t.catch_up_all()?;
            Ok(t.groups().map(|(g, topic)| (g.to_owned(), topic.to_owned())).collect())
        })
    }

    /// True while a commit of `group` on `topic` sits in a transaction still open.
    fn has_pending(&self, py: Python<'_>, group: &str, topic: &str) -> PyResult<bool> {
        self.with_table(py, |t| {
            t.catch_up(t.partition_of(group))?;
            Ok(t.has_pending(group, topic))
        })
    }

    /// The committer of `group` on `topic`'s `incarnation` (keys and partition made once).
    /// With `members` (the group's membership state, `Store.group(topic, group)`) it
    /// refuses a commit of a generation older than the group's.
    #[pyo3(signature = (group, topic, incarnation, members=None))]
    fn committer(
        &self,
        group: &str,
        topic: &PyTopic,
        incarnation: u64,
        members: Option<&Bound<'_, PyGroup>>,
    ) -> PyOffsetCommitter {
        let source = topic.engine().clone();
        let prefix = record::key_prefix(group, source.name(), incarnation);
        let keys = (0..source.partition_count())
            .map(|p| {
                let mut key = prefix.clone();
                record::push_partition(&mut key, p);
                key
            })
            .collect();
        let partition = tidelog_core::offsets::partition_of(group, self.topic.partition_count());
        let members = members.map(|g| g.get().inner().clone());
        PyOffsetCommitter { source, offsets: self.topic.clone(), partition, keys, members }
    }

    /// The records of a commit of `offsets` (partition -> next offset) by `group` on
    /// `topic`'s `incarnation`, for a producer to send in a transaction: `(offsets
    /// partition, [(key, value), ...])`.
    fn commit_records<'py>(
        &self,
        py: Python<'py>,
        group: &str,
        topic: &str,
        incarnation: u64,
        offsets: &Bound<'_, PyDict>,
        generation: i64,
    ) -> PyResult<(u32, Vec<KeyValue<'py>>)> {
        let mut records = Vec::with_capacity(offsets.len());
        for (p, o) in offsets.iter() {
            let p: u32 = p.extract()?;
            let o: i64 = o.extract()?;
            let o = u64::try_from(o)
                .map_err(|_| InvalidConfigError::new_err(format!("cannot commit offset {o}: negative")))?;
            let mut value = Vec::with_capacity(record::VALUE_LEN);
            record::encode_value(&mut value, generation, o, b"");
            let key = record::key(group, topic, incarnation, p);
            records.push((PyBytes::new(py, &key), PyBytes::new(py, &value)));
        }
        Ok((tidelog_core::offsets::partition_of(group, self.topic.partition_count()), records))
    }

    /// Forgets every group's commits on `topic`'s `incarnation` (it was deleted): writes a
    /// record that forgets them for each group with a commit on the topic.
    fn forget_topic(&self, py: Python<'_>, topic: &str, incarnation: u64) -> PyResult<()> {
        self.with_table(py, |t| t.forget_topic(topic, incarnation))
    }
}
