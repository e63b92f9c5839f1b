//! A producer's tombstones (`send_record` with no value) go through the ring buffer and
//! the writer into the log as records without a value (value length `u32::MAX` in a full
//! record entry), with their keys and headers; a keyless one is refused on a compacted
//! topic and kept on a plain one, as in Kafka.

use std::sync::Arc;
use std::time::Duration;

use tidelog_core::format::headers;
use tidelog_core::producer::{Producer, ProducerConfig, SendError};
use tidelog_core::settings::Value;
use tidelog_core::{Error, LogConfig, Store};

type Row = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

fn rows(store: &Store, topic: &str) -> Vec<Row> {
    let log = store.topic(topic).unwrap();
    let log = log.partition(0).unwrap();
    let read = log.read(0, 1000, 1 << 20).unwrap();
    read.chunks
        .iter()
        .flat_map(|c| {
            c.records()
                .map(|r| {
                    (r.key.map(<[u8]>::to_vec), (!r.tombstone).then(|| r.value.to_vec()), r.headers.to_vec())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_producer_writes_tombstones_through_its_ring() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), LogConfig::default(), &[]).unwrap());
    let compact = [("cleanup_policy".to_owned(), Value::Text("compact".into()))];
    store.create_topic("c", 1, false, &compact).unwrap();
    store.create_topic("plain", 1, false, &[]).unwrap();
    let config = ProducerConfig { linger: Duration::from_millis(1), ..ProducerConfig::default() };
    let producer = Producer::new(store.clone(), config, None).unwrap();
    let hdr = headers::encode([("why", b"gdpr".as_slice())].into_iter()).unwrap();
    assert!(producer.send("c", b"v1", Some(b"k"), &[], Some(0), 0, true).unwrap());
    assert!(producer.send_record("c", None, Some(b"k"), &hdr, Some(0), 0, true).unwrap());
    // An empty value is a value, not a tombstone.
    assert!(producer.send_record("c", Some(b""), Some(b"e"), &[], Some(0), 0, true).unwrap());
    let refused = producer.send_record("c", None, None, &[], Some(0), 0, true);
    assert!(
        matches!(&refused, Err(SendError::Failed(Error::InvalidConfig(m))) if m.contains("needs a key")),
        "{refused:?}"
    );
    assert!(producer.send_record("plain", None, None, &[], Some(0), 0, true).unwrap());
    assert!(producer.flush(Some(Duration::from_secs(60))).unwrap());
    assert_eq!(
        rows(&store, "c"),
        vec![
            (Some(b"k".to_vec()), Some(b"v1".to_vec()), vec![]),
            (Some(b"k".to_vec()), None, hdr.clone()),
            (Some(b"e".to_vec()), Some(vec![]), vec![]),
        ]
    );
    assert_eq!(rows(&store, "plain"), vec![(None, None, vec![])]);
    assert_eq!(store.topic("c").unwrap().latest().unwrap(), vec![(b"e".to_vec(), vec![])]);
}
