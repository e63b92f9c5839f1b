//! Integration tests of a partition log's life cycle on disk: appends and reads across
//! segment rolls, and what opening does after the files were left in a bad state (a torn or
//! garbage tail, a missing control block, a missing or damaged index), plus retention.
//!
//! Every test damages the files with plain `std::fs` after dropping the log, which releases
//! the control block's lock, so the next `open` is alone and runs full recovery.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::log::CONTROL_FILE;
use tidelog_core::segment::{file_name, FileKind};
use tidelog_core::{Error, LogConfig, PartitionLog};

const SEGMENT_BYTES: usize = 4096;

/// The log's offsets, unwrapped.
trait Offsets {
    fn start(&self) -> u64;
    fn end(&self) -> u64;
}

impl Offsets for PartitionLog {
    fn start(&self) -> u64 {
        self.start_offset().expect("start offset")
    }

    fn end(&self) -> u64 {
        self.end_offset().expect("end offset")
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        segment_ms: None,
        max_message_bytes: 1024,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> PartitionLog {
    open_with(dir, config())
}

fn open_with(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, "t", 0, config).expect("open partition log")
}

/// One stored message, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Msg {
    offset: u64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

fn value_of(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i:06}-").into_bytes();
    v.resize(40 + (i as usize * 7) % 90, b'a' + (i % 26) as u8);
    v
}

fn timestamp_of(i: u64) -> i64 {
    // Not monotonic, so time lookups must rely on the "max before" of the time index.
    1_000_000 + (i as i64) * 10 - if i % 5 == 0 { 25 } else { 0 }
}

/// Appends messages `from..to`, alternating single-record batches and 3-record batches.
/// Returns the messages as they must read back.
fn append_range(log: &PartitionLog, from: u64, to: u64) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut i = from;
    while i < to {
        let n = if i % 4 == 3 { (to - i).min(3) } else { 1 };
        let values: Vec<Vec<u8>> = (i..i + n).map(value_of).collect();
        let keys: Vec<Vec<u8>> = (i..i + n).map(|j| format!("k{j}").into_bytes()).collect();
        let records: Vec<Record<'_>> = (0..n as usize)
            .map(|j| Record {
                timestamp: timestamp_of(i + j as u64),
                key: (j % 2 == 0).then_some(&keys[j][..]),
                value: &values[j],
                headers: &[],
                tombstone: false,
            })
            .collect();
        let appended = log.append(&records, BatchMeta::plain(0)).expect("append");
        assert_eq!(appended.count as u64, n);
        for (j, r) in records.iter().enumerate() {
            out.push(Msg {
                offset: appended.base_offset + j as u64,
                timestamp: r.timestamp,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.to_vec(),
            });
        }
        i += n;
    }
    out
}

/// Reads every message from `from` to the end.
fn read_all(log: &PartitionLog, from: u64) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let read = log.read(offset, 1000, 1 << 20).expect("read");
        if read.count == 0 {
            assert_eq!(read.next_offset, offset);
            return out;
        }
        for chunk in &read.chunks {
            for r in chunk.records() {
                out.push(Msg {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.to_vec(),
                });
            }
        }
        assert!(read.next_offset > offset);
        offset = read.next_offset;
    }
}

/// The first message whose timestamp is `>= t`, by offset order (the model of
/// `offset_for_timestamp`).
fn expected_offset_for(msgs: &[Msg], t: i64) -> Option<u64> {
    msgs.iter().find(|m| m.timestamp >= t).map(|m| m.offset)
}

/// Checks reads from every offset and time lookups at many timestamps against `expected`.
fn assert_log_matches(log: &PartitionLog, expected: &[Msg]) {
    let start = expected.first().map_or(log.end(), |m| m.offset);
    assert_eq!(log.start(), start);
    assert_eq!(log.end(), expected.last().map_or(start, |m| m.offset + 1));
    assert_eq!(read_all(log, start), expected);
    for (i, m) in expected.iter().enumerate() {
        let read = log.read(m.offset, 1, 1 << 20).expect("read one");
        assert_eq!(read.count, 1, "read at {}", m.offset);
        let got = read.chunks[0].records().next().expect("one record");
        assert_eq!((got.offset, got.value), (m.offset, &m.value[..]), "read at {}", m.offset);
        if i % 3 == 0 {
            for t in [m.timestamp - 1, m.timestamp, m.timestamp + 1] {
                assert_eq!(
                    log.offset_for_timestamp(t).expect("time lookup"),
                    expected_offset_for(expected, t),
                    "timestamp {t}"
                );
            }
        }
    }
    let after = expected.iter().map(|m| m.timestamp).max().unwrap_or(0) + 1;
    assert_eq!(log.offset_for_timestamp(after).expect("time lookup"), None);
}

fn segment_file(dir: &Path, base: u64, kind: FileKind) -> PathBuf {
    dir.join(file_name(base, kind))
}

/// Base offsets of the segments on disk, sorted.
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".log").and_then(|s| s.parse().ok()))
        .collect();
    bases.sort_unstable();
    bases
}

/// Start positions and base offsets of the batches of a data file, walking the headers
/// (base offset u64, length u32) while offsets stay continuous. Returns the batches and the
/// end of the valid data.
fn batches_of(path: &Path, base: u64) -> (Vec<(usize, u64)>, usize) {
    let bytes = std::fs::read(path).expect("read data file");
    let (mut pos, mut next, mut out) = (0usize, base, Vec::new());
    while pos + 64 <= bytes.len() {
        let offset = u64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes")) as usize + 12;
        if offset != next || len < 64 || pos + len > bytes.len() {
            break;
        }
        let last_delta = u32::from_le_bytes(bytes[pos + 20..pos + 24].try_into().expect("4 bytes"));
        out.push((pos, offset));
        next = offset + u64::from(last_delta) + 1;
        pos += len;
    }
    (out, pos)
}

fn write_at(path: &Path, pos: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).expect("open for damage");
    f.seek(SeekFrom::Start(pos)).expect("seek");
    f.write_all(bytes).expect("write");
}

fn read_at(path: &Path, pos: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).expect("open");
    f.seek(SeekFrom::Start(pos)).expect("seek");
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).expect("read");
    buf
}

/// Deterministic junk with no zero byte.
fn garbage(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + usize::from(seed) * 17) % 255) as u8 + 1).collect()
}

#[test]
fn append_and_read_round_trip_across_segment_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let log = open(dir.path());
        assert_eq!((log.start(), log.end()), (0, 0));
        assert_eq!(log.read(0, 10, 1 << 20).expect("read empty").count, 0);
        let expected = append_range(&log, 0, 300);
        assert!(log.segment_count().expect("count") > 5, "segments must have rolled");
        assert_log_matches(&log, &expected);
        // Reading in the middle of a multi-record batch starts at the record asked for.
        let mid = expected.iter().find(|m| m.offset % 4 == 0 && m.offset > 100).expect("a batch").offset;
        let read = log.read(mid, 2, 1 << 20).expect("read");
        let got: Vec<u64> = read.chunks.iter().flat_map(|c| c.records().map(|r| r.offset)).collect();
        assert_eq!(got, vec![mid, mid + 1]);
        assert_eq!(read.next_offset, mid + 2);
        let end = log.end();
        assert!(matches!(log.read(end + 1, 1, 1 << 20), Err(Error::OffsetOutOfRange { .. })));
        expected
    };
    // Sealed segments were trimmed to their contents.
    let bases = segment_bases(dir.path());
    for &base in &bases[..bases.len() - 1] {
        let path = segment_file(dir.path(), base, FileKind::Data);
        let (_, end) = batches_of(&path, base);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), end as u64);
    }
    let log = open(dir.path());
    assert_log_matches(&log, &expected);
    let mut expected = expected;
    expected.extend(append_range(&log, 300, 320));
    assert_log_matches(&log, &expected);
}

#[test]
fn a_second_handle_sees_appends_without_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(dir.path());
    let reader = open(dir.path());
    let mut expected = append_range(&writer, 0, 10);
    assert_log_matches(&reader, &expected);
    expected.extend(append_range(&reader, 10, 200));
    assert_log_matches(&writer, &expected);
    assert_log_matches(&reader, &expected);
}

/// How a test damages the tail of the active segment.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Zero the last `n` bytes of the last batch (a write that never reached the disk).
    ZeroEnd(usize),
    /// Overwrite the last `n` bytes of the last batch with junk (a half-written batch).
    GarbleEnd(usize),
    /// Cut the file `n` bytes before the end of the last batch.
    Truncate(usize),
    /// Write `n` bytes of junk right after the valid data (a batch whose header never made it).
    GarbageAfter(usize),
}

fn torn_tail_case(damage: Damage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = {
        let log = open(dir.path());
        // 54 messages; the last batch holds messages 51, 52 and 53.
        let mut all = append_range(&log, 0, 51);
        let tail = append_range(&log, 51, 54);
        assert_eq!(tail.len(), 3);
        all.extend(tail);
        all
    };
    let bases = segment_bases(dir.path());
    let active = *bases.last().expect("a segment");
    let path = segment_file(dir.path(), active, FileKind::Data);
    let (batches, end) = batches_of(&path, active);
    let &(last_pos, last_offset) = batches.last().expect("the active segment holds batches");
    assert_eq!(last_offset, all[all.len() - 3].offset, "the last batch is the 3-record one");
    let lost = match damage {
        Damage::ZeroEnd(n) => {
            write_at(&path, (end - n) as u64, &vec![0; n]);
            true
        }
        Damage::GarbleEnd(n) => {
            let old = read_at(&path, (end - n) as u64, n);
            let new: Vec<u8> = old.iter().map(|b| b ^ 0x5a).collect();
            write_at(&path, (end - n) as u64, &new);
            true
        }
        Damage::Truncate(n) => {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open")
                .set_len((end - n) as u64)
                .expect("truncate");
            true
        }
        Damage::GarbageAfter(n) => {
            // The file may have been trimmed to its contents when the log was dropped: junk
            // past the end grows it (within the segment's capacity, so the roll points stay
            // where they were).
            let n = n.min(SEGMENT_BYTES - end);
            assert!(n > 0, "room after the last batch");
            write_at(&path, end as u64, &garbage(n, 7));
            false
        }
    };
    let expected: Vec<Msg> =
        if lost { all.iter().filter(|m| m.offset < last_offset).cloned().collect() } else { all };
    let log = open(dir.path());
    assert_log_matches(&log, &expected);
    // The torn bytes are gone from the file: nothing after the valid end but zeros.
    let bytes = std::fs::read(&path).expect("read");
    let (_, new_end) = batches_of(&path, active);
    assert_eq!(new_end, if lost { last_pos } else { end });
    assert!(bytes[new_end..].iter().all(|&b| b == 0), "{damage:?}: tail not zeroed");
    drop(log);
    // Appends continue right after the valid data, and survive another reopen.
    let mut expected = expected;
    {
        let log = open(dir.path());
        let next = log.end();
        let more = append_range(&log, 1000, 1010);
        assert_eq!(more[0].offset, next);
        expected.extend(more);
        assert_log_matches(&log, &expected);
    }
    let log = open(dir.path());
    assert_log_matches(&log, &expected);
}

#[test]
fn recovery_drops_a_batch_whose_end_never_reached_the_file() {
    torn_tail_case(Damage::ZeroEnd(1));
    torn_tail_case(Damage::ZeroEnd(40));
}

#[test]
fn recovery_drops_a_half_written_batch() {
    torn_tail_case(Damage::GarbleEnd(1));
    torn_tail_case(Damage::GarbleEnd(100));
}

#[test]
fn recovery_drops_a_batch_cut_short_by_a_truncated_file() {
    torn_tail_case(Damage::Truncate(1));
    torn_tail_case(Damage::Truncate(70));
}

#[test]
fn recovery_zeroes_garbage_after_the_valid_data() {
    torn_tail_case(Damage::GarbageAfter(1));
    torn_tail_case(Damage::GarbageAfter(13));
    torn_tail_case(Damage::GarbageAfter(300));
}

#[test]
fn recovery_of_a_torn_first_batch_leaves_an_empty_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = open(dir.path());
        let msgs = append_range(&log, 0, 1);
        assert_eq!(msgs[0].offset, 0);
    }
    let path = segment_file(dir.path(), 0, FileKind::Data);
    write_at(&path, 20, &[0xff; 4]);
    let log = open(dir.path());
    assert_eq!((log.start(), log.end()), (0, 0));
    assert_eq!(log.read(0, 10, 1 << 20).expect("read").count, 0);
    let expected = append_range(&log, 0, 5);
    assert_eq!(expected[0].offset, 0);
    assert_log_matches(&log, &expected);
}

#[test]
fn recovery_without_a_control_file_rebuilds_the_head_from_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let log = open(dir.path());
        append_range(&log, 0, 150)
    };
    std::fs::remove_file(dir.path().join(CONTROL_FILE)).expect("remove control");
    let mut expected = expected;
    {
        let log = open(dir.path());
        assert_log_matches(&log, &expected);
        expected.extend(append_range(&log, 150, 160));
    }
    // A control file holding junk is no better than none.
    std::fs::write(dir.path().join(CONTROL_FILE), garbage(4096, 3)).expect("write control");
    {
        let log = open(dir.path());
        assert_log_matches(&log, &expected);
    }
    // Missing control file and a torn tail at once.
    std::fs::remove_file(dir.path().join(CONTROL_FILE)).expect("remove control");
    let active = *segment_bases(dir.path()).last().expect("a segment");
    let path = segment_file(dir.path(), active, FileKind::Data);
    let (batches, end) = batches_of(&path, active);
    let &(last_pos, last_offset) = batches.last().expect("batches");
    write_at(&path, (end - 1) as u64, &[0]);
    write_at(&path, last_pos as u64 + 30, &[0xee]);
    expected.retain(|m| m.offset < last_offset);
    let log = open(dir.path());
    assert_log_matches(&log, &expected);
}

#[test]
fn recovery_distrusts_a_stale_control_block() {
    // A control block that is older than the data (as after a power loss that kept the
    // data pages but not the control page) must not hide appended batches.
    let dir = tempfile::tempdir().expect("tempdir");
    let control = dir.path().join(CONTROL_FILE);
    let mut expected = {
        let log = open(dir.path());
        append_range(&log, 0, 3)
    };
    let old = std::fs::read(&control).expect("read control");
    {
        let log = open(dir.path());
        expected.extend(append_range(&log, 3, 15));
        assert_eq!(log.segment_count().expect("count"), 1, "still in the first segment");
    }
    std::fs::write(&control, &old).expect("restore old control");
    let log = open(dir.path());
    assert_log_matches(&log, &expected);
}

fn index_damage_case(damage: impl Fn(&Path)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let log = open_with(dir.path(), LogConfig { index_interval_bytes: 64, ..config() });
        let expected = append_range(&log, 0, 120);
        assert!(log.segment_count().expect("count") >= 2);
        expected
    };
    let active = *segment_bases(dir.path()).last().expect("a segment");
    let index = segment_file(dir.path(), active, FileKind::Index);
    let before = std::fs::read(&index).expect("read index");
    assert!(before[8..].iter().any(|&b| b != 0), "the active segment has several index entries");
    damage(dir.path());
    {
        let log = open_with(dir.path(), LogConfig { index_interval_bytes: 64, ..config() });
        assert_log_matches(&log, &expected);
    }
    // Appending after the rebuild keeps the index consistent across another reopen.
    let log = open_with(dir.path(), LogConfig { index_interval_bytes: 64, ..config() });
    let mut expected = expected;
    expected.extend(append_range(&log, 500, 520));
    drop(log);
    let log = open_with(dir.path(), LogConfig { index_interval_bytes: 64, ..config() });
    assert_log_matches(&log, &expected);
}

fn active_files(dir: &Path) -> (PathBuf, PathBuf) {
    let active = *segment_bases(dir).last().expect("a segment");
    (segment_file(dir, active, FileKind::Index), segment_file(dir, active, FileKind::TimeIndex))
}

#[test]
fn recovery_rebuilds_a_missing_active_index() {
    index_damage_case(|dir| {
        let (index, _) = active_files(dir);
        std::fs::remove_file(index).expect("remove index");
    });
    index_damage_case(|dir| {
        let (index, time) = active_files(dir);
        std::fs::remove_file(index).expect("remove index");
        std::fs::remove_file(time).expect("remove time index");
    });
    index_damage_case(|dir| {
        let (_, time) = active_files(dir);
        std::fs::remove_file(time).expect("remove time index");
    });
}

#[test]
fn recovery_rebuilds_a_damaged_active_index() {
    index_damage_case(|dir| {
        let (index, _) = active_files(dir);
        let len = std::fs::metadata(&index).expect("stat").len() as usize;
        write_at(&index, 0, &garbage(len, 1));
    });
    index_damage_case(|dir| {
        let (_, time) = active_files(dir);
        let len = std::fs::metadata(&time).expect("stat").len() as usize;
        write_at(&time, 0, &garbage(len, 2));
    });
    index_damage_case(|dir| {
        let (index, time) = active_files(dir);
        std::fs::write(&index, []).expect("empty index");
        std::fs::write(&time, [1, 2, 3]).expect("short time index");
    });
}

#[test]
fn sealed_segments_rebuild_missing_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let log = open(dir.path());
        append_range(&log, 0, 200)
    };
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 4);
    std::fs::remove_file(segment_file(dir.path(), bases[0], FileKind::Index)).expect("remove");
    std::fs::remove_file(segment_file(dir.path(), bases[1], FileKind::TimeIndex)).expect("remove");
    let index2 = segment_file(dir.path(), bases[2], FileKind::Index);
    let len = std::fs::metadata(&index2).expect("stat").len() as usize;
    write_at(&index2, 0, &garbage(len, 9));
    let log = open(dir.path());
    assert_log_matches(&log, &expected);
}

#[test]
fn retention_by_size_removes_whole_segments_from_the_front() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = 3 * SEGMENT_BYTES as u64;
    let cfg = LogConfig { retention_bytes: Some(limit), ..config() };
    let all = {
        let log = open_with(dir.path(), cfg.clone());
        let all = append_range(&log, 0, 400);
        let start = log.start();
        assert!(start > 0, "retention removed segments");
        assert!(log.size_bytes().expect("size") <= limit + SEGMENT_BYTES as u64);
        // The start is the base of the oldest remaining segment.
        assert_eq!(segment_bases(dir.path())[0], start);
        let kept: Vec<Msg> = all.iter().filter(|m| m.offset >= start).cloned().collect();
        assert_log_matches(&log, &kept);
        for below in [0, start - 1] {
            assert!(
                matches!(log.read(below, 1, 1 << 20), Err(Error::OffsetOutOfRange { start: s, .. }) if s == start),
                "read below the start"
            );
        }
        // Time lookups never return a removed offset.
        assert_eq!(log.offset_for_timestamp(i64::MIN).expect("lookup"), Some(start));
        all
    };
    let log = open_with(dir.path(), cfg);
    let start = log.start();
    assert_eq!(segment_bases(dir.path())[0], start);
    let kept: Vec<Msg> = all.iter().filter(|m| m.offset >= start).cloned().collect();
    assert_log_matches(&log, &kept);
}

#[test]
fn retention_by_age_on_demand() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Old data (timestamps around 1970 + 1000 s) in several segments, written without
    // retention (with it, every roll would already remove the old segments).
    let old = append_range(&open(dir.path()), 0, 100);
    let log = open_with(dir.path(), LogConfig { retention_ms: Some(60_000), ..config() });
    assert!(log.segment_count().expect("count") > 2);
    let now = tidelog_core::log::now_ms();
    let fresh: Vec<u8> = b"fresh".to_vec();
    let rec = Record { timestamp: now, key: None, value: &fresh, headers: &[], tombstone: false };
    let base = log.append(&[rec], BatchMeta::plain(0)).expect("append").base_offset;
    assert_eq!(base, old.len() as u64);
    log.enforce_retention().expect("retention");
    let start = log.start();
    assert!(start > 0);
    // Only the active segment may keep old data; the fresh message is never removed.
    assert_eq!(log.segment_count().expect("count"), 1);
    let kept = read_all(&log, start);
    assert_eq!(kept.last().map(|m| (&m.value, m.offset)), Some((&fresh, base)));
    assert_eq!(kept[..kept.len() - 1], old[start as usize..]);
}
