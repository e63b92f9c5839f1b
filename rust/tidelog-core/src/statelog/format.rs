//! The bytes of a state log's two files, and the scan that tells a torn tail from damage.
//!
//! Snapshot file (`<name>.snapshot`, replaced atomically), little-endian:
//!
//! | bytes  | type    | field                                              |
//! |--------|---------|----------------------------------------------------|
//! | 0..8   | [u8; 8] | magic `TLSSNAP2`                                   |
//! | 8..16  | u64     | generation                                         |
//! | 16..24 | u64     | body length                                        |
//! | 24..28 | u32     | reserved, 0                                        |
//! | 28..32 | u32     | CRC32C (Castagnoli) of bytes 0..28, then the body  |
//! | 32..   | bytes   | body (opaque to the core: the owner's whole state) |
//!
//! Journal file (`<name>.journal`): a header, then records appended one after the other.
//!
//! | bytes  | type    | field                            |
//! |--------|---------|----------------------------------|
//! | 0..8   | [u8; 8] | magic `TLSJRNL2`                 |
//! | 8..16  | u64     | generation                       |
//! | 16..20 | u32     | reserved, 0                      |
//! | 20..24 | u32     | CRC32C of bytes 0..20            |
//!
//! Record frame:
//!
//! | bytes  | type    | field                                                   |
//! |--------|---------|---------------------------------------------------------|
//! | 0..4   | [u8; 4] | magic `TLRC`                                            |
//! | 4..8   | u32     | payload length                                          |
//! | 8..16  | u64     | record number: 0 for a journal's first record, then +1  |
//! | 16..20 | u32     | CRC32C of bytes 0..16, then the payload                 |
//! | 20..   | bytes   | payload (opaque to the core: one change of the state)   |
//!
//! Every CRC covers its header together with a nonzero magic, so bytes that are all zero (a
//! zeroed block, a hole) never validate. The record number makes a record that is intact but
//! out of place (repeated, or from elsewhere) damage, not a change to apply.
//!
//! The first format (written by work queues before this module existed) is read once, to be
//! converted: snapshot `TLWQSNAP`, u64 generation, u32 CRC-32 (IEEE, zlib's) of the body, body;
//! journal `TLWQJRNL`, u64 generation, then frames of u32 length, u32 CRC-32 of the payload,
//! payload. Its frames have no magic; a zero length never validates there (no record was
//! ever empty).

use std::ops::Range;

use crate::format::{read_u32, read_u64};

/// Bytes of the snapshot header.
pub const SNAPSHOT_HEADER_LEN: usize = 32;
/// Bytes of the journal header.
pub const JOURNAL_HEADER_LEN: usize = 24;
/// Bytes of a record's frame header.
pub const FRAME_HEADER_LEN: usize = 20;
const SNAPSHOT_MAGIC: &[u8; 8] = b"TLSSNAP2";
const JOURNAL_MAGIC: &[u8; 8] = b"TLSJRNL2";
const FRAME_MAGIC: &[u8; 4] = b"TLRC";
const V1_SNAPSHOT_MAGIC: &[u8; 8] = b"TLWQSNAP";
const V1_JOURNAL_MAGIC: &[u8; 8] = b"TLWQJRNL";
const V1_SNAPSHOT_HEADER_LEN: usize = 20;
const V1_JOURNAL_HEADER_LEN: usize = 16;
const V1_FRAME_HEADER_LEN: usize = 8;

/// A snapshot file: its whole contents.
pub fn encode_snapshot(generation: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + body.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), body);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The header of an empty journal.
pub fn encode_journal_header(generation: u64) -> [u8; JOURNAL_HEADER_LEN] {
    let mut out = [0u8; JOURNAL_HEADER_LEN];
    out[..8].copy_from_slice(JOURNAL_MAGIC);
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&out[..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Largest payload a record may carry.
pub const MAX_PAYLOAD: usize = u32::MAX as usize;

/// One record's frame, ready to append.
///
/// # Panics
/// If the payload is longer than [`MAX_PAYLOAD`] (callers check first).
pub fn encode_frame(number: u64, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payload checked against MAX_PAYLOAD");
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(FRAME_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&number.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A decoded snapshot file.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot<'a> {
    /// Its generation.
    pub generation: u64,
    /// The body.
    pub body: &'a [u8],
    /// Written in the first format.
    pub legacy: bool,
}

/// Decodes a snapshot file (either format).
///
/// # Errors
/// What is wrong with it, for an error message.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot<'_>, String> {
    if bytes.len() >= 8 && &bytes[..8] == V1_SNAPSHOT_MAGIC {
        if bytes.len() < V1_SNAPSHOT_HEADER_LEN {
            return Err(format!("{} bytes is shorter than a snapshot header", bytes.len()));
        }
        let body = &bytes[V1_SNAPSHOT_HEADER_LEN..];
        if crc32_ieee(body) != read_u32(bytes, 16) {
            return Err("CRC mismatch (first format)".into());
        }
        return Ok(Snapshot { generation: read_u64(bytes, 8), body, legacy: true });
    }
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(format!("{} bytes is shorter than a snapshot header", bytes.len()));
    }
    if &bytes[..8] != SNAPSHOT_MAGIC {
        return Err("bad magic (not a snapshot, or damaged)".into());
    }
    let body = &bytes[SNAPSHOT_HEADER_LEN..];
    if read_u64(bytes, 16) != body.len() as u64 {
        return Err(format!(
            "the header says {} body bytes, the file holds {}",
            read_u64(bytes, 16),
            body.len()
        ));
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..28]), body);
    if crc != read_u32(bytes, 28) {
        return Err("CRC mismatch".into());
    }
    Ok(Snapshot { generation: read_u64(bytes, 8), body, legacy: false })
}

/// What a journal's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalHeader {
    /// This format, of this generation.
    Current(u64),
    /// The first format, of this generation.
    Legacy(u64),
}

impl JournalHeader {
    /// The generation.
    pub fn generation(self) -> u64 {
        match self {
            JournalHeader::Current(g) | JournalHeader::Legacy(g) => g,
        }
    }

    /// Where the records start: the length of the header.
    pub fn records_start(self) -> usize {
        match self {
            JournalHeader::Current(_) => JOURNAL_HEADER_LEN,
            JournalHeader::Legacy(_) => V1_JOURNAL_HEADER_LEN,
        }
    }
}

/// Decodes a journal's header.
///
/// # Errors
/// What is wrong with it, for an error message.
pub fn decode_journal_header(bytes: &[u8]) -> Result<JournalHeader, String> {
    if bytes.len() >= V1_JOURNAL_HEADER_LEN && &bytes[..8] == V1_JOURNAL_MAGIC {
        return Ok(JournalHeader::Legacy(read_u64(bytes, 8)));
    }
    if bytes.len() < JOURNAL_HEADER_LEN {
        return Err(format!("{} bytes is shorter than a journal header", bytes.len()));
    }
    if &bytes[..8] != JOURNAL_MAGIC {
        return Err("bad magic in the journal header (not a journal, or damaged)".into());
    }
    if crc32c::crc32c(&bytes[..20]) != read_u32(bytes, 20) {
        return Err("CRC mismatch in the journal header".into());
    }
    Ok(JournalHeader::Current(read_u64(bytes, 8)))
}

/// Why a journal's records end before the end of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// An incomplete or damaged record with nothing valid after it: a torn tail.
    Torn {
        /// What was wrong with the first bad record.
        reason: String,
    },
    /// A damaged record followed by a valid one: never to be skipped.
    Damaged {
        /// What was wrong.
        reason: String,
        /// Where (relative to the scanned bytes) a valid record follows.
        next_valid: usize,
    },
}

/// The records found in the bytes after a journal header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Each record's payload, as a range of the scanned bytes.
    pub records: Vec<Range<usize>>,
    /// End of the last whole record (relative to the scanned bytes).
    pub end: usize,
    /// Why the scan stopped before the end of the bytes, if it did.
    pub stop: Option<Stop>,
}

/// A frame at `at`: its payload range and record number, or why it is not valid.
fn frame_at(bytes: &[u8], at: usize) -> Result<(Range<usize>, u64), String> {
    let rest = bytes.len() - at;
    if rest < FRAME_HEADER_LEN {
        return Err(format!("incomplete record header ({rest} bytes)"));
    }
    let head = &bytes[at..at + FRAME_HEADER_LEN];
    if &head[..4] != FRAME_MAGIC {
        return Err("bad record magic".into());
    }
    let len = read_u32(head, 4) as usize;
    if len > rest - FRAME_HEADER_LEN {
        return Err(format!(
            "record of {len} bytes runs past the end of the file ({} bytes left)",
            rest - FRAME_HEADER_LEN
        ));
    }
    let payload = at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[..16]), &bytes[payload.clone()]);
    if crc != read_u32(head, 16) {
        return Err("CRC mismatch".into());
    }
    Ok((payload, read_u64(head, 8)))
}

/// A first-format frame at `at`: its payload range, or why it is not valid.
fn legacy_frame_at(bytes: &[u8], at: usize) -> Result<Range<usize>, String> {
    let rest = bytes.len() - at;
    if rest < V1_FRAME_HEADER_LEN {
        return Err(format!("incomplete record header ({rest} bytes)"));
    }
    let len = read_u32(bytes, at) as usize;
    if len == 0 {
        return Err("record of length 0".into());
    }
    if len > rest - V1_FRAME_HEADER_LEN {
        return Err(format!("record of {len} bytes runs past the end of the file"));
    }
    let payload = at + V1_FRAME_HEADER_LEN..at + V1_FRAME_HEADER_LEN + len;
    if crc32_ieee(&bytes[payload.clone()]) != read_u32(bytes, at + 4) {
        return Err("CRC mismatch".into());
    }
    Ok(payload)
}

/// Reads the records in `bytes` (what follows a journal header, or the part of it after the
/// records already read), expecting the first to be number `first`.
pub fn scan(bytes: &[u8], first: u64) -> Scan {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let expected = first + records.len() as u64;
        let reason = match frame_at(bytes, at) {
            Ok((payload, number)) if number == expected => {
                at = payload.end;
                records.push(payload);
                continue;
            }
            // Intact but out of place: never a torn write.
            Ok((_, number)) => {
                let stop = Stop::Damaged {
                    reason: format!("record number {number} where {expected} belongs"),
                    next_valid: at,
                };
                return Scan { records, end: at, stop: Some(stop) };
            }
            Err(reason) => reason,
        };
        let next = (at + 1..bytes.len().saturating_sub(FRAME_HEADER_LEN - 1))
            .find(|&q| &bytes[q..q + 4] == FRAME_MAGIC && frame_at(bytes, q).is_ok());
        let stop = match next {
            Some(next_valid) => Stop::Damaged { reason, next_valid },
            None => Stop::Torn { reason },
        };
        return Scan { records, end: at, stop: Some(stop) };
    }
    Scan { records, end: at, stop: None }
}

/// As [`scan`], for the records of a first-format journal.
pub fn scan_legacy(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match legacy_frame_at(bytes, at) {
            Ok(payload) => {
                at = payload.end;
                records.push(payload);
            }
            Err(reason) => {
                let next = (at + 1..bytes.len()).find(|&q| legacy_frame_at(bytes, q).is_ok());
                let stop = match next {
                    Some(next_valid) => Stop::Damaged { reason, next_valid },
                    None => Stop::Torn { reason },
                };
                return Scan { records, end: at, stop: Some(stop) };
            }
        }
    }
    Scan { records, end: at, stop: None }
}

/// CRC-32 (IEEE 802.3, as zlib computes it): only to read the first format.
fn crc32_ieee(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn journal(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = encode_journal_header(7).to_vec();
        for (i, r) in records.iter().enumerate() {
            out.extend(encode_frame(i as u64, r));
        }
        out
    }

    fn payloads<'a>(bytes: &'a [u8], scan: &Scan) -> Vec<&'a [u8]> {
        scan.records.iter().map(|r| &bytes[r.clone()]).collect()
    }

    #[test]
    fn crc32_ieee_matches_zlib() {
        assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32_ieee(b""), 0);
    }

    #[test]
    fn round_trip() {
        let records = vec![b"one".to_vec(), Vec::new(), b"three".to_vec()];
        let bytes = journal(&records);
        assert_eq!(decode_journal_header(&bytes), Ok(JournalHeader::Current(7)));
        let s = scan(&bytes[JOURNAL_HEADER_LEN..], 0);
        assert_eq!(s.stop, None);
        assert_eq!(payloads(&bytes[JOURNAL_HEADER_LEN..], &s), [&b"one"[..], b"", b"three"]);
        let snap = encode_snapshot(3, b"{}");
        assert_eq!(decode_snapshot(&snap), Ok(Snapshot { generation: 3, body: b"{}", legacy: false }));
    }

    #[test]
    fn zeros_never_validate() {
        assert!(decode_journal_header(&[0; 64]).is_err());
        assert!(decode_snapshot(&[0; 64]).is_err());
        let s = scan(&[0; 64], 0);
        assert!(s.records.is_empty());
        assert!(matches!(s.stop, Some(Stop::Torn { .. })));
        assert!(matches!(scan_legacy(&[0; 64]).stop, Some(Stop::Torn { .. })));
    }

    #[test]
    fn a_zeroed_frame_header_followed_by_records_is_damage() {
        let mut bytes = journal(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        bytes[JOURNAL_HEADER_LEN..JOURNAL_HEADER_LEN + FRAME_HEADER_LEN].fill(0);
        let s = scan(&bytes[JOURNAL_HEADER_LEN..], 0);
        assert_eq!(s.end, 0);
        assert!(matches!(s.stop, Some(Stop::Damaged { next_valid: 21, .. })), "{s:?}");
    }

    #[test]
    fn a_repeated_record_is_damage() {
        let mut bytes = journal(&[b"a".to_vec()]);
        bytes.extend(encode_frame(0, b"a"));
        let s = scan(&bytes[JOURNAL_HEADER_LEN..], 0);
        assert_eq!(s.records.len(), 1);
        assert!(matches!(s.stop, Some(Stop::Damaged { .. })));
    }

    #[test]
    fn the_first_format_is_read() {
        let mut bytes = V1_JOURNAL_MAGIC.to_vec();
        bytes.extend(5u64.to_le_bytes());
        for r in [&b"xy"[..], b"z"] {
            bytes.extend((r.len() as u32).to_le_bytes());
            bytes.extend(crc32_ieee(r).to_le_bytes());
            bytes.extend(r);
        }
        bytes.extend([0; 12]); // a zeroed tail
        assert_eq!(decode_journal_header(&bytes), Ok(JournalHeader::Legacy(5)));
        let s = scan_legacy(&bytes[16..]);
        assert_eq!(payloads(&bytes[16..], &s), [&b"xy"[..], b"z"]);
        assert!(matches!(s.stop, Some(Stop::Torn { .. })));
    }

    proptest! {
        /// Any corruption is an error (or a torn tail that keeps only intact records, when
        /// it hits the last record), never a panic and never a changed record.
        #[test]
        fn any_corruption_is_an_error_never_a_panic(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            at in any::<proptest::sample::Index>(),
            mask in 1u8..=255,
            zero_run in 0usize..24,
        ) {
            let mut bytes = journal(&records);
            let last_start = bytes.len() - FRAME_HEADER_LEN - records[records.len() - 1].len();
            let i = at.index(bytes.len());
            let damage_end = if zero_run == 0 {
                bytes[i] ^= mask;
                i + 1
            } else {
                let end = (i + zero_run).min(bytes.len());
                if bytes[i..end].iter().all(|&b| b == 0) {
                    return Ok(()); // no change
                }
                bytes[i..end].fill(0);
                end
            };
            if i < JOURNAL_HEADER_LEN {
                prop_assert!(decode_journal_header(&bytes).is_err());
                return Ok(());
            }
            let body = &bytes[JOURNAL_HEADER_LEN..];
            let s = scan(body, 0);
            let got = payloads(body, &s);
            prop_assert!(got.len() < records.len(), "the damaged record was accepted");
            for (g, r) in got.iter().zip(&records) {
                prop_assert_eq!(*g, &r[..]);
            }
            match s.stop {
                Some(Stop::Torn { .. }) => {
                    // Torn only when nothing intact follows: the damage reached the last record.
                    prop_assert!(damage_end > last_start);
                }
                Some(Stop::Damaged { .. }) => {}
                None => prop_assert!(false, "damage went unnoticed"),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_journal_header(&bytes);
            let _ = decode_snapshot(&bytes);
            let _ = scan(&bytes, 0);
            let _ = scan_legacy(&bytes);
        }

        #[test]
        fn any_corrupted_snapshot_byte_is_an_error(
            body in proptest::collection::vec(any::<u8>(), 0..100),
            at in any::<proptest::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let mut bytes = encode_snapshot(9, &body);
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
            prop_assert!(decode_snapshot(&bytes).is_err());
        }
    }
}
