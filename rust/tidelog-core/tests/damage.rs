//! Damage versus torn tails (API.md, "Damage and recovery (version 2)"): a damaged batch
//! followed by valid batches is never truncated silently. Opening refuses (naming the file
//! and position) unless the log is opened with `OnCorruption::Quarantine`, which moves the
//! damaged part and everything after it aside intact and records what was lost. A torn tail
//! (nothing valid after the damage) is still truncated, and recorded.
//!
//! Also: a failed repair after a writer died must leave the append lock usable (no spin, no
//! panic), and `inspect` finds nothing wrong with an empty, untrimmed active segment.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::log::lost::{read_events, LossKind, QUARANTINE_DIR};
use tidelog_core::log::CONTROL_FILE;
use tidelog_core::segment::{file_name, FileKind};
use tidelog_core::shm::{ControlBlock, Opened};
use tidelog_core::{Error, LogConfig, OnCorruption, PartitionLog};

fn config(index_interval_bytes: usize) -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 16,
        segment_ms: None,
        max_message_bytes: 1024,
        index_interval_bytes,
        ..LogConfig::default()
    }
}

fn quarantining(mut config: LogConfig) -> LogConfig {
    config.on_corruption = OnCorruption::Quarantine;
    config
}

fn value_of(i: u64) -> Vec<u8> {
    format!("message {i:05} ").repeat(1 + (i as usize % 3)).into_bytes()
}

/// Appends `n` one-record batches; returns (position, base offset, end position) of each.
fn fill(dir: &Path, config: LogConfig, n: u64) -> Vec<(usize, u64, usize)> {
    let log = PartitionLog::open(dir, "t", 0, config).expect("open");
    for i in 0..n {
        let value = value_of(i);
        let r =
            Record { timestamp: 1_000 + i as i64, key: None, value: &value, headers: &[], tombstone: false };
        log.append(&[r], BatchMeta::plain(0)).expect("append");
    }
    drop(log);
    batches(&data_path(dir))
}

fn data_path(dir: &Path) -> PathBuf {
    dir.join(file_name(0, FileKind::Data))
}

fn batches(path: &Path) -> Vec<(usize, u64, usize)> {
    let bytes = std::fs::read(path).expect("read");
    let (mut pos, mut out) = (0usize, Vec::new());
    while pos + 64 <= bytes.len() {
        let offset = u64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8"));
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().expect("4")) as usize + 12;
        if len < 64 || pos + len > bytes.len() {
            break;
        }
        out.push((pos, offset, pos + len));
        pos += len;
    }
    out
}

fn values(log: &PartitionLog, from: u64) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let read = log.read(offset, 1000, 1 << 20)?;
        if read.count == 0 {
            return Ok(out);
        }
        for chunk in &read.chunks {
            out.extend(chunk.records().map(|r| (r.offset, r.value.to_vec())));
        }
        offset = read.next_offset;
    }
}

/// Equal contents, ignoring zeros at the end (opening pre-allocates the active segment).
fn same_data(a: &[u8], b: &[u8]) -> bool {
    let trim = |x: &[u8]| x.len() - x.iter().rev().take_while(|&&b| b == 0).count();
    a[..trim(a)] == b[..trim(b)]
}

fn flip(path: &Path, at: usize, bit: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn a_flipped_bit_followed_by_valid_batches_refuses_to_open_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = fill(dir.path(), config(1 << 20), 300);
    let path = data_path(dir.path());
    let (pos, offset, _) = batches[100];
    flip(&path, pos + 70, 3);
    let before = std::fs::read(&path).expect("read");
    for _ in 0..2 {
        match PartitionLog::open(dir.path(), "t", 0, config(1 << 20)) {
            Err(Error::Corrupt { path: p, position, offset: o, reason }) => {
                assert_eq!(p, path);
                assert_eq!((position, o), (pos as u64, offset));
                assert!(reason.contains("quarantine"), "{reason}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(log) => panic!("opened with end offset {} over damage", log.end_offset().unwrap()),
        }
        assert!(same_data(&std::fs::read(&path).expect("read"), &before), "a refused open changed the data");
    }
    assert!(read_events(dir.path()).expect("events").is_empty());
}

#[test]
fn quarantine_moves_the_damage_and_everything_after_it_aside_and_records_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = fill(dir.path(), config(1 << 20), 300);
    let path = data_path(dir.path());
    let (pos, offset, _) = batches[100];
    let end = batches.last().expect("batches").2;
    flip(&path, pos + 70, 3);
    let original = std::fs::read(&path).expect("read")[pos..end].to_vec();
    {
        let log = PartitionLog::open(dir.path(), "t", 0, quarantining(config(1 << 20))).expect("open");
        assert_eq!(log.end_offset().unwrap(), offset);
        let got = values(&log, 0).expect("read");
        assert_eq!(got.len(), 100);
        assert!(got.iter().all(|(o, v)| *v == value_of(*o)));
        // New appends continue from the damage; the event tells consumers those offsets
        // were handed out before.
        let r = Record { timestamp: 5, key: None, value: b"new", headers: &[], tombstone: false };
        assert_eq!(log.append(&[r], BatchMeta::plain(0)).unwrap().base_offset, offset);
    }
    let events = read_events(dir.path()).expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.kind, LossKind::Quarantined);
    assert_eq!((e.first_offset, e.end_offset), (offset, 300));
    assert_eq!((e.position, e.bytes), (pos as u64, (end - pos) as u64));
    assert_eq!(e.segment_base, 0);
    let moved = dir.path().join(QUARANTINE_DIR).join(&e.file);
    assert!(std::fs::read(&moved).expect("quarantine file") == original, "quarantined bytes differ");
    // A clean reopen finds nothing more to do.
    drop(PartitionLog::open(dir.path(), "t", 0, config(1 << 20)).expect("reopen"));
    assert_eq!(read_events(dir.path()).expect("events").len(), 1);
}

#[test]
fn a_torn_last_batch_is_truncated_and_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = fill(dir.path(), config(256), 50);
    let path = data_path(dir.path());
    let &(pos, offset, end) = batches.last().expect("batches");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[end - 5..end].fill(0);
    std::fs::write(&path, bytes).expect("write");
    let log = PartitionLog::open(dir.path(), "t", 0, config(256)).expect("open");
    assert_eq!(log.end_offset().unwrap(), offset);
    let events = read_events(dir.path()).expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, LossKind::TornTail);
    assert_eq!((events[0].first_offset, events[0].end_offset), (offset, offset + 1));
    assert_eq!(events[0].position, pos as u64);
}

/// Flips one bit in every byte of a small log in turn. Opening must either refuse (and
/// change nothing), or keep every valid batch readable at its offset; it may drop only a
/// damaged LAST batch (a torn tail). With quarantine, every valid batch is either still in
/// the log or in the quarantine file, byte for byte.
fn every_flip(index_interval_bytes: usize, n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(index_interval_bytes);
    let batches = fill(dir.path(), cfg.clone(), n);
    let path = data_path(dir.path());
    let pristine = std::fs::read(&path).expect("read");
    let end = batches.last().expect("batches").2;
    let scratch = tempfile::tempdir().expect("tempdir");
    for at in 0..end {
        let copy = scratch.path().join(format!("{at}"));
        std::fs::create_dir(&copy).expect("mkdir");
        for name in
            [file_name(0, FileKind::Data), file_name(0, FileKind::Index), file_name(0, FileKind::TimeIndex)]
        {
            std::fs::copy(dir.path().join(&name), copy.join(&name)).expect("copy");
        }
        let copy_data = data_path(&copy);
        flip(&copy_data, at, (at % 8) as u8);
        let damaged = batches.iter().position(|&(p, _, e)| p <= at && at < e).expect("inside a batch");
        let last = damaged == batches.len() - 1;
        let damaged_bytes = std::fs::read(&copy_data).expect("read");
        match PartitionLog::open(&copy, "t", 0, cfg.clone()) {
            Err(Error::Corrupt { .. }) => {
                assert!(!last, "byte {at}: a damaged last batch is a torn tail, not an error");
                assert!(
                    same_data(&std::fs::read(&copy_data).unwrap(), &damaged_bytes),
                    "byte {at}: refused open wrote"
                );
            }
            Err(e) => panic!("byte {at}: {e}"),
            Ok(log) => {
                let end_offset = log.end_offset().unwrap();
                if last {
                    assert!(end_offset >= batches[damaged].1, "byte {at}");
                } else {
                    assert_eq!(end_offset, n, "byte {at}: valid batches after the damage were lost");
                }
                for (i, &(_, offset, _)) in batches.iter().enumerate() {
                    if i == damaged || offset >= end_offset {
                        continue;
                    }
                    let read = log.read(offset, 1, 1 << 20).expect("valid batch readable");
                    let got = read.chunks[0].records().next().expect("one record").value.to_vec();
                    assert_eq!(got, value_of(offset), "byte {at}: offset {offset}");
                }
            }
        }
        // Quarantine: nothing valid vanishes.
        let log = PartitionLog::open(&copy, "t", 0, quarantining(cfg.clone())).expect("quarantine open");
        let end_offset = log.end_offset().unwrap();
        drop(log);
        let moved: Vec<u8> = read_events(&copy)
            .expect("events")
            .iter()
            .filter(|e| e.kind == LossKind::Quarantined)
            .map(|e| std::fs::read(copy.join(QUARANTINE_DIR).join(&e.file)).expect("quarantine file"))
            .next()
            .unwrap_or_default();
        for &(p, offset, e) in batches.iter().filter(|&&(p, _, e)| !(p <= at && at < e)) {
            if offset < end_offset {
                continue;
            }
            // Not in the log: must be in the quarantine file, intact.
            let start = moved.len().checked_sub(end - p).unwrap_or_else(|| {
                panic!("byte {at}: batch at offset {offset} neither in the log nor quarantined")
            });
            assert!(
                moved[start..start + (e - p)] == pristine[p..e],
                "byte {at}: offset {offset} quarantined damaged"
            );
        }
        std::fs::remove_dir_all(&copy).expect("clean");
    }
}

#[test]
fn every_single_bit_flip_refuses_or_loses_nothing_valid() {
    // One index entry: recovery walks the whole segment.
    every_flip(1 << 20, 8);
}

#[test]
fn every_single_bit_flip_with_a_dense_index() {
    every_flip(128, 8);
}

#[test]
fn an_empty_untrimmed_active_segment_has_no_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), "t", 0, config(256)).expect("open");
    // A crash: nothing trims the pre-allocated files.
    std::mem::forget(log);
    let report = tidelog_core::inspect::inspect_segment(&data_path(dir.path())).expect("inspect");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Makes the seqlock odd, as a writer that died in the middle of publishing leaves it.
fn tear_head(dir: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(dir.join(CONTROL_FILE)).expect("control");
    let mut word = [0u8; 8];
    f.read_exact_at(&mut word, 128).expect("read seq");
    let seq = u64::from_le_bytes(word) | 1;
    f.write_all_at(&seq.to_le_bytes(), 128).expect("write seq");
}

/// Takes the append lock from a thread that then exits holding it (a dead owner).
fn die_holding_the_lock(dir: &Path) {
    let path = dir.join(CONTROL_FILE);
    std::thread::spawn(move || {
        let block = match ControlBlock::open(&path).expect("open control") {
            Opened::Alone(b, _) | Opened::Shared(b) => b,
        };
        // Its open ends (a process that dies drops its open lock with its descriptors;
        // here the handle is forgotten, so the open lock is given up by hand).
        block.end_open();
        std::mem::forget(block.lock().expect("lock"));
        std::mem::forget(block);
    })
    .join()
    .expect("thread");
}

#[test]
fn a_failed_repair_leaves_the_lock_usable_and_the_next_locker_repairs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(PartitionLog::open(dir.path(), "t", 0, config(256)).expect("open"));
    for i in 0..20u64 {
        let value = value_of(i);
        let r = Record { timestamp: 1, key: None, value: &value, headers: &[], tombstone: false };
        log.append(&[r], BatchMeta::plain(0)).unwrap();
    }
    die_holding_the_lock(dir.path());
    tear_head(dir.path());
    // The repair cannot open the active segment's data file.
    let path = data_path(dir.path());
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let aside = elsewhere.path().join("aside");
    std::fs::rename(&path, &aside).expect("move aside");
    std::fs::create_dir(&path).expect("block the name");
    for attempt in 0..2 {
        let (tx, rx) = mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l.end_offset())));
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(Err(_))) => {}
            Ok(Ok(Ok(end))) => panic!("attempt {attempt}: repaired without its data file (end {end})"),
            Ok(Err(_)) => panic!("attempt {attempt}: panicked"),
            Err(_) => panic!("attempt {attempt}: hangs"),
        }
    }
    std::fs::remove_dir(&path).expect("unblock");
    std::fs::rename(&aside, &path).expect("move back");
    assert_eq!(log.end_offset().expect("repaired by the next locker"), 20);
    let r = Record { timestamp: 1, key: None, value: b"after", headers: &[], tombstone: false };
    assert_eq!(log.append(&[r], BatchMeta::plain(0)).unwrap().base_offset, 20);
}

#[test]
fn a_published_batch_that_reads_back_as_zeros_is_recorded() {
    // As a power loss can leave it: the head (control block) says 50 messages, the data
    // holds 49 and then zeros. Nothing to move, but the removal is remembered.
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = fill(dir.path(), config(256), 50);
    let path = data_path(dir.path());
    let &(pos, offset, end) = batches.last().expect("batches");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[pos..end].fill(0);
    std::fs::write(&path, bytes).expect("write");
    let log = PartitionLog::open(dir.path(), "t", 0, config(256)).expect("open");
    assert_eq!(log.end_offset().unwrap(), offset);
    let events = read_events(dir.path()).expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].kind, events[0].bytes), (LossKind::TornTail, 0));
    assert_eq!((events[0].first_offset, events[0].end_offset), (offset, 50));
}

#[test]
fn damage_in_a_sealed_segment_is_never_truncated_and_reads_name_it() {
    // Open does not scan sealed segments (they were synced when sealed): the damage stays
    // where it is, reads of it fail naming the file, every other batch stays readable.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig { segment_bytes: 4096, ..config(256) };
    {
        let log = PartitionLog::open(dir.path(), "t", 0, cfg.clone()).expect("open");
        for i in 0..200u64 {
            let value = value_of(i);
            let r = Record { timestamp: 1, key: None, value: &value, headers: &[], tombstone: false };
            log.append(&[r], BatchMeta::plain(0)).unwrap();
        }
        assert!(log.segment_count().unwrap() > 2);
    }
    let sealed = data_path(dir.path());
    let (pos, offset, _) = batches(&sealed)[10];
    flip(&sealed, pos + 70, 1);
    let log = PartitionLog::open(dir.path(), "t", 0, cfg).expect("open");
    assert_eq!(log.end_offset().unwrap(), 200);
    match log.read(offset, 1, 1 << 20) {
        Err(Error::Corrupt { path, position, .. }) => assert_eq!((path, position), (sealed, pos as u64)),
        other => panic!("expected a corruption error, got {:?}", other.map(|r| r.count)),
    }
    let after = values(&log, offset + 1).expect("later batches readable");
    assert_eq!(after.len() as u64, 200 - offset - 1);
    assert!(read_events(dir.path()).expect("events").is_empty());
}

#[test]
fn valid_batches_after_a_long_run_of_zeros_are_still_found() {
    // A batch whose value is 200 KiB of zeros, its length field damaged: the valid batches
    // after the zeros must still be seen, so the open refuses instead of truncating.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig { segment_bytes: 1 << 20, max_message_bytes: 512 << 10, ..config(1 << 20) };
    {
        let log = PartitionLog::open(dir.path(), "t", 0, cfg.clone()).expect("open");
        let zeros = vec![0u8; 200 << 10];
        for i in 0..11u64 {
            let value = if i == 5 { zeros.clone() } else { value_of(i) };
            let r = Record { timestamp: 1, key: None, value: &value, headers: &[], tombstone: false };
            log.append(&[r], BatchMeta::plain(0)).unwrap();
        }
    }
    let path = data_path(dir.path());
    let (pos, offset, _) = batches(&path)[5];
    flip(&path, pos + 10, 4); // the batch length
    match PartitionLog::open(dir.path(), "t", 0, cfg.clone()) {
        Err(Error::Corrupt { position, offset: o, .. }) => assert_eq!((position, o), (pos as u64, offset)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(log) => panic!("opened with end offset {}", log.end_offset().unwrap()),
    }
    let log = PartitionLog::open(dir.path(), "t", 0, quarantining(cfg)).expect("quarantine");
    assert_eq!(log.end_offset().unwrap(), 5);
    let events = read_events(dir.path()).expect("events");
    assert_eq!((events[0].first_offset, events[0].end_offset), (5, 11));
}

#[test]
fn a_damaged_tail_found_while_another_handle_is_open_is_cut_for_both() {
    // Item 8a: a handle still open (a Topic referenced past close) keeps the control block
    // shared; the next open must still check the tail against the data, and the cut must
    // hold for the older handle too (appends continue at the new end, not the old one).
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig { segment_bytes: 1 << 16, ..config(256) };
    let old = PartitionLog::open(dir.path(), "t", 0, cfg.clone()).expect("open");
    for i in 0..10u64 {
        let value = value_of(i);
        let r = Record { timestamp: 1, key: None, value: &value, headers: &[], tombstone: false };
        old.try_append(&[r], BatchMeta::plain(0)).unwrap();
    }
    let path = data_path(dir.path());
    let all = batches(&path);
    let &(pos, offset, end) = all.last().expect("batches");
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open data");
    f.write_all_at(&vec![0u8; end - pos - 20], (pos + 20) as u64).expect("zero the last record");
    let new = PartitionLog::open(dir.path(), "t", 0, cfg).expect("second open");
    assert_eq!(new.end_offset().unwrap(), offset);
    assert_eq!(values(&new, 0).expect("readable").len() as u64, offset);
    let r = Record { timestamp: 1, key: None, value: b"after", headers: &[], tombstone: false };
    assert_eq!(old.try_append(&[r], BatchMeta::plain(0)).unwrap().unwrap().base_offset, offset);
    assert_eq!(new.try_append(&[r], BatchMeta::plain(0)).unwrap().unwrap().base_offset, offset + 1);
    for log in [&old, &new] {
        let got = values(log, 0).expect("readable");
        assert_eq!(got.len() as u64, offset + 2);
        assert_eq!(got[offset as usize].1, b"after");
    }
    assert_eq!(read_events(dir.path()).expect("events").len(), 1);
}

#[test]
fn damage_in_binary_values_full_of_zeros_is_still_told_from_a_torn_tail() {
    // Values of arbitrary bytes: zero bytes in them, and stretches of zeros longer than the
    // search's run separator, must not hide the valid batches after a damaged one.
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), "t", 0, config(1 << 20)).expect("open");
    // 120 batches of ~370 bytes: all in the active segment (64 KiB).
    for i in 0..120u64 {
        let mut value: Vec<u8> = (0..300u64).map(|j| ((i * 31 + j * 7) % 5 * 60) as u8).collect();
        value[100..140].fill(0);
        let r =
            Record { timestamp: 1_000 + i as i64, key: None, value: &value, headers: &[], tombstone: false };
        log.append(&[r], BatchMeta::plain(0)).expect("append");
    }
    drop(log);
    let path = data_path(dir.path());
    let (pos, offset, _) = batches(&path)[80];
    flip(&path, pos + 90, 1);
    match PartitionLog::open(dir.path(), "t", 0, config(1 << 20)) {
        Err(Error::Corrupt { position, offset: o, .. }) => assert_eq!((position, o), (pos as u64, offset)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(log) => panic!("opened with end offset {} over damage", log.end_offset().unwrap()),
    }
}
