//! The table of committed offsets read back from `__consumer_offsets` (issue 14, item 3): a
//! history mixing record versions 1, 2 and 3 of several groups, topics and incarnations
//! gives the newest commit per partition; commits inside open transactions wait for their
//! outcome while later plain commits apply; undecodable records are reported (or passed
//! over); deleting a topic forgets its incarnation's commits only.

use std::path::Path;

use tidelog_core::format::{BatchMeta, Marker, Record, ATTR_CONTROL, ATTR_TRANSACTIONAL};
use tidelog_core::offsets::{record, Commit, OffsetTable, OnUndecodable, OFFSETS_TOPIC};
use tidelog_core::{Error, LogConfig, Store};

fn open(dir: &Path) -> Store {
    let store = Store::open(dir, LogConfig::default(), &[]).expect("open store");
    store
        .create_internal_topic(OFFSETS_TOPIC, tidelog_core::offsets::PARTITIONS, true)
        .expect("offsets topic");
    store
}

/// A version 1 (`incarnation` None) or 2 value, as `tidelog.offsets` wrote them.
fn legacy(generation: i64, incarnation: Option<u64>, entries: &[(u32, i64)], metadata: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(if incarnation.is_some() { 2u16 } else { 1 }).to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    if let Some(i) = incarnation {
        out.extend_from_slice(&i.to_le_bytes());
    }
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for &(p, o) in entries {
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&o.to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u16).to_le_bytes());
        out.extend_from_slice(metadata.as_bytes());
    }
    out
}

fn v3_value(offset: u64, metadata: &str) -> Vec<u8> {
    let mut value = Vec::new();
    record::encode_value(&mut value, 1, offset, metadata.as_bytes());
    value
}

/// Appends `(key, value)` records of `group` as one batch in the group's offsets partition,
/// with `meta` (plain or transactional); returns the first offset.
fn append_as(store: &Store, group: &str, records: &[(Vec<u8>, Vec<u8>)], meta: BatchMeta) -> u64 {
    let topic = store.topic(OFFSETS_TOPIC).expect("offsets topic");
    let p = tidelog_core::offsets::partition_of(group, topic.partition_count());
    let records: Vec<Record<'_>> = records
        .iter()
        .map(|(k, v)| Record { timestamp: 1000, key: Some(k), value: v, headers: &[], tombstone: false })
        .collect();
    topic.partition(p).unwrap().append(&records, meta).expect("append").base_offset
}

fn append(store: &Store, group: &str, key: Vec<u8>, value: Vec<u8>) -> u64 {
    append_as(store, group, &[(key, value)], BatchMeta::plain(0))
}

fn v3(store: &Store, group: &str, topic: &str, inc: u64, p: u32, offset: u64) {
    append(store, group, record::key(group, topic, inc, p), v3_value(offset, ""));
}

fn offsets(table: &OffsetTable, group: &str, topic: &str, inc: u64) -> Vec<(u32, u64)> {
    table.committed(group, topic, inc).map(|(p, c)| (p, c.offset)).collect()
}

fn fresh(store: &Store) -> OffsetTable {
    let mut table = OffsetTable::open(store, OnUndecodable::Fail).unwrap();
    table.catch_up_all().unwrap();
    table
}

const A: u64 = 0xaaaa;
const B: u64 = 0xbbbb;
const C: u64 = 0xcccc;

#[test]
fn a_history_of_every_version_gives_the_newest_commit_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    // g1 on t: a version 1 commit (any incarnation), then version 2 and 3 ones of A.
    append(&store, "g1", b"g1\0t".to_vec(), legacy(-1, None, &[(0, 5), (1, 6), (3, 7)], ""));
    append(&store, "g1", b"g1\0t".to_vec(), legacy(4, Some(A), &[(1, 16), (2, 17)], "m"));
    table.catch_up_all().unwrap();
    assert_eq!(offsets(&table, "g1", "t", A), [(0, 5), (1, 16), (2, 17), (3, 7)]);
    assert_eq!(offsets(&table, "g1", "t", B), [(0, 5), (3, 7)], "version 1 commits apply to any");
    v3(&store, "g1", "t", A, 0, 20);
    // g2 on t: a version 2 commit of A forgotten by a reset (t deleted), then commits of B.
    append(&store, "g2", b"g2\0t".to_vec(), legacy(1, Some(A), &[(0, 1)], ""));
    append(&store, "g2", b"g2\0t".to_vec(), record::encode_reset(A));
    v3(&store, "g2", "t", B, 0, 2);
    // g1 on u (incarnation C): the newer of two commits of a partition wins.
    v3(&store, "g1", "u", C, 3, 30);
    v3(&store, "g1", "u", C, 3, 31);
    // g3 on t: a version 3 commit of A, then a version 2 one of B of the same partition:
    // the newest record of the partition wins, whatever its version.
    v3(&store, "g3", "t", A, 0, 7);
    append(&store, "g3", b"g3\0t".to_vec(), legacy(1, Some(B), &[(0, 8)], ""));
    table.catch_up_all().unwrap();

    assert_eq!(offsets(&table, "g1", "t", A), [(0, 20), (1, 16), (2, 17), (3, 7)]);
    let g1: Vec<(u32, Commit)> = table.committed("g1", "t", A).map(|(p, c)| (p, c.clone())).collect();
    assert_eq!(
        g1[1].1,
        Commit { offset: 16, generation: -1, metadata: "m".into(), timestamp_ms: 1000, incarnation: Some(A) }
    );
    assert_eq!(g1[3].1.incarnation, None);
    assert_eq!(offsets(&table, "g2", "t", A), []);
    assert_eq!(offsets(&table, "g2", "t", B), [(0, 2)]);
    assert_eq!(offsets(&table, "g1", "u", C), [(3, 31)]);
    assert_eq!(offsets(&table, "g3", "t", A), []);
    assert_eq!(offsets(&table, "g3", "t", B), [(0, 8)]);
    let mut groups: Vec<(String, String)> = table.groups().map(|(g, t)| (g.into(), t.into())).collect();
    groups.sort();
    let expected = [("g1", "t"), ("g1", "u"), ("g2", "t"), ("g3", "t")];
    assert_eq!(groups, expected.map(|(g, t)| (g.to_owned(), t.to_owned())));

    // Read in one go by a new table: the same.
    let again = fresh(&store);
    for (g, t) in expected {
        for inc in [A, B, C] {
            assert_eq!(offsets(&again, g, t, inc), offsets(&table, g, t, inc), "{g} {t} {inc}");
        }
    }
}

#[test]
fn a_commit_of_several_partitions_is_one_batch_of_version_3_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    let records: Vec<(Vec<u8>, Vec<u8>)> =
        (0..3).map(|p| (record::key("g", "t", A, p), v3_value(10 + u64::from(p), "x"))).collect();
    append_as(&store, "g", &records, BatchMeta::plain(0));
    table.catch_up_all().unwrap();
    assert_eq!(offsets(&table, "g", "t", A), [(0, 10), (1, 11), (2, 12)]);
}

/// Two group names that share an offsets partition.
fn neighbours() -> (String, String) {
    let p = |g: &str| tidelog_core::offsets::partition_of(g, tidelog_core::offsets::PARTITIONS);
    let first = "ga".to_owned();
    let second = (0..).map(|i| format!("gb{i}")).find(|g| p(g) == p(&first)).unwrap();
    (first, second)
}

fn txn_meta(pid: i64, sequence: i32) -> BatchMeta {
    BatchMeta {
        base_offset: 0,
        attributes: ATTR_TRANSACTIONAL,
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: sequence,
    }
}

fn marker(store: &Store, group: &str, pid: i64, kind: Marker) {
    let meta = BatchMeta {
        base_offset: 0,
        attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: -1,
    };
    let topic = store.topic(OFFSETS_TOPIC).unwrap();
    let p = tidelog_core::offsets::partition_of(group, topic.partition_count());
    let value = kind.value();
    let record = Record { timestamp: 1000, key: None, value: &value, headers: &[], tombstone: false };
    topic.partition(p).unwrap().append(&[record], meta).unwrap();
}

#[test]
fn commits_in_open_transactions_wait_for_their_outcome_and_later_plain_commits_apply() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    let (ga, gb) = neighbours();
    let p = table.partition_of(&ga);
    let commit = |g: &str, o: u64| (record::key(g, "t", A, 0), v3_value(o, ""));

    v3(&store, &ga, "t", A, 0, 1);
    append_as(&store, &ga, &[commit(&ga, 2)], txn_meta(1, 0)); // open
    v3(&store, &gb, "t", A, 0, 3);
    table.catch_up(p).unwrap();
    assert_eq!(offsets(&table, &ga, "t", A), [(0, 1)], "the open transaction's commit waits");
    assert_eq!(offsets(&table, &gb, "t", A), [(0, 3)], "another group's later commit applies");
    assert!(table.has_pending(&ga, "t"));
    assert!(!table.has_pending(&gb, "t"));

    marker(&store, &ga, 1, Marker::Commit);
    table.catch_up(p).unwrap();
    assert_eq!(offsets(&table, &ga, "t", A), [(0, 2)]);
    assert_eq!(offsets(&table, &gb, "t", A), [(0, 3)], "applied again in log order: the same");
    assert!(!table.has_pending(&ga, "t"));

    // A transaction of gb stays open while a plain commit of ga follows, then aborts.
    append_as(&store, &gb, &[commit(&gb, 9)], txn_meta(2, 0));
    v3(&store, &ga, "t", A, 0, 5);
    table.catch_up(p).unwrap();
    assert_eq!(offsets(&table, &ga, "t", A), [(0, 5)]);
    assert_eq!(offsets(&table, &gb, "t", A), [(0, 3)]);
    assert!(table.has_pending(&gb, "t") && !table.has_pending(&ga, "t"));
    marker(&store, &gb, 2, Marker::Abort);
    table.catch_up(p).unwrap();
    assert_eq!(offsets(&table, &gb, "t", A), [(0, 3)], "an aborted commit never applies");
    assert_eq!(offsets(&table, &ga, "t", A), [(0, 5)]);
    assert!(!table.has_pending(&gb, "t"));

    let again = fresh(&store);
    assert_eq!(offsets(&again, &ga, "t", A), [(0, 5)]);
    assert_eq!(offsets(&again, &gb, "t", A), [(0, 3)]);
}

#[test]
fn an_undecodable_record_is_reported_with_its_file_or_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    v3(&store, "g", "t", A, 0, 1);
    let bad = append(&store, "g", record::key("g", "t", A, 0), 9u16.to_le_bytes().to_vec());
    v3(&store, "g", "t", A, 1, 2);
    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    let p = table.partition_of("g");
    for _ in 0..2 {
        match table.catch_up(p) {
            Err(Error::Corrupt { path, offset, reason, .. }) => {
                assert_eq!(offset, bad);
                assert!(path.extension().is_some_and(|e| e == "log"), "{path:?}");
                assert!(reason.contains("unknown version 9"), "{reason}");
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }
    assert_eq!(offsets(&table, "g", "t", A), [(0, 1)], "what came before is applied");

    let mut lenient = OffsetTable::open(&store, OnUndecodable::Skip).unwrap();
    lenient.catch_up_all().unwrap();
    assert_eq!(offsets(&lenient, "g", "t", A), [(0, 1), (1, 2)]);
}

#[test]
fn forgetting_a_deleted_topic_keeps_the_commits_of_its_next_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    v3(&store, "g1", "t", A, 0, 1);
    v3(&store, "g2", "t", A, 0, 2);
    v3(&store, "g2", "t", B, 1, 3);
    v3(&store, "g1", "other", A, 0, 4);
    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    table.forget_topic("t", A).unwrap();
    for t in [&table, &fresh(&store)] {
        assert_eq!(offsets(t, "g1", "t", A), []);
        assert_eq!(offsets(t, "g2", "t", A), []);
        assert_eq!(offsets(t, "g2", "t", B), [(1, 3)]);
        assert_eq!(offsets(t, "g1", "other", A), [(0, 4)]);
        let mut groups: Vec<(&str, &str)> = t.groups().collect();
        groups.sort();
        assert_eq!(groups, [("g1", "other"), ("g2", "t")]);
    }
}
