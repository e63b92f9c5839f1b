//! Fault injection at the engine level (`tidelog_core::fs`): a full disk while rolling, and a
//! failed sync, must never lose an acknowledged batch, never crash the process (a write
//! through a mapping past its file's end is a SIGBUS), and never report a later sync as a
//! success. Faults are process-wide, so the tests here run one at a time.

use std::path::Path;
use std::sync::Mutex;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::fs::{self, Fault, Op};
use tidelog_core::{Error, FsyncPolicy, LogConfig, PartitionLog};

static SERIAL: Mutex<()> = Mutex::new(());

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, "t", 0, config).expect("open partition log")
}

fn append(log: &PartitionLog, value: &[u8]) -> tidelog_core::Result<u64> {
    let record = Record { timestamp: 1, key: None, value, headers: &[], tombstone: false };
    Ok(log.append(&[record], BatchMeta::plain(0))?.base_offset)
}

fn values(log: &PartitionLog) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.start_offset().unwrap();
    while offset < log.end_offset().unwrap() {
        let result = log.read(offset, usize::MAX, usize::MAX).expect("read");
        for chunk in &result.chunks {
            out.extend(chunk.records().map(|r| r.value.to_vec()));
        }
        offset = result.next_offset;
    }
    out
}

fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

fn fault(op: Op, errno: i32, times: Option<u32>) -> Fault {
    Fault { op, path_contains: ".log".into(), errno, skip: 0, times, short: false, panic: false }
}

#[test]
fn a_failed_roll_never_lets_a_smaller_batch_write_past_the_trimmed_file() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 16 << 10,
        max_message_bytes: 8 << 10,
        segment_ms: None,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config.clone());
    append(&log, &[1; 7 << 10]).unwrap();
    append(&log, &[1; 7 << 10]).unwrap();
    // 6 KB more does not fit: the roll trims the segment, then cannot allocate the next
    // one. A small batch still fits in the old mapping, past the trimmed file's end.
    fs::inject(fault(Op::Allocate, libc::ENOSPC, Some(1)));
    let err = append(&log, &[2; 6 << 10]).unwrap_err();
    assert_eq!(errno(&err), Some(libc::ENOSPC), "{err}");
    assert_eq!(append(&log, b"small").unwrap(), 2);
    fs::clear();
    assert_eq!(append(&log, &[3; 6 << 10]).unwrap(), 3);
    let expected = vec![vec![1; 7 << 10], vec![1; 7 << 10], b"small".to_vec(), vec![3; 6 << 10]];
    assert_eq!(values(&log), expected);
    drop(log);
    let log = open(dir.path(), config);
    assert_eq!(values(&log), expected);
}

#[test]
fn a_failed_sync_poisons_the_partition_until_reopened() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { fsync: FsyncPolicy::Always, ..LogConfig::default() };
    let log = open(dir.path(), config.clone());
    append(&log, b"a").unwrap();
    fs::inject(fault(Op::Sync, libc::EIO, Some(1)));
    assert_eq!(errno(&append(&log, b"b").unwrap_err()), Some(libc::EIO));
    fs::clear();
    assert_eq!(errno(&append(&log, b"c").unwrap_err()), Some(libc::EIO));
    assert!(log.sync().is_err());
    drop(log);
    let log = open(dir.path(), config);
    let stored = values(&log);
    assert!(stored == [b"a".to_vec()] || stored == [b"a".to_vec(), b"b".to_vec()], "{stored:?}");
    append(&log, b"d").unwrap();
}
