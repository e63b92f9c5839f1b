//! Settings of a partition log, checked once when a store opens.

use std::time::Duration;

use crate::{defaults, Error, Result};

/// When appended data is forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Page cache only: survives a process crash, not a power loss.
    Never,
    /// A background thread syncs dirty partitions this often.
    Interval(Duration),
    /// Every append returns only after its bytes are on disk.
    Always,
}

impl FsyncPolicy {
    /// The policy called `name` (`"never"`, `"interval"` or `"always"`), syncing every
    /// `interval_ms` for `"interval"`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for another name, or an interval that is not positive.
    pub fn named(name: &str, interval_ms: i64) -> Result<Self> {
        match name {
            "never" => Ok(FsyncPolicy::Never),
            "always" => Ok(FsyncPolicy::Always),
            "interval" => match u64::try_from(interval_ms).ok().filter(|&ms| ms > 0) {
                Some(ms) => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                None => Err(Error::InvalidConfig(format!(
                    "fsync_interval_ms must be a positive integer, got {interval_ms}"
                ))),
            },
            other => Err(Error::InvalidConfig(format!(
                "fsync must be \"never\", \"interval\" or \"always\", got {other:?}"
            ))),
        }
    }
}

/// What opening a partition does with damage that is followed by valid batches (a torn
/// tail, with nothing valid after it, is always truncated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCorruption {
    /// Refuse to open the partition: [`crate::Error::Corrupt`] names the file and position.
    #[default]
    Raise,
    /// Move the damaged part and everything after it into `<partition>/quarantine/`, record
    /// what was removed (see [`super::lost`]) and open.
    Quarantine,
}

impl OnCorruption {
    /// The policy called `name` (`"raise"` or `"quarantine"`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for another name.
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "raise" => Ok(OnCorruption::Raise),
            "quarantine" => Ok(OnCorruption::Quarantine),
            other => Err(Error::InvalidConfig(format!(
                "on_corruption must be \"raise\" or \"quarantine\", got {other:?}"
            ))),
        }
    }
}

/// Settings shared by every partition of a store.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Capacity of a segment's data file; a batch that does not fit rolls the segment.
    pub segment_bytes: usize,
    /// Roll the active segment once it is this old (and not empty).
    pub segment_ms: Option<i64>,
    /// Delete the oldest sealed segments while the partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<i64>,
    /// Bytes of batches between two sparse index entries.
    pub index_interval_bytes: usize,
    /// Durability of appends.
    pub fsync: FsyncPolicy,
    /// Largest value (plus key and headers) one message may carry.
    pub max_message_bytes: usize,
    /// An idempotent producer that wrote nothing to a partition for this long is forgotten
    /// there (its next batch may then start at any sequence), as Kafka's
    /// `producer.id.expiration.ms`.
    pub producer_expiry_ms: i64,
    /// What opening does with damage followed by valid batches.
    pub on_corruption: OnCorruption,
    /// The store's background cleaner (compaction of compacted topics).
    pub cleaner: CleanerConfig,
}

/// When the store's background cleaner compacts a partition, and how fast.
#[derive(Clone, Copy, Debug)]
pub struct CleanerConfig {
    /// How often it looks at the partitions of the compacted topics this process has open;
    /// `None`: no background cleaner (`topic.compact()` still works).
    pub interval_ms: Option<u64>,
    /// A partition is compacted once this share of its closed segments' bytes is dirty
    /// (Kafka's `min.cleanable.dirty.ratio`).
    pub min_dirty_ratio: f64,
    /// Bytes read plus written per second, at most (`None`: no limit).
    pub bytes_per_second: Option<u64>,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            interval_ms: defaults::CLEANER_INTERVAL_MS.map(|ms| ms as u64),
            min_dirty_ratio: defaults::MIN_CLEANABLE_DIRTY_RATIO,
            bytes_per_second: defaults::CLEANER_BYTES_PER_SECOND.map(|b| b as u64),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: defaults::SEGMENT_BYTES,
            segment_ms: defaults::SEGMENT_MS,
            retention_bytes: defaults::RETENTION_BYTES,
            retention_ms: defaults::RETENTION_MS,
            index_interval_bytes: defaults::INDEX_INTERVAL_BYTES,
            // defaults::FSYNC and defaults::ON_CORRUPTION name these.
            fsync: FsyncPolicy::Never,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            producer_expiry_ms: defaults::PRODUCER_EXPIRY_MS,
            on_corruption: OnCorruption::Raise,
            cleaner: CleanerConfig::default(),
        }
    }
}

/// Smallest segment the store accepts; below this a segment would hold almost nothing.
pub const MIN_SEGMENT_BYTES: usize = 4096;
/// Largest segment: positions in the indexes are 32-bit.
pub const MAX_SEGMENT_BYTES: usize = 1 << 31;

impl LogConfig {
    /// Checks every setting, naming the first bad one.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        // The file-shaping ones are checked where they are stored (one set of rules).
        self.topic_settings().validate()?;
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if let Some(ms) = self.segment_ms.filter(|&ms| ms <= 0) {
            return bad(format!("segment_ms must be positive, got {ms}"));
        }
        if let Some(ms) = self.retention_ms.filter(|&ms| ms <= 0) {
            return bad(format!("retention_ms must be positive, got {ms}"));
        }
        let ratio = self.cleaner.min_dirty_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return bad(format!("min_cleanable_dirty_ratio must lie between 0 and 1, got {ratio}"));
        }
        if self.cleaner.interval_ms == Some(0) || self.cleaner.bytes_per_second == Some(0) {
            return bad("cleaner_interval_ms and cleaner_bytes_per_second must be positive".into());
        }
        if self.producer_expiry_ms <= 0 {
            return bad(format!("producer_expiry_ms must be positive, got {}", self.producer_expiry_ms));
        }
        if let FsyncPolicy::Interval(d) = self.fsync {
            if d.is_zero() {
                return bad("fsync_interval_ms must be positive".into());
            }
        }
        Ok(())
    }

    /// The file-shaping settings of this config, for a partition log opened on its own.
    pub fn topic_settings(&self) -> crate::settings::TopicSettings {
        crate::settings::TopicSettings {
            segment_bytes: self.segment_bytes,
            index_interval_bytes: self.index_interval_bytes,
            max_message_bytes: self.max_message_bytes,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            ..crate::settings::TopicSettings::default()
        }
    }

    /// The same config with the file-shaping fields taken from `settings`.
    pub fn with_settings(&self, settings: &crate::settings::TopicSettings) -> Self {
        LogConfig {
            segment_bytes: settings.segment_bytes,
            index_interval_bytes: settings.index_interval_bytes,
            max_message_bytes: settings.max_message_bytes,
            retention_bytes: settings.retention_bytes,
            retention_ms: settings.retention_ms,
            ..self.clone()
        }
    }

    /// Index entries a segment can need: one at the start and at most one per interval.
    pub fn index_capacity(&self) -> usize {
        crate::segment::index_slots_for(self.segment_bytes, self.index_interval_bytes)
    }
}
