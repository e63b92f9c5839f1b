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
use super::{PartitionLog, View};
use crate::format::{BatchHeader, BatchView, Compression, RecordView, ATTR_CONTROL, ATTR_TRANSACTIONAL};
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
}

impl<'a> Isolation<'a> {
    fn of(&mut self, log: &'a PartitionLog, h: &BatchHeader) -> Result<Visibility> {
        if h.attributes & ATTR_CONTROL != 0 {
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
        if h.attributes & ATTR_TRANSACTIONAL == 0 {
            return Ok(Visibility::Serve);
        }
        let open =
            table.get(h.producer_id).and_then(|e| e.open_txn).is_some_and(|first| first <= h.base_offset);
        Ok(if open {
            Visibility::Pending
        } else if table.is_aborted(h.producer_id, h.base_offset) {
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
}

impl ReadChunk {
    /// The batch, already validated when the chunk was made.
    pub fn batch(&self) -> BatchView<'_> {
        let bytes = self.map.read(self.start, self.end).expect("chunk lies in published data");
        BatchView::parse_validated(bytes)
    }

    /// The wanted records.
    pub fn records(&self) -> impl ExactSizeIterator<Item = RecordView<'_>> {
        let mut it = self.batch().records();
        if self.skip > 0 {
            it.nth(self.skip - 1);
        }
        it.take(self.count)
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
        let mut isolation = Isolation { head, view: &view, table: None, committed };
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
        let (index, _) = seg.lookup_indexes();
        let (rel, entry_pos) = match wanted.checked_sub(seg.base) {
            Some(r) if r > 0 => {
                OffsetIndex::new(index.published()).lookup_entry(r.min(u64::from(u32::MAX)) as u32)
            }
            _ => (0, 0),
        };
        let pos = entry_pos as usize;
        seg.data.release_behind(pos);
        // Offsets continue from batch to batch within a segment; the base offset is outside
        // the CRC, so continuity is what vouches for it. Batches wholly before the wanted
        // offset are passed by their header alone: a damaged batch we do not read must not
        // fail the read. A sealed segment whose trim was lost in a power failure ends in zeros.
        let mut cursor = seg
            .cursor(pos, end, seg.base + u64::from(rel), Check::Crc, OnDamage::Error)
            .zero_tail(!seg.is_active());
        let mut bytes = 0;
        while out.count < max_messages && bytes < max_bytes {
            cursor.pass(Pass::Before(out.next_offset));
            let found = match cursor.next() {
                None => break,
                Some(Ok(found)) => found,
                // Hand out the good messages before the damage; the next read reports it.
                Some(Err(_)) if out.count > 0 => break,
                Some(Err(e)) => return Err(e),
            };
            let (pos, h) = (found.position, found.header);
            let batch = found.view().expect("checked by the cursor");
            // The cursor passed every batch ending at or before `out.next_offset`.
            let mut pending = false;
            match isolation.of(self, &h)? {
                Visibility::Serve => {}
                Visibility::Pending => pending = true,
                Visibility::Skip => {
                    out.next_offset = h.next_offset();
                    continue;
                }
                Visibility::Stop => return Ok(true),
            }
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
            let dense = h.last_offset_delta as usize + 1 == h.record_count as usize;
            let skip = if dense {
                out.next_offset.saturating_sub(h.base_offset) as usize
            } else {
                batch.records().take_while(|r| r.offset < out.next_offset).count()
            };
            let count = (h.record_count as usize - skip).min(max_messages - out.count);
            let last = if dense {
                h.base_offset + (skip + count) as u64
            } else {
                batch.records().nth(skip + count - 1).map_or(h.next_offset(), |r| r.offset + 1)
            };
            out.chunks.push(ReadChunk { map: chunk_bytes, start, end, skip, count, pending });
            out.count += count;
            out.next_offset = if skip + count == h.record_count as usize { h.next_offset() } else { last };
            bytes += h.total_len;
        }
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
