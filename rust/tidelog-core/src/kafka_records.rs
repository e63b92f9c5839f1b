//! Kafka record batches (magic 2) to and from the store's batches, for the Kafka protocol
//! server (`tidelog serve --kafka`): a Produce request's batch is checked (its CRC32C, its
//! layout, every record's bounds), decompressed if the producer compressed it (gzip,
//! snappy, LZ4 frame or zstd), and appended as one store batch with the producer's id,
//! epoch and sequence, so the partition's producer state deduplicates and orders it as it
//! does the store's own idempotent producers; a Fetch reads stored batches and encodes them
//! as uncompressed Kafka batches, one per stored batch, at the same offsets, transaction
//! markers as Kafka control batches.
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
//!    recognised as a duplicate. A compressed one is stored compressed with the store's
//!    codec of the same kind (the store reads it transparently), never as Kafka's bytes.
//! 3. Decompression is bounded: a batch that would decompress past the topic's
//!    `segment_bytes` is refused before more is allocated.

use crate::format::{
    headers, BatchHeader, BatchMeta, Compression, Marker, Record, ATTR_CONTROL, ATTR_TRANSACTIONAL,
};
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
/// Kafka error code `MESSAGE_TOO_LARGE`.
pub const MESSAGE_TOO_LARGE: i16 = 10;
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
    codec: KafkaCodec,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<ClientRecord<'a>>,
}

/// Checks and decodes the one Kafka batch `bytes` must hold (Produce v3 and later carry
/// exactly one per partition). A compressed batch's records are decompressed into
/// `scratch` (at most `max_uncompressed` bytes) and the records borrow from there.
fn parse_client_batch<'a>(
    bytes: &'a [u8],
    scratch: &'a mut Vec<u8>,
    max_uncompressed: usize,
) -> std::result::Result<ClientBatch<'a>, Refusal> {
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
    let codec = KafkaCodec::of(attributes)?;
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
    // The CRC vouched for the compressed bytes only: whatever they decompress to is
    // checked record by record below like any client bytes (invariant 1).
    let body: &'a [u8] = match codec {
        KafkaCodec::None => &bytes[KAFKA_BATCH_HEADER_LEN..],
        codec => {
            *scratch = codec.decompress(&bytes[KAFKA_BATCH_HEADER_LEN..], max_uncompressed)?;
            let scratch: &'a Vec<u8> = scratch;
            scratch.as_slice()
        }
    };
    // Records inside a compressed body are what the codec produced: damage there is the
    // message's corruption, as Kafka answers it.
    let damaged = if codec == KafkaCodec::None { INVALID_RECORD } else { CORRUPT_MESSAGE };
    // Each record takes at least 7 bytes: a count larger than that allows is a lie.
    if count as usize > body.len() / 7 {
        return refuse(damaged, format!("batch claims {count} records in {} bytes", body.len()));
    }
    let mut cur = Cursor { bytes: body, at: 0 };
    let mut records = Vec::with_capacity(count as usize);
    let mut names: Vec<(&str, &[u8])> = Vec::new();
    for i in 0..count {
        let bad = |what: &str| Refusal { code: damaged, reason: format!("record {i}: {what}") };
        let len = cur.varint().filter(|&l| l >= 0).ok_or_else(|| bad("bad length"))? as usize;
        let end =
            cur.at.checked_add(len).filter(|&e| e <= body.len()).ok_or_else(|| bad("runs past the batch"))?;
        let mut rec = Cursor { bytes: &body[..end], at: cur.at };
        rec.i8().ok_or_else(|| bad("no attributes"))?;
        let ts_delta = rec.varlong().ok_or_else(|| bad("bad timestamp delta"))?;
        let offset_delta = rec.varint().ok_or_else(|| bad("bad offset delta"))?;
        if offset_delta != i {
            return refuse(damaged, format!("record {i} has offset delta {offset_delta}"));
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
    if cur.at != body.len() {
        return refuse(damaged, format!("{} bytes after the last record", body.len() - cur.at));
    }
    Ok(ClientBatch { attributes, codec, producer_id, producer_epoch, base_sequence, records })
}

/// The codecs of Kafka's record batches (attribute bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KafkaCodec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The stream header of snappy-java's framing (`SnappyOutputStream`), which Kafka's Java
/// producer writes; librdkafka writes it too, or a bare snappy block.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// The xerial header: magic, version (i32), compatible version (i32).
const XERIAL_HEADER_LEN: usize = 16;

impl KafkaCodec {
    fn of(attributes: i16) -> std::result::Result<Self, Refusal> {
        Ok(match attributes & ATTR_KAFKA_CODEC_MASK {
            0 => KafkaCodec::None,
            1 => KafkaCodec::Gzip,
            2 => KafkaCodec::Snappy,
            3 => KafkaCodec::Lz4,
            4 => KafkaCodec::Zstd,
            codec => {
                return refuse(UNSUPPORTED_COMPRESSION_TYPE, format!("unknown compression codec {codec}"));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            KafkaCodec::None => "none",
            KafkaCodec::Gzip => "gzip",
            KafkaCodec::Snappy => "snappy",
            KafkaCodec::Lz4 => "lz4",
            KafkaCodec::Zstd => "zstd",
        }
    }

    /// How the store keeps a batch the producer compressed with this codec: the producer
    /// asked for compression, so it stays compressed, with the store's codec of the same
    /// kind (LZ4 for the fast ones, zstd for the dense ones). An uncompressed batch takes
    /// the topic's codec, as any append.
    fn stored_as(self) -> Option<Compression> {
        match self {
            KafkaCodec::None => None,
            KafkaCodec::Snappy | KafkaCodec::Lz4 => Some(Compression::Lz4),
            KafkaCodec::Gzip | KafkaCodec::Zstd => Some(Compression::Zstd),
        }
    }

    /// Decompresses the records section of a batch, refusing more than `limit` bytes of
    /// output (a small request must not make the server allocate gigabytes).
    fn decompress(self, input: &[u8], limit: usize) -> std::result::Result<Vec<u8>, Refusal> {
        let name = self.name();
        match self {
            KafkaCodec::None => Ok(input.to_vec()),
            KafkaCodec::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), limit, name),
            // Kafka's LZ4 is the LZ4 frame format (magic 0x184D2204, blocks, optional
            // checksums), not the store's bare LZ4 block: decoded as a frame here and
            // stored again as the store's block (see `stored_as`).
            KafkaCodec::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), limit, name),
            KafkaCodec::Zstd => match zstd::stream::read::Decoder::with_buffer(input) {
                Ok(decoder) => read_bounded(decoder, limit, name),
                Err(e) => refuse(CORRUPT_MESSAGE, format!("zstd records do not decompress: {e}")),
            },
            KafkaCodec::Snappy => snappy_decompress(input, limit),
        }
    }
}

fn too_large<T>(codec: &str, limit: usize) -> std::result::Result<T, Refusal> {
    refuse(
        MESSAGE_TOO_LARGE,
        format!("{codec} records decompress to more than {limit} bytes (the topic's segment_bytes)"),
    )
}

fn read_bounded(
    reader: impl std::io::Read,
    limit: usize,
    codec: &str,
) -> std::result::Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let mut out = Vec::new();
    match reader.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => too_large(codec, limit),
        Ok(_) => Ok(out),
        Err(e) => refuse(CORRUPT_MESSAGE, format!("{codec} records do not decompress: {e}")),
    }
}

/// Snappy as Kafka producers send it: snappy-java's framing (a header, then blocks each
/// behind a big-endian i32 length) or one bare snappy block.
fn snappy_decompress(input: &[u8], limit: usize) -> std::result::Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    if !input.starts_with(&XERIAL_MAGIC) {
        snappy_block(input, &mut out, limit)?;
        return Ok(out);
    }
    let mut at = XERIAL_HEADER_LEN;
    if input.len() < at {
        return refuse(CORRUPT_MESSAGE, "snappy records: truncated snappy-java header");
    }
    while at < input.len() {
        let Some(len) = input.get(at..at + 4) else {
            return refuse(CORRUPT_MESSAGE, "snappy records: truncated block length");
        };
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        at += 4;
        let Some(block) = at.checked_add(len).and_then(|end| input.get(at..end)) else {
            return refuse(CORRUPT_MESSAGE, "snappy records: block runs past the batch");
        };
        snappy_block(block, &mut out, limit)?;
        at += len;
    }
    Ok(out)
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> std::result::Result<(), Refusal> {
    let corrupt = |e: snap::Error| Refusal {
        code: CORRUPT_MESSAGE,
        reason: format!("snappy records do not decompress: {e}"),
    };
    // The block states its length first: checked against the limit before allocating.
    let len = snap::raw::decompress_len(block).map_err(corrupt)?;
    if out.len().saturating_add(len) > limit {
        return too_large("snappy", limit);
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(corrupt)?;
    if written != len {
        return refuse(CORRUPT_MESSAGE, "snappy records: a block is shorter than it states");
    }
    Ok(())
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
    let mut scratch = Vec::new();
    let batch = match parse_client_batch(bytes, &mut scratch, log.settings().segment_bytes()) {
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
    let done = log.append_as(&records, meta, batch.codec.stored_as())?;
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
    /// Records in `bytes`, transaction markers included.
    pub count: usize,
    /// With `committed`: the aborted transactions with batches among those read, as
    /// (producer id, first offset), for the client to drop (Kafka's
    /// `aborted_transactions`); empty otherwise.
    pub aborted: Vec<(i64, u64)>,
}

/// Reads about `max_bytes` of records of `log` from `offset` (at least one batch if any)
/// as Kafka record batches, as Kafka's Fetch serves them: one uncompressed Kafka batch per
/// stored batch (or the part of it from `offset`), at the same offsets, with its producer
/// id, epoch and sequence, so every client can decode them whatever codec stored them.
///
/// Transaction markers are served as Kafka control batches, and aborted transactions'
/// batches are served too: clients pass over both themselves, a consumer's position moving
/// past a marker's offset (a read that served nothing else would otherwise leave it short
/// of the end for good). With `committed` (`read_committed`) reading stops at the first
/// transaction still open, and [`Fetched::aborted`] lists the aborted transactions read.
///
/// # Errors
/// As [`PartitionLog::read`]: [`crate::Error::OffsetOutOfRange`], corruption, I/O.
pub fn read_kafka_batches(
    log: &PartitionLog,
    offset: u64,
    max_bytes: usize,
    committed: bool,
) -> Result<Fetched> {
    let read: ReadResult = log.read_with_markers(offset, usize::MAX, max_bytes, committed)?;
    let mut out = Vec::with_capacity(read.chunks.iter().map(|c| c.end - c.start + c.count * 8 + 64).sum());
    let mut transactional = false;
    for chunk in &read.chunks {
        let batch = chunk.batch();
        let h = batch.header;
        transactional |= h.attributes & ATTR_TRANSACTIONAL != 0;
        if h.attributes & ATTR_CONTROL != 0 {
            put_control_batch(&mut out, &h, Marker::of(&batch));
            continue;
        }
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
        let (producer_id, epoch, sequence) = if h.producer_id >= 0 && h.base_sequence >= 0 {
            let skipped = (first_offset - h.base_offset) as u32;
            (h.producer_id, h.producer_epoch, crate::log::producers::sequence_add(h.base_sequence, skipped))
        } else if h.producer_id >= 0 {
            (h.producer_id, h.producer_epoch, -1)
        } else {
            (-1, -1, -1)
        };
        let attributes: i16 =
            if h.attributes & ATTR_TRANSACTIONAL != 0 { ATTR_KAFKA_TRANSACTIONAL } else { 0 };
        let head = KafkaHead {
            base_offset: first_offset,
            attributes,
            last_offset_delta: (last_offset - first_offset) as i32,
            base_timestamp: first_ts,
            max_timestamp: max_ts,
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
            count,
        };
        head.seal(&mut out[start..]);
    }
    let aborted = if committed && transactional {
        log.aborted_transactions(offset, read.next_offset)?
            .into_iter()
            .map(|a| (a.producer_id, a.first))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Fetched { bytes: out, next_offset: read.next_offset, count: read.count, aborted })
}

/// The header fields of a Kafka batch being written.
struct KafkaHead {
    base_offset: u64,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    count: i32,
}

impl KafkaHead {
    /// Writes the header into `batch` (the whole batch: a zeroed header, then its records)
    /// with its length and CRC32C.
    fn seal(&self, batch: &mut [u8]) {
        let length = (batch.len() - 12) as i32;
        let head = &mut batch[..KAFKA_BATCH_HEADER_LEN];
        head[0..8].copy_from_slice(&(self.base_offset as i64).to_be_bytes());
        head[8..12].copy_from_slice(&length.to_be_bytes());
        head[12..16].copy_from_slice(&0i32.to_be_bytes());
        head[16] = KAFKA_MAGIC as u8;
        head[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        head[23..27].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        head[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        head[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        head[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        head[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        head[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        head[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

/// Appends the Kafka control batch of the stored transaction marker `h`: one record whose
/// key is (version 0, type: 0 abort, 1 commit) and value (version 0, coordinator epoch 0),
/// both big-endian, as Kafka's `EndTransactionMarker`. A marker the store cannot read is
/// an abort, as the store's own readers take it.
fn put_control_batch(out: &mut Vec<u8>, h: &BatchHeader, marker: Option<Marker>) {
    let kind: u8 = u8::from(marker == Some(Marker::Commit));
    let start = out.len();
    out.resize(start + KAFKA_BATCH_HEADER_LEN, 0);
    let key = [0, 0, 0, kind];
    let value = [0u8; 6];
    let body = 1 + 1 + 1 + bytes_len(Some(&key)) + bytes_len(Some(&value)) + 1;
    put_varlong(out, body as i64);
    out.push(0);
    put_varlong(out, 0);
    put_varlong(out, 0);
    put_bytes(out, Some(&key));
    put_bytes(out, Some(&value));
    put_varlong(out, 0);
    KafkaHead {
        base_offset: h.base_offset,
        attributes: ATTR_KAFKA_TRANSACTIONAL | ATTR_KAFKA_CONTROL,
        last_offset_delta: 0,
        base_timestamp: h.first_timestamp,
        max_timestamp: h.max_timestamp,
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: -1,
        count: 1,
    }
    .seal(&mut out[start..]);
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
        let mut scratch = Vec::new();
        let parsed = parse_client_batch(&tail.bytes, &mut scratch, 1 << 20).unwrap();
        assert_eq!(parsed.records.len(), 1, "a valid batch, CRC and all");
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
        // A codec Kafka does not define.
        let mut unknown = good.clone();
        unknown[22] |= 5;
        let crc = crc32c::crc32c(&unknown[21..]);
        unknown[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            append_kafka_batch(&log, &unknown).unwrap().unwrap_err().code,
            UNSUPPORTED_COMPRESSION_TYPE
        );
        assert_eq!(append_kafka_batch(&log, &good[..30]).unwrap().unwrap_err().code, CORRUPT_MESSAGE);
        assert_eq!(log.end_offset().unwrap(), 0);
    }

    /// `batch` (uncompressed, from `encode_client_batch`) with its records section replaced
    /// by `body` and its codec bits set to `codec`, length and CRC fixed.
    fn with_body(batch: &[u8], codec: i16, body: &[u8]) -> Vec<u8> {
        let mut out = batch[..KAFKA_BATCH_HEADER_LEN].to_vec();
        out.extend_from_slice(body);
        let length = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&length.to_be_bytes());
        let attributes = (be_i16(&out, 21) & !ATTR_KAFKA_CODEC_MASK) | codec;
        out[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// The records section compressed as Kafka producers compress it, for each codec.
    fn kafka_compress(codec: i16, records: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match codec {
            1 => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(records).unwrap();
                e.finish().unwrap()
            }
            // snappy-java's framing, as the Java producer writes it, in two blocks.
            2 => {
                let mut out = XERIAL_MAGIC.to_vec();
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                let half = records.len() / 2;
                for part in [&records[..half], &records[half..]] {
                    let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
                    out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                    out.extend_from_slice(&block);
                }
                out
            }
            3 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(records).unwrap();
                e.finish().unwrap()
            }
            4 => zstd::stream::encode_all(records, 3).unwrap(),
            _ => unreachable!(),
        }
    }

    /// A record's key, value (`None`: a tombstone) and timestamp, owned.
    type OwnedRecord = (Option<Vec<u8>>, Option<Vec<u8>>, i64);

    fn many_records() -> Vec<OwnedRecord> {
        (0..200)
            .map(|i| {
                let key = (i % 3 == 0).then(|| format!("key-{i}").into_bytes());
                let value =
                    (i % 50 != 7).then(|| format!("{{\"n\": {i}, \"pad\": \"xxxxxxxx\"}}").into_bytes());
                (key, value, 1_000 + i)
            })
            .collect()
    }

    #[test]
    fn every_kafka_codec_is_decompressed_checked_and_stored_compressed() {
        let owned = many_records();
        let parts: Vec<ClientRecordParts<'_>> =
            owned.iter().map(|(k, v, ts)| (k.as_deref(), v.as_deref(), *ts)).collect();
        let plain = encode_client_batch(&parts, 9, 0, 0, false);
        for codec in 1..=4i16 {
            let dir = tempfile::tempdir().unwrap();
            let log = log(dir.path());
            let compressed =
                with_body(&plain, codec, &kafka_compress(codec, &plain[KAFKA_BATCH_HEADER_LEN..]));
            let done = append_kafka_batch(&log, &compressed).unwrap().unwrap();
            assert_eq!((done.base_offset, done.count, done.duplicate), (0, 200, false), "codec {codec}");
            // The producer's sequence holds: the same batch again is its retry.
            assert!(append_kafka_batch(&log, &compressed).unwrap().unwrap().duplicate, "codec {codec}");
            // Stored compressed, with the store's codec of the same kind.
            let read = log.read(0, usize::MAX, usize::MAX).unwrap();
            let stored = read.chunks[0].map.clone();
            assert!(matches!(stored, crate::log::ChunkBytes::Image(_)), "codec {codec} stored compressed");
            let got: Vec<_> = read.chunks[0]
                .records()
                .map(|r| {
                    (
                        r.offset,
                        r.key.map(<[u8]>::to_vec),
                        (!r.tombstone).then(|| r.value.to_vec()),
                        r.timestamp,
                    )
                })
                .collect();
            let want: Vec<_> = owned
                .iter()
                .enumerate()
                .map(|(i, (k, v, ts))| (i as u64, k.clone(), v.clone(), *ts))
                .collect();
            assert_eq!(got, want, "codec {codec}");
            // Served back uncompressed: what the client would have sent without a codec.
            assert_eq!(read_kafka_batches(&log, 0, 1 << 20, false).unwrap().bytes, plain, "codec {codec}");
        }
    }

    #[test]
    fn damaged_compressed_bodies_are_corrupt_messages_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let owned = many_records();
        let parts: Vec<ClientRecordParts<'_>> =
            owned.iter().map(|(k, v, ts)| (k.as_deref(), v.as_deref(), *ts)).collect();
        let plain = encode_client_batch(&parts, -1, -1, -1, false);
        let records = &plain[KAFKA_BATCH_HEADER_LEN..];
        for codec in 1..=4i16 {
            let body = kafka_compress(codec, records);
            // Bytes the codec refuses, behind a CRC that matches them (the client's CRC
            // vouches for what it sent, not that it decompresses).
            for damaged in [body[..body.len() / 2].to_vec(), vec![0xff; 64], Vec::new()] {
                let batch = with_body(&plain, codec, &damaged);
                let refusal = append_kafka_batch(&log, &batch).unwrap().unwrap_err();
                assert_eq!(refusal.code, CORRUPT_MESSAGE, "codec {codec}: {}", refusal.reason);
            }
            // A body that decompresses to records that do not parse.
            let garbage = kafka_compress(codec, &[7u8; 300]);
            let refusal = append_kafka_batch(&log, &with_body(&plain, codec, &garbage)).unwrap().unwrap_err();
            assert_eq!(refusal.code, CORRUPT_MESSAGE, "codec {codec}: {}", refusal.reason);
            // A bomb: more than a segment once decompressed.
            let config =
                LogConfig { segment_bytes: 1 << 20, max_message_bytes: 1 << 18, ..LogConfig::default() };
            let small_dir = tempfile::tempdir().unwrap();
            let small = PartitionLog::open(small_dir.path(), "t", 0, config).unwrap();
            let bomb = kafka_compress(codec, &vec![0u8; 4 << 20]);
            let refusal = append_kafka_batch(&small, &with_body(&plain, codec, &bomb)).unwrap().unwrap_err();
            assert_eq!(refusal.code, MESSAGE_TOO_LARGE, "codec {codec}: {}", refusal.reason);
            assert_eq!(small.end_offset().unwrap(), 0);
        }
        assert_eq!(log.end_offset().unwrap(), 0);
    }

    #[test]
    fn snappy_without_framing_is_one_bare_block() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let plain = encode_client_batch(&[(None, Some(b"bare".as_slice()), 1)], -1, -1, -1, false);
        let block = snap::raw::Encoder::new().compress_vec(&plain[KAFKA_BATCH_HEADER_LEN..]).unwrap();
        append_kafka_batch(&log, &with_body(&plain, 2, &block)).unwrap().unwrap();
        assert_eq!(read_kafka_batches(&log, 0, 1 << 20, false).unwrap().bytes, plain);
    }

    #[test]
    fn fetch_serves_markers_and_aborted_transactions_as_kafka_does() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(dir.path());
        let txn =
            |pid: i64, seq: i32, v: &[u8]| encode_client_batch(&[(None, Some(v), 1)], pid, 0, seq, true);
        let marker = |pid: i64, kind: Marker| {
            let meta = BatchMeta {
                base_offset: 0,
                attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: -1,
            };
            let value = kind.value();
            let record = Record { timestamp: 2, key: None, value: &value, headers: &[], tombstone: false };
            log.append(&[record], meta).unwrap();
        };
        append_kafka_batch(&log, &txn(1, 0, b"aborted")).unwrap().unwrap(); // 0
        append_kafka_batch(&log, &txn(2, 0, b"committed")).unwrap().unwrap(); // 1
        marker(1, Marker::Abort); // 2
        marker(2, Marker::Commit); // 3
        for committed in [true, false] {
            let fetched = read_kafka_batches(&log, 0, 1 << 20, committed).unwrap();
            assert_eq!(fetched.next_offset, 4);
            let mut at = 0;
            let mut batches = Vec::new();
            while at < fetched.bytes.len() {
                let len = 12 + be_i32(&fetched.bytes, at + 8) as usize;
                let b = &fetched.bytes[at..at + len];
                assert_eq!(crc32c::crc32c(&b[21..]).to_be_bytes(), b[17..21], "each batch's CRC holds");
                batches.push((be_i64(b, 0), be_i16(b, 21), be_i64(b, 43), b.to_vec()));
                at += len;
            }
            let summary: Vec<_> = batches.iter().map(|(o, a, p, _)| (*o, *a, *p)).collect();
            assert_eq!(summary, [(0, 0x10, 1), (1, 0x10, 2), (2, 0x30, 1), (3, 0x30, 2)]);
            // The control records: key (version 0, type), value (version 0, epoch 0).
            let abort = &batches[2].3;
            let mut rec = Cursor { bytes: abort, at: KAFKA_BATCH_HEADER_LEN };
            rec.varint().unwrap();
            rec.i8().unwrap();
            rec.varlong().unwrap();
            rec.varint().unwrap();
            assert_eq!(rec.nullable().unwrap(), Some([0u8, 0, 0, 0].as_slice()));
            assert_eq!(rec.nullable().unwrap(), Some([0u8; 6].as_slice()));
            let commit = &batches[3].3;
            assert_eq!(commit[KAFKA_BATCH_HEADER_LEN + 4..KAFKA_BATCH_HEADER_LEN + 9], [8, 0, 0, 0, 1]);
            assert_eq!(fetched.aborted, if committed { vec![(1, 0)] } else { vec![] });
        }
        // From past the aborted data (its marker still ahead): it is still listed.
        assert_eq!(read_kafka_batches(&log, 1, 1 << 20, true).unwrap().aborted, vec![(1, 0)]);
        // Past its marker: not.
        assert_eq!(read_kafka_batches(&log, 3, 1 << 20, true).unwrap().aborted, vec![]);
        // The store's own readers still see only the committed message.
        let read = log.read(0, usize::MAX, usize::MAX).unwrap();
        let values: Vec<_> = read.chunks.iter().flat_map(|c| c.records().map(|r| r.value.to_vec())).collect();
        assert_eq!(values, [b"committed".to_vec()]);
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
