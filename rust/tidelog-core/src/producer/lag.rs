//! `max_lag` as a bound: the writer never writes a partition more than `max_lag +
//! buffer_messages` messages past the slowest consumer group's committed offset, and turns
//! the producer's pressure on (so `send` blocks, raises or sheds) while the slowest group
//! is more than `max_lag` behind, off again at `max_lag * low_watermark`.
//!
//! Where the committed offsets come from: the writer reads the tail of the internal topic
//! `__consumer_offsets` itself, where every commit of every process is recorded, through
//! the same [`OffsetTable`] as `tidelog.offsets` (the record layouts are in
//! [`crate::offsets::record`]). Chosen over a per-partition
//! "slowest committed offset" word in shared memory that commits would update: that word
//! would be a second copy of what the topic already holds durably, every committer (and
//! the deletion of a topic, and a group's reset) would have to keep it right, a committer
//! killed between its record and the word would leave it stale for good, and a "minimum
//! over groups" cannot be updated from one group's commit without knowing the others'.
//! The topic is the source of truth every process already writes; looking for news in it
//! costs one load of each of its partitions' published end offset (a shared word), and
//! only new commit records are read and decoded. The writer waits for commits on the
//! topic's doorbell, so a commit in any process wakes it at once.
//!
//! Groups: those with a commit on the topic, and those with membership state but no commit
//! yet (in `<store>/groups/<topic>/`, see [`crate::group::names_in`]), which count from the
//! partition's start as their lag does. The directory is listed at most every
//! [`GROUPS_RESCAN`]. A commit inside a transaction still open counts once the transaction
//! commits (the table applies it then), so the bound errs on the side of holding back.
//! A record the table cannot decode is passed over: it only makes the bound hold back
//! less on a group nobody here can read either.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::offsets::OFFSETS_TOPIC;
use crate::offsets::{OffsetTable, OnUndecodable};
use crate::store::{Store, Topic};
use crate::{Error, Result};

/// How often the groups directory of a topic is listed again.
const GROUPS_RESCAN: Duration = Duration::from_millis(100);

/// What one writer knows of the consumer groups, kept up to date from the offsets topic.
pub(crate) struct LagBound {
    store: Arc<Store>,
    max_lag: u64,
    resume_at: u64,
    slack: u64,
    /// The groups' commits, once the offsets topic exists.
    table: Option<OffsetTable>,
    /// topic -> groups with membership state, and when the directory was listed.
    members: HashMap<String, (Instant, HashSet<String>)>,
    /// Pressure this bound put on the producer (with hysteresis).
    pub on: bool,
}

impl LagBound {
    /// A bound of `max_lag` messages; `slack` (the buffer) is how far past it messages
    /// already accepted may still be written; pressure ends at `resume_at`.
    pub fn new(store: Arc<Store>, max_lag: u64, resume_at: u64, slack: u64) -> Self {
        LagBound { store, max_lag, resume_at, slack, table: None, members: HashMap::new(), on: false }
    }

    /// True once the store is closed.
    pub fn store_closed(&self) -> bool {
        self.store.is_closed()
    }

    /// The offsets topic, once it exists (it is made by the first consumer or commit).
    pub fn offsets_topic(&mut self) -> Option<&Arc<Topic>> {
        if self.table.is_none() {
            if let Ok(topic) = self.store.topic(OFFSETS_TOPIC) {
                self.table = Some(OffsetTable::new(topic, OnUndecodable::Skip));
            }
        }
        self.table.as_ref().map(OffsetTable::topic)
    }

    /// Applies the commit records appended since the last look.
    ///
    /// # Errors
    /// Reading the offsets topic failed (the store closed, damage).
    pub fn catch_up(&mut self) -> Result<()> {
        if self.offsets_topic().is_none() {
            return Ok(());
        }
        let table = self.table.as_mut().expect("just looked");
        match table.catch_up_all() {
            Err(Error::TopicNotFound(_)) => {
                // Deleted (with every commit in it): start over with whatever replaces it.
                self.table = None;
                Ok(())
            }
            other => other,
        }
    }

    /// Refreshes the groups of `topic` with membership state, at most every
    /// [`GROUPS_RESCAN`]: true if one of them has no commit on the topic.
    fn member_without_commit(&mut self, topic: &Topic) -> bool {
        let (name, incarnation) = (topic.name(), topic.incarnation());
        let now = Instant::now();
        let stale = self.members.get(name).is_none_or(|(at, _)| now.duration_since(*at) >= GROUPS_RESCAN);
        if stale {
            let dir = crate::group::groups_dir(self.store.dir(), name);
            let names = crate::group::names_in(&dir).unwrap_or_default();
            self.members.insert(name.to_owned(), (now, names.into_iter().collect()));
        }
        let commits = self.table.as_ref().and_then(|t| t.groups_of(name));
        let has_commit = |g: &String| {
            commits.and_then(|c| c.get(g)).is_some_and(|ps| ps.values().any(|c| c.applies_to(incarnation)))
        };
        self.members[name].1.iter().any(|g| !has_commit(g))
    }

    /// The slowest group's committed offset in partition `p` of `topic`, or `None` if the
    /// topic has no group. A group without a commit there counts from the start.
    ///
    /// # Errors
    /// Reading the partition's start failed.
    pub fn slowest(&mut self, topic: &Topic, p: u32) -> Result<Option<u64>> {
        let from_start = self.member_without_commit(topic);
        self.slowest_given(topic, p, from_start)
    }

    fn slowest_given(&self, topic: &Topic, p: u32, mut from_start: bool) -> Result<Option<u64>> {
        let mut slowest: Option<u64> = None;
        let incarnation = topic.incarnation();
        if let Some(commits) = self.table.as_ref().and_then(|t| t.groups_of(topic.name())) {
            // Groups whose commits all name a deleted incarnation are not this topic's.
            let groups = commits.values().filter(|ps| ps.values().any(|c| c.applies_to(incarnation)));
            for partitions in groups {
                match partitions.get(&p) {
                    Some(c) if c.applies_to(incarnation) => {
                        slowest = Some(slowest.map_or(c.offset, |s| s.min(c.offset)))
                    }
                    _ => from_start = true,
                }
            }
        }
        if from_start {
            let start = topic.partition(p)?.start_offset()?;
            slowest = Some(slowest.map_or(start, |s| s.min(start)));
        }
        Ok(slowest)
    }

    /// How many more messages may be written to partition `p` of `topic` now (`None`: no
    /// limit, there is no group). Past `max_lag + slack` beyond the slowest group nothing
    /// more is written.
    ///
    /// # Errors
    /// Reading the partition's offsets failed.
    pub fn room(&mut self, topic: &Topic, p: u32) -> Result<Option<u64>> {
        let Some(limit) = self.limit(topic, p)? else { return Ok(None) };
        Ok(Some(limit.saturating_sub(topic.partition(p)?.end_offset()?)))
    }

    /// The offset partition `p` of `topic` may not be written past: `max_lag + slack`
    /// beyond the slowest group's committed offset (`None`: no group, no limit).
    ///
    /// # Errors
    /// Reading the partition's start failed.
    pub fn limit(&mut self, topic: &Topic, p: u32) -> Result<Option<u64>> {
        let Some(slowest) = self.slowest(topic, p)? else { return Ok(None) };
        Ok(Some(slowest.saturating_add(self.max_lag).saturating_add(self.slack)))
    }

    /// Updates [`Self::on`] from the largest lag over `topics`' partitions, with
    /// hysteresis: on above `max_lag`, off at `resume_at` or below. Returns whether it
    /// changed.
    ///
    /// # Errors
    /// Reading offsets failed.
    pub fn update(&mut self, topics: &[Arc<Topic>]) -> Result<bool> {
        self.catch_up()?;
        let mut worst = 0u64;
        for topic in topics {
            let from_start = self.member_without_commit(topic);
            for p in 0..topic.partition_count() {
                let lag = self.slowest_given(topic, p, from_start).and_then(|slowest| match slowest {
                    Some(slowest) => Ok(topic.partition(p)?.end_offset()?.saturating_sub(slowest)),
                    None => Ok(0),
                });
                match lag {
                    Ok(lag) => worst = worst.max(lag),
                    // A topic deleted since this producer wrote to it has no lag to bound.
                    Err(Error::TopicNotFound(_)) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let was = self.on;
        if !self.on && worst > self.max_lag {
            self.on = true;
        } else if self.on && worst <= self.resume_at {
            self.on = false;
        }
        Ok(was != self.on)
    }
}
