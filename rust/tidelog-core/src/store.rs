//! A store: a directory of topics, each a directory of partition logs.
//!
//! ```text
//! data/
//!   tidelog.store              marker: refuses to treat a foreign directory as a store
//!   tidelog.settings           the store's settings, the defaults of new topics (`settings`)
//!   topics/orders/topic.meta   "partitions 3", then the topic's settings
//!   topics/orders/0/           a partition log (see `log`)
//! ```
//!
//! Topic creation and deletion are single `rename`s of a fully prepared directory, so
//! other processes see a topic either complete or not at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

use crate::log::{FsyncPolicy, LogConfig, PartitionLog};
use crate::partitioner::partition_for_key;
use crate::settings::{self, SharedSettings, TopicSettings, Value};
use crate::shm::doorbell::Doorbell;
use crate::shm::fork::Born;
use crate::statelog::StateLog;
use crate::{Error, Result};

const MARKER: &str = "tidelog.store";
const MARKER_TEXT: &str = "tidelog store\nformat 1\n";
const TOPICS: &str = "topics";
/// A topic's metadata file: its partition count and settings (see `settings`).
pub const TOPIC_META: &str = "topic.meta";
const DOORBELL: &str = "doorbell";
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// A topic: its partitions, opened.
pub struct Topic {
    name: String,
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
    pub fn partition(&self, p: u32) -> Result<&PartitionLog> {
        self.check_open()?;
        self.partitions.get(p as usize).ok_or_else(|| Error::PartitionNotFound {
            topic: self.name.clone(),
            partition: p,
            count: self.partition_count(),
        })
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

    /// All partitions.
    ///
    /// # Errors
    /// As [`Self::partition`].
    pub fn partitions(&self) -> Result<&[PartitionLog]> {
        self.check_open()?;
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
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
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
            Err(e) => return Err(Error::io("read", &marker, e)),
        };
        // Before the marker: a store with a marker always has its settings, except one made
        // by an older version, which this records (see `settings::store_settings`).
        let defaults = settings::store_settings(dir, requested)?;
        if fresh {
            let tmp = dir.join(format!("{MARKER}.{}.tmp", unique_suffix()));
            std::fs::write(&tmp, MARKER_TEXT).map_err(|e| Error::io("write", &tmp, e))?;
            std::fs::rename(&tmp, dir.join(MARKER)).map_err(|e| Error::io("rename", dir, e))?;
        }
        let config = config.with_settings(&defaults);
        std::fs::create_dir_all(dir.join(TOPICS)).map_err(|e| Error::io("create directory", dir, e))?;
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
        Ok(Store { shared, syncer: Mutex::new(syncer) })
    }

    fn check_empty(dir: &Path) -> Result<()> {
        let foreign: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // A settings file without a marker: a creation that stopped in between.
            .filter(|n| !n.ends_with(".tmp") && n != settings::STORE_SETTINGS_FILE)
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
        self.shared.dir.join(TOPICS).join(name)
    }

    /// Creates a topic with `partitions` partitions and the store's settings overridden by
    /// `settings`, stored with the topic. With `exist_ok`, an existing topic with the same
    /// partition count is returned instead (with its own settings).
    ///
    /// # Errors
    /// [`Error::TopicExists`], [`Error::InvalidConfig`], I/O errors.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        exist_ok: bool,
        settings: &[(String, Value)],
    ) -> Result<Arc<Topic>> {
        self.check_open()?;
        validate_topic_name(name)?;
        let topic_settings = self.shared.defaults.with(settings, true)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(Error::InvalidConfig(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        let topics = self.shared.dir.join(TOPICS);
        let tmp = topics.join(format!(".tmp-{name}-{}", unique_suffix()));
        let prepared = (|| -> std::io::Result<()> {
            std::fs::create_dir(&tmp)?;
            let meta = format!("partitions {partitions}\n{}", topic_settings.to_lines());
            let mut file = std::fs::File::create(tmp.join(TOPIC_META))?;
            std::io::Write::write_all(&mut file, meta.as_bytes())?;
            // The rename below publishes the topic: its settings must be on disk first.
            file.sync_all()?;
            for p in 0..partitions {
                std::fs::create_dir(tmp.join(p.to_string()))?;
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
        let renamed = if self.topic_dir(name).exists() {
            Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
        } else {
            std::fs::rename(&tmp, self.topic_dir(name))
        };
        match renamed {
            Ok(()) => {
                if self.shared.config.fsync != FsyncPolicy::Never {
                    crate::segment::sync_dir(&topics)?;
                }
                self.topic(name)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                let exists = matches!(
                    e.kind(),
                    std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty
                );
                if !exists {
                    return Err(Error::io("create topic", self.topic_dir(name), e));
                }
                if !exist_ok {
                    return Err(Error::TopicExists(name.to_owned()));
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

    /// Opens an existing topic.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], corruption or I/O errors from opening its partitions.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.check_open()?;
        let mut topics = self.shared.topics.lock().map_err(|_| Error::Closed)?;
        if let Some(t) = topics.get(name) {
            if t.deleted.load(Ordering::Relaxed) || !self.topic_dir(name).exists() {
                t.deleted.store(true, Ordering::Relaxed);
                topics.remove(name);
            } else {
                return Ok(t.clone());
            }
        }
        if validate_topic_name(name).is_err() {
            return Err(Error::TopicNotFound(name.to_owned()));
        }
        let dir = self.topic_dir(name);
        let meta_path = dir.join(TOPIC_META);
        let (settings, meta) = match SharedSettings::open(&dir, &self.shared.defaults) {
            Ok(opened) => opened,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::TopicNotFound(name.to_owned()))
            }
            Err(e) => return Err(e),
        };
        let settings = Arc::new(settings);
        let first = meta.other_lines.first().map_or("", String::as_str);
        let count: u32 = first
            .strip_prefix("partitions ")
            .and_then(|s| s.trim().parse().ok())
            .filter(|n| (1..=MAX_PARTITIONS).contains(n))
            .ok_or_else(|| Error::Corrupt {
                path: meta_path.clone(),
                position: 0,
                offset: 0,
                reason: format!("unreadable topic metadata {first:?}"),
            })?;
        let config = self.shared.config.with_settings(&meta.settings);
        let doorbell = Arc::new(Doorbell::open(&dir.join(DOORBELL))?);
        let partitions = (0..count)
            .map(|p| {
                PartitionLog::open_with_settings(
                    &dir.join(p.to_string()),
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
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            partitions,
            doorbell,
            next_partition: AtomicU32::new(0),
            closed: self.shared.closed.clone(),
            deleted: AtomicBool::new(false),
            born: self.shared.born,
            settings,
        });
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    /// Names of all topics, sorted.
    ///
    /// # Errors
    /// I/O errors listing the directory.
    pub fn topics(&self) -> Result<Vec<String>> {
        self.check_open()?;
        let dir = self.shared.dir.join(TOPICS);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io("list", &dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(TOPIC_META).exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes a topic and all its data. Other processes that have it open keep reading
    /// what they have mapped; new opens see it gone.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], I/O errors.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        if validate_topic_name(name).is_err() || !self.topic_dir(name).join(TOPIC_META).exists() {
            return Err(Error::TopicNotFound(name.to_owned()));
        }
        let doomed = self.shared.dir.join(TOPICS).join(format!(".deleted-{name}-{}", unique_suffix()));
        match std::fs::rename(self.topic_dir(name), &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::TopicNotFound(name.to_owned()))
            }
            Err(e) => return Err(Error::io("delete topic", self.topic_dir(name), e)),
        }
        if let Some(t) = self.shared.topics.lock().map_err(|_| Error::Closed)?.remove(name) {
            t.deleted.store(true, Ordering::Relaxed);
        }
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io("delete", &doomed, e))
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

    /// Syncs every open partition (and state log) to disk.

    /// Changes settings of topic `name` for every process at once: stored in its
    /// `topic.meta` and seen by the next append, roll or retention pass anywhere. Changes
    /// of `segment_bytes` and `index_interval_bytes` shape segments created afterwards.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`]; [`Error::InvalidConfig`] for a reserved (`__`) name or a
    /// bad setting (nothing is changed); I/O errors.
    pub fn alter_topic(&self, name: &str, changes: &[(String, Value)]) -> Result<TopicSettings> {
        self.check_open()?;
        // TODO(#13): call the shared reserved-name check once the topics work is merged.
        if name.starts_with("__") {
            return Err(Error::InvalidConfig(format!(
                "topic {name:?} is reserved: names starting with \"__\" belong to the store's internal topics"
            )));
        }
        if validate_topic_name(name).is_err() || !self.topic_dir(name).join(TOPIC_META).exists() {
            return Err(Error::TopicNotFound(name.to_owned()));
        }
        match settings::alter(&self.topic_dir(name), &self.shared.defaults, changes) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::TopicNotFound(name.to_owned()))
            }
            other => other,
        }
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

fn sync_loop(shared: &Weak<Shared>, every: std::time::Duration) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        {
            let (lock, cv) = &shared.stop;
            let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (stopped, _) =
                cv.wait_timeout_while(stopped, every, |s| !*s).unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        // A failed background sync is retried next round; `close` reports a final failure.
        let _ = sync_all(&shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BatchMeta, Record};
    use crate::shm::fork::in_child;

    fn append(p: &PartitionLog, value: &[u8]) -> Result<u64> {
        let record = Record { timestamp: 1, key: None, value, headers: &[] };
        Ok(p.append(&[record], BatchMeta::plain(0), true)?.expect("blocking append").base_offset)
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
        let store = Store::open(dir.path(), LogConfig::default()).unwrap();
        let topic = store.create_topic("t", 2, false).unwrap();
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
        let again = Store::open(dir.path(), LogConfig::default()).unwrap();
        let t = again.topic("t").unwrap();
        assert_eq!(t.partition(0).unwrap().end_offset().unwrap(), 10);
        assert_eq!(append(t.partition(0).unwrap(), b"next").unwrap(), 10);
        drop(topic);
    }

    #[test]
    fn closing_while_threads_append_through_held_references_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 1 << 20, max_message_bytes: 4096, ..LogConfig::default() };
        let store = Arc::new(Store::open(dir.path(), config.clone()).unwrap());
        let topic = store.create_topic("t", 1, false).unwrap();
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
        let again = Store::open(dir.path(), config).unwrap();
        assert_eq!(again.topic("t").unwrap().partition(0).unwrap().end_offset().unwrap(), acked);
    }

    #[test]
    fn the_last_of_several_handles_closing_at_once_trims() {
        let dir = tempfile::tempdir().unwrap();
        let stores: Vec<Arc<Store>> =
            (0..3).map(|_| Arc::new(Store::open(dir.path(), LogConfig::default()).unwrap())).collect();
        let topic = stores[0].create_topic("t", 1, false).unwrap();
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
        let store = Store::open(dir.path(), LogConfig::default()).unwrap();
        let topic = store.create_topic("t", 1, false).unwrap();
        let p = topic.partition(0).unwrap();
        append(p, b"hello").unwrap();
        let status = in_child(|| {
            let refused = matches!(store.topic("t"), Err(Error::Forked))
                && matches!(store.create_topic("u", 1, false), Err(Error::Forked))
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
        let again = Store::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(again.topic("t").unwrap().partition(0).unwrap().end_offset().unwrap(), 20_001);
    }
}
