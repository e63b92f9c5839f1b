//! Log compaction: rewrites a partition's sealed segments keeping the newest record of each
//! key (Kafka's log cleaner), and swaps the rewritten segments in so that a crash at any
//! point leaves either the old segments or the new ones.
//!
//! What is kept, over the sealed segments wholly below the last stable offset (the active
//! segment and open transactions are never touched):
//! - a record with a key, if it is the newest record of that key in that range (a map of
//!   key → newest offset is built over the range first), unless it is a tombstone whose
//!   timestamp is `delete_retention_ms` or more in the past (timestamps, not the time the
//!   cleaner first saw it: a tombstone with an old timestamp goes at the first compaction).
//!   In `__consumer_offsets` a commit fenced by its key's group generation does not count as
//!   newer: readers pass over it ([`crate::offsets::table`], invariant 6);
//! - every record without a key (written before the topic was made compacted);
//! - nothing of an aborted transaction; a transaction marker until it is
//!   `delete_retention_ms` old (by its timestamp) and, for a commit, none of the
//!   transaction's records are left.
//!
//! Offsets never change. Batches keep their producer id, epoch and base sequence; one that
//! lost records, or whose base offset moves back over removed batches, is rewritten with
//! full entries whose offset deltas skip the removed offsets and carries
//! [`ATTR_COMPACTED`]. Base offsets stay contiguous within a segment (each batch starts
//! where the previous one ended), so readers' continuity checks and indexes work as on any
//! segment; only the records inside batches are sparse. Consecutive segments are merged
//! while the output stays within `segment_bytes`; each output segment takes the base offset
//! of its first input segment.
//!
//! Clean segments are left alone. The checkpoint ([`CHECKPOINT_FILE`], Kafka's
//! `cleaner-offset-checkpoint`) holds the offset below which the partition was compacted and
//! the oldest timestamp of a tombstone or marker kept there: with nothing sealed past the
//! checkpoint and nothing expired since, a compaction reads no segment at all. Otherwise a
//! segment below the checkpoint is read (newer segments may overwrite its keys) but keeps
//! its files when this compaction would not change it. The checkpoint moves with the swap
//! (it is written by [`Swap::apply`]), so a crash never leaves it ahead of the segments.
//!
//! The swap (append lock held, so no process lists segments meanwhile):
//! 1. (before the lock) the new segments are written as `<name>.cleaned` files, synced
//!    (every step of a swap is, whatever the fsync policy: see [`finish_swap`]);
//! 2. the producer state as of the head is snapshotted, so no process ever rebuilds it from
//!    rewritten batches (which no longer say what their producers wrote);
//! 3. [`SWAP_FILE`] is written atomically, naming the replaced and the new base offsets:
//!    from here on the swap is decided and recovery finishes it;
//! 4. the `.cleaned` files are renamed over their final names and the replaced segments'
//!    files deleted, the checkpoint written, the swap file removed;
//! 5. the head's generation and compaction count are bumped: every process re-lists and
//!    maps the new files (old maps stay valid for readers holding them: unlinked files stay
//!    mapped).
//!
//! A crash before 3 leaves `.cleaned` leftovers that the next cleaner, or the next opener
//! alone with the partition, deletes; a crash after 3 happens with the append lock held,
//! so the next locker finds its owner dead and recovery finishes the swap. A swap file that
//! fails its CRC is reported ([`Error::Corrupt`] naming it), never guessed at.
//!
//! Only one cleaner works on a partition at a time, across processes: it holds an OFD lock
//! on [`crate::shm::CLEANER_BYTE`] of the control file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{now_ms, FsyncPolicy, PartitionLog, CONTROL_FILE};
use crate::format::compression::compress_batch;
use crate::format::{
    encode_rewritten, BatchHeader, BatchMeta, BatchView, Compression, Marker, RecordView, ATTR_COMPACTED,
    ATTR_CONTROL, ATTR_TRANSACTIONAL, BATCH_HEADER_LEN, NO_PRODUCER,
};
use crate::index::IndexEntry;
use crate::log::producers::ProducerTable;
use crate::offsets::record::{fencing, reset_prefix, Fencing};
use crate::segment::{self, file_name, Check, FileKind, OnDamage, Segment};
use crate::shm::{ofd, CLEANER_BYTE};
use crate::{Error, Result};

/// Suffix of a rewritten segment's files before the swap.
pub(super) use crate::paths::CLEANED_SUFFIX;
/// Where the cleaner keeps the offset below which the partition was compacted.
pub(super) use crate::paths::CLEANER_CHECKPOINT_FILE as CHECKPOINT_FILE;
/// The swap manifest: present only while a decided swap is being carried out.
pub(super) use crate::paths::COMPACTION_SWAP_FILE as SWAP_FILE;
const SWAP_MAGIC: &[u8; 8] = b"TLSWAP03";
/// A swap file of the second version: no compaction count.
const SWAP_MAGIC_V2: &[u8; 8] = b"TLSWAP02";
/// A swap file of the first version: no expiry field (read as "unknown"), no count.
const SWAP_MAGIC_V1: &[u8; 8] = b"TLSWAP01";
const CHECKPOINT_MAGIC: &[u8; 8] = b"TLCLEAN3";
/// A checkpoint of the second version: no compaction count.
const CHECKPOINT_MAGIC_V2: &[u8; 8] = b"TLCLEAN2";
/// A checkpoint of the first version: no expiry field (read as "unknown"), no count.
const CHECKPOINT_MAGIC_V1: &[u8; 8] = b"TLCLEAN1";
/// Index interval of rewritten segments (as of rebuilt sealed indexes).
const INDEX_INTERVAL: usize = 4096;

/// What one compaction of a partition did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Sealed segments rewritten (a clean one compaction leaves as it is is not).
    pub segments_before: usize,
    /// Segments they became.
    pub segments_after: usize,
    /// Bytes of the segments rewritten.
    pub bytes_read: u64,
    /// Bytes of the segments written.
    pub bytes_written: u64,
    /// Records read.
    pub records_read: u64,
    /// Records removed (older values, tombstones, aborted transactions, markers).
    pub records_removed: u64,
    /// Of those, tombstones past `delete_retention_ms`.
    pub tombstones_removed: u64,
    /// Every offset below this was compacted.
    pub cleaned_to: u64,
    /// The rewritten segments were swapped in (false when there was nothing to compact or
    /// retention removed segments meanwhile).
    pub swapped: bool,
}

impl CompactionStats {
    /// Adds another partition's figures.
    pub fn add(&mut self, other: &CompactionStats) {
        self.segments_before += other.segments_before;
        self.segments_after += other.segments_after;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.records_read += other.records_read;
        self.records_removed += other.records_removed;
        self.tombstones_removed += other.tombstones_removed;
        self.swapped |= other.swapped;
    }
}

/// How much of a partition's closed segments compaction has not seen yet (Kafka's dirty
/// ratio: dirty bytes over the bytes of all closed segments).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirtyRatio {
    /// Bytes of closed segments at or past the cleaner's checkpoint.
    pub dirty_bytes: u64,
    /// Bytes of all closed segments.
    pub total_bytes: u64,
    /// Compactions done over the partition's lifetime (each one that compacted anything:
    /// not those that found nothing new to do, nor those that gave up). Read from the same
    /// checkpoint; it restarts at 0 only if the checkpoint is lost or damaged.
    pub compactions: u64,
}

impl DirtyRatio {
    /// `dirty_bytes / total_bytes`, 0 with no closed segments.
    pub fn ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / self.total_bytes as f64
        }
    }

    /// Adds another partition's bytes.
    pub fn add(&mut self, other: &DirtyRatio) {
        self.dirty_bytes += other.dirty_bytes;
        self.total_bytes += other.total_bytes;
        self.compactions += other.compactions;
    }
}

/// FxHash's multiply-rotate over 8-byte words: keys are the caller's own data, so no
/// protection against chosen collisions is needed, and SipHash would cost more than the
/// rest of the first pass.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Keys borrow from the mapped segments, or are copied out of a compressed batch's image.
type KeyMap<'a> = HashMap<Cow<'a, [u8]>, u64, BuildHasherDefault<KeyHasher>>;
/// Per key of the offsets topic, the group generation of the commit a reader applies last.
type FenceMap<'a> = HashMap<Cow<'a, [u8]>, i64, BuildHasherDefault<KeyHasher>>;

/// How a compaction paces itself: the background cleaner keeps its reads and writes under
/// a budget and stops when its store closes.
#[derive(Clone, Copy, Default)]
pub struct Pace<'a> {
    /// Bytes read plus written per second, at most.
    pub bytes_per_second: Option<u64>,
    /// Set when the compaction should give up (its store is closing): it then stops
    /// between segments with [`Error::Closed`], leaving the old segments.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

struct Pacer<'a> {
    pace: Pace<'a>,
    started: std::time::Instant,
    bytes: u64,
}

impl Pacer<'_> {
    /// Accounts for `bytes` more of I/O, sleeping as long as the budget needs, in short
    /// naps so a stop is noticed promptly.
    fn advance(&mut self, bytes: u64) -> Result<()> {
        self.bytes += bytes;
        loop {
            if self.pace.stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
                return Err(Error::Closed);
            }
            let Some(budget) = self.pace.bytes_per_second.filter(|&b| b > 0) else { return Ok(()) };
            let due = std::time::Duration::from_secs_f64(self.bytes as f64 / budget as f64);
            let elapsed = self.started.elapsed();
            if elapsed >= due {
                return Ok(());
            }
            std::thread::sleep((due - elapsed).min(std::time::Duration::from_millis(20)));
        }
    }
}

/// The path of a file's rewritten version.
fn cleaned(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(CLEANED_SUFFIX);
    PathBuf::from(name)
}

/// The partition's one cleaner, across processes, while this lives.
struct CleanerLock(File);

impl CleanerLock {
    /// Takes the lock (waiting for it with `wait`); `None` if another cleaner has it.
    fn take(dir: &Path, wait: bool) -> Result<Option<Self>> {
        let path = dir.join(CONTROL_FILE);
        let file = crate::fs::open_rw(&path, false)?;
        // A fresh open file description of our own: it excludes cleaners in this process
        // too, and no forked child shares it.
        let taken = if wait {
            ofd::set(&file, CLEANER_BYTE, 1, ofd::Lock::Exclusive).map(|()| true)
        } else {
            ofd::try_set(&file, CLEANER_BYTE, 1, ofd::Lock::Exclusive)
        };
        match taken {
            Ok(true) => Ok(Some(CleanerLock(file))),
            Ok(false) => Ok(None),
            Err(e) => Err(Error::io("lock the cleaner byte of", &path, e)),
        }
    }
}

impl Drop for CleanerLock {
    fn drop(&mut self) {
        let _ = ofd::set(&self.0, CLEANER_BYTE, 1, ofd::Lock::Unlock);
    }
}

/// A decided swap, as [`SWAP_FILE`] holds it.
///
/// | bytes | type | field                                           |
/// |-------|------|-------------------------------------------------|
/// | 0..8  |      | magic `TLSWAP03`                                |
/// | 8..12 | u32  | replaced segment count, then each base: u64     |
/// |       | u32  | new segment count, then each base: u64          |
/// |       | u64  | cleaned-to offset (the new checkpoint)          |
/// |       | i64  | expiry of the checkpoint (see [`Checkpoint`])   |
/// |       | u64  | compactions done, this one included             |
/// |       | u32  | CRC32C of everything before                     |
///
/// (`TLSWAP01` files have neither the expiry nor the count, `TLSWAP02` no count.)
#[derive(Clone, Debug, PartialEq, Eq)]
struct Swap {
    replaced: Vec<u64>,
    new: Vec<u64>,
    checkpoint: Checkpoint,
}

impl Swap {
    fn encode(&self) -> Vec<u8> {
        let mut out = SWAP_MAGIC.to_vec();
        for list in [&self.replaced, &self.new] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for base in list {
                out.extend_from_slice(&base.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.checkpoint.offset.to_le_bytes());
        out.extend_from_slice(&self.checkpoint.expires.to_le_bytes());
        out.extend_from_slice(&self.checkpoint.compactions.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let v1 = body.starts_with(SWAP_MAGIC_V1);
        let v2 = body.starts_with(SWAP_MAGIC_V2);
        if !v1 && !v2 && !body.starts_with(SWAP_MAGIC) {
            return None;
        }
        let mut at = SWAP_MAGIC.len();
        let u64_at = |at: &mut usize| -> Option<u64> {
            let v = u64::from_le_bytes(body.get(*at..*at + 8)?.try_into().ok()?);
            *at += 8;
            Some(v)
        };
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
            at += 4;
            if n > body.len() / 8 {
                return None;
            }
            for _ in 0..n {
                list.push(u64_at(&mut at)?);
            }
        }
        let offset = u64_at(&mut at)?;
        let expires = if v1 { i64::MIN } else { u64_at(&mut at)? as i64 };
        // A swap decided by an older version counts as one compaction more than the
        // checkpoint it replaces, which it cannot know: the least it can be.
        let compactions = if v1 || v2 { 1 } else { u64_at(&mut at)? };
        let [replaced, new] = lists;
        (at == body.len()).then_some(Swap {
            replaced,
            new,
            checkpoint: Checkpoint { offset, expires, compactions },
        })
    }

    /// Carries the swap out; idempotent, so a swap interrupted anywhere is finished by
    /// running it again. Synced whatever the fsync policy (see [`finish_swap`]).
    fn apply(&self, dir: &Path) -> Result<()> {
        for &base in &self.new {
            // Indexes first: the data file's rename is the last step of each segment.
            for kind in [FileKind::Index, FileKind::TimeIndex, FileKind::Data] {
                let to = dir.join(file_name(base, kind));
                let from = cleaned(&to);
                if from.exists() {
                    crate::fs::rename(&from, &to)?;
                } else if kind == FileKind::Data && !to.exists() {
                    return Err(Error::Corrupt {
                        path: dir.join(SWAP_FILE),
                        position: 0,
                        offset: base,
                        reason: format!("the rewritten segment {} is missing", from.display()),
                    });
                }
            }
        }
        for &base in self.replaced.iter().filter(|b| !self.new.contains(b)) {
            for kind in [FileKind::Data, FileKind::Index, FileKind::TimeIndex] {
                let path = dir.join(file_name(base, kind));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("delete", &path, e)),
                }
            }
        }
        write_checkpoint(dir, self.checkpoint, true)?;
        segment::sync_dir(dir)
    }
}

/// Finishes a swap that was decided but not completed (its cleaner failed, or died holding
/// the append lock). Called before segments are listed, with the append lock held. True
/// if there was one.
///
/// Every step of a swap is synced, whatever the fsync policy: it replaces segments that
/// may have been on disk for long with new files, and a power loss must leave one layout
/// or the other whole. With `fsync="never"` the renames could otherwise reach the disk
/// before the rewritten bytes (a sealed segment read back empty: its records gone
/// silently), or the swap file before its contents (an empty manifest: a store that no
/// longer opens). Kafka's cleaner flushes its output before the swap for the same reason.
///
/// # Errors
/// [`Error::Corrupt`] naming the swap file if it is damaged (nothing is changed then: which
/// of the two layouts is whole cannot be known from a damaged manifest), I/O errors.
pub(super) fn finish_swap(dir: &Path) -> Result<bool> {
    let path = dir.join(SWAP_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let swap = Swap::decode(&bytes).ok_or_else(|| Error::Corrupt {
        path: path.clone(),
        position: 0,
        offset: 0,
        reason: "damaged compaction swap manifest (a compaction was interrupted; restore the file or \
                 remove it and the segments it would have replaced by hand)"
            .into(),
    })?;
    swap.apply(dir)?;
    std::fs::remove_file(&path).map_err(|e| Error::io("delete", &path, e))?;
    segment::sync_dir(dir)?;
    Ok(true)
}

/// Deletes `.cleaned` files of a compaction that never reached its swap. Only with no
/// other cleaner working (the cleaner lock, or alone with the partition), and never while a
/// swap file names them: that swap is decided and needs them.
pub(super) fn remove_leftovers(dir: &Path) -> Result<()> {
    if dir.join(SWAP_FILE).exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if entry.file_name().to_string_lossy().ends_with(CLEANED_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// What the cleaner knows of the segments it compacted (Kafka's cleaner checkpoint, plus
/// when the next tombstone expires): with nothing new sealed and nothing expired since, a
/// compaction has nothing to do and reads no segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checkpoint {
    /// Every offset below this was compacted (0: never).
    offset: u64,
    /// The oldest timestamp of a tombstone or transaction marker kept below `offset` that
    /// `delete_retention_ms` will remove: once the horizon reaches it, the clean segments
    /// are worth compacting again. `i64::MAX` with none, `i64::MIN` when unknown.
    expires: i64,
    /// Compactions done over the partition's lifetime (see [`DirtyRatio::compactions`]);
    /// 1 in checkpoints written before it was counted (at least the one that wrote them).
    compactions: u64,
}

impl Checkpoint {
    const NONE: Checkpoint = Checkpoint { offset: 0, expires: i64::MIN, compactions: 0 };
}

/// The partition's checkpoint, [`Checkpoint::NONE`] if never compacted (or if the file is
/// damaged: then everything counts as dirty, which costs a compaction, nothing more).
fn read_checkpoint(dir: &Path) -> Checkpoint {
    let Ok(bytes) = std::fs::read(dir.join(CHECKPOINT_FILE)) else { return Checkpoint::NONE };
    let len = match bytes.get(..8) {
        Some(m) if m == CHECKPOINT_MAGIC => 36,
        Some(m) if m == CHECKPOINT_MAGIC_V2 => 28,
        Some(m) if m == CHECKPOINT_MAGIC_V1 => 20,
        _ => return Checkpoint::NONE,
    };
    if bytes.len() != len {
        return Checkpoint::NONE;
    }
    let crc = u32::from_le_bytes(bytes[len - 4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..len - 4]) != crc {
        return Checkpoint::NONE;
    }
    let offset = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let expires =
        if len >= 28 { i64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) } else { i64::MIN };
    let compactions =
        if len == 36 { u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")) } else { 1 };
    Checkpoint { offset, expires, compactions }
}

/// | bytes  | type | field                                       |
/// |--------|------|---------------------------------------------|
/// | 0..8   |      | magic `TLCLEAN3`                            |
/// | 8..16  | u64  | offset below which all is compacted         |
/// | 16..24 | i64  | expiry (see [`Checkpoint::expires`])        |
/// | 24..32 | u64  | compactions done (lifetime)                 |
/// | 32..36 | u32  | CRC32C of bytes 0..32                       |
///
/// (`TLCLEAN1` files are 20 bytes: no expiry field, no count; `TLCLEAN2` 28: no count.)
fn write_checkpoint(dir: &Path, checkpoint: Checkpoint, durable: bool) -> Result<()> {
    let mut bytes = CHECKPOINT_MAGIC.to_vec();
    bytes.extend_from_slice(&checkpoint.offset.to_le_bytes());
    bytes.extend_from_slice(&checkpoint.expires.to_le_bytes());
    bytes.extend_from_slice(&checkpoint.compactions.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    crate::fs::write_atomically(&dir.join(CHECKPOINT_FILE), &bytes, durable)
}

/// Where an output segment was before a segment was added to it.
type Mark = (usize, usize, u64, i64, usize, Option<usize>);

/// One output segment being built.
struct Output {
    base: u64,
    bytes: Vec<u8>,
    entries: Vec<IndexEntry>,
    /// Where the next batch starts (base offsets stay contiguous).
    next: u64,
    max_timestamp: i64,
    last_index_pos: usize,
    /// Position of the last batch appended.
    last_batch: Option<usize>,
}

impl Output {
    fn new(base: u64) -> Self {
        Output {
            base,
            bytes: Vec::new(),
            entries: Vec::new(),
            next: base,
            max_timestamp: i64::MIN,
            last_index_pos: 0,
            last_batch: None,
        }
    }

    /// Indexes the batch about to be appended at the end of `bytes`.
    fn index(&mut self, base_offset: u64) {
        let pos = self.bytes.len();
        if self.entries.is_empty() || pos - self.last_index_pos >= INDEX_INTERVAL {
            self.entries.push(IndexEntry {
                relative_offset: (base_offset - self.base) as u32,
                position: pos as u32,
                max_timestamp_before: self.max_timestamp,
            });
            self.last_index_pos = pos;
        }
    }

    fn mark(&self) -> Mark {
        (
            self.bytes.len(),
            self.entries.len(),
            self.next,
            self.max_timestamp,
            self.last_index_pos,
            self.last_batch,
        )
    }

    fn reset(&mut self, mark: Mark) {
        self.bytes.truncate(mark.0);
        self.entries.truncate(mark.1);
        (self.next, self.max_timestamp, self.last_index_pos, self.last_batch) =
            (mark.2, mark.3, mark.4, mark.5);
    }

    /// Ends the segment at `end` (where the next segment begins): the offsets removed after
    /// its last kept record become part of its last batch, so segments still continue each
    /// other. An empty output segment has no batch to carry them.
    fn finish(&mut self, end: u64) {
        if let Some(pos) = self.last_batch.filter(|_| self.next < end) {
            crate::format::extend_to(&mut self.bytes[pos..], end);
            self.next = end;
        }
    }

    /// Writes the segment's files under their `.cleaned` names, synced (see [`finish_swap`]).
    fn write(&self, dir: &Path) -> Result<()> {
        let paths = segment::SegmentPaths::new(dir, self.base);
        let (mut o, mut t) = (Vec::new(), Vec::new());
        for e in &self.entries {
            o.extend_from_slice(&e.offset_bytes());
            t.extend_from_slice(&e.time_bytes());
        }
        for (path, bytes) in [(&paths.data, &self.bytes), (&paths.index, &o), (&paths.time_index, &t)] {
            let path = cleaned(path);
            crate::fs::write_file(&path, bytes)?;
            let f = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            crate::fs::sync_all(&f, &path)?;
        }
        Ok(())
    }
}

/// What the rewrite carries from batch to batch.
struct Rewrite<'a> {
    newest: KeyMap<'a>,
    /// The offsets topic only: each key's fence. A commit of a lower group generation than
    /// its key's is passed over by every reader ([`crate::offsets::table`], invariant 6), so
    /// it is not the newest record of its key here either: keeping it instead of the commit
    /// before it would make a reader opening after compaction apply it.
    fences: Option<FenceMap<'a>>,
    /// Producer state at the plan (for aborted transactions), if the log has any.
    table: Option<ProducerTable>,
    /// Per producer: a record of its current transaction was kept.
    kept_in_txn: HashMap<i64, bool>,
    /// Tombstones and markers at or before this timestamp go.
    horizon: i64,
    /// The oldest timestamp of a tombstone or marker kept that a later horizon removes.
    expires: i64,
    stats: CompactionStats,
}

impl<'a> Rewrite<'a> {
    fn aborted(&self, b: &BatchView<'_>) -> bool {
        let h = &b.header;
        h.attributes & ATTR_TRANSACTIONAL != 0
            && h.attributes & ATTR_CONTROL == 0
            && self.table.as_ref().is_some_and(|t| t.is_aborted(h.producer_id, h.base_offset))
    }

    /// First pass: the newest offset of every key.
    fn map_segment(&mut self, seg: &'a Segment) -> Result<bool> {
        let mut producers = false;
        for batch in batches(seg) {
            let (pos, batch) = batch?;
            let h = batch.header;
            producers |= h.producer_id != NO_PRODUCER;
            if h.attributes & ATTR_CONTROL != 0 || self.aborted(&batch) {
                continue;
            }
            if batch.codec() != Compression::None {
                let image = plain_image(seg, pos, &batch)?;
                for r in BatchView::parse_validated(&image).records() {
                    if let Some(key) = r.key {
                        let value = (!r.tombstone).then_some(r.value);
                        self.note(key.to_vec().into(), value, r.offset);
                    }
                }
                continue;
            }
            for r in batch.records() {
                if let Some(key) = r.key {
                    self.note(key.into(), (!r.tombstone).then_some(r.value), r.offset);
                }
            }
        }
        Ok(producers)
    }

    /// Notes the record at `offset` (`value` `None`: a tombstone) as the newest of `key`,
    /// unless the offsets topic's fence passes it over (see [`Rewrite::fences`]).
    fn note(&mut self, key: Cow<'a, [u8]>, value: Option<&[u8]>, offset: u64) {
        if let Some(fences) = &mut self.fences {
            match fencing(key.as_ref(), value) {
                Fencing::Commit(generation) => {
                    if generation >= 0 && fences.get(key.as_ref()).is_some_and(|&fence| generation < fence) {
                        return;
                    }
                    fences.insert(key.clone(), generation);
                }
                Fencing::Reset { group, topic, incarnation } => {
                    let prefix = reset_prefix(group, topic, incarnation);
                    fences.retain(|k, _| !k.starts_with(&prefix));
                }
                Fencing::Other => {
                    fences.remove(key.as_ref());
                }
            }
        }
        self.newest.insert(key, offset);
    }

    /// Second pass over one segment, appending what is kept to `out`.
    fn rewrite_segment(&mut self, seg: &Segment, out: &mut Output) -> Result<()> {
        for batch in batches(seg) {
            let (pos, stored) = batch?;
            // A compressed batch is read (and, when records go, rewritten) through its
            // uncompressed image: the header without codec bits, the plain body.
            let image = match stored.codec() {
                Compression::None => None,
                _ => Some(plain_image(seg, pos, &stored)?),
            };
            let batch = image.as_deref().map_or(stored, |image| BatchView::parse_validated(image));
            let h = batch.header;
            self.stats.records_read += u64::from(h.record_count);
            let mut kept: Vec<RecordView<'_>> = Vec::new();
            if h.attributes & ATTR_CONTROL != 0 {
                let data_kept = self.kept_in_txn.remove(&h.producer_id).unwrap_or(false);
                let commit = Marker::of(&batch) == Some(Marker::Commit);
                if h.max_timestamp <= self.horizon && !(commit && data_kept) {
                    self.stats.records_removed += u64::from(h.record_count);
                    continue;
                }
                if h.max_timestamp > self.horizon {
                    // (One kept for its transaction's records goes only when they do, and
                    // they go only for newer records of their keys: dirty segments.)
                    self.expires = self.expires.min(h.max_timestamp);
                }
                kept.extend(batch.records());
            } else if self.aborted(&batch) {
                self.stats.records_removed += u64::from(h.record_count);
                continue;
            } else {
                for r in batch.records() {
                    let keep = match r.key {
                        None => true,
                        Some(key) => {
                            self.newest.get(key) == Some(&r.offset)
                                && !(r.tombstone && r.timestamp <= self.horizon)
                        }
                    };
                    if keep {
                        if r.tombstone && r.key.is_some() {
                            self.expires = self.expires.min(r.timestamp);
                        }
                        kept.push(r);
                    } else if r.tombstone && self.newest.get(r.key.unwrap_or_default()) == Some(&r.offset) {
                        self.stats.tombstones_removed += 1;
                    }
                }
                self.stats.records_removed += u64::from(h.record_count) - kept.len() as u64;
                if h.attributes & ATTR_TRANSACTIONAL != 0 && !kept.is_empty() {
                    self.kept_in_txn.insert(h.producer_id, true);
                }
            }
            if kept.is_empty() {
                continue;
            }
            out.index(out.next);
            out.last_batch = Some(out.bytes.len());
            let whole = kept.len() == h.record_count as usize && h.base_offset == out.next;
            let header = if whole {
                // As stored (still compressed, if it was).
                out.bytes.extend_from_slice(stored.bytes());
                stored.header
            } else {
                let meta = BatchMeta {
                    base_offset: out.next,
                    attributes: h.attributes | ATTR_COMPACTED,
                    producer_id: h.producer_id,
                    producer_epoch: h.producer_epoch,
                    base_sequence: h.base_sequence,
                };
                let start = out.bytes.len();
                let header = match encode_rewritten(&mut out.bytes, meta, &kept) {
                    Some(header) => header,
                    None => {
                        // The kept records' timestamps lie too far apart for one batch's
                        // deltas: keep the whole batch (its first record is the reference).
                        self.stats.records_removed -= (h.record_count as usize - kept.len()) as u64;
                        // Tombstones the horizon removes stay: worth another look any time.
                        self.expires = i64::MIN;
                        let all: Vec<RecordView<'_>> = batch.records().collect();
                        encode_rewritten(&mut out.bytes, meta, &all).expect("the batch's own deltas fit")
                    }
                };
                recompress(&mut out.bytes, start, header, stored.codec())
            };
            out.next = header.next_offset();
            out.max_timestamp = out.max_timestamp.max(header.max_timestamp);
        }
        Ok(())
    }
}

/// Compresses the plain batch at `bytes[start..]` with the codec its source batch had, so a
/// compressed topic stays compressed once compacted; returns the header as stored.
fn recompress(bytes: &mut Vec<u8>, start: usize, header: BatchHeader, codec: Compression) -> BatchHeader {
    if codec == Compression::None {
        return header;
    }
    let mut packed = Vec::new();
    let plain = &bytes[start..];
    let stored = compress_batch(&plain[..BATCH_HEADER_LEN], &plain[BATCH_HEADER_LEN..], codec, &mut packed);
    bytes.truncate(start);
    bytes.extend_from_slice(&packed[..stored.total_len]);
    stored
}

/// The checked uncompressed image of the compressed batch at `pos` of `seg` (the readers'
/// own, see `read::decompressed`).
fn plain_image(seg: &Segment, pos: usize, batch: &BatchView<'_>) -> Result<Arc<Vec<u8>>> {
    super::read::decompressed(&seg.data, pos, batch)
        .map_err(|reason| seg.corrupt(pos, batch.header.base_offset, reason))
}

/// The CRC-checked batches of a sealed segment with their positions; damage is an error
/// naming the segment (compaction never rewrites what it cannot read), zeros at the end (a
/// trim lost in a power failure) end the segment.
fn batches(seg: &Segment) -> impl Iterator<Item = Result<(usize, BatchView<'_>)>> {
    seg.cursor(0, seg.data.readable(), seg.base, Check::Crc, OnDamage::Error)
        .zero_tail(true)
        .map(|found| found.map(|b| (b.position, b.view().expect("checked by the cursor"))))
}

impl PartitionLog {
    /// Compacts the partition's sealed segments below the last stable offset now (see the
    /// module documentation). With `wait`, waits for another cleaner of the partition (in
    /// any process) to finish first; without, returns `None` if one is working.
    ///
    /// Appends go on meanwhile: the append lock is held only to plan and to swap.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if the topic is not compacted, [`Error::Corrupt`] for a
    /// damaged sealed segment (nothing is changed), I/O errors (the old segments stay).
    pub fn compact(&self, wait: bool) -> Result<Option<CompactionStats>> {
        self.compact_paced(wait, Pace::default())
    }

    /// As [`Self::compact`], keeping to `pace` (a stop set meanwhile ends it with
    /// [`Error::Closed`], the old segments kept).
    ///
    /// # Errors
    /// As [`Self::compact`].
    pub fn compact_paced(&self, wait: bool, pace: Pace<'_>) -> Result<Option<CompactionStats>> {
        self.settings.refresh()?;
        if !self.settings.compacted() {
            return Err(Error::InvalidConfig(format!(
                "topic {:?} is not compacted: create or alter it with cleanup_policy=\"compact\"",
                self.topic
            )));
        }
        self.check_not_failed()?;
        if self.control.is_inherited() {
            return Err(Error::Forked);
        }
        let Some(_cleaner) = CleanerLock::take(&self.dir, wait)? else { return Ok(None) };
        remove_leftovers(&self.dir)?;
        let result = self.compact_locked(&mut Pacer { pace, started: std::time::Instant::now(), bytes: 0 });
        if result.is_err() {
            let _ = remove_leftovers(&self.dir);
        }
        result.map(Some)
    }

    fn compact_locked(&self, pacer: &mut Pacer<'_>) -> Result<CompactionStats> {
        // Plan under the append lock: which sealed segments, and the producer state that
        // says which transactions were aborted.
        let (chosen, table) = {
            let guard = self.lock()?;
            self.refresh_if_stale(&guard)?;
            let head = guard.head();
            let view = self.read_view()?;
            let (lso, table) = if head.transactional != 0 {
                let mut t = self.producer_table()?;
                let table = self.catch_up(&mut t, &view, &head)?;
                (table.last_stable_offset(head.next_offset), Some(table.clone()))
            } else {
                (head.next_offset, None)
            };
            let mut chosen: Vec<(Arc<Segment>, u64)> = Vec::new();
            for pair in view.segments.windows(2) {
                // A segment's offsets end where the next one begins.
                if pair[1].base > lso {
                    break;
                }
                chosen.push((pair[0].clone(), pair[1].base));
            }
            (chosen, table)
        };
        let stats = CompactionStats::default();
        let Some(&(_, cleaned_to)) = chosen.last() else { return Ok(stats) };
        let horizon = now_ms().saturating_sub(self.settings.delete_retention_ms());
        let checkpoint = read_checkpoint(&self.dir);
        if cleaned_to <= checkpoint.offset && horizon < checkpoint.expires {
            // Clean: nothing sealed since the last compaction and no tombstone or marker
            // expired since; the segments are not even read.
            return Ok(stats);
        }
        let mut rewrite = Rewrite {
            newest: KeyMap::default(),
            fences: (self.topic == crate::paths::OFFSETS_TOPIC).then(FenceMap::default),
            table,
            kept_in_txn: HashMap::new(),
            horizon,
            expires: i64::MAX,
            stats,
        };
        let mut producers = false;
        for (seg, _) in &chosen {
            producers |= rewrite.map_segment(seg)?;
            pacer.advance(seg.data.readable() as u64)?;
        }
        let limit = self.settings.segment_bytes().min(u32::MAX as usize);
        let mut written: Vec<u64> = Vec::new();
        let mut replaced: Vec<u64> = Vec::new();
        // The output segment being built, and whether any input went into it.
        let mut out = Output::new(chosen[0].0.base);
        let mut fed = false;
        for (seg, end) in &chosen {
            let readable = seg.data.readable() as u64;
            if seg.base < checkpoint.offset {
                // A segment compacted before: if this compaction would leave it as it is
                // (nothing of it goes, it starts where its data says), it stays, unwritten.
                let saved = (rewrite.kept_in_txn.clone(), rewrite.stats);
                let mut alone = Output::new(seg.base);
                rewrite.rewrite_segment(seg, &mut alone)?;
                let unchanged = rewrite.stats.records_removed == saved.1.records_removed
                    && seg.data.read(0, seg.data.readable()) == Some(&alone.bytes[..]);
                if unchanged {
                    if fed {
                        out.finish(seg.base);
                        out.write(&self.dir)?;
                        rewrite.stats.bytes_written += out.bytes.len() as u64;
                        pacer.advance(out.bytes.len() as u64)?;
                        written.push(out.base);
                    }
                    rewrite.stats.bytes_read += readable;
                    out = Output::new(*end);
                    fed = false;
                    pacer.advance(readable)?;
                    continue;
                }
                (rewrite.kept_in_txn, rewrite.stats) = saved;
            }
            replaced.push(seg.base);
            fed = true;
            let written_before = out.bytes.len() as u64 + rewrite.stats.bytes_written;
            rewrite.stats.bytes_read += readable;
            let mark = out.mark();
            let saved = (rewrite.kept_in_txn.clone(), rewrite.stats);
            let span_ok = end - out.base <= u64::from(u32::MAX);
            if span_ok {
                rewrite.rewrite_segment(seg, &mut out)?;
            }
            if !span_ok || (out.bytes.len() > limit && mark.0 > 0) {
                // Does not fit: the group so far becomes a segment, this one starts the next.
                out.reset(mark);
                (rewrite.kept_in_txn, rewrite.stats) = saved;
                rewrite.stats.bytes_read += readable;
                out.finish(seg.base);
                out.write(&self.dir)?;
                rewrite.stats.bytes_written += out.bytes.len() as u64;
                written.push(out.base);
                out = Output::new(seg.base);
                rewrite.rewrite_segment(seg, &mut out)?;
            }
            let written =
                (out.bytes.len() as u64 + rewrite.stats.bytes_written).saturating_sub(written_before);
            pacer.advance(readable + written)?;
        }
        if fed {
            out.finish(cleaned_to);
            out.write(&self.dir)?;
            rewrite.stats.bytes_written += out.bytes.len() as u64;
            written.push(out.base);
        }
        segment::sync_dir(&self.dir)?;
        let mut stats = rewrite.stats;
        stats.segments_before = replaced.len();
        stats.segments_after = written.len();
        stats.cleaned_to = cleaned_to;
        // This compaction counts from here: it either moves the checkpoint alone or swaps
        // (and the swap carries the checkpoint, so a swap finished by recovery counts too).
        let checkpoint = Checkpoint {
            offset: cleaned_to,
            expires: rewrite.expires,
            compactions: checkpoint.compactions.saturating_add(1),
        };
        drop(rewrite);
        if replaced.is_empty() {
            // Every segment stays: only the checkpoint moves (under the cleaner lock, the
            // only writer of it). Synced as the policy says: without a swap it only saves
            // work, and a checkpoint lost or damaged reads as none.
            write_checkpoint(&self.dir, checkpoint, self.config.fsync != FsyncPolicy::Never)?;
            return Ok(stats);
        }
        let swap = Swap { replaced, new: written, checkpoint };
        stats.swapped = self.swap_in(&swap, producers)?;
        Ok(stats)
    }

    /// Steps 2 to 5 of the swap, under the append lock. False (and the rewritten files
    /// removed) if retention deleted some of the replaced segments meanwhile.
    fn swap_in(&self, swap: &Swap, producers: bool) -> Result<bool> {
        let mut guard = self.lock()?;
        self.refresh_if_stale(&guard)?;
        let mut head = guard.head();
        {
            let view = self.read_view()?;
            let sealed = &view.segments[..view.segments.len() - 1];
            let present = head.log_start <= swap.replaced[0]
                && swap.replaced.iter().all(|b| sealed.iter().any(|s| s.base == *b));
            if !present {
                drop(view);
                drop(guard);
                remove_leftovers(&self.dir)?;
                return Ok(false);
            }
            if producers || head.transactional != 0 {
                self.snapshot_now(&view, &head, true)?;
            }
        }
        crate::fs::write_atomically(&self.dir.join(SWAP_FILE), &swap.encode(), true)?;
        // Decided: from here on a failure leaves the swap file for the next re-listing (in
        // any process) or recovery to finish.
        let done = (|| {
            swap.apply(&self.dir)?;
            let path = self.dir.join(SWAP_FILE);
            std::fs::remove_file(&path).map_err(|e| Error::io("delete", &path, e))
        })();
        // Published either way: every process re-lists, and re-listing finishes a swap
        // left half done (see `refresh`).
        head.generation += 1;
        head.compactions += 1;
        guard.publish(head);
        done?;
        self.refresh(&guard)?;
        Ok(true)
    }

    /// The records a committed read of the partition yields now, from its start offset to
    /// its last stable offset (tombstones included; transaction markers, aborted and still
    /// open transactions left out). A compacted partition's offsets are sparse, so this is
    /// what it holds, where `end - start` counts the offsets. It reads (and checks) every
    /// batch: the cost of reading the partition once, without copying any record.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn record_count(&self) -> Result<u64> {
        let mut count = 0u64;
        let mut offset = self.start_offset()?;
        loop {
            let read = match self.read(offset, 1 << 20, 64 << 20) {
                Ok(read) => read,
                // Retention (compact,delete) moved the start meanwhile.
                Err(Error::OffsetOutOfRange { start, .. }) if start > offset => {
                    offset = start;
                    continue;
                }
                Err(e) => return Err(e),
            };
            count += read.count as u64;
            if read.next_offset == offset {
                return Ok(count);
            }
            offset = read.next_offset;
        }
    }

    /// The partition's dirty ratio: bytes of closed segments compaction has not seen over
    /// the bytes of all closed segments.
    ///
    /// # Errors
    /// As [`Self::size_bytes`].
    pub fn dirty_ratio(&self) -> Result<DirtyRatio> {
        let head = self.head()?;
        let view = self.current_view(head)?;
        let checkpoint = read_checkpoint(&self.dir);
        let mut ratio = DirtyRatio { compactions: checkpoint.compactions, ..DirtyRatio::default() };
        let checkpoint = checkpoint.offset;
        for seg in view.segments.iter().filter(|s| !s.is_active()) {
            let bytes = seg.data.readable() as u64;
            ratio.total_bytes += bytes;
            if seg.base >= checkpoint {
                ratio.dirty_bytes += bytes;
            }
        }
        Ok(ratio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn swap_manifest_round_trips() {
        let swap = Swap {
            replaced: vec![0, 10, 20],
            new: vec![0, 20],
            checkpoint: Checkpoint { offset: 31, expires: -5, compactions: 4 },
        };
        assert_eq!(Swap::decode(&swap.encode()), Some(swap));
    }

    #[test]
    fn a_first_version_checkpoint_reads_with_an_unknown_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let mut v1 = CHECKPOINT_MAGIC_V1.to_vec();
        v1.extend_from_slice(&42u64.to_le_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(dir.path().join(CHECKPOINT_FILE), &v1).unwrap();
        // Unknown expiry: the next compaction looks at the clean segments again.
        assert_eq!(read_checkpoint(dir.path()), Checkpoint { offset: 42, expires: i64::MIN, compactions: 1 });
        let now = Checkpoint { offset: 50, expires: 7, compactions: 9 };
        write_checkpoint(dir.path(), now, false).unwrap();
        assert_eq!(read_checkpoint(dir.path()), now);
        let mut bytes = std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
        bytes[17] ^= 1;
        std::fs::write(dir.path().join(CHECKPOINT_FILE), &bytes).unwrap();
        assert_eq!(read_checkpoint(dir.path()), Checkpoint::NONE, "damage: all dirty");
    }

    #[test]
    fn a_second_version_checkpoint_and_swap_count_one_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut v2 = CHECKPOINT_MAGIC_V2.to_vec();
        v2.extend_from_slice(&42u64.to_le_bytes());
        v2.extend_from_slice(&7i64.to_le_bytes());
        let crc = crc32c::crc32c(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(dir.path().join(CHECKPOINT_FILE), &v2).unwrap();
        assert_eq!(read_checkpoint(dir.path()), Checkpoint { offset: 42, expires: 7, compactions: 1 });
        let swap = Swap {
            replaced: vec![0],
            new: vec![0],
            checkpoint: Checkpoint { offset: 5, expires: 3, compactions: 8 },
        };
        let mut bytes = swap.encode();
        // The same manifest as version 2 wrote it: magic 2, no count.
        bytes.truncate(bytes.len() - 12);
        bytes[..8].copy_from_slice(SWAP_MAGIC_V2);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let decoded = Swap::decode(&bytes).expect("a TLSWAP02 manifest");
        assert_eq!(decoded.checkpoint, Checkpoint { offset: 5, expires: 3, compactions: 1 });
    }

    #[test]
    fn a_first_version_swap_manifest_still_decodes() {
        let mut v1 = SWAP_MAGIC_V1.to_vec();
        for list in [&[0u64, 10][..], &[0u64][..]] {
            v1.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for b in list {
                v1.extend_from_slice(&b.to_le_bytes());
            }
        }
        v1.extend_from_slice(&20u64.to_le_bytes());
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let swap = Swap::decode(&v1).expect("a TLSWAP01 manifest");
        assert_eq!(swap.checkpoint, Checkpoint { offset: 20, expires: i64::MIN, compactions: 1 });
        assert_eq!((swap.replaced, swap.new), (vec![0, 10], vec![0]));
    }

    proptest! {
        #[test]
        fn any_corruption_is_an_error_never_a_panic(
            replaced in proptest::collection::vec(any::<u64>(), 0..6),
            at in any::<prop::sample::Index>(),
            junk in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let swap = Swap {
                new: replaced.iter().step_by(2).copied().collect(),
                replaced,
                checkpoint: Checkpoint { offset: 9, expires: 3, compactions: 2 },
            };
            let mut bytes = swap.encode();
            let i = at.index(bytes.len());
            let changed = bytes[i] != junk;
            bytes[i] = junk;
            if changed {
                prop_assert!(Swap::decode(&bytes).is_none());
            }
            let good = swap.encode();
            prop_assert!(Swap::decode(&good[..cut.index(good.len())]).is_none());
        }
    }
}
