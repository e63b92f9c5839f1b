//! Every walk over a partition's batches goes through `segment::BatchCursor`; these tests
//! hold each walk to its damage policy end to end, on one damaged store: readers and the
//! cleaner fail naming the file and position, verify reports and goes on, and the zeros a
//! lost trim leaves after a sealed segment's last batch end every walk cleanly.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::inspect::{inspect_segment, segment_files};
use tidelog_core::settings::{SharedSettings, TopicSettings};
use tidelog_core::{Error, LogConfig, PartitionLog};

const RECORDS: u64 = 300;
const KEYS: u64 = 20;

fn open(dir: &Path) -> PartitionLog {
    let s = TopicSettings {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        max_message_bytes: 1024,
        cleanup_policy: "compact".into(),
        ..TopicSettings::default()
    };
    let config = LogConfig { segment_ms: None, ..LogConfig::default() }.with_settings(&s);
    PartitionLog::open_with_settings(dir, "t", 0, config, Arc::new(SharedSettings::fixed(s))).expect("open")
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{}", i % KEYS).into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}-").repeat(3).into_bytes()
}

/// Record `i` has timestamp `1000 + i`.
fn fill(dir: &Path) {
    let log = open(dir);
    for i in 0..RECORDS {
        let (k, v) = (key(i), value(i));
        let r =
            Record { timestamp: 1000 + i as i64, key: Some(&k), value: &v, headers: &[], tombstone: false };
        log.append(&[r], BatchMeta::plain(0)).unwrap();
    }
    assert!(log.segment_count().unwrap() > 3);
}

fn read_all(log: &PartitionLog) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    let mut out = Vec::new();
    let mut offset = log.start_offset()?;
    loop {
        let r = log.read(offset, 1000, 1 << 20)?;
        if r.count == 0 && r.next_offset == offset {
            return Ok(out);
        }
        out.extend(r.chunks.iter().flat_map(|c| c.records().map(|rec| (rec.offset, rec.value.to_vec()))));
        offset = r.next_offset;
    }
}

/// The first sealed segment's data file and its batches (position, base offset).
fn first_sealed(dir: &Path) -> (PathBuf, Vec<(usize, u64)>) {
    let path = segment_files(dir).unwrap().remove(0);
    let report = inspect_segment(&path).unwrap();
    let batches = report.batches.iter().map(|b| (b.position as usize, b.header.base_offset)).collect();
    (path, batches)
}

fn expect_corrupt<T: std::fmt::Debug>(result: Result<T, Error>, path: &Path, position: usize) {
    match result {
        Err(Error::Corrupt { path: p, position: at, .. }) => {
            assert_eq!((p.as_path(), at), (path, position as u64))
        }
        other => panic!("expected a corruption error at {}:{position}, got {other:?}", path.display()),
    }
}

#[test]
fn zeros_after_a_sealed_segments_last_batch_end_every_walk_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let (sealed, batches) = first_sealed(dir.path());
    // A trim that a power failure lost: the pre-allocated zeros are back after the batches.
    let len = std::fs::metadata(&sealed).unwrap().len();
    OpenOptions::new().write(true).open(&sealed).unwrap().set_len(len + 8192).unwrap();

    let log = open(dir.path());
    let all = read_all(&log).expect("reads end the segment at its zeros");
    assert_eq!(all.len() as u64, RECORDS);
    assert!(all.iter().enumerate().all(|(i, (o, v))| *o == i as u64 && *v == value(i as u64)));
    let later = batches.last().unwrap().1 + 5;
    assert_eq!(log.offset_for_timestamp(1000 + later as i64).unwrap(), Some(later));
    let report = inspect_segment(&sealed).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.batches.len(), batches.len());

    // The cleaner walks the padded segment too and keeps the newest value of every key.
    log.compact(true).unwrap().expect("no other cleaner");
    let latest: BTreeMap<Vec<u8>, Vec<u8>> =
        read_all(&log).unwrap().into_iter().map(|(o, v)| (key(o), v)).collect();
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = (0..RECORDS).map(|i| (key(i), value(i))).collect();
    assert_eq!(latest, expected);
}

#[test]
fn damage_in_a_sealed_segment_fails_readers_and_the_cleaner_and_verify_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let (sealed, batches) = first_sealed(dir.path());
    let (pos, offset) = batches[3];
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[pos + 70] ^= 0x20;
    std::fs::write(&sealed, &bytes).unwrap();

    let log = open(dir.path());
    // Reads before the damage hand out what they can; the read that reaches it fails.
    let r = log.read(0, 1000, 1 << 20).unwrap();
    assert_eq!(r.next_offset, offset);
    expect_corrupt(log.read(offset, 10, 1 << 20), &sealed, pos);
    // Batches after it stay readable: passing over the damage by its header is fine.
    assert!(log.read(batches[4].1, 10, 1 << 20).unwrap().count > 0);
    expect_corrupt(log.offset_for_timestamp(1000 + offset as i64), &sealed, pos);
    // The cleaner never rewrites what it cannot read.
    expect_corrupt(log.compact(true), &sealed, pos);
    assert_eq!(
        log.read(batches[4].1, 10, 1 << 20).unwrap().chunks[0].records().next().unwrap().offset,
        batches[4].1
    );

    // Verify names the batch and walks on to the end.
    let report = inspect_segment(&sealed).unwrap();
    assert_eq!(report.batches.len(), batches.len());
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!((report.problems[0].position, report.problems[0].offset), (pos as u64, offset));
    assert!(report.problems[0].reason.contains("CRC"));
    assert!(!report.torn_tail);
}
