//! A reader whose head is older than the segments it lists (issue 14: a long-lived reader
//! process handed out aborted messages and hid committed ones while a fresh process read
//! the same files right).
//!
//! A reader reads the head, is preempted, and meanwhile other processes append, roll and
//! append again; its segment list, stale, is then re-listed to the newest head. Driven here
//! deterministically: the head is taken, the other handle writes, then the read runs with
//! that head.

use std::path::Path;

use super::{now_ms, LogConfig, PartitionLog};
use crate::format::{BatchMeta, Marker, Record, ATTR_CONTROL, ATTR_TRANSACTIONAL};

fn open(dir: &Path) -> PartitionLog {
    let config = LogConfig { segment_ms: None, index_interval_bytes: 64, ..LogConfig::default() };
    PartitionLog::open(dir, "t", 0, config).expect("open partition log")
}

fn append(log: &PartitionLog, pid: i64, value: &[u8], attributes: u8) -> u64 {
    let record = Record { timestamp: now_ms(), key: None, value, headers: &[], tombstone: false };
    let meta =
        BatchMeta { base_offset: 0, attributes, producer_id: pid, producer_epoch: 0, base_sequence: -1 };
    log.append(&[record], meta).expect("append").base_offset
}

fn txn(log: &PartitionLog, pid: i64, value: &str) -> u64 {
    append(log, pid, value.as_bytes(), ATTR_TRANSACTIONAL)
}

fn marker(log: &PartitionLog, pid: i64, kind: Marker) -> u64 {
    append(log, pid, &kind.value(), ATTR_TRANSACTIONAL | ATTR_CONTROL)
}

/// Every value a committed read of `log` serves, reading on from `first` (the result of a
/// first read, which may have been made with an older head).
fn visible_after(log: &PartitionLog, first: super::ReadResult) -> Vec<String> {
    let mut out = Vec::new();
    let mut result = first;
    loop {
        for chunk in &result.chunks {
            out.extend(chunk.records().map(|r| String::from_utf8(r.value.to_vec()).unwrap()));
        }
        if result.next_offset >= log.end_offset().unwrap() {
            return out;
        }
        result = log.read(result.next_offset, usize::MAX, usize::MAX).expect("read");
    }
}

#[test]
fn a_reader_whose_head_is_older_than_its_relisted_segments_keeps_its_producer_table_right() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, reader) = (open(dir.path()), open(dir.path()));
    let (p1, p2) = (1, 2);
    txn(&writer, p1, "t0");
    marker(&writer, p1, Marker::Commit);
    // The reader builds its producer table and lists the segments.
    assert_eq!(visible_after(&reader, reader.read(0, usize::MAX, usize::MAX).unwrap()), ["t0"]);

    assert!(writer.seal_active().unwrap());
    assert_eq!(txn(&writer, p1, "a"), 2); // committed at 4
    assert_eq!(txn(&writer, p2, "x"), 3); // aborted at 5
                                          // The reader reads the head here, then is preempted.
    let head = reader.head().unwrap();
    assert_eq!(head.next_offset, 4);
    marker(&writer, p1, Marker::Commit);
    marker(&writer, p2, Marker::Abort);
    txn(&writer, p1, "b");
    marker(&writer, p1, Marker::Abort);
    assert!(writer.seal_active().unwrap());
    assert_eq!(txn(&writer, p1, "c"), 8);
    marker(&writer, p1, Marker::Abort);
    txn(&writer, p2, "y");
    marker(&writer, p2, Marker::Commit);

    // The reader resumes: its segment list is stale and is re-listed to the newest head.
    let first = reader.read_isolated_at(head, 0, usize::MAX, usize::MAX, true).unwrap();
    let expected = ["t0", "a", "y"];
    assert_eq!(visible_after(&reader, first), expected, "the long-lived reader");
    assert_eq!(
        visible_after(&reader, reader.read(0, usize::MAX, usize::MAX).unwrap()),
        expected,
        "the long-lived reader, reading again"
    );
    drop(reader);
    let fresh = open(dir.path());
    assert_eq!(
        visible_after(&fresh, fresh.read(0, usize::MAX, usize::MAX).unwrap()),
        expected,
        "a fresh reader"
    );
}

#[test]
fn catching_up_to_a_head_older_than_the_view_applies_no_batch_past_it_and_skips_none() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, reader) = (open(dir.path()), open(dir.path()));
    txn(&writer, 1, "t0");
    marker(&writer, 1, Marker::Commit);
    reader.last_stable_offset().unwrap();
    assert!(writer.seal_active().unwrap());
    txn(&writer, 1, "a");
    let old = reader.head().unwrap();
    marker(&writer, 1, Marker::Commit);
    txn(&writer, 1, "b");
    marker(&writer, 1, Marker::Abort);
    assert!(writer.seal_active().unwrap());
    txn(&writer, 1, "c");
    marker(&writer, 1, Marker::Commit);

    let newest = reader.head().unwrap();
    let view = reader.current_view(newest).unwrap();
    let mut guard = reader.producer_table().unwrap();
    let table = reader.catch_up(&mut guard, &view, &old).unwrap();
    assert_eq!(table.applied, old.next_offset, "caught up to the head asked for, not past it");
    assert_eq!(table.last_stable_offset(old.next_offset), 2, "the transaction at 2 is open at that head");
    let table = reader.catch_up(&mut guard, &view, &newest).unwrap().clone();
    drop(guard);

    assert!(table.is_aborted(1, 4) && !table.is_aborted(1, 2) && !table.is_aborted(1, 6));
    assert_eq!(table.last_stable_offset(newest.next_offset), newest.next_offset);

    // A table built in one walk (from the snapshot of the last roll) is the same.
    let fresh = open(dir.path());
    let fresh_view = fresh.current_view(newest).unwrap();
    let mut built = None;
    fresh.catch_up(&mut built, &fresh_view, &newest).unwrap();
    assert_eq!(built, Some(table));
}
