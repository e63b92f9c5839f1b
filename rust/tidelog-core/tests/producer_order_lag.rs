//! The producer keeps per-partition send order whatever the priorities, and `max_lag` is a
//! bound the writer enforces from the commits in `__consumer_offsets` (issue 13, items 6
//! and 7). Commit records are written here as `python/tidelog/offsets.py` writes them.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::partitioner::partition_for_key;
use tidelog_core::producer::lag::OFFSETS_TOPIC;
use tidelog_core::producer::{OnFull, Producer, ProducerConfig};
use tidelog_core::{LogConfig, Store};

const MAX_LAG: u64 = 30;
const BUFFER: usize = 64;
const BOUND: u64 = MAX_LAG + BUFFER as u64;

fn open(dir: &Path) -> Arc<Store> {
    let store = Arc::new(Store::open(dir, LogConfig::default(), &[]).expect("open store"));
    store.create_internal_topic(OFFSETS_TOPIC, 8, true).expect("offsets topic");
    store
}

/// The value of a commit record as offsets.py writes it: version 1 names no incarnation,
/// version 2 does; generation -2 with no partitions is the record that forgets commits.
fn record_value(generation: i64, incarnation: Option<u64>, offsets: &[(u32, i64)]) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&(if incarnation.is_some() { 2u16 } else { 1u16 }).to_le_bytes());
    value.extend_from_slice(&generation.to_le_bytes());
    if let Some(incarnation) = incarnation {
        value.extend_from_slice(&incarnation.to_le_bytes());
    }
    value.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    for &(p, o) in offsets {
        value.extend_from_slice(&p.to_le_bytes());
        value.extend_from_slice(&o.to_le_bytes());
        value.extend_from_slice(&0u16.to_le_bytes());
    }
    value
}

/// Appends one commit record of `group` on `topic` (layout version 1 of offsets.py).
fn commit(store: &Store, group: &str, topic: &str, offsets: &[(u32, i64)]) {
    append_record(store, group, topic, &record_value(-1, None, offsets));
}

/// Appends one commit record of `group` on `topic` of `incarnation` (layout version 2).
fn commit_v2(store: &Store, group: &str, topic: &str, incarnation: u64, offsets: &[(u32, i64)]) {
    append_record(store, group, topic, &record_value(-1, Some(incarnation), offsets));
}

/// The version 2 record that forgets `group`'s commits on `topic`'s deleted `incarnation`.
fn reset_v2(store: &Store, group: &str, topic: &str, incarnation: u64) {
    append_record(store, group, topic, &record_value(-2, Some(incarnation), &[]));
}

/// The record offsets.py writes when `topic` is deleted: the group's commits are forgotten.
fn reset(store: &Store, group: &str, topic: &str) {
    append_record(store, group, topic, &record_value(-2, None, &[]));
}

fn append_record(store: &Store, group: &str, topic: &str, value: &[u8]) {
    let key = format!("{group}\0{topic}");
    let offsets = store.topic(OFFSETS_TOPIC).expect("offsets topic");
    let p = partition_for_key(group.as_bytes(), offsets.partition_count());
    let record = Record { timestamp: 0, key: Some(key.as_bytes()), value, headers: &[], tombstone: false };
    offsets.partition(p).unwrap().append(&[record], BatchMeta::plain(0)).expect("commit");
}

fn producer(store: &Arc<Store>, on_full: OnFull, max_lag: Option<u64>, linger: Duration) -> Producer {
    producer_with(store, on_full, max_lag, linger, BUFFER)
}

fn producer_with(
    store: &Arc<Store>,
    on_full: OnFull,
    max_lag: Option<u64>,
    linger: Duration,
    buffer_messages: usize,
) -> Producer {
    let config = ProducerConfig {
        buffer_messages,
        high_watermark: 1.0,
        on_full,
        max_lag,
        linger,
        ..ProducerConfig::default()
    };
    Producer::new(store.clone(), config, None).expect("producer")
}

fn values(store: &Store, topic: &str, p: u32) -> Vec<u64> {
    let log = store.topic(topic).unwrap();
    let log = log.partition(p).unwrap();
    let end = log.end_offset().unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < end {
        let read = log.read(at, 10_000, usize::MAX).unwrap();
        for chunk in &read.chunks {
            out.extend(
                chunk.records().map(|r| std::str::from_utf8(r.value).unwrap().parse::<u64>().unwrap()),
            );
        }
        at = read.next_offset;
    }
    out
}

fn end(store: &Store, topic: &str, p: u32) -> u64 {
    store.topic(topic).unwrap().partition(p).unwrap().end_offset().unwrap()
}

/// Waits until nothing more is written for a while, checking `check` meanwhile.
fn wait_until_stalled(store: &Store, topic: &str, p: u32, check: impl Fn()) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (u64::MAX, Instant::now());
    while Instant::now() < deadline {
        check();
        let now = end(store, topic, p);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() > Duration::from_millis(300) {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("the producer never stopped writing");
}

#[test]
fn priorities_do_not_reorder_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", 2, false, &[]).unwrap();
    for on_full in [OnFull::Shed, OnFull::Block(None), OnFull::Raise] {
        // A buffer that never fills: no pressure, so nothing is shed.
        let producer = producer_with(&store, on_full, None, Duration::from_millis(1), 65_536);
        let before = [end(&store, "t", 0), end(&store, "t", 1)];
        for i in 0..200u64 {
            let accepted = producer.send(
                "t",
                i.to_string().as_bytes(),
                None,
                &[],
                Some((i % 2) as u32),
                (i % 3) as i32,
                true,
            );
            assert!(accepted.unwrap());
        }
        producer.close().unwrap();
        for p in 0..2u32 {
            let got = values(&store, "t", p)[before[p as usize] as usize..].to_vec();
            assert_eq!(got, (0..200).filter(|i| i % 2 == u64::from(p)).collect::<Vec<_>>(), "{on_full:?}");
        }
    }
}

#[test]
fn shedding_drops_the_oldest_of_the_lowest_priority_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", 1, false, &[]).unwrap();
    // The writer lingers through the sends: what is kept is decided by shedding alone.
    let producer = Arc::new(producer(&store, OnFull::Shed, None, Duration::from_secs(60)));
    thread::sleep(Duration::from_millis(50));
    // 64 of priority 0, then 64 of priority 1: each evicts the oldest priority-0 message.
    for i in 0..128u64 {
        let priority = i32::from(i >= 64);
        assert!(producer.send("t", i.to_string().as_bytes(), None, &[], Some(0), priority, true).unwrap());
    }
    // Priority 0 is refused now (nothing lower is buffered), priority 1 too (nothing lower).
    assert!(!producer.send("t", b"128", None, &[], Some(0), 0, true).unwrap());
    assert!(!producer.send("t", b"129", None, &[], Some(0), 1, true).unwrap());
    // Priority 2 evicts the oldest priority-1 message.
    assert!(producer.send("t", b"130", None, &[], Some(0), 2, true).unwrap());
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    let stats = producer.stats();
    assert_eq!(values(&store, "t", 0), (65..128).chain([130]).collect::<Vec<_>>());
    let dropped: std::collections::HashMap<i32, u64> = stats.dropped.into_iter().collect();
    assert_eq!(dropped[&0], 65);
    assert_eq!(dropped[&1], 2);
    assert_eq!(dropped.get(&2).copied().unwrap_or(0), 0);
    assert_eq!(stats.written, 64);
}

#[test]
fn max_lag_bounds_what_is_written_past_the_slowest_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", 1, false, &[]).unwrap();
    commit(&store, "slow", "t", &[(0, 0)]);
    commit(&store, "fast", "t", &[(0, 0)]);
    let producer = Arc::new(producer(&store, OnFull::Block(None), Some(MAX_LAG), Duration::from_millis(1)));
    let sender = {
        let producer = producer.clone();
        thread::spawn(move || {
            for i in 0..300u64 {
                producer.send("t", i.to_string().as_bytes(), None, &[], Some(0), 0, true).unwrap();
            }
        })
    };
    wait_until_stalled(&store, "t", 0, || assert!(end(&store, "t", 0) <= BOUND));
    assert!(!sender.is_finished());
    assert!(end(&store, "t", 0) > MAX_LAG);
    // The fast group alone moving on changes nothing: the slow one bounds the writer.
    commit(&store, "fast", "t", &[(0, 300)]);
    wait_until_stalled(&store, "t", 0, || assert!(end(&store, "t", 0) <= BOUND));
    // The slow group's commits let it go on, never past the bound.
    let mut committed = 0;
    while !sender.is_finished() || end(&store, "t", 0) < 300 {
        committed = end(&store, "t", 0);
        commit(&store, "slow", "t", &[(0, committed as i64)]);
        thread::sleep(Duration::from_millis(2));
        assert!(end(&store, "t", 0) <= committed + BOUND);
    }
    sender.join().unwrap();
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    assert_eq!(values(&store, "t", 0), (0..300).collect::<Vec<_>>());
    assert!(committed <= 300);
    assert!(producer.stats().high_watermark_hits >= 1);
}

#[test]
fn a_forgotten_group_and_a_member_without_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", 1, false, &[]).unwrap();
    commit(&store, "gone", "t", &[(0, 0)]);
    reset(&store, "gone", "t");
    // A group with members and no commit counts from the start; its name is not a plain
    // file name, so its state file is named by its hex.
    let groups = dir.path().join("groups").join("t");
    std::fs::create_dir_all(&groups).unwrap();
    let name = "a group/ü";
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(groups.join(format!("~{hex}.json")), b"{}").unwrap();
    let producer = producer(&store, OnFull::Raise, Some(MAX_LAG), Duration::ZERO);
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.send("t", sent.to_string().as_bytes(), None, &[], Some(0), 0, true).is_ok() {
        sent += 1;
        assert!(end(&store, "t", 0) <= BOUND);
        assert!(Instant::now() < deadline, "pressure never started");
    }
    wait_until_stalled(&store, "t", 0, || assert!(end(&store, "t", 0) <= BOUND));
    assert!(end(&store, "t", 0) <= BOUND && sent > MAX_LAG);
    // Its first commit, under its real name, releases the rest.
    commit(&store, name, "t", &[(0, sent as i64)]);
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    assert_eq!(end(&store, "t", 0), sent);
    producer.close().unwrap();
}

#[test]
fn lag_pressure_ends_after_a_commit_even_with_a_deleted_topic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_topic("t", 1, false, &[]).unwrap();
    store.create_topic("gone", 1, false, &[]).unwrap();
    commit(&store, "slow", "t", &[(0, 0)]);
    // The deleted topic's group keeps its commits (nothing wrote a reset record).
    commit(&store, "other", "gone", &[(0, 0)]);
    let producer = producer(&store, OnFull::Raise, Some(MAX_LAG), Duration::ZERO);
    producer.send("gone", b"x", None, &[], Some(0), 0, true).unwrap();
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    let mut sent = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.send("t", sent.to_string().as_bytes(), None, &[], Some(0), 0, true).is_ok() {
        sent += 1;
        assert!(Instant::now() < deadline, "pressure never started");
    }
    wait_until_stalled(&store, "t", 0, || ());
    // Deleted while pressure is on: its partitions can no longer be looked at.
    store.delete_topic("gone").unwrap();
    commit(&store, "slow", "t", &[(0, sent as i64)]);
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    // Pressure ends once the group is back under max_lag * low_watermark.
    let deadline = Instant::now() + Duration::from_secs(60);
    while producer.send("t", sent.to_string().as_bytes(), None, &[], Some(0), 0, true).is_err() {
        assert!(Instant::now() < deadline, "pressure did not end after the commit");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    assert_eq!(values(&store, "t", 0), (0..=sent).collect::<Vec<_>>());
    producer.close().unwrap();
}

#[test]
fn commits_bound_only_the_incarnation_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let old = store.create_topic("t", 1, false, &[]).unwrap().incarnation();
    store.delete_topic("t").unwrap();
    let new = store.create_topic("t", 1, false, &[]).unwrap().incarnation();
    assert_ne!(old, new);
    // The deleted topic's group (its forget record never written) does not hold back the
    // topic created again; a group of the new topic does, from its commit.
    commit_v2(&store, "old group", "t", old, &[(0, 0)]);
    commit_v2(&store, "g", "t", new, &[(0, 100)]);
    // The deleting process forgets the old commits after "g" committed on the new topic:
    // "g"'s commit stays.
    reset_v2(&store, "g", "t", old);
    let producer =
        producer(&store, OnFull::Block(Some(Duration::from_secs(2))), Some(MAX_LAG), Duration::ZERO);
    // Within "g"'s lag (its pressure would come on past 100 + MAX_LAG, and a sender racing
    // the writer's look would then block), past anything a commit at 0 allows
    // (MAX_LAG + BUFFER).
    let n = 100 + MAX_LAG - 1;
    assert!(n > BOUND);
    for i in 0..n {
        producer.send("t", i.to_string().as_bytes(), None, &[], Some(0), 0, true).expect("not held back");
    }
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    assert_eq!(end(&store, "t", 0), n);
    // Past "g"'s bound the writer stops.
    let sender = {
        let producer = Arc::new(producer);
        let p = producer.clone();
        (thread::spawn(move || while p.send("t", b"more", None, &[], Some(0), 0, true).is_ok() {}), producer)
    };
    wait_until_stalled(&store, "t", 0, || assert!(end(&store, "t", 0) <= 100 + BOUND));
    sender.0.join().unwrap();
    // Messages sent before the pressure came on may still be held back: "g" catching up
    // lets close write them (it waits for them, as a flush does).
    commit_v2(&store, "g", "t", new, &[(0, end(&store, "t", 0) as i64)]);
    assert!(sender.1.flush(Some(Duration::from_secs(60))).unwrap(), "held messages written");
    sender.1.close().unwrap();
}

#[test]
fn two_producers_together_never_pass_the_bound() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create_topic("t", 1, false, &[]).unwrap();
        commit(&store, "slow", "t", &[(0, 0)]);
        let producers: Vec<_> = (0..2)
            .map(|_| Arc::new(producer(&store, OnFull::Block(None), Some(MAX_LAG), Duration::from_millis(1))))
            .collect();
        // Both fill their buffers before either writer looks, so both see the same room.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let senders: Vec<_> = producers
            .iter()
            .enumerate()
            .map(|(k, producer)| {
                let (producer, barrier) = (producer.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    for i in 0..200u64 {
                        let value = (k as u64 * 1000 + i).to_string();
                        producer.send("t", value.as_bytes(), None, &[], Some(0), 0, true).unwrap();
                    }
                })
            })
            .collect();
        wait_until_stalled(&store, "t", 0, || assert!(end(&store, "t", 0) <= BOUND, "round {round}"));
        // Let them finish, then check that each producer's messages kept their order.
        commit(&store, "slow", "t", &[(0, 400)]);
        for sender in senders {
            sender.join().unwrap();
        }
        for producer in &producers {
            assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
        }
        assert_eq!(end(&store, "t", 0), 400);
        let values = values(&store, "t", 0);
        for k in 0..2u64 {
            let mine: Vec<u64> = values.iter().filter(|&&v| v / 1000 == k).map(|v| v % 1000).collect();
            assert_eq!(mine, (0..200).collect::<Vec<_>>(), "producer {k}'s messages, in send order");
        }
    }
}
