//! Committed offsets of consumer groups, kept as Kafka keeps them: in the internal topic
//! `__consumer_offsets`, where a group's commits go to the partition its name hashes to.
//! [`record`] owns the bytes of every record version; [`table`] reads them back into the
//! newest commit per (group, topic, partition). `tidelog.offsets` (through the bindings)
//! and the producer's lag bound ([`crate::producer::lag`]) both read through the table.

pub mod record;
pub mod table;

pub use table::{Commit, OffsetTable, OnUndecodable, Partitions};

/// The internal topic holding consumer-group commits.
pub use crate::paths::OFFSETS_TOPIC;
/// Partitions of [`OFFSETS_TOPIC`] when it is created.
pub const PARTITIONS: u32 = 8;

/// The partition of an offsets topic of `partitions` partitions that holds `group`'s
/// commits (Kafka's partitioner on the group's name), so a group's commits stay in order.
pub fn partition_of(group: &str, partitions: u32) -> u32 {
    crate::partitioner::partition_for_key(group.as_bytes(), partitions)
}
