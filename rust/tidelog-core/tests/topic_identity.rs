//! A topic's identity across store handles (each standing for a process: they share only
//! files and shared memory): deletion seen by every handle, re-creation as a new topic,
//! a deletion left half done, reserved names, long names, and state deleted along.

use std::path::Path;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::store::LEGACY_INCARNATION;
use tidelog_core::{Error, LogConfig, PartitionLog, Store, Topic};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 1 << 16, max_message_bytes: 30_000, ..LogConfig::default() }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, config(), &[]).expect("open store")
}

fn append(topic: &Topic, p: u32, value: &[u8]) -> Result<u64, Error> {
    let record = Record { timestamp: 0, key: None, value, headers: &[], tombstone: false };
    let log = topic.partition(p)?;
    Ok(log.append(&[record], BatchMeta::plain(0))?.base_offset)
}

fn values(topic: &Topic, p: u32) -> Vec<Vec<u8>> {
    let log = topic.partition(p).expect("partition");
    let read = log.read(0, 10_000, usize::MAX).expect("read");
    read.chunks.iter().flat_map(|c| c.records().map(|r| r.value.to_vec()).collect::<Vec<_>>()).collect()
}

#[test]
fn a_deleted_topic_refuses_every_handle_and_comes_back_new() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path()), open(dir.path()));
    let old = a.create_topic("t", 2, false, &[]).unwrap();
    for i in 0..50u32 {
        append(&old, i % 2, format!("old {i}").as_bytes()).unwrap();
    }
    b.delete_topic("t").unwrap();
    assert!(old.is_deleted());
    assert!(matches!(append(&old, 0, b"lost"), Err(Error::TopicNotFound(_))));
    assert!(matches!(a.topic("t"), Err(Error::TopicNotFound(_))));
    let new = b.create_topic("t", 2, false, &[]).unwrap();
    assert_ne!(new.incarnation(), old.incarnation());
    assert_ne!(new.incarnation(), LEGACY_INCARNATION);
    // Enough to roll the old handle's segment, were it still writing.
    let big = vec![b'o'; 20_000];
    for _ in 0..5 {
        assert!(matches!(append(&old, 0, &big), Err(Error::TopicNotFound(_))));
    }
    append(&new, 0, b"new").unwrap();
    let again = a.topic("t").unwrap();
    assert_eq!(again.incarnation(), new.incarnation());
    assert_eq!(values(&again, 0), vec![b"new".to_vec()]);
    assert_eq!(again.partition(1).unwrap().end_offset().unwrap(), 0);
    drop((old, new, again, a, b));
    let c = open(dir.path());
    assert_eq!(values(&c.topic("t").unwrap(), 0), vec![b"new".to_vec()]);
}

#[test]
fn a_deletion_that_died_after_marking_is_a_deletion_and_is_finished_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t = store.create_topic("t", 3, false, &[]).unwrap();
    append(&t, 2, b"old").unwrap();
    // What a process that died while marking leaves: partitions 0 and 1 marked (in order),
    // the directory in place. Partition 0's mark commits the deletion.
    PartitionLog::mark_deleted_at(&dir.path().join("topics/t/0")).unwrap();
    PartitionLog::mark_deleted_at(&dir.path().join("topics/t/1")).unwrap();
    assert!(t.is_deleted());
    for p in 0..3 {
        assert!(matches!(append(&t, p, b"lost"), Err(Error::TopicNotFound(_))));
    }
    drop(t);
    let other = open(dir.path());
    assert!(matches!(other.topic("t"), Err(Error::TopicNotFound(_))));
    assert!(other.topics().unwrap().is_empty());
    let new = other.create_topic("t", 3, false, &[]).unwrap();
    assert_eq!(new.partition(2).unwrap().end_offset().unwrap(), 0);
    append(&new, 1, b"new").unwrap();
    assert_eq!(values(&store.topic("t").unwrap(), 1), vec![b"new".to_vec()]);
    // delete_topic finishes a half-deleted topic too.
    PartitionLog::mark_deleted_at(&dir.path().join("topics/t/0")).unwrap();
    assert!(matches!(store.topic("t"), Err(Error::TopicNotFound(_))));
    assert!(dir.path().join("topics/t/topic.meta").exists());
    store.delete_topic("t").unwrap();
    assert!(store.topics().unwrap().is_empty());
}

#[test]
fn a_damaged_topic_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", 1, false, &[]).unwrap();
    store.close().unwrap();
    std::fs::write(dir.path().join("topics/t/0/not-a-segment.txt"), b"junk").unwrap();
    let store = open(dir.path());
    assert!(store.topic("t").is_err());
    store.delete_topic("t").unwrap();
    assert!(store.topics().unwrap().is_empty());
    store.create_topic("t", 1, false, &[]).unwrap();
}

#[test]
fn names_starting_with_two_underscores_are_internal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for name in ["__consumer_offsets", "__x"] {
        let err = store.create_topic(name, 3, false, &[]).err().expect("refused");
        assert!(matches!(&err, Error::InvalidConfig(m) if m.contains("reserved")), "{err}");
    }
    let internal = store.create_internal_topic("__consumer_offsets", 8, true).unwrap();
    assert_eq!(internal.partition_count(), 8);
    append(&internal, 0, b"commit").unwrap();
    assert!(matches!(store.create_topic("__consumer_offsets", 8, true, &[]), Err(Error::InvalidConfig(_))));
    assert!(matches!(store.delete_topic("__consumer_offsets"), Err(Error::InvalidConfig(_))));
    assert!(matches!(store.delete_topic("__missing"), Err(Error::InvalidConfig(_))));
    assert!(matches!(store.create_internal_topic("plain", 1, false), Err(Error::InvalidConfig(_))));
    assert_eq!(values(&store.topic("__consumer_offsets").unwrap(), 0), vec![b"commit".to_vec()]);
    store.create_topic("_one", 1, false, &[]).unwrap();
    store.create_topic("a__b", 1, false, &[]).unwrap();
    assert_eq!(store.topics().unwrap(), ["__consumer_offsets", "_one", "a__b"]);
}

#[test]
fn the_longest_names_create_delete_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for len in [223, 224, 249] {
        let name = "x".repeat(len);
        let t = store.create_topic(&name, 2, false, &[]).unwrap();
        append(&t, 1, b"old").unwrap();
        store.delete_topic(&name).unwrap();
        let t = store.create_topic(&name, 2, false, &[]).unwrap();
        assert_eq!(t.partition(1).unwrap().end_offset().unwrap(), 0);
        store.delete_topic(&name).unwrap();
    }
    assert!(matches!(store.create_topic(&"x".repeat(250), 1, false, &[]), Err(Error::InvalidConfig(_))));
}

#[test]
fn legacy_topic_meta_reads_as_the_legacy_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", 2, false, &[]).unwrap();
    store.close().unwrap();
    std::fs::write(dir.path().join("topics/t/topic.meta"), "partitions 2\n").unwrap();
    let store = open(dir.path());
    let t = store.topic("t").unwrap();
    assert_eq!(t.incarnation(), LEGACY_INCARNATION);
    append(&t, 0, b"x").unwrap();
    store.delete_topic("t").unwrap();
    assert!(store.create_topic("t", 2, false, &[]).unwrap().incarnation() != LEGACY_INCARNATION);
}
