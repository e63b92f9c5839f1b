//! The default of every store and topic setting, in one place: the core's own defaults
//! (`TopicSettings`, `LogConfig`, `CleanerConfig`), the bindings' keyword defaults and the
//! Python layer's (`tidelog._core.DEFAULTS`) all read these.

/// Capacity of a new segment's data file: 64 MiB.
pub const SEGMENT_BYTES: usize = 64 << 20;
/// Roll the active segment once it is this old: 7 days.
pub const SEGMENT_MS: Option<i64> = Some(7 * 24 * 3600 * 1000);
/// Bytes of batches between two sparse index entries.
pub const INDEX_INTERVAL_BYTES: usize = 4096;
/// Largest message (value, key and headers), when segments are large enough: 1 MiB (see
/// [`crate::settings::default_max_message_bytes`]).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Retention by size: none.
pub const RETENTION_BYTES: Option<u64> = None;
/// Retention by age: none.
pub const RETENTION_MS: Option<i64> = None;
/// `"delete"`: retention removes old segments, nothing is compacted.
pub const CLEANUP_POLICY: &str = "delete";
/// How long compaction keeps tombstones: one day.
pub const DELETE_RETENTION_MS: i64 = 86_400_000;
/// Batches are stored uncompressed.
pub const COMPRESSION: &str = "none";
/// `"never"`: appends return once in the page cache.
pub const FSYNC: &str = "never";
/// Period of the background fsync for `fsync="interval"`.
pub const FSYNC_INTERVAL_MS: i64 = 1000;
/// A partition forgets an idle idempotent producer after this long: 7 days.
pub const PRODUCER_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;
/// `"raise"`: damage followed by valid batches stops the open.
pub const ON_CORRUPTION: &str = "raise";
/// How often the background cleaner looks at compacted topics: 15 s.
pub const CLEANER_INTERVAL_MS: Option<i64> = Some(15_000);
/// Share of dirty bytes at which a partition is compacted.
pub const MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;
/// The cleaner's budget of bytes read plus written per second: 100 MiB.
pub const CLEANER_BYTES_PER_SECOND: Option<i64> = Some(100 << 20);

/// A producer's buffer, in messages.
pub const BUFFER_MESSAGES: usize = 65_536;
/// A producer comes under pressure when its buffer is this full.
pub const HIGH_WATERMARK: f64 = 0.8;
/// ... and leaves it once the buffer is down to this.
pub const LOW_WATERMARK: f64 = 0.5;
/// What a producer under pressure does: `"block"`.
pub const ON_FULL: &str = "block";
/// Most messages a producer's writer appends in one batch.
pub const MAX_BATCH_MESSAGES: usize = 4096;
/// How long a producer's writer waits for more messages before appending a batch.
pub const LINGER_MS: f64 = 1.0;

/// How long a consumer or work-queue member spins on the topic's doorbell before sleeping
/// on it, in microseconds: about what a sleep on the doorbell costs when the message comes
/// (a futex wake-up measured at 9.5-12 µs p50 from append to a sleeping consumer in another
/// process, and ~7 µs of the consumer's CPU per wake-up). Spinning that long before sleeping
/// never costs more than about twice what sleeping at once would (the ski-rental bound), and
/// a message that comes within it is seen without a wake-up. Measured in
/// `benches/results/spin-issue19.md`.
pub const SPIN_US: u32 = 10;
/// Longest spin accepted: a longer one is no longer "briefly before sleeping" (a waiter that
/// must never sleep should poll with a zero timeout instead).
pub const MAX_SPIN_US: u32 = 10_000;

/// A default value, as the bindings hand it to Python.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefaultValue {
    /// An integer setting.
    Int(i64),
    /// A ratio.
    Float(f64),
    /// A name (`"never"`, `"delete"`).
    Text(&'static str),
    /// No value: no limit, or never.
    None,
}

fn int(n: usize) -> DefaultValue {
    DefaultValue::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn opt(n: Option<i64>) -> DefaultValue {
    n.map_or(DefaultValue::None, DefaultValue::Int)
}

/// Every default by its setting's name, in the order of `tidelog.open`'s options.
pub fn all() -> Vec<(&'static str, DefaultValue)> {
    vec![
        ("segment_bytes", int(SEGMENT_BYTES)),
        ("segment_ms", opt(SEGMENT_MS)),
        ("retention_bytes", opt(RETENTION_BYTES.map(|b| i64::try_from(b).unwrap_or(i64::MAX)))),
        ("retention_ms", opt(RETENTION_MS)),
        ("fsync", DefaultValue::Text(FSYNC)),
        ("fsync_interval_ms", DefaultValue::Int(FSYNC_INTERVAL_MS)),
        ("max_message_bytes", int(MAX_MESSAGE_BYTES)),
        ("index_interval_bytes", int(INDEX_INTERVAL_BYTES)),
        ("producer_expiry_ms", DefaultValue::Int(PRODUCER_EXPIRY_MS)),
        ("cleanup_policy", DefaultValue::Text(CLEANUP_POLICY)),
        ("delete_retention_ms", DefaultValue::Int(DELETE_RETENTION_MS)),
        ("compression", DefaultValue::Text(COMPRESSION)),
        ("on_corruption", DefaultValue::Text(ON_CORRUPTION)),
        ("cleaner_interval_ms", opt(CLEANER_INTERVAL_MS)),
        ("min_cleanable_dirty_ratio", DefaultValue::Float(MIN_CLEANABLE_DIRTY_RATIO)),
        ("cleaner_bytes_per_second", opt(CLEANER_BYTES_PER_SECOND)),
    ]
}

/// Every producer option's default by its name (`Store.producer`'s keywords).
pub fn producer() -> Vec<(&'static str, DefaultValue)> {
    vec![
        ("buffer_messages", int(BUFFER_MESSAGES)),
        ("high_watermark", DefaultValue::Float(HIGH_WATERMARK)),
        ("low_watermark", DefaultValue::Float(LOW_WATERMARK)),
        ("on_full", DefaultValue::Text(ON_FULL)),
        ("max_batch_messages", int(MAX_BATCH_MESSAGES)),
        ("linger_ms", DefaultValue::Float(LINGER_MS)),
    ]
}

/// Every waiting option's default by its name (`Store.consumer`'s and `Store.work_queue`'s
/// keywords).
pub fn waiting() -> Vec<(&'static str, DefaultValue)> {
    vec![("spin_us", DefaultValue::Int(i64::from(SPIN_US)))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{CleanerConfig, FsyncPolicy, LogConfig, OnCorruption};
    use crate::settings::TopicSettings;

    #[test]
    fn the_core_types_take_their_defaults_from_here() {
        let topic = TopicSettings::default();
        assert_eq!(topic.segment_bytes, SEGMENT_BYTES);
        assert_eq!(topic.index_interval_bytes, INDEX_INTERVAL_BYTES);
        assert_eq!(topic.max_message_bytes, MAX_MESSAGE_BYTES);
        assert_eq!(topic.retention_bytes, RETENTION_BYTES);
        assert_eq!(topic.retention_ms, RETENTION_MS);
        assert_eq!(topic.cleanup_policy, CLEANUP_POLICY);
        assert_eq!(topic.delete_retention_ms, DELETE_RETENTION_MS);
        assert_eq!(topic.compression, COMPRESSION);
        let log = LogConfig::default();
        assert_eq!(log.topic_settings(), topic);
        assert_eq!(log.segment_ms, SEGMENT_MS);
        assert_eq!(log.producer_expiry_ms, PRODUCER_EXPIRY_MS);
        assert_eq!(FsyncPolicy::named(FSYNC, FSYNC_INTERVAL_MS).unwrap(), log.fsync);
        assert_eq!(OnCorruption::named(ON_CORRUPTION).unwrap(), log.on_corruption);
        let cleaner = CleanerConfig::default();
        assert_eq!(cleaner.interval_ms, CLEANER_INTERVAL_MS.map(|ms| ms as u64));
        assert_eq!(cleaner.min_dirty_ratio, MIN_CLEANABLE_DIRTY_RATIO);
        assert_eq!(cleaner.bytes_per_second, CLEANER_BYTES_PER_SECOND.map(|b| b as u64));
    }

    #[test]
    fn the_producer_takes_its_defaults_from_here() {
        let p = crate::producer::ProducerConfig::default();
        assert_eq!(p.buffer_messages, BUFFER_MESSAGES);
        assert_eq!(p.high_watermark, HIGH_WATERMARK);
        assert_eq!(p.low_watermark, LOW_WATERMARK);
        assert_eq!(p.max_batch_messages, MAX_BATCH_MESSAGES);
        assert_eq!(p.linger.as_secs_f64() * 1000.0, LINGER_MS);
        assert!(matches!(p.on_full, crate::producer::OnFull::Block(None)) && ON_FULL == "block");
    }

    #[test]
    fn every_stored_setting_has_a_default() {
        let names: Vec<&str> = all().iter().map(|(name, _)| *name).collect();
        for key in crate::settings::KEYS {
            assert!(names.contains(&key), "no default for {key}");
        }
    }
}
