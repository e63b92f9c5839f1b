//! Tracked sends (`Producer::send_tracked`, the async producer's): once `flushed` counts a
//! message its receipt (or the producer's ledger, for a while) holds the offset it was
//! written at, with several threads sending to several partitions at once and another
//! producer interleaving batches; a receipt kept after the send, before or after the write,
//! holds it for good; a message shed at the send has no sequence, and one shed after it was
//! buffered reports it was dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidelog_core::producer::receipt::{Outcome, LEDGER_SLOTS};
use tidelog_core::producer::{OnFull, Producer, ProducerConfig};
use tidelog_core::{LogConfig, Store};

fn values(store: &Store, topic: &str, partition: u32) -> Vec<(u64, Vec<u8>)> {
    let log = store.topic(topic).unwrap();
    let log = log.partition(partition).unwrap();
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let read = log.read(next, 100_000, 1 << 24).unwrap();
        if read.count == 0 {
            return out;
        }
        for chunk in &read.chunks {
            out.extend(chunk.records().map(|r| (r.offset, r.value.to_vec())));
        }
        next = read.next_offset;
    }
}

#[test]
fn receipts_hold_the_offsets_the_messages_were_written_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), LogConfig::default(), &[]).unwrap());
    store.create_topic("t", 3, false, &[]).unwrap();
    let config = ProducerConfig { max_batch_messages: 7, ..ProducerConfig::default() };
    let producer = Arc::new(Producer::new(store.clone(), config.clone(), None).unwrap());
    let other = Arc::new(Producer::new(store.clone(), config, None).unwrap());
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (producer, other) = (producer.clone(), other.clone());
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                for i in 0..2000 {
                    let value = format!("{t}-{i}").into_bytes();
                    let key = format!("k{}", i % 5).into_bytes();
                    let tracked =
                        producer.send_tracked("t", Some(&value), Some(&key), &[], None, 0, true).unwrap();
                    assert!(tracked.accepted);
                    sent.push((value, tracked.partition, tracked.receipt.unwrap()));
                    // Untracked messages of the same and another producer between them.
                    other.send("t", b"other", None, &[], Some(i % 3), 0, true).unwrap();
                    producer.send("t", b"sync", None, &[], Some(i % 3), 0, true).unwrap();
                }
                sent
            })
        })
        .collect();
    let sent: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(producer.flushed(producer.sent_count()).is_ok());
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    assert!(other.flush(Some(Duration::from_secs(60))).unwrap());
    let mut logs: HashMap<u32, HashMap<u64, Vec<u8>>> = HashMap::new();
    for p in 0..3 {
        logs.insert(p, values(&store, "t", p).into_iter().collect());
    }
    for (value, partition, receipt) in sent {
        let Outcome::Written(offset) = receipt.outcome() else {
            panic!("not written: {:?}", receipt.outcome());
        };
        assert_eq!(logs[&partition].get(&offset), Some(&value), "partition {partition} offset {offset}");
    }
}

#[test]
fn the_ledger_holds_recent_outcomes_and_kept_receipts_hold_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), LogConfig::default(), &[]).unwrap());
    store.create_topic("t", 2, false, &[]).unwrap();
    let config = ProducerConfig { max_batch_messages: 7, ..ProducerConfig::default() };
    let producer = Producer::new(store.clone(), config, None).unwrap();
    let ledger = producer.ledger().clone();
    let mut sent = Vec::new();
    for i in 0..LEDGER_SLOTS / 2 {
        let value = format!("v{i}").into_bytes();
        let tracked =
            producer.send_tracked("t", Some(&value), None, &[], Some(i as u32 % 2), 0, false).unwrap();
        assert!(tracked.receipt.is_none());
        producer.send("t", b"sync", None, &[], Some(0), 0, true).unwrap();
        sent.push((value, tracked.partition, tracked.seq.unwrap()));
    }
    // Kept before the writer got to it (the writer lingers for a while) and after.
    let before = ledger.keep(sent[sent.len() - 1].2);
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    let after = ledger.keep(sent[0].2);
    let logs: Vec<HashMap<u64, Vec<u8>>> =
        (0..2).map(|p| values(&store, "t", p).into_iter().collect()).collect();
    let written = |value: &[u8], partition: u32, outcome: Outcome| {
        let Outcome::Written(offset) = outcome else { panic!("not written: {outcome:?}") };
        assert_eq!(logs[partition as usize].get(&offset).map(Vec::as_slice), Some(value));
    };
    for (value, partition, seq) in &sent {
        written(value, *partition, ledger.outcome(*seq));
    }
    // Enough tracked messages to reuse every slot: the kept receipts still know.
    for _ in 0..2 * LEDGER_SLOTS {
        producer.send_tracked("t", Some(b"more"), None, &[], Some(0), 0, false).unwrap();
    }
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    let (first, last) = (&sent[0], &sent[sent.len() - 1]);
    written(&first.0, first.1, after.outcome());
    written(&last.0, last.1, before.outcome());
    assert_ne!(ledger.outcome(first.2), after.outcome());
}

#[test]
fn shed_messages_report_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), LogConfig::default(), &[]).unwrap());
    store.create_topic("t", 1, false, &[]).unwrap();
    let config = ProducerConfig {
        buffer_messages: 4,
        on_full: OnFull::Shed,
        linger: Duration::from_secs(3600),
        max_batch_messages: 1000,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(store.clone(), config, None).unwrap();
    // The writer lingers, so the buffer fills: low priorities are shed, first the buffered
    // ones (evicted for higher ones), then new ones at the send.
    let mut receipts = Vec::new();
    for priority in [0, 0, 0, 0, 5, 5, 5, 5, 0] {
        // Every other one in the ledger only.
        let keep = receipts.len() % 2 == 0;
        let tracked = producer.send_tracked("t", Some(b"v"), None, &[], Some(0), priority, keep).unwrap();
        assert_eq!(tracked.seq.is_some(), tracked.accepted);
        assert_eq!(tracked.receipt.is_some(), tracked.accepted && keep);
        receipts.push((priority, tracked.accepted, tracked.seq));
    }
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    // Popped by the close at the latest.
    producer.close().unwrap();
    let (mut written, mut refused, mut evicted) = (Vec::new(), 0, 0);
    let ledger = producer.ledger();
    for (priority, accepted, seq) in receipts {
        match (accepted, seq.map(|seq| ledger.outcome(seq))) {
            (false, None) => {
                assert_eq!(priority, 0);
                refused += 1;
            }
            (true, Some(Outcome::Dropped)) => {
                assert_eq!(priority, 0);
                evicted += 1;
            }
            (true, Some(Outcome::Written(offset))) => written.push(offset),
            other => panic!("{other:?}"),
        }
    }
    assert!(refused > 0 && evicted > 0, "refused {refused}, evicted {evicted}");
    assert_eq!(written, (0..written.len() as u64).collect::<Vec<_>>());
    assert_eq!(values(&store, "t", 0).len(), written.len());
}
