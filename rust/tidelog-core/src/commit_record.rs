//! The commit record of `__consumer_offsets` (version 2): one group's committed offsets on
//! one incarnation of a topic, written as one keyed record (key `group NUL topic`) so all
//! its partitions are committed together. `tidelog.offsets` reads the records back, and
//! the producer's lag bound (`producer::lag`) reads them too.
//!
//! | bytes   | type   | field                                               |
//! |---------|--------|-----------------------------------------------------|
//! | 0..2    | u16 LE | version (2)                                         |
//! | 2..10   | i64 LE | group generation (−1: none)                         |
//! | 10..18  | u64 LE | topic incarnation                                   |
//! | 18..22  | u32 LE | number of entries                                   |
//! | then, per entry: u32 partition, i64 next offset, u16 metadata length, metadata (UTF-8) |

/// Version written by [`encode`].
pub const VERSION: u16 = 2;
/// Bytes before the entries.
const HEADER_LEN: usize = 22;
/// Bytes of an entry without its metadata.
const ENTRY_LEN: usize = 14;

/// Encodes the commit of `offsets` (partition, next offset) with `metadata` on each.
///
/// # Panics
/// Never for metadata the caller bounded to `u16::MAX` bytes; longer metadata is cut.
pub fn encode(generation: i64, incarnation: u64, offsets: &[(u32, i64)], metadata: &[u8]) -> Vec<u8> {
    let metadata = &metadata[..metadata.len().min(usize::from(u16::MAX))];
    let mut out = Vec::with_capacity(HEADER_LEN + offsets.len() * (ENTRY_LEN + metadata.len()));
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&incarnation.to_le_bytes());
    out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    for &(partition, offset) in offsets {
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u16).to_le_bytes());
        out.extend_from_slice(metadata);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_of_the_table() {
        let record = encode(7, 0x0102_0304_0506_0708, &[(3, 42), (5, 9)], b"m");
        assert_eq!(record.len(), HEADER_LEN + 2 * (ENTRY_LEN + 1));
        assert_eq!(&record[0..2], &2u16.to_le_bytes());
        assert_eq!(&record[2..10], &7i64.to_le_bytes());
        assert_eq!(&record[10..18], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&record[18..22], &2u32.to_le_bytes());
        assert_eq!(&record[22..26], &3u32.to_le_bytes());
        assert_eq!(&record[26..34], &42i64.to_le_bytes());
        assert_eq!(&record[34..36], &1u16.to_le_bytes());
        assert_eq!(record[36], b'm');
        assert_eq!(&record[37..41], &5u32.to_le_bytes());
    }
}
