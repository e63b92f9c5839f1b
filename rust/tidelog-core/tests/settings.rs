//! Settings that shape files are shared, not per process: two handles on one partition
//! (each maps the files itself, exactly as two processes do) with different settings must
//! agree on every segment's geometry, and a store's and topic's settings are stored and
//! altered for everyone.

use std::path::Path;

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::settings::Value;
use tidelog_core::{Error, LogConfig, PartitionLog, Store};

fn config(segment_bytes: usize, index_interval_bytes: usize) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes,
        segment_ms: None,
        max_message_bytes: segment_bytes / 2,
        ..LogConfig::default()
    }
}

fn append(log: &PartitionLog, value: &[u8]) -> u64 {
    let record = Record { timestamp: 1_000, key: None, value, headers: &[], tombstone: false };
    log.append(&[record], BatchMeta::plain(0)).expect("append").base_offset
}

fn values(log: &PartitionLog, from: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let read = log.read(offset, 1000, 1 << 20).expect("read");
        if read.count == 0 {
            return out;
        }
        for chunk in &read.chunks {
            out.extend(chunk.records().map(|r| r.value.to_vec()));
        }
        offset = read.next_offset;
    }
}

#[test]
fn a_handle_with_smaller_segments_reads_what_a_handle_with_larger_ones_wrote() {
    let dir = tempfile::tempdir().unwrap();
    // The small handle creates segment 0; the large one opens it while the small one lives.
    let small = PartitionLog::open(dir.path(), "t", 0, config(64 << 10, 4096)).unwrap();
    let large = PartitionLog::open(dir.path(), "t", 0, config(1 << 20, 4096)).unwrap();
    let written: Vec<Vec<u8>> = (0..500).map(|i| format!("{i:06}").repeat(170).into_bytes()).collect();
    for v in &written {
        append(&large, v);
    }
    // Before: `large` grew segment 0 to its own size and wrote past `small`'s mapping,
    // which then reported the batches there as corrupt.
    assert_eq!(values(&small, 0), written);
    assert!(large.segment_count().unwrap() > 1, "segment 0 kept its 64 KiB");
}

#[test]
fn a_handle_with_a_larger_index_interval_appends_after_one_with_a_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let sparse = PartitionLog::open(dir.path(), "t", 0, config(64 << 10, 4096)).unwrap();
    let dense = PartitionLog::open(dir.path(), "t", 0, config(64 << 10, 16)).unwrap();
    for i in 0..200 {
        append(&dense, format!("dense {i:04}").as_bytes());
    }
    // Before: `dense` indexed every batch, past the slots `sparse` maps, and `sparse`'s
    // next indexed append failed with "index of segment 0 is full".
    for _ in 0..10 {
        append(&sparse, &[b's'; 1000]);
    }
    let all = values(&dense, 0);
    assert_eq!(all.len(), 210);
    let read = sparse.read(150, 1, 1 << 20).unwrap();
    assert_eq!(read.chunks[0].records().next().unwrap().offset, 150);
}

fn int(key: &str, n: i64) -> (String, Value) {
    (key.to_owned(), Value::Int(n))
}

fn open_store(dir: &Path, requested: &[(String, Value)]) -> tidelog_core::Result<Store> {
    Store::open(dir, LogConfig::default(), requested)
}

#[test]
fn retention_altered_through_one_store_applies_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let a = open_store(dir.path(), &[int("segment_bytes", 8 << 10)]).unwrap();
    let b = open_store(dir.path(), &[]).unwrap();
    let ta = a.create_topic("t", 1, false, &[]).unwrap();
    let tb = b.topic("t").unwrap();
    for i in 0..60 {
        append(ta.partition(0).unwrap(), format!("{i:04}").repeat(100).as_bytes());
    }
    assert_eq!(tb.partition(0).unwrap().start_offset().unwrap(), 0);
    a.alter_topic("t", &[int("retention_bytes", 16 << 10)]).unwrap();
    tb.partition(0).unwrap().enforce_retention().unwrap();
    let start = ta.partition(0).unwrap().start_offset().unwrap();
    assert!(start > 0);
    assert_eq!(tb.config().unwrap().retention_bytes, Some(16 << 10));
}

#[test]
fn a_store_refuses_keywords_that_differ_from_its_stored_settings() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_store(dir.path(), &[int("index_interval_bytes", 1024)]).unwrap());
    let Err(Error::InvalidConfig(msg)) = open_store(dir.path(), &[int("index_interval_bytes", 64)]) else {
        panic!("a different index interval was accepted");
    };
    assert!(msg.contains("index_interval_bytes=64") && msg.contains("index_interval_bytes=1024"), "{msg}");
    let store = open_store(dir.path(), &[int("index_interval_bytes", 1024)]).unwrap();
    assert_eq!(store.defaults().index_interval_bytes, 1024);
    let refused = store.alter_topic("__consumer_offsets", &[int("retention_ms", 1)]);
    assert!(matches!(refused, Err(Error::InvalidConfig(_))));
    assert!(matches!(store.alter_topic("nope", &[int("retention_ms", 1)]), Err(Error::TopicNotFound(_))));
}

#[test]
fn topic_settings_are_stored_with_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), &[]).unwrap();
    store.create_topic("t", 2, false, &[int("segment_bytes", 1 << 20), int("retention_ms", 5000)]).unwrap();
    drop(store);
    let store = open_store(dir.path(), &[]).unwrap();
    let config = store.topic("t").unwrap().config().unwrap();
    assert_eq!((config.segment_bytes, config.retention_ms), (1 << 20, Some(5000)));
    assert_eq!(config.max_message_bytes, 512 << 10, "kept within half a segment");
    let bad = store.create_topic("u", 1, false, &[("compression".into(), Value::Text("gzip".into()))]);
    assert!(matches!(bad, Err(Error::InvalidConfig(ref m)) if m.contains("\"gzip\"")));
    assert_eq!(store.topics().unwrap(), ["t"]);
}
