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
//! 4. The topic is compacted (cleanup policy `compact`, small segments, see [`settings`]):
//!    compaction keeps the newest record of each key, so what a table reads on open is in
//!    proportion to the live commits plus the segments the cleaner has not reached yet, not
//!    to the history. For that to be right every commit must sit in a record of its own key:
//!    version 1 and 2 records (one key per (group, topic), several partitions each) are
//!    converted to version 3 before the topic is made compacted ([`OffsetTable::open`]).
//! 5. A version 3 key whose newest record holds a commit the table no longer shows (a newer
//!    commit of another incarnation of the partition replaced it, or a reset or conversion
//!    forgot it) is remembered as *dead*: compaction would keep that record forever and a
//!    reader would apply it again once the record that hid it is compacted away, so
//!    [`OffsetTable::forget_topic`] and the conversion write tombstones for dead keys too.
//!
//! 6. A version 3 commit of a group generation lower than that of the commit its key holds
//!    is *fenced*: passed over, as Kafka's coordinator rejects a commit of a stale
//!    generation (`ILLEGAL_GENERATION`). There is no coordinator here, and a member that
//!    lost its partitions in a rebalance it has not seen yet can write its commit after the
//!    new owner's; read back as the newest, it would move the group's offset back and the
//!    next owner would deliver again what was already handed out. Only a lower generation
//!    is fenced: a member seeking back within its generation moves the offset back. The
//!    fence is the generation of the commit the key holds, so it is always carried by one
//!    record: a commit of no generation (−1: a Kafka client's manual assignment or an admin
//!    tool, which Kafka accepts only while the group is empty), a
//!    tombstone, or a reset of the key's incarnation clears it, and generations restarting
//!    cannot lock a group out past the next such record. A key whose commit another
//!    incarnation's replaced keeps its fence among the dead keys (invariant 5). The cleaner
//!    of the offsets topic applies the same rule ([`record::fencing`]): of each key it
//!    keeps the record a reader applies last, never a fenced one after it, so a reader
//!    opening after compaction shows what one that read every record shows.
//!
//! The conversion of a (group, topic) writes a version 3 record of each live commit (with
//! its time; version 1 commits name the topic's incarnation), then one batch of tombstones:
//! of its dead keys and a conversion tombstone of its old key. None of these changes what
//! the table shows (the records equal the live commits), so a crash anywhere in between
//! reopens to the same offsets and the next open converts what is left. Every batch is
//! appended only if nothing was appended to the partition since the table read it
//! ([`PartitionLog::append_within`]), so a commit made meanwhile in another process is never
//! followed by the older offset it replaced. Only then is the topic made compacted: from
//! there every live commit is in a version 3 record newer than any version 1 or 2 record,
//! so compaction (which drops the records under the old keys) loses nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::record::{self, Decoded};
use crate::format::{BatchMeta, Record};
use crate::log::{now_ms, Bounded, ReadChunk};
use crate::segment::{parse_file_name, FileKind};
use crate::settings::Value;
use crate::store::{Store, Topic};
use crate::{Error, PartitionLog, Result};

/// Records read per look at a partition.
const READ_MAX: usize = 10_000;

/// Segment size of the offsets topic: small, so the cleaner (which never touches the active
/// segment) leaves at most this much of uncompacted history per partition for a reopen to
/// read (about 60,000 commit records, a few ms), and large enough that rolls (each costs
/// about a millisecond: new files, their first page faults, a re-listing) stay a few percent
/// of the time of the commits that fill a segment. A commit's batch must fit in it.
pub const SEGMENT_BYTES: i64 = 4 << 20;

/// The settings of the offsets topic (besides the store's defaults), given when it is created
/// and set on a topic made before it was compacted, once its records are converted.
pub fn settings() -> Vec<(String, Value)> {
    vec![
        ("cleanup_policy".into(), Value::Text("compact".into())),
        ("segment_bytes".into(), Value::Int(SEGMENT_BYTES)),
        ("max_message_bytes".into(), Value::Int(SEGMENT_BYTES / 2)),
        // No compression: commits are written one or a few at a time (see
        // `Store::create_internal_topic`).
        ("compression".into(), Value::Text("none".into())),
    ]
}

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
    /// The group generation that made it (−1: none, or a version 1 or 2 record): commits
    /// of its key with a lower generation are fenced (invariant 6).
    pub generation: i64,
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

/// topic name -> group -> dead version 3 keys (incarnation, partition), each with its fence
/// (the generation of the commit it held; −1: none): see invariants 5 and 6.
type Dead = HashMap<String, HashMap<String, BTreeMap<(u64, u32), i64>>>;

/// What the records read so far say.
#[derive(Default)]
struct State {
    /// topic name -> group -> its newest commits.
    commits: Topics,
    /// Dead version 3 keys.
    dead: Dead,
    /// (group, topic) whose newest record under the version 1/2 key is not a conversion
    /// tombstone: its records are still to be converted.
    legacy: HashSet<(String, String)>,
    /// Commits passed over because their key holds one of a newer generation.
    fenced: u64,
}

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
    state: State,
    /// Records read from the offsets topic so far.
    records_read: u64,
}

impl OffsetTable {
    /// A table of the commits in `topic` (the offsets topic), nothing read yet.
    pub fn new(topic: Arc<Topic>, on_undecodable: OnUndecodable) -> Self {
        let cursors = (0..topic.partition_count()).map(|_| Cursor::default()).collect();
        OffsetTable { topic, on_undecodable, cursors, state: State::default(), records_read: 0 }
    }

    /// The table of `store`'s offsets topic, which is created (compacted, see [`settings`])
    /// if it does not exist yet. An offsets topic made before it was compacted has its
    /// version 1 and 2 records converted ([`Self::convert_legacy`]) and is then made
    /// compacted, once: a crash on the way leaves it for the next open to finish. With
    /// [`OnUndecodable::Fail`] only; and not while a record cannot be decoded.
    ///
    /// # Errors
    /// Creating or opening the topic failed; as [`Self::convert_legacy`]; changing its
    /// settings failed.
    pub fn open(store: &Store, on_undecodable: OnUndecodable) -> Result<Self> {
        let topic = match store.topic(super::OFFSETS_TOPIC) {
            Err(Error::TopicNotFound(_)) => store.create_internal_topic_with(
                super::OFFSETS_TOPIC,
                super::PARTITIONS,
                true,
                &settings(),
            )?,
            other => other?,
        };
        let mut table = Self::new(topic, on_undecodable);
        // A lenient reader (a producer's lag bound) only reads.
        if on_undecodable == OnUndecodable::Fail && !table.topic.config()?.compacts() {
            match table.convert_legacy(store, None) {
                // A (group, topic) left for later (a transaction still open): the topic is
                // made compacted by an open that finds nothing left to convert.
                Ok(_) if !table.state.legacy.is_empty() => {}
                Ok(_) => {
                    store.alter_internal_topic(super::OFFSETS_TOPIC, &settings())?;
                    // The history sits in active segments of the old size: sealed, the
                    // cleaner can compact it, and new segments take the small size.
                    for log in table.topic.partitions()? {
                        log.seal_active()?;
                    }
                }
                // A record that cannot be decoded: the topic stays as it is (compacting it
                // could lose what that record's neighbours hold), and every catch-up of
                // its partition reports the record, as it did before.
                Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(table)
    }

    /// Records read from the offsets topic by this table's catch-ups so far (every record,
    /// applied or not): what a reopen costs is in proportion to it.
    pub fn records_read(&self) -> u64 {
        self.records_read
    }

    /// The (group, topic) pairs whose version 1 or 2 records are not converted yet, as of
    /// the last catch-up, sorted.
    pub fn unconverted(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<_> = self.state.legacy.iter().cloned().collect();
        pairs.sort_unstable();
        pairs
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
        let mut run = Run::default();
        'read: while at < head.next_offset {
            let read = log.read_uncommitted(at, READ_MAX, usize::MAX)?;
            let mut staged: Vec<Staged<'_>> = Vec::new();
            for chunk in &read.chunks {
                self.records_read += chunk.count as u64;
                for r in chunk.records() {
                    let Some(key) = r.key else { continue };
                    // A tombstone forgets its key's commit (`apply`).
                    let value = (!r.tombstone).then_some(r.value);
                    if let (false, true, Some(value)) = (chunk.pending, run.live, value) {
                        if key.starts_with(&run.prefix) {
                            if let Some((partition, generation, offset, metadata)) =
                                record::decode_v3_after_prefix(key, run.prefix.len(), value)
                            {
                                staged.push((partition, generation, offset, metadata, r.timestamp));
                                continue;
                            }
                        }
                    }
                    // Records apply in log order: the staged ones first.
                    apply_run(&mut self.state, &run, &mut staged);
                    if chunk.pending {
                        first_open.get_or_insert(r.offset);
                        // An undecodable record is judged when its transaction commits.
                        if let Ok(decoded) = record::decode(key, value) {
                            let (group, topic) = decoded.names();
                            pending.insert((group.to_owned(), topic.to_owned()));
                        }
                        continue;
                    }
                    match apply(&mut self.state, key, value, r.timestamp) {
                        Ok(()) => run.start(key, value),
                        Err(reason) => {
                            run.live = false;
                            if self.on_undecodable == OnUndecodable::Fail {
                                failed = Some((r.offset, undecodable(log, chunk, r.offset, reason)));
                                break 'read;
                            }
                        }
                    }
                }
            }
            apply_run(&mut self.state, &run, &mut staged);
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
        apply(&mut self.state, key, value, timestamp_ms)
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
        self.state.commits.get(topic)?.get(group)
    }

    /// Every group with a commit on `topic` (any incarnation), and its commits.
    pub fn groups_of(&self, topic: &str) -> Option<&HashMap<String, Partitions>> {
        self.state.commits.get(topic)
    }

    /// Every (group, topic name) with a commit, for any incarnation of the topic.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &str)> {
        self.state.commits.iter().flat_map(|(t, groups)| groups.keys().map(move |g| (g.as_str(), t.as_str())))
    }

    /// `group`'s dead version 3 keys on `topic` (see invariant 5): (incarnation, partition).
    pub fn dead_keys(&self, topic: &str, group: &str) -> Vec<(u64, u32)> {
        self.state
            .dead
            .get(topic)
            .and_then(|g| g.get(group))
            .map(|k| k.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Commits passed over so far because their key held one of a newer group generation
    /// (see invariant 6).
    pub fn fenced(&self) -> u64 {
        self.state.fenced
    }

    /// True while a commit of `group` on `topic` sits in a transaction still open, as of
    /// the last catch-up of the group's partition.
    pub fn has_pending(&self, group: &str, topic: &str) -> bool {
        let p = self.partition_of(group) as usize;
        // No allocation per look: pending sets are tiny.
        self.cursors[p].pending.iter().any(|(g, t)| g == group && t == topic)
    }

    /// Forgets every group's commits on `topic`'s `incarnation` (it was deleted): appends,
    /// per group with a commit on the topic, one batch of version 3 tombstones (one per
    /// partition it committed, and per dead key of the incarnation), then reads them back.
    /// Compaction then removes those commits from the offsets topic. Commits of a topic
    /// created again under the name meanwhile are kept: they name another incarnation.
    /// A group that still has version 1 commits (not converted: they name no incarnation)
    /// gets the version 2 reset record too, which forgets those.
    ///
    /// # Errors
    /// Reading or appending to the offsets topic failed.
    pub fn forget_topic(&mut self, topic: &str, incarnation: u64) -> Result<()> {
        self.catch_up_all()?;
        let mut groups: BTreeSet<&str> = BTreeSet::new();
        if let Some(g) = self.state.commits.get(topic) {
            groups.extend(g.keys().map(String::as_str));
        }
        if let Some(g) = self.state.dead.get(topic) {
            groups.extend(g.keys().map(String::as_str));
        }
        let mut batches = Vec::new();
        for group in groups {
            let commits = self.group_commits(topic, group);
            let mut partitions: BTreeSet<u32> = commits
                .into_iter()
                .flatten()
                .filter(|(_, c)| c.incarnation == Some(incarnation))
                .map(|(&p, _)| p)
                .collect();
            let dead = self.state.dead.get(topic).and_then(|g| g.get(group));
            partitions.extend(
                dead.into_iter().flat_map(|k| k.keys()).filter(|(i, _)| *i == incarnation).map(|&(_, p)| p),
            );
            let versionless = commits.into_iter().flatten().any(|(_, c)| c.incarnation.is_none());
            let keys: Vec<Vec<u8>> =
                partitions.iter().map(|&p| record::key(group, topic, incarnation, p)).collect();
            batches.push((group.to_owned(), keys, versionless));
        }
        let timestamp = now_ms();
        let reset = record::encode_reset(incarnation);
        let mut touched = Vec::new();
        for (group, keys, versionless) in batches {
            let reset_key = record::reset_key(&group, topic);
            let mut records: Vec<Record<'_>> = keys
                .iter()
                .map(|key| Record { timestamp, key: Some(key), value: &[], headers: &[], tombstone: true })
                .collect();
            if versionless {
                records.push(Record {
                    timestamp,
                    key: Some(&reset_key),
                    value: &reset,
                    headers: &[],
                    tombstone: false,
                });
            }
            if records.is_empty() {
                continue;
            }
            let p = self.partition_of(&group);
            self.topic.partition(p)?.append(&records, BatchMeta::plain(0))?;
            touched.push(p);
        }
        touched.sort_unstable();
        touched.dedup();
        for p in touched {
            self.catch_up(p)?;
        }
        Ok(())
    }

    /// Converts the commits still held by version 1 and 2 records to version 3 (see the
    /// module documentation), for at most `limit` (group, topic) pairs (`None`: all; a limit
    /// stops where a crash between pairs would); returns how many pairs were converted.
    /// A version 1 commit (which names no incarnation) is given the incarnation of the topic
    /// of that name if there is one, and dropped otherwise (no topic has its offsets). A
    /// (group, topic) with a commit in a transaction still open is left for a later open:
    /// the outcome of the transaction decides what it holds.
    ///
    /// # Errors
    /// Reading or appending to the offsets topic failed; a topic of a version 1 commit
    /// could not be opened.
    pub fn convert_legacy(&mut self, store: &Store, limit: Option<usize>) -> Result<usize> {
        self.catch_up_all()?;
        let mut incarnations: HashMap<String, Option<u64>> = HashMap::new();
        let mut converted = 0;
        for (group, topic) in self.unconverted() {
            if limit.is_some_and(|l| converted >= l) {
                break;
            }
            let p = self.partition_of(&group);
            let pair = (group.clone(), topic.clone());
            loop {
                self.catch_up(p)?;
                if !self.state.legacy.contains(&pair) || self.has_pending(&group, &topic) {
                    break;
                }
                let commits = self.group_commits(&topic, &group).cloned().unwrap_or_default();
                let mut live = Vec::with_capacity(commits.len());
                for (partition, commit) in commits {
                    let incarnation = match commit.incarnation {
                        Some(i) => Some(i),
                        None => match incarnations.get(&topic) {
                            Some(&known) => known,
                            None => {
                                let found = match store.topic(&topic) {
                                    Ok(t) => Some(t.incarnation()),
                                    Err(Error::TopicNotFound(_)) => None,
                                    Err(e) => return Err(e),
                                };
                                incarnations.insert(topic.clone(), found);
                                found
                            }
                        },
                    };
                    if let Some(i) = incarnation {
                        live.push((i, partition, commit));
                    }
                }
                if self.convert_pair(p, &group, &topic, live)? {
                    converted += 1;
                }
                // Otherwise appended to meanwhile (by any process): read that first.
            }
        }
        Ok(converted)
    }

    /// Writes the version 3 records of (`group`, `topic`)'s `live` commits (incarnation,
    /// partition, commit), then the tombstones of its dead keys and of its old key, in
    /// offsets partition `p`. Each batch is appended only if nothing was appended since the
    /// table read the partition; false if something was (the caller reads it and tries
    /// again: the records written so far equal what the table shows, so they change
    /// nothing).
    fn convert_pair(
        &mut self,
        p: u32,
        group: &str,
        topic: &str,
        live: Vec<(u64, u32, Commit)>,
    ) -> Result<bool> {
        let keys: Vec<Vec<u8>> =
            live.iter().map(|(i, partition, _)| record::key(group, topic, *i, *partition)).collect();
        let dead: Vec<Vec<u8>> = self
            .dead_keys(topic, group)
            .into_iter()
            .filter(|&(i, partition)| !live.iter().any(|(li, lp, _)| *li == i && *lp == partition))
            .map(|(i, partition)| record::key(group, topic, i, partition))
            .collect();
        let mut values = Vec::new();
        let mut bounds = Vec::with_capacity(live.len());
        for (_, _, commit) in &live {
            let start = values.len();
            // Its own generation: a version 3 commit keeps its fence (invariant 6), one of
            // version 1 or 2 has none (−1).
            record::encode_value(&mut values, commit.generation, commit.offset, commit.metadata.as_bytes());
            bounds.push(start..values.len());
        }
        let mut commits: Vec<Record<'_>> = live
            .iter()
            .zip(&keys)
            .zip(&bounds)
            .map(|(((_, _, commit), key), range)| Record {
                timestamp: commit.timestamp_ms,
                key: Some(key),
                value: &values[range.clone()],
                headers: &[],
                tombstone: false,
            })
            .collect();
        // Commits keep their times; a batch's times lie within an i32 of milliseconds of
        // its first, so commits far apart in time go in several batches.
        commits.sort_by_key(|r| r.timestamp);
        let mut batches: Vec<Vec<Record<'_>>> = Vec::new();
        for r in commits {
            match batches.last_mut() {
                Some(batch) if r.timestamp - batch[0].timestamp <= i64::from(i32::MAX) => batch.push(r),
                _ => batches.push(vec![r]),
            }
        }
        let now = now_ms();
        let old_key = record::reset_key(group, topic);
        let tombstone =
            |key| Record { timestamp: now, key: Some(key), value: &[], headers: &[], tombstone: true };
        let mut last: Vec<Record<'_>> = dead.iter().map(|k| tombstone(k.as_slice())).collect();
        last.push(tombstone(old_key.as_slice()));
        batches.push(last);
        let log = self.topic.partition(p)?;
        let mut end = self.cursors[p as usize].scanned_to;
        for batch in &batches {
            end += batch.len() as u64;
            if let Bounded::NoRoom(_) = log.append_within(batch, BatchMeta::plain(0), end)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A version 3 commit read by the fast path, not applied yet: (partition, generation, next
/// offset, metadata, timestamp).
type Staged<'a> = (u32, i64, u64, &'a str, i64);

/// The (group, topic, incarnation) of the version 3 commit a catch-up applied last: the
/// records after it with the same key prefix (a commit of several partitions, a group
/// committing again) are decoded from their partition on and applied with one lookup of
/// the group. Its buffers are reused from run to run.
#[derive(Default)]
struct Run {
    /// True while the fields name a (group, topic, incarnation).
    live: bool,
    prefix: Vec<u8>,
    group: String,
    topic: String,
    incarnation: u64,
}

impl Run {
    /// Starts a run at a record just applied, if it is a version 3 commit.
    fn start(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.live = false;
        let Some(value) = value else { return };
        let Ok(Decoded::Commit { group, topic, incarnation: Some(incarnation), .. }) =
            record::decode(key, Some(value))
        else {
            return;
        };
        // Version 2 commits name an incarnation too, under another key.
        if value.get(0..2) != Some(&record::VERSION.to_le_bytes()[..]) {
            return;
        }
        let Some(last) = key.iter().rposition(|&b| b == 0) else { return };
        self.prefix.clear();
        self.prefix.extend_from_slice(&key[..=last]);
        self.group.clear();
        self.group.push_str(group);
        self.topic.clear();
        self.topic.push_str(topic);
        self.incarnation = incarnation;
        self.live = true;
    }
}

/// Applies the `staged` commits of `run` as [`apply`] would, one after the other, and empties
/// `staged`.
fn apply_run(state: &mut State, run: &Run, staged: &mut Vec<Staged<'_>>) {
    if staged.is_empty() {
        return;
    }
    let State { commits, dead, fenced, .. } = state;
    with_group(commits, &run.topic, &run.group, |partitions| {
        for &(partition, generation, offset, metadata, timestamp_ms) in staged.iter() {
            // One lookup of the partition for the fence and the update (the catch-up's
            // cost is mostly per record).
            let held = partitions.get_mut(&partition);
            if generation >= 0 {
                let fence =
                    fence_of(held.as_deref(), dead, &run.topic, &run.group, run.incarnation, partition);
                if generation < fence {
                    *fenced += 1;
                    continue;
                }
            }
            let commit = Commit {
                offset,
                generation,
                metadata: metadata.to_owned(),
                timestamp_ms,
                incarnation: Some(run.incarnation),
            };
            let old = match held {
                Some(slot) => Some(std::mem::replace(slot, commit)),
                None => partitions.insert(partition, commit),
            };
            if let Some(old) = old {
                if let Some(j) = old.incarnation.filter(|&j| j != run.incarnation) {
                    mark_dead(dead, &run.topic, &run.group, j, partition, old.generation);
                }
            }
            if !dead.is_empty() {
                revive(dead, &run.topic, &run.group, run.incarnation, partition);
            }
        }
    });
    staged.clear();
}

/// Applies one record to `state`.
fn apply(
    state: &mut State,
    key: &[u8],
    value: Option<&[u8]>,
    timestamp_ms: i64,
) -> std::result::Result<(), String> {
    let decoded = record::decode(key, value)?;
    // Versions 1 and 2 (commits and resets) are all under the `group NUL topic` key.
    let legacy = value.is_some_and(|v| v.get(0..2) != Some(&record::VERSION.to_le_bytes()[..]));
    if legacy {
        let (group, topic) = decoded.names();
        state.legacy.insert((group.to_owned(), topic.to_owned()));
    }
    let State { commits, dead, legacy: unconverted, fenced } = state;
    match decoded {
        Decoded::Commit { group, topic, incarnation, entries, generation } => {
            let v3 = !legacy;
            // Version 1 and 2 records are history written before fencing: they neither
            // fence nor are fenced (they are older than every version 3 record of their
            // (group, topic): the conversion comes first).
            let generation = if v3 { generation } else { -1 };
            with_group(commits, topic, group, |partitions| {
                for e in entries {
                    if let (true, Some(i)) = (v3, incarnation) {
                        if is_fenced(partitions, dead, topic, group, i, e.partition, generation) {
                            *fenced += 1;
                            continue;
                        }
                    }
                    let commit = Commit {
                        offset: e.offset,
                        generation,
                        metadata: e.metadata.to_owned(),
                        timestamp_ms,
                        incarnation,
                    };
                    let old = partitions.insert(e.partition, commit);
                    // The record of the key the old commit came from stays in the log
                    // unless this record is of that very key.
                    if let Some(old) = old {
                        if let Some(j) = old.incarnation.filter(|&j| !(v3 && incarnation == Some(j))) {
                            mark_dead(dead, topic, group, j, e.partition, old.generation);
                        }
                    }
                    if let (true, false, Some(i)) = (v3, dead.is_empty(), incarnation) {
                        revive(dead, topic, group, i, e.partition);
                    }
                }
            });
        }
        Decoded::Reset { group, topic, incarnation } => {
            forget(commits, dead, topic, group, |_, c| incarnation.is_none_or(|i| c.applies_to(i)));
            // A reset clears the fences of its incarnation's keys, dead ones too.
            if let Some(keys) = dead.get_mut(topic).and_then(|g| g.get_mut(group)) {
                for (&(i, _), fence) in keys.iter_mut() {
                    if incarnation.is_none_or(|n| n == i) {
                        *fence = -1;
                    }
                }
            }
        }
        Decoded::Converted { group, topic } => {
            forget(commits, dead, topic, group, |_, c| c.incarnation.is_none());
            unconverted.remove(&(group.to_owned(), topic.to_owned()));
        }
        Decoded::Tombstone { group, topic, incarnation, partition } => {
            forget(commits, dead, topic, group, |p, c| p == partition && c.incarnation == Some(incarnation));
            revive(dead, topic, group, incarnation, partition);
        }
    }
    Ok(())
}

/// Remembers that version 3 key (`incarnation`, `partition`) of (`topic`, `group`) is dead,
/// with its `fence` (the generation of the commit it held; −1: none).
fn mark_dead(dead: &mut Dead, topic: &str, group: &str, incarnation: u64, partition: u32, fence: i64) {
    dead.entry(topic.to_owned())
        .or_default()
        .entry(group.to_owned())
        .or_default()
        .insert((incarnation, partition), fence);
}

/// True if a version 3 commit of `generation` to key (`incarnation`, `partition`) of
/// (`topic`, `group`) is fenced (invariant 6): the key holds a commit of a higher
/// generation, live in `partitions` or dead.
fn is_fenced(
    partitions: &Partitions,
    dead: &Dead,
    topic: &str,
    group: &str,
    incarnation: u64,
    partition: u32,
    generation: i64,
) -> bool {
    generation >= 0
        && generation < fence_of(partitions.get(&partition), dead, topic, group, incarnation, partition)
}

/// The fence of version 3 key (`incarnation`, `partition`) of (`topic`, `group`), whose
/// partition holds `held`: the generation of the commit the key holds, live or dead (−1:
/// none).
fn fence_of(
    held: Option<&Commit>,
    dead: &Dead,
    topic: &str,
    group: &str,
    incarnation: u64,
    partition: u32,
) -> i64 {
    match held {
        // (A commit of no generation of the incarnation may be a version 2 record's, which
        // left the key dead: its fence is there.)
        Some(c) if c.incarnation == Some(incarnation) && (c.generation >= 0 || dead.is_empty()) => {
            c.generation
        }
        _ if dead.is_empty() => -1,
        _ => dead
            .get(topic)
            .and_then(|g| g.get(group))
            .and_then(|keys| keys.get(&(incarnation, partition)))
            .copied()
            .unwrap_or(-1),
    }
}

/// The key (`incarnation`, `partition`) of (`topic`, `group`) holds a live commit again, or
/// a tombstone: no longer dead.
fn revive(dead: &mut Dead, topic: &str, group: &str, incarnation: u64, partition: u32) {
    let Some(groups) = dead.get_mut(topic) else { return };
    let Some(keys) = groups.get_mut(group) else { return };
    keys.remove(&(incarnation, partition));
    if keys.is_empty() {
        groups.remove(group);
        if groups.is_empty() {
            dead.remove(topic);
        }
    }
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

/// Drops the commits of (`topic`, `group`) that `which` selects (their version 3 keys become
/// dead), and the group (and the topic) once nothing is left.
fn forget(
    commits: &mut Topics,
    dead: &mut Dead,
    topic: &str,
    group: &str,
    which: impl Fn(u32, &Commit) -> bool,
) {
    let Some(groups) = commits.get_mut(topic) else { return };
    let Some(partitions) = groups.get_mut(group) else { return };
    partitions.retain(|&partition, commit| {
        if !which(partition, commit) {
            return true;
        }
        // Forgotten by a reset, a tombstone or a conversion: its fence goes with it.
        if let Some(i) = commit.incarnation {
            mark_dead(dead, topic, group, i, partition, -1);
        }
        false
    });
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

    /// A version 3 commit of `offset` by `group`'s `generation`.
    fn commit(
        table: &mut OffsetTable,
        group: &str,
        topic: &str,
        inc: u64,
        p: u32,
        generation: i64,
        offset: u64,
    ) {
        let mut value = Vec::new();
        record::encode_value(&mut value, generation, offset, b"");
        table.apply(&record::key(group, topic, inc, p), Some(&value), 0).unwrap();
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

    #[test]
    fn a_commit_of_an_older_generation_is_fenced() {
        let (_dir, _store, mut t) = table();
        // Member B (generation 5) took partition 0 over and committed 10; member A still
        // thought it owned it (generation 4) and its commit of 3 landed after.
        commit(&mut t, "g", "t", 1, 0, 5, 10);
        commit(&mut t, "g", "t", 1, 0, 4, 3);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 10)]);
        assert_eq!(t.fenced(), 1);
        // Other partitions, groups and topics have fences of their own.
        commit(&mut t, "g", "t", 1, 1, 4, 3);
        commit(&mut t, "h", "t", 1, 0, 4, 3);
        commit(&mut t, "g", "u", 1, 0, 4, 3);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 10), (1, 3)]);
        assert_eq!(offsets(&t, "h", "t", 1), [(0, 3)]);
        assert_eq!(offsets(&t, "g", "u", 1), [(0, 3)]);
        assert_eq!(t.fenced(), 1);
    }

    #[test]
    fn a_seek_back_within_a_generation_moves_the_offset_back() {
        let (_dir, _store, mut t) = table();
        commit(&mut t, "g", "t", 1, 0, 5, 10);
        commit(&mut t, "g", "t", 1, 0, 5, 7);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 7)], "same generation: applied");
        commit(&mut t, "g", "t", 1, 0, 6, 2);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 2)], "a newer generation: applied");
        commit(&mut t, "g", "t", 1, 0, 5, 9);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 2)], "the generation before it: fenced");
        assert_eq!(t.fenced(), 1);
    }

    #[test]
    fn a_commit_of_no_generation_applies_and_clears_the_fence() {
        let (_dir, _store, mut t) = table();
        commit(&mut t, "g", "t", 1, 0, 5, 10);
        // A Kafka client's manual assignment or an admin tool (the group empty).
        commit(&mut t, "g", "t", 1, 0, -1, 2);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 2)]);
        // The group started over (its generations restarted): not locked out.
        commit(&mut t, "g", "t", 1, 0, 1, 4);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 4)]);
        assert_eq!(t.fenced(), 0);
    }

    #[test]
    fn a_tombstone_or_a_reset_clears_the_fence() {
        let (_dir, _store, mut t) = table();
        commit(&mut t, "g", "t", 1, 0, 5, 10);
        t.apply(&record::key("g", "t", 1, 0), None, 0).unwrap();
        commit(&mut t, "g", "t", 1, 0, 1, 3);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 3)], "after a tombstone");
        commit(&mut t, "g", "t", 1, 0, 5, 10);
        t.apply(b"g\0t", Some(&record::encode_reset(1)), 0).unwrap();
        commit(&mut t, "g", "t", 1, 0, 1, 4);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 4)], "after a reset");
        assert_eq!(t.fenced(), 0);
    }

    #[test]
    fn a_dead_key_keeps_its_fence() {
        let (_dir, _store, mut t) = table();
        commit(&mut t, "g", "t", 1, 0, 5, 10);
        // Another incarnation's commit of the partition (the topic created again) replaces
        // it; a stale commit of the first incarnation's key is still fenced by its own key.
        commit(&mut t, "g", "t", 2, 0, 1, 1);
        commit(&mut t, "g", "t", 1, 0, 4, 3);
        assert_eq!(offsets(&t, "g", "t", 2), [(0, 1)]);
        assert_eq!(t.dead_keys("t", "g"), [(1, 0)]);
        assert_eq!(t.fenced(), 1);
        commit(&mut t, "g", "t", 1, 0, 5, 11);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 11)], "its own generation applies");
        // A reset of incarnation 1 clears the fences of its dead keys too.
        commit(&mut t, "g", "t", 2, 0, 1, 2);
        t.apply(b"g\0t", Some(&record::encode_reset(1)), 0).unwrap();
        commit(&mut t, "g", "t", 1, 0, 1, 3);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 3)]);
    }

    #[test]
    fn version_1_and_2_commits_neither_fence_nor_are_fenced() {
        let (_dir, _store, mut t) = table();
        t.apply(b"g\0t", Some(&legacy_value(9, Some(1), &[(0, 5)], b"")), 0).unwrap();
        commit(&mut t, "g", "t", 1, 0, 2, 6);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 6)]);
        t.apply(b"g\0t", Some(&legacy_value(1, Some(1), &[(0, 4)], b"")), 0).unwrap();
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 4)]);
        assert_eq!(t.fenced(), 0);
        // The version 3 key keeps its own fence (what compaction keeps of it says so too).
        commit(&mut t, "g", "t", 1, 0, 1, 3);
        assert_eq!(offsets(&t, "g", "t", 1), [(0, 4)]);
        assert_eq!(t.fenced(), 1);
    }
}
