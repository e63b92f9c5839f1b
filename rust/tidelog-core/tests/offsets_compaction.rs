//! `__consumer_offsets` as a compacted topic (issue 14): version 1 and 2 records are converted
//! to version 3 before an existing topic is made compacted (the offsets never change, a crash
//! between conversion batches reopens to the same offsets), deleting a topic writes version 3
//! tombstones, compaction racing commits keeps the newest commit of every partition, and a
//! reopen reads in proportion to the live commits, not the history.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::offsets::table::SEGMENT_BYTES;
use tidelog_core::offsets::{partition_of, record, OffsetTable, OnUndecodable, OFFSETS_TOPIC, PARTITIONS};
use tidelog_core::settings::Value;
use tidelog_core::{LogConfig, Store};

/// No background cleaner: the tests compact when they mean to.
fn config() -> LogConfig {
    let mut config = LogConfig::default();
    config.cleaner.interval_ms = None;
    config
}

/// A store whose tombstones go at the first compaction that sees them.
fn open(dir: &Path) -> Store {
    Store::open(dir, config(), &[("delete_retention_ms".into(), Value::Int(0))]).expect("open store")
}

/// The offsets topic as versions before this one made it: not compacted.
fn legacy_topic(store: &Store) {
    store.create_internal_topic(OFFSETS_TOPIC, PARTITIONS, true).expect("offsets topic");
}

/// A version 1 (`incarnation` None) or 2 value.
fn legacy(incarnation: Option<u64>, entries: &[(u32, i64)], metadata: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(if incarnation.is_some() { 2u16 } else { 1 }).to_le_bytes());
    out.extend_from_slice(&3i64.to_le_bytes());
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

fn append(store: &Store, group: &str, key: &[u8], value: Option<&[u8]>) {
    let topic = store.topic(OFFSETS_TOPIC).expect("offsets topic");
    let p = partition_of(group, topic.partition_count());
    let record = Record {
        timestamp: 1_000,
        key: Some(key),
        value: value.unwrap_or_default(),
        headers: &[],
        tombstone: value.is_none(),
    };
    topic.partition(p).unwrap().append(&[record], BatchMeta::plain(0)).unwrap();
}

fn v3(store: &Store, group: &str, topic: &str, inc: u64, p: u32, offset: u64) {
    let mut value = Vec::new();
    record::encode_value(&mut value, 1, offset, b"");
    append(store, group, &record::key(group, topic, inc, p), Some(&value));
}

/// A table that reads without converting anything.
fn reader(store: &Store) -> OffsetTable {
    let mut table = OffsetTable::new(store.topic(OFFSETS_TOPIC).unwrap(), OnUndecodable::Fail);
    table.catch_up_all().unwrap();
    table
}

/// Every (group, topic) -> partition -> (offset, metadata, timestamp) for `incarnation`.
type Answers = BTreeMap<(String, String), BTreeMap<u32, (u64, String, i64)>>;

fn answers(table: &OffsetTable, incarnation: u64) -> Answers {
    let mut out = Answers::new();
    for (g, t) in table.groups() {
        let commits: BTreeMap<u32, (u64, String, i64)> = table
            .committed(g, t, incarnation)
            .map(|(p, c)| (p, (c.offset, c.metadata.clone(), c.timestamp_ms)))
            .collect();
        if !commits.is_empty() {
            out.insert((g.to_owned(), t.to_owned()), commits);
        }
    }
    out
}

/// Every record of the offsets topic: (key, tombstone).
fn raw_records(store: &Store) -> Vec<(Vec<u8>, bool)> {
    let topic = store.topic(OFFSETS_TOPIC).unwrap();
    let mut out = Vec::new();
    for log in topic.partitions().unwrap() {
        let mut at = log.start_offset().unwrap();
        let end = log.end_offset().unwrap();
        while at < end {
            let read = log.read_uncommitted(at, 10_000, usize::MAX).unwrap();
            for chunk in &read.chunks {
                out.extend(chunk.records().map(|r| (r.key.unwrap_or_default().to_vec(), r.tombstone)));
            }
            if read.next_offset <= at {
                break;
            }
            at = read.next_offset;
        }
    }
    out
}

fn is_v3_key(key: &[u8]) -> bool {
    matches!(record::decode(key, None), Ok(record::Decoded::Tombstone { .. }))
}

#[test]
fn legacy_records_convert_to_version_3_with_the_same_offsets_then_compact_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t = store.create_topic("t", 4, false, &[]).unwrap();
    let inc = t.incarnation();
    let other = inc ^ 0xffff;
    legacy_topic(&store);
    // g1: a version 1 commit (any incarnation), then a version 2 one of two partitions.
    append(&store, "g1", b"g1\0t", Some(&legacy(None, &[(0, 5), (1, 6), (3, 7)], "")));
    append(&store, "g1", b"g1\0t", Some(&legacy(Some(inc), &[(1, 16), (2, 17)], "meta")));
    // g2: a version 2 commit forgotten by a reset, then a version 3 one.
    append(&store, "g2", b"g2\0t", Some(&legacy(Some(inc), &[(0, 1), (1, 1)], "")));
    v3(&store, "g2", "t", inc, 3, 9);
    append(&store, "g2", b"g2\0t", Some(&record::encode_reset(inc)));
    v3(&store, "g2", "t", inc, 0, 2);
    // g3: a version 3 commit of partition 0, then a version 2 one of another incarnation
    // of the same partition: the version 3 key is dead.
    v3(&store, "g3", "t", inc, 0, 7);
    append(&store, "g3", b"g3\0t", Some(&legacy(Some(other), &[(0, 8)], "")));
    // g4: a version 1 commit of a topic that no longer exists.
    append(&store, "g4", b"g4\0gone", Some(&legacy(None, &[(0, 3)], "")));

    let before = reader(&store);
    assert_eq!(before.unconverted().len(), 4);
    assert_eq!(before.dead_keys("t", "g3"), [(inc, 0)]);
    let mut expected = answers(&before, inc);
    // Version 1 commits applied to any incarnation; converted, they name the topic's.
    let expected_other: Answers =
        [(("g3".into(), "t".into()), [(0, (8, String::new(), 1_000))].into())].into();
    assert_eq!(
        answers(&before, other)[&("g3".into(), "t".into())],
        expected_other[&("g3".into(), "t".into())]
    );
    // Dropped by the conversion: no topic "gone" exists to name.
    assert!(expected.remove(&("g4".into(), "gone".into())).is_some());
    assert_eq!(expected[&("g1".into(), "t".into())].len(), 4);

    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    table.catch_up_all().unwrap();
    let settings = store.topic(OFFSETS_TOPIC).unwrap().config().unwrap();
    assert!(settings.compacts(), "made compacted once converted");
    assert_eq!(settings.segment_bytes as i64, SEGMENT_BYTES);
    assert!(table.unconverted().is_empty());
    assert_eq!(answers(&table, inc), expected, "the offsets are unchanged");
    assert_eq!(answers(&table, other), expected_other);
    let g1 = table.group_commits("t", "g1").unwrap();
    assert!(
        g1.values().all(|c| c.incarnation == Some(inc)),
        "version 1 commits name the topic's incarnation"
    );
    assert!(table.group_commits("gone", "g4").is_none(), "no topic has the commits of g4");

    // Compaction removes every version 1 and 2 record, and the tombstones.
    store.topic(OFFSETS_TOPIC).unwrap().compact().unwrap();
    let left = raw_records(&store);
    assert!(left.iter().all(|(key, tombstone)| is_v3_key(key) && !tombstone), "{left:?}");
    let again = reader(&store);
    assert_eq!(answers(&again, inc), expected);
    assert_eq!(answers(&again, other), expected_other);
    assert!(again.dead_keys("t", "g3").is_empty(), "the dead key got its tombstone");
    let live: usize = expected.values().chain(expected_other.values()).map(BTreeMap::len).sum();
    assert_eq!(again.records_read(), live as u64, "only the live commits are left");
    assert_eq!(left.len(), live);

    // The next open converts nothing and changes nothing.
    let reopened = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    drop(reopened);
    assert_eq!(raw_records(&store).len(), live);
}

#[test]
fn a_conversion_keeps_the_generation_of_version_3_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    legacy_topic(&store);
    let inc = store.create_topic("t", 2, false, &[]).unwrap().incarnation();
    let commit = |generation: i64, offset: u64| {
        let mut value = Vec::new();
        record::encode_value(&mut value, generation, offset, b"");
        append(&store, "g", &record::key("g", "t", inc, 0), Some(&value));
    };
    append(&store, "g", b"g\0t", Some(&legacy(Some(inc), &[(1, 4)], "")));
    commit(5, 10);
    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    assert!(table.unconverted().is_empty(), "converted");
    // A commit of an older generation after the conversion is still fenced.
    commit(4, 3);
    table.catch_up_all().unwrap();
    let offsets =
        |t: &OffsetTable| t.committed("g", "t", inc).map(|(p, c)| (p, c.offset)).collect::<Vec<_>>();
    assert_eq!(offsets(&table), [(0, 10), (1, 4)]);
    for log in store.topic(OFFSETS_TOPIC).unwrap().partitions().unwrap() {
        log.seal_active().unwrap();
    }
    store.topic(OFFSETS_TOPIC).unwrap().compact().unwrap();
    assert_eq!(offsets(&reader(&store)), [(0, 10), (1, 4)]);
}

#[test]
fn a_crash_between_conversion_batches_reopens_to_the_same_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let t = store.create_topic("t", 8, false, &[]).unwrap();
    let inc = t.incarnation();
    legacy_topic(&store);
    let groups: Vec<String> = (0..12).map(|g| format!("group-{g}")).collect();
    for (i, g) in groups.iter().enumerate() {
        let key = format!("{g}\0t");
        for round in 0..3i64 {
            let entries: Vec<(u32, i64)> = (0..8u32)
                .filter(|p| (*p as usize + i) % 3 != round as usize)
                .map(|p| (p, round * 100 + i64::from(p)))
                .collect();
            append(&store, g, key.as_bytes(), Some(&legacy(Some(inc), &entries, "m")));
        }
    }
    let expected = answers(&reader(&store), inc);
    assert_eq!(expected.len(), groups.len());
    let mut converted = 0;
    loop {
        // Each step stops where a crash between two batches would.
        let mut table = OffsetTable::new(store.topic(OFFSETS_TOPIC).unwrap(), OnUndecodable::Fail);
        let n = table.convert_legacy(&store, Some(5)).unwrap();
        converted += n;
        let seen = reader(&store);
        assert_eq!(answers(&seen, inc), expected, "after {converted} batches");
        assert_eq!(seen.unconverted().len(), groups.len() - converted);
        if n == 0 {
            break;
        }
    }
    assert_eq!(converted, groups.len());
    // The open that finds nothing left to convert makes the topic compacted.
    let table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    drop(table);
    store.topic(OFFSETS_TOPIC).unwrap().compact().unwrap();
    assert_eq!(answers(&reader(&store), inc), expected);
    assert!(raw_records(&store).iter().all(|(key, _)| is_v3_key(key)));
}

#[test]
fn a_conversion_never_overwrites_a_commit_made_after_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let inc = store.create_topic("t", 2, false, &[]).unwrap().incarnation();
    legacy_topic(&store);
    append(&store, "g", b"g\0t", Some(&legacy(Some(inc), &[(0, 5), (1, 6)], "")));
    let mut table = OffsetTable::new(store.topic(OFFSETS_TOPIC).unwrap(), OnUndecodable::Fail);
    table.catch_up_all().unwrap();
    // Another process commits after this table read: the conversion reads it first.
    v3(&store, "g", "t", inc, 0, 50);
    assert_eq!(table.convert_legacy(&store, None).unwrap(), 1);
    let seen = reader(&store);
    let offsets: Vec<(u32, u64)> = seen.committed("g", "t", inc).map(|(p, c)| (p, c.offset)).collect();
    assert_eq!(offsets, [(0, 50), (1, 6)]);
}

#[test]
fn a_commit_in_an_open_transaction_holds_the_conversion_and_the_switch_to_compacted() {
    use tidelog_core::format::{Marker, ATTR_CONTROL, ATTR_TRANSACTIONAL};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let inc = store.create_topic("t", 2, false, &[]).unwrap().incarnation();
    legacy_topic(&store);
    append(&store, "g", b"g\0t", Some(&legacy(Some(inc), &[(0, 5), (1, 6)], "")));
    let offsets = store.topic(OFFSETS_TOPIC).unwrap();
    let log = offsets.partition(partition_of("g", PARTITIONS)).unwrap();
    let txn = |attributes| BatchMeta {
        base_offset: 0,
        attributes,
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let mut value = Vec::new();
    record::encode_value(&mut value, 1, 40, b"");
    let key = record::key("g", "t", inc, 0);
    let commit = Record { timestamp: 1, key: Some(&key), value: &value, headers: &[], tombstone: false };
    log.append(&[commit], txn(ATTR_TRANSACTIONAL)).unwrap();

    let table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    assert_eq!(table.unconverted(), [("g".to_owned(), "t".to_owned())], "left for later");
    assert!(!offsets.config().unwrap().compacts(), "not compacted while records are left");

    let marker = Marker::Commit.value();
    let end = Record { timestamp: 1, key: None, value: &marker, headers: &[], tombstone: false };
    log.append(&[end], BatchMeta { base_sequence: -1, ..txn(ATTR_TRANSACTIONAL | ATTR_CONTROL) }).unwrap();
    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    table.catch_up_all().unwrap();
    assert!(table.unconverted().is_empty());
    assert!(offsets.config().unwrap().compacts());
    let got: Vec<(u32, u64)> = table.committed("g", "t", inc).map(|(p, c)| (p, c.offset)).collect();
    assert_eq!(got, [(0, 40), (1, 6)], "the transaction's commit is newer than the converted one");
}

#[test]
fn forgetting_a_topic_writes_version_3_tombstones_that_compaction_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    assert!(store.topic(OFFSETS_TOPIC).unwrap().config().unwrap().compacts(), "created compacted");
    const A: u64 = 0xa;
    const B: u64 = 0xb;
    for p in 0..3 {
        v3(&store, "g1", "t", A, p, 10 + u64::from(p));
        v3(&store, "g2", "t", A, p, 20 + u64::from(p));
    }
    // Partition 2 of g2 moves to incarnation B: the key of A is dead, still in the log.
    v3(&store, "g2", "t", B, 2, 99);
    v3(&store, "g1", "kept", A, 0, 1);
    table.catch_up_all().unwrap();
    assert_eq!(table.dead_keys("t", "g2"), [(A, 2)]);
    let before = raw_records(&store).len();

    table.forget_topic("t", A).unwrap();
    let written = &raw_records(&store)[..];
    let new: Vec<&(Vec<u8>, bool)> = written.iter().filter(|(_, tombstone)| *tombstone).collect();
    assert_eq!(written.len() - before, new.len(), "only tombstones are written");
    let mut keys: Vec<Vec<u8>> = new.iter().map(|(k, _)| k.clone()).collect();
    keys.sort();
    let mut expected: Vec<Vec<u8>> =
        (0..3).flat_map(|p| [record::key("g1", "t", A, p), record::key("g2", "t", A, p)]).collect();
    expected.sort();
    assert_eq!(keys, expected, "one version 3 tombstone per key of the incarnation, dead ones too");
    for t in [&table, &reader(&store)] {
        assert_eq!(t.committed("g1", "t", A).count(), 0);
        assert_eq!(t.committed("g2", "t", A).count(), 0);
        let b: Vec<(u32, u64)> = t.committed("g2", "t", B).map(|(p, c)| (p, c.offset)).collect();
        assert_eq!(b, [(2, 99)]);
        assert!(t.dead_keys("t", "g2").is_empty());
    }

    for log in store.topic(OFFSETS_TOPIC).unwrap().partitions().unwrap() {
        log.seal_active().unwrap();
    }
    store.topic(OFFSETS_TOPIC).unwrap().compact().unwrap();
    let mut left: Vec<Vec<u8>> = raw_records(&store).into_iter().map(|(k, _)| k).collect();
    left.sort();
    assert_eq!(left, [record::key("g1", "kept", A, 0), record::key("g2", "t", B, 2)]);
}

/// Commits of `groups` x `partitions` of topic "t" (incarnation `inc`), `rounds` times, one
/// batch per (group, round) as `consumer.commit` writes them; returns the newest offsets.
fn commit_rounds(
    store: &Store,
    groups: &[String],
    partitions: u32,
    inc: u64,
    rounds: u64,
) -> BTreeMap<(String, u32), u64> {
    let offsets = store.topic(OFFSETS_TOPIC).unwrap();
    let keys: Vec<Vec<Vec<u8>>> =
        groups.iter().map(|g| (0..partitions).map(|p| record::key(g, "t", inc, p)).collect()).collect();
    let mut newest = BTreeMap::new();
    for round in 0..rounds {
        for (g, group) in groups.iter().enumerate() {
            let value = record::value_without_metadata(1, round);
            let records: Vec<Record<'_>> = keys[g]
                .iter()
                .map(|k| Record { timestamp: 1, key: Some(k), value: &value, headers: &[], tombstone: false })
                .collect();
            let log = offsets.partition(partition_of(group, offsets.partition_count())).unwrap();
            log.append(&records, BatchMeta::plain(0)).unwrap();
            for p in 0..partitions {
                newest.insert((group.clone(), p), round);
            }
        }
    }
    newest
}

#[test]
fn a_reopen_reads_in_proportion_to_the_live_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let inc = store.create_topic("t", 10, false, &[]).unwrap().incarnation();
    drop(OffsetTable::open(&store, OnUndecodable::Fail).unwrap());
    let groups: Vec<String> = (0..10).map(|g| format!("g{g}")).collect();
    let rounds = 30_000;
    let newest = commit_rounds(&store, &groups, 10, inc, rounds);
    let history = rounds * 100;
    let offsets = store.topic(OFFSETS_TOPIC).unwrap();
    offsets.compact().unwrap();

    let mut table = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
    table.catch_up_all().unwrap();
    for ((g, p), offset) in &newest {
        let c: BTreeMap<u32, u64> = table.committed(g, "t", inc).map(|(p, c)| (p, c.offset)).collect();
        assert_eq!(c.get(p), Some(offset), "{g} {p}");
    }
    // What is left: the live commits, plus at most a segment's worth per partition (the
    // active segments, which the cleaner never touches). A batch of 10 commits takes more
    // than 10 * 40 bytes.
    let per_segment = SEGMENT_BYTES as u64 / 40;
    let used: std::collections::BTreeSet<u32> = groups.iter().map(|g| partition_of(g, PARTITIONS)).collect();
    let bound = 100 + used.len() as u64 * per_segment;
    assert!(table.records_read() <= bound, "{} records read, bound {bound}", table.records_read());
    assert!(table.records_read() * 4 < history, "{} of {history}", table.records_read());
}

#[test]
fn commits_racing_the_cleaner_keep_the_newest_per_partition_and_never_move_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let inc = store.create_topic("t", 4, false, &[]).unwrap().incarnation();
    drop(OffsetTable::open(&store, OnUndecodable::Fail).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let cleaner = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !done.load(Ordering::Relaxed) {
                swaps += usize::from(store.topic(OFFSETS_TOPIC).unwrap().compact().unwrap().swapped);
            }
            swaps
        })
    };
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            // A table kept up to date, and fresh ones, while the cleaner swaps segments:
            // offsets only ever go forward.
            let mut kept = OffsetTable::new(store.topic(OFFSETS_TOPIC).unwrap(), OnUndecodable::Fail);
            let mut seen: BTreeMap<(String, u32), u64> = BTreeMap::new();
            let mut looks = 0;
            while !done.load(Ordering::Relaxed) {
                kept.catch_up_all().unwrap();
                let fresh = reader_of(&store);
                for t in [&kept, &fresh] {
                    for (g, _) in t.groups() {
                        for (p, c) in t.committed(g, "t", inc) {
                            let last = seen.entry((g.to_owned(), p)).or_insert(0);
                            assert!(c.offset >= *last, "{g} {p}: {} after {last}", c.offset);
                            *last = c.offset;
                        }
                    }
                }
                looks += 1;
            }
            looks
        })
    };
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let groups = vec![format!("writer-{w}")];
                commit_rounds(&store, &groups, 4, inc, 30_000)
            })
        })
        .collect();
    let mut newest = BTreeMap::new();
    for w in writers {
        newest.extend(w.join().unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let swaps = cleaner.join().unwrap();
    let looks = reader.join().unwrap();
    assert!(swaps > 0 && looks > 0, "{swaps} swaps, {looks} looks");
    store.topic(OFFSETS_TOPIC).unwrap().compact().unwrap();
    let table = reader_of(&store);
    for ((g, p), offset) in &newest {
        let c: BTreeMap<u32, u64> = table.committed(g, "t", inc).map(|(p, c)| (p, c.offset)).collect();
        assert_eq!(c.get(p), Some(offset), "{g} {p}");
    }
}

fn reader_of(store: &Store) -> OffsetTable {
    reader(store)
}

/// One record of a random history: (group, topic, incarnation, partition, what) where what
/// is a version 3 commit of a group generation and an offset, a version 3 tombstone, a
/// version 2 commit or reset.
#[derive(Clone, Debug)]
enum Op {
    V3(i64, u64),
    Tombstone,
    V2(u64),
    Reset,
}

fn op_record(g: u8, t: u8, inc: u64, p: u32, op: &Op) -> (Vec<u8>, Option<Vec<u8>>) {
    let (group, topic) = (format!("g{g}"), format!("t{t}"));
    match op {
        Op::V3(generation, offset) => {
            let mut value = Vec::new();
            record::encode_value(&mut value, *generation, *offset, if offset % 3 == 0 { b"m" } else { b"" });
            (record::key(&group, &topic, inc, p), Some(value))
        }
        Op::Tombstone => (record::key(&group, &topic, inc, p), None),
        Op::V2(offset) => {
            (record::reset_key(&group, &topic), Some(legacy(Some(inc), &[(p, *offset as i64)], "")))
        }
        Op::Reset => (record::reset_key(&group, &topic), Some(record::encode_reset(inc))),
    }
}

use proptest::prelude::Strategy as _;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// The catch-up's fast path (runs of version 3 commits of one key prefix) gives what
    /// applying every record on its own gives, dead keys included.
    #[test]
    fn a_catch_up_gives_what_applying_each_record_gives(
        history in proptest::collection::vec(
            (0u8..2, 0u8..2, 1u64..3, 0u32..3,
             proptest::prop_oneof![
                 6 => (-1i64..4, 0u64..50).prop_map(|(g, o)| Op::V3(g, o)),
                 1 => proptest::strategy::Just(Op::Tombstone),
                 1 => (0u64..50).prop_map(Op::V2),
                 1 => proptest::strategy::Just(Op::Reset),
             ],
             1usize..4),
            1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        legacy_topic(&store);
        let offsets = store.topic(OFFSETS_TOPIC).unwrap();
        let mut oracle = OffsetTable::new(offsets.clone(), OnUndecodable::Fail);
        // Every record goes to partition 0, in batches of the given sizes.
        let log = offsets.partition(0).unwrap();
        let mut pending: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (i, (g, t, inc, p, op, batch)) in history.iter().enumerate() {
            let (key, value) = op_record(*g, *t, *inc, *p, op);
            oracle.apply(&key, value.as_deref(), 1_000).unwrap();
            pending.push((key, value));
            if pending.len() >= *batch || i + 1 == history.len() {
                let records: Vec<Record<'_>> = pending
                    .iter()
                    .map(|(k, v)| Record {
                        timestamp: 1_000,
                        key: Some(k),
                        value: v.as_deref().unwrap_or_default(),
                        headers: &[],
                        tombstone: v.is_none(),
                    })
                    .collect();
                log.append(&records, BatchMeta::plain(0)).unwrap();
                pending.clear();
            }
        }
        let read = reader(&store);
        for g in 0..2u8 {
            for t in 0..2u8 {
                let (group, topic) = (format!("g{g}"), format!("t{t}"));
                proptest::prop_assert_eq!(read.group_commits(&topic, &group), oracle.group_commits(&topic, &group));
                proptest::prop_assert_eq!(read.dead_keys(&topic, &group), oracle.dead_keys(&topic, &group));
            }
        }
        proptest::prop_assert_eq!(read.unconverted(), oracle.unconverted());
    }

    /// Compaction keeps what every reader shows, fences included: a history of version 3
    /// commits of random generations (stale ones among them), tombstones and resets,
    /// compacted, read by a new table, then more of it appended and compacted again: the
    /// new table shows what one applying every record shows, and so does a table that
    /// read along. (Records of one incarnation per topic: a reset record of a newer
    /// incarnation replacing an older one's is the writers' to cover, with tombstones.)
    #[test]
    fn compaction_never_changes_what_a_reader_shows(
        history in proptest::collection::vec(
            (0u8..2, 0u8..2, 0u32..3,
             proptest::prop_oneof![
                 8 => (-1i64..5, 0u64..50).prop_map(|(g, o)| Op::V3(g, o)),
                 1 => proptest::strategy::Just(Op::Tombstone),
                 1 => proptest::strategy::Just(Op::Reset),
             ]),
            1..80),
        split in 0usize..80,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut along = OffsetTable::open(&store, OnUndecodable::Fail).unwrap();
        let offsets = store.topic(OFFSETS_TOPIC).unwrap();
        let mut oracle = OffsetTable::new(offsets.clone(), OnUndecodable::Fail);
        let log = offsets.partition(0).unwrap();
        let split = split.min(history.len());
        for part in [&history[..split], &history[split..]] {
            for (g, t, p, op) in part {
                let (key, value) = op_record(*g, *t, 7, *p, op);
                oracle.apply(&key, value.as_deref(), 1_000).unwrap();
                let record = Record {
                    timestamp: 1_000,
                    key: Some(&key),
                    value: value.as_deref().unwrap_or_default(),
                    headers: &[],
                    tombstone: value.is_none(),
                };
                log.append(&[record], BatchMeta::plain(0)).unwrap();
            }
            along.catch_up_all().unwrap();
            if !part.is_empty() {
                log.seal_active().unwrap();
                offsets.compact().unwrap();
            }
            let read = reader(&store);
            for g in 0..2u8 {
                for t in 0..2u8 {
                    let (group, topic) = (format!("g{g}"), format!("t{t}"));
                    let expected = oracle.group_commits(&topic, &group);
                    proptest::prop_assert_eq!(read.group_commits(&topic, &group), expected);
                    proptest::prop_assert_eq!(along.group_commits(&topic, &group), expected);
                }
            }
        }
    }
}
