//! A store: a directory of topics, each a directory of partition logs.
//!
//! ```text
//! data/
//!   tidelog.store              marker: refuses to treat a foreign directory as a store
//!   topics/orders/topic.meta   "partitions 3"
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
use crate::shm::doorbell::Doorbell;
use crate::{Error, Result};

const MARKER: &str = "tidelog.store";
const MARKER_TEXT: &str = "tidelog store\nformat 1\n";
const TOPICS: &str = "topics";
const TOPIC_META: &str = "topic.meta";
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
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    fn check_open(&self) -> Result<()> {
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
    config: LogConfig,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    closed: Arc<AtomicBool>,
    stop: (Mutex<bool>, Condvar),
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
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad settings or a directory that holds something other
    /// than a tidelog store; I/O errors.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let marker = dir.join(MARKER);
        match std::fs::read_to_string(&marker) {
            Ok(text) if text == MARKER_TEXT => {}
            Ok(_) => {
                return Err(Error::InvalidConfig(format!(
                    "{} has an unknown store format marker (written by a newer tidelog?)",
                    marker.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::initialise(dir)?,
            Err(e) => return Err(Error::io("read", &marker, e)),
        }
        std::fs::create_dir_all(dir.join(TOPICS)).map_err(|e| Error::io("create directory", dir, e))?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            config,
            topics: Mutex::new(HashMap::new()),
            closed: Arc::new(AtomicBool::new(false)),
            stop: (Mutex::new(false), Condvar::new()),
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

    fn initialise(dir: &Path) -> Result<()> {
        let foreign: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io("list", dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tmp"))
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
        let tmp = dir.join(format!("{MARKER}.{}.tmp", unique_suffix()));
        std::fs::write(&tmp, MARKER_TEXT).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, dir.join(MARKER)).map_err(|e| Error::io("rename", dir, e))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The settings every partition uses.
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.shared.dir.join(TOPICS).join(name)
    }

    /// Creates a topic with `partitions` partitions. With `exist_ok`, an existing topic with
    /// the same partition count is returned instead.
    ///
    /// # Errors
    /// [`Error::TopicExists`], [`Error::InvalidConfig`], I/O errors.
    pub fn create_topic(&self, name: &str, partitions: u32, exist_ok: bool) -> Result<Arc<Topic>> {
        self.check_open()?;
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(Error::InvalidConfig(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        let topics = self.shared.dir.join(TOPICS);
        let tmp = topics.join(format!(".tmp-{name}-{}", unique_suffix()));
        let prepared = (|| -> std::io::Result<()> {
            std::fs::create_dir(&tmp)?;
            std::fs::write(tmp.join(TOPIC_META), format!("partitions {partitions}\n"))?;
            for p in 0..partitions {
                std::fs::create_dir(tmp.join(p.to_string()))?;
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
        let meta = match std::fs::read_to_string(&meta_path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::TopicNotFound(name.to_owned()))
            }
            Err(e) => return Err(Error::io("read", &meta_path, e)),
        };
        let count: u32 = meta
            .strip_prefix("partitions ")
            .and_then(|s| s.trim().parse().ok())
            .filter(|n| (1..=MAX_PARTITIONS).contains(n))
            .ok_or_else(|| Error::Corrupt {
                path: meta_path.clone(),
                position: 0,
                offset: 0,
                reason: format!("unreadable topic metadata {meta:?}"),
            })?;
        let doorbell = Arc::new(Doorbell::open(&dir.join(DOORBELL))?);
        let partitions = (0..count)
            .map(|p| PartitionLog::open(&dir.join(p.to_string()), name, p, self.shared.config.clone()))
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

    /// Syncs every open partition to disk.
    ///
    /// # Errors
    /// The first sync failure.
    pub fn sync(&self) -> Result<()> {
        sync_all(&self.shared)
    }

    /// Closes the store: syncs (for the `interval` policy), stops the background syncer,
    /// and makes every topic handle refuse further use. Closing twice is harmless.
    ///
    /// # Errors
    /// A final sync failure.
    pub fn close(&self) -> Result<()> {
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
        let result =
            if self.shared.config.fsync == FsyncPolicy::Never { Ok(()) } else { sync_all(&self.shared) };
        self.shared.topics.lock().unwrap_or_else(|e| e.into_inner()).clear();
        result
    }

    /// True once [`Self::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
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
        // A failed background sync is never retried into a success: the partition refuses
        // further appends and syncs (see `crate::fs`), and `close` reports the failure.
        let _ = sync_all(&shared);
    }
}
