//! tidelog's storage engine: a memory-mapped, segmented, append-only log of CRC32C-checked
//! record batches, safe to share between threads and processes.
//!
//! Layers, each depending only on the ones before it:
//! - [`format`]: the bytes of a record batch;
//! - [`segment`] and [`index`]: one data file and its sparse offset and time indexes;
//! - [`shm`]: the per-partition control block (cross-process append lock, published head);
//! - [`log`]: a partition's segments, appends, reads, rolling, retention and recovery;
//! - [`settings`]: the settings that shape files, stored with the store and each topic;
//! - [`store`]: a directory of topics, each a set of partition logs;
//! - [`statelog`]: a snapshot plus a CRC-checked journal, the durable state of work queues;
//! - [`group`]: a consumer group's membership state, generation word and leases;
//! - [`offsets`]: committed offsets, the records of `__consumer_offsets` and their table.

#![deny(unsafe_code)]

pub mod defaults;
pub mod error;
pub mod format;
pub mod fs;
pub mod group;
pub mod index;
pub mod inspect;
pub mod kafka_records;
pub mod log;
pub mod offsets;
pub mod partitioner;
pub mod paths;
pub mod producer;
pub mod queue_legacy;
pub mod ring;
pub mod segment;
pub mod settings;
pub mod shm;
pub mod statelog;
pub mod store;
pub mod waker;

pub use error::{Error, Result};
pub use log::{FsyncPolicy, LogConfig, OnCorruption, PartitionLog};
pub use store::{Store, Topic};
