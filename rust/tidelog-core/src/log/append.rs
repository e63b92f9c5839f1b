//! Appending: the three paths into the active segment (records encoded into a batch, plain
//! values written as they are, batches compressed before the lock), the checks every batch
//! passes first, and the index entries an append adds.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::producers::Verdict;
use super::{crc_worker, Admission, Appended, Bounded, FsyncPolicy, PartitionLog};
use crate::format::compression::compress_batch;
use crate::format::{
    encode_batch, encoded_len, BatchHeader, BatchMeta, Compression, Marker, Record, ValuesBatch,
    ATTR_CONTROL, ATTR_TRANSACTIONAL, BATCH_HEADER_LEN, NO_PRODUCER,
};
use crate::index::{IndexEntry, INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::segment::Segment;
use crate::shm::WriteGuard;
use crate::{Error, Result};

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

/// Milliseconds since the Unix epoch, at the kernel tick's resolution (a few ms) but
/// several times cheaper than [`now_ms`]: good enough for deciding when to roll.
fn coarse_now_ms() -> i64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    t.tv_sec * 1000 + t.tv_nsec / 1_000_000
}

impl PartitionLog {
    /// Appends `records` as one atomic batch, waiting for the append lock (see
    /// [`Self::try_append`] for a caller that must not block).
    ///
    /// The batch is in the page cache when this returns; with [`FsyncPolicy::Always`] it is
    /// also on disk.
    ///
    /// A `meta` with a producer id is checked against the partition's producer state first
    /// (see [`producers`](super::producers)): a batch repeating one of the producer's last batches is not
    /// written again and the original offsets come back with `duplicate` set.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] for a record over `max_message_bytes` or a batch too large
    /// for a segment, [`Error::InvalidConfig`] for timestamps too far apart,
    /// [`Error::OutOfOrderSequence`] and [`Error::ProducerFenced`] from the producer check,
    /// I/O errors.
    pub fn append(&self, records: &[Record<'_>], meta: BatchMeta) -> Result<Appended> {
        self.with_body(records, meta, None, |body, size| {
            self.append_body(self.lock_to_append()?, body, meta, size)
        })
    }

    /// As [`Self::append`], compressed with `compression` rather than the topic's codec
    /// when it is given (a producer's own `compression`; a Kafka producer's codec).
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_as(
        &self,
        records: &[Record<'_>],
        meta: BatchMeta,
        compression: Option<Compression>,
    ) -> Result<Appended> {
        self.with_body(records, meta, compression, |body, size| {
            self.append_body(self.lock_to_append()?, body, meta, size)
        })
    }

    /// As [`Self::append`], but `Ok(None)` instead of blocking when another thread or
    /// process holds the append lock, so a caller holding Python's GIL can retry after
    /// releasing it.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn try_append(&self, records: &[Record<'_>], meta: BatchMeta) -> Result<Option<Appended>> {
        self.with_body(records, meta, None, |body, size| match self.try_lock_to_append()? {
            Some(guard) => self.append_body(guard, body, meta, size).map(Some),
            None => Ok(None),
        })
    }

    /// As [`Self::append`] (waiting for the lock), only if `admit`, called under the append
    /// lock, returns true: writers in any process that make the same check (a consumer
    /// group's commits, against the group's generation) are ordered by it, as a Kafka
    /// coordinator orders the requests it checks.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_if(
        &self,
        records: &[Record<'_>],
        meta: BatchMeta,
        admit: impl FnOnce() -> bool,
    ) -> Result<Admission> {
        self.with_body(records, meta, None, |body, size| {
            let guard = self.lock_to_append()?;
            if !admit() {
                return Ok(Admission::Refused);
            }
            self.append_body(guard, body, meta, size).map(Admission::Written)
        })
    }

    /// As [`Self::append_if`], but `Ok(None)` instead of blocking when another thread or
    /// process holds the append lock (see [`Self::try_append`]); `admit` is not called then.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn try_append_if(
        &self,
        records: &[Record<'_>],
        meta: BatchMeta,
        admit: impl FnOnce() -> bool,
    ) -> Result<Option<Admission>> {
        self.with_body(records, meta, None, |body, size| {
            let Some(guard) = self.try_lock_to_append()? else { return Ok(None) };
            if !admit() {
                return Ok(Some(Admission::Refused));
            }
            self.append_body(guard, body, meta, size).map(|a| Some(Admission::Written(a)))
        })
    }

    /// Checks `records` and hands them to `append` as a body, compressed with
    /// `compression` or else the topic's codec. Compressing is CPU work on the whole
    /// batch: it is done before the append lock is taken, into a batch complete but for
    /// its base offset, which is outside the CRC. Transaction markers are never compressed.
    fn with_body<T>(
        &self,
        records: &[Record<'_>],
        meta: BatchMeta,
        compression: Option<Compression>,
        append: impl FnOnce(Body<'_>, usize) -> Result<T>,
    ) -> Result<T> {
        if records.is_empty() {
            return Err(Error::InvalidConfig("cannot append an empty batch".into()));
        }
        self.settings.refresh()?;
        let size = self.check_batch(records, &meta)?;
        let codec = compression.unwrap_or_else(|| self.settings.compression());
        if codec == Compression::None || meta.attributes & ATTR_CONTROL != 0 {
            return append(Body::Records(records), size);
        }
        let mut plain = PLAIN.take();
        grow(&mut plain, size);
        encode_batch(&mut plain[..size], meta, records);
        let mut packed = PACKED.take();
        let header =
            compress_batch(&plain[..BATCH_HEADER_LEN], &plain[BATCH_HEADER_LEN..size], codec, &mut packed);
        keep(&PLAIN, plain);
        let result = self.append_packed(&packed, header, append);
        keep(&PACKED, packed);
        result
    }

    /// Hands `append` the batch [`compress_batch`] made at the start of `packed`.
    fn append_packed<T>(
        &self,
        packed: &[u8],
        header: BatchHeader,
        append: impl FnOnce(Body<'_>, usize) -> Result<T>,
    ) -> Result<T> {
        // The uncompressed batch was checked against the segment; so must the stored one be
        // (incompressible values grow by a few bytes).
        self.check_batch_size(header.total_len)?;
        append(Body::Encoded(&packed[..header.total_len], header), header.total_len)
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
        self.with_body(records, meta, compression, |body, size| {
            let guard = self.lock_to_append()?;
            let next = guard.head().next_offset;
            if next.saturating_add(body.count() as u64) > max_end {
                return Ok(Bounded::NoRoom(max_end.saturating_sub(next)));
            }
            self.append_body(guard, body, meta, size).map(Bounded::Written)
        })
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
        if codec != Compression::None {
            self.append_values_compressed(batch, codec)
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
            self.append_body(self.lock_to_append()?, Body::Records(&records), BatchMeta::plain(0), size)
        } else {
            self.append_body(self.lock_to_append()?, Body::Values(batch), BatchMeta::plain(0), size)
        }
    }

    /// [`Self::append_values`] of a compressed topic: the head encoded as usual, and the
    /// body compressed straight from the caller's buffer when it is the values alone (no
    /// entries: values of one size), else from the entries and a copy of the values.
    fn append_values_compressed(&self, batch: ValuesBatch<'_>, codec: Compression) -> Result<Appended> {
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
        let result = self.append_packed(&packed, header, |body, size| {
            self.append_body(self.lock_to_append()?, body, meta, size)
        });
        keep(&PACKED, packed);
        result
    }

    /// The append lock for an append: refused once the partition failed.
    fn lock_to_append(&self) -> Result<WriteGuard<'_>> {
        self.check_not_failed()?;
        self.lock()
    }

    /// As [`Self::lock_to_append`], without waiting: `None` if the lock is busy.
    fn try_lock_to_append(&self) -> Result<Option<WriteGuard<'_>>> {
        self.check_not_failed()?;
        self.try_lock()
    }

    /// Appends `body` under `guard`, then rings the doorbell and syncs as the policy says.
    fn append_body(
        &self,
        mut guard: WriteGuard<'_>,
        body: Body<'_>,
        meta: BatchMeta,
        size: usize,
    ) -> Result<Appended> {
        let (appended, to_sync) = self.append_locked(&mut guard, body, meta, size)?;
        drop(guard);
        if appended.duplicate {
            // The original may be the write whose sync failed and caused this retry.
            if self.config.fsync == FsyncPolicy::Always {
                self.dirty.store(true, Ordering::Relaxed);
                self.sync()?;
            }
            return Ok(appended);
        }
        if let Some(bell) = self.doorbell.get() {
            bell.ring();
        }
        if let Some(segment) = to_sync {
            // Every append to a durable log goes through pwrite, so the file's dirty pages
            // are this batch's (and perhaps a concurrent appender's, which is harmless).
            self.fail_on_error(segment.sync_written())?;
            if self.control.synced_offset() < segment.base {
                let segments = self.read_view()?.segments.clone();
                self.fail_on_error(self.sync_sealed_since_last_sync(&segments, segment.base))?;
            }
            // Batches before this one were written before it: the sync covered them too.
            self.control.note_synced(appended.base_offset + u64::from(appended.count));
        } else if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
        Ok(appended)
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

pub(super) fn write_index_entry(
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
