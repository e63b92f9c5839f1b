//! Transactions with a time limit (a Kafka client's `transaction.timeout.ms`, served by
//! `tidelog serve --kafka`) across the end of the process that served them: the limit and
//! the start are recorded with the transaction; the id can be taken up again at the same
//! epoch with its transaction (the server's next run); orphan checks leave such a
//! transaction alone until its time is up.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use tidelog_core::format::{BatchMeta, Record, ATTR_TRANSACTIONAL};
use tidelog_core::log::now_ms;
use tidelog_core::producer::identity::{Identity, TxnTimeout};
use tidelog_core::{LogConfig, Store};

fn open(dir: &Path) -> Arc<Store> {
    let store = Arc::new(Store::open(dir, LogConfig::default(), &[]).expect("open store"));
    store.create_topic("t", 2, false, &[]).expect("topic");
    store
}

fn parts(list: &[u32]) -> BTreeSet<(String, u32)> {
    list.iter().map(|p| ("t".to_owned(), *p)).collect()
}

/// Appends one transactional record of `identity` to partition `p` at `sequence`.
fn write(store: &Store, identity: &Identity, p: u32, sequence: i32, value: &str) {
    let meta = BatchMeta {
        base_offset: 0,
        attributes: ATTR_TRANSACTIONAL,
        producer_id: identity.producer_id,
        producer_epoch: identity.epoch,
        base_sequence: sequence,
    };
    let record =
        Record { timestamp: now_ms(), key: None, value: value.as_bytes(), headers: &[], tombstone: false };
    store.topic("t").unwrap().partition(p).unwrap().append(&[record], meta).unwrap();
}

fn stable(store: &Store, p: u32) -> bool {
    let topic = store.topic("t").unwrap();
    let log = topic.partition(p).unwrap();
    log.last_stable_offset().unwrap() == log.end_offset().unwrap()
}

/// An open transaction of "tx" on partitions 0 and 1 with `timeout_ms`, its instance gone
/// (as when the server's process ends). Returns the (producer id, epoch) it had.
fn left_open(store: &Store, timeout_ms: u64) -> (i64, i16) {
    let identity = Identity::claim(store, Some("tx")).unwrap();
    identity.add_to_transaction_within(&parts(&[0, 1]), Some(timeout_ms)).unwrap();
    write(store, &identity, 0, 0, "a");
    write(store, &identity, 1, 0, "b");
    write(store, &identity, 0, 1, "c");
    (identity.producer_id, identity.epoch)
}

#[test]
fn the_time_limit_is_recorded_with_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let identity = Identity::claim(&store, Some("tx")).unwrap();
    let before = u64::try_from(now_ms()).unwrap();
    identity.add_to_transaction_within(&parts(&[0]), Some(5000)).unwrap();
    let after = u64::try_from(now_ms()).unwrap();
    // Adding partitions later keeps the start.
    identity.add_to_transaction_within(&parts(&[1]), Some(9999)).unwrap();
    let (commit, partitions, timeout) = identity.open_transaction().unwrap().unwrap();
    assert!(!commit);
    assert_eq!(partitions, parts(&[0, 1]));
    let TxnTimeout { started_ms, timeout_ms } = timeout.unwrap();
    assert!((before..=after).contains(&started_ms), "{started_ms} in {before}..={after}");
    assert_eq!(timeout_ms, 5000);
    let named = Identity::named(&store).unwrap();
    assert_eq!(named[0].timeout, timeout);
    // The store's own transactions have no limit.
    identity.end_transaction(&store, false).unwrap();
    identity.add_to_transaction(&parts(&[0])).unwrap();
    assert_eq!(identity.open_transaction().unwrap().unwrap().2, None);
}

#[test]
fn an_orphan_with_time_left_is_left_alone_and_finished_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    left_open(&store, 3_600_000);
    assert!(!Identity::abort_if_orphaned(&store, "tx").unwrap());
    assert!(!stable(&store, 0) && !stable(&store, 1));

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    left_open(&store, 0);
    assert!(Identity::abort_if_orphaned(&store, "tx").unwrap());
    assert!(stable(&store, 0) && stable(&store, 1));
}

#[test]
fn the_id_is_taken_up_at_its_epoch_with_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (id, epoch) = left_open(&store, 3_600_000);
    assert!(Identity::resume(&store, "tx", id, epoch + 1).unwrap().is_none(), "not its epoch");
    assert!(Identity::resume(&store, "other", id, epoch).unwrap().is_none(), "no such name");
    let resumed = Identity::resume(&store, "tx", id, epoch).unwrap().expect("taken up");
    assert_eq!((resumed.producer_id, resumed.epoch), (id, epoch));
    assert!(Identity::resume(&store, "tx", id, epoch).unwrap().is_none(), "held by a live instance");
    assert!(!Identity::abort_if_orphaned(&store, "tx").unwrap(), "alive again");
    let (_, partitions, _) = resumed.open_transaction().unwrap().unwrap();
    assert_eq!(partitions, parts(&[0, 1]));
    // It goes on where it was: the next sequence, then the commit.
    let topic = store.topic("t").unwrap();
    let log = topic.partition(0).unwrap();
    assert_eq!(log.next_sequence(id, epoch).unwrap(), 2);
    assert_eq!(log.next_sequence(id, epoch + 1).unwrap(), 0);
    write(&store, &resumed, 0, 2, "d");
    resumed.end_transaction(&store, true).unwrap();
    assert!(stable(&store, 0) && stable(&store, 1));
    let read = log.read(0, 100, usize::MAX).unwrap();
    let values: Vec<String> = read
        .chunks
        .iter()
        .flat_map(|c| c.records().map(|r| String::from_utf8(r.value.to_vec()).unwrap()).collect::<Vec<_>>())
        .collect();
    assert_eq!(values, ["a", "c", "d"]);
}

#[test]
fn a_new_instance_fences_a_taken_up_one_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (id, epoch) = left_open(&store, 3_600_000);
    let resumed = Identity::resume(&store, "tx", id, epoch).unwrap().expect("taken up");
    let fresh = Identity::claim(&store, Some("tx")).unwrap();
    assert_eq!((fresh.producer_id, fresh.epoch), (id, epoch + 1));
    assert!(stable(&store, 0) && stable(&store, 1), "aborted");
    assert!(resumed.check_current().is_err());
    assert!(fresh.open_transaction().unwrap().is_none());
}

#[test]
fn an_instances_timeout_is_kept_with_its_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (id, epoch) = {
        let claimed = Identity::claim_with_timeout(&store, "tx", 2500).unwrap();
        assert_eq!(claimed.timeout_ms(), Some(2500));
        (claimed.producer_id, claimed.epoch)
    };
    let resumed = Identity::resume(&store, "tx", id, epoch).unwrap().expect("taken up");
    assert_eq!(resumed.timeout_ms(), Some(2500));
    drop(resumed);
    // A store producer's instance has none; neither has a fenced one.
    let local = Identity::claim(&store, Some("tx")).unwrap();
    assert_eq!(local.timeout_ms(), None);
    let kafka = Identity::claim_with_timeout(&store, "tx", 7000).unwrap();
    assert_eq!(local.timeout_ms(), None);
    assert_eq!(kafka.timeout_ms(), Some(7000));
}
