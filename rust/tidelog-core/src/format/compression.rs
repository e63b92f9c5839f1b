//! Batch compression: a batch is compressed whole, as in Kafka. The 64-byte header stays
//! plain (so indexes, recovery, producer state and transaction markers never decompress
//! anything); everything after it (the record entries and the value, key and headers
//! blobs of [`super::record`]) is stored compressed, after the length it has uncompressed:
//!
//! | bytes  | type   | field                                                        |
//! |--------|--------|--------------------------------------------------------------|
//! | 0..64  |        | batch header; attributes carry the codec (bits 4-5), the record count, the value blob's uncompressed length, as in an uncompressed batch |
//! | 64..68 | u32 LE | uncompressed body length: entries and blobs                  |
//! | 68..   |        | the body, compressed (an LZ4 block, or a zstd frame)         |
//!
//! The CRC (bytes 12..16) covers bytes 16..end as stored, compressed, so recovery checks a
//! compressed batch exactly as any other. A reader decompresses the body behind a copy of
//! the header and gets the batch the writer would have stored uncompressed (its CRC field
//! aside), which every record accessor then reads as usual.
//!
//! Invariants:
//! 1. Decompression never trusts the stored bytes: the uncompressed length is bounded
//!    (at most [`MAX_UNCOMPRESSED_BYTES`]), both decoders are bounds-checked and must fill
//!    exactly that length, and the result is parsed like any stored batch, so a CRC-valid
//!    batch with a damaged body is an error, never a panic or a wrong record.
//! 2. Control batches (transaction markers) are never compressed by writers.

use std::cell::RefCell;

use super::batch::{BatchHeader, BATCH_HEADER_LEN};
use super::{read_u32, FORMAT_VERSION};

/// Attribute bit: the batch body is an LZ4 block.
pub const ATTR_LZ4: u8 = 16;
/// Attribute bit: the batch body is a zstd frame.
pub const ATTR_ZSTD: u8 = 32;
/// The attribute bits naming the codec (both set is no codec: damage).
pub const ATTR_CODEC_MASK: u8 = ATTR_LZ4 | ATTR_ZSTD;
/// Bytes of a compressed batch before its compressed body: the header and the length.
pub const COMPRESSED_HEAD_LEN: usize = BATCH_HEADER_LEN + 4;
/// Largest uncompressed body a reader accepts: a batch never exceeds a segment (writers
/// check the uncompressed size against `segment_bytes`), and no segment exceeds this.
pub const MAX_UNCOMPRESSED_BYTES: usize = crate::log::config::MAX_SEGMENT_BYTES;
/// zstd's own default level (Kafka's too): about 9x on JSON at ~0.9 GB/s here.
const ZSTD_LEVEL: i32 = 3;

/// How a batch body is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// As is.
    #[default]
    None,
    /// LZ4 block format (fast).
    Lz4,
    /// Zstandard, level 3 (smaller).
    Zstd,
}

impl Compression {
    /// The names a setting takes, in the order error messages list them.
    pub const NAMES: [&'static str; 3] = ["none", "lz4", "zstd"];

    /// The codec called `name` (`"none"`, `"lz4"`, `"zstd"`; case and surrounding blanks
    /// ignored), or `None` for any other word.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Compression::None),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The setting's word for this codec.
    pub fn name(self) -> &'static str {
        Compression::NAMES[self as usize]
    }

    /// The attribute bits that say this codec.
    pub fn attributes(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => ATTR_LZ4,
            Compression::Zstd => ATTR_ZSTD,
        }
    }

    /// The codec a batch with these attributes was stored with, or `None` if the codec
    /// bits name no codec (damage).
    #[inline]
    pub fn of(attributes: u8) -> Option<Self> {
        match attributes & ATTR_CODEC_MASK {
            0 => Some(Compression::None),
            ATTR_LZ4 => Some(Compression::Lz4),
            ATTR_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The codec's code in a shared word (see `settings::SharedSettings`).
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The codec of [`Self::code`].
    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => Compression::Lz4,
            2 => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

thread_local! {
    /// zstd contexts are worth keeping: making one costs more than compressing a small batch.
    static ZSTD_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `input` with `codec` into `out` (which it grows, never shrinks) and returns
/// the compressed length.
fn compress_into(codec: Compression, input: &[u8], out: &mut Vec<u8>, at: usize) -> usize {
    match codec {
        Compression::None => {
            grow(out, at + input.len());
            out[at..at + input.len()].copy_from_slice(input);
            input.len()
        }
        Compression::Lz4 => {
            grow(out, at + lz4_flex::block::get_maximum_output_size(input.len()));
            lz4_flex::block::compress_into(input, &mut out[at..]).expect("output sized by the bound")
        }
        Compression::Zstd => {
            grow(out, at + zstd::zstd_safe::compress_bound(input.len()));
            ZSTD_COMPRESSOR.with_borrow_mut(|c| {
                let c = match c {
                    Some(c) => c,
                    None => c.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd context")),
                };
                c.compress_to_buffer(input, &mut out[at..]).expect("output sized by the bound")
            })
        }
    }
}

fn grow(out: &mut Vec<u8>, len: usize) {
    if out.len() < len {
        out.resize(len, 0);
    }
}

/// Decompresses `input` into `out`, which must come out exactly full.
fn decompress_into(codec: Compression, input: &[u8], out: &mut [u8]) -> Result<(), &'static str> {
    let written = match codec {
        Compression::None => return Err("not a compressed batch"),
        Compression::Lz4 => lz4_flex::block::decompress_into(input, out).map_err(|_| "damaged LZ4 body")?,
        Compression::Zstd => ZSTD_DECOMPRESSOR.with_borrow_mut(|d| {
            let d = match d {
                Some(d) => d,
                None => d.insert(zstd::bulk::Decompressor::new().map_err(|_| "no zstd context")?),
            };
            d.decompress_to_buffer(input, out).map_err(|_| "damaged zstd body")
        })?,
    };
    if written != out.len() {
        return Err("compressed body does not hold its stated length");
    }
    Ok(())
}

/// Stores an encoded, uncompressed batch compressed: `plain_header` is the batch's first
/// [`BATCH_HEADER_LEN`] bytes as encoded uncompressed (its CRC is not read), `body` what
/// follows them. The compressed batch is written to the start of `out` (grown as needed,
/// never shrunk, so a reused buffer stops allocating) and its header returned: its length
/// is `header.total_len`.
///
/// # Panics
/// If `plain_header` is shorter than a header or `codec` is [`Compression::None`].
pub fn compress_batch(
    plain_header: &[u8],
    body: &[u8],
    codec: Compression,
    out: &mut Vec<u8>,
) -> BatchHeader {
    assert_ne!(codec, Compression::None, "compress_batch needs a codec");
    let plain = BatchHeader::read(plain_header).expect("a whole header");
    let packed = compress_into(codec, body, out, COMPRESSED_HEAD_LEN);
    let total_len = COMPRESSED_HEAD_LEN + packed;
    let header = BatchHeader {
        total_len,
        attributes: (plain.attributes & !ATTR_CODEC_MASK) | codec.attributes(),
        ..plain
    };
    out[..BATCH_HEADER_LEN].copy_from_slice(&plain_header[..BATCH_HEADER_LEN]);
    out[8..12].copy_from_slice(&((total_len - 12) as u32).to_le_bytes());
    out[17] = header.attributes;
    out[BATCH_HEADER_LEN..COMPRESSED_HEAD_LEN].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c(&out[16..total_len]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    BatchHeader { crc, ..header }
}

/// Checks the frame of a compressed batch (`bytes` is exactly the batch): returns the
/// uncompressed body length.
pub(crate) fn check_frame(header: &BatchHeader, bytes: &[u8]) -> Result<usize, &'static str> {
    if bytes.len() < COMPRESSED_HEAD_LEN {
        return Err("compressed batch shorter than its head");
    }
    let body_len = read_u32(bytes, BATCH_HEADER_LEN) as usize;
    if body_len > MAX_UNCOMPRESSED_BYTES - BATCH_HEADER_LEN {
        return Err("compressed batch claims an uncompressed length larger than any segment");
    }
    if (header.values_len as usize) > body_len {
        return Err("value blob longer than the uncompressed body");
    }
    Ok(body_len)
}

/// The uncompressed image of the compressed batch `bytes` (exactly the batch, its frame
/// checked by [`check_frame`]): its header with the codec bits cleared and the length of
/// the uncompressed batch, then the decompressed body. The image's CRC field is the stored
/// batch's (the stored bytes were what it checked); parse it without CRC.
///
/// # Errors
/// A static description of what failed (the body does not decompress to its length).
pub(crate) fn decompress_batch(
    codec: Compression,
    bytes: &[u8],
    body_len: usize,
) -> Result<Vec<u8>, &'static str> {
    // Zeroed by the allocator (fresh pages for large images), then overwritten.
    let mut image = vec![0u8; BATCH_HEADER_LEN + body_len];
    image[..BATCH_HEADER_LEN].copy_from_slice(&bytes[..BATCH_HEADER_LEN]);
    image[8..12].copy_from_slice(&((BATCH_HEADER_LEN + body_len - 12) as u32).to_le_bytes());
    image[17] &= !ATTR_CODEC_MASK;
    debug_assert_eq!(image[16], FORMAT_VERSION);
    decompress_into(codec, &bytes[COMPRESSED_HEAD_LEN..], &mut image[BATCH_HEADER_LEN..])?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_words_are_refused() {
        for name in Compression::NAMES {
            let codec = Compression::from_name(name).unwrap();
            assert_eq!(codec.name(), name);
            assert_eq!(Compression::from_code(codec.code()), codec);
            assert_eq!(Compression::of(codec.attributes() | 1 | 4), Some(codec));
        }
        assert_eq!(Compression::from_name(" LZ4 "), Some(Compression::Lz4));
        assert_eq!(Compression::from_name("gzip"), None);
        assert_eq!(Compression::of(ATTR_CODEC_MASK), None);
    }

    #[test]
    fn both_codecs_round_trip_empty_small_and_large_bodies() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            for body in [Vec::new(), b"x".to_vec(), b"{\"a\": 1}".repeat(10_000)] {
                let mut out = Vec::new();
                let n = compress_into(codec, &body, &mut out, 3);
                let mut back = vec![0; body.len()];
                decompress_into(codec, &out[3..3 + n], &mut back).unwrap();
                assert_eq!(back, body, "{codec:?}");
                // A wrong stated length is an error, either way.
                let mut short = vec![0; body.len() + 1];
                assert!(decompress_into(codec, &out[3..3 + n], &mut short).is_err());
            }
        }
    }
}
