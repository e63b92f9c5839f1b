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

mod compaction;
pub mod config;
mod crc_worker;
mod idempotence;
pub mod lost;
pub mod producers;
mod read;
mod recovery;
mod seal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

pub use self::compaction::{CompactionStats, DirtyRatio, Pace};
pub use self::config::{CleanerConfig, FsyncPolicy, LogConfig, OnCorruption};
use self::producers::{ProducerTable, Verdict};
pub use self::read::{ChunkBytes, ReadChunk, ReadResult};
use crate::format::compression::compress_batch;
use crate::format::{
    encode_batch, encoded_len, BatchHeader, BatchMeta, Compression, Marker, Record, ValuesBatch,
    ATTR_CONTROL, ATTR_TRANSACTIONAL, BATCH_HEADER_LEN, NO_PRODUCER,
};
use crate::index::{IndexEntry, INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::segment::{self, Segment};
use crate::settings::SharedSettings;
use crate::shm::{ControlBlock, Head, Opened, WriteGuard};
use crate::{Error, Result};

/// How long a reader spins on a head being published before suspecting a dead writer.
const HEAD_SPINS: u32 = 100_000;

/// Batches at least this large are written with `pwrite` rather than through the map.
const PWRITE_MIN_BYTES: usize = 32 << 10;

thread_local! {
    /// Encoding buffer for `pwrite` appends, reused so large appends do not allocate.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Buffers of compressed appends, reused likewise: the batch encoded plain, then the
    /// batch compressed. Taken out of their cells for an append, never borrowed across it.
    static PLAIN: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    static PACKED: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Grows `buf` to at least `len` bytes (never shrinks: a reused buffer stops allocating).
fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

/// Largest compression buffer a thread keeps between appends: batches of up to a few
/// MiB reuse theirs; a rare huge one does not hold its memory for the thread's life.
const MAX_KEPT_BUFFER_BYTES: usize = 8 << 20;

/// Puts `buf` back into `cell` for the next append, unless it is huge.
fn keep(cell: &'static std::thread::LocalKey<std::cell::Cell<Vec<u8>>>, buf: Vec<u8>) {
    if buf.len() <= MAX_KEPT_BUFFER_BYTES {
        cell.set(buf);
    }
}

/// What an append writes.
#[derive(Clone, Copy)]
enum Body<'a> {
    /// Records, encoded into a batch.
    Records(&'a [Record<'a>]),
    /// Plain values already back to back: written as they are after the batch's head.
    Values(ValuesBatch<'a>),
    /// A whole batch encoded (and compressed) before the append lock was taken, but for
    /// its base offset: that is outside the CRC and given under the lock.
    Encoded(&'a [u8], BatchHeader),
}

impl Body<'_> {
    fn count(&self) -> usize {
        match self {
            Body::Records(records) => records.len(),
            Body::Values(batch) => batch.lengths().len(),
            Body::Encoded(_, header) => header.record_count as usize,
        }
    }
}

/// Writes a [`ValuesBatch`] at `pos` of the active segment with two `pwrite`s: the values
/// straight from the caller's buffer (no copy of ours), while the helper thread extends the
/// head's CRC over them, then the head, which needs that CRC. Nothing is visible to readers
/// until the caller publishes, so the order of the two writes does not matter to them; a
/// crash between them leaves a torn batch that recovery truncates.
fn write_values(
    guard: &WriteGuard<'_>,
    active: &Segment,
    pos: usize,
    meta: BatchMeta,
    batch: ValuesBatch<'_>,
) -> Result<BatchHeader> {
    let head_len = batch.head_len();
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < head_len {
            scratch.resize(head_len, 0);
        }
        let head = &mut scratch[..head_len];
        let (header, head_crc) = batch.encode_head(head, meta);
        let crc = crc_worker::start(head_crc, batch.values());
        active.write_at(guard, pos + head_len, batch.values())?;
        let header = ValuesBatch::seal(head, header, crc.finish());
        active.write_at(guard, pos, head).map(|()| header)
    })
}

/// Name of the control block file in a partition directory.
pub const CONTROL_FILE: &str = "control";

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

impl Bounded {
    fn written(self) -> Option<Appended> {
        match self {
            Bounded::Written(appended) => Some(appended),
            Bounded::NoRoom(_) => None,
        }
    }
}

/// This process's picture of the segments.
struct View {
    generation: u64,
    /// The head's compaction count when listed: a different count means sealed segments
    /// were replaced by files of the same names, so no map of them may be reused.
    compactions: u64,
    /// Sealed segments in offset order, then the active one last.
    segments: Vec<Arc<Segment>>,
}

impl View {
    fn active(&self) -> &Arc<Segment> {
        self.segments.last().expect("a log always has an active segment")
    }
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

/// Milliseconds since the Unix epoch, at the kernel tick's resolution (a few ms) but
/// several times cheaper than [`now_ms`]: good enough for deciding when to roll.
fn coarse_now_ms() -> i64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    t.tv_sec * 1000 + t.tv_nsec / 1_000_000
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens (creating if needed) the partition log in `dir`. If no other process has it
    /// open, the tail of the active segment is validated and a torn or damaged tail is
    /// truncated before anything else can read it.
    ///
    /// # Errors
    /// I/O errors, foreign files in the directory, or corruption in sealed segments'
    /// structure that makes the log unusable.
    pub fn open(dir: &Path, topic: &str, partition: u32, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let settings = Arc::new(SharedSettings::fixed(config.topic_settings()));
        Self::open_with_settings(dir, topic, partition, config, settings)
    }

    /// As [`Self::open`], with the topic's shared settings deciding the shape of new
    /// segments, message limits and retention (`config`'s own values for those are unused).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with_settings(
        dir: &Path,
        topic: &str,
        partition: u32,
        config: LogConfig,
        settings: Arc<SharedSettings>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        Self::open_existing(dir, topic, partition, config, settings)
    }

    /// As [`Self::open_with_settings`], but never creates the directory: a topic's
    /// partitions are opened by path, and a path whose topic was just deleted must not be
    /// brought back to life (nor a directory made inside a new topic of the same name).
    ///
    /// # Errors
    /// As [`Self::open`]; a missing directory is an I/O error of kind `NotFound`.
    pub fn open_existing(
        dir: &Path,
        topic: &str,
        partition: u32,
        config: LogConfig,
        settings: Arc<SharedSettings>,
    ) -> Result<Self> {
        config.validate()?;
        // Opening is serialised per partition (the control block's open lock, held until
        // `end_open`) so "am I the only handle?" and the recovery that follows cannot
        // interleave with another opener (see shm).
        let (control, hint) = match ControlBlock::open(&dir.join(CONTROL_FILE))? {
            Opened::Alone(c, hint) => (c, Some(hint)),
            Opened::Shared(c) => (c, None),
        };
        let log = PartitionLog {
            dir: dir.to_owned(),
            topic: topic.to_owned(),
            partition,
            config,
            settings,
            control,
            view: RwLock::new(View { generation: u64::MAX, compactions: u64::MAX, segments: Vec::new() }),
            dirty: AtomicBool::new(false),
            doorbell: std::sync::OnceLock::new(),
            producers: Mutex::new(None),
            closed: AtomicBool::new(false),
            opened: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        };
        {
            let mut guard = log.control.lock()?;
            match hint {
                Some(hint) => log.recover(&mut guard, hint, true)?,
                None if guard.owner_died() => {
                    let torn = guard.head();
                    log.recover(&mut guard, Some(torn), false)?;
                }
                None => {
                    log.refresh(&guard)?;
                    // Live processes keep the head, but it is a claim about the data, not
                    // proof: bytes damaged since (or a stale handle of this process keeping
                    // the block "shared") must not be counted as messages.
                    if !log.tail_intact(&guard)? {
                        let head = guard.head();
                        log.recover(&mut guard, Some(head), false)?;
                    }
                }
            }
        }
        log.control.end_open();
        log.opened.store(true, Ordering::Release);
        Ok(log)
    }

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
            None => Ok(self.lock(true)?.expect("blocking lock").head()),
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

    /// Marks the partition in `dir` deleted for every process without opening its log (no
    /// recovery, so a damaged partition can be deleted too): takes the open lock, maps the
    /// control block and sets the mark under the append lock. Once this returns no append
    /// in any process is in progress there, and none will write again. A missing
    /// directory has nothing to mark.
    ///
    /// # Errors
    /// I/O errors, [`Error::Locked`] if the append lock is unusable.
    pub fn mark_deleted_at(dir: &Path) -> Result<()> {
        // `open` takes the control block's open lock (released by `end_open`, or by the
        // drop on an error): no opener's recovery interleaves with the marking.
        let control = match ControlBlock::open(&dir.join(CONTROL_FILE)) {
            Ok(Opened::Alone(c, _) | Opened::Shared(c)) => c,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let marked = control.lock().map(|mut guard| guard.mark_deleted());
        control.end_open();
        marked
    }

    /// True if the partition in `dir` carries the deleted mark; read from the file, without
    /// mapping or locking it.
    ///
    /// # Errors
    /// I/O errors other than a missing control file.
    pub fn is_deleted_at(dir: &Path) -> Result<bool> {
        crate::shm::read_deleted_mark(&dir.join(CONTROL_FILE))
    }

    fn deleted(&self) -> Error {
        Error::TopicNotFound(self.topic.clone())
    }

    /// Takes the append lock, waiting for it if `wait`; `None` if it is busy and `!wait`.
    ///
    /// # Errors
    /// [`Error::Closed`] once [`Self::close`] ran (checked under the lock, so no append
    /// can write into files that closing trimmed), [`Error::Forked`] in a forked child.
    ///
    /// Every change to the partition's files goes through here, so checking the deleted
    /// mark here (after the lock, which `delete_topic` takes to set it) is what keeps a
    /// deleted topic's files and a new topic under the same name untouched.
    fn lock(&self, wait: bool) -> Result<Option<WriteGuard<'_>>> {
        let guard = self.lock_open_or_closed(wait)?;
        if guard.is_some() && self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        Ok(guard)
    }

    /// As [`Self::lock`], also after closing (for closing itself).
    fn lock_open_or_closed(&self, wait: bool) -> Result<Option<WriteGuard<'_>>> {
        let guard = if wait { Some(self.control.lock()?) } else { self.control.try_lock()? };
        if guard.is_some() && self.control.is_deleted() {
            return Err(self.deleted());
        }
        match guard {
            Some(mut g) if g.owner_died() => {
                let torn = g.head();
                self.recover(&mut g, Some(torn), false)?;
                Ok(Some(g))
            }
            other => Ok(other),
        }
    }

    /// Appends `records` as one atomic batch. With `wait == false` it returns `Ok(None)`
    /// instead of blocking when another thread or process holds the append lock, so a
    /// caller holding Python's GIL can retry after releasing it.
    ///
    /// The batch is in the page cache when this returns; with [`FsyncPolicy::Always`] it is
    /// also on disk.
    ///
    /// A `meta` with a producer id is checked against the partition's producer state first
    /// (see [`producers`]): a batch repeating one of the producer's last batches is not
    /// written again and the original offsets come back with `duplicate` set.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] for a record over `max_message_bytes` or a batch too large
    /// for a segment, [`Error::InvalidConfig`] for timestamps too far apart,
    /// [`Error::OutOfOrderSequence`] and [`Error::ProducerFenced`] from the producer check,
    /// I/O errors.
    pub fn append(&self, records: &[Record<'_>], meta: BatchMeta, wait: bool) -> Result<Option<Appended>> {
        // Unbounded: never `NoRoom`.
        Ok(self.append_records(records, meta, wait, u64::MAX, None)?.and_then(Bounded::written))
    }

    /// Checks and appends `records`, compressed with `compression` or else the topic's
    /// codec. Compressing is CPU work on the whole batch: it is done before the append
    /// lock is taken, into a batch complete but for its base offset, which is outside the
    /// CRC. Transaction markers are never compressed.
    fn append_records(
        &self,
        records: &[Record<'_>],
        meta: BatchMeta,
        wait: bool,
        max_end: u64,
        compression: Option<Compression>,
    ) -> Result<Option<Bounded>> {
        if records.is_empty() {
            return Err(Error::InvalidConfig("cannot append an empty batch".into()));
        }
        self.settings.refresh()?;
        let size = self.check_batch(records, &meta)?;
        let codec = compression.unwrap_or_else(|| self.settings.compression());
        if codec == Compression::None || meta.attributes & ATTR_CONTROL != 0 {
            return self.append_body(Body::Records(records), meta, size, wait, max_end);
        }
        let mut plain = PLAIN.take();
        grow(&mut plain, size);
        encode_batch(&mut plain[..size], meta, records);
        let mut packed = PACKED.take();
        let header =
            compress_batch(&plain[..BATCH_HEADER_LEN], &plain[BATCH_HEADER_LEN..size], codec, &mut packed);
        keep(&PLAIN, plain);
        let result = self.append_packed(&packed, header, meta, wait, max_end);
        keep(&PACKED, packed);
        result
    }

    /// Appends a batch [`compress_batch`] made at the start of `packed`.
    fn append_packed(
        &self,
        packed: &[u8],
        header: BatchHeader,
        meta: BatchMeta,
        wait: bool,
        max_end: u64,
    ) -> Result<Option<Bounded>> {
        // The uncompressed batch was checked against the segment; so must the stored one be
        // (incompressible values grow by a few bytes).
        self.check_batch_size(header.total_len)?;
        let body = Body::Encoded(&packed[..header.total_len], header);
        self.append_body(body, meta, header.total_len, wait, max_end)
    }

    /// As [`Self::append`] (waiting for the lock), only if the partition then ends at or
    /// below offset `max_end`. Checked under the append lock, so writers in any process that
    /// bound their appends by the same `max_end` (a producer's `max_lag`) never pass it
    /// together.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_within(&self, records: &[Record<'_>], meta: BatchMeta, max_end: u64) -> Result<Bounded> {
        self.append_within_as(records, meta, max_end, None)
    }

    /// As [`Self::append_within`], compressed with `compression` rather than the topic's
    /// codec when it is given (a producer's own `compression`).
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_within_as(
        &self,
        records: &[Record<'_>],
        meta: BatchMeta,
        max_end: u64,
        compression: Option<Compression>,
    ) -> Result<Bounded> {
        let bounded = self.append_records(records, meta, true, max_end, compression)?;
        Ok(bounded.expect("a blocking append returns what it did"))
    }

    /// Appends plain values that are already back to back (`Topic.append_batch(buffer,
    /// lengths=...)`) as one batch, without a producer identity. Large batches are written
    /// straight from `batch.values`, with their CRC computed on another core meanwhile.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no values or lengths that are negative or do not add up,
    /// [`Error::MessageTooLarge`] as for [`Self::append`], I/O errors.
    pub fn append_values(&self, batch: ValuesBatch<'_>) -> Result<Appended> {
        if batch.lengths().is_empty() {
            return Err(Error::InvalidConfig("cannot append an empty batch".into()));
        }
        self.settings.refresh()?;
        if self.settings.compacted() {
            return Err(self.keyless());
        }
        let lengths = batch.lengths();
        let (mut total, mut shortest, mut longest) = (0u64, i64::MAX, 0i64);
        for &len in lengths {
            total = total.wrapping_add(len as u64);
            shortest = shortest.min(len);
            longest = longest.max(len);
        }
        if shortest < 0 {
            let i = lengths.iter().position(|&len| len < 0).unwrap_or_default();
            return Err(Error::InvalidConfig(format!("lengths[{i}] is negative ({})", lengths[i])));
        }
        // Checked before the total, which a huge length could have wrapped.
        self.check_message_size(usize::try_from(longest).unwrap_or(usize::MAX))?;
        if total != batch.values().len() as u64 {
            return Err(Error::InvalidConfig(format!(
                "lengths sum to {total} but the values buffer holds {} bytes",
                batch.values().len()
            )));
        }
        let size = batch.encoded_len();
        self.check_batch_size(size)?;
        let codec = self.settings.compression();
        let appended = if codec != Compression::None {
            self.append_values_compressed(batch, codec)?
        } else if size < PWRITE_MIN_BYTES && self.config.fsync != FsyncPolicy::Always {
            // Small: encoded like any batch, straight into the map.
            let mut at = 0;
            let records: Vec<Record<'_>> = batch
                .lengths()
                .iter()
                .map(|&len| {
                    let value = &batch.values()[at..at + len as usize];
                    at += len as usize;
                    Record { timestamp: batch.timestamp(), key: None, value, headers: &[], tombstone: false }
                })
                .collect();
            self.append_body(Body::Records(&records), BatchMeta::plain(0), size, true, u64::MAX)?
        } else {
            self.append_body(Body::Values(batch), BatchMeta::plain(0), size, true, u64::MAX)?
        };
        Ok(appended.and_then(Bounded::written).expect("a blocking unbounded append returns what it appended"))
    }

    /// [`Self::append_values`] of a compressed topic: the head encoded as usual, and the
    /// body compressed straight from the caller's buffer when it is the values alone (no
    /// entries: values of one size), else from the entries and a copy of the values.
    fn append_values_compressed(
        &self,
        batch: ValuesBatch<'_>,
        codec: Compression,
    ) -> Result<Option<Bounded>> {
        let head_len = batch.head_len();
        let meta = BatchMeta::plain(0);
        let mut plain = PLAIN.take();
        let body_end = if head_len == BATCH_HEADER_LEN { head_len } else { batch.encoded_len() };
        grow(&mut plain, body_end);
        batch.encode_head(&mut plain[..head_len], meta);
        let mut packed = PACKED.take();
        let header = if head_len == BATCH_HEADER_LEN {
            compress_batch(&plain[..BATCH_HEADER_LEN], batch.values(), codec, &mut packed)
        } else {
            plain[head_len..body_end].copy_from_slice(batch.values());
            compress_batch(&plain[..BATCH_HEADER_LEN], &plain[BATCH_HEADER_LEN..body_end], codec, &mut packed)
        };
        keep(&PLAIN, plain);
        let result = self.append_packed(&packed, header, meta, true, u64::MAX);
        keep(&PACKED, packed);
        result
    }

    /// The error every append and sync gets once [`Self::failed`] is set.
    fn check_not_failed(&self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::io(
                "refuse to write after an earlier write or sync failed (reopen the store to recover)",
                &self.dir,
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        Ok(())
    }

    /// Marks the partition failed when `result` is a sync failure (see [`Self::failed`]).
    fn fail_on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        result
    }

    fn append_body(
        &self,
        body: Body<'_>,
        meta: BatchMeta,
        size: usize,
        wait: bool,
        max_end: u64,
    ) -> Result<Option<Bounded>> {
        self.check_not_failed()?;
        let Some(mut guard) = self.lock(wait)? else {
            return Ok(None);
        };
        if max_end != u64::MAX {
            let next = guard.head().next_offset;
            if next.saturating_add(body.count() as u64) > max_end {
                return Ok(Some(Bounded::NoRoom(max_end.saturating_sub(next))));
            }
        }
        let (appended, to_sync) = self.append_locked(&mut guard, body, meta, size)?;
        drop(guard);
        if appended.duplicate {
            // The original may be the write whose sync failed and caused this retry.
            if self.config.fsync == FsyncPolicy::Always {
                self.dirty.store(true, Ordering::Relaxed);
                self.sync()?;
            }
            return Ok(Some(Bounded::Written(appended)));
        }
        if let Some(bell) = self.doorbell.get() {
            bell.ring();
        }
        if let Some(segment) = to_sync {
            // Every append to a durable log goes through pwrite, so the file's dirty pages
            // are this batch's (and perhaps a concurrent appender's, which is harmless).
            self.fail_on_error(segment.sync_written())?;
        } else if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
        Ok(Some(Bounded::Written(appended)))
    }

    fn check_batch(&self, records: &[Record<'_>], meta: &BatchMeta) -> Result<usize> {
        let first = records[0].timestamp;
        // Transaction markers have no key.
        if self.settings.compacted()
            && meta.attributes & ATTR_CONTROL == 0
            && records.iter().any(|r| r.key.is_none())
        {
            return Err(self.keyless());
        }
        for r in records {
            self.check_message_size(r.value.len() + r.key.map_or(0, <[u8]>::len) + r.headers.len())?;
            if i32::try_from(r.timestamp - first).is_err() {
                return Err(Error::InvalidConfig(format!(
                    "timestamps in one batch must lie within ~24 days of the first ({first}), got {}",
                    r.timestamp
                )));
            }
        }
        let size = encoded_len(records);
        self.check_batch_size(size)?;
        Ok(size)
    }

    /// The error for a message without a key on a compacted topic (which would keep every
    /// such message forever: compaction keeps the newest record per key).
    #[cold]
    fn keyless(&self) -> Error {
        Error::InvalidConfig(format!(
            "topic {:?} is compacted (cleanup_policy={:?}): every message needs a key",
            self.topic,
            self.settings.current().map(|s| s.cleanup_policy).unwrap_or_default()
        ))
    }

    fn check_message_size(&self, size: usize) -> Result<()> {
        let limit = self.settings.max_message_bytes();
        if size > limit {
            return Err(Error::MessageTooLarge {
                size: size as u64,
                limit: limit as u64,
                what: "max_message_bytes",
            });
        }
        Ok(())
    }

    fn check_batch_size(&self, size: usize) -> Result<()> {
        let capacity = self.settings.segment_bytes();
        if size > capacity || u32::try_from(size).is_err() {
            return Err(Error::MessageTooLarge {
                size: size as u64,
                limit: capacity as u64,
                what: "segment_bytes (whole batch)",
            });
        }
        Ok(())
    }

    /// Appends under the lock; returns what was appended and, with `fsync="always"`, the
    /// segment to sync once the lock is released.
    fn append_locked(
        &self,
        guard: &mut WriteGuard<'_>,
        body: Body<'_>,
        meta: BatchMeta,
        size: usize,
    ) -> Result<(Appended, Option<Arc<Segment>>)> {
        let mut head = guard.head();
        let mut view = self.read_view()?;
        if view.generation != head.generation {
            drop(view);
            self.refresh(guard)?;
            view = self.read_view()?;
        }
        let too_old =
            self.config.segment_ms.is_some_and(|ms| coarse_now_ms() - head.segment_created_ms >= ms);
        let full = head.committed_pos as usize + size > view.active().data.len();
        if head.committed_pos > 0 && (full || too_old) {
            drop(view);
            self.roll(guard)?;
            head = guard.head();
            view = self.read_view()?;
        }
        if head.committed_pos as usize + size > view.active().data.len() {
            return Err(segment_too_small(size, view.active().data.len()));
        }
        let mut producers = None;
        if meta.producer_id != NO_PRODUCER {
            let mut table = self.producer_table()?;
            let state = self.catch_up(&mut table, &view, &head)?;
            let verdict = state.check(
                meta.producer_id,
                meta.producer_epoch,
                meta.base_sequence,
                body.count() as u32,
            )?;
            if let Verdict::Duplicate { base_offset, count } = verdict {
                return Ok((Appended { base_offset, count, duplicate: true }, None));
            }
            producers = Some(table);
        }
        let active = view.active();
        let pos = head.committed_pos as usize;
        let meta = BatchMeta { base_offset: head.next_offset, ..meta };
        let durable = self.config.fsync == FsyncPolicy::Always;
        let header = match body {
            Body::Values(batch) => write_values(guard, active, pos, meta, batch)?,
            Body::Records(records) if size >= PWRITE_MIN_BYTES || durable => {
                // Large batches go through pwrite: the kernel copies whole pages into the page
                // cache without first zeroing them, which a fault on a fresh mapped page must
                // do (on the dev VM zeroing runs at ~1.2 GB/s and dominated large appends).
                // Synced batches too: an fdatasync of pages written with pwrite skips the
                // write-protecting of mapped pages that syncing a mapping needs (58 µs rather
                // than 66 µs per commit on the dev VM).
                SCRATCH.with_borrow_mut(|scratch| {
                    // Grown once and reused: `encode_batch` overwrites every byte it is given.
                    if scratch.len() < size {
                        scratch.resize(size, 0);
                    }
                    let header = encode_batch(&mut scratch[..size], meta, records);
                    active.write_at(guard, pos, &scratch[..size]).map(|()| header)
                })?
            }
            Body::Encoded(bytes, header) => {
                let base = meta.base_offset.to_le_bytes();
                if size >= PWRITE_MIN_BYTES || durable {
                    // As for large records above; the base offset goes in its own write
                    // rather than into a copy of the batch.
                    active.write_at(guard, pos + base.len(), &bytes[base.len()..])?;
                    active.write_at(guard, pos, &base)?;
                } else {
                    active.data.prepare_write(guard, pos + size);
                    let region = active.data.write_region(guard, pos, size).ok_or_else(|| {
                        Error::InvalidConfig(format!(
                            "batch of {size} bytes does not fit in segment {}",
                            active.base
                        ))
                    })?;
                    region.copy_from_slice(bytes);
                    region[..base.len()].copy_from_slice(&base);
                }
                BatchHeader { base_offset: meta.base_offset, ..header }
            }
            Body::Records(records) => {
                active.data.prepare_write(guard, pos + size);
                let region = active.data.write_region(guard, pos, size).ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "batch of {size} bytes does not fit in segment {}",
                        active.base
                    ))
                })?;
                encode_batch(region, meta, records)
            }
        };
        let entries = head.index_entries as usize;
        // The segment's own interval, not a setting: another process may have created it
        // with other settings (see `Segment::index_interval`). A full index (possible only
        // for a segment whose index recovery rebuilt at another cadence) just stops
        // indexing: the sparse index is an optimisation, lookups scan on from the last entry.
        let due = entries == 0 || pos - head.last_index_pos as usize >= active.index_interval();
        if due && entries < active.index_slots() {
            let entry = IndexEntry {
                relative_offset: (head.next_offset - active.base) as u32,
                position: pos as u32,
                max_timestamp_before: head.max_timestamp,
            };
            write_index_entry(guard, active, entries, &entry)?;
            head.index_entries += 1;
            head.last_index_pos = pos as u64;
        }
        active.data.publish(guard, pos + size);
        active.data.release_behind(pos);
        head.committed_pos += size as u64;
        head.next_offset = header.next_offset();
        head.max_timestamp = head.max_timestamp.max(header.max_timestamp);
        if meta.attributes & (ATTR_CONTROL | ATTR_TRANSACTIONAL) != 0 {
            head.transactional = 1;
        }
        guard.publish(head);
        if let Some(table) = producers.as_mut().and_then(|t| t.as_mut()) {
            let marker = match body {
                Body::Records(records) if meta.attributes & ATTR_CONTROL != 0 => {
                    Some(if records[0].value == Marker::Commit.value() {
                        Marker::Commit
                    } else {
                        Marker::Abort
                    })
                }
                _ => None,
            };
            table.apply(&header, marker);
        }
        let appended =
            Appended { base_offset: header.base_offset, count: header.record_count, duplicate: false };
        let sync = durable.then(|| active.clone());
        Ok((appended, sync))
    }

    /// Seals the active segment and starts a new one at the next offset, then applies
    /// retention. Called with the append lock held.
    fn roll(&self, guard: &mut WriteGuard<'_>) -> Result<()> {
        let mut head = guard.head();
        let durable = self.config.fsync != FsyncPolicy::Never;
        self.snapshot_at_roll(&*self.read_view()?, &head, durable)?;
        let active = self.read_view()?.active().clone();
        // Trim first: a crash after this leaves a valid sealed-looking segment that
        // recovery simply treats as active again.
        // New segments take the topic's current settings, whichever process rolls.
        self.settings.refresh()?;
        let rolled = (|| {
            active.trim(head.committed_pos as usize, head.index_entries as usize, durable)?;
            Segment::open_active(
                &self.dir,
                head.next_offset,
                self.settings.segment_bytes(),
                self.settings.index_capacity(),
                0,
                0,
            )?;
            if durable {
                segment::sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        if let Err(e) = rolled {
            self.undo_roll(&active, head.next_offset);
            return Err(e);
        }
        head.generation += 1;
        head.active_base = head.next_offset;
        head.committed_pos = 0;
        head.index_entries = 0;
        head.last_index_pos = 0;
        head.max_timestamp = i64::MIN;
        head.segment_created_ms = now_ms();
        guard.publish(head);
        self.refresh(guard)?;
        self.apply_retention(guard)
    }

    /// Puts the files back as they were before a roll that failed (a full disk): the new
    /// segment's files go, and the active segment's trimmed files grow back to the size
    /// every process has mapped, since a write through a mapping past the end of its file
    /// is a SIGBUS. If that fails too, the partition is marked failed, so nothing is
    /// written through the mapping until a reopen.
    fn undo_roll(&self, active: &Segment, next_base: u64) {
        let new = segment::SegmentPaths::new(&self.dir, next_base);
        for path in [&new.data, &new.index, &new.time_index] {
            let _ = std::fs::remove_file(path);
        }
        if active.restore_capacity().is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
    }

    /// Deletes whole sealed segments beyond the retention limits and advances the start
    /// offset.
    ///
    /// # Errors
    /// I/O errors deleting files.
    pub fn enforce_retention(&self) -> Result<()> {
        self.settings.refresh()?;
        if self.settings.retention_bytes().is_none() && self.settings.retention_ms().is_none() {
            return Ok(());
        }
        let mut guard = self.lock(true)?.expect("blocking lock");
        self.refresh_if_stale(&guard)?;
        self.apply_retention(&mut guard)
    }

    fn apply_retention(&self, guard: &mut WriteGuard<'_>) -> Result<()> {
        if !self.settings.deletes() {
            // cleanup_policy="compact": compaction alone removes records.
            return Ok(());
        }
        let segments = self.read_view()?.segments.clone();
        let mut head = guard.head();
        let mut total: u64 =
            segments[..segments.len() - 1].iter().map(|s| s.data.readable() as u64).sum::<u64>()
                + head.committed_pos;
        let cutoff = self.settings.retention_ms().map(|ms| now_ms() - ms);
        let mut removed = 0;
        for seg in &segments[..segments.len() - 1] {
            let over_size = self.settings.retention_bytes().is_some_and(|limit| total > limit);
            let too_old = cutoff.is_some_and(|c| seg.max_timestamp() < c);
            if !(over_size || too_old) {
                break;
            }
            // Data file first: index files without data are ignored and cleaned by recovery.
            for path in [&seg.paths.data, &seg.paths.index, &seg.paths.time_index] {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("delete", path, e)),
                }
            }
            total -= seg.data.readable() as u64;
            removed += 1;
        }
        if removed > 0 {
            head.generation += 1;
            head.log_start = segments[removed].base;
            guard.publish(head);
            self.refresh(guard)?;
        }
        Ok(())
    }

    /// Flushes everything appended so far to disk.
    ///
    /// # Errors
    /// The sync failure.
    pub fn sync(&self) -> Result<()> {
        self.check_not_failed()?;
        if !self.dirty.swap(false, Ordering::Relaxed) || self.is_deleted() {
            return Ok(());
        }
        let head = self.head()?;
        let view = self.current_view(head)?;
        let active = view.active();
        if active.base == head.active_base {
            self.fail_on_error(active.sync_data(0, head.committed_pos as usize))?;
        }
        Ok(())
    }

    fn read_view(&self) -> Result<RwLockReadGuard<'_, View>> {
        self.view.read().map_err(|_| Error::Closed)
    }

    /// This process's view, re-listed first if another process changed the segments.
    fn current_view(&self, head: Head) -> Result<RwLockReadGuard<'_, View>> {
        {
            let view = self.read_view()?;
            if view.generation == head.generation {
                view.active().data.observe_published(head.committed_pos as usize);
                view.active().index.observe_published(head.index_entries as usize * INDEX_ENTRY_BYTES);
                view.active()
                    .time_index
                    .observe_published(head.index_entries as usize * TIME_INDEX_ENTRY_BYTES);
                return Ok(view);
            }
        }
        let guard = self.lock(true)?.expect("blocking lock");
        self.refresh_if_stale(&guard)?;
        drop(guard);
        self.current_view(self.head()?)
    }

    fn refresh_if_stale(&self, guard: &WriteGuard<'_>) -> Result<()> {
        if self.read_view()?.generation != guard.head().generation {
            self.refresh(guard)?;
        }
        Ok(())
    }

    /// Re-lists the segment files to match the published head. Called with the append
    /// lock held, so the files cannot change meanwhile.
    fn refresh(&self, guard: &WriteGuard<'_>) -> Result<()> {
        // A compaction swap that was decided but not carried out (its cleaner failed or
        // died) is finished first, so no listing sees half of it: one failed `open` per
        // re-listing, which only rolls, retention and compactions cause.
        compaction::finish_swap(&self.dir, self.config.fsync != FsyncPolicy::Never)?;
        self.refresh_listed(guard, &recovery::list_segments(&self.dir, false)?)
    }

    /// [`Self::refresh`] with the segment bases just listed (by recovery, under the same
    /// lock).
    fn refresh_listed(&self, guard: &WriteGuard<'_>, bases: &[u64]) -> Result<()> {
        let head = guard.head();
        let old = {
            let view = self.read_view()?;
            if view.compactions == head.compactions {
                view.segments.clone()
            } else {
                // A compaction swapped segments: a map of the same name is of the old file.
                Vec::new()
            }
        };
        let mut segments = Vec::with_capacity(bases.len());
        for &base in bases.iter().filter(|&&b| b >= head.log_start) {
            // An active segment mapped as readable past the head is not reused: recovery cut
            // published data (damage found while others had it open), and appends and reads
            // must not go by the old end. Nor one mapped past the end of its files: a roll
            // that died after trimming them left it active (repaired by another handle), and
            // appends through the old mapping would land past the end of the file, in the
            // page cache only, and be lost.
            let mut reuse = None;
            for s in &old {
                if s.base == base
                    && (s.is_active() == (base == head.active_base))
                    && !(s.is_active() && s.data.readable() > head.committed_pos as usize)
                    && !s.mapped_past_its_files()?
                {
                    reuse = Some(s);
                    break;
                }
            }
            let seg = match reuse {
                Some(s) => s.clone(),
                None if base == head.active_base => Arc::new(Segment::open_active_as_created(
                    &self.dir,
                    base,
                    head.committed_pos as usize,
                    head.index_entries as usize,
                )?),
                None => Arc::new(Segment::open_sealed(&self.dir, base)?),
            };
            segments.push(seg);
        }
        if segments.last().is_none_or(|s| s.base != head.active_base) {
            return Err(Error::Corrupt {
                path: self.dir.clone(),
                position: 0,
                offset: head.active_base,
                reason: "the active segment's files are missing".into(),
            });
        }
        let active = segments.last().expect("checked");
        active.data.observe_published(head.committed_pos as usize);
        active.index.observe_published(head.index_entries as usize * INDEX_ENTRY_BYTES);
        active.time_index.observe_published(head.index_entries as usize * TIME_INDEX_ENTRY_BYTES);
        *self.view.write().map_err(|_| Error::Closed)? =
            View { generation: head.generation, compactions: head.compactions, segments };
        Ok(())
    }

    /// True when the published batches after the active segment's last index entry pass
    /// their CRCs and continue each other's offsets: a bounded check (one index interval
    /// plus a batch) of the part of the head most likely to be wrong.
    fn tail_intact(&self, guard: &WriteGuard<'_>) -> Result<bool> {
        let head = guard.head();
        let view = self.read_view()?;
        let active = view.active();
        let end = head.committed_pos as usize;
        let mut pos = head.last_index_pos as usize;
        let mut expected = None;
        while pos < end {
            match active.batch_at(pos, end, true) {
                Ok(b) if expected.is_none_or(|e| e == b.header.base_offset) => {
                    expected = Some(b.header.next_offset());
                    pos += b.header.total_len;
                }
                _ => return Ok(false),
            }
        }
        Ok(expected.is_none_or(|e| e == head.next_offset))
    }

    /// Closes this handle: waits for appends in progress in this process, refuses any
    /// later one ([`Error::Closed`]), trims the active segment's pre-allocated files to
    /// their contents if no other handle (in any process) has the partition open, so a
    /// closed store takes only the space it uses and the next open finds any damage at the
    /// very end, and gives up the handle's locks. Works while other references to the log
    /// are alive (they get [`Error::Closed`]); closing twice is harmless.
    ///
    /// In a process forked after the log was opened it only marks the handle closed: the
    /// files, the locks and the mutex are the parent's.
    ///
    /// # Errors
    /// Failures taking the append lock or trimming; the locks are given up all the same.
    pub fn close(&self) -> Result<()> {
        if self.control.is_inherited() {
            self.closed.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if self.closed.swap(true, Ordering::AcqRel) || !self.opened.load(Ordering::Acquire) {
            // A failed open drops its control block, which gives up the locks.
            return Ok(());
        }
        let result = self.trim_if_last();
        self.control.release();
        result
    }

    /// Trims the active segment to its contents if this is the last handle on the
    /// partition. Called by `close`, with `closed` already set.
    fn trim_if_last(&self) -> Result<()> {
        // A deleted partition's path may name a new topic's partition by now.
        if self.is_deleted() {
            return Ok(());
        }
        // The open lock keeps openers out while we check and trim. Waiting for it cannot
        // deadlock: we hold nothing yet, and its holders (an opener, or another handle
        // closing) need at most the append lock. Two handles closing at once thus check one
        // after the other, and the second finds itself alone.
        let alone = self.control.lock_open(true);
        // Always taken: an append of this process still in progress finishes before the
        // locks are given up (a later opener, alone, re-initialises the mutex), and none
        // starts after (`lock` checks `closed` under the lock).
        let guard = self.lock_open_or_closed(true)?.expect("blocking lock");
        if !alone || !self.control.try_exclusive() {
            return Ok(());
        }
        self.refresh_if_stale(&guard)?;
        let head = guard.head();
        let view = self.read_view()?;
        let Some(active) = view.segments.last() else { return Ok(()) };
        if active.base == head.active_base {
            active.trim(head.committed_pos as usize, head.index_entries as usize, false)?;
        }
        Ok(())
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Best effort: a failure leaves pre-allocated zeros, which recovery handles.
        let _ = self.close();
    }
}

/// An empty active segment created smaller than a batch (segment_bytes grew since it was
/// created): it cannot roll to the same base offset. Out of line: the append path only
/// compares.
#[cold]
#[inline(never)]
fn segment_too_small(size: usize, capacity: usize) -> Error {
    Error::MessageTooLarge {
        size: size as u64,
        limit: capacity as u64,
        what: "segment_bytes of the active segment (whole batch)",
    }
}

fn write_index_entry(
    guard: &WriteGuard<'_>,
    segment: &Segment,
    slot: usize,
    entry: &IndexEntry,
) -> Result<()> {
    let too_many = || Error::InvalidConfig(format!("index of segment {} is full", segment.base));
    let o = segment
        .index
        .write_region(guard, slot * INDEX_ENTRY_BYTES, INDEX_ENTRY_BYTES)
        .ok_or_else(too_many)?;
    o.copy_from_slice(&entry.offset_bytes());
    segment.index.publish(guard, (slot + 1) * INDEX_ENTRY_BYTES);
    let t = segment
        .time_index
        .write_region(guard, slot * TIME_INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES)
        .ok_or_else(too_many)?;
    t.copy_from_slice(&entry.time_bytes());
    segment.time_index.publish(guard, (slot + 1) * TIME_INDEX_ENTRY_BYTES);
    Ok(())
}
