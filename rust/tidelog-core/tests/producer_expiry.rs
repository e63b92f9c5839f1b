//! Producers idle longer than `producer_expiry_ms` are forgotten when a partition's producer
//! state is rebuilt (from a snapshot or from the batch headers), the others are kept.

use std::path::Path;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::log::now_ms;
use tidelog_core::{Error, LogConfig, PartitionLog};

const DAY_MS: i64 = 24 * 3600 * 1000;

fn open(dir: &Path) -> PartitionLog {
    let config = LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        max_message_bytes: 1024,
        index_interval_bytes: 64,
        producer_expiry_ms: DAY_MS,
        ..LogConfig::default()
    };
    PartitionLog::open(dir, "t", 0, config).expect("open")
}

fn append(log: &PartitionLog, producer_id: i64, base_sequence: i32, timestamp: i64) -> Result<bool, Error> {
    let value = [7u8; 200];
    let record = Record { timestamp, key: None, value: &value, headers: &[], tombstone: false };
    let meta = BatchMeta { base_offset: 0, attributes: 0, producer_id, producer_epoch: 0, base_sequence };
    log.append(&[record], meta).map(|a| a.duplicate)
}

fn write_history(dir: &Path) {
    let log = open(dir);
    let old = now_ms() - 2 * DAY_MS;
    for seq in 0..40 {
        // Producer 1 went quiet two days ago; producer 2 writes now. Enough bytes to roll.
        assert!(!append(&log, 1, seq, old).expect("old producer"));
        assert!(!append(&log, 2, seq, now_ms()).expect("recent producer"));
    }
}

fn check_forgotten(dir: &Path) {
    let log = open(dir);
    // The idle producer is unknown now: any sequence starts it afresh.
    assert!(!append(&log, 1, 1000, now_ms()).expect("an expired producer may restart anywhere"));
    // The recent one is still checked: its last batch is a duplicate, a gap is refused.
    assert!(append(&log, 2, 39, now_ms()).expect("duplicate"));
    assert!(matches!(append(&log, 2, 45, now_ms()), Err(Error::OutOfOrderSequence(_))));
}

#[test]
fn idle_producers_expire_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path());
    let snapshots = std::fs::read_dir(dir.path())
        .expect("list")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".snapshot")))
        .count();
    assert!(snapshots > 0, "the writes rolled segments and left snapshots");
    check_forgotten(dir.path());
}

#[test]
fn idle_producers_expire_when_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path());
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(path).expect("delete snapshot");
        }
    }
    check_forgotten(dir.path());
}

#[test]
fn a_live_producer_is_not_forgotten_while_it_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_history(dir.path());
    let log = open(dir.path());
    assert!(append(&log, 2, 39, now_ms()).expect("duplicate of the last batch"));
    assert!(!append(&log, 2, 40, now_ms()).expect("continues"));
}
