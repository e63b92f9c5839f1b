//! [`OffsetTable`]: the committed offsets of every group, read from `__consumer_offsets`.
//!
//! A table catches up a partition of the offsets topic from where it last read, applying
//! records in log order; the newest commit of each (group, topic, partition) wins, whatever
//! the version of its record, and carries the incarnation it names (`None` for version 1:
//! any). Invariants:
//!
//! 1. Commits inside a transaction still open are not applied yet, but the plain commits
//!    after them are: an open transaction of one group must not hide other groups' commits
//!    (Kafka's coordinator keeps pending offsets apart likewise). Reading resumes at the
//!    first open one, so once its transaction ends the suffix is applied again in log
//!    order, which gives the same result (applying a record twice in order is idempotent).
//! 2. Markers and aborted transactions' records are never applied (the log's uncommitted
//!    read passes over them).
//! 3. A record that cannot be decoded stops the catch-up with [`Error::Corrupt`] naming its
//!    segment file, batch position and offset, and is read again next time
//!    ([`OnUndecodable::Fail`]); or is passed over ([`OnUndecodable::Skip`], for readers
//!    that only lose precision by it, such as a producer's lag bound).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::record::{self, Decoded};
use crate::format::{BatchMeta, Record};
use crate::log::{now_ms, ReadChunk};
use crate::segment::{parse_file_name, FileKind};
use crate::store::{Store, Topic};
use crate::{Error, PartitionLog, Result};

/// Records read per look at a partition.
const READ_MAX: usize = 10_000;

/// What a catch-up does with a record it cannot decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUndecodable {
    /// Stop with [`Error::Corrupt`]; the record is read again by the next catch-up.
    Fail,
    /// Pass over it.
    Skip,
}

/// A group's newest commit of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The next offset to read.
    pub offset: u64,
    /// The commit's metadata.
    pub metadata: String,
    /// When the commit was written (its record's timestamp, ms since the epoch).
    pub timestamp_ms: i64,
    /// The topic incarnation it names; `None` (version 1 records): any.
    pub incarnation: Option<u64>,
}

impl Commit {
    /// True if the commit applies to the topic's `incarnation`.
    pub fn applies_to(&self, incarnation: u64) -> bool {
        self.incarnation.is_none_or(|n| n == incarnation)
    }
}

/// A group's newest commit per partition of one topic.
pub type Partitions = BTreeMap<u32, Commit>;

/// topic name -> group -> its newest commits.
type Topics = HashMap<String, HashMap<String, Partitions>>;

/// Per offsets partition: where reading resumes, and the (group, topic) pairs with a commit
/// in a transaction still open there.
#[derive(Default)]
struct Cursor {
    read_upto: u64,
    /// The end offset the last successful catch-up read to. While the partition still ends
    /// there nothing changed, not even the outcome of an open transaction (its marker would
    /// be appended), so the suffix after an open transaction is not read again.
    scanned_to: u64,
    pending: HashSet<(String, String)>,
}

/// The committed offsets of every group, caught up from `__consumer_offsets` on demand.
pub struct OffsetTable {
    topic: Arc<Topic>,
    on_undecodable: OnUndecodable,
    cursors: Vec<Cursor>,
    /// topic name -> group -> its newest commits.
    commits: Topics,
}

impl OffsetTable {
    /// A table of the commits in `topic` (the offsets topic), nothing read yet.
    pub fn new(topic: Arc<Topic>, on_undecodable: OnUndecodable) -> Self {
        let cursors = (0..topic.partition_count()).map(|_| Cursor::default()).collect();
        OffsetTable { topic, on_undecodable, cursors, commits: HashMap::new() }
    }

    /// The table of `store`'s offsets topic, which is created if it does not exist yet.
    ///
    /// # Errors
    /// Creating or opening the topic failed.
    pub fn open(store: &Store, on_undecodable: OnUndecodable) -> Result<Self> {
        let topic = store.create_internal_topic(super::OFFSETS_TOPIC, super::PARTITIONS, true)?;
        Ok(Self::new(topic, on_undecodable))
    }

    /// The offsets topic.
    pub fn topic(&self) -> &Arc<Topic> {
        &self.topic
    }

    /// The offsets partition holding `group`'s commits.
    pub fn partition_of(&self, group: &str) -> u32 {
        super::partition_of(group, self.topic.partition_count())
    }

    /// Applies the records appended to every partition since the last look.
    ///
    /// # Errors
    /// As [`Self::catch_up`].
    pub fn catch_up_all(&mut self) -> Result<()> {
        for p in 0..self.topic.partition_count() {
            self.catch_up(p)?;
        }
        Ok(())
    }

    /// Applies the records appended to offsets partition `p` since the last look (see the
    /// module's invariants).
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], [`Error::Closed`]; a damaged batch; with
    /// [`OnUndecodable::Fail`], [`Error::Corrupt`] for a record that cannot be decoded.
    pub fn catch_up(&mut self, p: u32) -> Result<()> {
        let topic = self.topic.clone();
        let log = topic.partition(p)?;
        let head = log.head()?;
        let cursor = &mut self.cursors[p as usize];
        if head.next_offset == cursor.scanned_to {
            return Ok(());
        }
        let mut at = cursor.read_upto.max(head.log_start);
        let mut first_open: Option<u64> = None;
        let mut pending = HashSet::new();
        let mut failed = None;
        'read: while at < head.next_offset {
            let read = log.read_uncommitted(at, READ_MAX, usize::MAX)?;
            for chunk in &read.chunks {
                for r in chunk.records() {
                    let Some(key) = r.key else { continue };
                    // A tombstone forgets its key's commit (`apply`).
                    let value = (!r.tombstone).then_some(r.value);
                    if chunk.pending {
                        first_open.get_or_insert(r.offset);
                        // An undecodable record is judged when its transaction commits.
                        if let Ok(decoded) = record::decode(key, value) {
                            let (group, topic) = decoded.names();
                            pending.insert((group.to_owned(), topic.to_owned()));
                        }
                        continue;
                    }
                    if let Err(reason) = apply(&mut self.commits, key, value, r.timestamp) {
                        if self.on_undecodable == OnUndecodable::Fail {
                            failed = Some((r.offset, undecodable(log, chunk, r.offset, reason)));
                            break 'read;
                        }
                    }
                }
            }
            if read.next_offset <= at {
                break;
            }
            at = read.next_offset;
        }
        let cursor = &mut self.cursors[p as usize];
        cursor.pending = pending;
        match failed {
            Some((offset, err)) => {
                cursor.read_upto = first_open.map_or(offset, |o| o.min(offset));
                Err(err)
            }
            None => {
                cursor.read_upto = first_open.unwrap_or(at);
                cursor.scanned_to = at;
                Ok(())
            }
        }
    }

    /// Applies one record (`value` `None`: a tombstone) as a catch-up would, for records
    /// that do not come from the offsets topic (tests, conversions).
    ///
    /// # Errors
    /// What makes the record undecodable.
    pub fn apply(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        timestamp_ms: i64,
    ) -> std::result::Result<(), String> {
        apply(&mut self.commits, key, value, timestamp_ms)
    }

    /// `group`'s newest commits of `topic` that apply to its `incarnation`, as of the last
    /// catch-up.
    pub fn committed<'a>(
        &'a self,
        group: &str,
        topic: &str,
        incarnation: u64,
    ) -> impl Iterator<Item = (u32, &'a Commit)> + 'a {
        self.group_commits(topic, group)
            .into_iter()
            .flatten()
            .filter(move |(_, c)| c.applies_to(incarnation))
            .map(|(&p, c)| (p, c))
    }

    /// `group`'s newest commits of `topic`, of any incarnation.
    pub fn group_commits(&self, topic: &str, group: &str) -> Option<&Partitions> {
        self.commits.get(topic)?.get(group)
    }

    /// Every group with a commit on `topic` (any incarnation), and its commits.
    pub fn groups_of(&self, topic: &str) -> Option<&HashMap<String, Partitions>> {
        self.commits.get(topic)
    }

    /// Every (group, topic name) with a commit, for any incarnation of the topic.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &str)> {
        self.commits.iter().flat_map(|(t, groups)| groups.keys().map(move |g| (g.as_str(), t.as_str())))
    }

    /// True while a commit of `group` on `topic` sits in a transaction still open, as of
    /// the last catch-up of the group's partition.
    pub fn has_pending(&self, group: &str, topic: &str) -> bool {
        let p = self.partition_of(group) as usize;
        // No allocation per look: pending sets are tiny.
        self.cursors[p].pending.iter().any(|(g, t)| g == group && t == topic)
    }

    /// Forgets every group's commits on `topic`'s `incarnation` (it was deleted): appends a
    /// reset record for each group with a commit on the topic, then reads them back.
    /// Commits of a topic created again under the name meanwhile are kept: they name
    /// another incarnation.
    ///
    /// # Errors
    /// Reading or appending to the offsets topic failed.
    pub fn forget_topic(&mut self, topic: &str, incarnation: u64) -> Result<()> {
        self.catch_up_all()?;
        let groups: Vec<String> =
            self.groups_of(topic).map(|g| g.keys().cloned().collect()).unwrap_or_default();
        let value = record::encode_reset(incarnation);
        let mut touched = Vec::new();
        for group in groups {
            // TODO(issue 14): once a record can be a tombstone, forget the version 3 keys of
            // the incarnation with tombstones too, so compaction can remove them.
            let key = record::reset_key(&group, topic);
            let p = self.partition_of(&group);
            let reset = Record {
                timestamp: now_ms(),
                key: Some(&key),
                value: &value,
                headers: &[],
                tombstone: false,
            };
            self.topic.partition(p)?.append(&[reset], BatchMeta::plain(0))?;
            touched.push(p);
        }
        touched.sort_unstable();
        touched.dedup();
        for p in touched {
            self.catch_up(p)?;
        }
        Ok(())
    }
}

/// Applies one record to `commits`.
fn apply(
    commits: &mut Topics,
    key: &[u8],
    value: Option<&[u8]>,
    timestamp_ms: i64,
) -> std::result::Result<(), String> {
    match record::decode(key, value)? {
        Decoded::Commit { group, topic, incarnation, entries, .. } => {
            with_group(commits, topic, group, |partitions| {
                for e in entries {
                    let commit = Commit {
                        offset: e.offset,
                        metadata: e.metadata.to_owned(),
                        timestamp_ms,
                        incarnation,
                    };
                    partitions.insert(e.partition, commit);
                }
            });
        }
        Decoded::Reset { group, topic, incarnation } => {
            forget(commits, topic, group, |_, c| incarnation.is_none_or(|i| c.applies_to(i)));
        }
        Decoded::Tombstone { group, topic, incarnation, partition } => {
            forget(commits, topic, group, |p, c| p == partition && c.incarnation == Some(incarnation));
        }
    }
    Ok(())
}

/// Runs `f` on the commits of (`topic`, `group`), made empty if there were none; one
/// lookup per level when they exist (the common case: a group commits again), no
/// allocation.
fn with_group(commits: &mut Topics, topic: &str, group: &str, f: impl FnOnce(&mut Partitions)) {
    if let Some(groups) = commits.get_mut(topic) {
        if let Some(partitions) = groups.get_mut(group) {
            return f(partitions);
        }
        return f(groups.entry(group.to_owned()).or_default());
    }
    f(commits.entry(topic.to_owned()).or_default().entry(group.to_owned()).or_default());
}

/// Drops the commits of (`topic`, `group`) that `which` selects, and the group (and the
/// topic) once nothing is left.
fn forget(commits: &mut Topics, topic: &str, group: &str, which: impl Fn(u32, &Commit) -> bool) {
    let Some(groups) = commits.get_mut(topic) else { return };
    let Some(partitions) = groups.get_mut(group) else { return };
    partitions.retain(|&partition, commit| !which(partition, commit));
    if partitions.is_empty() {
        groups.remove(group);
        if groups.is_empty() {
            commits.remove(topic);
        }
    }
}

/// The error for a record at `offset` of `chunk` that cannot be decoded: names the segment
/// file holding it (found by its name, on this rare path only) and the batch's position.
pub(crate) fn undecodable(log: &PartitionLog, chunk: &ReadChunk, offset: u64, reason: String) -> Error {
    let segment = std::fs::read_dir(log.dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let (base, kind) = parse_file_name(e.file_name().to_str()?)?;
            (kind == FileKind::Data && base <= offset).then_some((base, e.path()))
        })
        .max_by_key(|(base, _)| *base)
        .map_or_else(|| log.dir().to_path_buf(), |(_, path)| path);
    Error::Corrupt { path: segment, position: chunk.start as u64, offset, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::record::tests::legacy_value;

    fn v3(table: &mut OffsetTable, group: &str, topic: &str, inc: u64, p: u32, offset: u64, ts: i64) {
        let mut value = Vec::new();
        record::encode_value(&mut value, 1, offset, b"");
        table.apply(&record::key(group, topic, inc, p), Some(&value), ts).unwrap();
    }

    fn table() -> (tempfile::TempDir, Store, OffsetTable) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::LogConfig::default(), &[]).unwrap();
        let table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
        (dir, store, table)
    }

    fn offsets(table: &OffsetTable, group: &str, topic: &str, inc: u64) -> Vec<(u32, u64)> {
        table.committed(group, topic, inc).map(|(p, c)| (p, c.offset)).collect()
    }

    #[test]
    fn a_tombstone_forgets_one_partition_of_one_incarnation() {
        let (_dir, _store, mut t) = table();
        v3(&mut t, "g", "t", 1, 0, 10, 0);
        v3(&mut t, "g", "t", 1, 1, 11, 0);
        t.apply(&record::key("g", "t", 2, 0), None, 0).unwrap();
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 10), (1, 11)], "another incarnation's tombstone");
        t.apply(&record::key("g", "t", 1, 0), None, 0).unwrap();
        assert_eq!(offsets(&t, "g", "t", 1), [(1, 11)]);
        t.apply(&record::key("g", "t", 1, 1), None, 0).unwrap();
        assert_eq!(t.groups().count(), 0, "a group with nothing left is no longer listed");
    }

    #[test]
    fn resets_forget_their_incarnation_and_version_1_commits() {
        let (_dir, _store, mut t) = table();
        t.apply(b"g\0t", Some(&legacy_value(-1, None, &[(0, 5)], b"")), 0).unwrap();
        v3(&mut t, "g", "t", 1, 1, 11, 0);
        v3(&mut t, "g", "t", 2, 2, 12, 0);
        t.apply(b"g\0t", Some(&record::encode_reset(1)), 0).unwrap();
        assert_eq!(offsets(&t, "g", "t", 2), [(2, 12)]);
        assert_eq!(offsets(&t, "g", "t", 1), []);
        t.apply(b"g\0t", Some(&legacy_value(record::RESET_GENERATION, None, &[], b"")), 0).unwrap();
        assert_eq!(offsets(&t, "g", "t", 2), [], "a version 1 reset forgets every incarnation");
    }
}
