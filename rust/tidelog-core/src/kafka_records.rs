//! Kafka record batches (magic 2) to and from the store's batches, for the Kafka protocol
//! server (`tidelog serve --kafka`): a Produce request's batch is checked (its CRC32C, its
//! layout, every record's bounds) and appended as one store batch with the producer's id,
//! epoch and sequence, so the partition's producer state deduplicates and orders it as it
//! does the store's own idempotent producers; a Fetch reads stored batches and encodes them
//! as Kafka batches, one per stored batch, at the same offsets.
//!
//! Kafka record batch (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! | bytes  | type   | field                                                        |
//! |--------|--------|--------------------------------------------------------------|
//! | 0..8   | i64    | base offset                                                  |
//! | 8..12  | i32    | batch length: bytes after this field                         |
//! | 12..16 | i32    | partition leader epoch                                       |
//! | 16     | i8     | magic, 2                                                     |
//! | 17..21 | u32    | CRC32C of bytes 21..end                                      |
//! | 21..23 | i16    | attributes: bits 0-2 codec, 3 log-append time (ignored), 4 transactional, 5 control |
//! | 23..27 | i32    | last offset delta                                            |
//! | 27..35 | i64    | base timestamp                                               |
//! | 35..43 | i64    | max timestamp                                                |
//! | 43..51 | i64    | producer id, −1 for none                                     |
//! | 51..53 | i16    | producer epoch                                               |
//! | 53..57 | i32    | base sequence                                                |
//! | 57..61 | i32    | record count                                                 |
//! | 61..   |        | records                                                      |
//!
//! Record: length (varint), attributes (i8), timestamp delta (varlong), offset delta
//! (varint), key length (varint, −1 null), key, value length (varint, −1 null), value,
//! header count (varint), then per header: name length (varint), UTF-8 name, value length
//! (varint, −1 null), value. Varints are zigzag-encoded.
//!
//! Invariants:
//! 1. Nothing from a client is trusted: every length is checked against the bytes it
//!    claims, the CRC is checked before any record is decoded, and a malformed batch is a
//!    [`Refusal`] naming what is wrong, never a panic and never a partial append.
//! 2. A Kafka batch becomes exactly one store batch (one atomic append), so the
//!    producer's sequence range and the store's batch coincide and a retried batch is
//!    recognised as a duplicate.

use crate::format::{headers, BatchMeta, Record, ATTR_TRANSACTIONAL};
use crate::log::ReadResult;
use crate::PartitionLog;
use crate::Result;

/// Bytes of a Kafka batch before its records.
pub const KAFKA_BATCH_HEADER_LEN: usize = 61;
/// Kafka's record batch format version.
pub const KAFKA_MAGIC: i8 = 2;
/// Kafka error code `CORRUPT_MESSAGE`.
pub const CORRUPT_MESSAGE: i16 = 2;
/// Kafka error code `UNSUPPORTED_COMPRESSION_TYPE`.
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
/// Kafka error code `INVALID_RECORD`.
pub const INVALID_RECORD: i16 = 87;
/// Kafka error code `UNSUPPORTED_FOR_MESSAGE_FORMAT`.
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;

const ATTR_KAFKA_CODEC_MASK: i16 = 0x7;
const ATTR_KAFKA_TRANSACTIONAL: i16 = 0x10;
const ATTR_KAFKA_CONTROL: i16 = 0x20;

/// Why a client's records were not appended: the Kafka error code to answer with and a
/// message naming what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The Kafka error code ([`CORRUPT_MESSAGE`], [`INVALID_RECORD`], ...).
    pub code: i16,
    /// What was wrong.
    pub reason: String,
}

fn refuse<T>(code: i16, reason: impl Into<String>) -> std::result::Result<T, Refusal> {
    Err(Refusal { code, reason: reason.into() })
}

/// The records of a Kafka batch have been appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Produced {
    /// Offset of the first record.
    pub base_offset: u64,
    /// The batch repeated one already written (an idempotent retry): not written again,
    /// `base_offset` is where the original is.
    pub duplicate: bool,
    /// Records in the batch.
    pub count: u32,
}

/// A reader over client bytes that fails (never panics) past their end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| b[0] as i8)
    }

    /// A zigzag varlong of at most 10 bytes.
    fn varlong(&mut self) -> Option<i64> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = *self.bytes.get(self.at)?;
            self.at += 1;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        None
    }

    fn varint(&mut self) -> Option<i32> {
        self.varlong().and_then(|v| i32::try_from(v).ok())
    }

    /// A length-prefixed byte string; `Some(None)` for length −1.
    fn nullable(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            n if n >= 0 => self.take(n as usize).map(Some),
            _ => None,
        }
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One decoded record of a client batch; slices borrow the request.
struct ClientRecord<'a> {
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<u8>,
}

/// The parsed header fields of a client batch and its records.
struct ClientBatch<'a> {
    attributes: i16,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<ClientRecord<'a>>,
}

/// Checks and decodes the one Kafka batch `bytes` must hold (Produce v3 and later carry
/// exactly one per partition).
fn parse_client_batch(bytes: &[u8]) -> std::result::Result<ClientBatch<'_>, Refusal> {
    if bytes.len() < KAFKA_BATCH_HEADER_LEN {
        return refuse(
            CORRUPT_MESSAGE,
            format!("record batch of {} bytes is shorter than its header", bytes.len()),
        );
    }
    let length = be_i32(bytes, 8);
    if length < 0 || 12 + length as usize != bytes.len() {
        return refuse(
            INVALID_RECORD,
            format!(
                "batch length {length} does not match the {} bytes sent (exactly one batch expected)",
                bytes.len()
            ),
        );
    }
    let magic = bytes[16] as i8;
    if magic != KAFKA_MAGIC {
        return refuse(
            UNSUPPORTED_FOR_MESSAGE_FORMAT,
            format!("record batch magic {magic}: only magic 2 is accepted"),
        );
    }
    let stored_crc = u32::from_be_bytes(bytes[17..21].try_into().expect("4 bytes"));
    let crc = crc32c::crc32c(&bytes[21..]);
    if crc != stored_crc {
        return refuse(
            CORRUPT_MESSAGE,
            format!("record batch CRC32C is {crc:#010x}, its header says {stored_crc:#010x}"),
        );
    }
    let attributes = be_i16(bytes, 21);
    if attributes & ATTR_KAFKA_CONTROL != 0 {
        return refuse(INVALID_RECORD, "clients may not produce control batches");
    }
    match attributes & ATTR_KAFKA_CODEC_MASK {
        0 => {}
        codec => {
            let name =
                ["none", "gzip", "snappy", "lz4", "zstd"].get(codec as usize).copied().unwrap_or("unknown");
            return refuse(
                UNSUPPORTED_COMPRESSION_TYPE,
                format!("compression {name} ({codec}) is not accepted yet; produce uncompressed (compression.type=none)"),
            );
        }
    }
    let last_offset_delta = be_i32(bytes, 23);
    let base_timestamp = be_i64(bytes, 27);
    let producer_id = be_i64(bytes, 43);
    let producer_epoch = be_i16(bytes, 51);
    let base_sequence = be_i32(bytes, 53);
    let count = be_i32(bytes, 57);
    if count <= 0 || last_offset_delta != count - 1 {
        return refuse(
            INVALID_RECORD,
            format!("batch of {count} records has last offset delta {last_offset_delta}"),
        );
    }
    // Each record takes at least 7 bytes: a count larger than that allows is a lie.
    if count as usize > (bytes.len() - KAFKA_BATCH_HEADER_LEN) / 7 {
        return refuse(INVALID_RECORD, format!("batch claims {count} records in {} bytes", bytes.len()));
    }
    let mut cur = Cursor { bytes, at: KAFKA_BATCH_HEADER_LEN };
    let mut records = Vec::with_capacity(count as usize);
    let mut names: Vec<(&str, &[u8])> = Vec::new();
    for i in 0..count {
        let bad = |what: &str| Refusal { code: INVALID_RECORD, reason: format!("record {i}: {what}") };
        let len = cur.varint().filter(|&l| l >= 0).ok_or_else(|| bad("bad length"))? as usize;
        let end = cur
            .at
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("runs past the batch"))?;
        let mut rec = Cursor { bytes: &bytes[..end], at: cur.at };
        rec.i8().ok_or_else(|| bad("no attributes"))?;
        let ts_delta = rec.varlong().ok_or_else(|| bad("bad timestamp delta"))?;
        let offset_delta = rec.varint().ok_or_else(|| bad("bad offset delta"))?;
        if offset_delta != i {
            return refuse(INVALID_RECORD, format!("record {i} has offset delta {offset_delta}"));
        }
        let key = rec.nullable().ok_or_else(|| bad("bad key"))?;
        let value = rec.nullable().ok_or_else(|| bad("bad value"))?;
        let header_count = rec.varint().filter(|&n| n >= 0).ok_or_else(|| bad("bad header count"))?;
        names.clear();
        for _ in 0..header_count {
            let name = rec
                .nullable()
                .ok_or_else(|| bad("bad header name"))?
                .ok_or_else(|| bad("null header name"))?;
            let name = std::str::from_utf8(name).map_err(|_| bad("header name is not UTF-8"))?;
            // The store's headers have no null value: a null one is kept as empty bytes.
            let value = rec.nullable().ok_or_else(|| bad("bad header value"))?.unwrap_or_default();
            names.push((name, value));
        }
        if rec.at != end {
            return Err(bad("length does not match its fields"));
        }
        let headers = headers::encode(names.iter().copied()).map_err(|e| bad(&e.to_string()))?;
        let timestamp = base_timestamp.checked_add(ts_delta).ok_or_else(|| bad("timestamp overflows"))?;
        records.push(ClientRecord { timestamp, key, value, headers });
        cur.at = end;
    }
    if cur.at != bytes.len() {
        return refuse(INVALID_RECORD, format!("{} bytes after the last record", bytes.len() - cur.at));
    }
    Ok(ClientBatch { attributes, producer_id, producer_epoch, base_sequence, records })
}

/// Appends the one Kafka record batch `bytes` holds to `log` as one store batch.
///
/// A batch with a producer id carries its epoch and base sequence into the store, where
/// the partition's producer state checks them: a retry of a batch already written comes
/// back as `duplicate` at its original offsets; a gap in the sequence is
/// [`crate::Error::OutOfOrderSequence`], an older epoch [`crate::Error::ProducerFenced`].
///
/// # Errors
/// `Ok(Err(refusal))` for client bytes that are not an acceptable batch (nothing written);
/// `Err` for what the store refuses or fails at, as [`PartitionLog::append`].
pub fn append_kafka_batch(
    log: &PartitionLog,
    bytes: &[u8],
) -> Result<std::result::Result<Produced, Refusal>> {
    let batch = match parse_client_batch(bytes) {
        Ok(batch) => batch,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let records: Vec<Record<'_>> = batch
        .records
        .iter()
        .map(|r| Record {
            timestamp: r.timestamp,
            key: r.key,
            value: r.value.unwrap_or_default(),
            headers: &r.headers,
            tombstone: r.value.is_none(),
        })
        .collect();
    let meta = if batch.producer_id >= 0 {
        if batch.producer_epoch < 0 || batch.base_sequence < 0 {
            return Ok(refuse(
                INVALID_RECORD,
                format!(
                    "producer {} sent epoch {} and base sequence {}",
                    batch.producer_id, batch.producer_epoch, batch.base_sequence
                ),
            ));
        }
        let transactional =
            if batch.attributes & ATTR_KAFKA_TRANSACTIONAL != 0 { ATTR_TRANSACTIONAL } else { 0 };
        BatchMeta {
            base_offset: 0,
            attributes: transactional,
            producer_id: batch.producer_id,
            producer_epoch: batch.producer_epoch,
            base_sequence: batch.base_sequence,
        }
    } else if batch.attributes & ATTR_KAFKA_TRANSACTIONAL != 0 {
        return Ok(refuse(INVALID_RECORD, "a transactional batch needs a producer id"));
    } else {
        BatchMeta::plain(0)
    };
    let done = log.append(&records, meta)?;
    Ok(Ok(Produced { base_offset: done.base_offset, duplicate: done.duplicate, count: records.len() as u32 }))
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    b.map_or(1, |b| varlong_len(b.len() as i64) + b.len())
}

/// What a Fetch read: Kafka batches and the offset to read next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Kafka record batches, back to back.
    pub bytes: Vec<u8>,
    /// The offset after the last record read (or passed over).
    pub next_offset: u64,
    /// Records in `bytes`.
    pub count: usize,
}

/// Reads about `max_bytes` of records of `log` from `offset` (at least one batch if any)
/// as Kafka record batches: one Kafka batch per stored batch (or the part of it from
/// `offset`), at the same offsets, with its producer id, epoch and sequence. With
/// `committed`, reading stops at the first transaction still open (`read_committed`);
/// aborted transactions and transaction markers are passed over either way.
///
/// # Errors
/// As [`PartitionLog::read`]: [`crate::Error::OffsetOutOfRange`], corruption, I/O.
pub fn read_kafka_batches(
    log: &PartitionLog,
    offset: u64,
    max_bytes: usize,
    committed: bool,
) -> Result<Fetched> {
    let read: ReadResult = if committed {
        log.read(offset, usize::MAX, max_bytes)?
    } else {
        log.read_uncommitted(offset, usize::MAX, max_bytes)?
    };
    let mut out = Vec::with_capacity(
        read.chunks.iter().map(|c| c.end - c.start + c.count * 8 + 64).sum::<usize>()
            + KAFKA_BATCH_HEADER_LEN,
    );
    // The offset after the last one the batches written so far cover.
    let mut covered = offset;
    for chunk in &read.chunks {
        let batch = chunk.batch();
        let h = batch.header;
        let start = out.len();
        out.resize(start + KAFKA_BATCH_HEADER_LEN, 0);
        let (mut first_offset, mut first_ts, mut max_ts, mut count) = (0u64, 0i64, i64::MIN, 0i32);
        let mut last_offset = 0u64;
        for r in chunk.records() {
            if count == 0 {
                first_offset = r.offset;
                first_ts = r.timestamp;
            }
            last_offset = r.offset;
            max_ts = max_ts.max(r.timestamp);
            let offset_delta = (r.offset - first_offset) as i64;
            let ts_delta = r.timestamp.wrapping_sub(first_ts);
            let value = (!r.tombstone).then_some(r.value);
            let decoded = if r.headers.is_empty() {
                Vec::new()
            } else {
                headers::decode(r.headers).unwrap_or_default()
            };
            let mut headers_len = varlong_len(decoded.len() as i64);
            for (name, v) in &decoded {
                headers_len += bytes_len(Some(name.as_bytes())) + bytes_len(Some(v));
            }
            let body = 1
                + varlong_len(ts_delta)
                + varlong_len(offset_delta)
                + bytes_len(r.key)
                + bytes_len(value)
                + headers_len;
            put_varlong(&mut out, body as i64);
            out.push(0);
            put_varlong(&mut out, ts_delta);
            put_varlong(&mut out, offset_delta);
            put_bytes(&mut out, r.key);
            put_bytes(&mut out, value);
            put_varlong(&mut out, decoded.len() as i64);
            for (name, v) in &decoded {
                put_bytes(&mut out, Some(name.as_bytes()));
                put_bytes(&mut out, Some(v));
            }
            count += 1;
        }
        if count == 0 {
            out.truncate(start);
            continue;
        }
        let transactional = h.attributes & ATTR_TRANSACTIONAL != 0;
        let (producer_id, epoch, sequence) = if h.producer_id >= 0 && h.base_sequence >= 0 {
            let skipped = (first_offset - h.base_offset) as u32;
            (h.producer_id, h.producer_epoch, crate::log::producers::sequence_add(h.base_sequence, skipped))
        } else if h.producer_id >= 0 {
            (h.producer_id, h.producer_epoch, -1)
        } else {
            (-1, -1, -1)
        };
        let head = &mut out[start..start + KAFKA_BATCH_HEADER_LEN];
        head[0..8].copy_from_slice(&(first_offset as i64).to_be_bytes());
        let length = (out.len() - start - 12) as i32;
        let head = &mut out[start..start + KAFKA_BATCH_HEADER_LEN];
        head[8..12].copy_from_slice(&length.to_be_bytes());
        head[12..16].copy_from_slice(&0i32.to_be_bytes());
        head[16] = KAFKA_MAGIC as u8;
        let attributes: i16 = if transactional { ATTR_KAFKA_TRANSACTIONAL } else { 0 };
        head[21..23].copy_from_slice(&attributes.to_be_bytes());
        head[23..27].copy_from_slice(&((last_offset - first_offset) as i32).to_be_bytes());
        head[27..35].copy_from_slice(&first_ts.to_be_bytes());
        head[35..43].copy_from_slice(&max_ts.to_be_bytes());
        head[43..51].copy_from_slice(&producer_id.to_be_bytes());
        head[51..53].copy_from_slice(&epoch.to_be_bytes());
        head[53..57].copy_from_slice(&sequence.to_be_bytes());
        head[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&out[start + 21..]);
        out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
        covered = last_offset + 1;
    }
    if read.next_offset > covered.max(offset) {
        // The read passed over records the client never gets (transaction markers, aborted
        // transactions) up to `next_offset`. Kafka sends those batches and the client skips
        // them, which moves its position past them; a control batch over the same offsets
        // moves it the same way. Without it a client whose log ends in a marker never
        // reaches the end: its position (and so its lag) stays short of it.
        push_control_batch(&mut out, covered.max(offset), read.next_offset);
    }
    Ok(Fetched { bytes: out, next_offset: read.next_offset, count: read.count })
}

/// Appends a Kafka control batch over the offsets `first..end` holding one commit marker
/// at `end - 1`. Clients deliver nothing of it (a commit marker is ignored whatever the
/// isolation level), set their next offset after the batch's last offset (KAFKA-5443) and
/// their position after the marker.
fn push_control_batch(out: &mut Vec<u8>, first: u64, end: u64) {
    const KEY: [u8; 4] = [0, 0, 0, 1]; // version 0, type 1 (commit)
    const VALUE: [u8; 6] = [0; 6]; // version 0, coordinator epoch 0
    let start = out.len();
    out.resize(start + KAFKA_BATCH_HEADER_LEN, 0);
    let delta = (end - first - 1) as i64;
    let body = 1 + varlong_len(0) + varlong_len(delta) + bytes_len(Some(&KEY)) + bytes_len(Some(&VALUE)) + 1;
    put_varlong(out, body as i64);
    out.push(0);
    put_varlong(out, 0);
    put_varlong(out, delta);
    put_bytes(out, Some(&KEY));
    put_bytes(out, Some(&VALUE));
    put_varlong(out, 0);
    let length = (out.len() - start - 12) as i32;
    let head = &mut out[start..start + KAFKA_BATCH_HEADER_LEN];
    head[0..8].copy_from_slice(&(first as i64).to_be_bytes());
    head[8..12].copy_from_slice(&length.to_be_bytes());
    head[16] = KAFKA_MAGIC as u8;
    head[21..23].copy_from_slice(&(ATTR_KAFKA_TRANSACTIONAL | ATTR_KAFKA_CONTROL).to_be_bytes());
    head[23..27].copy_from_slice(&(delta as i32).to_be_bytes());
    head[27..35].copy_from_slice(&(-1i64).to_be_bytes());
    head[35..43].copy_from_slice(&(-1i64).to_be_bytes());
    head[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    head[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    head[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    head[57..61].copy_from_slice(&1i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + 21..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

/// A record as a client sends it: key, value (`None`: a tombstone), timestamp.
pub type ClientRecordParts<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// Builds a Kafka batch of `records` for tests and tools: what a client would send, with a
/// valid CRC.
pub fn encode_client_batch(
    records: &[ClientRecordParts<'_>],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
) -> Vec<u8> {
    let mut out = vec![0u8; KAFKA_BATCH_HEADER_LEN];
    let first_ts = records.first().map_or(0, |r| r.2);
    let mut max_ts = first_ts;
    for (i, (key, value, ts)) in records.iter().enumerate() {
        max_ts = max_ts.max(*ts);
        let body =
            1 + varlong_len(ts - first_ts) + varlong_len(i as i64) + bytes_len(*key) + bytes_len(*value) + 1;
        put_varlong(&mut out, body as i64);
        out.push(0);
        put_varlong(&mut out, ts - first_ts);
        put_varlong(&mut out, i as i64);
        put_bytes(&mut out, *key);
        put_bytes(&mut out, *value);
        put_varlong(&mut out, 0);
    }
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[16] = KAFKA_MAGIC as u8;
    let attributes: i16 = if transactional { ATTR_KAFKA_TRANSACTIONAL } else { 0 };
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[23..27].copy_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    out[27..35].copy_from_slice(&first_ts.to_be_bytes());
    out[35..43].copy_from_slice(&max_ts.to_be_bytes());
    out[43..51].copy_from_slice(&producer_id.to_be_bytes());
    out[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    out[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    out[57..61].copy_from_slice(&(records.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;
    use crate::Error;
    use proptest::prelude::*;

    fn log(dir: &std::path::Path) -> PartitionLog {
        PartitionLog::open(dir, "t", 0, LogConfig::default()).unwrap()
    }

    #[test]
    fn produce_then_fetch_round_trips_at_the_same_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let batch = encode_client_batch(
            &[(Some(b"k".as_slice()), Some(b"v1".as_slice()), 1000), (None, None, 1005)],
            -1,
            -1,
            -1,
            false,
        );
        let done = append_kafka_batch(&log, &batch).unwrap().unwrap();
        assert_eq!((done.base_offset, done.duplicate, done.count), (0, false, 2));
        let fetched = read_kafka_batches(&log, 0, 1 << 20, true).unwrap();
        assert_eq!(fetched.next_offset, 2);
        assert_eq!(fetched.count, 2);
        // The fetched batch is what a client would have sent (same CRC), at base offset 0.
        assert_eq!(fetched.bytes, batch);
        // From the middle of a stored batch: one Kafka batch of the rest, at its offset.
        let tail = read_kafka_batches(&log, 1, 1 << 20, true).unwrap();
        assert_eq!(be_i64(&tail.bytes, 0), 1);
        assert_eq!(be_i32(&tail.bytes, 57), 1);
        assert_eq!(parse_client_batch(&tail.bytes).unwrap().records.len(), 1, "a valid batch, CRC and all");
    }

    #[test]
    fn idempotent_retries_are_duplicates_and_gaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let first = encode_client_batch(&[(None, Some(b"a".as_slice()), 1)], 7, 0, 0, false);
        assert!(!append_kafka_batch(&log, &first).unwrap().unwrap().duplicate);
        let again = append_kafka_batch(&log, &first).unwrap().unwrap();
        assert!(again.duplicate);
        assert_eq!(again.base_offset, 0);
        let gap = encode_client_batch(&[(None, Some(b"c".as_slice()), 1)], 7, 0, 5, false);
        assert!(matches!(append_kafka_batch(&log, &gap), Err(Error::OutOfOrderSequence(_))));
        let next = encode_client_batch(&[(None, Some(b"b".as_slice()), 1)], 7, 0, 1, false);
        assert_eq!(append_kafka_batch(&log, &next).unwrap().unwrap().base_offset, 1);
        assert_eq!(log.end_offset().unwrap(), 2);
    }

    #[test]
    fn bad_crc_compression_and_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let good = encode_client_batch(&[(None, Some(b"abc".as_slice()), 1)], -1, -1, -1, false);
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(append_kafka_batch(&log, &bad).unwrap().unwrap_err().code, CORRUPT_MESSAGE);
        let mut gzip = good.clone();
        gzip[22] |= 1;
        let crc = crc32c::crc32c(&gzip[21..]);
        gzip[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(append_kafka_batch(&log, &gzip).unwrap().unwrap_err().code, UNSUPPORTED_COMPRESSION_TYPE);
        assert_eq!(append_kafka_batch(&log, &good[..30]).unwrap().unwrap_err().code, CORRUPT_MESSAGE);
        assert_eq!(log.end_offset().unwrap(), 0);
    }

    #[test]
    fn a_marker_at_the_end_is_covered_by_a_control_batch() {
        use crate::format::{BatchMeta, Marker, Record, ATTR_CONTROL, ATTR_TRANSACTIONAL};
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let append = |value: &[u8], attributes: u8| {
            let record = Record { timestamp: 5, key: None, value, headers: &[], tombstone: false };
            let meta = BatchMeta {
                base_offset: 0,
                attributes,
                producer_id: 9,
                producer_epoch: 0,
                base_sequence: -1,
            };
            log.append(&[record], meta).unwrap().base_offset
        };
        append(b"a", ATTR_TRANSACTIONAL);
        append(b"b", ATTR_TRANSACTIONAL);
        append(&Marker::Commit.value(), ATTR_TRANSACTIONAL | ATTR_CONTROL);
        let control = |b: &[u8]| {
            // One batch, base offset, last offset delta, control attribute, one commit record.
            assert_eq!(b.len(), 12 + be_i32(b, 8) as usize);
            assert_eq!(crc32c::crc32c(&b[21..]), u32::from_be_bytes(b[17..21].try_into().unwrap()));
            let attributes = i16::from_be_bytes([b[21], b[22]]);
            assert_eq!(attributes & ATTR_KAFKA_CONTROL, ATTR_KAFKA_CONTROL);
            assert_eq!(be_i32(b, 57), 1);
            assert_eq!(&b[KAFKA_BATCH_HEADER_LEN + 5..KAFKA_BATCH_HEADER_LEN + 9], &[0, 0, 0, 1]);
            (be_i64(b, 0), be_i32(b, 23))
        };
        for committed in [true, false] {
            let all = read_kafka_batches(&log, 0, 1 << 20, committed).unwrap();
            assert_eq!((all.next_offset, all.count), (3, 2));
            // The records' batches, then a control batch over the marker's offset 2.
            let first_len = 12 + be_i32(&all.bytes, 8) as usize;
            assert_eq!(parse_client_batch(&all.bytes[..first_len]).unwrap().records.len(), 1);
            let rest = &all.bytes[first_len..];
            let second_len = 12 + be_i32(rest, 8) as usize;
            assert_eq!(control(&rest[second_len..]), (2, 0));
            // From the marker: only the control batch, so the client moves to the end.
            let tail = read_kafka_batches(&log, 2, 1 << 20, committed).unwrap();
            assert_eq!((tail.next_offset, tail.count), (3, 0));
            assert_eq!(control(&tail.bytes), (2, 0));
        }
        // Nothing passed over: no control batch.
        let plain = read_kafka_batches(&log, 0, 1, true).unwrap();
        assert_eq!(plain.next_offset, 1);
        assert_eq!(plain.bytes.len(), 12 + be_i32(&plain.bytes, 8) as usize);
    }

    proptest! {
        #[test]
        fn any_corruption_is_a_refusal_never_a_panic(at in 0usize..80, bit in 0u8..8, fix_crc: bool) {
            let dir = tempfile::tempdir().unwrap();
            let log = log(dir.path());
            let mut batch = encode_client_batch(
                &[(Some(b"key".as_slice()), Some(b"value".as_slice()), 5), (None, Some(b"v".as_slice()), 6)],
                -1, -1, -1, false,
            );
            let at = at % batch.len();
            batch[at] ^= 1 << bit;
            if fix_crc && batch.len() > 21 {
                let crc = crc32c::crc32c(&batch[21..]);
                batch[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            // Whatever happens, it is an answer: appended whole, refused, or a store error.
            let _ = append_kafka_batch(&log, &batch);
            let end = log.end_offset().unwrap();
            prop_assert!(end == 0 || end == 2);
        }
    }
}
