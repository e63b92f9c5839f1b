//! A store: a directory of topics, each a directory of partition logs.
//!
//! ```text
//! data/
//!   tidelog.store              marker: refuses to treat a foreign directory as a store
//!   tidelog.settings           the store's settings, the defaults of new topics (`settings`)
//!   topics/orders/topic.meta   "partitions 3\nincarnation 5f0c...\n", then the topic's settings
//!   topics/orders/0/           a partition log (see `log`)
//!   topics/.lock               serialises creating and deleting topics
//!   topics/.tmp-<id>/          a topic being created
//!   topics/.deleted-<id>/      a topic being deleted
//! ```
//!
//! Topic creation and deletion are single `rename`s of a fully prepared directory, so
//! other processes see a topic either complete or not at all. Temporary names hold a random
//! id rather than the topic's name, which may be as long as a file name can be.
//!
//! A topic's identity is its incarnation, a random id in `topic.meta` (topics written
//! before it existed read as [`LEGACY_INCARNATION`]): a topic created again under the same
//! name is a different topic. Deleting one first sets the deleted mark in every
//! partition's control block, under that partition's append lock, and only then renames
//! the directory away: from the mark on, every process's calls on the topic fail with
//! [`Error::TopicNotFound`] (appends check the mark after taking the lock, with one
//! load), so no write is acknowledged into deleted files and nothing old is ever written
//! into a new topic's directory. Partitions are marked in order and partition 0's mark is
//! the commit point: a topic whose partition 0 carries the mark is deleted even if its
//! directory is still there (a deleting process died before renaming it); creating or
//! deleting it again finishes the job. The state kept beside the topic (its consumer
//! groups and work queues, `crate::paths::topic_state_dirs`) goes after the mark and before
//! the topic directory, so it is never lost while the topic lives and never found by a
//! topic created again.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

use rustix::fs::{flock, FlockOperation};

use crate::group::{Group, GroupPaths};
use crate::log::{FsyncPolicy, LogConfig, PartitionLog};
use crate::partitioner::partition_for_key;
use crate::queue_legacy;
use crate::settings::{self, SharedSettings, TopicSettings, Value};
use crate::shm::doorbell::Doorbell;
use crate::shm::fork::Born;
use crate::statelog::{StateLog, StatePaths};
use crate::{Error, Result};

use crate::paths::{
    partition_in, CREATING_PREFIX as TMP_PREFIX, DELETING_PREFIX as DELETED_PREFIX,
    DOORBELL_FILE as DOORBELL, STORE_MARKER_FILE as MARKER, TMP_SUFFIX, TOPICS_LOCK_FILE as TOPICS_LOCK,
};
const MARKER_TEXT: &str = "tidelog store\nformat 1\n";
/// A topic's metadata file: its partition count and settings (see `settings`).
pub use crate::paths::TOPIC_META_FILE as TOPIC_META;
/// Incarnation of a topic whose `topic.meta` predates incarnations. New topics never get
/// it, so it cannot be confused with a topic created again.
pub const LEGACY_INCARNATION: u64 = 0;
/// Prefix of the names reserved for the store's internal topics.
pub use crate::paths::INTERNAL_PREFIX;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// A topic: its partitions, opened.
pub struct Topic {
    name: String,
    incarnation: u64,
    partitions: Vec<PartitionLog>,
    doorbell: Arc<Doorbell>,
    next_partition: AtomicU32,
    closed: Arc<AtomicBool>,
    deleted: AtomicBool,
    /// The store's: a topic inherited across `fork()` refuses every call.
    born: Born,
    settings: Arc<SharedSettings>,
}

impl Topic {
    /// Compacts every partition's sealed segments now (see [`PartitionLog::compact`]),
    /// waiting for a cleaner already working on one; returns the figures summed.
    ///
    /// # Errors
    /// As [`PartitionLog::compact`].
    pub fn compact(&self) -> Result<crate::log::CompactionStats> {
        self.compact_paced(crate::log::Pace::default())
    }

    /// As [`Self::compact`], keeping to `pace` (the background cleaner's byte budget).
    ///
    /// # Errors
    /// As [`PartitionLog::compact`].
    pub fn compact_paced(&self, pace: crate::log::Pace<'_>) -> Result<crate::log::CompactionStats> {
        let mut total = crate::log::CompactionStats::default();
        for log in self.partitions()? {
            if let Some(stats) = log.compact_paced(true, pace)? {
                total.add(&stats);
            }
        }
        Ok(total)
    }

    /// The dirty ratio of every partition's closed segments, summed (Kafka's
    /// `min.cleanable.dirty.ratio` compares this).
    ///
    /// # Errors
    /// As [`PartitionLog::dirty_ratio`].
    pub fn dirty_ratio(&self) -> Result<crate::log::DirtyRatio> {
        let mut total = crate::log::DirtyRatio::default();
        for log in self.partitions()? {
            total.add(&log.dirty_ratio()?);
        }
        Ok(total)
    }

    /// The newest value of every key, over all partitions (committed records only;
    /// tombstones delete their key, records without a key are left out), in the order of
    /// partitions and then of the newest records' offsets.
    ///
    /// # Errors
    /// Read errors ([`Error::Corrupt`] for a damaged batch).
    pub fn latest(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for log in self.partitions()? {
            let mut newest: std::collections::HashMap<Vec<u8>, (u64, Option<Vec<u8>>)> =
                std::collections::HashMap::new();
            let mut offset = log.start_offset()?;
            loop {
                let read = match log.read(offset, 10_000, 4 << 20) {
                    Ok(read) => read,
                    // Retention (compact,delete) moved the start meanwhile.
                    Err(Error::OffsetOutOfRange { start, .. }) if start > offset => {
                        offset = start;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for chunk in &read.chunks {
                    for r in chunk.records() {
                        if let Some(key) = r.key {
                            let value = (!r.tombstone).then(|| r.value.to_vec());
                            newest.insert(key.to_vec(), (r.offset, value));
                        }
                    }
                }
                if read.next_offset == offset {
                    break;
                }
                offset = read.next_offset;
            }
            let mut live: Vec<(u64, Vec<u8>, Vec<u8>)> =
                newest.into_iter().filter_map(|(k, (o, v))| v.map(|v| (o, k, v))).collect();
            live.sort_unstable_by_key(|(o, _, _)| *o);
            out.extend(live.into_iter().map(|(_, k, v)| (k, v)));
        }
        Ok(out)
    }

    /// The topic's settings, shared with every process (refreshed when another process
    /// altered them).
    pub fn settings(&self) -> &SharedSettings {
        &self.settings
    }

    /// The topic's stored settings, current.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::TopicNotFound`]; reading changed settings failed.
    pub fn config(&self) -> Result<TopicSettings> {
        self.check_open()?;
        self.settings.current()
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The topic's incarnation: a random id given at creation ([`LEGACY_INCARNATION`] for
    /// topics created before incarnations existed).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// True once the topic was deleted, by this process or any other. One load: a
    /// deletion is committed by marking partition 0, the first it marks (the others'
    /// marks are checked by every call on them).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed) || self.partitions.first().is_some_and(PartitionLog::is_deleted)
    }

    fn check_open(&self) -> Result<()> {
        self.born.check()?;
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        if self.deleted.load(Ordering::Relaxed) {
            return Err(Error::TopicNotFound(self.name.clone()));
        }
        Ok(())
    }

    /// Partition `p`.
    ///
    /// # Errors
    /// [`Error::Closed`] after the store closed, [`Error::TopicNotFound`] after the topic
    /// was deleted, [`Error::PartitionNotFound`] for a number out of range.
    #[inline]
    pub fn partition(&self, p: u32) -> Result<&PartitionLog> {
        // Every call on a partition comes through here, so the checks are one branch: all
        // flags are read (with `|`, not `||`) and the precise error is found out of line.
        // The append itself checks again under the lock. Of the shared marks only partition
        // 0's is read: a deletion marks it first (its commit point), so no partition carries
        // a mark that partition 0 lacks, and every partition of a topic whose deletion is
        // under way fails (one chain of loads fewer than also reading `p`'s own mark: ~8%
        // of the bare `end_offset(0)` call on the dev VM).
        match self.partitions.get(p as usize) {
            Some(log)
                if !(self.born.is_inherited_fast()
                    | self.closed.load(Ordering::Relaxed)
                    | self.deleted.load(Ordering::Relaxed)
                    | self.partitions[0].is_deleted()) =>
            {
                Ok(log)
            }
            _ => Err(self.partition_error(p)),
        }
    }

    /// Why [`Self::partition`] refused `p`.
    #[cold]
    #[inline(never)]
    fn partition_error(&self, p: u32) -> Error {
        if let Err(e) = self.check_open() {
            return e;
        }
        if p >= self.partition_count() {
            return Error::PartitionNotFound {
                topic: self.name.clone(),
                partition: p,
                count: self.partition_count(),
            };
        }
        Error::TopicNotFound(self.name.clone())
    }

    /// The partition an append should go to: the one asked for, else the key's hash
    /// (Kafka's partitioner), else round-robin.
    ///
    /// # Errors
    /// As [`Self::partition`].
    pub fn choose(&self, partition: Option<u32>, key: Option<&[u8]>) -> Result<&PartitionLog> {
        let p = match (partition, key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, self.partition_count()),
            // One partition: no shared counter to bump (an atomic add on every append).
            (None, None) if self.partitions.len() == 1 => 0,
            (None, None) => self.next_partition.fetch_add(1, Ordering::Relaxed) % self.partition_count(),
        };
        self.partition(p)
    }

    /// Fails in a process forked after the store was opened (for calls that are harmless
    /// after a close, such as [`Self::wait`], but must not be made in a child).
    ///
    /// # Errors
    /// [`Error::Forked`].
    pub fn check_not_inherited(&self) -> Result<()> {
        self.born.check()
    }

    /// A ticket for [`Self::wait`]: take it before looking for new messages.
    pub fn ticket(&self) -> u32 {
        self.doorbell.ticket()
    }

    /// Sleeps until any partition of the topic is appended to (by any process) after
    /// `ticket` was taken, or `timeout` passes. Returns whether something was appended.
    pub fn wait(&self, ticket: u32, timeout: Option<std::time::Duration>) -> bool {
        self.doorbell.wait(ticket, timeout)
    }

    /// As [`Self::wait`], spinning on the doorbell for at most `spin` before sleeping (a
    /// waiter that expects a message within microseconds sees it without a futex wake-up;
    /// see [`Doorbell::wait_spin`]).
    pub fn wait_spin(
        &self,
        ticket: u32,
        timeout: Option<std::time::Duration>,
        spin: std::time::Duration,
    ) -> bool {
        self.doorbell.wait_spin(ticket, timeout, spin)
    }

    /// The topic's doorbell, for the waker (asyncio) to sleep on with other words.
    pub fn doorbell(&self) -> Arc<dyn crate::waker::Bell> {
        self.doorbell.clone()
    }

    /// All partitions.
    ///
    /// # Errors
    /// As [`Self::partition`].
    pub fn partitions(&self) -> Result<&[PartitionLog]> {
        self.check_open()?;
        if self.partitions.iter().any(PartitionLog::is_deleted) {
            return Err(Error::TopicNotFound(self.name.clone()));
        }
        Ok(&self.partitions)
    }
}

struct Shared {
    dir: PathBuf,
    /// This process's settings; the file-shaping fields hold the store's stored settings.
    config: LogConfig,
    /// The store's stored settings: the defaults of new topics and of topics that predate
    /// stored settings.
    defaults: TopicSettings,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    closed: Arc<AtomicBool>,
    stop: (Mutex<bool>, Condvar),
    /// In a process forked after the open, every call fails with [`Error::Forked`] and
    /// closing or dropping touches nothing (see `shm::fork`).
    born: Born,
    /// State logs opened through the store, synced with its partitions.
    state_logs: Mutex<Vec<Weak<StateLog>>>,
}

/// An open store.
pub struct Store {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
    cleaner: Mutex<Option<JoinHandle<()>>>,
}

fn validate_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "invalid topic name {name:?}: use 1-249 characters from [A-Za-z0-9._-], not starting with '.'"
        )))
    }
}

/// Checks a topic name given to a public operation that creates, deletes or alters a
/// topic: a valid name that is not reserved for the store's internal topics.
///
/// # Errors
/// [`Error::InvalidConfig`] naming what is wrong.
pub fn check_public_topic_name(name: &str) -> Result<()> {
    validate_topic_name(name)?;
    if name.starts_with(INTERNAL_PREFIX) {
        return Err(Error::InvalidConfig(format!(
            "topic name {name:?} is reserved: names starting with {INTERNAL_PREFIX:?} are for the \
             store's internal topics"
        )));
    }
    Ok(())
}

/// A random 64-bit id, never [`LEGACY_INCARNATION`]. The standard library's hasher keys
/// come from the operating system's random source once per process; the clock, the
/// process id and a counter make ids of one process differ.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    match h.finish() {
        LEGACY_INCARNATION => 1,
        id => id,
    }
}

/// Partition count and incarnation from a `topic.meta`. Lines other than these two belong
/// to settings, which are read elsewhere.
fn parse_meta(text: &str) -> Option<(u32, u64)> {
    let mut lines = text.lines();
    let count: u32 = lines
        .next()?
        .strip_prefix("partitions ")?
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=MAX_PARTITIONS).contains(n))?;
    let mut incarnation = LEGACY_INCARNATION;
    for line in lines {
        if let Some(hex) = line.strip_prefix("incarnation ") {
            incarnation = u64::from_str_radix(hex.trim(), 16).ok().filter(|&i| i != LEGACY_INCARNATION)?;
        }
    }
    Some((count, incarnation))
}

/// An exclusive `flock` on a file or directory, released when dropped.
struct Flock {
    _file: File,
}

impl Flock {
    /// Waits for the lock on `path` (a file, created if missing).
    fn file(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        flock(&file, FlockOperation::LockExclusive).map_err(|e| Error::io("flock", path, e.into()))?;
        Ok(Flock { _file: file })
    }

    /// The lock on directory `path` if nobody holds it now (`None` otherwise).
    fn try_dir(path: &Path) -> std::io::Result<Option<Self>> {
        Self::try_open(File::open(path)?)
    }

    fn try_open(file: File) -> std::io::Result<Option<Self>> {
        Ok(flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok().then_some(Flock { _file: file }))
    }
}

/// Removes what interrupted creations and deletions left in `topics` (directories named
/// with [`TMP_PREFIX`] or [`DELETED_PREFIX`]), except those a live process is still working
/// in: it holds their `flock`, taken (under the topics lock, which this takes too) as it
/// made them. Skipped while another process holds the topics lock.
fn remove_leftovers(topics: &Path) {
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(topics.join(TOPICS_LOCK));
    let Ok(Some(_topics_lock)) = lock.and_then(Flock::try_open) else { return };
    let Ok(entries) = std::fs::read_dir(topics) else { return };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(TMP_PREFIX) || name.starts_with(DELETED_PREFIX)) {
            continue;
        }
        let path = entry.path();
        if let Ok(Some(_held)) = Flock::try_dir(&path) {
            // Best effort: whatever stays is tried again at the next open.
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn unique_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

impl Store {
    /// Opens the store in `dir`, creating it if the directory is missing or empty.
    /// `config` gives this process's settings (fsync, rolling by age, producer expiry);
    /// the settings that shape files are the store's stored ones, and `requested` (the
    /// opener's keywords) must match them, or on creation become them.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad settings, a requested setting that differs from the
    /// stored one, or a directory that holds something other than a tidelog store; I/O
    /// errors.
    pub fn open(dir: &Path, config: LogConfig, requested: &[(String, Value)]) -> Result<Self> {
        let born = Born::now();
        config.validate()?;
        // Checked before anything is created.
        TopicSettings::default().with(requested, true)?;
        crate::fs::create_dir_all_durably(dir)?;
        let marker = dir.join(MARKER);
        let fresh = match std::fs::read_to_string(&marker) {
            Ok(text) if text == MARKER_TEXT => false,
            Ok(_) => {
                return Err(Error::InvalidConfig(format!(
                    "{} has an unknown store format marker (written by a newer tidelog?)",
                    marker.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::check_empty(dir)?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Error::InvalidConfig(format!(
                    "{} is not a tidelog store format marker: it does not hold text (damaged?)",
                    marker.display()
                )))
            }
            Err(e) => return Err(Error::io("read", &marker, e)),
        };
        // Before the marker: a store with a marker always has its settings, except one made
        // by an older version, which this records (see `settings::store_settings`).
        let defaults = settings::store_settings(dir, requested)?;
        if fresh {
            // Synced before the rename and the directory after it (whatever the fsync
            // policy, once per store): a power loss must not leave the settings without a
            // marker, or an empty marker, either of which makes the store refuse to open.
            let tmp = dir.join(format!("{MARKER}.{}{TMP_SUFFIX}", unique_suffix()));
            let written = (|| {
                let mut file = File::create(&tmp)?;
                std::io::Write::write_all(&mut file, MARKER_TEXT.as_bytes())?;
                file.sync_all()
            })();
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io("write", &tmp, e));
            }
            std::fs::rename(&tmp, dir.join(MARKER)).map_err(|e| Error::io("rename", dir, e))?;
        }
        let config = config.with_settings(&defaults);
        let topics = crate::paths::topics_dir(dir);
        let made_topics = !topics.is_dir();
        if made_topics {
            std::fs::create_dir_all(&topics).map_err(|e| Error::io("create directory", dir, e))?;
        }
        // One sync of the store directory makes both the marker and `topics/` durable.
        if fresh || made_topics {
            crate::fs::sync_dir(dir)?;
        }
        remove_leftovers(&crate::paths::topics_dir(dir));
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            config,
            defaults,
            topics: Mutex::new(HashMap::new()),
            closed: Arc::new(AtomicBool::new(false)),
            stop: (Mutex::new(false), Condvar::new()),
            born,
            state_logs: Mutex::new(Vec::new()),
        });
        let syncer = match shared.config.fsync {
            FsyncPolicy::Interval(every) => {
                let weak = Arc::downgrade(&shared);
                Some(
                    std::thread::Builder::new()
                        .name("tidelog-fsync".into())
                        .spawn(move || sync_loop(&weak, every))
                        .map_err(|e| Error::io("spawn fsync thread", dir, e))?,
                )
            }
            _ => None,
        };
        // The cleaner starts with the first compacted topic this store opens, creates or
        // alters (`want_cleaner`): most stores have none, and a thread started and joined
        // on every open and close was a tenth of a short-lived process's reopen.
        let store = Store { shared, syncer: Mutex::new(syncer), cleaner: Mutex::new(None) };
        store.convert_legacy_queues()?;
        Ok(store)
    }

    /// Converts the work-queue state the first version of work queues kept in
    /// [`queue_legacy::LEGACY_TOPIC`], then deletes the topic (see [`crate::queue_legacy`]).
    /// A store without the topic costs one `stat`.
    fn convert_legacy_queues(&self) -> Result<()> {
        let legacy = queue_legacy::LEGACY_TOPIC;
        if !self.topic_dir(legacy).join(TOPIC_META).exists() {
            return Ok(());
        }
        let _topics_lock = self.lock_topics()?;
        let (count, incarnation) = match self.read_meta(legacy) {
            Ok(meta) => meta,
            Err(Error::TopicNotFound(_)) => return Ok(()), // converted by another process
            Err(e) => return Err(e),
        };
        if !self.marked_deleted(legacy)? {
            let queues = queue_legacy::read(&*self.topic(legacy)?)?;
            let root = self.shared.dir.join(queue_legacy::WORK_QUEUES_DIR);
            for ((group, topic), queue) in &queues {
                // Only existing topics: the others' queues went with them.
                if validate_topic_name(topic).is_err() || self.marked_deleted(topic).unwrap_or(true) {
                    continue;
                }
                let partitions = match self.read_meta(topic) {
                    Ok((partitions, _)) => partitions,
                    Err(Error::TopicNotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                let dir = root.join(topic);
                let name = crate::group::file_name(group);
                if dir.join(queue_legacy::NO_LEGACY).exists() || StatePaths::new(&dir, &name).is_err() {
                    continue; // a deleted topic's, or a name no queue could have
                }
                StateLog::open(&dir, &name, self.shared.config.fsync)?.seed(&queue.records(partitions))?;
            }
        }
        // Every queue holds its state: the topic is read no more.
        self.finish_deletion(legacy, count, incarnation)?;
        if let Ok(dirs) = std::fs::read_dir(self.shared.dir.join(queue_legacy::WORK_QUEUES_DIR)) {
            for dir in dirs.flatten() {
                let _ = std::fs::remove_file(dir.path().join(queue_legacy::NO_LEGACY));
            }
        }
        Ok(())
    }

    fn check_empty(dir: &Path) -> Result<()> {
        let foreign: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // A settings file without a marker: a creation that stopped in between.
            .filter(|n| !n.ends_with(TMP_SUFFIX) && n != settings::STORE_SETTINGS_FILE)
            .collect();
        if !foreign.is_empty() {
            let mut shown = foreign;
            shown.sort();
            shown.truncate(3);
            return Err(Error::InvalidConfig(format!(
                "{} is not empty and is not a tidelog store (found {})",
                dir.display(),
                shown.join(", ")
            )));
        }
        Ok(())
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// This process's settings; the file-shaping fields are the store's stored settings
    /// (each topic has its own, see [`Topic::config`]).
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// The store's stored settings: the defaults for new topics.
    pub fn defaults(&self) -> &TopicSettings {
        &self.shared.defaults
    }

    /// Fails unless the store is open and was opened in this process.
    ///
    /// # Errors
    /// [`Error::Forked`] in a process forked after the open, [`Error::Closed`] after
    /// [`Self::close`].
    pub fn check_open(&self) -> Result<()> {
        self.shared.born.check()?;
        if self.shared.closed.load(Ordering::Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// True in a process forked after the store was opened: nothing made from it may be
    /// used, closed or dropped to any effect there.
    pub fn is_inherited(&self) -> bool {
        self.shared.born.is_inherited()
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        crate::paths::topic_dir(&self.shared.dir, name)
    }

    fn topics_dir(&self) -> PathBuf {
        crate::paths::topics_dir(&self.shared.dir)
    }

    /// Serialises creating and deleting topics across processes, so finishing a deletion
    /// that a dead process left half done cannot remove a topic created meanwhile.
    fn lock_topics(&self) -> Result<Flock> {
        Flock::file(&self.topics_dir().join(TOPICS_LOCK))
    }

    /// Creates a topic with `partitions` partitions and the store's settings overridden by
    /// `settings`, stored with the topic. With `exist_ok`, an existing topic with the same
    /// partition count is returned instead (with its own settings; requested settings that
    /// differ from them are an error).
    ///
    /// # Errors
    /// [`Error::TopicExists`], [`Error::InvalidConfig`] (also for a name reserved for
    /// internal topics), I/O errors.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        exist_ok: bool,
        settings: &[(String, Value)],
    ) -> Result<Arc<Topic>> {
        self.check_open()?;
        check_public_topic_name(name)?;
        self.create(name, partitions, exist_ok, settings)
    }

    /// Creates one of the store's internal topics (a name starting with
    /// [`INTERNAL_PREFIX`]), which [`Self::create_topic`] refuses; otherwise the same.
    ///
    /// # Errors
    /// As [`Self::create_topic`]; [`Error::InvalidConfig`] for a name that is not internal.
    pub fn create_internal_topic(&self, name: &str, partitions: u32, exist_ok: bool) -> Result<Arc<Topic>> {
        self.create_internal_topic_with(name, partitions, exist_ok, &[])
    }

    /// As [`Self::create_internal_topic`], with the store's settings overridden by
    /// `settings` (which override the internal topics' `compression="none"` too).
    ///
    /// # Errors
    /// As [`Self::create_internal_topic`].
    pub fn create_internal_topic_with(
        &self,
        name: &str,
        partitions: u32,
        exist_ok: bool,
        settings: &[(String, Value)],
    ) -> Result<Arc<Topic>> {
        self.check_open()?;
        validate_topic_name(name)?;
        if !name.starts_with(INTERNAL_PREFIX) {
            return Err(Error::InvalidConfig(format!(
                "{name:?} is not an internal topic name (those start with {INTERNAL_PREFIX:?})"
            )));
        }
        // Internal records (a commit, a state change) are written one or a few at a time:
        // compressing them would cost every write and save nothing, whatever the store's
        // default codec for user topics (Kafka's `offsets.topic.compression.codec` is none).
        let mut all = vec![("compression".to_owned(), Value::Text("none".into()))];
        all.extend(settings.iter().cloned());
        self.create(name, partitions, exist_ok, &all)
    }

    fn create(
        &self,
        name: &str,
        partitions: u32,
        exist_ok: bool,
        settings: &[(String, Value)],
    ) -> Result<Arc<Topic>> {
        let topic_settings = self.shared.defaults.with(settings, true)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(Error::InvalidConfig(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        let topics = self.topics_dir();
        let tmp = topics.join(format!("{TMP_PREFIX}{:016x}", random_id()));
        let mut held = None;
        let prepared = (|| -> std::io::Result<()> {
            {
                // Made and locked under the topics lock, and held until the rename: a
                // concurrent open's cleanup of leftovers leaves the directory alone.
                // The lock's own errno (a read-only store: EROFS) is what the caller sees.
                let _topics_lock = self.lock_topics().map_err(|e| match e {
                    Error::Io { source, .. } => source,
                    other => std::io::Error::other(other),
                })?;
                std::fs::create_dir(&tmp)?;
                held = Flock::try_dir(&tmp)?;
            }
            let meta = format!(
                "partitions {partitions}\nincarnation {:016x}\n{}",
                random_id(),
                topic_settings.to_lines()
            );
            let mut file = std::fs::File::create(tmp.join(TOPIC_META))?;
            std::io::Write::write_all(&mut file, meta.as_bytes())?;
            // The rename below publishes the topic: its settings must be on disk first.
            file.sync_all()?;
            for p in 0..partitions {
                std::fs::create_dir(partition_in(&tmp, p))?;
            }
            if self.shared.config.fsync != FsyncPolicy::Never {
                std::fs::File::open(&tmp)?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = prepared {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io("create topic", &tmp, e));
        }
        let renamed = {
            let _topics_lock = self.lock_topics()?;
            self.install(name, &tmp)
        };
        drop(held);
        match renamed {
            Ok(()) => {
                if self.shared.config.fsync != FsyncPolicy::Never {
                    crate::segment::sync_dir(&topics)?;
                }
                self.topic(name)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                let Error::TopicExists(_) = e else { return Err(e) };
                if !exist_ok {
                    return Err(e);
                }
                let topic = self.topic(name)?;
                if topic.partition_count() != partitions {
                    return Err(Error::TopicExists(format!(
                        "{name}\" with {} partitions, not {partitions} as requested; \"{name}",
                        topic.partition_count()
                    )));
                }
                // Settings asked for are never dropped silently: the existing topic must
                // have them (alter_topic changes them).
                let existing = topic.config()?;
                for (key, _) in settings {
                    let (have, want) = (existing.get(key)?, topic_settings.get(key)?);
                    if have != want {
                        return Err(Error::TopicExists(format!(
                            "{name}\" with {key}={have}, not {want} as requested; \"{name}"
                        )));
                    }
                }
                Ok(topic)
            }
        }
    }

    /// Renames the prepared directory `tmp` to topic `name`, first finishing the deletion
    /// of a topic of that name whose partitions carry the deleted mark. Called with the
    /// topics lock held.
    fn install(&self, name: &str, tmp: &Path) -> Result<()> {
        let dir = self.topic_dir(name);
        if dir.join(TOPIC_META).exists() {
            match self.read_meta(name) {
                Ok((count, incarnation)) => {
                    if !self.marked_deleted(name)? {
                        return Err(Error::TopicExists(name.to_owned()));
                    }
                    self.finish_deletion(name, count, incarnation)?;
                }
                Err(Error::TopicNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if dir.exists() {
            // Without topic.meta the directory is no topic (a partition directory made by
            // an older version racing a deletion): an empty one is replaced by the rename.
            if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
                return Err(Error::TopicExists(name.to_owned()));
            }
        }
        match std::fs::rename(tmp, &dir) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Err(Error::TopicExists(name.to_owned()))
            }
            Err(e) => Err(Error::io("create topic", &dir, e)),
        }
    }

    /// Opens an existing topic.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], corruption or I/O errors from opening its partitions.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.check_open()?;
        let mut topics = self.shared.topics.lock().map_err(|_| Error::Closed)?;
        if let Some(t) = topics.get(name) {
            // A deleted topic's partitions carry the mark before its directory goes, so a
            // handle cached before a deletion (and re-creation) elsewhere is never returned.
            if t.is_deleted() || !self.topic_dir(name).exists() {
                t.deleted.store(true, Ordering::Relaxed);
                topics.remove(name);
            } else {
                return Ok(t.clone());
            }
        }
        let topic = self.open_topic(name)?;
        topics.insert(name.to_owned(), topic.clone());
        drop(topics);
        if topic.settings().compacted() {
            self.want_cleaner()?;
        }
        Ok(topic)
    }

    /// Starts the background cleaner (see `clean_loop`) if the store has one configured
    /// and it is not running yet. Not in a forked child, nor once the store is closed.
    fn want_cleaner(&self) -> Result<()> {
        let Some(ms) = self.shared.config.cleaner.interval_ms else { return Ok(()) };
        let mut cleaner = self.cleaner.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock `close` takes the handle under, after setting `closed`:
        // a cleaner is never started that `close` would not join.
        if cleaner.is_some() || self.is_closed() {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.shared);
        let every = std::time::Duration::from_millis(ms);
        let handle = std::thread::Builder::new()
            .name("tidelog-cleaner".into())
            .spawn(move || clean_loop(&weak, every))
            .map_err(|e| Error::io("spawn cleaner thread", &self.shared.dir, e))?;
        *cleaner = Some(handle);
        Ok(())
    }

    fn read_meta(&self, name: &str) -> Result<(u32, u64)> {
        let meta_path = self.topic_dir(name).join(TOPIC_META);
        let meta = match std::fs::read_to_string(&meta_path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::TopicNotFound(name.to_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // Damage, not an I/O failure: reported as the unreadable metadata below is.
                return Err(Error::Corrupt {
                    path: meta_path,
                    position: 0,
                    offset: 0,
                    reason: "topic metadata is not UTF-8 text".into(),
                });
            }
            Err(e) => return Err(Error::io("read", &meta_path, e)),
        };
        parse_meta(&meta).ok_or_else(|| Error::Corrupt {
            path: meta_path.clone(),
            position: 0,
            offset: 0,
            reason: format!("unreadable topic metadata {meta:?}"),
        })
    }

    /// Opens topic `name` from its directory, bypassing the cache. Its partitions are
    /// opened by path, so `topic.meta` is read again afterwards: the same incarnation
    /// before and after means every partition opened belongs to it (an incarnation is
    /// never reused), else the topic was deleted (and perhaps created again) meanwhile and
    /// the open starts over. A topic whose partitions carry the deleted mark is not found.
    fn open_topic(&self, name: &str) -> Result<Arc<Topic>> {
        if validate_topic_name(name).is_err() {
            return Err(Error::TopicNotFound(name.to_owned()));
        }
        let dir = self.topic_dir(name);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (count, incarnation) = self.read_meta(name)?;
            let opened = (|| -> Result<Topic> {
                let (settings, meta) = SharedSettings::open(&dir, &self.shared.defaults)?;
                let settings = Arc::new(settings);
                let config = self.shared.config.with_settings(&meta.settings);
                let doorbell = Arc::new(Doorbell::open(&dir.join(DOORBELL))?);
                let partitions = (0..count)
                    .map(|p| {
                        PartitionLog::open_existing(
                            &partition_in(&dir, p),
                            name,
                            p,
                            config.clone(),
                            settings.clone(),
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                for p in &partitions {
                    p.attach_doorbell(doorbell.clone());
                }
                Ok(Topic {
                    name: name.to_owned(),
                    incarnation,
                    partitions,
                    doorbell,
                    next_partition: AtomicU32::new(0),
                    closed: self.shared.closed.clone(),
                    deleted: AtomicBool::new(false),
                    born: self.shared.born,
                    settings,
                })
            })();
            let same = match self.read_meta(name) {
                Ok((_, now)) => now == incarnation,
                Err(Error::TopicNotFound(_)) => false,
                Err(e) => return Err(e),
            };
            if !same {
                // Raced with a deletion. A few tries: after that a name deleted and created
                // again that fast reads as not found, which it was a moment ago.
                if attempts < 5 {
                    continue;
                }
                return Err(Error::TopicNotFound(name.to_owned()));
            }
            // With the same incarnation in place, a failure is the topic's own (a missing
            // partition directory is damage, not "not found").
            let topic = opened?;
            if topic.is_deleted() {
                return Err(Error::TopicNotFound(name.to_owned()));
            }
            return Ok(Arc::new(topic));
        }
    }

    /// Names of all topics, sorted. A topic being deleted is left out as soon as its first
    /// partition carries the deleted mark (deletion marks partitions in order), as
    /// [`Self::topic`] no longer opens it from then on.
    ///
    /// # Errors
    /// I/O errors listing the directory.
    pub fn topics(&self) -> Result<Vec<String>> {
        self.check_open()?;
        let dir = self.topics_dir();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io("list", &dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(TOPIC_META).exists())
            .filter(|e| !PartitionLog::is_deleted_at(&partition_in(&e.path(), 0)).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Opens (and so recovers) every topic now, so that damage recovery must not guess
    /// about is reported when the store is opened rather than at a topic's first use. A
    /// topic deleted meanwhile (by another process) is skipped; one whose deletion a dead
    /// process left unfinished (marked, its directory and state still there) is finished.
    ///
    /// # Errors
    /// As [`Self::topic`], for the first topic that cannot be opened.
    pub fn open_every_topic(&self) -> Result<()> {
        self.check_open()?;
        let dir = self.topics_dir();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else { continue };
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match self.topic(name) {
                Ok(_) => {}
                Err(Error::TopicNotFound(_)) => {
                    // Best effort: the deletion is committed whatever happens here, and the
                    // next create_topic or delete_topic of the name finishes it too.
                    let _ = self.finish_unfinished_deletion(name);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes a topic and all its data, in every process, with the state kept beside it
    /// (its consumer groups and work queues, [`crate::paths::topic_state_dirs`]): see the
    /// module documentation. One atomic operation: a crash at any step leaves either the
    /// whole topic, or a deleted topic whose leftovers the next `create_topic` or
    /// `delete_topic` of the name removes before anything can see them. Returns the
    /// incarnation deleted, which state kept in internal topics (commits) names.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], [`Error::InvalidConfig`] for a name reserved for internal
    /// topics, I/O errors (before the topic is marked deleted nothing changed; after, it is
    /// deleted all the same and the leftovers are removed later).
    pub fn delete_topic(&self, name: &str) -> Result<u64> {
        self.check_open()?;
        if validate_topic_name(name).is_err() {
            // No topic can have this name.
            return Err(Error::TopicNotFound(name.to_owned()));
        }
        check_public_topic_name(name)?;
        let _topics_lock = self.lock_topics()?;
        let (count, incarnation) = self.read_meta(name)?;
        self.finish_deletion(name, count, incarnation)?;
        Ok(incarnation)
    }

    /// Finishes the deletion of topic `name` if it is marked deleted but still there.
    fn finish_unfinished_deletion(&self, name: &str) -> Result<()> {
        if validate_topic_name(name).is_err() || !self.marked_deleted(name)? {
            return Ok(());
        }
        let _topics_lock = self.lock_topics()?;
        // Checked again under the lock: another process may have finished it, or created
        // the name anew, meanwhile.
        if !self.topic_dir(name).join(TOPIC_META).exists() || !self.marked_deleted(name)? {
            return Ok(());
        }
        let (count, incarnation) = self.read_meta(name)?;
        self.finish_deletion(name, count, incarnation)
    }

    /// Whether topic `name`'s deletion was committed (its partition 0 carries the mark).
    fn marked_deleted(&self, name: &str) -> Result<bool> {
        PartitionLog::is_deleted_at(&partition_in(&self.topic_dir(name), 0))
    }

    /// Deletes topic `name` (of `count` partitions and `incarnation`, as its `topic.meta`
    /// says), or finishes deleting it: marks every partition deleted (partition 0's mark is
    /// the commit point), then moves the topic's state directories and last the topic
    /// directory into a staging directory and removes that. The marked topic directory
    /// stays until the end: it is the record of an unfinished deletion, which the next
    /// `create_topic` or `delete_topic` of the name finishes (under the topics lock, before
    /// anything can see the old state), so a crash at any step leaves the whole topic (not
    /// marked yet) or a deleted one. Moving the state first and marking after, a crash
    /// between the two would lose the state of a topic that lives on.
    ///
    /// The partitions are marked through their control blocks, without opening their logs:
    /// no recovery to wait for, and a damaged topic can be deleted. Called with the topics
    /// lock held.
    fn finish_deletion(&self, name: &str, count: u32, incarnation: u64) -> Result<()> {
        let dir = self.topic_dir(name);
        // Made first: if the staging directory cannot be made (a full or read-only disk),
        // nothing happened. Its flock keeps a concurrent open's cleanup away until the end.
        let staging = self.topics_dir().join(format!("{DELETED_PREFIX}{:016x}", random_id()));
        std::fs::create_dir(&staging).map_err(|e| Error::io("create directory", &staging, e))?;
        let held = Flock::try_dir(&staging).map_err(|e| Error::io("flock", &staging, e))?;
        let give_up = |e: Error| {
            let _ = std::fs::remove_dir_all(&staging);
            e
        };
        // Partition 0's mark is the commit point (`Topic::is_deleted` and `topics` look at
        // it alone): if it cannot be set, nothing happened.
        PartitionLog::mark_deleted_at(&partition_in(&dir, 0)).map_err(give_up)?;
        // From here on the topic is deleted for every process, whatever fails below.
        {
            let mut cached = self.shared.topics.lock().map_err(|_| Error::Closed)?;
            if cached.get(name).is_some_and(|t| t.incarnation == incarnation) {
                if let Some(t) = cached.remove(name) {
                    t.deleted.store(true, Ordering::Relaxed);
                }
            }
        }
        let mut failed = None;
        for p in 1..count {
            if let Err(e) = PartitionLog::mark_deleted_at(&partition_in(&dir, p)) {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            // An unmarked partition's appends only see partition 0's mark before they take
            // its lock, so its directory stays where it is (never renamed under a writer):
            // the next delete_topic or create_topic of the name marks it and finishes.
            return Err(give_up(e));
        }
        let durable = self.shared.config.fsync != FsyncPolicy::Never;
        for (i, state) in crate::paths::topic_state_dirs(&self.shared.dir, name).iter().enumerate() {
            match crate::fs::rename(state, &staging.join(format!("state-{i}"))) {
                Ok(()) => {
                    if durable {
                        if let Some(parent) = state.parent() {
                            crate::segment::sync_dir(parent).map_err(give_up)?;
                        }
                    }
                }
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                // Deleted all the same (marked); a later create_topic of the name finishes.
                Err(e) => return Err(give_up(e)),
            }
        }
        match crate::fs::rename(&dir, &staging.join("topic")) {
            Ok(()) => {}
            // Removed by hand meanwhile: nothing left to rename.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(give_up(e)),
        }
        if durable {
            crate::segment::sync_dir(&self.topics_dir())?;
        }
        // The deletion is done; what the removal leaves is removed by a later open.
        let _ = std::fs::remove_dir_all(&staging);
        drop(held);
        Ok(())
    }

    /// Opens the state log `name` in `dir` (see [`crate::statelog`]) with the store's fsync
    /// policy: with `interval`, the store's background syncer syncs it as it syncs the
    /// partitions, and [`Self::sync`] and [`Self::close`] sync it too.
    ///
    /// # Errors
    /// [`Error::Closed`]; as [`StateLog::open`].
    pub fn state_log(&self, dir: &Path, name: &str) -> Result<Arc<StateLog>> {
        self.check_open()?;
        let log = Arc::new(StateLog::open(dir, name, self.shared.config.fsync)?);
        let mut logs = self.shared.state_logs.lock().map_err(|_| Error::Closed)?;
        logs.retain(|l| l.strong_count() > 0);
        logs.push(Arc::downgrade(&log));
        Ok(log)
    }

    /// Opens the membership state of consumer group `group` on topic `name` (see
    /// [`crate::group`]) with the store's fsync policy (with `interval`, synced by the
    /// background syncer). The handle refuses changes once the topic is deleted.
    ///
    /// # Errors
    /// [`Error::Closed`], [`Error::TopicNotFound`]; as [`Group::open`].
    pub fn group(&self, name: &str, group: &str) -> Result<Group> {
        let topic = self.topic(name)?;
        let paths = GroupPaths::new(&self.shared.dir, name, group)?;
        let log = self.state_log(&paths.dir, &paths.name)?;
        Group::with_log(paths, log, Some(topic))
    }

    /// Changes settings of topic `name` for every process at once: stored in its
    /// `topic.meta` and seen by the next append, roll or retention pass anywhere. Changes
    /// of `segment_bytes` and `index_interval_bytes` shape segments created afterwards.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`]; [`Error::InvalidConfig`] for a reserved (`__`) name or a
    /// bad setting (nothing is changed); I/O errors.
    pub fn alter_topic(&self, name: &str, changes: &[(String, Value)]) -> Result<TopicSettings> {
        self.check_open()?;
        check_public_topic_name(name)?;
        if validate_topic_name(name).is_err() || !self.topic_dir(name).join(TOPIC_META).exists() {
            return Err(Error::TopicNotFound(name.to_owned()));
        }
        let altered = match settings::alter(&self.topic_dir(name), &self.shared.defaults, changes) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::TopicNotFound(name.to_owned()))
            }
            other => other,
        }?;
        if altered.compacts() {
            self.want_cleaner()?;
        }
        Ok(altered)
    }

    /// As [`Self::alter_topic`], for one of the store's internal topics (which
    /// [`Self::alter_topic`] refuses): the core changes their settings itself.
    ///
    /// # Errors
    /// As [`Self::alter_topic`]; [`Error::InvalidConfig`] for a name that is not internal.
    pub fn alter_internal_topic(&self, name: &str, changes: &[(String, Value)]) -> Result<TopicSettings> {
        self.check_open()?;
        validate_topic_name(name)?;
        if !name.starts_with(INTERNAL_PREFIX) {
            return Err(Error::InvalidConfig(format!(
                "{name:?} is not an internal topic name (those start with {INTERNAL_PREFIX:?})"
            )));
        }
        if !self.topic_dir(name).join(TOPIC_META).exists() {
            return Err(Error::TopicNotFound(name.to_owned()));
        }
        let altered = settings::alter(&self.topic_dir(name), &self.shared.defaults, changes)?;
        if altered.compacts() {
            self.want_cleaner()?;
        }
        Ok(altered)
    }

    /// Syncs every open partition (and state log) to disk.
    ///
    /// # Errors
    /// The first sync failure.
    pub fn sync(&self) -> Result<()> {
        self.check_open()?;
        sync_all(&self.shared)
    }

    /// Closes the store: syncs (for the `interval` policy), stops the background syncer,
    /// closes every partition it opened (trimming the pre-allocated files of those no other
    /// handle has open, giving up its locks), and makes every topic handle refuse further
    /// use, also handles still referenced. Closing twice is harmless.
    ///
    /// In a process forked after the open it only marks the store closed: no sync, no
    /// trim, no lock or mutex is touched (they are the parent's, and a parent thread may
    /// have held one at the fork).
    ///
    /// # Errors
    /// A final sync failure, or the first failure closing a partition.
    pub fn close(&self) -> Result<()> {
        if self.is_inherited() {
            self.shared.closed.store(true, Ordering::SeqCst);
            return Ok(());
        }
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        {
            let (lock, cv) = &self.shared.stop;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(handle) = self.syncer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
        // A compaction in progress stops between segments (it watches `closed`).
        if let Some(handle) = self.cleaner.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
        let mut result =
            if self.shared.config.fsync == FsyncPolicy::Never { Ok(()) } else { sync_all(&self.shared) };
        let topics: Vec<Arc<Topic>> =
            self.shared.topics.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, t)| t).collect();
        // Closed now rather than when the last reference goes: a `Topic` the application
        // still holds would otherwise keep the files untrimmed and the partitions locked.
        for topic in topics {
            for p in &topic.partitions {
                let closed = p.close();
                if result.is_ok() {
                    result = closed;
                }
            }
        }
        result
    }

    /// True once [`Self::close`] ran, and always in a process forked after the open.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed) || self.shared.born.is_inherited_fast()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.is_inherited() {
            self.shared.closed.store(true, Ordering::SeqCst);
            // The syncer thread does not exist in this process: detaching its handle would
            // touch a thread descriptor the C library may have reused since the fork.
            if let Some(handle) = self.syncer.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                std::mem::forget(handle);
            }
            if let Some(handle) = self.cleaner.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                std::mem::forget(handle);
            }
            return;
        }
        let _ = self.close();
    }
}

fn sync_all(shared: &Shared) -> Result<()> {
    let topics: Vec<Arc<Topic>> =
        shared.topics.lock().map_err(|_| Error::Closed)?.values().cloned().collect();
    for topic in topics {
        for p in &topic.partitions {
            p.sync()?;
        }
    }
    let logs: Vec<Arc<StateLog>> =
        shared.state_logs.lock().map_err(|_| Error::Closed)?.iter().filter_map(Weak::upgrade).collect();
    for log in logs {
        log.sync()?;
    }
    Ok(())
}

/// Waits `every`, or less if the store stops meanwhile; true once it has stopped.
fn stopped_after(shared: &Shared, every: std::time::Duration) -> bool {
    let (lock, cv) = &shared.stop;
    let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    let (stopped, _) = cv.wait_timeout_while(stopped, every, |s| !*s).unwrap_or_else(|e| e.into_inner());
    *stopped
}

fn sync_loop(shared: &Weak<Shared>, every: std::time::Duration) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if stopped_after(&shared, every) {
            return;
        }
        // A failed background sync is never retried into a success: the partition refuses
        // further appends and syncs (see `crate::fs`), and `close` reports the failure.
        let _ = sync_all(&shared);
    }
}

/// The background cleaner: every `every`, compacts the partitions of the compacted topics
/// this process has open whose dirty ratio reached `min_dirty_ratio`, within the byte
/// budget, skipping a partition another cleaner (in any process) is working on. Appends go
/// on meanwhile (compaction holds the append lock only to plan and to swap), and closing
/// the store stops a compaction between segments. A forked child has no such thread.
///
/// It runs from the first compacted topic the store opens, creates or alters until the store
/// closes. A topic another process turns compacted while this one holds it open is cleaned
/// by that process's cleaner and by any store that opens the topic afterwards.
fn clean_loop(shared: &Weak<Shared>, every: std::time::Duration) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if stopped_after(&shared, every) {
            return;
        }
        let config = shared.config.cleaner;
        let topics: Vec<Arc<Topic>> =
            shared.topics.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let pace = crate::log::Pace { bytes_per_second: config.bytes_per_second, stop: Some(&shared.closed) };
        for topic in topics {
            if topic.is_deleted() || topic.settings().refresh().is_err() || !topic.settings().compacted() {
                continue;
            }
            let Ok(partitions) = topic.partitions() else { continue };
            for log in partitions {
                if shared.closed.load(Ordering::Relaxed) {
                    return;
                }
                let due =
                    log.dirty_ratio().is_ok_and(|r| r.dirty_bytes > 0 && r.ratio() >= config.min_dirty_ratio);
                if due {
                    // Errors are the partition's to report: `topic.compact()` and reads name
                    // damage; the cleaner tries again next time.
                    let _ = log.compact_paced(false, pace);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BatchMeta, Record};
    use crate::shm::fork::in_child;

    fn append(p: &PartitionLog, value: &[u8]) -> Result<u64> {
        let record = Record { timestamp: 1, key: None, value, headers: &[], tombstone: false };
        Ok(p.append(&[record], BatchMeta::plain(0))?.base_offset)
    }

    fn data_file_len(dir: &Path) -> u64 {
        let log = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap();
        std::fs::metadata(log).unwrap().len()
    }

    #[test]
    fn close_trims_and_closes_partitions_of_topics_still_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LogConfig::default(), &[]).unwrap();
        let topic = store.create_topic("t", 2, false, &[]).unwrap();
        let p0 = topic.partition(0).unwrap();
        for i in 0..10u8 {
            append(p0, &[i; 100]).unwrap();
        }
        let committed = p0.head().unwrap().committed_pos;
        store.close().unwrap();
        let part = dir.path().join("topics/t/0");
        assert_eq!(data_file_len(&part), committed, "trimmed to its contents");
        assert_eq!(data_file_len(&dir.path().join("topics/t/1")), 0);
        assert!(matches!(topic.partition(0), Err(Error::Closed)));
        // A reference taken before the close is refused under the append lock, never
        // allowed to write into the trimmed file.
        assert!(matches!(append(p0, b"late"), Err(Error::Closed)));
        let again = Store::open(dir.path(), LogConfig::default(), &[]).unwrap();
        let t = again.topic("t").unwrap();
        assert_eq!(t.partition(0).unwrap().end_offset().unwrap(), 10);
        assert_eq!(append(t.partition(0).unwrap(), b"next").unwrap(), 10);
        drop(topic);
    }

    fn cleaner_running(store: &Store) -> bool {
        store.cleaner.lock().unwrap().is_some()
    }

    #[test]
    fn the_cleaner_starts_with_the_first_compacted_topic_and_stops_at_close() {
        let compact = [("cleanup_policy".to_owned(), Value::Text("compact".into()))];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LogConfig::default(), &[]).unwrap();
        store.create_topic("plain", 1, false, &[]).unwrap();
        assert!(!cleaner_running(&store), "no compacted topic, no thread");
        store.alter_topic("plain", &compact).unwrap();
        assert!(cleaner_running(&store), "altered to compact");
        store.close().unwrap();
        assert!(!cleaner_running(&store), "joined by close");
        store.alter_topic("plain", &compact).unwrap_err();
        assert!(!cleaner_running(&store), "never started after close");

        let again = Store::open(dir.path(), LogConfig::default(), &[]).unwrap();
        again.open_every_topic().unwrap();
        assert!(cleaner_running(&again), "opened compacted");
        drop(again);
        let other = tempfile::tempdir().unwrap();
        let created = Store::open(other.path(), LogConfig::default(), &[]).unwrap();
        created.create_topic("c", 1, false, &compact).unwrap();
        assert!(cleaner_running(&created), "created compacted");
        let mut off = LogConfig::default();
        off.cleaner.interval_ms = None;
        let without = Store::open(dir.path(), off, &[]).unwrap();
        without.topic("plain").unwrap();
        assert!(!cleaner_running(&without), "turned off");
    }

    #[test]
    fn closing_while_threads_append_through_held_references_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 1 << 20, max_message_bytes: 4096, ..LogConfig::default() };
        let store = Arc::new(Store::open(dir.path(), config.clone(), &[]).unwrap());
        let topic = store.create_topic("t", 1, false, &[]).unwrap();
        let appenders: Vec<_> = (0..3)
            .map(|_| {
                let topic = topic.clone();
                std::thread::spawn(move || {
                    // Holds the partition across the close, as a Python `Topic` would.
                    let p = topic.partition(0).unwrap();
                    let mut acked = 0u64;
                    loop {
                        match append(p, &[7u8; 200]) {
                            Ok(_) => acked += 1,
                            Err(Error::Closed) => return acked,
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(30));
        store.close().unwrap();
        let acked: u64 = appenders.into_iter().map(|a| a.join().unwrap()).sum();
        assert!(acked > 0);
        drop(topic);
        let again = Store::open(dir.path(), config, &[]).unwrap();
        assert_eq!(again.topic("t").unwrap().partition(0).unwrap().end_offset().unwrap(), acked);
    }

    #[test]
    fn the_last_of_several_handles_closing_at_once_trims() {
        let dir = tempfile::tempdir().unwrap();
        let stores: Vec<Arc<Store>> =
            (0..3).map(|_| Arc::new(Store::open(dir.path(), LogConfig::default(), &[]).unwrap())).collect();
        let topic = stores[0].create_topic("t", 1, false, &[]).unwrap();
        append(topic.partition(0).unwrap(), b"hello").unwrap();
        let committed = topic.partition(0).unwrap().head().unwrap().committed_pos;
        for s in &stores[1..] {
            s.topic("t").unwrap();
        }
        let closers: Vec<_> = stores
            .iter()
            .map(|s| {
                let s = s.clone();
                std::thread::spawn(move || s.close().unwrap())
            })
            .collect();
        for c in closers {
            c.join().unwrap();
        }
        assert_eq!(data_file_len(&dir.path().join("topics/t/0")), committed);
        drop(topic);
    }

    #[test]
    fn an_inherited_store_is_refused_in_the_child_and_spares_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LogConfig::default(), &[]).unwrap();
        let topic = store.create_topic("t", 1, false, &[]).unwrap();
        let p = topic.partition(0).unwrap();
        append(p, b"hello").unwrap();
        let status = in_child(|| {
            let refused = matches!(store.topic("t"), Err(Error::Forked))
                && matches!(store.create_topic("u", 1, false, &[]), Err(Error::Forked))
                && matches!(store.sync(), Err(Error::Forked))
                && matches!(topic.partition(0), Err(Error::Forked))
                && matches!(append(p, b"child"), Err(Error::Forked))
                && store.is_closed();
            // Closing, and dropping every handle, must touch nothing of the parent's.
            let closed = store.close().is_ok() && p.close().is_ok();
            refused && closed
        });
        assert_eq!(status, 0, "the child saw every call refused");
        // The parent still owns its locks: nothing was trimmed, appends go on far past
        // the first page.
        for i in 0..20_000u32 {
            append(p, &i.to_le_bytes()).unwrap();
        }
        assert_eq!(p.end_offset().unwrap(), 20_001);
        drop(topic);
        store.close().unwrap();
        let again = Store::open(dir.path(), LogConfig::default(), &[]).unwrap();
        assert_eq!(again.topic("t").unwrap().partition(0).unwrap().end_offset().unwrap(), 20_001);
    }
}
