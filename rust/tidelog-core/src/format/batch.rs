//! The record batch: the unit of writing, checksumming and recovery.
//!
//! Batch header (64 bytes, little-endian), followed by the record entries and blobs of
//! [`super::record`]:
//!
//! | bytes  | type   | field                                                     |
//! |--------|--------|-----------------------------------------------------------|
//! | 0..8   | u64    | base offset                                               |
//! | 8..12  | u32    | length of everything after this field (batch length − 12) |
//! | 12..16 | u32    | CRC32C (Castagnoli) of bytes 16..end                      |
//! | 16     | u8     | format version (1)                                        |
//! | 17     | u8     | attributes (bit 0: transactional, bit 1: control batch, bit 2: compact record entries, bit 3: uniform records, no entries, bits 4-5: codec, 0 none, 16 LZ4, 32 zstd) |
//! | 18..20 | u16    | reserved, 0                                               |
//! | 20..24 | u32    | last offset delta                                         |
//! | 24..28 | u32    | record count                                              |
//! | 28..36 | i64    | first timestamp, ms since the Unix epoch                  |
//! | 36..44 | i64    | max timestamp                                             |
//! | 44..52 | i64    | producer id, −1 for none                                  |
//! | 52..54 | i16    | producer epoch, −1 for none                               |
//! | 54..56 | u16    | reserved, 0                                               |
//! | 56..60 | i32    | base sequence, −1 for none                                |
//! | 60..64 | u32    | total length of the value blob (uncompressed)             |
//!
//! A batch whose attributes name a codec stores everything after the header compressed,
//! behind its uncompressed length (see [`super::compression`] for that layout):
//!
//! | bytes  | type   | field                                                     |
//! |--------|--------|-----------------------------------------------------------|
//! | 64..68 | u32    | uncompressed length of the entries and blobs              |
//! | 68..   |        | entries and blobs, compressed                             |
//!
//! Its record count, timestamps, producer fields and value blob length are those of the
//! uncompressed records, so everything that reads only headers works unchanged; records
//! are read from [`BatchView::decompress`]'s image.
//!
//! The CRC covers everything a reader interprets except the base offset and length, which
//! the reader checks against its own expectations (the offset it is looking for, the end of
//! the file) before trusting the CRC.

use super::compression::{self, Compression};
use super::record::{EntryLayout, Record, RecordEntry, RecordView, TOMBSTONE_LEN};
use super::{read_i32, read_i64, read_u32, read_u64, FORMAT_VERSION};

/// Size of the batch header.
pub const BATCH_HEADER_LEN: usize = 64;
/// Bytes before the CRC'd region: base offset, length, CRC.
const CRC_START: usize = 16;
/// Producer id stored when a batch has no producer.
pub const NO_PRODUCER: i64 = -1;
/// Base sequence stored when a batch has no producer.
pub const NO_SEQUENCE: i32 = -1;

/// What the writer decides about a batch besides its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Attribute bits.
    pub attributes: u8,
    /// Producer id or [`NO_PRODUCER`].
    pub producer_id: i64,
    /// Producer epoch or −1.
    pub producer_epoch: i16,
    /// Base sequence or [`NO_SEQUENCE`].
    pub base_sequence: i32,
}

impl BatchMeta {
    /// A batch with no producer identity.
    pub fn plain(base_offset: u64) -> Self {
        BatchMeta {
            base_offset,
            attributes: 0,
            producer_id: NO_PRODUCER,
            producer_epoch: -1,
            base_sequence: NO_SEQUENCE,
        }
    }
}

/// The decoded header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Total bytes of the batch including the header.
    pub total_len: usize,
    /// Stored CRC32C.
    pub crc: u32,
    /// Format version.
    pub version: u8,
    /// Attribute bits.
    pub attributes: u8,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: u32,
    /// Number of records.
    pub record_count: u32,
    /// Timestamp of the first record.
    pub first_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Producer id or [`NO_PRODUCER`].
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Base sequence or [`NO_SEQUENCE`].
    pub base_sequence: i32,
    /// Bytes of the value blob.
    pub values_len: u32,
}

impl BatchHeader {
    /// Decodes a header from the first [`BATCH_HEADER_LEN`] bytes, or `None` if fewer
    /// bytes are given. Nothing is validated here; see [`BatchView::parse`].
    pub fn read(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < BATCH_HEADER_LEN {
            return None;
        }
        Some(BatchHeader {
            base_offset: read_u64(bytes, 0),
            total_len: read_u32(bytes, 8) as usize + 12,
            crc: read_u32(bytes, 12),
            version: bytes[16],
            attributes: bytes[17],
            last_offset_delta: read_u32(bytes, 20),
            record_count: read_u32(bytes, 24),
            first_timestamp: read_i64(bytes, 28),
            max_timestamp: read_i64(bytes, 36),
            producer_id: read_i64(bytes, 44),
            producer_epoch: i16::from_le_bytes([bytes[52], bytes[53]]),
            base_sequence: read_i32(bytes, 56),
            values_len: read_u32(bytes, 60),
        })
    }

    /// The offset after this batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta) + 1
    }
}

/// The most compact entry layout that can describe `records`.
fn layout_for(records: &[Record<'_>]) -> EntryLayout {
    if records.iter().any(|r| r.key.is_some() || !r.headers.is_empty() || r.tombstone) {
        return EntryLayout::Full;
    }
    let first = &records[0];
    if records.iter().all(|r| r.value.len() == first.value.len() && r.timestamp == first.timestamp) {
        EntryLayout::Uniform(first.value.len() as u32)
    } else {
        EntryLayout::Compact
    }
}

/// The bytes of a record's value that go into the value blob (none for a tombstone).
#[inline]
fn stored_value<'a>(r: &Record<'a>) -> &'a [u8] {
    if r.tombstone {
        &[]
    } else {
        r.value
    }
}

/// Bytes needed to encode `records` as one batch.
pub fn encoded_len(records: &[Record<'_>]) -> usize {
    len_with(records, layout_for(records))
}

fn len_with(records: &[Record<'_>], layout: EntryLayout) -> usize {
    let entry = layout.entry_len();
    BATCH_HEADER_LEN
        + records
            .iter()
            .map(|r| entry + r.key.map_or(0, <[u8]>::len) + stored_value(r).len() + r.headers.len())
            .sum::<usize>()
}

/// Encodes `records` as one batch into `out`, which must be exactly
/// [`encoded_len`]`(records)` bytes long, and returns the header written. Records without
/// keys and headers get compact entries, or none if their values are all one size and
/// their timestamps one (see [`super::record`]).
///
/// Timestamps are stored as deltas from the first record's; the caller guarantees they
/// fit in an `i32` (about 24 days), lengths fit in the u32 fields, and `records` is
/// non-empty.
///
/// # Panics
/// If `records` is empty or `out` has the wrong length.
pub fn encode_batch(out: &mut [u8], meta: BatchMeta, records: &[Record<'_>]) -> BatchHeader {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let layout = layout_for(records);
    assert_eq!(out.len(), len_with(records, layout), "output sized by encoded_len");
    let attributes = meta.attributes | layout.attributes();
    let entry = layout.entry_len();
    let first_timestamp = records[0].timestamp;
    let mut max_timestamp = first_timestamp;
    let entries_end = BATCH_HEADER_LEN + records.len() * entry;
    let values_len: usize = records.iter().map(|r| stored_value(r).len()).sum();
    let keys_len: usize = records.iter().map(|r| r.key.map_or(0, <[u8]>::len)).sum();
    let (mut value_at, mut key_at) = (entries_end, entries_end + values_len);
    let mut header_at = key_at + keys_len;
    for (i, r) in records.iter().enumerate() {
        max_timestamp = max_timestamp.max(r.timestamp);
        let value = stored_value(r);
        let e = RecordEntry {
            offset_delta: i as u32,
            timestamp_delta: (r.timestamp - first_timestamp) as i32,
            key_len: r.key.map_or(-1, |k| k.len() as i32),
            value_len: if r.tombstone { TOMBSTONE_LEN } else { value.len() as u32 },
            headers_len: r.headers.len() as u32,
        };
        let at = BATCH_HEADER_LEN + i * entry;
        e.write(&mut out[at..at + entry], layout);
        out[value_at..value_at + value.len()].copy_from_slice(value);
        value_at += value.len();
        if let Some(key) = r.key {
            out[key_at..key_at + key.len()].copy_from_slice(key);
            key_at += key.len();
        }
        out[header_at..header_at + r.headers.len()].copy_from_slice(r.headers);
        header_at += r.headers.len();
    }
    let header =
        header_for(meta, attributes, out.len(), records.len(), first_timestamp, max_timestamp, values_len);
    write_header(out, &header);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    BatchHeader { crc, ..header }
}

/// Encodes the records compaction kept of a batch as one batch at `meta.base_offset`,
/// appending it to `out`: full entries whose offset deltas are the records' own offsets
/// minus the base (the records keep their offsets, so deltas may skip; the first may be
/// above 0 where the batch's base moved back over removed batches). Returns the header, or
/// `None` (writing nothing) if a delta does not fit its field: the kept records' timestamps
/// lie more than 2^31 ms apart, or their offsets 2^32 past the base.
///
/// # Panics
/// If `records` is empty or not in rising offset order from `meta.base_offset`.
pub fn encode_rewritten(
    out: &mut Vec<u8>,
    meta: BatchMeta,
    records: &[RecordView<'_>],
) -> Option<BatchHeader> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let first_timestamp = records[0].timestamp;
    let base = meta.base_offset;
    let mut max_timestamp = first_timestamp;
    for r in records {
        i32::try_from(r.timestamp - first_timestamp).ok()?;
        u32::try_from(r.offset.checked_sub(base).expect("records at or after the base")).ok()?;
        max_timestamp = max_timestamp.max(r.timestamp);
    }
    let layout = EntryLayout::Full;
    let entry = layout.entry_len();
    let values_len: usize = records.iter().map(|r| r.value.len()).sum();
    let keys_len: usize = records.iter().map(|r| r.key.map_or(0, <[u8]>::len)).sum();
    let headers_len: usize = records.iter().map(|r| r.headers.len()).sum();
    let start = out.len();
    let total = BATCH_HEADER_LEN + records.len() * entry + values_len + keys_len + headers_len;
    out.resize(start + total, 0);
    let bytes = &mut out[start..];
    for (i, r) in records.iter().enumerate() {
        let e = RecordEntry {
            offset_delta: (r.offset - base) as u32,
            timestamp_delta: (r.timestamp - first_timestamp) as i32,
            key_len: r.key.map_or(-1, |k| k.len() as i32),
            value_len: if r.tombstone { TOMBSTONE_LEN } else { r.value.len() as u32 },
            headers_len: r.headers.len() as u32,
        };
        let at = BATCH_HEADER_LEN + i * entry;
        e.write(&mut bytes[at..at + entry], layout);
    }
    let mut at = BATCH_HEADER_LEN + records.len() * entry;
    for part in [
        &mut records.iter().map(|r| r.value) as &mut dyn Iterator<Item = &[u8]>,
        &mut records.iter().filter_map(|r| r.key),
        &mut records.iter().map(|r| r.headers),
    ] {
        for piece in part {
            bytes[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
    }
    let last = records.last().expect("non-empty");
    let header = BatchHeader {
        base_offset: base,
        total_len: total,
        crc: 0,
        version: FORMAT_VERSION,
        attributes: meta.attributes & !layout_bits(),
        last_offset_delta: (last.offset - base) as u32,
        record_count: records.len() as u32,
        first_timestamp,
        max_timestamp,
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        base_sequence: meta.base_sequence,
        values_len: values_len as u32,
    };
    write_header(bytes, &header);
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    Some(BatchHeader { crc, ..header })
}

/// Makes the batch in `bytes` (exactly one whole, valid batch) end just before `next_offset`
/// (which lies past its last record, less than 2^32 past its base): compaction gives the
/// offsets it removed after a segment's last kept record to that record's batch, so a
/// segment still ends where the next one begins. Marks the batch compacted and
/// recomputes its CRC.
///
/// # Panics
/// If `bytes` is shorter than a header or `next_offset` is not within the batch's reach.
pub fn extend_to(bytes: &mut [u8], next_offset: u64) {
    let mut header = BatchHeader::read(bytes).expect("a whole batch");
    let delta = next_offset.checked_sub(header.base_offset + 1).expect("past the base offset");
    header.last_offset_delta = u32::try_from(delta).expect("within 2^32 of the base offset");
    header.attributes |= super::record::ATTR_COMPACTED;
    write_header(bytes, &header);
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// The attribute bits that choose an entry layout.
fn layout_bits() -> u8 {
    EntryLayout::Compact.attributes() | EntryLayout::Uniform(0).attributes()
}

/// A batch of plain values (no keys, no headers, one timestamp) whose values are already
/// contiguous, as `Topic.append_batch(buffer, lengths=...)` receives them: its encoding is
/// a head (header and compact entries, or none if the values are all one size) followed by
/// the values exactly as given, so they can be written straight from the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct ValuesBatch<'a> {
    values: &'a [u8],
    lengths: &'a [i64],
    timestamp: i64,
    layout: EntryLayout,
}

impl<'a> ValuesBatch<'a> {
    /// A batch of `values` cut at `lengths` (int64, as NumPy gives them; the caller checks
    /// that they are not negative and sum to `values.len()`), every record stamped
    /// `timestamp`.
    pub fn new(values: &'a [u8], lengths: &'a [i64], timestamp: i64) -> Self {
        let uniform = lengths
            .first()
            .is_some_and(|&first| u32::try_from(first).is_ok() && lengths.iter().all(|&len| len == first));
        let layout = if uniform { EntryLayout::Uniform(lengths[0] as u32) } else { EntryLayout::Compact };
        ValuesBatch { values, lengths, timestamp, layout }
    }

    /// The values, back to back.
    pub fn values(&self) -> &'a [u8] {
        self.values
    }

    /// Length of each value.
    pub fn lengths(&self) -> &'a [i64] {
        self.lengths
    }

    /// Timestamp of every record.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// Bytes of the head: header and entries.
    pub fn head_len(&self) -> usize {
        BATCH_HEADER_LEN + self.lengths.len() * self.layout.entry_len()
    }

    /// Bytes of the whole batch.
    pub fn encoded_len(&self) -> usize {
        self.head_len() + self.values.len()
    }

    /// Encodes the head into `head` ([`Self::head_len`] bytes) with its CRC field left 0.
    /// Returns the header and the CRC32C of the head's checked bytes: the batch's CRC is
    /// that CRC extended over the values (`crc32c_append`, which the caller may run
    /// elsewhere while it does something else), stored with [`Self::seal`].
    ///
    /// # Panics
    /// If there are no lengths or `head` has the wrong length (and, in debug builds, if the
    /// lengths do not sum to the values' length: the caller checks that).
    pub fn encode_head(&self, head: &mut [u8], meta: BatchMeta) -> (BatchHeader, u32) {
        assert!(!self.lengths.is_empty(), "a batch holds at least one record");
        debug_assert_eq!(self.lengths.iter().sum::<i64>(), self.values.len() as i64, "lengths add up");
        assert_eq!(head.len(), self.head_len(), "head sized by head_len");
        if self.layout == EntryLayout::Compact {
            // Timestamp delta 0, then the value length: one little-endian u64 per entry.
            for (entry, &len) in head[BATCH_HEADER_LEN..].chunks_exact_mut(8).zip(self.lengths) {
                entry.copy_from_slice(&(u64::from(len as u32) << 32).to_le_bytes());
            }
        }
        let header = header_for(
            meta,
            meta.attributes | self.layout.attributes(),
            self.encoded_len(),
            self.lengths.len(),
            self.timestamp,
            self.timestamp,
            self.values.len(),
        );
        write_header(head, &header);
        (header, crc32c::crc32c(&head[CRC_START..]))
    }

    /// Stores the batch's CRC in a head made by [`Self::encode_head`].
    pub fn seal(head: &mut [u8], header: BatchHeader, crc: u32) -> BatchHeader {
        head[12..16].copy_from_slice(&crc.to_le_bytes());
        BatchHeader { crc, ..header }
    }
}

fn header_for(
    meta: BatchMeta,
    attributes: u8,
    total_len: usize,
    count: usize,
    first_timestamp: i64,
    max_timestamp: i64,
    values_len: usize,
) -> BatchHeader {
    BatchHeader {
        base_offset: meta.base_offset,
        total_len,
        crc: 0,
        version: FORMAT_VERSION,
        attributes,
        last_offset_delta: (count - 1) as u32,
        record_count: count as u32,
        first_timestamp,
        max_timestamp,
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        base_sequence: meta.base_sequence,
        values_len: values_len as u32,
    }
}

fn write_header(out: &mut [u8], h: &BatchHeader) {
    out[0..8].copy_from_slice(&h.base_offset.to_le_bytes());
    out[8..12].copy_from_slice(&((h.total_len - 12) as u32).to_le_bytes());
    out[12..16].copy_from_slice(&h.crc.to_le_bytes());
    out[16] = h.version;
    out[17] = h.attributes;
    out[18..20].fill(0);
    out[20..24].copy_from_slice(&h.last_offset_delta.to_le_bytes());
    out[24..28].copy_from_slice(&h.record_count.to_le_bytes());
    out[28..36].copy_from_slice(&h.first_timestamp.to_le_bytes());
    out[36..44].copy_from_slice(&h.max_timestamp.to_le_bytes());
    out[44..52].copy_from_slice(&h.producer_id.to_le_bytes());
    out[52..54].copy_from_slice(&h.producer_epoch.to_le_bytes());
    out[54..56].fill(0);
    out[56..60].copy_from_slice(&h.base_sequence.to_le_bytes());
    out[60..64].copy_from_slice(&h.values_len.to_le_bytes());
}

/// A batch whose structure has been checked: every record entry lies inside the batch,
/// so record access cannot go out of bounds.
#[derive(Clone, Copy, Debug)]
pub struct BatchView<'a> {
    /// The decoded header.
    pub header: BatchHeader,
    bytes: &'a [u8],
    layout: EntryLayout,
    /// How the body after the header is stored; records are only read from an
    /// uncompressed view (see [`Self::decompress`]).
    codec: Compression,
}

impl<'a> BatchView<'a> {
    /// Checks the batch at the start of `bytes` (which may extend past it) and returns a
    /// view of exactly its bytes. With `verify_crc` the CRC is recomputed; without it only
    /// the structure is checked (used where the CRC was verified before).
    ///
    /// # Errors
    /// A static description of the first check that failed.
    pub fn parse(bytes: &'a [u8], verify_crc: bool) -> std::result::Result<Self, &'static str> {
        let header = BatchHeader::read(bytes).ok_or("truncated batch header")?;
        if header.total_len < BATCH_HEADER_LEN {
            return Err("batch length smaller than its header");
        }
        if header.total_len > bytes.len() {
            return Err("batch extends past the end of the data");
        }
        let bytes = &bytes[..header.total_len];
        if verify_crc && crc32c::crc32c(&bytes[CRC_START..]) != header.crc {
            return Err("CRC32C mismatch");
        }
        if header.version != FORMAT_VERSION {
            return Err("unknown format version");
        }
        let count = header.record_count as usize;
        if count == 0 {
            return Err("batch with no records");
        }
        let layout = EntryLayout::of(header.attributes, header.record_count, header.values_len)
            .ok_or("uniform value blob does not divide into the records")?;
        let codec = Compression::of(header.attributes).ok_or("unknown compression codec")?;
        if codec != Compression::None {
            // The entries are inside the compressed body: checked on the decompressed image.
            compression::check_frame(&header, bytes)?;
            return Ok(BatchView { header, bytes, layout, codec });
        }
        let entries_end = count
            .checked_mul(layout.entry_len())
            .and_then(|n| n.checked_add(BATCH_HEADER_LEN))
            .filter(|&end| end <= bytes.len())
            .ok_or("record entries extend past the batch")?;
        let entries = &bytes[BATCH_HEADER_LEN..entries_end];
        let (mut values, mut keys, mut headers) = (0u64, 0u64, 0u64);
        let mut last_delta = None;
        for i in 0..count {
            let e = RecordEntry::read(entries, i, layout);
            if last_delta.is_some_and(|d| e.offset_delta <= d) {
                return Err("record offset deltas not increasing");
            }
            last_delta = Some(e.offset_delta);
            if e.key_len < -1 {
                return Err("negative key length");
            }
            if e.is_tombstone() && layout != EntryLayout::Full {
                return Err("a tombstone in compact record entries");
            }
            values += e.value_bytes() as u64;
            keys += e.key_bytes() as u64;
            headers += u64::from(e.headers_len);
        }
        // A batch compaction rewrote may end past its last record: the removed offsets up
        // to the next segment belong to it.
        let compacted = header.attributes & super::record::ATTR_COMPACTED != 0;
        if last_delta != Some(header.last_offset_delta)
            && !(compacted && last_delta.is_some_and(|d| d < header.last_offset_delta))
        {
            return Err("last offset delta does not match the records");
        }
        if values != u64::from(header.values_len) {
            return Err("value lengths do not add up to the value blob");
        }
        if (entries_end as u64) + values + keys + headers != bytes.len() as u64 {
            return Err("record lengths do not add up to the batch length");
        }
        Ok(BatchView { header, bytes, layout, codec })
    }

    /// A batch [`Self::parse`] accepted before (the same bytes): its header and layout,
    /// without walking the record entries again. Readers hand out views of the batches
    /// they validated when they read them, several times per batch.
    ///
    /// # Panics
    /// If `bytes` does not start with a batch `parse` accepted.
    pub fn parse_validated(bytes: &'a [u8]) -> Self {
        let header = BatchHeader::read(bytes).expect("a validated batch");
        let layout = EntryLayout::of(header.attributes, header.record_count, header.values_len)
            .expect("a validated batch");
        let codec = Compression::of(header.attributes).expect("a validated batch");
        BatchView { header, bytes: &bytes[..header.total_len], layout, codec }
    }

    /// How the batch's body is stored.
    pub fn codec(&self) -> Compression {
        self.codec
    }

    /// The uncompressed image of a compressed batch: the header (codec bits cleared, the
    /// uncompressed length) and the decompressed entries and blobs, to be read with
    /// `BatchView::parse(&image, false)`, which checks its structure like any stored batch.
    ///
    /// # Errors
    /// The batch is not compressed, or its body does not decompress to its stated length.
    pub fn decompress(&self) -> std::result::Result<Vec<u8>, &'static str> {
        let body_len = compression::check_frame(&self.header, self.bytes)?;
        compression::decompress_batch(self.codec, self.bytes, body_len)
    }

    /// The batch's bytes, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Byte range of the value blob within [`Self::bytes`] (of an uncompressed batch: a
    /// compressed one's values are in its image).
    pub fn values_range(&self) -> std::ops::Range<usize> {
        let start = self.entries_end();
        start..start + self.header.values_len as usize
    }

    /// Length of record `i`'s value (`i < record_count`, checked by `parse`); 0 for a
    /// tombstone, and 0 in a compressed batch's view, whose entries are compressed.
    pub fn value_len(&self, i: usize) -> u32 {
        if self.codec != Compression::None {
            return 0;
        }
        RecordEntry::read(&self.bytes[BATCH_HEADER_LEN..], i, self.layout).value_bytes() as u32
    }

    /// Offset and timestamp of record `i` (`i < record_count`, checked by `parse`), read
    /// from its entry alone (records before it are not walked); `None` in a compressed
    /// batch's view, whose entries are compressed.
    pub fn offset_and_timestamp(&self, i: usize) -> Option<(u64, i64)> {
        if self.codec != Compression::None {
            return None;
        }
        let e = RecordEntry::read(&self.bytes[BATCH_HEADER_LEN..], i, self.layout);
        Some((
            self.header.base_offset + u64::from(e.offset_delta),
            self.header.first_timestamp + i64::from(e.timestamp_delta),
        ))
    }

    /// True if record `i` is a tombstone (`i < record_count`); false in a compressed
    /// batch's view (decompress it first).
    pub fn is_tombstone(&self, i: usize) -> bool {
        self.codec == Compression::None
            && RecordEntry::read(&self.bytes[BATCH_HEADER_LEN..], i, self.layout).is_tombstone()
    }

    fn entries_end(&self) -> usize {
        BATCH_HEADER_LEN + self.header.record_count as usize * self.layout.entry_len()
    }

    /// Iterates the records from `at`, a position a [`RecordIter`] of this same batch gave
    /// ([`RecordIter::position`]): a reader that took part of a batch continues there
    /// without walking the records before it again.
    ///
    /// # Panics
    /// In debug builds, if `at` lies outside the batch (it was not taken from this batch).
    pub fn records_from(&self, at: RecordPosition) -> RecordIter<'a> {
        debug_assert!(at.index <= self.header.record_count as usize && at.headers_at <= self.bytes.len());
        RecordIter {
            bytes: self.bytes,
            header: self.header,
            layout: self.layout,
            index: at.index,
            value_at: at.value_at,
            key_at: at.key_at,
            headers_at: at.headers_at,
        }
    }

    /// Iterates the records in offset order. A compressed batch's view has none to give
    /// (its entries are compressed): read them from [`Self::decompress`]'s image.
    pub fn records(&self) -> RecordIter<'a> {
        if self.codec != Compression::None {
            return RecordIter {
                bytes: self.bytes,
                header: self.header,
                layout: self.layout,
                index: self.header.record_count as usize,
                value_at: 0,
                key_at: 0,
                headers_at: 0,
            };
        }
        let entries_end = self.entries_end();
        let keys_at = entries_end + self.header.values_len as usize;
        // Headers follow the keys, so finding them means adding up every key length; only
        // full entries have keys (compact and uniform batches hold values alone), and a
        // walk over a large batch of those for each chunk read from it would cost O(batch).
        let keys_len: usize = match self.layout {
            EntryLayout::Full => (0..self.header.record_count as usize)
                .map(|i| RecordEntry::read(&self.bytes[BATCH_HEADER_LEN..], i, self.layout).key_bytes())
                .sum(),
            EntryLayout::Compact | EntryLayout::Uniform(_) => 0,
        };
        RecordIter {
            bytes: self.bytes,
            header: self.header,
            layout: self.layout,
            index: 0,
            value_at: entries_end,
            key_at: keys_at,
            headers_at: keys_at + keys_len,
        }
    }
}

/// Iterator over the records of a [`BatchView`].
#[derive(Clone, Debug)]
pub struct RecordIter<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
    layout: EntryLayout,
    index: usize,
    value_at: usize,
    key_at: usize,
    headers_at: usize,
}

/// Where a [`RecordIter`] stands in its batch: the next record's index and where its
/// value, key and headers start (byte positions in the batch). The value, key and headers
/// blobs follow the entries one after the other, so a record's parts are found only by
/// adding up the lengths of every record before it: a position saves that walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPosition {
    /// Index of the next record.
    pub index: usize,
    value_at: usize,
    key_at: usize,
    headers_at: usize,
}

impl RecordIter<'_> {
    /// Where the iterator stands: [`BatchView::records_from`] continues from here.
    pub fn position(&self) -> RecordPosition {
        RecordPosition {
            index: self.index,
            value_at: self.value_at,
            key_at: self.key_at,
            headers_at: self.headers_at,
        }
    }

    /// Byte position in the batch of the next record's value.
    pub fn value_at(&self) -> usize {
        self.value_at
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordView<'a>;

    #[inline]
    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.index >= self.header.record_count as usize {
            return None;
        }
        // Bounds were proven by `BatchView::parse`.
        let e = RecordEntry::read(&self.bytes[BATCH_HEADER_LEN..], self.index, self.layout);
        self.index += 1;
        let value = &self.bytes[self.value_at..self.value_at + e.value_bytes()];
        self.value_at += e.value_bytes();
        let key = (e.key_len >= 0).then(|| {
            let k = &self.bytes[self.key_at..self.key_at + e.key_bytes()];
            self.key_at += e.key_bytes();
            k
        });
        let headers = &self.bytes[self.headers_at..self.headers_at + e.headers_len as usize];
        self.headers_at += e.headers_len as usize;
        Some(RecordView {
            offset: self.header.base_offset + u64::from(e.offset_delta),
            timestamp: self.header.first_timestamp + i64::from(e.timestamp_delta),
            key,
            value,
            headers,
            tombstone: e.is_tombstone(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.header.record_count as usize - self.index;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RecordIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(meta: BatchMeta, records: &[Record<'_>]) -> Vec<u8> {
        let mut out = vec![0; encoded_len(records)];
        encode_batch(&mut out, meta, records);
        out
    }

    #[test]
    fn round_trip_with_keys_and_headers() {
        let hdr = super::super::headers::encode([("h", &b"v"[..])].into_iter()).unwrap();
        let records = [
            Record { timestamp: 1000, key: Some(b"k1"), value: b"v1", headers: &hdr, tombstone: false },
            Record { timestamp: 990, key: None, value: b"", headers: &[], tombstone: false },
            Record { timestamp: 1005, key: Some(b""), value: b"value-3", headers: &[], tombstone: false },
        ];
        let meta =
            BatchMeta { producer_id: 7, producer_epoch: 2, base_sequence: 40, ..BatchMeta::plain(100) };
        let bytes = encode(meta, &records);
        let view = BatchView::parse(&bytes, true).unwrap();
        assert_eq!(view.header.base_offset, 100);
        assert_eq!(view.header.next_offset(), 103);
        assert_eq!(view.header.max_timestamp, 1005);
        assert_eq!(
            (view.header.producer_id, view.header.producer_epoch, view.header.base_sequence),
            (7, 2, 40)
        );
        let got: Vec<_> = view.records().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].offset, got[0].timestamp, got[0].key, got[0].value),
            (100, 1000, Some(&b"k1"[..]), &b"v1"[..])
        );
        assert_eq!(got[0].headers, &hdr[..]);
        assert_eq!((got[1].offset, got[1].timestamp, got[1].key, got[1].value), (101, 990, None, &b""[..]));
        assert_eq!((got[2].key, got[2].value), (Some(&b""[..]), &b"value-3"[..]));
        assert_eq!(&bytes[view.values_range()], b"v1value-3");
    }

    #[test]
    fn offset_and_timestamp_read_one_entry_of_each_layout() {
        let full = [
            Record { timestamp: 1000, key: Some(b"k1"), value: b"v1", headers: &[], tombstone: false },
            Record { timestamp: 990, key: None, value: b"", headers: &[], tombstone: false },
        ];
        let compact = [
            Record { timestamp: 7, key: None, value: b"ab", headers: &[], tombstone: false },
            Record { timestamp: 5, key: None, value: b"c", headers: &[], tombstone: false },
        ];
        for records in [&full[..], &compact[..]] {
            let bytes = encode(BatchMeta::plain(40), records);
            let view = BatchView::parse(&bytes, true).unwrap();
            let walked: Vec<_> = view.records().map(|r| Some((r.offset, r.timestamp))).collect();
            let read: Vec<_> = (0..records.len()).map(|i| view.offset_and_timestamp(i)).collect();
            assert_eq!(read, walked);
        }
        let values = [7u8; 12];
        let lengths = [4i64; 3];
        let batch = ValuesBatch::new(&values, &lengths, 77);
        let mut bytes = vec![0; batch.encoded_len()];
        let (header, crc) = batch.encode_head(&mut bytes[..batch.head_len()], BatchMeta::plain(9));
        bytes[batch.head_len()..].copy_from_slice(&values);
        let crc = crc32c::crc32c_append(crc, &values);
        ValuesBatch::seal(&mut bytes[..batch.head_len()], header, crc);
        let view = BatchView::parse(&bytes, true).unwrap();
        assert_eq!(view.offset_and_timestamp(2), Some((11, 77)));
    }

    #[test]
    fn a_tombstone_round_trips_as_no_value_and_forces_full_entries() {
        let records = [
            Record { timestamp: 10, key: Some(b"k"), value: b"ignored", headers: &[], tombstone: true },
            Record { timestamp: 11, key: None, value: b"", headers: &[], tombstone: false },
            Record { timestamp: 12, key: None, value: b"", headers: &[], tombstone: true },
        ];
        let bytes = encode(BatchMeta::plain(7), &records);
        let view = BatchView::parse(&bytes, true).unwrap();
        assert_eq!(view.header.attributes, 0, "full entries");
        assert_eq!(view.header.values_len, 0, "a tombstone takes no value bytes");
        let got: Vec<_> = view.records().map(|r| (r.offset, r.key, r.value, r.tombstone)).collect();
        assert_eq!(
            got,
            [(7, Some(&b"k"[..]), &b""[..], true), (8, None, &b""[..], false), (9, None, &b""[..], true)]
        );
        assert_eq!((view.value_len(0), view.is_tombstone(0), view.is_tombstone(1)), (0, true, false));
        // A compact entry claiming no value is damage, not a tombstone.
        let plain = [
            Record { timestamp: 1, key: None, value: b"ab", headers: &[], tombstone: false },
            Record { timestamp: 2, key: None, value: b"c", headers: &[], tombstone: false },
        ];
        let mut bytes = encode(BatchMeta::plain(0), &plain);
        bytes[BATCH_HEADER_LEN + 4..BATCH_HEADER_LEN + 8].copy_from_slice(&TOMBSTONE_LEN.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        assert!(BatchView::parse(&bytes, true).is_err());
    }

    #[test]
    fn crc_detects_every_single_bit_flip_after_the_crc_field() {
        let records = [Record {
            timestamp: 5,
            key: Some(b"key"),
            value: b"some value",
            headers: &[],
            tombstone: false,
        }];
        let good = encode(BatchMeta::plain(0), &records);
        for byte in CRC_START..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(BatchView::parse(&bad, true).is_err(), "flip at {byte}:{bit}");
            }
        }
    }

    use super::super::record::{ATTR_COMPACT, ATTR_UNIFORM};

    /// A values batch encoded the way the log writes it: head, then the values.
    fn encode_values(meta: BatchMeta, values: &[u8], lengths: &[i64], timestamp: i64) -> Vec<u8> {
        let batch = ValuesBatch::new(values, lengths, timestamp);
        let mut bytes = vec![0; batch.encoded_len()];
        let (head, rest) = bytes.split_at_mut(batch.head_len());
        let (header, head_crc) = batch.encode_head(head, meta);
        ValuesBatch::seal(head, header, crc32c::crc32c_append(head_crc, values));
        rest.copy_from_slice(values);
        bytes
    }

    #[test]
    fn plain_values_get_the_smallest_entries_that_describe_them() {
        let same = [Record { timestamp: 9, key: None, value: b"abcd", headers: &[], tombstone: false }; 3];
        let bytes = encode(BatchMeta::plain(0), &same);
        assert_eq!(bytes.len(), BATCH_HEADER_LEN + 12, "uniform: no entries");
        let view = BatchView::parse(&bytes, true).unwrap();
        assert_eq!(view.header.attributes, ATTR_UNIFORM);
        assert_eq!(
            view.records().map(|r| (r.offset, r.timestamp, r.value)).collect::<Vec<_>>(),
            [(0, 9, &b"abcd"[..]), (1, 9, &b"abcd"[..]), (2, 9, &b"abcd"[..])]
        );

        let mixed = [
            Record { timestamp: 9, key: None, value: b"ab", headers: &[], tombstone: false },
            Record { timestamp: 7, key: None, value: b"abc", headers: &[], tombstone: false },
        ];
        let bytes = encode(BatchMeta::plain(5), &mixed);
        assert_eq!(bytes.len(), BATCH_HEADER_LEN + 2 * 8 + 5, "compact entries");
        let view = BatchView::parse(&bytes, true).unwrap();
        assert_eq!(view.header.attributes, ATTR_COMPACT);
        assert_eq!(view.value_len(1), 3);
        assert_eq!(
            view.records().map(|r| (r.offset, r.timestamp, r.value)).collect::<Vec<_>>(),
            [(5, 9, &b"ab"[..]), (6, 7, &b"abc"[..])]
        );

        // One timestamp off is enough to need entries.
        let times = [same[0], Record { timestamp: 10, tombstone: false, ..same[1] }];
        assert_eq!(
            BatchView::parse(&encode(BatchMeta::plain(0), &times), true).unwrap().header.attributes,
            ATTR_COMPACT
        );
        let keyed = [same[0], Record { key: Some(b"k"), tombstone: false, ..same[1] }];
        assert_eq!(
            BatchView::parse(&encode(BatchMeta::plain(0), &keyed), true).unwrap().header.attributes,
            0
        );
    }

    #[test]
    fn a_uniform_batch_whose_values_do_not_divide_is_rejected() {
        let same = [Record { timestamp: 9, key: None, value: b"abcd", headers: &[], tombstone: false }; 3];
        let mut bytes = encode(BatchMeta::plain(0), &same);
        // Claim 4 records of 12 bytes (and make the CRC agree): 12 / 4 is fine, 12 / 5 is not.
        for (count, ok) in [(4u32, true), (5, false)] {
            bytes[20..24].copy_from_slice(&(count - 1).to_le_bytes());
            bytes[24..28].copy_from_slice(&count.to_le_bytes());
            let crc = crc32c::crc32c(&bytes[CRC_START..]);
            bytes[12..16].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(BatchView::parse(&bytes, true).is_ok(), ok, "count {count}");
        }
    }

    #[test]
    fn crc_covers_uniform_and_compact_batches() {
        for lengths in [&[5i64, 5, 5][..], &[2, 6, 7]] {
            let good = encode_values(BatchMeta::plain(0), b"0123456789abcde", lengths, 77);
            assert!(BatchView::parse(&good, true).is_ok());
            for byte in CRC_START..good.len() {
                let mut bad = good.clone();
                bad[byte] ^= 0x10;
                assert!(BatchView::parse(&bad, true).is_err(), "flip at {byte} of {lengths:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn a_values_batch_is_byte_for_byte_the_same_records_batch(
            lengths in proptest::collection::vec(0i64..300, 1..40),
            same in any::<bool>(),
            seed in any::<u8>(),
            base in 0u64..1 << 40,
        ) {
            let lengths: Vec<i64> = if same { vec![lengths[0]; lengths.len()] } else { lengths };
            let total = lengths.iter().sum::<i64>() as usize;
            let values: Vec<u8> = (0..total).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let meta = BatchMeta::plain(base);
            let got = encode_values(meta, &values, &lengths, 1_700_000_000_123);
            let mut at = 0;
            let records: Vec<Record<'_>> = lengths.iter().map(|&len| {
                let value = &values[at..at + len as usize];
                at += len as usize;
                Record { timestamp: 1_700_000_000_123, key: None, value, headers: &[], tombstone: false }
            }).collect();
            prop_assert_eq!(&got, &encode(meta, &records));
            let view = BatchView::parse(&got, true).unwrap();
            let read: Vec<&[u8]> = view.records().map(|r| r.value).collect();
            prop_assert_eq!(read, records.iter().map(|r| r.value).collect::<Vec<_>>());
        }

        #[test]
        fn arbitrary_records_round_trip(
            recs in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::collection::vec(any::<u8>(), 0..200), -1000i64..1000),
                1..20),
            base in 0u64..u64::MAX / 2,
        ) {
            let records: Vec<Record<'_>> = recs.iter().map(|(k, v, t)| Record {
                timestamp: 1_700_000_000_000 + t, key: k.as_deref(), value: v, headers: &[],
                tombstone: false,
            }).collect();
            let bytes = encode(BatchMeta::plain(base), &records);
            let view = BatchView::parse(&bytes, true).unwrap();
            let got: Vec<_> = view.records().collect();
            prop_assert_eq!(got.len(), records.len());
            for (i, (g, r)) in got.iter().zip(&records).enumerate() {
                prop_assert_eq!(g.offset, base + i as u64);
                prop_assert_eq!(g.key, r.key);
                prop_assert_eq!(g.value, r.value);
                prop_assert_eq!(g.timestamp, r.timestamp);
            }
        }

        #[test]
        fn compressed_batches_read_back_as_their_records_and_any_corruption_is_an_error(
            recs in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                 proptest::collection::vec(0u8..4, 0..120), 0i64..3),
                1..30),
            zstd in any::<bool>(),
            at in any::<prop::sample::Index>(),
            junk in any::<u8>(),
        ) {
            let codec = if zstd { Compression::Zstd } else { Compression::Lz4 };
            let records: Vec<Record<'_>> = recs.iter().map(|(k, v, t)| Record {
                timestamp: 1_700_000_000_000 + t, key: k.as_deref(), value: v, headers: &[], tombstone: false,
            }).collect();
            let plain = encode(BatchMeta::plain(9), &records);
            let mut packed = Vec::new();
            let header = compression::compress_batch(&plain[..BATCH_HEADER_LEN], &plain[BATCH_HEADER_LEN..], codec, &mut packed);
            let stored = &packed[..header.total_len];
            let view = BatchView::parse(stored, true).unwrap();
            prop_assert_eq!(view.codec(), codec);
            prop_assert_eq!(view.records().count(), 0, "no records without decompressing");
            let image = view.decompress().unwrap();
            // The image is the plain batch, but for the CRC field (the stored batch's).
            prop_assert_eq!(&image[16..], &plain[16..]);
            prop_assert_eq!(&image[..12], &plain[..12]);
            let got: Vec<_> = BatchView::parse(&image, false).unwrap().records().map(|r| (r.key, r.value, r.timestamp)).collect();
            let want: Vec<_> = records.iter().map(|r| (r.key, r.value, r.timestamp)).collect();
            prop_assert_eq!(got, want);
            // Any byte changed after the CRC field fails the CRC; and whatever a CRC-less
            // parse accepts decompresses to an error or a sound batch, never a panic.
            let mut bad = stored.to_vec();
            let i = at.index(bad.len());
            let changed = bad[i] != junk;
            bad[i] = junk;
            if changed && i >= CRC_START { prop_assert!(BatchView::parse(&bad, true).is_err()); }
            if let Ok(v) = BatchView::parse(&bad, false) {
                if let Ok(image) = v.decompress() {
                    if let Ok(b) = BatchView::parse(&image, false) { let _ = b.records().count(); }
                }
            }
        }

        #[test]
        fn any_corruption_is_an_error_never_a_panic(
            value in proptest::collection::vec(any::<u8>(), 0..100),
            at in any::<prop::sample::Index>(),
            junk in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let records = [Record { timestamp: 1, key: Some(b"k"), value: &value, headers: &[], tombstone: false }];
            let mut bytes = encode(BatchMeta::plain(3), &records);
            let i = at.index(bytes.len());
            let changed = bytes[i] != junk;
            bytes[i] = junk;
            let parsed = BatchView::parse(&bytes, true);
            if changed && i >= CRC_START { prop_assert!(parsed.is_err()); }
            let truncated = &bytes[..cut.index(bytes.len())];
            prop_assert!(BatchView::parse(truncated, true).is_err());
            // Structure checks alone must never panic on garbage either.
            if let Ok(v) = BatchView::parse(&bytes, false) { let _ = v.records().count(); }
        }
    }
}
