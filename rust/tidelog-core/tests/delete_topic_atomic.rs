//! `delete_topic` is one atomic operation: the topic's partitions and the state kept beside
//! them (its consumer groups, its work queues) go together or stay together, whatever step a
//! crash interrupts. A crash is stood in for by a panic injected into a rename of the
//! deletion (the error paths' undo does not run, the locks are dropped as a dying process
//! drops them); the store is then reopened as the next process would.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::fs::{self as faults, Fault, Op};
use tidelog_core::{paths, LogConfig, Store, Topic};

/// Faults are process-wide: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn open(dir: &Path) -> Store {
    Store::open(
        dir,
        LogConfig { segment_bytes: 1 << 16, max_message_bytes: 30_000, ..LogConfig::default() },
        &[],
    )
    .expect("open store")
}

fn append(topic: &Topic, p: u32, value: &[u8]) {
    let record = Record { timestamp: 0, key: None, value, headers: &[], tombstone: false };
    topic.partition(p).unwrap().append(&[record], BatchMeta::plain(0)).unwrap();
}

fn values(topic: &Topic, p: u32) -> Vec<Vec<u8>> {
    let log = topic.partition(p).expect("partition");
    let read = log.read(0, 10_000, usize::MAX).expect("read");
    read.chunks.iter().flat_map(|c| c.records().map(|r| r.value.to_vec()).collect::<Vec<_>>()).collect()
}

/// The topic's state beside its partitions: one file in each directory the core deletes.
fn write_state(store: &Path, topic: &str) {
    for dir in paths::topic_state_dirs(store, topic) {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state"), b"old").unwrap();
    }
}

fn state_present(store: &Path, topic: &str) -> Vec<bool> {
    paths::topic_state_dirs(store, topic).iter().map(|d| d.join("state").exists()).collect()
}

fn deleting_dirs(store: &Path) -> Vec<String> {
    std::fs::read_dir(paths::topics_dir(store))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(paths::DELETING_PREFIX))
        .collect()
}

#[test]
fn delete_topic_removes_its_group_and_work_queue_state() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t = store.create_topic("t", 2, false, &[]).unwrap();
    append(&t, 0, b"x");
    write_state(dir.path(), "t");
    write_state(dir.path(), "other");
    delete(&store, "t");
    assert_eq!(state_present(dir.path(), "t"), [false, false]);
    assert_eq!(state_present(dir.path(), "other"), [true, true], "another topic's state stays");
    assert!(store.topics().unwrap().is_empty());
    let again = store.create_topic("t", 2, false, &[]).unwrap();
    assert!(values(&again, 0).is_empty());
    assert_eq!(state_present(dir.path(), "t"), [false, false]);
    assert!(deleting_dirs(dir.path()).is_empty());
}

fn delete(store: &Store, name: &str) {
    store.delete_topic(name).unwrap();
}

#[test]
fn a_crash_at_any_step_of_delete_topic_leaves_all_of_the_topic_or_none() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut finished = false;
    for skip in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            let t = store.create_topic("t", 3, false, &[]).unwrap();
            for p in 0..3 {
                append(&t, p, format!("kept {p}").as_bytes());
            }
            write_state(dir.path(), "t");
            drop(t);
            faults::inject(Fault {
                op: Op::Rename,
                path_contains: paths::DELETING_PREFIX.into(),
                errno: libc::EIO,
                skip,
                times: Some(1),
                short: false,
                panic: true,
            });
            let outcome = catch_unwind(AssertUnwindSafe(|| store.delete_topic("t")));
            faults::clear();
            if let Ok(done) = outcome {
                // Fewer renames than `skip`: the deletion ran to its end.
                done.unwrap();
                finished = true;
            }
        }
        // The next process.
        let store = open(dir.path());
        store.open_every_topic().unwrap();
        if store.topics().unwrap() == ["t"] {
            let t = store.topic("t").unwrap();
            for p in 0..3 {
                assert_eq!(values(&t, p), [format!("kept {p}").into_bytes()], "crash at rename {skip}");
            }
            assert_eq!(state_present(dir.path(), "t"), [true, true], "crash at rename {skip}: state lost");
        } else {
            assert!(store.topics().unwrap().is_empty());
            assert!(matches!(store.topic("t"), Err(tidelog_core::Error::TopicNotFound(_))));
            // Opening the store finished the deletion the crash left.
            assert_eq!(state_present(dir.path(), "t"), [false, false], "crash at rename {skip}");
            assert!(!paths::topic_dir(dir.path(), "t").exists(), "crash at rename {skip}");
            let again = store.create_topic("t", 3, false, &[]).unwrap();
            assert!(values(&again, 0).is_empty());
            assert_eq!(
                state_present(dir.path(), "t"),
                [false, false],
                "crash at rename {skip}: a topic created again finds the old one's state"
            );
        }
        if finished {
            break;
        }
    }
    assert!(finished, "more renames than the test tries");
}

#[test]
fn a_failed_step_after_the_mark_leaves_a_deleted_topic_that_the_next_create_finishes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t = store.create_topic("t", 2, false, &[]).unwrap();
    append(&t, 1, b"old");
    write_state(dir.path(), "t");
    // The first move of the topic's state fails (a full disk, say): the topic is deleted
    // all the same, and its state waits for the next create_topic of the name.
    faults::inject(Fault {
        op: Op::Rename,
        path_contains: paths::DELETING_PREFIX.into(),
        errno: libc::ENOSPC,
        skip: 0,
        times: Some(1),
        short: false,
        panic: false,
    });
    let err = store.delete_topic("t");
    faults::clear();
    assert!(err.is_err());
    assert!(t.is_deleted());
    assert!(store.topics().unwrap().is_empty());
    assert!(matches!(store.topic("t"), Err(tidelog_core::Error::TopicNotFound(_))));
    assert_eq!(state_present(dir.path(), "t"), [true, true]);
    let other = open(dir.path());
    let again = other.create_topic("t", 2, false, &[]).unwrap();
    assert!(values(&again, 1).is_empty());
    assert_eq!(state_present(dir.path(), "t"), [false, false]);
    assert!(deleting_dirs(dir.path()).is_empty());
}

#[test]
fn delete_topic_of_a_half_deleted_topic_finishes_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", 1, false, &[]).unwrap();
    write_state(dir.path(), "t");
    faults::inject(Fault {
        op: Op::Rename,
        path_contains: paths::DELETING_PREFIX.into(),
        errno: libc::EIO,
        skip: 1,
        times: Some(1),
        short: false,
        panic: false,
    });
    assert!(store.delete_topic("t").is_err());
    faults::clear();
    // Deleting again finishes what the first call left.
    store.delete_topic("t").unwrap();
    assert_eq!(state_present(dir.path(), "t"), [false, false]);
    assert!(!paths::topic_dir(dir.path(), "t").exists());
}
