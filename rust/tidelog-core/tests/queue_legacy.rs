//! Opening a store converts the work-queue state the first version of work queues kept in
//! `__work_queues` (issue 14, item 3), once: each queue's state log gets the whole state as
//! its first records, a queue that has a state log already is left alone (a crash part way
//! through the conversion), queues of deleted topics are not carried over, the topic is
//! deleted afterwards, and an undecodable record stops the open without changing anything.

use std::path::Path;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::queue_legacy::{LEGACY_TOPIC, NO_LEGACY, WORK_QUEUES_DIR};
use tidelog_core::statelog::{read_contents, StateLog};
use tidelog_core::{Error, FsyncPolicy, LogConfig, Store};

fn open(dir: &Path) -> tidelog_core::Result<Store> {
    Store::open(dir, LogConfig::default(), &[])
}

fn value(kind: u8, partition: u32, offset: i64, expires: i64, count: u32, member: &str) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&partition.to_le_bytes());
    v.extend_from_slice(&offset.to_le_bytes());
    v.extend_from_slice(&expires.to_le_bytes());
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(member.as_bytes());
    v
}

/// Appends the first version's records of queue `group` on `topic` where it put them.
fn legacy(store: &Store, group: &str, topic: &str, values: &[Vec<u8>]) {
    let log = store.create_internal_topic(LEGACY_TOPIC, 8, true).unwrap();
    let key = format!("{group}\0{topic}");
    let p = tidelog_core::partitioner::partition_for_key(group.as_bytes(), 8);
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|v| Record { timestamp: 1, key: Some(key.as_bytes()), value: v, headers: &[], tombstone: false })
        .collect();
    log.partition(p).unwrap().append(&records, BatchMeta::plain(0)).unwrap();
}

fn history() -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = (0..6).map(|o| value(1, 0, o, 1 << 50, 1, "old")).collect();
    values.extend((0..3).map(|o| value(2, 0, o, 0, 0, "")));
    values.push(value(3, 0, 3, 0, 1, ""));
    values.push(value(4, 0, 5, 0, 1, ""));
    values
}

/// The records of a queue's state log (`None`: it has no state log).
fn records(dir: &Path, topic: &str, group: &str) -> Option<Vec<Vec<u8>>> {
    let contents = read_contents(&dir.join(WORK_QUEUES_DIR).join(topic), group).unwrap()?;
    assert_eq!(contents.snapshot, None);
    Some(contents.records)
}

/// One record of the current format with `ops` (kind, partition, start, end, expires, count).
fn record(member: &str, ops: &[(u8, u32, i64, i64, i64, u32)]) -> Vec<u8> {
    let mut out = (member.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(member.as_bytes());
    for &(kind, p, start, end, expires, count) in ops {
        out.push(kind);
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&expires.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
    }
    out
}

fn converted() -> Vec<Vec<u8>> {
    vec![
        record("old", &[(1, 0, 4, 5, 1 << 50, 1)]),
        record("", &[(3, 0, 3, 4, 0, 1)]),
        record("", &[(2, 0, 0, 3, 0, 0), (4, 0, 5, 6, 0, 0)]),
    ]
}

#[test]
fn opening_converts_every_queue_once_and_deletes_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).unwrap();
        store.create_topic("jobs", 1, false, &[]).unwrap();
        store.create_topic("gone", 1, false, &[]).unwrap();
        legacy(&store, "w", "jobs", &history());
        legacy(&store, "odd name", "jobs", &history()[..1]);
        legacy(&store, "w", "gone", &history());
        legacy(&store, "w", "never", &history()); // a topic deleted before
        store.delete_topic("gone").unwrap();
        store.create_topic("gone", 1, false, &[]).unwrap(); // created again: starts empty
                                                            // A member of the first version using `w` on `jobs`: not in the routed partition.
        let log = store.topic(LEGACY_TOPIC).unwrap();
        let other = (tidelog_core::partitioner::partition_for_key(b"w", 8) + 1) % 8;
        let v = value(2, 0, 4, 0, 0, "");
        let stray = Record { timestamp: 1, key: Some(b"w\0jobs"), value: &v, headers: &[], tombstone: false };
        log.partition(other).unwrap().append(&[stray], BatchMeta::plain(0)).unwrap();
        // The first version's delete_topic marked `gone`'s queues as not to carry over.
        let gone = dir.path().join(WORK_QUEUES_DIR).join("gone");
        std::fs::create_dir_all(&gone).unwrap();
        std::fs::write(gone.join(NO_LEGACY), b"").unwrap();
    }
    let store = open(dir.path()).unwrap();
    assert_eq!(records(dir.path(), "jobs", "w"), Some(converted()));
    assert_eq!(
        records(dir.path(), "jobs", "~6f6464206e616d65"),
        Some(vec![record("old", &[(1, 0, 0, 1, 1 << 50, 1)])])
    );
    assert_eq!(records(dir.path(), "gone", "w"), None);
    assert!(!dir.path().join(WORK_QUEUES_DIR).join("never").exists());
    assert!(!dir.path().join(WORK_QUEUES_DIR).join("gone").join(NO_LEGACY).exists());
    assert!(matches!(store.topic(LEGACY_TOPIC), Err(Error::TopicNotFound(_))));
    assert!(!store.topics().unwrap().contains(&LEGACY_TOPIC.to_owned()));
    // A change after the conversion stays; reopening converts nothing again.
    let log = store.state_log(&dir.path().join(WORK_QUEUES_DIR).join("jobs"), "w").unwrap();
    log.lock().unwrap();
    log.append(&record("new", &[(2, 0, 4, 5, 0, 0)])).unwrap();
    log.unlock().unwrap();
    drop(store);
    open(dir.path()).unwrap();
    let mut expected = converted();
    expected.push(record("new", &[(2, 0, 4, 5, 0, 0)]));
    assert_eq!(records(dir.path(), "jobs", "w"), Some(expected));
}

#[test]
fn a_conversion_cut_short_leaves_converted_queues_alone() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join(WORK_QUEUES_DIR).join("jobs");
    {
        let store = open(dir.path()).unwrap();
        store.create_topic("jobs", 1, false, &[]).unwrap();
        legacy(&store, "a", "jobs", &history());
        legacy(&store, "b", "jobs", &history());
        // As a crash after converting `a` leaves it, with a change made since: the topic is
        // still there, `a` has its state log.
        let log = StateLog::open(&jobs, "a", FsyncPolicy::Never).unwrap();
        assert!(log.seed(&[record("x", &[(2, 0, 0, 9, 0, 0)])]).unwrap());
        assert!(!log.seed(&converted()).unwrap(), "seeds an empty log only");
    }
    open(dir.path()).unwrap();
    assert_eq!(records(dir.path(), "jobs", "a"), Some(vec![record("x", &[(2, 0, 0, 9, 0, 0)])]));
    assert_eq!(records(dir.path(), "jobs", "b"), Some(converted()));
}

#[test]
fn an_undecodable_record_fails_the_open_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).unwrap();
        store.create_topic("jobs", 1, false, &[]).unwrap();
        legacy(&store, "a", "jobs", &history());
        legacy(&store, "b", "jobs", &[value(9, 0, 1, 0, 0, "")]);
    }
    for _ in 0..2 {
        match open(dir.path()) {
            Err(Error::Corrupt { path, reason, .. }) => {
                assert!(reason.contains("unknown kind 9"), "{reason}");
                assert!(path.starts_with(dir.path().join("topics").join(LEGACY_TOPIC)), "{path:?}");
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
        }
        assert_eq!(records(dir.path(), "jobs", "a"), None);
        assert!(dir.path().join("topics").join(LEGACY_TOPIC).exists());
    }
}
