//! Integration tests of idempotent appends and transactional reads at the partition-log
//! level: the sequence check (duplicates answered with the original offsets, gaps, fencing,
//! new epochs), the producer state rebuilt on reopen from batch headers, from a snapshot
//! written at a segment roll, and past a damaged snapshot, and read isolation (open
//! transactions stop reads, committed ones become visible, aborted ones are skipped,
//! markers are never returned).
//!
//! Reopening drops the log first, which releases the control block, so the next `open` is
//! alone and starts with no producer state in memory.

use std::path::{Path, PathBuf};

use tidelog_core::format::{BatchMeta, Marker, Record, ATTR_CONTROL, ATTR_TRANSACTIONAL};
use tidelog_core::log::now_ms;
use tidelog_core::log::producers::SEQUENCE_WINDOW;
use tidelog_core::{Error, LogConfig, PartitionLog};

fn config(segment_bytes: usize) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: None,
        max_message_bytes: 1024,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> PartitionLog {
    open_with(dir, config(1 << 20))
}

fn open_with(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, "t", 0, config).expect("open partition log")
}

fn meta(producer_id: i64, producer_epoch: i16, base_sequence: i32, attributes: u8) -> BatchMeta {
    BatchMeta { base_offset: 0, attributes, producer_id, producer_epoch, base_sequence }
}

/// The outcome of an append: `(first offset, records, duplicate)`, or the error.
type Outcome = Result<(u64, u32, bool), Error>;

fn append_values(log: &PartitionLog, values: &[Vec<u8>], meta: BatchMeta) -> Outcome {
    let ts = now_ms();
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|v| Record { timestamp: ts, key: None, value: v, headers: &[], tombstone: false })
        .collect();
    log.append(&records, meta).map(|a| (a.base_offset, a.count, a.duplicate))
}

fn values(tag: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect()
}

/// Appends `n` records tagged `tag` for a producer, sequenced.
fn seq(log: &PartitionLog, pid: i64, epoch: i16, base_sequence: i32, tag: &str, n: usize) -> Outcome {
    append_values(log, &values(tag, n), meta(pid, epoch, base_sequence, 0))
}

/// Appends `n` transactional records tagged `tag`.
fn txn(log: &PartitionLog, pid: i64, epoch: i16, base_sequence: i32, tag: &str, n: usize) -> Outcome {
    append_values(log, &values(tag, n), meta(pid, epoch, base_sequence, ATTR_TRANSACTIONAL))
}

/// Appends a transaction marker for `pid` at `epoch`.
fn marker(log: &PartitionLog, pid: i64, epoch: i16, kind: Marker) -> Outcome {
    let value = kind.value().to_vec();
    append_values(log, &[value], meta(pid, epoch, -1, ATTR_TRANSACTIONAL | ATTR_CONTROL))
}

fn plain(log: &PartitionLog, tag: &str, n: usize) -> u64 {
    append_values(log, &values(tag, n), BatchMeta::plain(0)).expect("plain append").0
}

fn ok(outcome: Outcome) -> (u64, u32, bool) {
    outcome.expect("append accepted")
}

fn assert_out_of_order(outcome: Outcome, what: &str) {
    match outcome {
        Err(Error::OutOfOrderSequence(msg)) => assert!(!msg.is_empty(), "{what}: empty message"),
        other => panic!("{what}: expected OutOfOrderSequence, got {other:?}"),
    }
}

fn assert_fenced(outcome: Outcome, what: &str) {
    match outcome {
        Err(Error::ProducerFenced(msg)) => assert!(!msg.is_empty(), "{what}: empty message"),
        other => panic!("{what}: expected ProducerFenced, got {other:?}"),
    }
}

/// Every record a reader gets from `from` on, as (offset, value), and where it stopped.
fn read_visible(log: &PartitionLog, from: u64) -> (Vec<(u64, Vec<u8>)>, u64) {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        // Small reads, so stopping and skipping happen at every position of a batch run.
        let read = log.read(offset, 2, 1 << 20).expect("read");
        for chunk in &read.chunks {
            for r in chunk.records() {
                out.push((r.offset, r.value.to_vec()));
            }
        }
        assert!(read.next_offset >= offset, "reads never move back");
        if read.next_offset == offset {
            return (out, offset);
        }
        offset = read.next_offset;
    }
}

fn offsets_of(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
    records.iter().map(|(o, _)| *o).collect()
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .collect();
    found.sort();
    found
}

#[test]
fn duplicate_returns_original_offsets_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    plain(&log, "before", 2);
    assert_eq!(ok(seq(&log, 7, 0, 0, "a", 3)), (2, 3, false));
    assert_eq!(ok(seq(&log, 7, 0, 3, "b", 2)), (5, 2, false));
    let (end, size) = (log.end_offset().expect("end"), log.size_bytes().expect("size"));
    // The same sequence ranges again (even with other payloads): the originals come back.
    assert_eq!(ok(seq(&log, 7, 0, 0, "a-retry", 3)), (2, 3, true));
    assert_eq!(ok(seq(&log, 7, 0, 3, "b-retry", 2)), (5, 2, true));
    assert_eq!(log.end_offset().expect("end"), end, "a duplicate writes nothing");
    assert_eq!(log.size_bytes().expect("size"), size, "a duplicate writes nothing");
    let (read, _) = read_visible(&log, 0);
    let got: Vec<Vec<u8>> = read.into_iter().map(|(_, v)| v).collect();
    let mut expected = values("before", 2);
    expected.extend(values("a", 3));
    expected.extend(values("b", 2));
    assert_eq!(got, expected);
    // The sequence goes on after the duplicates.
    assert_eq!(ok(seq(&log, 7, 0, 5, "c", 1)), (7, 1, false));
    // Another producer has its own sequence space in the same partition.
    assert_eq!(ok(seq(&log, 8, 0, 0, "d", 1)), (8, 1, false));
    assert_eq!(ok(seq(&log, 8, 0, 0, "d", 1)), (8, 1, true));
}

#[test]
fn gaps_and_partial_overlaps_are_out_of_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    ok(seq(&log, 1, 0, 0, "a", 3));
    ok(seq(&log, 1, 0, 3, "b", 3));
    let end = log.end_offset().expect("end");
    assert_out_of_order(seq(&log, 1, 0, 7, "gap", 1), "gap of one");
    assert_out_of_order(seq(&log, 1, 0, 1000, "gap", 1), "big gap");
    assert_out_of_order(seq(&log, 1, 0, 1, "overlap", 2), "inside a batch");
    assert_out_of_order(seq(&log, 1, 0, 0, "overlap", 4), "longer than the original");
    assert_out_of_order(seq(&log, 1, 0, 3, "overlap", 2), "shorter than the original");
    assert_out_of_order(seq(&log, 1, 0, 5, "overlap", 2), "straddles the end");
    assert_eq!(log.end_offset().expect("end"), end, "refused batches write nothing");
    match seq(&log, 1, 0, 9, "gap", 1) {
        Err(Error::OutOfOrderSequence(msg)) => {
            assert!(msg.contains('6') && msg.contains('9'), "names expected and got: {msg}");
        }
        other => panic!("expected OutOfOrderSequence, got {other:?}"),
    }
    assert_eq!(ok(seq(&log, 1, 0, 6, "c", 1)), (end, 1, false), "the right sequence still goes in");
}

#[test]
fn only_the_last_five_batches_are_recognised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    let window = SEQUENCE_WINDOW as i32;
    assert_eq!(window, 5);
    for i in 0..8 {
        assert_eq!(ok(seq(&log, 3, 0, i * 2, &format!("b{i}"), 2)), (i as u64 * 2, 2, false));
    }
    for i in 3..8 {
        assert_eq!(ok(seq(&log, 3, 0, i * 2, "retry", 2)), (i as u64 * 2, 2, true), "batch {i}");
    }
    for i in 0..3 {
        assert_out_of_order(seq(&log, 3, 0, i * 2, "retry", 2), "a batch out of the window");
    }
    assert_eq!(log.end_offset().expect("end"), 16);
}

#[test]
fn older_epochs_are_fenced_and_new_epochs_start_at_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    ok(seq(&log, 4, 2, 0, "e2", 2));
    assert_fenced(seq(&log, 4, 1, 2, "e1", 1), "older epoch continuing the sequence");
    assert_fenced(seq(&log, 4, 0, 0, "e0", 1), "older epoch from zero");
    assert_fenced(marker(&log, 4, 1, Marker::Abort), "a marker of an older epoch");
    assert_out_of_order(seq(&log, 4, 3, 2, "e3", 1), "a new epoch continuing the old sequence");
    assert_out_of_order(seq(&log, 4, 3, 1, "e3", 1), "a new epoch not at zero");
    assert_eq!(ok(seq(&log, 4, 3, 0, "e3", 1)), (2, 1, false));
    // The new epoch's sequence space replaced the old one: the old batch is no duplicate.
    assert_fenced(seq(&log, 4, 2, 0, "e2", 2), "retry of the old epoch");
    assert_eq!(ok(seq(&log, 4, 3, 0, "e3", 1)), (2, 1, true));
    assert_eq!(ok(seq(&log, 4, 3, 1, "e3b", 1)), (3, 1, false));
    match seq(&log, 4, 1, 0, "x", 1) {
        Err(Error::ProducerFenced(msg)) => assert!(msg.contains('4'), "names the producer: {msg}"),
        other => panic!("expected ProducerFenced, got {other:?}"),
    }
    // Fencing is per producer id.
    assert_eq!(ok(seq(&log, 5, 0, 0, "other", 1)), (4, 1, false));
    assert_eq!(log.end_offset().expect("end"), 5);
}

/// Writes a history for three producers; returns the checks a rebuilt state must pass.
fn write_history(log: &PartitionLog, rounds: i32) {
    // Producer 1: a few batches at epoch 0, then epoch 1.
    for i in 0..3 {
        ok(seq(log, 1, 0, i * 2, "p1e0", 2));
    }
    ok(seq(log, 1, 1, 0, "p1e1", 1));
    // Producers 2 and 3 interleave for a while.
    for i in 0..rounds {
        ok(seq(log, 2, 0, i * 3, "p2", 3));
        ok(seq(log, 3, 5, i, "p3", 1));
        if i % 4 == 0 {
            plain(log, "plain", 1);
        }
    }
}

/// What a log written by `write_history(log, rounds)` must answer, however it was rebuilt.
fn check_history(log: &PartitionLog, rounds: i32) {
    let end = log.end_offset().expect("end");
    // Producer 1: fenced at epoch 0, its epoch-1 batch a duplicate.
    assert_fenced(seq(log, 1, 0, 6, "p1e0", 1), "producer 1's old epoch after reopen");
    let (p1_offset, _, dup) = ok(seq(log, 1, 1, 0, "p1e1", 1));
    assert!(dup && p1_offset < end, "producer 1's last batch is a duplicate after reopen");
    // Producer 2: its last five batches are duplicates, with their original offsets.
    let mut last_offsets = Vec::new();
    for i in (rounds - 5).max(0)..rounds {
        let (offset, count, dup) = ok(seq(log, 2, 0, i * 3, "p2", 3));
        assert!(dup && count == 3, "producer 2 batch {i} is a duplicate after reopen");
        last_offsets.push(offset);
    }
    assert!(last_offsets.windows(2).all(|w| w[0] < w[1]), "original offsets in order");
    if rounds > 5 {
        assert_out_of_order(seq(log, 2, 0, (rounds - 6) * 3, "p2", 3), "out of the window");
    }
    assert_out_of_order(seq(log, 2, 0, rounds * 3 + 1, "p2", 3), "a gap after reopen");
    assert_fenced(seq(log, 3, 4, rounds, "p3", 1), "producer 3's older epoch after reopen");
    assert_out_of_order(seq(log, 3, 6, 1, "p3", 1), "producer 3's new epoch not at zero");
    assert_eq!(log.end_offset().expect("end"), end, "nothing written by the checks");
    // And the sequences continue.
    assert_eq!(ok(seq(log, 2, 0, rounds * 3, "p2-next", 3)), (end, 3, false));
    assert_eq!(ok(seq(log, 3, 5, rounds, "p3-next", 1)), (end + 3, 1, false));
    assert_eq!(ok(seq(log, 1, 1, 1, "p1-next", 1)), (end + 4, 1, false));
}

/// Checks the duplicates' offsets against the values actually stored there.
fn check_duplicate_offsets_hold_the_originals(log: &PartitionLog, rounds: i32) {
    let (read, _) = read_visible(log, log.start_offset().expect("start"));
    for i in (rounds - 3).max(0)..rounds {
        let (offset, _, dup) = ok(seq(log, 2, 0, i * 3, "p2", 3));
        assert!(dup);
        let stored: Vec<&Vec<u8>> =
            read.iter().filter(|(o, _)| (offset..offset + 3).contains(o)).map(|(_, v)| v).collect();
        assert_eq!(stored, values("p2", 3).iter().collect::<Vec<_>>(), "batch {i} at {offset}");
    }
}

#[test]
fn state_is_rebuilt_on_reopen_without_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rounds = 12;
    {
        let log = open(dir.path());
        write_history(&log, rounds);
        assert_eq!(log.segment_count().expect("segments"), 1, "no roll, so no snapshot");
    }
    assert!(snapshots(dir.path()).is_empty());
    let log = open(dir.path());
    check_duplicate_offsets_hold_the_originals(&log, rounds);
    check_history(&log, rounds);
}

#[test]
fn state_is_rebuilt_on_reopen_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rounds = 150;
    {
        let log = open_with(dir.path(), config(4096));
        write_history(&log, rounds);
        assert!(log.segment_count().expect("segments") >= 4, "segments rolled");
    }
    let found = snapshots(dir.path());
    assert!(!found.is_empty(), "a roll wrote a snapshot");
    assert!(found.len() <= 2, "old snapshots are dropped: {found:?}");
    let log = open_with(dir.path(), config(4096));
    check_duplicate_offsets_hold_the_originals(&log, rounds);
    check_history(&log, rounds);
}

#[test]
fn state_is_rebuilt_from_headers_when_the_snapshots_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rounds = 150;
    {
        let log = open_with(dir.path(), config(4096));
        write_history(&log, rounds);
    }
    let found = snapshots(dir.path());
    assert!(!found.is_empty());
    for path in found {
        std::fs::remove_file(path).expect("delete snapshot");
    }
    let log = open_with(dir.path(), config(4096));
    check_history(&log, rounds);
}

#[test]
fn a_damaged_newest_snapshot_falls_back() {
    for damage in ["flip", "truncate", "empty", "garbage"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let rounds = 150;
        {
            let log = open_with(dir.path(), config(4096));
            write_history(&log, rounds);
        }
        let found = snapshots(dir.path());
        assert_eq!(found.len(), 2, "two snapshots kept: {found:?}");
        let newest = found.last().expect("a snapshot");
        let mut bytes = std::fs::read(newest).expect("read snapshot");
        match damage {
            "flip" => {
                let at = bytes.len() / 2;
                bytes[at] ^= 0x40;
            }
            "truncate" => bytes.truncate(bytes.len() - 5),
            "empty" => bytes.clear(),
            _ => bytes = vec![0xAB; 77],
        }
        std::fs::write(newest, &bytes).expect("damage snapshot");
        let log = open_with(dir.path(), config(4096));
        check_history(&log, rounds);
    }
    // Both snapshots damaged: the headers from the log start.
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open_with(dir.path(), config(4096));
        write_history(&log, 150);
    }
    for path in snapshots(dir.path()) {
        std::fs::write(&path, b"TLPSNAP1 not really").expect("damage snapshot");
    }
    let log = open_with(dir.path(), config(4096));
    check_history(&log, 150);
}

#[test]
fn a_snapshot_keeps_producers_whose_batches_retention_deleted() {
    // Producer 9 writes once, then plain traffic rolls segments and retention deletes the
    // segment holding its batch: only the snapshot still knows producer 9.
    let dir = tempfile::tempdir().expect("tempdir");
    let retention = LogConfig { retention_bytes: Some(3 * 4096), ..config(4096) };
    let original;
    {
        let log = open_with(dir.path(), retention.clone());
        original = ok(seq(&log, 9, 0, 0, "p9", 2));
        for i in 0..400 {
            ok(seq(&log, 2, 0, i, "p2", 1));
        }
        assert!(log.start_offset().expect("start") > original.0 + 1, "retention removed it");
    }
    let log = open_with(dir.path(), retention);
    assert_eq!(ok(seq(&log, 9, 0, 0, "p9", 2)), (original.0, 2, true), "remembered via snapshot");
    assert_out_of_order(seq(&log, 9, 0, 5, "p9", 1), "gap for a remembered producer");
    assert!(!ok(seq(&log, 9, 0, 2, "p9-next", 1)).2, "and it continues");
    assert!(ok(seq(&log, 2, 0, 399, "p2", 1)).2, "the newest batches too");
}

#[test]
fn transactional_batches_are_invisible_while_open_and_visible_after_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    assert_eq!(plain(&log, "p0", 1), 0);
    assert_eq!(ok(txn(&log, 1, 0, 0, "t", 2)), (1, 2, false));
    assert_eq!(plain(&log, "p1", 1), 3);
    assert_eq!(ok(txn(&log, 1, 0, 2, "t2", 1)), (4, 1, false));
    let (read, stopped) = read_visible(&log, 0);
    assert_eq!(offsets_of(&read), vec![0], "reads stop at the open transaction");
    assert_eq!(stopped, 1);
    let read = log.read(1, 100, 1 << 20).expect("read at the open transaction");
    assert_eq!((read.count, read.next_offset), (0, 1), "nothing stable from there");
    // The commit marker makes the whole transaction visible at once; markers are never
    // returned as records.
    assert_eq!(ok(marker(&log, 1, 0, Marker::Commit)), (5, 1, false));
    let (read, stopped) = read_visible(&log, 0);
    assert_eq!(offsets_of(&read), vec![0, 1, 2, 3, 4]);
    assert_eq!(stopped, 6, "the reader passed the marker");
    let mut expected = values("p0", 1);
    expected.extend(values("t", 2));
    expected.extend(values("p1", 1));
    expected.extend(values("t2", 1));
    assert_eq!(read.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), expected);
    let read = log.read(5, 100, 1 << 20).expect("read at the marker");
    assert_eq!((read.count, read.next_offset), (0, 6), "a marker alone: skipped, nothing returned");
    // The transaction is also a duplicate-checked sequence.
    assert_eq!(ok(txn(&log, 1, 0, 0, "t", 2)), (1, 2, true));
}

/// A read starting above the last stable offset serves nothing there, plain batches
/// included (Kafka's read_committed bound).
#[test]
fn a_plain_batch_after_an_open_transaction_is_not_served_past_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    ok(txn(&log, 1, 0, 0, "t", 1));
    assert_eq!(plain(&log, "after", 1), 1);
    assert!(read_visible(&log, 0).0.is_empty());
    // Even a reader that starts past the first open transaction gets nothing: the last
    // stable offset bounds every read committed fetch (as in Kafka).
    let read = log.read(1, 100, 1 << 20).expect("read past the open transaction");
    assert_eq!(read.count, 0, "a plain batch above the last stable offset was served");
}

#[test]
fn aborted_transactions_are_skipped_and_markers_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    ok(txn(&log, 1, 0, 0, "aborted", 2)); // 0..2
    plain(&log, "p", 1); // 2
    ok(txn(&log, 1, 0, 2, "aborted2", 1)); // 3
    ok(marker(&log, 1, 0, Marker::Abort)); // 4
    plain(&log, "q", 1); // 5
    let (read, stopped) = read_visible(&log, 0);
    assert_eq!(offsets_of(&read), vec![2, 5]);
    assert_eq!(stopped, 6);
    for from in 0..6 {
        let (read, _) = read_visible(&log, from);
        assert!(read.iter().all(|(o, _)| *o == 2 || *o == 5), "from {from}: {read:?}");
    }
    // A later transaction of the same producer that commits is visible.
    ok(txn(&log, 1, 0, 3, "committed", 1)); // 6
    ok(marker(&log, 1, 0, Marker::Commit)); // 7
    assert_eq!(offsets_of(&read_visible(&log, 0).0), vec![2, 5, 6]);
}

#[test]
fn interleaved_transactions_of_two_producers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    ok(txn(&log, 1, 0, 0, "a", 1)); // 0
    ok(txn(&log, 2, 0, 0, "b", 1)); // 1
    ok(txn(&log, 1, 0, 1, "a", 1)); // 2
    ok(marker(&log, 2, 0, Marker::Commit)); // 3: b committed, a still open
    assert!(read_visible(&log, 0).0.is_empty(), "a's open transaction holds back b's");
    ok(txn(&log, 2, 0, 1, "b2", 1)); // 4: b's next transaction
    ok(marker(&log, 1, 0, Marker::Abort)); // 5: a aborted
    let (read, stopped) = read_visible(&log, 0);
    assert_eq!(offsets_of(&read), vec![1], "b's commit visible, a's abort skipped, b's open stops");
    assert_eq!(stopped, 4);
    ok(marker(&log, 2, 0, Marker::Commit)); // 6
    let (read, stopped) = read_visible(&log, 0);
    assert_eq!(offsets_of(&read), vec![1, 4]);
    assert_eq!(stopped, 7);
}

#[test]
fn isolation_survives_reopen_with_and_without_snapshots() {
    for keep_snapshots in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected;
        {
            let log = open_with(dir.path(), config(4096));
            let mut visible = Vec::new();
            let mut sequence = 0;
            for i in 0..60 {
                let n = 1 + (i % 3) as usize;
                let (first, _, _) = ok(txn(&log, 1, 0, sequence, &format!("t{i}"), n));
                sequence += n as i32;
                let p = plain(&log, &format!("p{i}"), 1);
                visible.push(p);
                let kind = if i % 2 == 0 { Marker::Commit } else { Marker::Abort };
                ok(marker(&log, 1, 0, kind));
                if kind == Marker::Commit {
                    visible.extend(first..first + n as u64);
                }
            }
            // One transaction left open at the end.
            let (open_at, _, _) = ok(txn(&log, 1, 0, sequence, "open", 2));
            plain(&log, "after-open", 1);
            visible.sort_unstable();
            expected = (visible, open_at);
            assert!(log.segment_count().expect("segments") >= 3, "segments rolled");
        }
        if !keep_snapshots {
            for path in snapshots(dir.path()) {
                std::fs::remove_file(path).expect("delete snapshot");
            }
        } else {
            assert!(!snapshots(dir.path()).is_empty());
        }
        let log = open_with(dir.path(), config(4096));
        let (read, stopped) = read_visible(&log, 0);
        assert_eq!(offsets_of(&read), expected.0, "snapshots kept: {keep_snapshots}");
        assert_eq!(stopped, expected.1);
        // Ending the open transaction after the reopen releases the rest.
        ok(marker(&log, 1, 0, Marker::Abort));
        let (read, _) = read_visible(&log, 0);
        assert_eq!(read.len(), expected.0.len() + 1, "only the plain message after it added");
    }
}

/// Two handles of one partition (as two processes have): each keeps its own producer
/// table, which must still cover the batches the other one wrote.
///
/// A writer's catch-up must read up to the published head, not only as far as its own
/// handle had observed the data; otherwise applying its own batch would move `applied` past
/// the other handle's batches for good.
#[test]
fn a_handle_catches_up_on_the_batches_of_another_before_checking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path());
    let b = open(dir.path());
    assert_eq!(ok(seq(&a, 1, 0, 0, "a", 1)), (0, 1, false));
    assert_eq!(ok(seq(&b, 2, 0, 0, "b", 2)), (1, 2, false));
    assert_eq!(ok(seq(&a, 1, 0, 1, "a", 1)), (3, 1, false));
    // Producer 2 retries its batch through the other handle: still a duplicate.
    assert_eq!(ok(seq(&a, 2, 0, 0, "b", 2)), (1, 2, true), "a retry written twice");
    assert_eq!(ok(seq(&b, 1, 0, 1, "a", 1)), (3, 1, true));
    assert_out_of_order(seq(&a, 2, 0, 5, "gap", 1), "a gap seen through the other handle");
    assert_eq!(a.end_offset().expect("end"), 4);
}

/// A writer's catch-up must read up to the published head, not only as far as its own
/// handle had observed the data; otherwise applying its own batch would move `applied` past
/// the other handle's batches for good.
#[test]
fn a_writing_handle_sees_the_other_handles_transaction_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open(dir.path());
    let b = open(dir.path());
    ok(seq(&a, 100, 0, 0, "a", 1)); // 0: a's table exists from here on
    ok(txn(&b, 7, 0, 0, "aborted", 1)); // 1
    ok(marker(&b, 7, 0, Marker::Abort)); // 2
    ok(txn(&b, 7, 0, 1, "committed", 1)); // 3
    assert_eq!(offsets_of(&read_visible(&a, 0).0), vec![0], "a reader stops at the open one");
    ok(marker(&b, 7, 0, Marker::Commit)); // 4
    ok(seq(&a, 100, 0, 1, "a", 1)); // 5: a catches up on the markers before checking
    for (name, log) in [("writer", &a), ("other", &b)] {
        let (read, stopped) = read_visible(log, 0);
        assert_eq!(offsets_of(&read), vec![0, 3, 5], "{name}: aborted skipped, committed served");
        assert_eq!(stopped, 6, "{name}");
    }
}

/// A writer's catch-up must read up to the published head, not only as far as its own
/// handle had observed the data; otherwise applying its own batch would move `applied` past
/// the other handle's batches for good.
#[test]
fn snapshots_written_by_one_of_two_handles_are_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected = Vec::new();
    {
        let a = open_with(dir.path(), config(4096));
        let b = open_with(dir.path(), config(4096));
        let mut seq_a = 0;
        let mut seq_b = 0;
        for i in 0..60 {
            // b: a transaction, committed or aborted; a: idempotent batches (and the rolls).
            let (first, _, _) = ok(txn(&b, 7, 0, seq_b, &format!("t{i}"), 2));
            seq_b += 2;
            let (own, _, _) = ok(seq(&a, 1, 0, seq_a, &format!("a{i}"), 1));
            seq_a += 1;
            expected.push(own);
            if i % 2 == 0 {
                ok(marker(&b, 7, 0, Marker::Commit));
                expected.extend([first, first + 1]);
            } else {
                ok(marker(&b, 7, 0, Marker::Abort));
            }
            let (own, _, _) = ok(seq(&a, 1, 0, seq_a, &format!("a{i}'"), 1));
            seq_a += 1;
            expected.push(own);
        }
        assert!(!snapshots(dir.path()).is_empty(), "rolls wrote snapshots");
        expected.sort_unstable();
        assert_eq!(offsets_of(&read_visible(&b, 0).0), expected, "the other handle");
    }
    let log = open_with(dir.path(), config(4096));
    assert_eq!(offsets_of(&read_visible(&log, 0).0), expected, "after reopen, from the snapshot");
    // Producer 7's last batch is still recognised.
    assert!(ok(txn(&log, 7, 0, 118, "t59", 2)).2, "producer 7's state in the snapshot");
}

#[test]
fn recovery_flags_a_first_transactional_batch_the_head_never_published() {
    use tidelog_core::log::CONTROL_FILE;
    use tidelog_core::shm::{ControlBlock, Opened};
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    assert_eq!(plain(&log, "p0", 1), 0);
    let (Opened::Alone(control, _) | Opened::Shared(control)) =
        ControlBlock::open(&dir.path().join(CONTROL_FILE)).expect("control block");
    control.end_open();
    let before = control.lock().expect("lock").head();
    assert_eq!(before.transactional, 0);
    assert_eq!(ok(txn(&log, 1, 0, 0, "t", 2)), (1, 2, false));
    // As a writer killed after writing the partition's first transactional batch, before
    // publishing it, leaves the head: the batch is past it and the flag still unset.
    control.lock().expect("lock").publish(before);
    drop(log);
    drop(control);
    let log = open(dir.path());
    assert_eq!(log.end_offset().unwrap(), 3, "recovery keeps the whole batch");
    let (read, stopped) = read_visible(&log, 0);
    assert_eq!(offsets_of(&read), vec![0], "the open transaction is not read as committed");
    assert_eq!(stopped, 1);
}
