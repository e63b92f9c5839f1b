//! `flush` writes what is buffered from the calling thread when the writer thread is idle
//! (no wake-up round trip), so batches of one producer are written by several threads in
//! turn. These tests check that the hand-over keeps what the writer alone guaranteed: every
//! message exactly once, per-partition send order, an idempotent producer's sequence numbers
//! in line (a gap or a repeat would fail its appends), shedding's accounting, and
//! transactions whose messages are written by the flush that ends them.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tidelog_core::producer::identity::Identity;
use tidelog_core::producer::{OnFull, Producer, ProducerConfig};
use tidelog_core::{LogConfig, Store};

const THREADS: usize = 4;
const ROUNDS: usize = 300;
const PER_ROUND: usize = 7;
const PARTITIONS: u32 = 3;

fn open(dir: &Path) -> Arc<Store> {
    let store = Arc::new(Store::open(dir, LogConfig::default(), &[]).expect("open store"));
    store.create_topic("t", PARTITIONS, false, &[]).expect("topic");
    store
}

fn producer(store: &Arc<Store>, on_full: OnFull, identity: Option<Identity>, linger: Duration) -> Producer {
    let config = ProducerConfig { buffer_messages: 4096, on_full, linger, ..ProducerConfig::default() };
    Producer::new(store.clone(), config, identity).expect("producer")
}

/// Every value of partition `p`, in offset order (committed transactions only count:
/// markers are not records).
fn values(store: &Store, p: u32) -> Vec<String> {
    let log = store.topic("t").unwrap();
    let log = log.partition(p).unwrap();
    let end = log.end_offset().unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < end {
        let read = log.read(at, 10_000, usize::MAX).unwrap();
        for chunk in &read.chunks {
            out.extend(chunk.records().map(|r| String::from_utf8(r.value.to_vec()).unwrap()));
        }
        at = read.next_offset;
    }
    out
}

/// THREADS threads each send PER_ROUND messages and flush, ROUNDS times: flushes race each
/// other and the writer for the buffer.
fn send_and_flush_from_threads(producer: &Arc<Producer>) {
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let producer = producer.clone();
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    for i in 0..PER_ROUND {
                        let n = round * PER_ROUND + i;
                        let value = format!("{t}:{n}");
                        let p = (t as u32) % PARTITIONS;
                        producer.send("t", value.as_bytes(), None, &[], Some(p), 0, true).unwrap();
                    }
                    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap(), "flush timed out");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Each thread's messages appear once each, in send order, in its partition.
fn check_once_in_order(store: &Store) {
    let mut total = 0;
    for p in 0..PARTITIONS {
        let mut next = [0usize; THREADS];
        for v in values(store, p) {
            let (t, n) = v.split_once(':').unwrap();
            let (t, n): (usize, usize) = (t.parse().unwrap(), n.parse().unwrap());
            assert_eq!(t as u32 % PARTITIONS, p, "{v} in partition {p}");
            assert_eq!(n, next[t], "thread {t}'s messages in partition {p}: once each, in send order");
            next[t] += 1;
            total += 1;
        }
    }
    assert_eq!(total, THREADS * ROUNDS * PER_ROUND);
}

#[test]
fn racing_flushes_write_every_message_once_in_order_idempotent_or_not() {
    for idempotent in [true, false] {
        for linger in [Duration::ZERO, Duration::from_millis(1)] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            let identity = idempotent.then(|| Identity::claim(&store, None).unwrap());
            let producer = Arc::new(producer(&store, OnFull::Block(None), identity, linger));
            send_and_flush_from_threads(&producer);
            producer.close().unwrap();
            let stats = producer.stats();
            assert_eq!((stats.sent, stats.written, stats.failed), (stats.written, stats.sent, 0));
            check_once_in_order(&store);
        }
    }
}

#[test]
fn a_flushing_thread_settles_shed_messages_as_the_writer_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let producer = Arc::new(producer(&store, OnFull::Shed, None, Duration::from_millis(1)));
    send_and_flush_from_threads(&producer);
    producer.close().unwrap();
    let stats = producer.stats();
    // Nothing was under pressure (the buffer never fills), so nothing may be dropped.
    assert_eq!(stats.dropped.iter().map(|(_, n)| n).sum::<u64>(), 0);
    assert_eq!(stats.buffered, 0);
    check_once_in_order(&store);
}

#[test]
fn a_transaction_ended_by_a_flush_on_the_calling_thread_is_committed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let identity = Identity::claim(&store, Some("tx")).unwrap();
    let producer = producer(&store, OnFull::Block(None), Some(identity), Duration::from_millis(1));
    for round in 0..200u32 {
        producer.begin_transaction().unwrap();
        for i in 0..PER_ROUND as u32 {
            let value = format!("0:{}", round * PER_ROUND as u32 + i);
            producer.send("t", value.as_bytes(), None, &[], Some(0), 0, true).unwrap();
        }
        if round % 3 == 2 {
            producer.abort_transaction().unwrap();
        } else {
            producer.commit_transaction().unwrap();
        }
    }
    producer.close().unwrap();
    let kept: Vec<u32> = (0..200u32)
        .filter(|r| r % 3 != 2)
        .flat_map(|r| (0..PER_ROUND as u32).map(move |i| r * PER_ROUND as u32 + i))
        .collect();
    let log = store.topic("t").unwrap();
    let log = log.partition(0).unwrap();
    let committed: Vec<u32> = {
        let mut out = Vec::new();
        let mut at = 0;
        let end = log.end_offset().unwrap();
        while at < end {
            let read = log.read(at, 10_000, usize::MAX).unwrap();
            for chunk in &read.chunks {
                out.extend(chunk.records().map(|r| {
                    std::str::from_utf8(r.value).unwrap().split_once(':').unwrap().1.parse::<u32>().unwrap()
                }));
            }
            at = read.next_offset;
        }
        out
    };
    assert_eq!(committed, kept, "committed transactions whole and in order, aborted ones hidden");
}
