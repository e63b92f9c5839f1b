//! Recovery after the machine restarted: a power loss keeps some unsynced pages and loses
//! others, in any order, so the index and the batches past the last sync prove nothing
//! about the bytes before them. Restarts are simulated by clearing the boot the control
//! block was last recovered in (bytes 520..536, see docs/FORMAT.md).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::lost::{read_events, LossKind, QUARANTINE_DIR};
use super::{now_ms, FsyncPolicy, LogConfig, PartitionLog, CONTROL_FILE};
use crate::format::{BatchMeta, Record};
use crate::segment::{file_name, FileKind};

fn open(dir: &Path, fsync: FsyncPolicy) -> crate::Result<PartitionLog> {
    let config = LogConfig {
        segment_ms: None,
        index_interval_bytes: 256,
        segment_bytes: 4 << 20,
        fsync,
        ..LogConfig::default()
    };
    PartitionLog::open(dir, "t", 0, config)
}

/// Appends `n` one-record batches of 200 bytes; returns the byte position of each.
fn append(log: &PartitionLog, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let at = log.head().unwrap().committed_pos;
            let value = [b'a' + (i % 26) as u8; 200];
            let record =
                Record { timestamp: now_ms(), key: None, value: &value, headers: &[], tombstone: false };
            log.append(&[record], BatchMeta::plain(0)).unwrap();
            at
        })
        .collect()
}

/// What a reboot does to the control block as far as recovery can tell: another boot.
fn restart(dir: &Path) {
    let control = OpenOptions::new().write(true).open(dir.join(CONTROL_FILE)).unwrap();
    control.write_all_at(&[0xab; 16], 520).unwrap();
}

/// A page of the first segment's data that never reached the disk reads as zeros.
fn lose_bytes(dir: &Path, at: u64, len: usize) {
    lose_bytes_of(dir, 0, at, len);
}

/// The same in the segment with base offset `base`.
fn lose_bytes_of(dir: &Path, base: u64, at: u64, len: usize) {
    let data = OpenOptions::new().write(true).open(dir.join(file_name(base, FileKind::Data))).unwrap();
    data.write_all_at(&vec![0; len], at).unwrap();
}

/// Three segments of 10 batches each (bases 0, 10, 20, the last active), with a sync after
/// the first `synced` batches; returns each batch's byte position in its segment.
fn three_segments(dir: &Path, fsync: FsyncPolicy, synced: usize) -> Vec<u64> {
    let log = open(dir, fsync).unwrap();
    let mut positions = Vec::new();
    for segment in 0..3 {
        for i in 0..10 {
            positions.extend(append(&log, 1));
            if segment * 10 + i + 1 == synced {
                log.sync().unwrap();
            }
        }
        if segment < 2 {
            assert!(log.seal_active().unwrap());
        }
    }
    log.close().unwrap();
    positions
}

/// Makes the next sync of `path` fail, which shows that something synced it.
fn fail_next_sync_of(path: &Path) {
    crate::fs::inject(crate::fs::Fault {
        op: crate::fs::Op::Sync,
        path_contains: path.to_string_lossy().into_owned(),
        errno: libc::EIO,
        skip: 0,
        times: Some(1),
        short: false,
        panic: false,
    });
}

/// Every offset read from the start to the end (a read stops at the end of a segment).
fn offsets(log: &PartitionLog) -> crate::Result<Vec<u64>> {
    let mut all = Vec::new();
    let end = log.end_offset()?;
    while (all.len() as u64) < end {
        let read = log.read(all.len() as u64, usize::MAX, usize::MAX)?;
        all.extend(read.chunks.iter().flat_map(|c| c.records().map(|r| r.offset).collect::<Vec<_>>()));
    }
    Ok(all)
}

#[test]
fn after_a_restart_unsynced_damage_is_cut_even_with_indexed_batches_after_it() {
    // Two shapes of loss past the last sync, both with later pages (and the index entries
    // pointing into them) on disk: the middle of batch 20 (its header survived, so the
    // index chain runs past it), and a whole page (the chain stops at its first header).
    type Damage = fn(&[u64]) -> (u64, usize);
    let shapes: [(&str, Damage); 2] =
        [("a batch's values", |p| (p[20] + 100, 50)), ("a page", |p| ((p[20] / 4096 + 1) * 4096, 4096))];
    for (shape, damage) in shapes {
        let dir = tempfile::tempdir().unwrap();
        let positions = {
            let log = open(dir.path(), FsyncPolicy::Never).unwrap();
            let mut positions = append(&log, 10);
            log.sync().unwrap();
            positions.extend(append(&log, 50));
            log.close().unwrap();
            positions
        };
        let (at, len) = damage(&positions);
        lose_bytes(dir.path(), at, len);
        restart(dir.path());
        // The first batch the lost bytes touch.
        let first = positions.iter().rposition(|&p| p <= at).unwrap() as u64;
        assert!((20..60).contains(&first), "{shape}: {first}");

        // Before, a restart was not told from a process crash: with the header intact the
        // walk started at the last index entry and kept the damage inside the log (end 60,
        // reads from 0 raising at it); with a header lost, opening refused.
        let log = open(dir.path(), FsyncPolicy::Never).unwrap_or_else(|e| panic!("{shape}: {e:?}"));
        assert_eq!(log.end_offset().unwrap(), first, "{shape}");
        assert_eq!(offsets(&log).unwrap(), (0..first).collect::<Vec<_>>(), "{shape}");
        let events = read_events(dir.path()).unwrap();
        assert_eq!(events.len(), 1, "{shape}: {events:?}");
        assert_eq!(events[0].kind, LossKind::Unsynced, "{shape}");
        assert_eq!((events[0].first_offset, events[0].end_offset), (first, 60), "{shape}");
        let copies = std::fs::read_dir(dir.path().join(QUARANTINE_DIR)).unwrap().count();
        assert_eq!(copies, 1, "{shape}: the valid batches after the damage are kept in a copy");
        // Appends go on from the cut, and the next open in this boot trusts what it found.
        append(&log, 1);
        assert_eq!(offsets(&log).unwrap(), (0..=first).collect::<Vec<_>>(), "{shape}");
        log.close().unwrap();
        let again = open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(again.end_offset().unwrap(), first + 1, "{shape}");
        assert_eq!(read_events(dir.path()).unwrap().len(), 1, "{shape}");
    }
}

#[test]
fn after_a_restart_damage_below_the_synced_offset_is_refused_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let positions = {
        let log = open(dir.path(), FsyncPolicy::Never).unwrap();
        let positions = append(&log, 30);
        log.sync().unwrap();
        append(&log, 10);
        log.close().unwrap();
        positions
    };
    // Synced bytes changed on disk: not what a power loss does.
    lose_bytes(dir.path(), positions[25], (positions[26] - positions[25]) as usize);
    restart(dir.path());
    match open(dir.path(), FsyncPolicy::Never) {
        Err(crate::Error::Corrupt { offset, .. }) => assert_eq!(offset, 25),
        Err(other) => panic!("expected the damage refused, got {other:?}"),
        Ok(_) => panic!("expected the damage refused, the log opened"),
    }
    assert!(read_events(dir.path()).unwrap().is_empty(), "nothing cut");
    // A failed open left the restart for the next one to see.
    assert!(matches!(open(dir.path(), FsyncPolicy::Never), Err(crate::Error::Corrupt { offset: 25, .. })));
}

#[test]
fn a_sync_also_syncs_segments_sealed_without_one() {
    let _serial = crate::fs::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), FsyncPolicy::Never).unwrap();
    append(&log, 5);
    // Under "never" a roll syncs nothing; the next sync must cover the sealed segment,
    // since recovery after a restart trusts everything below the offset it records.
    assert!(log.seal_active().unwrap());
    append(&log, 5);
    let sealed = dir.path().join(file_name(0, FileKind::Data));
    fail_next_sync_of(&sealed);
    let result = log.sync();
    crate::fs::clear();
    assert!(matches!(result, Err(crate::Error::Io { .. })), "{result:?}");
}

#[test]
fn an_always_append_after_a_roll_without_sync_syncs_the_sealed_segment() {
    let _serial = crate::fs::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    {
        // Another process's policy: it rolled without syncing.
        let never = open(dir.path(), FsyncPolicy::Never).unwrap();
        append(&never, 5);
        assert!(never.seal_active().unwrap());
        never.close().unwrap();
    }
    let always = open(dir.path(), FsyncPolicy::Always).unwrap();
    let sealed = dir.path().join(file_name(0, FileKind::Data));
    fail_next_sync_of(&sealed);
    let record = Record { timestamp: now_ms(), key: None, value: b"v", headers: &[], tombstone: false };
    let result = always.append(&[record], BatchMeta::plain(0));
    crate::fs::clear();
    assert!(matches!(result, Err(crate::Error::Io { .. })), "{result:?}");
}

#[test]
fn after_a_restart_pages_lost_from_a_segment_sealed_without_sync_cut_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    // Under "never" the rolls synced nothing: only offsets below 5 are known to be on disk.
    let positions = three_segments(dir.path(), FsyncPolicy::Never, 5);
    // Batch 14 (in the middle segment) lost its bytes; its neighbours and everything in the
    // next segment survived.
    lose_bytes_of(dir.path(), 10, positions[14] + 50, 50);
    restart(dir.path());

    // Before, only the active segment was walked: the log kept the hole and reads from 0
    // raised at offset 14.
    let log = open(dir.path(), FsyncPolicy::Never).unwrap();
    assert_eq!(log.end_offset().unwrap(), 14);
    assert_eq!(offsets(&log).unwrap(), (0..14).collect::<Vec<_>>());
    let events = read_events(dir.path()).unwrap();
    let moved: Vec<_> =
        events.iter().map(|e| (e.kind, e.segment_base, e.first_offset, e.end_offset)).collect();
    assert_eq!(
        moved,
        [(LossKind::Unsynced, 20, 20, 30), (LossKind::Unsynced, 10, 14, 20)],
        "the later segment moved whole, then the damaged one's rest"
    );
    assert_eq!(std::fs::read_dir(dir.path().join(QUARANTINE_DIR)).unwrap().count(), 2);
    assert!(!dir.path().join(file_name(20, FileKind::Index)).exists(), "no index left without its data");
    // Appends continue from the cut, and the next roll's segment may take a moved one's base.
    append(&log, 7);
    assert!(log.seal_active().unwrap());
    append(&log, 1);
    assert_eq!(offsets(&log).unwrap(), (0..22).collect::<Vec<_>>());
    log.close().unwrap();
    let again = open(dir.path(), FsyncPolicy::Never).unwrap();
    assert_eq!(offsets(&again).unwrap(), (0..22).collect::<Vec<_>>());
}

#[test]
fn after_a_restart_sealed_segments_that_are_whole_or_synced_are_kept() {
    // A sealed segment whose trim was lost (its file longer, zeros after its batches) is whole.
    let dir = tempfile::tempdir().unwrap();
    let positions = three_segments(dir.path(), FsyncPolicy::Never, 5);
    let sealed = OpenOptions::new().write(true).open(dir.path().join(file_name(10, FileKind::Data))).unwrap();
    sealed.set_len(1 << 20).unwrap();
    restart(dir.path());
    let log = open(dir.path(), FsyncPolicy::Never).unwrap();
    assert_eq!(offsets(&log).unwrap(), (0..30).collect::<Vec<_>>());
    assert!(read_events(dir.path()).unwrap().is_empty());
    log.close().unwrap();

    // Damage below the synced offset is corruption, not a power loss: nothing is cut, and
    // readers report it.
    lose_bytes_of(dir.path(), 0, positions[3] + 50, 50);
    restart(dir.path());
    let log = open(dir.path(), FsyncPolicy::Never).unwrap();
    assert_eq!(log.end_offset().unwrap(), 30);
    assert!(matches!(offsets(&log), Err(crate::Error::Corrupt { offset: 3, .. })));
    assert!(read_events(dir.path()).unwrap().is_empty());
    log.close().unwrap();

    // A durable roll synced the segment it sealed (and those before it): damage there after
    // a restart is corruption too, not cut.
    let dir = tempfile::tempdir().unwrap();
    let positions =
        three_segments(dir.path(), FsyncPolicy::Interval(std::time::Duration::from_secs(3600)), 5);
    lose_bytes_of(dir.path(), 10, positions[14] + 50, 50);
    restart(dir.path());
    let log = open(dir.path(), FsyncPolicy::Interval(std::time::Duration::from_secs(3600))).unwrap();
    assert_eq!(log.end_offset().unwrap(), 30);
    assert!(matches!(offsets(&log), Err(crate::Error::Corrupt { offset: 14, .. })));
    assert!(read_events(dir.path()).unwrap().is_empty());
}

#[test]
fn a_failed_move_of_a_later_segment_leaves_the_rest_to_the_next_open() {
    let _serial = crate::fs::TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Nothing synced: batch 4 of the first segment lost, so both later segments move.
    let positions = three_segments(dir.path(), FsyncPolicy::Never, 0);
    lose_bytes(dir.path(), positions[4] + 50, 50);
    restart(dir.path());
    crate::fs::inject(crate::fs::Fault {
        op: crate::fs::Op::Rename,
        path_contains: format!("{QUARANTINE_DIR}/{:020}-", 20),
        errno: libc::EIO,
        skip: 0,
        times: Some(1),
        short: false,
        panic: false,
    });
    let failed = open(dir.path(), FsyncPolicy::Never);
    crate::fs::clear();
    assert!(matches!(failed, Err(crate::Error::Io { .. })), "{:?}", failed.err());
    // The last segment goes first (the log stays a prefix of its segments), recorded before
    // it moves: here the record is made and the move failed.
    let events = read_events(dir.path()).unwrap();
    assert_eq!(events.iter().map(|e| e.segment_base).collect::<Vec<_>>(), [20]);
    assert!(dir.path().join(file_name(10, FileKind::Data)).exists());
    assert!(dir.path().join(file_name(20, FileKind::Data)).exists(), "left to the next open");

    let log = open(dir.path(), FsyncPolicy::Never).unwrap();
    assert_eq!(offsets(&log).unwrap(), (0..4).collect::<Vec<_>>());
    let events = read_events(dir.path()).unwrap();
    let moved: Vec<_> = events.iter().map(|e| (e.segment_base, e.first_offset, e.end_offset)).collect();
    assert_eq!(moved, [(20, 20, 30), (10, 10, 20), (0, 4, 10)], "the first record is reused, not repeated");
    let files: Vec<_> = std::fs::read_dir(dir.path().join(QUARANTINE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 3);
    assert!(files.contains(&events[0].file), "moved under the name its record gave");
}
