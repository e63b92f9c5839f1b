//! Sparse indexes of a segment: derived data, rebuilt from the segment on recovery.
//!
//! Both indexes get an entry at the same batches: the first batch of the segment and then
//! the first batch starting at least `index_interval_bytes` after the previous entry. A
//! lookup therefore lands at most about one interval before the wanted batch.
//!
//! Offset index entry (`.index`, 8 bytes, little-endian):
//!
//! | bytes | type | field                                        |
//! |-------|------|----------------------------------------------|
//! | 0..4  | u32  | batch base offset − segment base offset      |
//! | 4..8  | u32  | byte position of the batch in the data file  |
//!
//! Time index entry (`.timeindex`, 16 bytes, little-endian):
//!
//! | bytes  | type | field                                                     |
//! |--------|------|-----------------------------------------------------------|
//! | 0..8   | i64  | largest timestamp of all batches *before* this position   |
//! | 8..12  | u32  | batch base offset − segment base offset                   |
//! | 12..16 | u32  | byte position of the batch                                |
//!
//! Storing the maximum *before* the entry makes timestamp lookups exact even when
//! timestamps are not monotonic: every batch before the chosen entry is known to be too old.

use crate::format::{read_i64, read_u32};

/// Size of an offset index entry.
pub const INDEX_ENTRY_BYTES: usize = 8;
/// Size of a time index entry.
pub const TIME_INDEX_ENTRY_BYTES: usize = 16;

/// One index point: a batch and where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Batch base offset relative to the segment base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the data file.
    pub position: u32,
    /// Largest timestamp of all batches before `position` (`i64::MIN` for none).
    pub max_timestamp_before: i64,
}

impl IndexEntry {
    /// Encodes the offset-index form.
    pub fn offset_bytes(&self) -> [u8; INDEX_ENTRY_BYTES] {
        let mut b = [0u8; INDEX_ENTRY_BYTES];
        b[0..4].copy_from_slice(&self.relative_offset.to_le_bytes());
        b[4..8].copy_from_slice(&self.position.to_le_bytes());
        b
    }

    /// Encodes the time-index form.
    pub fn time_bytes(&self) -> [u8; TIME_INDEX_ENTRY_BYTES] {
        let mut b = [0u8; TIME_INDEX_ENTRY_BYTES];
        b[0..8].copy_from_slice(&self.max_timestamp_before.to_le_bytes());
        b[8..12].copy_from_slice(&self.relative_offset.to_le_bytes());
        b[12..16].copy_from_slice(&self.position.to_le_bytes());
        b
    }
}

/// A read-only view of a segment's offset index entries.
#[derive(Clone, Copy, Debug)]
pub struct OffsetIndex<'a> {
    bytes: &'a [u8],
}

impl<'a> OffsetIndex<'a> {
    /// Views whole entries of `bytes` (a trailing partial entry is ignored).
    pub fn new(bytes: &'a [u8]) -> Self {
        let whole = bytes.len() / INDEX_ENTRY_BYTES * INDEX_ENTRY_BYTES;
        OffsetIndex { bytes: &bytes[..whole] }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.bytes.len() / INDEX_ENTRY_BYTES
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Entry `i` as (relative offset, position).
    pub fn get(&self, i: usize) -> (u32, u32) {
        let at = i * INDEX_ENTRY_BYTES;
        (read_u32(self.bytes, at), read_u32(self.bytes, at + 4))
    }

    /// The last entry whose batch base offset is `<= relative_offset`, as (relative offset,
    /// position); (0, 0) when there is none.
    pub fn lookup_entry(&self, relative_offset: u32) -> (u32, u32) {
        let n = self.len();
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid).0 <= relative_offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            (0, 0)
        } else {
            self.get(lo - 1)
        }
    }

    /// Position of the last indexed batch whose base offset is `<= relative_offset`, or 0.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        self.lookup_entry(relative_offset).1
    }
}

/// A read-only view of a segment's time index entries.
#[derive(Clone, Copy, Debug)]
pub struct TimeIndex<'a> {
    bytes: &'a [u8],
}

impl<'a> TimeIndex<'a> {
    /// Views whole entries of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        let whole = bytes.len() / TIME_INDEX_ENTRY_BYTES * TIME_INDEX_ENTRY_BYTES;
        TimeIndex { bytes: &bytes[..whole] }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.bytes.len() / TIME_INDEX_ENTRY_BYTES
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Entry `i`.
    pub fn get(&self, i: usize) -> IndexEntry {
        let at = i * TIME_INDEX_ENTRY_BYTES;
        IndexEntry {
            max_timestamp_before: read_i64(self.bytes, at),
            relative_offset: read_u32(self.bytes, at + 8),
            position: read_u32(self.bytes, at + 12),
        }
    }

    /// The entry from which to scan for the first batch with a timestamp `>= timestamp`:
    /// the last one all of whose predecessors are older than `timestamp` (None: scan from
    /// the start).
    pub fn lookup_entry(&self, timestamp: i64) -> Option<IndexEntry> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid).max_timestamp_before < timestamp {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.get(i))
    }

    /// Position from which to scan for the first batch with a timestamp `>= timestamp`.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        self.lookup_entry(timestamp).map_or(0, |e| e.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[IndexEntry]) -> (Vec<u8>, Vec<u8>) {
        let mut o = Vec::new();
        let mut t = Vec::new();
        for e in entries {
            o.extend_from_slice(&e.offset_bytes());
            t.extend_from_slice(&e.time_bytes());
        }
        (o, t)
    }

    #[test]
    fn lookups_find_the_floor_entry() {
        let entries = [
            IndexEntry { relative_offset: 0, position: 0, max_timestamp_before: i64::MIN },
            IndexEntry { relative_offset: 10, position: 4100, max_timestamp_before: 50 },
            IndexEntry { relative_offset: 25, position: 8300, max_timestamp_before: 40 + 30 },
        ];
        let (o, t) = build(&entries);
        let idx = OffsetIndex::new(&o);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.lookup(0), 0);
        assert_eq!(idx.lookup(9), 0);
        assert_eq!(idx.lookup(10), 4100);
        assert_eq!(idx.lookup(24), 4100);
        assert_eq!(idx.lookup(1000), 8300);
        let time = TimeIndex::new(&t);
        assert_eq!(time.lookup(10), 0);
        assert_eq!(time.lookup(50), 0);
        assert_eq!(time.lookup(51), 4100);
        assert_eq!(time.lookup(71), 8300);
        assert_eq!(OffsetIndex::new(&o[..11]).len(), 1);
        assert_eq!(OffsetIndex::new(&[]).lookup(5), 0);
    }
}
