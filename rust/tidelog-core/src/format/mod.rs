//! Bytes on disk. A segment's data file is a sequence of record batches; each batch is
//! self-describing and CRC32C-checked, so recovery can tell a whole batch from a torn one
//! by reading nothing but the batch itself. The layout is documented byte by byte in
//! `docs/FORMAT.md` and in the rustdoc tables of [`batch`] and [`record`].

pub mod batch;
pub mod compression;
pub mod control;
pub mod headers;
pub mod record;

pub use batch::{
    encode_batch, encode_rewritten, encoded_len, extend_to, BatchHeader, BatchMeta, BatchView, RecordIter,
    RecordPosition, ValuesBatch, BATCH_HEADER_LEN, NO_PRODUCER, NO_SEQUENCE,
};
pub use compression::{Compression, ATTR_CODEC_MASK, ATTR_LZ4, ATTR_ZSTD};
pub use control::{Marker, ATTR_CONTROL, ATTR_TRANSACTIONAL};
pub use record::{
    Record, RecordView, ATTR_COMPACT, ATTR_COMPACTED, ATTR_UNIFORM, COMPACT_ENTRY_LEN, RECORD_ENTRY_LEN,
    TOMBSTONE_LEN,
};

/// Version byte written into every batch. Readers reject any other value as corruption.
pub const FORMAT_VERSION: u8 = 1;

/// Reads a little-endian `u32` at `at`; the caller has checked the bounds.
#[inline]
pub fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads a little-endian `i32` at `at`; the caller has checked the bounds.
#[inline]
pub fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads a little-endian `u64` at `at`; the caller has checked the bounds.
#[inline]
pub fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads a little-endian `i64` at `at`; the caller has checked the bounds.
#[inline]
pub fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
