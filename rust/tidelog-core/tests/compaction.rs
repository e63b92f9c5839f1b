//! Log compaction at the partition-log level: what the rewrite keeps (the newest record per
//! key, tombstones until `delete_retention_ms`, offsets, timestamps, headers), the swap
//! interrupted at every step and finished or rolled back on reopen, a damaged swap
//! manifest, producer state (duplicates still detected, sequences continue) and
//! transactions (aborted removed, committed kept, open untouched).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tidelog_core::format::{headers, BatchMeta, Marker, Record, ATTR_CONTROL, ATTR_TRANSACTIONAL};
use tidelog_core::fs::{self, Fault, Op};
use tidelog_core::settings::{SharedSettings, TopicSettings};
use tidelog_core::{Error, LogConfig, PartitionLog};

const SEGMENT_BYTES: usize = 4096;

fn settings(delete_retention_ms: i64) -> TopicSettings {
    TopicSettings {
        segment_bytes: SEGMENT_BYTES,
        index_interval_bytes: 256,
        max_message_bytes: 1024,
        cleanup_policy: "compact".into(),
        delete_retention_ms,
        ..TopicSettings::default()
    }
}

fn open(dir: &Path, delete_retention_ms: i64) -> PartitionLog {
    let s = settings(delete_retention_ms);
    let config = LogConfig { segment_ms: None, ..LogConfig::default() }.with_settings(&s);
    PartitionLog::open_with_settings(dir, "t", 0, config, Arc::new(SharedSettings::fixed(s))).expect("open")
}

/// One record read back: offset, key, value (`None` for a tombstone), timestamp, headers.
type Read = (u64, Option<Vec<u8>>, Option<Vec<u8>>, i64, Vec<u8>);

fn read_all(log: &PartitionLog) -> Vec<Read> {
    let mut out = Vec::new();
    let mut offset = log.start_offset().unwrap();
    loop {
        let r = log.read(offset, 1000, 1 << 20).expect("read");
        if r.count == 0 && r.next_offset == offset {
            return out;
        }
        for c in &r.chunks {
            for rec in c.records() {
                out.push((
                    rec.offset,
                    rec.key.map(<[u8]>::to_vec),
                    (!rec.tombstone).then(|| rec.value.to_vec()),
                    rec.timestamp,
                    rec.headers.to_vec(),
                ));
            }
        }
        offset = r.next_offset;
    }
}

fn put(log: &PartitionLog, key: &str, value: Option<&str>, timestamp: i64) -> u64 {
    let hdr = headers::encode([("k", key.as_bytes())].into_iter()).unwrap();
    let record = Record {
        timestamp,
        key: Some(key.as_bytes()),
        value: value.unwrap_or("").as_bytes(),
        headers: &hdr,
        tombstone: value.is_none(),
    };
    log.append(&[record], BatchMeta::plain(0)).unwrap().base_offset
}

/// Newest value per key, tombstones removing the key.
fn latest(reads: &[Read]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (_, k, v, _, _) in reads {
        let k = k.clone().expect("keyed");
        match v {
            Some(v) => m.insert(k, v.clone()),
            None => m.remove(&k),
        };
    }
    m
}

/// Appends a history of 20 keys over several segments; returns what was appended.
fn history(log: &PartitionLog, rounds: usize) -> Vec<Read> {
    let now = tidelog_core::log::now_ms();
    for i in 0..rounds {
        let key = format!("key-{}", i % 20);
        let value = (i % 7 != 3).then(|| format!("value-{i}-{}", "x".repeat(i % 50)));
        put(log, &key, value.as_deref(), now - 100_000 + i as i64);
    }
    read_all(log)
}

#[test]
fn compaction_keeps_the_newest_record_of_each_key_with_its_offset_and_metadata() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 86_400_000);
    let before = history(&log, 600);
    assert!(log.segment_count().unwrap() > 4);
    let ratio = log.dirty_ratio().unwrap();
    assert!(ratio.total_bytes > 0 && ratio.dirty_bytes == ratio.total_bytes);
    let stats = log.compact(true).unwrap().expect("no other cleaner");
    assert!(stats.swapped);
    assert!(stats.records_removed > 0 && stats.bytes_written < stats.bytes_read, "{stats:?}");
    assert_eq!(log.dirty_ratio().unwrap().dirty_bytes, 0);
    let after = read_all(&log);
    // Every record kept is one of the originals, unchanged (offset, key, value, time, headers).
    for r in &after {
        assert!(before.contains(r), "{r:?} was not appended");
    }
    assert!(after.windows(2).all(|w| w[0].0 < w[1].0), "offsets rise");
    assert_eq!(latest(&after), latest(&before));
    // Below the active segment, only newest records per key are left, tombstones included
    // (not yet delete_retention_ms old).
    let active_base = log.head().unwrap().active_base;
    let cleaned: Vec<_> = after.iter().filter(|r| r.0 < active_base).collect();
    let newest: BTreeMap<_, _> =
        before.iter().filter(|r| r.0 < active_base).map(|r| (r.1.clone(), r.0)).collect();
    assert_eq!(cleaned.len(), newest.len());
    assert!(cleaned.iter().all(|r| newest[&r.1] == r.0));
    assert!(cleaned.iter().any(|r| r.2.is_none()), "tombstones stay until delete_retention_ms");
    // Reading from a removed offset yields the next record.
    let removed = (0..active_base).find(|o| !after.iter().any(|r| r.0 == *o)).expect("something removed");
    let next = after.iter().find(|r| r.0 > removed).unwrap().0;
    let r = log.read(removed, 1, 1 << 20).unwrap();
    assert_eq!(r.chunks[0].records().next().unwrap().offset, next);
    assert_eq!(r.next_offset, next + 1);
    // Compacting again changes nothing; appends and reopen keep working.
    let again = log.compact(true).unwrap().unwrap();
    assert_eq!(again.records_removed, 0);
    assert_eq!(read_all(&log), after);
    put(&log, "key-1", Some("later"), tidelog_core::log::now_ms());
    drop(log);
    let log = open(dir.path(), 86_400_000);
    let reopened = read_all(&log);
    assert_eq!(&reopened[..after.len()], &after[..]);
    assert_eq!(latest(&reopened)[&b"key-1".to_vec()], b"later".to_vec());
}

#[test]
fn tombstones_go_after_delete_retention() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let before = history(&log, 400);
    let stats = log.compact(true).unwrap().unwrap();
    assert!(stats.tombstones_removed > 0);
    let after = read_all(&log);
    let active_base = log.head().unwrap().active_base;
    assert!(after.iter().filter(|r| r.0 < active_base).all(|r| r.2.is_some()));
    assert_eq!(latest(&after), latest(&before));
}

#[test]
fn a_plain_topic_refuses_compaction_and_a_compacted_one_refuses_keyless_messages() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let plain = PartitionLog::open(&dir.path().join("p"), "p", 0, LogConfig::default()).unwrap();
    assert!(matches!(plain.compact(true), Err(Error::InvalidConfig(_))));
    let log = open(&dir.path().join("c"), 1);
    let r = Record { timestamp: 1, key: None, value: b"v", headers: &[], tombstone: false };
    let err = log.append(&[r], BatchMeta::plain(0)).unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("needs a key")), "{err}");
}

/// Runs a compaction that panics at the `skip`-th matching call of `op` on a path containing
/// `path`, as a cleaner killed there would stop, then reopens: the partition must read the
/// same newest values, and either the old or the new layout, whole.
fn interrupted(op: Op, path: &str, skip: u32) -> (Vec<Read>, Vec<Read>, Vec<Read>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 86_400_000);
    let before = history(&log, 500);
    // What a whole compaction gives, in a copy.
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    fs::inject(Fault {
        op,
        path_contains: path.into(),
        errno: libc::EIO,
        skip,
        times: Some(1),
        short: false,
        panic: true,
    });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| log.compact(true)));
    fs::clear();
    assert!(outcome.is_err(), "the injected panic struck");
    drop(log);
    let reopened = open(dir.path(), 86_400_000);
    let after = read_all(&reopened);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".cleaned") || n == "compaction.swap"), "{names:?}");
    drop(reopened);
    let whole = {
        let log = open(copy.path(), 86_400_000);
        log.compact(true).unwrap();
        read_all(&log)
    };
    assert_eq!(latest(&after), latest(&before));
    (before, after, whole)
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_cleaner_dying_before_the_swap_is_decided_leaves_the_old_segments() {
    // Writing the second rewritten file, or renaming the manifest into place.
    for (op, path, skip) in [(Op::Write, ".cleaned", 1), (Op::Rename, "compaction.swap", 0)] {
        let (before, after, _) = interrupted(op, path, skip);
        assert_eq!(after, before, "{op:?} {path}");
    }
}

#[test]
fn a_cleaner_dying_after_the_swap_is_decided_leaves_the_new_segments() {
    // Renaming the first, and a later, rewritten file into place; writing the checkpoint.
    for (op, path, skip) in
        [(Op::Rename, ".index", 0), (Op::Rename, ".log", 0), (Op::Rename, "cleaner.checkpoint", 0)]
    {
        let (_, after, whole) = interrupted(op, path, skip);
        assert_eq!(after, whole, "{op:?} {path} {skip}");
    }
}

#[test]
fn a_swap_left_by_a_failed_cleaner_is_finished_by_the_next_listing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 86_400_000);
    let before = history(&log, 500);
    let other = open(dir.path(), 86_400_000);
    assert_eq!(read_all(&other), before);
    fs::inject(Fault {
        op: Op::Rename,
        path_contains: ".log".into(),
        errno: libc::EIO,
        skip: 0,
        times: Some(1),
        short: false,
        panic: false,
    });
    let failed = log.compact(true);
    fs::clear();
    assert!(failed.is_err());
    // The other handle (as another process would) re-lists, finishing the swap first.
    let seen = read_all(&other);
    assert!(!dir.path().join("compaction.swap").exists());
    assert_eq!(latest(&seen), latest(&before));
    assert!(seen.len() < before.len());
    assert_eq!(read_all(&log), seen);
}

#[test]
fn a_damaged_swap_manifest_is_reported_by_name() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 86_400_000));
    std::fs::write(dir.path().join("compaction.swap"), b"TLSWAP01 not a manifest").unwrap();
    let s = settings(1);
    let config = LogConfig::default().with_settings(&s);
    match PartitionLog::open_with_settings(dir.path(), "t", 0, config, Arc::new(SharedSettings::fixed(s))) {
        Err(Error::Corrupt { path, .. }) => assert!(path.ends_with("compaction.swap")),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a damaged manifest was ignored"),
    }
}

#[test]
fn leftover_rewritten_files_without_a_manifest_are_removed_on_open() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 86_400_000);
    let before = history(&log, 300);
    drop(log);
    std::fs::write(dir.path().join("00000000000000000000.log.cleaned"), b"half written").unwrap();
    let log = open(dir.path(), 86_400_000);
    assert_eq!(read_all(&log), before);
    assert!(!dir.path().join("00000000000000000000.log.cleaned").exists());
}

fn idempotent(log: &PartitionLog, pid: i64, seq: i32, key: &str, value: &str) -> (u64, bool) {
    let r = Record {
        timestamp: tidelog_core::log::now_ms(),
        key: Some(key.as_bytes()),
        value: value.as_bytes(),
        headers: &[],
        tombstone: false,
    };
    let meta =
        BatchMeta { base_offset: 0, attributes: 0, producer_id: pid, producer_epoch: 0, base_sequence: seq };
    let a = log.append(&[r], meta).unwrap();
    (a.base_offset, a.duplicate)
}

#[test]
fn producer_state_survives_compaction_duplicates_are_still_detected() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 86_400_000);
    // Producer 7 writes key "a" over and over, then (its last batches) keys that another
    // writer then overwrites, so compaction removes the producer's newest batches.
    let mut seq = 0;
    for i in 0..300 {
        idempotent(&log, 7, seq, "a", &format!("v{i}-{}", "y".repeat(40)));
        seq += 1;
    }
    let mut last = Vec::new();
    for i in 0..3 {
        last.push(idempotent(&log, 7, seq, &format!("k{i}"), "mine").0);
        seq += 1;
    }
    for i in 0..3 {
        put(&log, &format!("k{i}"), Some("theirs"), tidelog_core::log::now_ms());
    }
    for _ in 0..100 {
        put(&log, "filler", Some(&"z".repeat(60)), tidelog_core::log::now_ms());
    }
    let stats = log.compact(true).unwrap().unwrap();
    assert!(stats.swapped && stats.records_removed > 300, "{stats:?}");
    assert!(read_all(&log).iter().all(|r| r.2.as_deref() != Some(b"mine".as_slice())));
    let check = |log: &PartitionLog| {
        // A retry of the producer's last batch is a duplicate with the original offset.
        assert_eq!(idempotent(log, 7, seq - 1, "k2", "mine"), (last[2], true));
        // An out-of-order sequence is still refused.
        let r = Record { timestamp: 1, key: Some(b"x"), value: b"x", headers: &[], tombstone: false };
        let meta = BatchMeta {
            base_offset: 0,
            attributes: 0,
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: seq + 5,
        };
        assert!(matches!(log.append(&[r], meta), Err(Error::OutOfOrderSequence(_))));
    };
    check(&log);
    drop(log);
    let log = open(dir.path(), 86_400_000);
    check(&log);
    // The sequence continues.
    assert!(!idempotent(&log, 7, seq, "b", "next").1);
}

fn txn(log: &PartitionLog, pid: i64, seq: i32, key: &str, value: &str) {
    let r = Record {
        timestamp: tidelog_core::log::now_ms(),
        key: Some(key.as_bytes()),
        value: value.as_bytes(),
        headers: &[],
        tombstone: false,
    };
    let meta = BatchMeta {
        base_offset: 0,
        attributes: ATTR_TRANSACTIONAL,
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: seq,
    };
    log.append(&[r], meta).unwrap();
}

fn marker(log: &PartitionLog, pid: i64, m: Marker) {
    let value = m.value();
    let r = Record {
        timestamp: tidelog_core::log::now_ms(),
        key: None,
        value: &value,
        headers: &[],
        tombstone: false,
    };
    let meta = BatchMeta {
        base_offset: 0,
        attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: -1,
    };
    log.append(&[r], meta).unwrap();
}

#[test]
fn transactions_aborted_are_removed_committed_kept_open_untouched() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 86_400_000);
    txn(&log, 1, 0, "c", "committed");
    txn(&log, 2, 0, "a", "aborted");
    marker(&log, 1, Marker::Commit);
    marker(&log, 2, Marker::Abort);
    for i in 0..150 {
        put(&log, "filler", Some(&format!("{i}{}", "z".repeat(60))), tidelog_core::log::now_ms());
    }
    // An open transaction, then more segments after it: they are past the last stable
    // offset and stay as they are.
    txn(&log, 3, 0, "o", "open");
    let open_at = log.end_offset().unwrap() - 1;
    for i in 0..150 {
        put(&log, "filler", Some(&format!("{i}{}", "w".repeat(60))), tidelog_core::log::now_ms());
    }
    let lso = log.last_stable_offset().unwrap();
    assert_eq!(lso, open_at);
    let uncommitted_before = log.read_uncommitted(open_at, 1000, 1 << 20).unwrap().count;
    let stats = log.compact(true).unwrap().unwrap();
    assert!(stats.swapped);
    assert!(stats.cleaned_to <= open_at);
    let after = read_all(&log);
    let values: Vec<_> = after.iter().filter_map(|r| r.2.clone()).collect();
    assert!(values.contains(&b"committed".to_vec()));
    assert!(!values.contains(&b"aborted".to_vec()));
    // The aborted record is gone from the files, not only hidden: its offset reads as the next.
    let r = log.read_uncommitted(1, 1, 1 << 20).unwrap();
    assert!(r.chunks[0].records().next().unwrap().offset > 1);
    assert_eq!(log.read_uncommitted(open_at, 1000, 1 << 20).unwrap().count, uncommitted_before);
    marker(&log, 3, Marker::Commit);
    let all = read_all(&log);
    assert!(all.iter().any(|r| r.2.as_deref() == Some(b"open".as_slice())));
    drop(log);
    let log = open(dir.path(), 86_400_000);
    assert_eq!(read_all(&log), all);
}

#[test]
fn markers_and_aborted_data_go_once_delete_retention_passed() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    txn(&log, 1, 0, "c", "committed");
    marker(&log, 1, Marker::Commit);
    txn(&log, 2, 0, "a", "aborted");
    marker(&log, 2, Marker::Abort);
    for i in 0..150 {
        put(&log, "filler", Some(&format!("{i}{}", "z".repeat(60))), tidelog_core::log::now_ms());
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    let stats = log.compact(true).unwrap().unwrap();
    // Kept: "committed" (its marker too: the transaction still has a record) and the newest
    // filler. Removed: the aborted record, its marker, 149 fillers.
    assert_eq!(stats.records_removed, stats.records_read - 3, "{stats:?}");
    let r = log.read(0, 10, 1 << 20).unwrap();
    assert_eq!(r.chunks[0].records().next().unwrap().value, b"committed");
}

/// Base offsets of the segment data files, and the offset after the last batch of each.
fn segment_extents(dir: &Path) -> Vec<(u64, u64)> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").and_then(|stem| stem.parse().ok())
        })
        .collect();
    bases.sort_unstable();
    bases
        .iter()
        .map(|&base| {
            let bytes = std::fs::read(dir.join(format!("{base:020}.log"))).unwrap();
            let (mut pos, mut end) = (0, base);
            while pos + 64 <= bytes.len() {
                let Ok(view) = tidelog_core::format::BatchView::parse(&bytes[pos..], true) else { break };
                assert_eq!(view.header.base_offset, end, "batches of segment {base} continue each other");
                end = view.header.next_offset();
                pos += view.header.total_len;
            }
            (base, end)
        })
        .collect()
}

#[test]
fn compacted_segments_still_end_where_the_next_begins() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let now = tidelog_core::log::now_ms();
    // Big values, so the output spans several segments; each segment's last records are
    // overwritten later, so compaction removes them.
    for i in 0..120 {
        put(&log, &format!("key-{i}"), Some(&"v".repeat(500)), now);
    }
    for i in 0..120 {
        if i % 8 >= 5 {
            put(&log, &format!("key-{i}"), None, now - 10);
        }
    }
    put(&log, "last", Some("x"), now);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let stats = log.compact(true).unwrap().unwrap();
    assert!(stats.segments_after > 1, "{stats:?}");
    let extents = segment_extents(dir.path());
    for pair in extents.windows(2) {
        assert_eq!(
            pair[0].1, pair[1].0,
            "segment {} ends where {} begins: {extents:?}",
            pair[0].0, pair[1].0
        );
    }
    let after = read_all(&log);
    let active_base = log.head().unwrap().active_base;
    assert!(after.iter().all(|r| r.2.is_some() || r.0 >= active_base), "old tombstones removed");
    let live = latest(&after);
    assert_eq!(live.len(), 120 - 120 / 8 * 3 + 1);
    assert!((0..120).all(|i| live.contains_key(format!("key-{i}").as_bytes()) == (i % 8 < 5)));
}

#[test]
fn a_partition_whose_every_record_goes_keeps_its_offsets() {
    // Faults are process-wide: a compaction beside another test's armed fault would hit it.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1);
    let now = tidelog_core::log::now_ms();
    for i in 0..60 {
        put(&log, &format!("key-{}", i % 3), Some(&"v".repeat(300)), now);
    }
    for i in 0..3 {
        put(&log, &format!("key-{i}"), None, now - 10);
    }
    // The tombstones must be in a closed segment: roll past them.
    for i in 0..20 {
        put(&log, "tail", Some(&"t".repeat(300)), now + i);
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    log.compact(true).unwrap().unwrap();
    let after = read_all(&log);
    assert!(after.iter().all(|r| r.1.as_deref() == Some(b"tail".as_slice())));
    assert_eq!(log.start_offset().unwrap(), 0);
    drop(log);
    let log = open(dir.path(), 1);
    assert_eq!(log.start_offset().unwrap(), 0);
    assert_eq!(read_all(&log), after);
}
