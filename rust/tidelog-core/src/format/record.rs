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
//! | 12..16 | u32  | value length, [`TOMBSTONE_LEN`] (u32::MAX) for no value  |
//! | 16..20 | u32  | encoded headers length, 0 for no headers                 |
//!
//! Compact record entry (8 bytes), in batches with the [`ATTR_COMPACT`] attribute: every
//! record has no key and no headers, and record `i` has offset delta `i`.
//!
//! | bytes | type | field                                                     |
//! |-------|------|-----------------------------------------------------------|
//! | 0..4  | i32  | timestamp delta (record timestamp − first timestamp), ms  |
//! | 4..8  | u32  | value length                                              |
//!
//! A batch with the [`ATTR_UNIFORM`] attribute has no entries at all: every record has no
//! key, no headers, the batch's first timestamp, offset delta `i`, and a value of
//! `values length / record count` bytes (a buffer of fixed-size records, as a NumPy record
//! array gives them).
//!
//! Most messages are plain values, for which the full entry is 20 bytes on every 100-byte
//! value; the compact one is 8, the uniform batch's none.

use super::{read_i32, read_u32};

/// Value length stored in a full entry for a record without a value (a tombstone, which
/// compaction uses to delete its key): the value takes no bytes of the value blob.
/// Compact and uniform entries never hold one.
pub const TOMBSTONE_LEN: u32 = u32::MAX;
/// Attribute bit: compaction rewrote this batch (records removed or its base offset moved
/// back over removed batches), so its header's sequence range no longer describes what its
/// producer wrote. Bits 4 and 5 belong to compression.
pub const ATTR_COMPACTED: u8 = 64;

/// Size of one record entry.
pub const RECORD_ENTRY_LEN: usize = 20;
/// Size of one compact record entry.
pub const COMPACT_ENTRY_LEN: usize = 8;
/// Attribute bit: the batch's record entries are compact (values only).
pub const ATTR_COMPACT: u8 = 4;
/// Attribute bit: the batch has no entries; its records are values of one size and one
/// timestamp.
pub const ATTR_UNIFORM: u8 = 8;

/// How a batch's record entries are laid out, from its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryLayout {
    /// 20-byte entries.
    Full,
    /// 8-byte entries: timestamp delta, value length.
    Compact,
    /// No entries; every value is this long.
    Uniform(u32),
}

impl EntryLayout {
    /// The layout of a batch with these attributes, record count and value blob length, or
    /// `None` if a uniform batch's values cannot be split evenly (a damaged batch).
    #[inline]
    pub(crate) fn of(attributes: u8, count: u32, values_len: u32) -> Option<Self> {
        if attributes & ATTR_UNIFORM != 0 {
            (count > 0 && values_len % count == 0).then(|| EntryLayout::Uniform(values_len / count))
        } else if attributes & ATTR_COMPACT != 0 {
            Some(EntryLayout::Compact)
        } else {
            Some(EntryLayout::Full)
        }
    }

    /// The attribute bits that say this layout.
    pub(crate) fn attributes(self) -> u8 {
        match self {
            EntryLayout::Full => 0,
            EntryLayout::Compact => ATTR_COMPACT,
            EntryLayout::Uniform(_) => ATTR_UNIFORM,
        }
    }

    /// Size of one entry.
    #[inline]
    pub(crate) fn entry_len(self) -> usize {
        match self {
            EntryLayout::Full => RECORD_ENTRY_LEN,
            EntryLayout::Compact => COMPACT_ENTRY_LEN,
            EntryLayout::Uniform(_) => 0,
        }
    }
}

/// A record to be written: borrowed parts, encoded by [`super::encode_batch`].
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<&'a [u8]>,
    /// The value (empty for a tombstone).
    pub value: &'a [u8],
    /// Headers already encoded by [`super::headers::encode`]; empty for none.
    pub headers: &'a [u8],
    /// No value at all (a tombstone: `value` is ignored): compaction deletes the key.
    pub tombstone: bool,
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
    /// The value (empty for a tombstone).
    pub value: &'a [u8],
    /// Encoded headers; decode with [`super::headers::decode`].
    pub headers: &'a [u8],
    /// The record has no value (a tombstone).
    pub tombstone: bool,
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
    /// Entry `index` of `entries`, laid out as `layout` says.
    #[inline]
    pub(crate) fn read(entries: &[u8], index: usize, layout: EntryLayout) -> Self {
        match layout {
            EntryLayout::Uniform(value_len) => RecordEntry {
                offset_delta: index as u32,
                timestamp_delta: 0,
                key_len: -1,
                value_len,
                headers_len: 0,
            },
            EntryLayout::Compact => {
                let at = index * COMPACT_ENTRY_LEN;
                RecordEntry {
                    offset_delta: index as u32,
                    timestamp_delta: read_i32(entries, at),
                    key_len: -1,
                    value_len: read_u32(entries, at + 4),
                    headers_len: 0,
                }
            }
            EntryLayout::Full => {
                let at = index * RECORD_ENTRY_LEN;
                RecordEntry {
                    offset_delta: read_u32(entries, at),
                    timestamp_delta: read_i32(entries, at + 4),
                    key_len: read_i32(entries, at + 8),
                    value_len: read_u32(entries, at + 12),
                    headers_len: read_u32(entries, at + 16),
                }
            }
        }
    }

    /// Writes the entry into `out`, which is `layout.entry_len()` bytes long.
    #[inline]
    pub(crate) fn write(self, out: &mut [u8], layout: EntryLayout) {
        match layout {
            EntryLayout::Uniform(_) => {}
            EntryLayout::Compact => {
                out[0..4].copy_from_slice(&self.timestamp_delta.to_le_bytes());
                out[4..8].copy_from_slice(&self.value_len.to_le_bytes());
            }
            EntryLayout::Full => {
                out[0..4].copy_from_slice(&self.offset_delta.to_le_bytes());
                out[4..8].copy_from_slice(&self.timestamp_delta.to_le_bytes());
                out[8..12].copy_from_slice(&self.key_len.to_le_bytes());
                out[12..16].copy_from_slice(&self.value_len.to_le_bytes());
                out[16..20].copy_from_slice(&self.headers_len.to_le_bytes());
            }
        }
    }

    /// True for a record without a value.
    #[inline]
    pub(crate) fn is_tombstone(self) -> bool {
        self.value_len == TOMBSTONE_LEN
    }

    /// Length of the value in the value blob (0 for a tombstone).
    #[inline]
    pub(crate) fn value_bytes(self) -> usize {
        if self.is_tombstone() {
            0
        } else {
            self.value_len as usize
        }
    }

    /// Length of the key in the key blob (0 for a missing key).
    #[inline]
    pub(crate) fn key_bytes(self) -> usize {
        self.key_len.max(0) as usize
    }
}
