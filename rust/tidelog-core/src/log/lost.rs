//! What recovery removed from a partition, remembered: one small CRC-checked record per
//! event in `<partition>/recovery.events`, appended and synced before the data is cut, so
//! `tidelog verify`, `Store.stats()` and consumers (whose committed offsets may point into
//! what was removed) can learn about it from then on.
//!
//! Record layout (little-endian): u32 length of the payload, u32 CRC32C of the payload, then
//! the payload: u16 version (1), u8 kind, u64 time (ms since the epoch), u64 segment base
//! offset, u64 position, u64 bytes removed, u64 first offset removed, u64 end offset (after
//! the last removed), u16 length + the quarantine file's name (UTF-8, empty for a torn tail).
//! A record cut short by a crash at the end of the file is ignored; one that fails its CRC
//! anywhere else is reported as an error rather than skipped.

use std::path::Path;

use crate::format::{read_u32, read_u64};
use crate::{Error, Result};

/// Directory of a partition directory holding quarantined bytes.
pub use crate::paths::QUARANTINE_DIR;
/// File of a partition directory holding the recovery events.
pub use crate::paths::RECOVERY_EVENTS_FILE as EVENTS_FILE;

const VERSION: u16 = 1;
const FIXED_LEN: usize = 2 + 1 + 8 * 6 + 2;

/// What recovery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// A torn or damaged tail with nothing valid after it was truncated.
    TornTail,
    /// Damage followed by valid batches was moved into the quarantine directory.
    Quarantined,
    /// After a restart of the machine, data written since the last sync and damaged by the
    /// power loss was cut, and what followed the damage moved into the quarantine
    /// directory: what `fsync` allowed to be lost, so a note, not a problem.
    Unsynced,
}

impl LossKind {
    /// Every kind, in code order.
    pub const ALL: [LossKind; 3] = [LossKind::TornTail, LossKind::Quarantined, LossKind::Unsynced];

    fn code(self) -> u8 {
        match self {
            LossKind::TornTail => 1,
            LossKind::Quarantined => 2,
            LossKind::Unsynced => 3,
        }
    }

    /// The name used in reports: "torn_tail", "quarantined" or "unsynced".
    pub fn name(self) -> &'static str {
        match self {
            LossKind::TornTail => "torn_tail",
            LossKind::Quarantined => "quarantined",
            LossKind::Unsynced => "unsynced",
        }
    }
}

/// One thing recovery removed from a partition's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossEvent {
    /// What was done.
    pub kind: LossKind,
    /// When, in ms since the Unix epoch.
    pub time_ms: i64,
    /// Base offset of the segment it happened in.
    pub segment_base: u64,
    /// Byte position in that segment's data file where the removed part began.
    pub position: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// First offset removed (the log's end offset afterwards).
    pub first_offset: u64,
    /// Offset after the last one removed, as far as the removed bytes tell; equal to
    /// `first_offset` when they tell nothing. Offsets in `first_offset..end_offset` were
    /// handed out before and are handed out again to new messages.
    pub end_offset: u64,
    /// Name of the file in [`QUARANTINE_DIR`] holding the removed bytes (empty when they
    /// were a torn tail and truncated).
    pub file: String,
}

impl LossEvent {
    fn encode(&self) -> Vec<u8> {
        let name = self.file.as_bytes();
        let name = &name[..name.len().min(u16::MAX as usize)];
        let mut payload = Vec::with_capacity(FIXED_LEN + name.len());
        payload.extend_from_slice(&VERSION.to_le_bytes());
        payload.push(self.kind.code());
        for word in [
            self.time_ms as u64,
            self.segment_base,
            self.position,
            self.bytes,
            self.first_offset,
            self.end_offset,
        ] {
            payload.extend_from_slice(&word.to_le_bytes());
        }
        payload.extend_from_slice(&(name.len() as u16).to_le_bytes());
        payload.extend_from_slice(name);
        let mut out = Vec::with_capacity(8 + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        if payload.len() < FIXED_LEN || u16::from_le_bytes([payload[0], payload[1]]) != VERSION {
            return None;
        }
        let kind = match payload[2] {
            1 => LossKind::TornTail,
            2 => LossKind::Quarantined,
            3 => LossKind::Unsynced,
            _ => return None,
        };
        let word = |i: usize| read_u64(payload, 3 + 8 * i);
        let name_len = u16::from_le_bytes([payload[FIXED_LEN - 2], payload[FIXED_LEN - 1]]) as usize;
        let name = payload.get(FIXED_LEN..FIXED_LEN + name_len)?;
        Some(LossEvent {
            kind,
            time_ms: word(0) as i64,
            segment_base: word(1),
            position: word(2),
            bytes: word(3),
            first_offset: word(4),
            end_offset: word(5),
            file: String::from_utf8(name.to_vec()).ok()?,
        })
    }
}

/// Appends `event` to the partition's events file; with `durable`, syncs it (and, when the
/// file is new, the directory) before returning. Recovery asks for it when the cut that
/// follows must never be without its record (a quarantine), or when the store's fsync policy
/// is "always"; otherwise the record is as durable as the cut it describes.
///
/// # Errors
/// I/O errors.
pub fn record(partition_dir: &Path, event: &LossEvent, durable: bool) -> Result<()> {
    let path = partition_dir.join(EVENTS_FILE);
    let file = crate::fs::open_rw(&path, true)?;
    let len = file.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
    crate::fs::write_all_at(&file, &path, &event.encode(), len)?;
    if durable {
        crate::fs::sync_all(&file, &path)?;
        if len == 0 {
            crate::fs::sync_dir(partition_dir)?;
        }
    }
    Ok(())
}

/// The events recorded for the partition in `partition_dir`, oldest first (none if the file
/// does not exist).
///
/// # Errors
/// I/O errors, or a damaged record that is not the last one.
pub fn read_events(partition_dir: &Path) -> Result<Vec<LossEvent>> {
    let path = partition_dir.join(EVENTS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let mut events = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let complete = at + 8 <= bytes.len() && at + 8 + read_u32(&bytes, at) as usize <= bytes.len();
        if !complete {
            break; // cut short by a crash while appending: the event was never acted on
        }
        let len = read_u32(&bytes, at) as usize;
        let payload = &bytes[at + 8..at + 8 + len];
        let event = (crc32c::crc32c(payload) == read_u32(&bytes, at + 4))
            .then(|| LossEvent::decode(payload))
            .flatten();
        match event {
            Some(e) => events.push(e),
            None => {
                return Err(Error::Corrupt {
                    path,
                    position: at as u64,
                    offset: 0,
                    reason: "damaged recovery event record".into(),
                })
            }
        }
        at += 8 + len;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: LossKind, file: &str) -> LossEvent {
        LossEvent {
            kind,
            time_ms: 1_700_000_000_000,
            segment_base: 40,
            position: 4096,
            bytes: 123,
            first_offset: 57,
            end_offset: 90,
            file: file.into(),
        }
    }

    #[test]
    fn events_round_trip_and_a_cut_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_events(dir.path()).unwrap().is_empty());
        let a = event(LossKind::TornTail, "");
        let b = event(LossKind::Quarantined, "00000000000000000040-4096.log");
        let c = event(LossKind::Unsynced, "00000000000000000040-0000000000-1.log");
        for e in [&a, &b, &c] {
            record(dir.path(), e, true).unwrap();
        }
        assert_eq!(read_events(dir.path()).unwrap(), vec![a.clone(), b.clone(), c]);
        let path = dir.path().join(EVENTS_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        assert_eq!(read_events(dir.path()).unwrap(), vec![a, b]);
    }

    #[test]
    fn a_damaged_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        record(dir.path(), &event(LossKind::TornTail, ""), false).unwrap();
        record(dir.path(), &event(LossKind::TornTail, ""), false).unwrap();
        let path = dir.path().join(EVENTS_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(read_events(dir.path()), Err(Error::Corrupt { .. })));
    }
}
