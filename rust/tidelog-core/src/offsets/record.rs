//! The records of `__consumer_offsets`: every version written since the topic existed,
//! encoded and decoded here only.
//!
//! **Version 3** (written by every commit): one record per committed partition, keyed by
//! (group, topic, incarnation, partition) as Kafka keys its commits, so a compacted topic
//! keeps the newest commit of every partition. All partitions of one commit are appended
//! as one batch (one CRC, all or nothing).
//!
//! Key (UTF-8): `group NUL topic NUL <incarnation> NUL <partition>`, the incarnation as 16
//! lower-case hex digits, the partition in decimal. The incarnation is in the key so a topic
//! created again under the same name never shares a key with the deleted one: compaction or
//! a tombstone of the old incarnation cannot remove the new one's commits.
//!
//! | bytes   | type   | field                                 |
//! |---------|--------|---------------------------------------|
//! | 0..2    | u16 LE | version (3)                           |
//! | 2..10   | i64 LE | group generation (−1: none)           |
//! | 10..18  | i64 LE | next offset to read (≥ 0)             |
//! | 18..20  | u16 LE | metadata length `m`                   |
//! | 20..20+m| UTF-8  | metadata                              |
//!
//! A version 3 key with no value (a tombstone) forgets that partition's commit of that
//! incarnation.
//!
//! **Version 2** (read only; its reset record is still written by topic deletion): one
//! record per commit, key `group NUL topic`, holding every partition of the commit.
//!
//! | bytes   | type   | field                                               |
//! |---------|--------|-----------------------------------------------------|
//! | 0..2    | u16 LE | version (2)                                         |
//! | 2..10   | i64 LE | group generation (−1: none; −2 with no entries: reset) |
//! | 10..18  | u64 LE | topic incarnation                                   |
//! | 18..22  | u32 LE | number of entries                                   |
//! | then, per entry: u32 partition, i64 next offset, u16 metadata length, metadata |
//!
//! **Version 1** (read only): as version 2 without the incarnation (bytes 10..14 are the
//! count); its commits apply to whichever topic has the name.
//!
//! A **reset** record (generation −2, no entries) forgets the (group, topic)'s commits of
//! the incarnation it names and those of version 1 (which could be that incarnation's); a
//! version 1 reset forgets them all.
//!
//! A **conversion tombstone** (key `group NUL topic`, no value) says the (group, topic)'s
//! version 1 and 2 records were converted: the version 3 records of its live commits come
//! before it (see [`super::table`]), so compaction keyed by record key may drop every record
//! under the old key (and, after `delete_retention_ms`, the tombstone itself). It forgets
//! the (group, topic)'s version 1 commits (which name no incarnation): the conversion wrote
//! those it could again, naming their topic's incarnation.

use std::fmt::Write as _;

/// Version of the records [`encode_value`] writes.
pub const VERSION: u16 = 3;
/// Generation of a version 1 or 2 record that forgets commits (a reset).
pub const RESET_GENERATION: i64 = -2;
/// Bytes of a version 3 value without its metadata.
pub const VALUE_LEN: usize = 20;
/// Bytes of a version 2 header.
const V2_HEADER_LEN: usize = 22;
/// Bytes of a version 1 header.
const V1_HEADER_LEN: usize = 14;
/// Bytes of a version 1 or 2 entry without its metadata.
const V2_ENTRY_LEN: usize = 14;

/// The key of a version 3 record without its partition: `group NUL topic NUL
/// <incarnation> NUL`; [`push_partition`] completes it.
pub fn key_prefix(group: &str, topic: &str, incarnation: u64) -> Vec<u8> {
    let mut key = String::with_capacity(group.len() + topic.len() + 30);
    key.push_str(group);
    key.push('\0');
    key.push_str(topic);
    // Infallible: writing to a String.
    let _ = write!(key, "\0{incarnation:016x}\0");
    key.into_bytes()
}

/// Appends `partition` in decimal to a key made by [`key_prefix`].
pub fn push_partition(key: &mut Vec<u8>, partition: u32) {
    key.extend_from_slice(partition.to_string().as_bytes());
}

/// The key of a version 3 record.
pub fn key(group: &str, topic: &str, incarnation: u64, partition: u32) -> Vec<u8> {
    let mut key = key_prefix(group, topic, incarnation);
    push_partition(&mut key, partition);
    key
}

/// The value of a version 3 record: the commit of `offset` (the next offset to read) with
/// `metadata`, appended to `out`.
///
/// # Panics
/// Never for metadata the caller bounded to `u16::MAX` bytes; longer metadata is cut (at a
/// byte, so the caller must bound it to keep it UTF-8).
pub fn encode_value(out: &mut Vec<u8>, generation: i64, offset: u64, metadata: &[u8]) {
    let metadata = &metadata[..metadata.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    // Offsets are below 2^63: the caller checked them against a partition's end.
    out.extend_from_slice(&(offset as i64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u16).to_le_bytes());
    out.extend_from_slice(metadata);
}

/// The value of a version 3 record without metadata (the common commit), on the stack.
pub fn value_without_metadata(generation: i64, offset: u64) -> [u8; VALUE_LEN] {
    let mut out = [0u8; VALUE_LEN];
    out[0..2].copy_from_slice(&VERSION.to_le_bytes());
    out[2..10].copy_from_slice(&generation.to_le_bytes());
    out[10..18].copy_from_slice(&(offset as i64).to_le_bytes());
    // Bytes 18..20, the metadata length, stay zero.
    out
}

/// The key of a version 1 or 2 record, and of the reset record: `group NUL topic`.
pub fn reset_key(group: &str, topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(group.len() + topic.len() + 1);
    key.extend_from_slice(group.as_bytes());
    key.push(0);
    key.extend_from_slice(topic.as_bytes());
    key
}

/// The value of the version 2 reset record that forgets a (group, topic)'s commits of
/// `incarnation` (written when the topic is deleted).
pub fn encode_reset(incarnation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_HEADER_LEN);
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&RESET_GENERATION.to_le_bytes());
    out.extend_from_slice(&incarnation.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// One committed partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The partition of the committed topic.
    pub partition: u32,
    /// The next offset to read.
    pub offset: u64,
    /// The commit's metadata.
    pub metadata: &'a str,
}

/// The committed partitions of a record, already checked by [`decode`].
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    /// A version 3 record's one entry, not yet handed out.
    one: Option<Entry<'a>>,
    /// Version 1 and 2: the entries not yet handed out, and how many.
    rest: &'a [u8],
    left: u32,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if let Some(one) = self.one.take() {
            return Some(one);
        }
        if self.left == 0 {
            return None;
        }
        // `decode` walked these entries already: none fails here.
        let (entry, rest) = packed_entry(self.rest).ok()?;
        self.rest = rest;
        self.left -= 1;
        Some(entry)
    }
}

/// What one record of `__consumer_offsets` says.
#[derive(Clone, Debug)]
pub enum Decoded<'a> {
    /// Commits of a (group, topic).
    Commit {
        /// The consumer group.
        group: &'a str,
        /// The committed topic's name.
        topic: &'a str,
        /// The topic incarnation the commits apply to; `None` (version 1): any.
        incarnation: Option<u64>,
        /// The group generation that committed.
        generation: i64,
        /// The committed partitions.
        entries: Entries<'a>,
    },
    /// A reset: forgets the (group, topic)'s commits of `incarnation` and those naming
    /// none; `None` (a version 1 reset): all of them.
    Reset {
        /// The consumer group.
        group: &'a str,
        /// The topic's name.
        topic: &'a str,
        /// The incarnation whose commits are forgotten.
        incarnation: Option<u64>,
    },
    /// A conversion tombstone (a tombstone of a version 1 or 2 key): the (group, topic)'s
    /// records are converted; forgets its version 1 commits.
    Converted {
        /// The consumer group.
        group: &'a str,
        /// The topic's name.
        topic: &'a str,
    },
    /// A version 3 tombstone: forgets one partition's commit of one incarnation.
    Tombstone {
        /// The consumer group.
        group: &'a str,
        /// The topic's name.
        topic: &'a str,
        /// The incarnation whose commit is forgotten.
        incarnation: u64,
        /// The partition.
        partition: u32,
    },
}

impl<'a> Decoded<'a> {
    /// The (group, topic) the record is about.
    pub fn names(&self) -> (&'a str, &'a str) {
        match *self {
            Decoded::Commit { group, topic, .. }
            | Decoded::Reset { group, topic, .. }
            | Decoded::Converted { group, topic }
            | Decoded::Tombstone { group, topic, .. } => (group, topic),
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("offset commit record: {what} is not UTF-8"))
}

fn offset(raw: i64) -> Result<u64, String> {
    u64::try_from(raw).map_err(|_| format!("offset commit record: negative next offset {raw}"))
}

/// One version 1 or 2 entry at the start of `bytes`, and what follows it.
fn packed_entry(bytes: &[u8]) -> Result<(Entry<'_>, &[u8]), String> {
    let truncated = || "offset commit record: truncated entry".to_owned();
    let partition = u32_at(bytes, 0).ok_or_else(truncated)?;
    let next = offset(i64_at(bytes, 4).ok_or_else(truncated)?)?;
    let meta_len = usize::from(u16_at(bytes, 12).ok_or_else(truncated)?);
    let metadata = bytes.get(V2_ENTRY_LEN..V2_ENTRY_LEN + meta_len).ok_or_else(truncated)?;
    let entry = Entry { partition, offset: next, metadata: utf8(metadata, "metadata")? };
    Ok((entry, &bytes[V2_ENTRY_LEN + meta_len..]))
}

/// `group NUL topic` of a version 1 or 2 key. Topic names hold no NUL, so the last one
/// separates them.
fn split_v2_key(key: &[u8]) -> Result<(&str, &str), String> {
    let nul = key.iter().rposition(|&b| b == 0).ok_or("offset commit record: key without NUL")?;
    Ok((utf8(&key[..nul], "group")?, utf8(&key[nul + 1..], "topic")?))
}

/// `group NUL topic NUL incarnation NUL partition` of a version 3 key. Parsed from the end
/// by hand: a catch-up decodes every record's key, and this is most of its cost.
fn split_v3_key(key: &[u8]) -> Result<(&str, &str, u64, u32), String> {
    let bad = || format!("offset commit record: malformed version 3 key {:?}", String::from_utf8_lossy(key));
    let last = key.iter().rposition(|&b| b == 0).ok_or_else(bad)?;
    let digits = &key[last + 1..];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let partition = digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    let partition = u32::try_from(partition).map_err(|_| bad())?;
    // 16 hex digits between two NULs before the partition.
    let hex_at = last.checked_sub(16).filter(|&at| at > 0 && key[at - 1] == 0).ok_or_else(bad)?;
    let mut incarnation = 0u64;
    for &d in &key[hex_at..last] {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(bad()),
        };
        incarnation = incarnation << 4 | u64::from(nibble);
    }
    let names = &key[..hex_at - 1];
    let nul = names.iter().rposition(|&b| b == 0).ok_or_else(bad)?;
    Ok((utf8(&names[..nul], "group")?, utf8(&names[nul + 1..], "topic")?, incarnation, partition))
}

/// The partition, group generation, next offset and metadata of a version 3 commit whose
/// key starts with a prefix of `prefix_len` bytes already decoded (`group NUL topic NUL
/// <incarnation> NUL`, see [`key_prefix`]): a catch-up's fast path for the records of one
/// (group, topic, incarnation). `None` for anything else, which the caller gives to
/// [`decode`] (the same records decode the same either way).
pub fn decode_v3_after_prefix<'a>(
    key: &[u8],
    prefix_len: usize,
    value: &'a [u8],
) -> Option<(u32, i64, u64, &'a str)> {
    let digits = key.get(prefix_len..)?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let partition = u32::try_from(digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))).ok()?;
    if u16_at(value, 0)? != VERSION {
        return None;
    }
    let generation = i64_at(value, 2)?;
    let next = u64::try_from(i64_at(value, 10)?).ok()?;
    let meta_len = usize::from(u16_at(value, 18)?);
    if value.len() != VALUE_LEN + meta_len {
        return None;
    }
    let metadata = std::str::from_utf8(&value[VALUE_LEN..]).ok()?;
    Some((partition, generation, next, metadata))
}

/// What a record of `__consumer_offsets` does to the generation fence of the version 3 keys
/// (see [`super::table`], invariant 6): what the cleaner needs to keep, of each key, the
/// record a reader applies last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fencing<'a> {
    /// A version 3 commit of this group generation: passed over if lower than its key's
    /// fence (and not −1), else it becomes the fence (−1: none).
    Commit(i64),
    /// A reset: clears the fence of every key of its (group, topic) and incarnation
    /// (`None`: every incarnation).
    Reset {
        /// The consumer group.
        group: &'a str,
        /// The topic's name.
        topic: &'a str,
        /// The incarnation whose keys it clears.
        incarnation: Option<u64>,
    },
    /// Anything else (a tombstone, which clears its key's fence; a version 1 or 2 commit;
    /// a record that cannot be decoded): the newest record of its key wins.
    Other,
}

/// What the record (`value` `None`: a tombstone) does to the fences (see [`Fencing`]).
pub fn fencing<'a>(key: &'a [u8], value: Option<&'a [u8]>) -> Fencing<'a> {
    match decode(key, value) {
        Ok(Decoded::Commit { generation, .. }) if value.and_then(|v| u16_at(v, 0)) == Some(VERSION) => {
            Fencing::Commit(generation)
        }
        Ok(Decoded::Reset { group, topic, incarnation }) => Fencing::Reset { group, topic, incarnation },
        _ => Fencing::Other,
    }
}

/// The start of every version 3 key a reset of (`group`, `topic`) and `incarnation` clears
/// (`None`: of any incarnation).
pub fn reset_prefix(group: &str, topic: &str, incarnation: Option<u64>) -> Vec<u8> {
    match incarnation {
        Some(i) => key_prefix(group, topic, i),
        None => {
            let mut prefix = reset_key(group, topic);
            prefix.push(0);
            prefix
        }
    }
}

/// Decodes a record of `__consumer_offsets`; `value` is `None` for a tombstone.
///
/// # Errors
/// A description of what is wrong: an unknown version, a truncated record, a malformed
/// key, text that is not UTF-8, a negative offset.
pub fn decode<'a>(key: &'a [u8], value: Option<&'a [u8]>) -> Result<Decoded<'a>, String> {
    let Some(value) = value else {
        // A version 3 key wins: only a group name holding NULs and digits could make a
        // version 2 key look like one.
        return match split_v3_key(key) {
            Ok((group, topic, incarnation, partition)) => {
                Ok(Decoded::Tombstone { group, topic, incarnation, partition })
            }
            Err(v3) => match split_v2_key(key) {
                Ok((group, topic)) => Ok(Decoded::Converted { group, topic }),
                Err(_) => Err(v3),
            },
        };
    };
    let version = u16_at(value, 0).ok_or("offset commit record: shorter than its version")?;
    let truncated = || format!("offset commit record of version {version}: truncated header");
    match version {
        3 => {
            let (group, topic, incarnation, partition) = split_v3_key(key)?;
            let generation = i64_at(value, 2).ok_or_else(truncated)?;
            let next = offset(i64_at(value, 10).ok_or_else(truncated)?)?;
            let meta_len = usize::from(u16_at(value, 18).ok_or_else(truncated)?);
            if value.len() != VALUE_LEN + meta_len {
                return Err(format!(
                    "offset commit record of version 3: {} bytes where its metadata length says {}",
                    value.len(),
                    VALUE_LEN + meta_len
                ));
            }
            let metadata = utf8(&value[VALUE_LEN..], "metadata")?;
            let one = Entry { partition, offset: next, metadata };
            let entries = Entries { one: Some(one), rest: &[], left: 0 };
            Ok(Decoded::Commit { group, topic, incarnation: Some(incarnation), generation, entries })
        }
        1 | 2 => {
            let (group, topic) = split_v2_key(key)?;
            let generation = i64_at(value, 2).ok_or_else(truncated)?;
            let (incarnation, count_at, entries_at) = if version == 2 {
                (Some(i64_at(value, 10).ok_or_else(truncated)? as u64), 18, V2_HEADER_LEN)
            } else {
                (None, 10, V1_HEADER_LEN)
            };
            let count = u32_at(value, count_at).ok_or_else(truncated)?;
            if generation == RESET_GENERATION && count == 0 {
                return Ok(Decoded::Reset { group, topic, incarnation });
            }
            let rest = &value[entries_at..];
            let mut walk = rest;
            for _ in 0..count {
                walk = packed_entry(walk)?.1;
            }
            let entries = Entries { one: None, rest, left: count };
            Ok(Decoded::Commit { group, topic, incarnation, generation, entries })
        }
        other => Err(format!("offset commit record of unknown version {other}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A version 1 (`incarnation` None) or 2 record's value, as `tidelog.offsets` wrote it.
    pub(crate) fn legacy_value(
        generation: i64,
        incarnation: Option<u64>,
        entries: &[(u32, i64)],
        metadata: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(if incarnation.is_some() { 2u16 } else { 1 }).to_le_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
        if let Some(i) = incarnation {
            out.extend_from_slice(&i.to_le_bytes());
        }
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for &(p, o) in entries {
            out.extend_from_slice(&p.to_le_bytes());
            out.extend_from_slice(&o.to_le_bytes());
            out.extend_from_slice(&(metadata.len() as u16).to_le_bytes());
            out.extend_from_slice(metadata);
        }
        out
    }

    fn entries(decoded: &Decoded<'_>) -> Vec<Entry<'static>> {
        match decoded {
            Decoded::Commit { entries, .. } => entries
                .clone()
                .map(|e| Entry { metadata: Box::leak(e.metadata.to_owned().into_boxed_str()), ..e })
                .collect(),
            other => panic!("not a commit: {other:?}"),
        }
    }

    #[test]
    fn the_version_3_layout_byte_by_byte() {
        let key = key("billing", "orders", 0x0102_0304_0506_0708, 12);
        assert_eq!(key, b"billing\0orders\x000102030405060708\x0012");
        let mut value = Vec::new();
        encode_value(&mut value, 7, 42, b"mm");
        assert_eq!(value.len(), VALUE_LEN + 2);
        assert_eq!(&value[0..2], &3u16.to_le_bytes());
        assert_eq!(&value[2..10], &7i64.to_le_bytes());
        assert_eq!(&value[10..18], &42i64.to_le_bytes());
        assert_eq!(&value[18..20], &2u16.to_le_bytes());
        assert_eq!(&value[20..22], b"mm");
        let mut plain = Vec::new();
        encode_value(&mut plain, 7, 42, b"");
        assert_eq!(value_without_metadata(7, 42).as_slice(), plain);
        // The incarnation always takes 16 digits.
        assert_eq!(key_prefix("g", "t", 0xab), b"g\0t\x0000000000000000ab\0");
    }

    #[test]
    fn the_reset_layout_byte_by_byte() {
        assert_eq!(reset_key("g", "t"), b"g\0t");
        let value = encode_reset(0x0102_0304_0506_0708);
        assert_eq!(value.len(), 22);
        assert_eq!(&value[0..2], &2u16.to_le_bytes());
        assert_eq!(&value[2..10], &(-2i64).to_le_bytes());
        assert_eq!(&value[10..18], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&value[18..22], &0u32.to_le_bytes());
    }

    #[test]
    fn decodes_version_3() {
        let key = key("g\0with nul", "t", 9, 4_000_000_000);
        let mut value = Vec::new();
        encode_value(&mut value, 5, 17, "é".as_bytes());
        let decoded = decode(&key, Some(&value)).unwrap();
        let Decoded::Commit { group, topic, incarnation, generation, .. } = decoded.clone() else { panic!() };
        assert_eq!((group, topic, incarnation, generation), ("g\0with nul", "t", Some(9), 5));
        assert_eq!(entries(&decoded), [Entry { partition: 4_000_000_000, offset: 17, metadata: "é" }]);
    }

    #[test]
    fn decodes_versions_1_and_2_and_their_resets() {
        let v2 = legacy_value(3, Some(77), &[(0, 10), (5, 20)], b"m");
        let decoded = decode(b"g\0t", Some(&v2)).unwrap();
        let Decoded::Commit { group, topic, incarnation, generation, .. } = decoded.clone() else { panic!() };
        assert_eq!((group, topic, incarnation, generation), ("g", "t", Some(77), 3));
        assert_eq!(
            entries(&decoded),
            [
                Entry { partition: 0, offset: 10, metadata: "m" },
                Entry { partition: 5, offset: 20, metadata: "m" }
            ]
        );
        let v1 = legacy_value(-1, None, &[(2, 30)], b"");
        let decoded = decode(b"g\0t", Some(&v1)).unwrap();
        assert!(matches!(decoded, Decoded::Commit { incarnation: None, generation: -1, .. }));
        assert_eq!(entries(&decoded), [Entry { partition: 2, offset: 30, metadata: "" }]);

        let reset = encode_reset(77);
        assert!(matches!(
            decode(b"g\0t", Some(&reset)).unwrap(),
            Decoded::Reset { group: "g", topic: "t", incarnation: Some(77) }
        ));
        let reset_v1 = legacy_value(RESET_GENERATION, None, &[], b"");
        assert!(matches!(
            decode(b"g\0t", Some(&reset_v1)).unwrap(),
            Decoded::Reset { group: "g", topic: "t", incarnation: None }
        ));
        // Generation -2 with entries is a commit, not a reset.
        let not_reset = legacy_value(RESET_GENERATION, Some(1), &[(0, 1)], b"");
        assert!(matches!(decode(b"g\0t", Some(&not_reset)).unwrap(), Decoded::Commit { .. }));
    }

    #[test]
    fn decodes_a_tombstone_by_its_key() {
        let key = key("g", "t", 0xfeed, 3);
        assert!(matches!(
            decode(&key, None).unwrap(),
            Decoded::Tombstone { group: "g", topic: "t", incarnation: 0xfeed, partition: 3 }
        ));
        assert!(
            matches!(decode(b"g\0t", None).unwrap(), Decoded::Converted { group: "g", topic: "t" }),
            "a tombstone of a version 2 key is a conversion tombstone"
        );
        let err = decode(b"gt", None).unwrap_err();
        assert!(err.contains("malformed version 3 key"), "{err}");
    }

    #[test]
    fn bad_records_are_errors_naming_what_is_wrong() {
        let mut v3 = Vec::new();
        encode_value(&mut v3, 1, 1, b"xy");
        let key3 = key("g", "t", 1, 0);
        let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
            (key3.clone(), 9u16.to_le_bytes().to_vec(), "unknown version 9"),
            (key3.clone(), vec![3], "shorter than its version"),
            (key3.clone(), v3[..21].to_vec(), "bytes where its metadata length says"),
            (key3.clone(), [&v3[..], b"z"].concat(), "bytes where its metadata length says"),
            (b"g\0t\0zz\0".to_vec(), v3.clone(), "malformed version 3 key"),
            (b"g\0t\x000000000000000001\0-1".to_vec(), v3.clone(), "malformed version 3 key"),
            (b"g\0t\x000000000000000001\x004294967296".to_vec(), v3.clone(), "malformed version 3 key"),
            (b"g\0t\x0000000000000000001\x000".to_vec(), v3.clone(), "malformed version 3 key"),
            (b"g\0t\x00000000000000000g\x000".to_vec(), v3.clone(), "malformed version 3 key"),
            (b"gt\x000000000000000001\x000".to_vec(), v3.clone(), "malformed version 3 key"),
            (b"0000000000000001\x000".to_vec(), v3.clone(), "malformed version 3 key"),
            (key3.clone(), [&v3[..20], b"\xff\xfe"].concat(), "metadata is not UTF-8"),
            (b"g\0t".to_vec(), legacy_value(1, Some(1), &[(0, -5)], b""), "negative next offset -5"),
            (b"g\0t".to_vec(), legacy_value(1, Some(1), &[(0, 5)], b"")[..30].to_vec(), "truncated entry"),
            (b"gt".to_vec(), legacy_value(1, Some(1), &[(0, 5)], b""), "key without NUL"),
            (b"g\0t".to_vec(), legacy_value(1, Some(1), &[], b"")[..12].to_vec(), "truncated header"),
        ];
        for (key, value, expected) in cases {
            let err = decode(&key, Some(&value)).expect_err(expected);
            assert!(err.contains(expected), "{err} does not say {expected}");
        }
    }

    #[test]
    fn what_each_record_does_to_the_fences() {
        let key = key("g", "t", 7, 1);
        let mut value = Vec::new();
        encode_value(&mut value, 5, 10, b"");
        assert_eq!(fencing(&key, Some(&value)), Fencing::Commit(5));
        assert_eq!(fencing(&key, None), Fencing::Other, "a tombstone");
        let reset = encode_reset(7);
        assert_eq!(
            fencing(b"g\0t", Some(&reset)),
            Fencing::Reset { group: "g", topic: "t", incarnation: Some(7) }
        );
        assert!(key.starts_with(&reset_prefix("g", "t", Some(7))));
        assert!(!key.starts_with(&reset_prefix("g", "t", Some(8))));
        assert!(key.starts_with(&reset_prefix("g", "t", None)));
        assert!(!key.starts_with(&reset_prefix("g", "tt", None)));
        let v2 = legacy_value(5, Some(7), &[(1, 10)], b"");
        assert_eq!(fencing(b"g\0t", Some(&v2)), Fencing::Other, "version 2 commits do not fence");
        assert_eq!(fencing(&key, Some(b"\x09\x00")), Fencing::Other, "undecodable");
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_agrees_with_decode(tail: Vec<u8>, value: Vec<u8>, offset: i64, meta: String, good: bool) {
            let prefix = key_prefix("g", "t", 7);
            let mut key = prefix.clone();
            let value = if good {
                let mut v = Vec::new();
                encode_value(&mut v, 1, offset.unsigned_abs() >> 1, meta.as_bytes());
                key.extend_from_slice((offset as u32).to_string().as_bytes());
                v
            } else {
                key.extend_from_slice(&tail);
                value
            };
            let fast = decode_v3_after_prefix(&key, prefix.len(), &value);
            match decode(&key, Some(&value)) {
                Ok(Decoded::Commit { group: "g", topic: "t", incarnation: Some(7), generation, mut entries }) => {
                    let e = entries.next().unwrap();
                    proptest::prop_assert_eq!(fast, Some((e.partition, generation, e.offset, e.metadata)));
                }
                _ => proptest::prop_assert_eq!(fast, None),
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_never_panic(key: Vec<u8>, value: Option<Vec<u8>>) {
            if let Ok(Decoded::Commit { entries, .. }) = decode(&key, value.as_deref()) {
                entries.for_each(drop);
            }
        }

        #[test]
        fn version_3_round_trips(group: String, partition: u32, offset in 0..i64::MAX as u64, generation: i64,
                                 incarnation: u64, metadata: String) {
            let key = key(&group, "topic.name-1", incarnation, partition);
            let mut value = Vec::new();
            encode_value(&mut value, generation, offset, metadata.as_bytes());
            let decoded = decode(&key, Some(&value));
            let Ok(Decoded::Commit { group: g, topic, incarnation: i, generation: gen, mut entries }) = decoded
            else { panic!("{decoded:?}") };
            proptest::prop_assert_eq!((g, topic, i, gen), (group.as_str(), "topic.name-1", Some(incarnation), generation));
            proptest::prop_assert_eq!(entries.next(), Some(Entry { partition, offset, metadata: &metadata }));
            proptest::prop_assert_eq!(entries.next(), None);
        }
    }
}
