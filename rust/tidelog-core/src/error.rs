//! The engine's one error type. Every failure a caller can see is a variant here, so the
//! Python bindings can map each to exactly one exception with a single exhaustive `match`.

use std::path::PathBuf;

/// Result alias used across the engine.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O failure, with the file it concerned.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "fdatasync", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes failed a check: bad CRC, impossible length, unknown version.
    #[error("corrupt record batch in {path} at byte position {position} (offset {offset}): {reason}")]
    Corrupt {
        /// The segment file holding the damage.
        path: PathBuf,
        /// Byte position of the batch inside that file.
        position: u64,
        /// The offset the batch should start at.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A state file (a work queue's snapshot or journal, see [`crate::statelog`]) failed a
    /// check: bad CRC or magic, a damaged record followed by valid ones, a generation that
    /// does not fit.
    #[error("damaged state file {path} at byte position {position}: {reason}")]
    CorruptState {
        /// The file holding the damage.
        path: PathBuf,
        /// Byte position of the damage inside that file.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// The named topic does not exist.
    #[error("topic {0:?} does not exist")]
    TopicNotFound(String),
    /// A topic with this name already exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A partition number outside the topic.
    #[error("partition {partition} out of range: topic {topic:?} has {count} partitions")]
    PartitionNotFound {
        /// Topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        count: u32,
    },
    /// An offset below the log start or above the log end.
    #[error(
        "offset {offset} out of range for {topic:?} partition {partition}: valid offsets are {start}..={end}"
    )]
    OffsetOutOfRange {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// First retained offset.
        start: u64,
        /// Next offset to be written.
        end: u64,
    },
    /// A message larger than `max_message_bytes`, or a batch too large for a segment.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes ({what})")]
    MessageTooLarge {
        /// Size of the offending message or batch.
        size: u64,
        /// The configured limit.
        limit: u64,
        /// Which limit.
        what: &'static str,
    },
    /// A configuration value or argument that cannot be used.
    #[error("{0}")]
    InvalidConfig(String),
    /// The store or the partition was closed.
    #[error("the store is closed")]
    Closed,
    /// The handle was opened before this process was forked from its opener: a child may
    /// neither use nor close what it inherited (see `shm::fork`).
    #[error(
        "this store was opened before the process forked: a child process cannot use or close \
         the parent's store; open the store again in the child (tidelog.open(path))"
    )]
    Forked,
    /// An idempotent producer's batch does not continue its sequence in this partition: a
    /// gap (a batch was lost) or a retry older than the remembered window.
    #[error("out-of-order sequence: {0}")]
    OutOfOrderSequence(String),
    /// A newer instance of the same named producer opened: this one may not write.
    #[error("producer fenced: {0}")]
    ProducerFenced(String),
    /// Another process holds a lock that this operation needs exclusively.
    #[error("store is locked: {0}")]
    Locked(String),
    /// A bug: one of the engine's threads stopped (it panicked); the message says which and
    /// what became of the work it held.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the operation and file it concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }
}
