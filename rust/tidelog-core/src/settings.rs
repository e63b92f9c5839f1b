//! Settings that shape a topic's files, stored in the store rather than taken from whichever
//! process opens it, so that every process maps, rolls, indexes and deletes the same way.
//!
//! ```text
//! data/tidelog.settings            the store's settings: the defaults for new topics
//! data/topics/orders/topic.meta    "partitions 3" then the topic's own settings
//! data/topics/orders/settings.generation
//!                                  a shared word bumped by every `alter_topic`
//! ```
//!
//! Both files are text, one `key value` per line (`none` for an unset limit), written
//! atomically (temp file, fsync, rename or link, directory fsync). A process caches a
//! topic's settings and checks the generation word (one atomic load) on every append, roll
//! and retention pass, re-reading `topic.meta` only when another process altered it.
//!
//! Invariants:
//! 1. Settings on disk are always valid as a whole: they are checked before being written
//!    and written in one atomic step.
//! 2. `topic.meta` is only rewritten under the exclusive `flock` of the generation file,
//!    and the word is bumped after the new file is in place, so a process that sees the
//!    new generation reads the new settings.
//! 3. A segment's geometry (data capacity, index slots) is never taken from these
//!    settings once the segment exists: it is read from the segment's files (see
//!    `segment`), so changing `segment_bytes` or `index_interval_bytes` only shapes
//!    segments created afterwards.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::defaults;
use crate::format::Compression;
use crate::log::config::{MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
use crate::shm::word::SharedWord;
use crate::{Error, Result};

/// The shared generation word of a topic's settings, in the topic's directory.
pub use crate::paths::SETTINGS_GENERATION_FILE as GENERATION_FILE;
/// The store's settings file.
pub use crate::paths::STORE_SETTINGS_FILE;
const STORE_HEADER: &str = "tidelog settings\nformat 1\n";

/// Names of the stored settings, in the order they are written.
pub const KEYS: [&str; 8] = [
    "segment_bytes",
    "index_interval_bytes",
    "max_message_bytes",
    "retention_bytes",
    "retention_ms",
    "cleanup_policy",
    "delete_retention_ms",
    "compression",
];

/// What kind of value a setting takes (for argument conversion in the bindings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A positive integer.
    Int,
    /// A positive integer, or unset (no limit).
    OptionalInt,
    /// A word from a fixed list.
    Text,
}

/// The kind of the setting `key`; `None` for a name that is not a stored setting.
pub fn kind(key: &str) -> Option<Kind> {
    match key {
        "segment_bytes" | "index_interval_bytes" | "max_message_bytes" | "delete_retention_ms" => {
            Some(Kind::Int)
        }
        "retention_bytes" | "retention_ms" => Some(Kind::OptionalInt),
        "cleanup_policy" | "compression" => Some(Kind::Text),
        _ => None,
    }
}

/// One setting's value, as given by a caller or read from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A word.
    Text(String),
    /// No limit.
    Unset,
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Unset => f.write_str("None"),
        }
    }
}

/// The settings that shape a topic's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSettings {
    /// Capacity of a new segment's data file.
    pub segment_bytes: usize,
    /// Bytes of batches between two sparse index entries of a new segment.
    pub index_interval_bytes: usize,
    /// Largest message (value, key and headers).
    pub max_message_bytes: usize,
    /// Delete the oldest sealed segments while a partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<i64>,
    /// `"delete"` (retention only), `"compact"` (compaction only) or `"compact,delete"`.
    pub cleanup_policy: String,
    /// How long compaction keeps tombstones.
    pub delete_retention_ms: i64,
    /// How new batches are stored: `"none"`, `"lz4"` or `"zstd"` (see
    /// [`crate::format::Compression`]); a producer may ask for another codec for its own.
    pub compression: String,
}

/// Default `max_message_bytes`: 1 MiB, or half a segment when segments are smaller.
pub fn default_max_message_bytes(segment_bytes: usize) -> usize {
    crate::defaults::MAX_MESSAGE_BYTES.min(segment_bytes / 2).max(1)
}

impl Default for TopicSettings {
    fn default() -> Self {
        TopicSettings {
            segment_bytes: defaults::SEGMENT_BYTES,
            index_interval_bytes: defaults::INDEX_INTERVAL_BYTES,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            retention_bytes: defaults::RETENTION_BYTES,
            retention_ms: defaults::RETENTION_MS,
            cleanup_policy: defaults::CLEANUP_POLICY.into(),
            delete_retention_ms: defaults::DELETE_RETENTION_MS,
            compression: defaults::COMPRESSION.into(),
        }
    }
}

impl TopicSettings {
    /// True if the cleanup policy compacts (`"compact"` or `"compact,delete"`).
    pub fn compacts(&self) -> bool {
        self.cleanup_policy.starts_with("compact")
    }

    /// True if the cleanup policy applies retention (`"delete"` or `"compact,delete"`).
    pub fn deletes(&self) -> bool {
        self.cleanup_policy.ends_with("delete")
    }

    /// The value of setting `key`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown name.
    pub fn get(&self, key: &str) -> Result<Value> {
        let int = |n: usize| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        Ok(match key {
            "segment_bytes" => int(self.segment_bytes),
            "index_interval_bytes" => int(self.index_interval_bytes),
            "max_message_bytes" => int(self.max_message_bytes),
            "retention_bytes" => self
                .retention_bytes
                .map_or(Value::Unset, |b| Value::Int(i64::try_from(b).unwrap_or(i64::MAX))),
            "retention_ms" => self.retention_ms.map_or(Value::Unset, Value::Int),
            "cleanup_policy" => Value::Text(self.cleanup_policy.clone()),
            "delete_retention_ms" => Value::Int(self.delete_retention_ms),
            "compression" => Value::Text(self.compression.clone()),
            _ => return Err(unknown(key)),
        })
    }

    /// Sets `key` to `value`, checking the value alone (see [`Self::validate`] for the
    /// checks between settings).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the setting and the value.
    pub fn set(&mut self, key: &str, value: &Value) -> Result<()> {
        let kind = kind(key).ok_or_else(|| unknown(key))?;
        let bad = |what: &str| Error::InvalidConfig(format!("{key} must be {what}, got {value}"));
        match (kind, value) {
            (Kind::Int | Kind::OptionalInt, Value::Int(n)) => {
                // A tombstone may be removed by the first compaction that sees it (Kafka allows 0).
                if *n < 0 || (*n == 0 && key != "delete_retention_ms") {
                    return Err(bad("a positive integer"));
                }
                let n = *n;
                let size = || usize::try_from(n).map_err(|_| bad("a positive integer that fits in memory"));
                match key {
                    "segment_bytes" => self.segment_bytes = size()?,
                    "index_interval_bytes" => self.index_interval_bytes = size()?,
                    "max_message_bytes" => self.max_message_bytes = size()?,
                    "retention_bytes" => self.retention_bytes = Some(n as u64),
                    "retention_ms" => self.retention_ms = Some(n),
                    _ => self.delete_retention_ms = n,
                }
            }
            (Kind::OptionalInt, Value::Unset) => match key {
                "retention_bytes" => self.retention_bytes = None,
                _ => self.retention_ms = None,
            },
            (Kind::Text, Value::Text(text)) => {
                let word = text.trim().to_ascii_lowercase().replace(' ', "");
                if key == "compression" {
                    match Compression::from_name(&word) {
                        Some(codec) => self.compression = codec.name().to_owned(),
                        None => return Err(bad("\"none\", \"lz4\" or \"zstd\"")),
                    }
                } else {
                    match word.as_str() {
                        "delete" | "compact" | "compact,delete" => self.cleanup_policy = word,
                        "delete,compact" => self.cleanup_policy = "compact,delete".into(),
                        _ => return Err(bad("\"delete\", \"compact\" or \"compact,delete\"")),
                    }
                }
            }
            (Kind::OptionalInt, _) => return Err(bad("a positive integer or None")),
            (Kind::Int, _) => return Err(bad("a positive integer")),
            (Kind::Text, _) => return Err(bad("a string")),
        }
        Ok(())
    }

    /// Checks the settings together.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            ));
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > self.segment_bytes / 2 {
            return bad(format!(
                "max_message_bytes must be between 1 and segment_bytes / 2 ({}), got {}",
                self.segment_bytes / 2,
                self.max_message_bytes
            ));
        }
        if self.index_interval_bytes == 0 || self.index_interval_bytes > MAX_SEGMENT_BYTES {
            return bad(format!(
                "index_interval_bytes must be between 1 and {MAX_SEGMENT_BYTES}, got {}",
                self.index_interval_bytes
            ));
        }
        Ok(())
    }

    /// Applies `changes` on top of these settings and checks the result. A change of
    /// `segment_bytes` without `max_message_bytes` keeps the message limit within half a
    /// segment, as opening a new store does.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad setting.
    pub fn with(&self, changes: &[(String, Value)], shrink_message_limit: bool) -> Result<Self> {
        let mut next = self.clone();
        for (key, value) in changes {
            next.set(key, value)?;
        }
        let limit_given = changes.iter().any(|(k, _)| k == "max_message_bytes");
        let too_small = next.max_message_bytes > next.segment_bytes / 2;
        if shrink_message_limit && !limit_given && too_small {
            next.max_message_bytes =
                default_max_message_bytes(next.segment_bytes).min(self.max_message_bytes);
        } else if !limit_given && too_small && next.segment_bytes >= MIN_SEGMENT_BYTES {
            // Never lowered behind the user's back on an existing topic: say what to do.
            return Err(Error::InvalidConfig(format!(
                "segment_bytes={} leaves room for messages of at most {} bytes, but \
                 max_message_bytes is {}: change max_message_bytes too",
                next.segment_bytes,
                next.segment_bytes / 2,
                next.max_message_bytes
            )));
        }
        next.validate()?;
        Ok(next)
    }

    /// The settings as `key value` lines.
    pub fn to_lines(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            let value = match self.get(key).expect("a known key") {
                Value::Int(n) => n.to_string(),
                Value::Text(s) => s,
                Value::Unset => "none".into(),
            };
            out.push_str(&format!("{key} {value}\n"));
        }
        out
    }

    /// Index entries a new segment needs: one at the start and at most one per interval.
    pub fn index_capacity(&self) -> usize {
        crate::segment::index_slots_for(self.segment_bytes, self.index_interval_bytes)
    }

    /// Reads `key value` lines over these settings. Lines whose key is not a setting are
    /// returned untouched: they belong to the file's other owners (the partition count,
    /// the topic's identity).
    fn read_lines<'a>(&mut self, text: &'a str, path: &Path) -> Result<Vec<&'a str>> {
        let mut others = Vec::new();
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            if kind(key).is_none() {
                others.push(line);
                continue;
            }
            let value = match (kind(key), value.parse::<i64>()) {
                (_, Ok(n)) => Value::Int(n),
                (Some(Kind::OptionalInt), Err(_)) if value == "none" => Value::Unset,
                _ => Value::Text(value.to_owned()),
            };
            self.set(key, &value).map_err(|e| corrupt(path, &format!("{line:?}: {e}")))?;
        }
        self.validate().map_err(|e| corrupt(path, &e.to_string()))?;
        Ok(others)
    }
}

fn unknown(key: &str) -> Error {
    Error::InvalidConfig(format!("unknown setting {key:?}: the stored settings are {}", KEYS.join(", ")))
}

fn corrupt(path: &Path, reason: &str) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        position: 0,
        offset: 0,
        reason: format!("unreadable settings: {reason}"),
    }
}

/// The message saying a keyword differs from the stored setting.
fn mismatch(dir: &Path, key: &str, given: &Value, stored: &Value) -> Error {
    Error::InvalidConfig(format!(
        "{key}={given} was given but the store {} has {key}={stored}: settings that shape files \
         are stored with the store and shared by every process; open it without {key}, and \
         change a topic's setting with store.alter_topic(topic, {key}=...) or \
         `tidelog config TOPIC --set {key}=...`",
        dir.display()
    ))
}

/// Writes `bytes` to a new file at `path`, durably and only if no file is there yet: a
/// synced temp file hard-linked into place (`link` fails rather than replace), then the
/// directory synced. Returns false if `path` already existed.
fn create_new_durably(path: &Path, bytes: &[u8]) -> Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = path.with_extension(format!("{}-{nanos}.tmp", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", &tmp, e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            crate::segment::sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("link", path, e)),
    }
}

/// The store's settings: read from `dir`, or recorded there on first open. `requested` are
/// the keywords the opener gave; each must equal the stored value.
///
/// A store created before settings were stored has no settings file. Its first open records
/// the keywords it was given over the defaults rather than the defaults alone: the store's
/// files were shaped by what its processes passed (an old store opened with
/// `segment_bytes=...` every time has segments of that size), so those values describe it
/// best and its users' next opens with the same keywords keep working.
///
/// # Errors
/// [`Error::InvalidConfig`] for a bad keyword or one that differs from the stored value;
/// [`Error::Corrupt`] for an unreadable settings file; I/O errors.
pub fn store_settings(dir: &Path, requested: &[(String, Value)]) -> Result<TopicSettings> {
    let path = dir.join(STORE_SETTINGS_FILE);
    let wanted = TopicSettings::default().with(requested, true)?;
    loop {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| corrupt(&path, "not UTF-8 text"))?;
                let body = text
                    .strip_prefix(STORE_HEADER)
                    .ok_or_else(|| corrupt(&path, "unknown header (written by a newer tidelog?)"))?;
                let mut stored = TopicSettings::default();
                let others = stored.read_lines(body, &path)?;
                if let Some(line) = others.iter().find(|l| !l.is_empty()) {
                    return Err(corrupt(&path, &format!("unknown line {line:?}")));
                }
                for (key, _) in requested {
                    let (given, have) = (wanted.get(key)?, stored.get(key)?);
                    if given != have {
                        return Err(mismatch(dir, key, &given, &have));
                    }
                }
                return Ok(stored);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let text = format!("{STORE_HEADER}{}", wanted.to_lines());
                if create_new_durably(&path, text.as_bytes())? {
                    return Ok(wanted);
                }
                // Another opener recorded its settings first: compare against those.
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        }
    }
}

/// A parsed `topic.meta`: the settings over the store's defaults, and the file's other
/// lines (the partition count first).
pub struct TopicMeta {
    /// The topic's settings.
    pub settings: TopicSettings,
    /// Lines that are not settings, in file order.
    pub other_lines: Vec<String>,
}

impl TopicMeta {
    /// Parses `text` read from `path`; settings missing from it (a topic made before
    /// settings were stored) are the store's.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a bad setting line.
    pub fn parse(text: &str, path: &Path, defaults: &TopicSettings) -> Result<Self> {
        let mut settings = defaults.clone();
        let other_lines = settings.read_lines(text, path)?.into_iter().map(str::to_owned).collect();
        Ok(TopicMeta { settings, other_lines })
    }

    /// The file's text: the other lines, then the settings.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in self.other_lines.iter().filter(|l| !l.is_empty()) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&self.settings.to_lines());
        out
    }
}

/// A topic's settings as this process last read them, checked against the shared
/// generation word before each use on the hot paths (one atomic load).
pub struct SharedSettings {
    source: Option<Source>,
    seen: AtomicU64,
    segment_bytes: AtomicUsize,
    index_interval_bytes: AtomicUsize,
    max_message_bytes: AtomicUsize,
    /// `u64::MAX`: no limit.
    retention_bytes: AtomicU64,
    /// `0`: no limit (a set limit is positive).
    retention_ms: AtomicI64,
    /// [`Compression::code`] of the topic's codec.
    compression: AtomicU8,
    /// The cleanup policy compacts: appends refuse messages without a key (one load).
    compacted: std::sync::atomic::AtomicBool,
    /// The cleanup policy deletes (retention applies).
    deletes: std::sync::atomic::AtomicBool,
    delete_retention_ms: AtomicI64,
    all: Mutex<TopicSettings>,
}

struct Source {
    meta: PathBuf,
    word: SharedWord,
    defaults: TopicSettings,
}

impl SharedSettings {
    /// Settings that never change (a partition log opened on its own, as in tests).
    pub fn fixed(settings: TopicSettings) -> Self {
        Self::new(None, settings, 0)
    }

    /// The live settings of the topic in `topic_dir`, whose missing settings are
    /// `defaults`, and the `topic.meta` they came from.
    ///
    /// # Errors
    /// I/O errors (`NotFound` when the topic is gone), [`Error::Corrupt`].
    pub fn open(topic_dir: &Path, defaults: &TopicSettings) -> Result<(Self, TopicMeta)> {
        let meta_path = topic_dir.join(crate::store::TOPIC_META);
        // Fail on a missing topic before creating its generation file.
        std::fs::metadata(&meta_path).map_err(|e| Error::io("read", &meta_path, e))?;
        let word = SharedWord::open(&topic_dir.join(GENERATION_FILE))?;
        // The word before the file: an alter in between makes the next check re-read.
        let generation = word.load();
        let meta = read_meta(&meta_path, defaults)?;
        let source = Source { meta: meta_path, word, defaults: defaults.clone() };
        Ok((Self::new(Some(source), meta.settings.clone(), generation), meta))
    }

    fn new(source: Option<Source>, s: TopicSettings, generation: u64) -> Self {
        let shared = SharedSettings {
            source,
            seen: AtomicU64::new(generation),
            segment_bytes: AtomicUsize::new(0),
            index_interval_bytes: AtomicUsize::new(0),
            max_message_bytes: AtomicUsize::new(0),
            retention_bytes: AtomicU64::new(0),
            retention_ms: AtomicI64::new(0),
            compression: AtomicU8::new(0),
            compacted: std::sync::atomic::AtomicBool::new(false),
            deletes: std::sync::atomic::AtomicBool::new(true),
            delete_retention_ms: AtomicI64::new(0),
            all: Mutex::new(s.clone()),
        };
        shared.publish(&s);
        shared
    }

    fn publish(&self, s: &TopicSettings) {
        self.segment_bytes.store(s.segment_bytes, Ordering::Relaxed);
        self.index_interval_bytes.store(s.index_interval_bytes, Ordering::Relaxed);
        self.max_message_bytes.store(s.max_message_bytes, Ordering::Relaxed);
        self.retention_bytes.store(s.retention_bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.retention_ms.store(s.retention_ms.unwrap_or(0), Ordering::Relaxed);
        // Validated when set: an unknown word never gets here.
        let codec = Compression::from_name(&s.compression).unwrap_or_default();
        self.compression.store(codec.code(), Ordering::Relaxed);
        self.compacted.store(s.compacts(), Ordering::Relaxed);
        self.deletes.store(s.deletes(), Ordering::Relaxed);
        self.delete_retention_ms.store(s.delete_retention_ms, Ordering::Relaxed);
    }

    /// Re-reads the settings if any process altered them since this process last did.
    ///
    /// # Errors
    /// Reading `topic.meta` failed (I/O, or [`Error::Corrupt`]).
    #[inline]
    pub fn refresh(&self) -> Result<()> {
        let Some(source) = &self.source else { return Ok(()) };
        if source.word.load() == self.seen.load(Ordering::Acquire) {
            return Ok(());
        }
        self.reload(source)
    }

    #[cold]
    fn reload(&self, source: &Source) -> Result<()> {
        let mut all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let generation = source.word.load();
        if generation == self.seen.load(Ordering::Acquire) {
            return Ok(());
        }
        let settings = match read_meta(&source.meta, &source.defaults) {
            Ok(meta) => meta.settings,
            // The topic's directory is gone: it was deleted.
            Err(Error::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = source.meta.parent().and_then(Path::file_name).unwrap_or_default();
                return Err(Error::TopicNotFound(dir.to_string_lossy().into_owned()));
            }
            Err(e) => return Err(e),
        };
        self.publish(&settings);
        *all = settings;
        self.seen.store(generation, Ordering::Release);
        Ok(())
    }

    /// All settings, current.
    ///
    /// # Errors
    /// As [`Self::refresh`].
    pub fn current(&self) -> Result<TopicSettings> {
        self.refresh()?;
        Ok(self.all.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// `segment_bytes` as last refreshed.
    pub fn segment_bytes(&self) -> usize {
        self.segment_bytes.load(Ordering::Relaxed)
    }

    /// `index_interval_bytes` as last refreshed.
    pub fn index_interval_bytes(&self) -> usize {
        self.index_interval_bytes.load(Ordering::Relaxed)
    }

    /// Index slots a segment created now gets.
    pub fn index_capacity(&self) -> usize {
        crate::segment::index_slots_for(self.segment_bytes(), self.index_interval_bytes())
    }

    /// `max_message_bytes` as last refreshed.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes.load(Ordering::Relaxed)
    }

    /// `retention_bytes` as last refreshed.
    pub fn retention_bytes(&self) -> Option<u64> {
        Some(self.retention_bytes.load(Ordering::Relaxed)).filter(|&b| b != u64::MAX)
    }

    /// `retention_ms` as last refreshed.
    pub fn retention_ms(&self) -> Option<i64> {
        Some(self.retention_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// The codec of new batches, as last refreshed (one load: checked on every append).
    #[inline]
    pub fn compression(&self) -> Compression {
        Compression::from_code(self.compression.load(Ordering::Relaxed))
    }

    /// True if the cleanup policy (as last refreshed) compacts.
    #[inline]
    pub fn compacted(&self) -> bool {
        self.compacted.load(Ordering::Relaxed)
    }

    /// True if the cleanup policy (as last refreshed) applies retention.
    pub fn deletes(&self) -> bool {
        self.deletes.load(Ordering::Relaxed)
    }

    /// `delete_retention_ms` as last refreshed.
    pub fn delete_retention_ms(&self) -> i64 {
        self.delete_retention_ms.load(Ordering::Relaxed)
    }
}

/// Reads and parses `topic.meta`.
///
/// # Errors
/// I/O errors (`NotFound` when the topic is gone), [`Error::Corrupt`].
pub fn read_meta(path: &Path, defaults: &TopicSettings) -> Result<TopicMeta> {
    let text = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let text = String::from_utf8(text).map_err(|_| corrupt(path, "not UTF-8 text"))?;
    TopicMeta::parse(&text, path, defaults)
}

/// Changes settings of the topic in `topic_dir` for every process: rewrites `topic.meta`
/// atomically and durably under the generation file's exclusive lock, then bumps the
/// shared generation word (invariant 2). Returns the new settings.
///
/// # Errors
/// [`Error::InvalidConfig`] for bad changes (nothing is written); I/O errors.
pub fn alter(
    topic_dir: &Path,
    defaults: &TopicSettings,
    changes: &[(String, Value)],
) -> Result<TopicSettings> {
    let word_path = topic_dir.join(GENERATION_FILE);
    let word = SharedWord::open(&word_path)?;
    let lock = File::open(&word_path).map_err(|e| Error::io("open", &word_path, e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io("flock", &word_path, e.into()))?;
    let meta_path = topic_dir.join(crate::store::TOPIC_META);
    let mut meta = read_meta(&meta_path, defaults)?;
    meta.settings = meta.settings.with(changes, false)?;
    crate::segment::write_atomically(&meta_path, meta.to_text().as_bytes(), true)?;
    word.fetch_add(1);
    Ok(meta.settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(key: &str, n: i64) -> (String, Value) {
        (key.to_owned(), Value::Int(n))
    }

    #[test]
    fn round_trips_through_text() {
        let s = TopicSettings::default()
            .with(
                &[int("segment_bytes", 1 << 20), int("retention_ms", 5), int("retention_bytes", 9 << 20)],
                true,
            )
            .unwrap();
        assert_eq!(s.max_message_bytes, 512 << 10);
        let text = format!("partitions 3\nincarnation ab12\n{}", s.to_lines());
        let meta = TopicMeta::parse(&text, Path::new("m"), &TopicSettings::default()).unwrap();
        assert_eq!(meta.settings, s);
        assert_eq!(meta.other_lines, ["partitions 3", "incarnation ab12"]);
        assert_eq!(meta.to_text(), text);
    }

    #[test]
    fn bad_values_are_named() {
        let d = TopicSettings::default();
        let err = |changes: &[(String, Value)]| d.with(changes, true).unwrap_err().to_string();
        assert!(err(&[int("segment_bytes", 10)]).contains("segment_bytes"));
        assert!(err(&[int("retention_ms", -1)]).contains("retention_ms must be a positive integer, got -1"));
        let codec = |word: &str| d.with(&[("compression".into(), Value::Text(word.into()))], true);
        assert_eq!(codec("zstd").unwrap().compression, "zstd");
        assert_eq!(codec(" LZ4").unwrap().compression, "lz4");
        let e = codec("gzip").unwrap_err().to_string();
        assert!(e.contains("compression must be \"none\", \"lz4\" or \"zstd\", got \"gzip\""), "{e}");
        for (given, stored) in [
            ("compact", "compact"),
            ("Compact, Delete", "compact,delete"),
            ("delete,compact", "compact,delete"),
        ] {
            let s = d.with(&[("cleanup_policy".into(), Value::Text(given.into()))], true).unwrap();
            assert_eq!(s.cleanup_policy, stored);
            assert!(s.compacts());
            assert_eq!(s.deletes(), stored.ends_with("delete"));
        }
        assert_eq!(d.with(&[int("delete_retention_ms", 0)], true).unwrap().delete_retention_ms, 0);
        assert!(err(&[int("delete_retention_ms", -1)]).contains("delete_retention_ms"));
        assert!(err(&[("cleanup_policy".into(), Value::Text("keep".into()))]).contains("\"keep\""));
        assert!(err(&[int("nonsense", 1)]).contains("unknown setting \"nonsense\""));
        assert!(
            err(&[int("segment_bytes", 8192), int("max_message_bytes", 8192)]).contains("max_message_bytes")
        );
    }

    #[test]
    fn a_damaged_meta_line_is_corruption_naming_the_file() {
        let e = TopicMeta::parse(
            "partitions 1\nsegment_bytes lots\n",
            Path::new("x/topic.meta"),
            &TopicSettings::default(),
        )
        .err()
        .unwrap();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("x/topic.meta"));
    }

    #[test]
    fn store_settings_are_recorded_once_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let first = store_settings(dir.path(), &[int("segment_bytes", 1 << 20)]).unwrap();
        assert_eq!(first.segment_bytes, 1 << 20);
        assert_eq!(store_settings(dir.path(), &[]).unwrap(), first);
        let e = store_settings(dir.path(), &[int("segment_bytes", 2 << 20)]).unwrap_err().to_string();
        assert!(e.contains("segment_bytes=2097152 was given") && e.contains("segment_bytes=1048576"), "{e}");
        assert!(e.contains("alter_topic") && e.contains("tidelog config"), "{e}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn alter_is_seen_through_the_generation_word() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::store::TOPIC_META), "partitions 2\n").unwrap();
        let defaults = TopicSettings::default();
        let (live, _) = SharedSettings::open(dir.path(), &defaults).unwrap();
        assert_eq!(live.retention_ms(), None);
        alter(dir.path(), &defaults, &[int("retention_ms", 1000)]).unwrap();
        live.refresh().unwrap();
        assert_eq!(live.retention_ms(), Some(1000));
        let text = std::fs::read_to_string(dir.path().join(crate::store::TOPIC_META)).unwrap();
        assert!(text.starts_with("partitions 2\n") && text.contains("retention_ms 1000\n"), "{text}");
        let refused = alter(dir.path(), &defaults, &[int("segment_bytes", 1)]);
        assert!(refused.is_err());
        assert_eq!(std::fs::read_to_string(dir.path().join(crate::store::TOPIC_META)).unwrap(), text);
    }
}
