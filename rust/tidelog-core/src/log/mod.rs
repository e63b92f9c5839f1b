//! A partition's log: a directory of segments, the control block that serialises appends
//! across processes, and this process's view of which segments exist.
//!
//! Invariants:
//! 1. Offsets are dense within the log; segment `k + 1` starts at the offset after the last
//!    batch of segment `k` (retention only removes whole segments from the front).
//! 2. Every byte below the published head is a complete, CRC-valid batch; appends write past
//!    the head and publish after the bytes are in place, so no reader in any process ever
//!    sees part of a batch.
//! 3. The set of segment files only changes under the append lock, and every change bumps
//!    the head's generation, which is how other processes notice they must re-list.
//!
//! One job per file: `open` (and the recovery in `recovery`), `lock` (the append lock and
//! the deleted mark), `append`, `roll`, `retention`, `sync`, `view` (this process's list of
//! segments), `close`; `read`, `compaction` and `idempotence` as their names say.

mod append;
mod close;
mod compaction;
pub mod config;
mod crc_worker;
#[cfg(test)]
mod damaged_walk_tests;
mod idempotence;
mod lock;
pub mod lost;
mod open;
pub mod producers;
mod read;
mod recovery;
#[cfg(test)]
mod restart_tests;
mod retention;
mod roll;
#[cfg(test)]
mod stale_view_tests;
mod sync;
mod view;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use self::append::write_index_entry;
pub use self::compaction::{CompactionStats, DirtyRatio, Pace};
pub use self::config::{CleanerConfig, FsyncPolicy, LogConfig, OnCorruption};
use self::producers::ProducerTable;
pub use self::read::{ChunkBytes, ReadChunk, ReadResult};
use self::view::View;
use crate::settings::SharedSettings;
use crate::shm::{ControlBlock, Head};
use crate::Result;

/// How long a reader spins on a head being published before suspecting a dead writer.
const HEAD_SPINS: u32 = 100_000;

/// Name of the control block file in a partition directory.
pub use crate::paths::CONTROL_FILE;

/// What an append wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records.
    pub count: u32,
    /// The batch repeated one its producer already wrote (same sequence numbers): nothing
    /// was written and the offsets are the original's.
    pub duplicate: bool,
}

/// What [`PartitionLog::append_within`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bounded {
    /// The batch was written (or repeated one written before: see [`Appended::duplicate`]).
    Written(Appended),
    /// Nothing was written: the partition's end would have passed the bound. This many
    /// records would fit.
    NoRoom(u64),
}

/// What [`PartitionLog::append_if`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The batch was written (or repeated one written before: see [`Appended::duplicate`]).
    Written(Appended),
    /// Nothing was written: the check made under the append lock refused it.
    Refused,
}

/// One partition of a topic.
pub struct PartitionLog {
    dir: PathBuf,
    topic: String,
    partition: u32,
    /// This process's settings (fsync, rolling by age, producer expiry); the file-shaping
    /// ones come from `settings`, which every process shares.
    config: LogConfig,
    settings: Arc<SharedSettings>,
    control: ControlBlock,
    view: RwLock<View>,
    /// Set by appends, cleared by [`Self::sync`]: what the interval syncer looks at.
    dirty: AtomicBool,
    /// Rung after every append so sleeping consumers (in any process) wake up.
    doorbell: std::sync::OnceLock<Arc<crate::shm::doorbell::Doorbell>>,
    /// Producer state for idempotence and transactions; `None` until first needed.
    producers: Mutex<Option<ProducerTable>>,
    /// Set by [`Self::close`]: appends and repairs check it under the append lock.
    closed: AtomicBool,
    /// Set once `open` finished recovery: only then may closing trim the files.
    opened: AtomicBool,
    /// Set when a sync of this partition failed, or a failed roll could not be undone: from
    /// then on this process refuses to append or sync here, because the kernel may have
    /// dropped the pages it could not write and a retried sync could report success without
    /// them (see `crate::fs`). Reopening the store recovers from the files themselves.
    failed: AtomicBool,
}

/// Milliseconds since the Unix epoch (before it: negative, rounded down).
///
/// Read with `clock_gettime` directly: `SystemTime::now().duration_since(UNIX_EPOCH)` cost
/// ~50 more instructions of every one-message append (its checked subtraction and division).
pub fn now_ms() -> i64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    t.tv_sec * 1000 + t.tv_nsec / 1_000_000
}

/// Seconds since the Unix epoch, read from the kernel's coarse clock (several times cheaper
/// than [`now_ms`]'s on a virtual machine) and put two of its ticks ahead. The coarse clock
/// shows the time of the last tick, so it is behind by about a tick (up to 5.05 ms against a
/// 4 ms resolution measured on the dev VM); two ticks ahead is at or past the true time
/// unless the kernel's ticks stopped for longer (a host not running the VM). For checks of
/// a safety margin before a deadline, where answering "less time left" a few ms early only
/// takes the careful path, and a rare late answer costs the margin, not correctness.
pub fn now_seconds_ahead() -> f64 {
    static RESOLUTION: std::sync::OnceLock<rustix::time::Timespec> = std::sync::OnceLock::new();
    let resolution =
        *RESOLUTION.get_or_init(|| rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse));
    seconds_ahead(rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse), resolution)
}

/// `coarse` plus two ticks of `resolution`, in seconds (see [`now_seconds_ahead`]).
fn seconds_ahead(coarse: rustix::time::Timespec, resolution: rustix::time::Timespec) -> f64 {
    let seconds = |t: rustix::time::Timespec| t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9;
    seconds(coarse) + 2.0 * seconds(resolution)
}

impl PartitionLog {
    /// Rings `doorbell` after every append from now on (the topic's shared doorbell).
    pub fn attach_doorbell(&self, doorbell: Arc<crate::shm::doorbell::Doorbell>) {
        let _ = self.doorbell.set(doorbell);
    }

    /// The topic this partition belongs to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition number.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This process's settings for the log (fsync, rolling by age, producer expiry).
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The topic's shared settings.
    pub fn settings(&self) -> &SharedSettings {
        &self.settings
    }

    /// First retained offset.
    ///
    /// # Errors
    /// Only if repairing a head left torn by a dead writer fails.
    pub fn start_offset(&self) -> Result<u64> {
        Ok(self.head()?.log_start)
    }

    /// The next offset to be written.
    ///
    /// # Errors
    /// As [`Self::start_offset`].
    pub fn end_offset(&self) -> Result<u64> {
        match self.control.try_next_offset(HEAD_SPINS) {
            Some(next_offset) => Ok(next_offset),
            None => Ok(self.head()?.next_offset),
        }
    }

    /// The published head. Never call it while holding the append lock.
    ///
    /// # Errors
    /// As [`Self::start_offset`].
    pub fn head(&self) -> Result<Head> {
        match self.control.try_head(HEAD_SPINS) {
            Some(head) => Ok(head),
            // A writer is stuck mid-publish or died there: the lock waits for it or repairs.
            None => Ok(self.lock()?.head()),
        }
    }

    /// Total bytes of batches in all segments.
    pub fn size_bytes(&self) -> Result<u64> {
        let head = self.head()?;
        let view = self.current_view(head)?;
        let sealed: u64 =
            view.segments.iter().filter(|s| !s.is_active()).map(|s| s.data.readable() as u64).sum();
        Ok(sealed + head.committed_pos)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> Result<usize> {
        Ok(self.current_view(self.head()?)?.segments.len())
    }

    /// True once the partition's topic was deleted, by this process or any other: one
    /// atomic load of the shared control block.
    pub fn is_deleted(&self) -> bool {
        self.control.is_deleted()
    }
}

#[cfg(test)]
mod clock_tests {
    use super::{now_seconds_ahead, seconds_ahead};
    use rustix::time::Timespec;

    #[test]
    fn ahead_is_the_coarse_time_plus_two_ticks() {
        let at = |tv_sec, tv_nsec| Timespec { tv_sec, tv_nsec };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(seconds_ahead(at(10, 500_000_000), at(0, 4_000_000)), 10.508));
        assert!(close(seconds_ahead(at(7, 999_000_000), at(0, 1_000_000)), 8.001));
        // The clock itself: seconds since the epoch (a sanity check, not a timing one).
        assert!(now_seconds_ahead() > 1.7e9);
    }
}
