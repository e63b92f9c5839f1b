//! Reads: find the segment and batch holding an offset or timestamp, then hand out
//! references to the mapped batches (zero-copy). A [`ReadChunk`] holds an `Arc` of the
//! segment's mapping, so its bytes stay valid while referenced, even if retention deletes
//! the segment's files meanwhile (an unlinked file stays mapped).
//!
//! A compressed batch is decompressed once, when it is read, into an owned image of the
//! batch it would have been uncompressed ([`ChunkBytes::Image`]); everything downstream
//! (record iteration, value buffers, messages) reads the image as it reads a mapping.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use super::idempotence::TableGuard;
use super::producers::AbortedTxn;
use super::{PartitionLog, View};
use crate::format::{
    BatchHeader, BatchView, Compression, RecordPosition, RecordView, ATTR_CONTROL, ATTR_TRANSACTIONAL,
};
use crate::index::{OffsetIndex, TimeIndex};
use crate::segment::{Check, FileMap, OnDamage, Pass, Segment};
use crate::shm::Head;
use crate::{Error, Result};

/// What a reader does with a batch (readers see only committed transactions).
enum Visibility {
    Serve,
    /// Serve, marked as part of a transaction still open (uncommitted reads only).
    Pending,
    /// A transaction marker or an aborted transaction's batch: pass over it.
    Skip,
    /// The batch's transaction is still open: nothing from here on is stable yet.
    Stop,
}

/// Decides the visibility of transactional batches, building the producer table only
/// when the first such batch comes along (plain topics never pay for it).
struct Isolation<'a> {
    head: Head,
    view: &'a View,
    /// The producer table, caught up to `head` (taken at the first batch that needs it),
    /// and the last stable offset it gives.
    table: Option<(TableGuard<'a>, u64)>,
    /// Read committed (stop at open transactions) rather than uncommitted.
    committed: bool,
    /// Serve transaction markers and aborted transactions' batches too, as Kafka's Fetch
    /// does (its clients pass over them themselves, and need the markers' offsets to move
    /// past them).
    with_markers: bool,
}

impl<'a> Isolation<'a> {
    fn of(&mut self, log: &'a PartitionLog, h: &BatchHeader) -> Result<Visibility> {
        let control = h.attributes & ATTR_CONTROL != 0;
        if control && !self.with_markers {
            return Ok(Visibility::Skip);
        }
        if self.head.transactional == 0 {
            return Ok(Visibility::Serve);
        }
        if h.base_offset >= self.head.next_offset {
            // Published after the head the table is caught up to (another thread of this
            // process saw a newer one): its transaction's fate is unknown here.
            return Ok(Visibility::Stop);
        }
        if self.table.is_none() {
            // Once per read: the head is fixed for it, so are the table and its stable offset.
            let mut guard = log.producer_table()?;
            let lso =
                log.catch_up(&mut guard, self.view, &self.head)?.last_stable_offset(self.head.next_offset);
            self.table = Some((guard, lso));
        }
        let (guard, lso) = self.table.as_ref().expect("just set");
        let table = guard.as_ref().expect("caught up");
        if self.committed && h.base_offset >= *lso {
            // Nothing at or past the oldest open transaction is stable yet, plain or not.
            return Ok(Visibility::Stop);
        }
        if control || h.attributes & ATTR_TRANSACTIONAL == 0 {
            return Ok(Visibility::Serve);
        }
        let open =
            table.get(h.producer_id).and_then(|e| e.open_txn).is_some_and(|first| first <= h.base_offset);
        Ok(if open {
            Visibility::Pending
        } else if !self.with_markers && table.is_aborted(h.producer_id, h.base_offset) {
            Visibility::Skip
        } else {
            Visibility::Serve
        })
    }
}

/// The bytes a [`ReadChunk`] reads its batch from.
#[derive(Clone, Debug)]
pub enum ChunkBytes {
    /// The segment's mapping (an uncompressed batch, read in place).
    Mapped(Arc<FileMap>),
    /// The uncompressed image of a compressed batch, never changed once made.
    Image(Arc<Vec<u8>>),
}

impl ChunkBytes {
    /// Bytes `start..end`, or `None` outside the published data (of a mapping) or the image.
    #[inline]
    pub fn read(&self, start: usize, end: usize) -> Option<&[u8]> {
        match self {
            ChunkBytes::Mapped(map) => map.read(start, end),
            ChunkBytes::Image(image) => image.get(start..end),
        }
    }
}

impl From<Arc<FileMap>> for ChunkBytes {
    fn from(map: Arc<FileMap>) -> Self {
        ChunkBytes::Mapped(map)
    }
}

/// A decompressed image and where its batch lies: mapping, position, CRC.
type KeptImage = (Weak<FileMap>, usize, u32, Arc<Vec<u8>>);

/// Largest image [`LAST_IMAGE`] keeps.
const MAX_KEPT_IMAGE_BYTES: usize = 8 << 20;

thread_local! {
    /// The batch this thread decompressed last: a reader taking fewer records than a
    /// batch holds reads it again for the next ones, and decompresses it once. Keyed by
    /// the mapping (a `Weak`, so the key cannot be reused by another mapping while held),
    /// the position, the CRC and the base offset.
    static LAST_IMAGE: RefCell<Option<KeptImage>> = const { RefCell::new(None) };
}

/// The uncompressed image of the compressed batch `batch`, found at `pos` of `map`.
///
/// # Errors
/// What is wrong with its body (it does not decompress, or not to a sound batch).
pub(super) fn decompressed(
    map: &Arc<FileMap>,
    pos: usize,
    batch: &BatchView<'_>,
) -> std::result::Result<Arc<Vec<u8>>, &'static str> {
    let crc = batch.header.crc;
    let hit = LAST_IMAGE.with_borrow(|last| {
        last.as_ref()
            .filter(|(m, p, c, image)| {
                // The base offset is outside the CRC: a batch of the same bytes written
                // again at the same place (after a repair) must not keep the old offsets.
                std::ptr::eq(m.as_ptr(), Arc::as_ptr(map))
                    && *p == pos
                    && *c == crc
                    && image[..8] == batch.header.base_offset.to_le_bytes()
            })
            .map(|(_, _, _, image)| image.clone())
    });
    if let Some(image) = hit {
        return Ok(image);
    }
    let image = batch.decompress()?;
    // The image is checked like a stored batch (without its CRC, which checked the stored
    // bytes): from here on record access stays in bounds.
    let view = BatchView::parse(&image, false)?;
    if view.header.record_count != batch.header.record_count {
        return Err("decompressed batch does not match its header");
    }
    let image = Arc::new(image);
    // A huge batch's image is not kept past its readers.
    if image.len() <= MAX_KEPT_IMAGE_BYTES {
        LAST_IMAGE.set(Some((Arc::downgrade(map), pos, crc, image.clone())));
    }
    Ok(image)
}

/// The batch a thread's last read of a mapping ended in, and where: the next read from that
/// offset (an iterator's next chunk, a consumer's next poll) continues there instead of
/// starting over from the offset index.
///
/// * Read in part (`at` is `Some`): the read continues inside the batch, without checking
///   the whole batch's CRC and walking its earlier records again, which made reading a
///   batch of `n` records in chunks cost O(n^2).
/// * Read to its end (`at` is `None`): the read starts at the batch after it, instead of at
///   the index entry before the offset and passing every batch from there by its header (a
///   consumer at the end of a log of small batches passed ~12 of them per read with the
///   default 4 KiB index interval).
///
/// Either way the batch's header must still be at its position (compared byte for byte
/// when used), so the log up to it is the one the earlier read walked, and offsets continue
/// from it.
#[derive(Clone, Debug)]
struct Resume {
    /// The mapping (a `Weak`, so the key cannot be reused by another mapping while held)
    /// and the batch's position and header in it.
    map: Weak<FileMap>,
    position: usize,
    header: BatchHeader,
    /// The offset of the next record, and, if it lies in this batch, where.
    next_offset: u64,
    at: Option<RecordPosition>,
}

/// Partly read batches a thread remembers: a consumer polling a few partitions in turn
/// keeps one for each.
const RESUME_SLOTS: usize = 4;

thread_local! {
    static RESUME: RefCell<[Option<Resume>; RESUME_SLOTS]> = const { RefCell::new([None, None, None, None]) };
}

/// The remembered part-read batch of `map` that continues at `offset`, if any.
fn resume_at(map: &Arc<FileMap>, offset: u64) -> Option<Resume> {
    RESUME.with_borrow(|slots| {
        slots
            .iter()
            .flatten()
            .find(|r| std::ptr::eq(r.map.as_ptr(), Arc::as_ptr(map)) && r.next_offset == offset)
            .cloned()
    })
}

/// Remembers `resume`, in place of the entry for the same mapping, or else the oldest.
fn remember(resume: Resume) {
    RESUME.with_borrow_mut(|slots| {
        let same = slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|r| std::ptr::eq(r.map.as_ptr(), resume.map.as_ptr())));
        let slot = same.unwrap_or_else(|| {
            slots.rotate_right(1);
            0
        });
        slots[slot] = Some(resume);
    });
}

/// Remembers that a read of `seg` ended after the whole batch `last` (its position and
/// header), if the offset it ends at is `next_offset` (the read did not stop at damage).
fn remember_end(seg: &Segment, last: Option<(usize, BatchHeader)>, next_offset: u64) {
    if let Some((position, header)) = last.filter(|(_, h)| h.next_offset() == next_offset) {
        let map = Arc::downgrade(&seg.data);
        remember(Resume { map, position, header, next_offset, at: None });
    }
}

/// Some consecutive records of one stored batch.
#[derive(Clone, Debug)]
pub struct ReadChunk {
    /// The bytes holding the batch: the segment's mapping, or a compressed batch's
    /// uncompressed image.
    pub map: ChunkBytes,
    /// Byte range of the whole batch in the mapping.
    pub start: usize,
    /// End of the batch.
    pub end: usize,
    /// Records of the batch before the first one wanted.
    pub skip: usize,
    /// Records wanted.
    pub count: usize,
    /// The batch belongs to a transaction still open (only in uncommitted reads).
    pub pending: bool,
    /// Where the first wanted record lies in the batch, when the read knew it (it
    /// continued a part-read batch): found without walking the `skip` records before it.
    pub from: Option<RecordPosition>,
}

impl ReadChunk {
    /// The batch, already validated when the chunk was made.
    pub fn batch(&self) -> BatchView<'_> {
        let bytes = self.map.read(self.start, self.end).expect("chunk lies in published data");
        BatchView::parse_validated(bytes)
    }

    /// The wanted records.
    pub fn records(&self) -> impl ExactSizeIterator<Item = RecordView<'_>> {
        self.records_from_first().take(self.count)
    }

    /// Byte position in the batch of the first wanted record's value.
    pub fn first_value_at(&self) -> usize {
        if let Some(at) = self.from {
            return self.batch().records_from(at).value_at();
        }
        // Not `records()`, which first adds up every record's key length (to find the
        // headers): the values start right after the entries.
        let batch = self.batch();
        batch.values_range().start + (0..self.skip).map(|i| batch.value_len(i) as usize).sum::<usize>()
    }

    fn records_from_first(&self) -> crate::format::RecordIter<'_> {
        let batch = self.batch();
        if let Some(at) = self.from {
            return batch.records_from(at);
        }
        let mut it = batch.records();
        if self.skip > 0 {
            it.nth(self.skip - 1);
        }
        it
    }
}

/// The result of [`PartitionLog::read`].
#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    /// Chunks in offset order.
    pub chunks: Vec<ReadChunk>,
    /// Records in all chunks.
    pub count: usize,
    /// The offset to read next.
    pub next_offset: u64,
}

impl PartitionLog {
    fn out_of_range(&self, offset: u64, start: u64, end: u64) -> Error {
        Error::OffsetOutOfRange { topic: self.topic.clone(), partition: self.partition, offset, start, end }
    }

    /// Reads up to `max_messages` records (and about `max_bytes` of batches, at least one
    /// batch) starting at `offset`. Reading at the end offset yields nothing. Every batch
    /// read has its CRC checked.
    ///
    /// Only committed data is returned: transaction markers and aborted transactions are
    /// passed over (`next_offset` moves past them), and reading stops at the first batch of
    /// a transaction still open (the last stable offset).
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] below the start or past the end;
    /// [`Error::Corrupt`] naming the file and position of a damaged batch.
    pub fn read(&self, offset: u64, max_messages: usize, max_bytes: usize) -> Result<ReadResult> {
        self.read_isolated(offset, max_messages, max_bytes, true)
    }

    /// As [`Self::read`], but also returns the batches of transactions still open (their
    /// chunks marked `pending`), as Kafka's `read_uncommitted`; aborted transactions and
    /// markers are still passed over.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn read_uncommitted(&self, offset: u64, max_messages: usize, max_bytes: usize) -> Result<ReadResult> {
        self.read_isolated(offset, max_messages, max_bytes, false)
    }

    /// The first offset a committed read does not pass: where the oldest transaction still
    /// open begins, or the end offset.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn last_stable_offset(&self) -> Result<u64> {
        let head = self.head()?;
        if head.transactional == 0 {
            return Ok(head.next_offset);
        }
        let (head, view) = self.current_view_and_head(head)?;
        let mut guard = self.producer_table()?;
        Ok(self.catch_up(&mut guard, &view, &head)?.last_stable_offset(head.next_offset))
    }

    /// The sequence the next batch of `producer_id` at `epoch` must start at: after its
    /// newest batch if the partition's newest epoch of it is `epoch`, else 0.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn next_sequence(&self, producer_id: i64, epoch: i16) -> Result<i32> {
        let (head, view) = self.current_view_and_head(self.head()?)?;
        let mut guard = self.producer_table()?;
        let table = self.catch_up(&mut guard, &view, &head)?;
        Ok(match table.get(producer_id) {
            Some(entry) if entry.epoch == epoch => {
                entry.batches.back().map_or(0, |b| super::producers::sequence_add(b.last, 1))
            }
            _ => 0,
        })
    }

    /// Reads as Kafka's Fetch serves a partition: as [`Self::read`] (with `committed`) or
    /// [`Self::read_uncommitted`], but transaction markers (control batches, one record
    /// each) and the batches of aborted transactions are returned too. Kafka clients pass
    /// over them themselves: a marker's offset is where a consumer's position moves past
    /// the transaction it ends, and `read_committed` clients drop the aborted batches that
    /// [`Self::aborted_transactions`] lists.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn read_with_markers(
        &self,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        committed: bool,
    ) -> Result<ReadResult> {
        self.read_isolated_with(self.head()?, offset, max_messages, max_bytes, committed, true)
    }

    /// The aborted transactions with batches in `from..to`, oldest first: what Kafka's Fetch
    /// lists (`aborted_transactions`) for a `read_committed` client reading that range.
    ///
    /// # Errors
    /// As [`Self::read`].
    pub fn aborted_transactions(&self, from: u64, to: u64) -> Result<Vec<AbortedTxn>> {
        let head = self.head()?;
        if head.transactional == 0 || from >= to {
            return Ok(Vec::new());
        }
        let (head, view) = self.current_view_and_head(head)?;
        let mut guard = self.producer_table()?;
        Ok(self.catch_up(&mut guard, &view, &head)?.aborted_in(from, to))
    }

    fn read_isolated(
        &self,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        committed: bool,
    ) -> Result<ReadResult> {
        self.read_isolated_at(self.head()?, offset, max_messages, max_bytes, committed)
    }

    /// [`Self::read_isolated`] with the head it reads first: other processes may have
    /// appended and rolled since (a reader preempted between reading the head and listing
    /// the segments), which is how tests drive that interleaving.
    pub(super) fn read_isolated_at(
        &self,
        head: Head,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        committed: bool,
    ) -> Result<ReadResult> {
        self.read_isolated_with(head, offset, max_messages, max_bytes, committed, false)
    }

    fn read_isolated_with(
        &self,
        head: Head,
        offset: u64,
        max_messages: usize,
        max_bytes: usize,
        committed: bool,
        with_markers: bool,
    ) -> Result<ReadResult> {
        if offset < head.log_start || offset > head.next_offset {
            return Err(self.out_of_range(offset, head.log_start, head.next_offset));
        }
        let mut out = ReadResult { chunks: Vec::new(), count: 0, next_offset: offset };
        if offset == head.next_offset || max_messages == 0 {
            return Ok(out);
        }
        // The head the segments were listed at (`head` or newer): see `current_view_and_head`.
        let (head, view) = self.current_view_and_head(head)?;
        let first = view.segments.partition_point(|s| s.base <= offset).saturating_sub(1);
        if first > 0 {
            // A reader moved on from the previous segment: drop its pages from our RSS.
            view.segments[first - 1].data.release_all();
        }
        let mut isolation = Isolation { head, view: &view, table: None, committed, with_markers };
        for seg in &view.segments[first..] {
            let stopped = self.read_segment(seg, &mut out, max_messages, max_bytes, &mut isolation)?;
            if out.count > 0 || stopped {
                break;
            }
            // Nothing at or after the offset in this segment (a gap left by a crash or an
            // empty tail): continue in the next one.
        }
        Ok(out)
    }

    /// Reads from one segment into `out`; true if it stopped at an open transaction.
    fn read_segment<'a>(
        &'a self,
        seg: &Arc<Segment>,
        out: &mut ReadResult,
        max_messages: usize,
        max_bytes: usize,
        isolation: &mut Isolation<'a>,
    ) -> Result<bool> {
        let end = seg.data.readable();
        let wanted = out.next_offset;
        let resume = resume_at(&seg.data, wanted);
        // Offsets continue from batch to batch within a segment; the base offset is outside
        // the CRC, so continuity is what vouches for it. Batches wholly before the wanted
        // offset are passed by their header alone: a damaged batch we do not read must not
        // fail the read. A sealed segment whose trim was lost in a power failure ends in zeros.
        // A batch read to its end is followed only if its header is still in its place; a
        // part-read one the cursor checks itself (`BatchCursor::trust`).
        let (pos, expected) = match &resume {
            Some(r) if r.at.is_none() && seg.header_at(r.position, end) == Some(r.header) => {
                (r.position + r.header.total_len, wanted)
            }
            _ => {
                let (index, _) = seg.lookup_indexes();
                let (rel, entry_pos) = match wanted.checked_sub(seg.base) {
                    Some(r) if r > 0 => {
                        OffsetIndex::new(index.published()).lookup_entry(r.min(u64::from(u32::MAX)) as u32)
                    }
                    _ => (0, 0),
                };
                (entry_pos as usize, seg.base + u64::from(rel))
            }
        };
        seg.data.release_behind(pos);
        let mut cursor = seg
            .cursor(pos, end, expected, Check::Crc, OnDamage::Error)
            .zero_tail(!seg.is_active())
            .trust(resume.as_ref().filter(|r| r.at.is_some()).map(|r| (r.position, r.header)));
        // The last batch this read took or passed over: where it lies, and its header.
        let mut last: Option<(usize, BatchHeader)> = None;
        let mut bytes = 0;
        cursor.pass(Pass::Before(out.next_offset));
        while out.count < max_messages && bytes < max_bytes {
            let found = match cursor.next() {
                None => break,
                Some(Ok(found)) => found,
                // Hand out the good messages before the damage; the next read reports it.
                Some(Err(_)) if out.count > 0 => break,
                Some(Err(e)) => return Err(e),
            };
            // Every later batch starts at or after the offset wanted next (a batch served
            // in part ends the read), so the cursor need not look at headers for passing.
            cursor.pass(Pass::Nothing);
            let (pos, h) = (found.position, found.header);
            let batch = found.view().expect("checked by the cursor");
            // The cursor passed every batch ending at or before `out.next_offset`.
            let mut pending = false;
            match isolation.of(self, &h)? {
                Visibility::Serve => {}
                Visibility::Pending => pending = true,
                Visibility::Skip => {
                    out.next_offset = h.next_offset();
                    last = Some((pos, h));
                    continue;
                }
                Visibility::Stop => {
                    remember_end(seg, last, out.next_offset);
                    return Ok(true);
                }
            }
            last = Some((pos, h));
            let image = if batch.codec() == Compression::None {
                None
            } else {
                // Read from its image: a compressed batch only passed over (by its header, or
                // as a marker or an aborted transaction) is never decompressed.
                match decompressed(&seg.data, pos, &batch) {
                    Ok(i) => Some(i),
                    Err(_) if out.count > 0 => break,
                    Err(reason) => return Err(seg.corrupt(pos, found.expected, reason)),
                }
            };
            let (chunk_bytes, start, end) = match &image {
                Some(i) => (ChunkBytes::Image(i.clone()), 0, i.len()),
                None => (ChunkBytes::Mapped(seg.data.clone()), pos, pos + h.total_len),
            };
            let batch = match &image {
                Some(i) => BatchView::parse(i, false).expect("checked when decompressed"),
                None => batch,
            };
            // Continuing a batch this thread read part of: its next record is known.
            let from = resume
                .as_ref()
                .filter(|r| r.position == pos && r.header == h && r.next_offset == out.next_offset)
                .and_then(|r| r.at);
            let dense = h.last_offset_delta as usize + 1 == h.record_count as usize;
            let skip = match from {
                Some(at) => at.index,
                None if dense => out.next_offset.saturating_sub(h.base_offset) as usize,
                None => batch.records().take_while(|r| r.offset < out.next_offset).count(),
            };
            let count = (h.record_count as usize - skip).min(max_messages - out.count);
            let chunk = ReadChunk { map: chunk_bytes, start, end, skip, count, pending, from };
            out.count += count;
            if skip + count == h.record_count as usize {
                out.next_offset = h.next_offset();
            } else {
                // Read in part: remember where the part ends for the read that continues.
                let mut rest = chunk.records_from_first();
                let last = rest.nth(count - 1).map_or(h.next_offset(), |r| r.offset + 1);
                out.next_offset = last;
                remember(Resume {
                    map: Arc::downgrade(&seg.data),
                    position: pos,
                    header: h,
                    next_offset: last,
                    at: Some(rest.position()),
                });
                out.chunks.push(chunk);
                return Ok(false);
            }
            out.chunks.push(chunk);
            bytes += h.total_len;
        }
        remember_end(seg, last, out.next_offset);
        Ok(false)
    }

    /// The offset of the first record whose timestamp is `>= timestamp`, or `None` if
    /// every record is older.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a damaged batch on the way.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>> {
        let head = self.head()?;
        let view = self.current_view(head)?;
        for seg in &view.segments {
            let max = if seg.is_active() { head.max_timestamp } else { seg.max_timestamp() };
            if max < timestamp {
                continue;
            }
            let end = seg.data.readable();
            let (_, time_index) = seg.lookup_indexes();
            let time = TimeIndex::new(time_index.published());
            let (pos, expected) = match time.lookup_entry(timestamp) {
                Some(e) => (e.position as usize, seg.base + u64::from(e.relative_offset)),
                None => (0, seg.base),
            };
            // Older batches are passed by their header alone (see `read_segment`).
            let mut cursor =
                seg.cursor(pos, end, expected, Check::Crc, OnDamage::Error).zero_tail(!seg.is_active());
            cursor.pass(Pass::OlderThan(timestamp));
            for found in cursor {
                let found = found?;
                let (pos, batch) = (found.position, found.view().expect("checked by the cursor"));
                let image = match batch.codec() {
                    Compression::None => None,
                    _ => Some(
                        decompressed(&seg.data, pos, &batch)
                            .map_err(|reason| seg.corrupt(pos, found.expected, reason))?,
                    ),
                };
                let records = match &image {
                    Some(i) => BatchView::parse(i, false).expect("checked when decompressed").records(),
                    None => batch.records(),
                };
                if let Some(r) = records.into_iter().find(|r| r.timestamp >= timestamp) {
                    return Ok(Some(r.offset.max(head.log_start)));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BatchMeta, Record};
    use crate::segment::{CRC_CHECKS, HEADERS_PASSED};
    use crate::settings::SharedSettings;
    use crate::LogConfig;

    /// A record's key, value and headers, owned.
    type Parts = (Option<Vec<u8>>, Vec<u8>, Vec<u8>);

    fn open(dir: &std::path::Path) -> PartitionLog {
        let config = LogConfig { segment_bytes: 8 << 20, ..LogConfig::default() };
        let settings = Arc::new(SharedSettings::fixed(config.topic_settings()));
        PartitionLog::open_with_settings(dir, "t", 0, config, settings).unwrap()
    }

    /// Values of varied lengths, keys and headers on some records: a record's parts are
    /// found only by adding up the lengths before it, which a continued read must not get
    /// wrong.
    fn append_big_batch(log: &PartitionLog, n: usize) -> Vec<Parts> {
        let owned: Vec<_> = (0..n)
            .map(|i| {
                let key = (i % 3 == 0).then(|| format!("k{i}").into_bytes());
                let headers = if i % 5 == 0 { vec![1, 0, b'h', 1, 0, 0, 0, b'x'] } else { Vec::new() };
                (key, format!("value {i}").repeat(i % 7 + 1).into_bytes(), headers)
            })
            .collect();
        let records: Vec<Record<'_>> = owned
            .iter()
            .map(|(k, v, h)| Record {
                timestamp: 1_000,
                key: k.as_deref(),
                value: v,
                headers: h,
                tombstone: false,
            })
            .collect();
        log.append(&records, BatchMeta::plain(0)).unwrap();
        owned
    }

    fn collect(log: &PartitionLog, from: u64, chunk: usize) -> Vec<(u64, Parts)> {
        let (mut out, mut offset) = (Vec::new(), from);
        loop {
            let read = log.read(offset, chunk, usize::MAX).unwrap();
            if read.count == 0 {
                return out;
            }
            for c in &read.chunks {
                for r in c.records() {
                    out.push((r.offset, (r.key.map(<[u8]>::to_vec), r.value.to_vec(), r.headers.to_vec())));
                }
            }
            offset = read.next_offset;
        }
    }

    #[test]
    fn a_batch_read_in_chunks_is_checked_once_and_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let n = 10_000;
        let written = append_big_batch(&log, n);
        CRC_CHECKS.set(0);
        let got = collect(&log, 0, 100);
        // Before reads continued a part-read batch, every chunk checked the whole batch
        // again (and walked every record before it): 100 checks of 10,000 records here.
        assert_eq!(CRC_CHECKS.get(), 1, "the batch's CRC is computed once, not once per chunk");
        assert_eq!(got.len(), n);
        for (i, ((offset, parts), want)) in got.iter().zip(&written).enumerate() {
            assert_eq!((*offset, parts), (i as u64, want), "record {i}");
        }
    }

    #[test]
    fn a_read_elsewhere_in_the_batch_checks_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let written = append_big_batch(&log, 1_000);
        log.read(0, 10, usize::MAX).unwrap();
        CRC_CHECKS.set(0);
        // Not where the last read ended: nothing remembered applies.
        let read = log.read(500, 10, usize::MAX).unwrap();
        assert_eq!(CRC_CHECKS.get(), 1);
        let first = read.chunks[0].records().next().unwrap();
        assert_eq!((first.offset, first.value), (500, &written[500].1[..]));
    }

    fn append_one(log: &PartitionLog, value: &[u8]) {
        let record = Record { timestamp: 1_000, key: None, value, headers: &[], tombstone: false };
        log.append(&[record], BatchMeta::plain(0)).unwrap();
    }

    fn values(read: &ReadResult) -> Vec<Vec<u8>> {
        read.chunks.iter().flat_map(|c| c.records().map(|r| r.value.to_vec())).collect()
    }

    #[test]
    fn a_reader_at_the_end_starts_where_its_last_read_ended() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        // Batches of ~100 bytes: ~40 between two offset index entries.
        for i in 0..100u32 {
            append_one(&log, &[i as u8; 40]);
        }
        let mut offset = log.read(0, 60, usize::MAX).unwrap().next_offset;
        for i in 100..200u32 {
            append_one(&log, &[i as u8; 40]);
            HEADERS_PASSED.set(0);
            let read = log.read(offset, 500, usize::MAX).unwrap();
            assert_eq!(HEADERS_PASSED.get(), 0, "read {i} passed batches from an index entry");
            // The 40 batches left of the first read, then one per read.
            let first = if i == 100 { 60 } else { i as u8 };
            assert_eq!(values(&read).first(), Some(&vec![first; 40]));
            assert_eq!(read.next_offset, u64::from(i) + 1);
            offset = read.next_offset;
        }
        // Another offset than where the last read ended: from the index, as before.
        HEADERS_PASSED.set(0);
        let read = log.read(150, 1, usize::MAX).unwrap();
        assert_eq!(values(&read), vec![vec![150u8; 40]]);
        assert!(HEADERS_PASSED.get() > 0);
    }

    #[test]
    fn a_remembered_end_whose_batch_changed_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        for i in 0..50u8 {
            append_one(&log, &[i; 40]);
        }
        let read = log.read(0, 30, usize::MAX).unwrap();
        let last = read.chunks.last().unwrap();
        let segment = dir.path().join("00000000000000000000.log");
        // The remembered batch's header changes under the reader (its base offset, which the
        // CRC does not cover): the read must not continue after it.
        let file = std::fs::OpenOptions::new().write(true).open(segment).unwrap();
        std::os::unix::fs::FileExt::write_at(&file, &999u64.to_le_bytes(), last.start as u64).unwrap();
        HEADERS_PASSED.set(0);
        let read = log.read(30, 5, usize::MAX).unwrap();
        assert!(HEADERS_PASSED.get() > 0, "the read started from the index");
        assert_eq!(values(&read)[0], vec![30u8; 40]);
    }
}
