//! Every name under a store directory, in one place: the store's files, its topics and
//! partitions, the state kept beside them (groups, producers, work queues) and the internal
//! topics. Other modules (and, through the bindings, the Python layer) take the names from
//! here rather than spelling them, so the layout below is the whole of it.
//!
//! ```text
//! <store>/
//!   tidelog.store                        STORE_MARKER_FILE
//!   tidelog.settings                     STORE_SETTINGS_FILE
//!   topics/                              TOPICS_DIR                 topics_dir()
//!     .lock                              TOPICS_LOCK_FILE
//!     .tmp-<id>/  .deleted-<id>/         CREATING_PREFIX, DELETING_PREFIX
//!     <topic>/                           topic_dir()
//!       topic.meta                       TOPIC_META_FILE
//!       doorbell                         DOORBELL_FILE
//!       settings.generation              SETTINGS_GENERATION_FILE
//!       <partition>/                     partition_dir()
//!         control                        CONTROL_FILE
//!         <base:020>.log|.index|.timeindex   segment::file_name
//!         <offset:020>.snapshot          PRODUCER_SNAPSHOT_SUFFIX
//!         compaction.swap                COMPACTION_SWAP_FILE
//!         <segment file>.cleaned         CLEANED_SUFFIX
//!         cleaner.checkpoint             CLEANER_CHECKPOINT_FILE
//!         recovery.events                RECOVERY_EVENTS_FILE
//!         quarantine/                    QUARANTINE_DIR
//!   groups/<topic>/                      GROUPS_DIR                 groups_dir()
//!   producers/                           PRODUCERS_DIR              producers_dir()
//!   work_queues/<topic>/                 WORK_QUEUES_DIR            work_queues_dir()
//! ```
//!
//! Internal topics (names starting with [`INTERNAL_PREFIX`]) live under `topics/` like any
//! other: [`OFFSETS_TOPIC`] holds committed offsets.

use std::path::{Path, PathBuf};

/// Marker file: refuses to treat a foreign directory as a store.
pub const STORE_MARKER_FILE: &str = "tidelog.store";
/// The store's settings, the defaults of new topics (see `settings`).
pub const STORE_SETTINGS_FILE: &str = "tidelog.settings";
/// The directory of the topics.
pub const TOPICS_DIR: &str = "topics";
/// In [`TOPICS_DIR`]: serialises creating and deleting topics.
pub const TOPICS_LOCK_FILE: &str = ".lock";
/// In [`TOPICS_DIR`]: prefix of a topic being created.
pub const CREATING_PREFIX: &str = ".tmp-";
/// In [`TOPICS_DIR`]: prefix of the staging directory of a topic being deleted.
pub const DELETING_PREFIX: &str = ".deleted-";
/// The directory of consumer groups' state, one directory per topic.
pub const GROUPS_DIR: &str = "groups";
/// The directory of named producers' state.
pub const PRODUCERS_DIR: &str = "producers";
/// The directory of work queues' state, one directory per topic.
pub const WORK_QUEUES_DIR: &str = "work_queues";

/// Prefix of the names reserved for the store's internal topics.
pub const INTERNAL_PREFIX: &str = "__";
/// The internal topic of committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The internal topic the first version of work queues kept their state in.
pub const LEGACY_WORK_QUEUES_TOPIC: &str = "__work_queues";
/// A file the first version's `delete_topic` left in a topic's work-queue directory: the
/// records of [`LEGACY_WORK_QUEUES_TOPIC`] for queues of that topic name belong to a
/// deleted topic.
pub const NO_LEGACY: &str = ".no-legacy";

/// In a topic's directory: its partition count, incarnation and settings.
pub const TOPIC_META_FILE: &str = "topic.meta";
/// In a topic's directory: the doorbell consumers sleep on.
pub const DOORBELL_FILE: &str = "doorbell";
/// In a topic's directory: bumped whenever its settings change.
pub const SETTINGS_GENERATION_FILE: &str = "settings.generation";

/// In a partition's directory: the control block (head, append lock, deleted mark).
pub const CONTROL_FILE: &str = "control";
/// In a partition's directory: what recovery removed, one record per event.
pub const RECOVERY_EVENTS_FILE: &str = "recovery.events";
/// In a partition's directory: damaged data moved aside by `on_corruption="quarantine"`.
pub const QUARANTINE_DIR: &str = "quarantine";
/// In a partition's directory: a decided compaction swap.
pub const COMPACTION_SWAP_FILE: &str = "compaction.swap";
/// Suffix of a segment file's rewritten version, before the swap.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// In a partition's directory: how far the cleaner got.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner.checkpoint";
/// Suffix of a producer-state snapshot (`<offset:020>.snapshot`).
pub const PRODUCER_SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Suffix of a file being written atomically (renamed over its target when complete).
pub const TMP_SUFFIX: &str = ".tmp";
/// Extension of a segment's data file (`<base:020>.log`).
pub const SEGMENT_DATA_EXTENSION: &str = "log";
/// Extension of a segment's offset index.
pub const SEGMENT_INDEX_EXTENSION: &str = "index";
/// Extension of a segment's time index.
pub const SEGMENT_TIME_INDEX_EXTENSION: &str = "timeindex";

/// In [`PRODUCERS_DIR`]: serialises handing out producer ids.
pub const PRODUCERS_LOCK_FILE: &str = ".lock";
/// In [`PRODUCERS_DIR`]: the next producer id.
pub const PRODUCER_IDS_FILE: &str = "ids";
/// Suffix of a named producer's identity word.
pub const IDENTITY_SUFFIX: &str = ".identity";
/// Suffix of a named producer's open-transaction log.
pub const TXN_SUFFIX: &str = ".txn";
/// Suffix of the lock of a named producer's open-transaction log.
pub const TXN_LOCK_SUFFIX: &str = ".txn.lock";

/// `<store>/topics`.
pub fn topics_dir(store: &Path) -> PathBuf {
    store.join(TOPICS_DIR)
}

/// `<store>/topics/<topic>`.
pub fn topic_dir(store: &Path, topic: &str) -> PathBuf {
    topics_dir(store).join(topic)
}

/// The directory of `partition` in the directory `topic_dir` of its topic.
pub fn partition_in(topic_dir: &Path, partition: u32) -> PathBuf {
    topic_dir.join(partition.to_string())
}

/// `<store>/topics/<topic>/<partition>`.
pub fn partition_dir(store: &Path, topic: &str, partition: u32) -> PathBuf {
    partition_in(&topic_dir(store, topic), partition)
}

/// `<store>/groups/<topic>`: the consumer groups of `topic`.
pub fn groups_dir(store: &Path, topic: &str) -> PathBuf {
    store.join(GROUPS_DIR).join(topic)
}

/// `<store>/producers`.
pub fn producers_dir(store: &Path) -> PathBuf {
    store.join(PRODUCERS_DIR)
}

/// `<store>/work_queues/<topic>`: the work queues of `topic`.
pub fn work_queues_dir(store: &Path, topic: &str) -> PathBuf {
    store.join(WORK_QUEUES_DIR).join(topic)
}

/// The directories outside `topics/` that hold state of `topic` and go when it is deleted.
pub fn topic_state_dirs(store: &Path, topic: &str) -> [PathBuf; 2] {
    [groups_dir(store, topic), work_queues_dir(store, topic)]
}

/// True for the names of internal topics.
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with(INTERNAL_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_as_the_layout_says() {
        let store = Path::new("/s");
        assert_eq!(topics_dir(store), Path::new("/s/topics"));
        assert_eq!(topic_dir(store, "orders"), Path::new("/s/topics/orders"));
        assert_eq!(partition_dir(store, "orders", 3), Path::new("/s/topics/orders/3"));
        assert_eq!(partition_in(&topic_dir(store, "orders"), 0), Path::new("/s/topics/orders/0"));
        assert_eq!(groups_dir(store, "orders"), Path::new("/s/groups/orders"));
        assert_eq!(producers_dir(store), Path::new("/s/producers"));
        assert_eq!(work_queues_dir(store, "orders"), Path::new("/s/work_queues/orders"));
        assert_eq!(topic_state_dirs(store, "o"), [groups_dir(store, "o"), work_queues_dir(store, "o")]);
    }

    #[test]
    fn internal_topics_carry_the_prefix() {
        assert!(is_internal(OFFSETS_TOPIC));
        assert!(is_internal(LEGACY_WORK_QUEUES_TOPIC));
        assert!(!is_internal("orders"));
        assert!(!is_internal("_one_underscore"));
    }

    #[test]
    fn names_are_distinct_where_they_share_a_directory() {
        // Files in a partition directory must not collide with each other or with segment
        // files (which recovery lists by parsing names).
        let partition = [
            CONTROL_FILE,
            RECOVERY_EVENTS_FILE,
            QUARANTINE_DIR,
            COMPACTION_SWAP_FILE,
            CLEANER_CHECKPOINT_FILE,
        ];
        for (i, a) in partition.iter().enumerate() {
            assert!(crate::segment::parse_file_name(a).is_none(), "{a} parses as a segment file");
            for b in &partition[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let topic = [TOPIC_META_FILE, DOORBELL_FILE, SETTINGS_GENERATION_FILE];
        for name in topic {
            assert!(name.parse::<u32>().is_err(), "{name} looks like a partition directory");
        }
        let store =
            [STORE_MARKER_FILE, STORE_SETTINGS_FILE, TOPICS_DIR, GROUPS_DIR, PRODUCERS_DIR, WORK_QUEUES_DIR];
        for (i, a) in store.iter().enumerate() {
            for b in &store[i + 1..] {
                assert_ne!(a, b);
            }
        }
        for prefix in [CREATING_PREFIX, DELETING_PREFIX, TOPICS_LOCK_FILE] {
            // Topic names never start with '.', so these never name a topic.
            assert!(prefix.starts_with('.'));
        }
    }
}
