//! One record's place in a batch. Records are stored column-wise: a fixed-size entry per
//! record, then all values back to back, then all keys, then all encoded headers. Keeping
//! the values contiguous is what lets a reader hand out every value of a batch as one
//! zero-copy buffer plus boundaries.
//!
//! Record entry (20 bytes, little-endian):
//!
//! | bytes  | type | field                                                    |
//! |--------|------|----------------------------------------------------------|
//! | 0..4   | u32  | offset delta (record offset − batch base offset)         |
//! | 4..8   | i32  | timestamp delta (record timestamp − first timestamp), ms |
//! | 8..12  | i32  | key length, −1 for no key                                |
//! | 12..16 | u32  | value length                                             |
//! | 16..20 | u32  | encoded headers length, 0 for no headers                 |

use super::{read_i32, read_u32};

/// Size of one record entry.
pub const RECORD_ENTRY_LEN: usize = 20;

/// A record to be written: borrowed parts, encoded by [`super::encode_batch`].
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Headers already encoded by [`super::headers::encode`]; empty for none.
    pub headers: &'a [u8],
}

/// A record read from a validated batch; all slices borrow the batch bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Absolute offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: &'a [u8],
    /// Encoded headers; decode with [`super::headers::decode`].
    pub headers: &'a [u8],
}

/// The decoded fixed-size entry of one record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordEntry {
    pub offset_delta: u32,
    pub timestamp_delta: i32,
    pub key_len: i32,
    pub value_len: u32,
    pub headers_len: u32,
}

impl RecordEntry {
    #[inline]
    pub(crate) fn read(entries: &[u8], index: usize) -> Self {
        let at = index * RECORD_ENTRY_LEN;
        RecordEntry {
            offset_delta: read_u32(entries, at),
            timestamp_delta: read_i32(entries, at + 4),
            key_len: read_i32(entries, at + 8),
            value_len: read_u32(entries, at + 12),
            headers_len: read_u32(entries, at + 16),
        }
    }

    #[inline]
    pub(crate) fn write(self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.offset_delta.to_le_bytes());
        out[4..8].copy_from_slice(&self.timestamp_delta.to_le_bytes());
        out[8..12].copy_from_slice(&self.key_len.to_le_bytes());
        out[12..16].copy_from_slice(&self.value_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.headers_len.to_le_bytes());
    }

    /// Length of the key in the key blob (0 for a missing key).
    #[inline]
    pub(crate) fn key_bytes(self) -> usize {
        self.key_len.max(0) as usize
    }
}
