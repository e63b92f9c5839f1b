//! The producer table's walk over a damaged batch: it must report the damage, not go on in
//! the next segment (a transaction whose marker it could not read would otherwise stay open
//! across the damage and take the outcome of its producer's next marker: an aborted
//! transaction read as committed, or a committed one hidden).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{now_ms, LogConfig, PartitionLog};
use crate::format::{BatchMeta, Marker, Record, ATTR_CONTROL, ATTR_TRANSACTIONAL};
use crate::segment::{file_name, FileKind};

fn open(dir: &Path) -> PartitionLog {
    let config = LogConfig { segment_ms: None, ..LogConfig::default() };
    PartitionLog::open(dir, "t", 0, config).expect("open partition log")
}

fn append(log: &PartitionLog, pid: i64, value: &[u8], attributes: u8) -> u64 {
    let record = Record { timestamp: now_ms(), key: None, value, headers: &[], tombstone: false };
    let meta =
        BatchMeta { base_offset: 0, attributes, producer_id: pid, producer_epoch: 0, base_sequence: -1 };
    log.append(&[record], meta).expect("append").base_offset
}

/// Every value one committed read from offset 0 serves, or the error it raised.
fn committed_values(log: &PartitionLog) -> Result<Vec<String>, crate::Error> {
    let result = log.read(0, usize::MAX, usize::MAX)?;
    Ok(result
        .chunks
        .iter()
        .flat_map(|c| c.records().map(|r| String::from_utf8(r.value.to_vec()).unwrap()).collect::<Vec<_>>())
        .collect())
}

#[test]
fn a_damaged_marker_stops_the_producer_walk_instead_of_letting_a_later_marker_decide() {
    let dir = tempfile::tempdir().unwrap();
    let marker_at = {
        let writer = open(dir.path());
        append(&writer, 1, b"aborted", ATTR_TRANSACTIONAL);
        let marker_at = writer.head().unwrap().committed_pos;
        append(&writer, 1, &Marker::Abort.value(), ATTR_TRANSACTIONAL | ATTR_CONTROL);
        assert!(writer.seal_active().unwrap());
        append(&writer, 1, b"committed", ATTR_TRANSACTIONAL);
        append(&writer, 1, &Marker::Commit.value(), ATTR_TRANSACTIONAL | ATTR_CONTROL);
        assert_eq!(committed_values(&writer).unwrap(), ["committed"]);
        writer.close().unwrap();
        marker_at
    };
    // The snapshot taken at the roll would spare a new reader the walk over the first
    // segment; without it (lost, or never written by an older version) the walk is needed.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "snapshot") {
            std::fs::remove_file(path).unwrap();
        }
    }
    // The abort marker's batch length now points past the end of its segment.
    let segment = OpenOptions::new().write(true).open(dir.path().join(file_name(0, FileKind::Data))).unwrap();
    segment.write_all_at(&u32::MAX.to_le_bytes(), marker_at + 8).unwrap();
    drop(segment);

    let reader = open(dir.path());
    let damage = |e: crate::Error| match e {
        crate::Error::Corrupt { path, position, offset, .. } => {
            assert_eq!(path, dir.path().join(file_name(0, FileKind::Data)));
            assert_eq!((position, offset), (marker_at, 1));
        }
        other => panic!("expected the damage reported, got {other:?}"),
    };
    // Before the fix the walk went on into the second segment: the commit there closed
    // the transaction at 0, and "aborted" was served as committed.
    damage(reader.last_stable_offset().expect_err("a stable offset past unreadable markers"));
    damage(committed_values(&reader).expect_err("a committed read past unreadable markers"));
    // A producer's append is checked against a table that could not be built: refused,
    // and nothing written.
    let record = Record { timestamp: now_ms(), key: None, value: b"next", headers: &[], tombstone: false };
    let meta =
        BatchMeta { base_offset: 0, attributes: 0, producer_id: 1, producer_epoch: 0, base_sequence: 2 };
    damage(reader.append(&[record], meta).expect_err("an idempotent append"));
    assert_eq!(reader.end_offset().unwrap(), 4);
    // Plain appends need no producer table and go on.
    let plain = Record { timestamp: now_ms(), key: None, value: b"plain", headers: &[], tombstone: false };
    assert_eq!(reader.append(&[plain], BatchMeta::plain(0)).unwrap().base_offset, 4);
}

#[test]
fn a_roll_over_damage_the_table_cannot_pass_writes_no_snapshot_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (keeper, writer) = (open(dir.path()), open(dir.path()));
    // `keeper` keeps a producer table from here on.
    append(&keeper, 1, b"t0", ATTR_TRANSACTIONAL);
    append(&keeper, 1, &Marker::Commit.value(), ATTR_TRANSACTIONAL | ATTR_CONTROL);
    assert_eq!(keeper.last_stable_offset().unwrap(), 2);
    let damaged_at = writer.head().unwrap().committed_pos;
    append(&writer, 2, b"open", ATTR_TRANSACTIONAL);
    append(&writer, 2, &Marker::Abort.value(), ATTR_TRANSACTIONAL | ATTR_CONTROL);
    let segment = OpenOptions::new().write(true).open(dir.path().join(file_name(0, FileKind::Data))).unwrap();
    segment.write_all_at(&u32::MAX.to_le_bytes(), damaged_at + 8).unwrap();
    drop(segment);

    // Sealing the segment (a plain append's roll) still works; it leaves no snapshot at
    // 4, which would say producer 2 has no open transaction.
    assert!(keeper.seal_active().unwrap());
    let snapshots: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(".snapshot"))
        .collect();
    assert!(snapshots.iter().all(|n| !n.starts_with("00000000000000000004")), "{snapshots:?}");
    assert_eq!(
        keeper
            .append(
                &[Record { timestamp: now_ms(), key: None, value: b"p", headers: &[], tombstone: false }],
                BatchMeta::plain(0)
            )
            .unwrap()
            .base_offset,
        4
    );
    // Readers that need producer state report the damage.
    assert!(matches!(keeper.last_stable_offset(), Err(crate::Error::Corrupt { .. })));
    let fresh = open(dir.path());
    assert!(matches!(fresh.last_stable_offset(), Err(crate::Error::Corrupt { .. })));
}
