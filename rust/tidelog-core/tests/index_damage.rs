//! Damaged indexes of the active segment: recovery rebuilds them from the data.

use std::path::Path;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::segment::{file_name, FileKind};
use tidelog_core::{LogConfig, PartitionLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        max_message_bytes: 1024,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

fn append_small(dir: &Path, n: i64) {
    let log = PartitionLog::open(dir, "t", 0, config()).unwrap();
    for i in 0..n {
        let v = format!("m{i}");
        let rec =
            Record { timestamp: 1000 + i, key: None, value: v.as_bytes(), headers: &[], tombstone: false };
        log.append(&[rec], BatchMeta::plain(0)).unwrap();
    }
}

/// Both index files of the active segment lost: rebuilt, not overflowing.
#[test]
fn lost_active_indexes_are_rebuilt_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    append_small(dir.path(), 40); // 40 batches of ~90 bytes: 40 index entries, capacity 66
    std::fs::remove_file(dir.path().join(file_name(0, FileKind::Index))).unwrap();
    std::fs::remove_file(dir.path().join(file_name(0, FileKind::TimeIndex))).unwrap();
    // Err(InvalidConfig("index of segment 0 is full"))
    let log = PartitionLog::open(dir.path(), "t", 0, config()).unwrap();
    assert_eq!(log.end_offset().unwrap(), 40);
}

/// A wrong entry before the last valid one is dropped with everything after it.
#[test]
fn wrong_middle_entry_of_the_active_index_is_dropped_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    append_small(dir.path(), 20);
    let index = dir.path().join(file_name(0, FileKind::Index));
    let mut bytes = std::fs::read(&index).unwrap();
    let pos = u32::from_le_bytes(bytes[5 * 8 + 4..5 * 8 + 8].try_into().unwrap());
    bytes[5 * 8 + 4..5 * 8 + 8].copy_from_slice(&(pos + 5).to_le_bytes());
    std::fs::write(&index, bytes).unwrap();
    let log = PartitionLog::open(dir.path(), "t", 0, config()).unwrap();
    // Err(Corrupt { position: <pos + 5>, reason: "batch extends past the end of the data" / CRC })
    let read = log.read(5, 1, 1 << 20).unwrap();
    assert_eq!(read.chunks[0].records().next().unwrap().value, b"m5");
}
