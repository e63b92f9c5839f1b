//! Compressed batches (issue 14, item 2) through a partition log: every entry layout round
//! trips under each codec on every append path, damage to a compressed batch is caught
//! (by the CRC, or by decompression when the CRC was made to match) as `Error::Corrupt`
//! naming the file and position, never a panic, and recovery cuts a torn compressed tail.

use std::path::Path;
use std::sync::Arc;

use tidelog_core::format::{
    headers, BatchMeta, BatchView, Compression, Record, ValuesBatch, ATTR_CODEC_MASK, ATTR_COMPACT,
    ATTR_UNIFORM, BATCH_HEADER_LEN,
};
use tidelog_core::inspect;
use tidelog_core::settings::{SharedSettings, TopicSettings};
use tidelog_core::{Error, LogConfig, PartitionLog};

const CODECS: [Compression; 2] = [Compression::Lz4, Compression::Zstd];

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: None,
        max_message_bytes: 64 << 10,
        ..LogConfig::default()
    }
}

/// A partition log whose topic stores batches with `codec`.
fn open(dir: &Path, codec: Compression) -> PartitionLog {
    try_open(dir, codec).expect("open partition log")
}

fn try_open(dir: &Path, codec: Compression) -> tidelog_core::Result<PartitionLog> {
    let config = config();
    let settings = TopicSettings { compression: codec.name().into(), ..config.topic_settings() };
    PartitionLog::open_with_settings(dir, "t", 0, config, Arc::new(SharedSettings::fixed(settings)))
}

/// (offset, timestamp, key, value, headers) of every record, read back in chunks of `max`.
type Owned = (u64, i64, Option<Vec<u8>>, Vec<u8>, Vec<u8>);

fn read_all(log: &PartitionLog, max: usize) -> Vec<Owned> {
    let mut out = Vec::new();
    let mut at = log.start_offset().unwrap();
    while at < log.end_offset().unwrap() {
        let read = log.read(at, max, usize::MAX).expect("read");
        for chunk in &read.chunks {
            out.extend(chunk.records().map(|r| {
                (r.offset, r.timestamp, r.key.map(<[u8]>::to_vec), r.value.to_vec(), r.headers.to_vec())
            }));
        }
        assert!(read.next_offset > at);
        at = read.next_offset;
    }
    out
}

fn push(want: &mut Vec<Owned>, records: &[Record<'_>], base: u64) {
    for (i, r) in records.iter().enumerate() {
        want.push((
            base + i as u64,
            r.timestamp,
            r.key.map(<[u8]>::to_vec),
            r.value.to_vec(),
            r.headers.to_vec(),
        ));
    }
}

fn data_file(dir: &Path) -> std::path::PathBuf {
    inspect::segment_files(dir).unwrap().pop().expect("a segment")
}

/// (position, stored attributes, total length) of each batch of the only segment.
fn stored_batches(dir: &Path) -> Vec<(usize, u8, usize)> {
    let report = inspect::inspect_segment(&data_file(dir)).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    report.batches.iter().map(|b| (b.position as usize, b.header.attributes, b.header.total_len)).collect()
}

fn json(i: usize) -> Vec<u8> {
    let mut v = format!(
        "{{\"user_id\": {}, \"event\": \"click\", \"page\": \"/products/{}\"}}",
        10_000 + i * 7,
        i % 13
    )
    .into_bytes();
    v.resize(100, b' ');
    v
}

#[test]
fn every_layout_round_trips_on_every_append_path_under_each_codec() {
    for codec in CODECS {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), codec);
        let hdr = headers::encode([("trace", &b"abc"[..])].into_iter()).unwrap();
        let mut want: Vec<Owned> = Vec::new();
        // Full entries: keys (one empty, one missing) and headers.
        let values: Vec<Vec<u8>> = (0..50).map(json).collect();
        let full: Vec<Record<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                timestamp: 1_700_000_000_000 + i as i64,
                key: match i % 3 {
                    0 => None,
                    1 => Some(&b""[..]),
                    _ => Some(&b"key"[..]),
                },
                value: v,
                headers: if i % 2 == 0 { &hdr } else { &[] },
                tombstone: false,
            })
            .collect();
        let a = log.append(&full, BatchMeta::plain(0)).unwrap();
        push(&mut want, &full, a.base_offset);
        // Compact entries: plain values of several sizes.
        let compact: Vec<Record<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                timestamp: 1_700_000_000_100 - i as i64,
                key: None,
                value: &v[..10 + i],
                headers: &[],
                tombstone: false,
            })
            .collect();
        let a = log.append(&compact, BatchMeta::plain(0)).unwrap();
        push(&mut want, &compact, a.base_offset);
        // Uniform: one size, one timestamp; and a single record (a batch that compresses badly).
        let uniform: Vec<Record<'_>> = values
            .iter()
            .map(|v| Record {
                timestamp: 1_700_000_000_200,
                key: None,
                value: v,
                headers: &[],
                tombstone: false,
            })
            .collect();
        let a = log.append(&uniform, BatchMeta::plain(0)).unwrap();
        push(&mut want, &uniform, a.base_offset);
        let one = [Record { timestamp: 5, key: None, value: b"x", headers: &[], tombstone: false }];
        let a = log.append(&one, BatchMeta::plain(0)).unwrap();
        push(&mut want, &one, a.base_offset);
        // The values fast path, uniform and compact, small and large (pwrite) batches.
        let big: Vec<u8> = (0..2000).flat_map(json).collect();
        for lengths in
            [vec![100i64; 20], (0..20).map(|i| 50 + i * 5).collect::<Vec<i64>>(), vec![100i64; 2000]]
        {
            let total: i64 = lengths.iter().sum();
            let bytes = &big[..total as usize];
            let a = log.append_values(ValuesBatch::new(bytes, &lengths, 1_700_000_000_300)).unwrap();
            let mut at = 0;
            for (i, &len) in lengths.iter().enumerate() {
                want.push((
                    a.base_offset + i as u64,
                    1_700_000_000_300,
                    None,
                    bytes[at..at + len as usize].to_vec(),
                    Vec::new(),
                ));
                at += len as usize;
            }
        }
        // A producer's own codec over the topic's: "none" writes a plain batch.
        let a = match log
            .append_within_as(&full[..3], BatchMeta::plain(0), u64::MAX, Some(Compression::None))
            .unwrap()
        {
            tidelog_core::log::Bounded::Written(a) => a,
            other => panic!("{other:?}"),
        };
        push(&mut want, &full[..3], a.base_offset);

        for max in [1, 7, 1000] {
            assert_eq!(read_all(&log, max), want, "{codec:?}, {max} at a time");
        }
        // Stored as asked: each codec's bits, with the entry layout bits of the records.
        let stored = stored_batches(dir.path());
        let attrs: Vec<u8> = stored.iter().map(|&(_, a, _)| a).collect();
        let c = codec.attributes();
        assert_eq!(
            attrs,
            [
                c,
                c | ATTR_COMPACT,
                c | ATTR_UNIFORM,
                c | ATTR_UNIFORM,
                c | ATTR_UNIFORM,
                c | ATTR_COMPACT,
                c | ATTR_UNIFORM,
                0
            ]
        );
        // JSON shrinks: the 2000-value batch is far smaller than its 200 KB of values.
        assert!(stored[6].2 < 200_000 / 3, "{codec:?}: {} bytes", stored[6].2);
        // Time lookups find records inside compressed batches.
        assert_eq!(log.offset_for_timestamp(1_700_000_000_010).unwrap(), Some(10));
        assert_eq!(
            log.offset_for_timestamp(1_700_000_000_201).unwrap(),
            Some(stored_offset_of_values(&want))
        );
        drop(log);
        // Reopened (recovery walks the compressed tail) it reads the same.
        let log = open(dir.path(), Compression::None);
        assert_eq!(read_all(&log, 100), want);
    }
}

/// The first offset of the values-path batches (timestamp 1_700_000_000_300).
fn stored_offset_of_values(want: &[Owned]) -> u64 {
    want.iter().find(|r| r.1 == 1_700_000_000_300).unwrap().0
}

/// Appends three compressed batches of 20 JSON values; returns the log's data file and the
/// batches' (position, attributes, length).
fn three_batches(dir: &Path, codec: Compression) -> (std::path::PathBuf, Vec<(usize, u8, usize)>) {
    let log = open(dir, codec);
    let values: Vec<Vec<u8>> = (0..60).map(json).collect();
    for (k, chunk) in values.chunks(20).enumerate() {
        let timestamp = 77 + k as i64;
        let records: Vec<Record<'_>> = chunk
            .iter()
            .map(|v| Record { timestamp, key: Some(b"k"), value: v, headers: &[], tombstone: false })
            .collect();
        log.append(&records, BatchMeta::plain(0)).unwrap();
    }
    drop(log);
    (data_file(dir), stored_batches(dir))
}

fn expect_corrupt(
    result: tidelog_core::Result<impl std::fmt::Debug>,
    path: &Path,
    position: usize,
    what: &str,
) {
    match result {
        Err(Error::Corrupt { path: p, position: at, reason, .. }) => {
            assert_eq!((p.as_path(), at as usize), (path, position), "{reason}");
            assert!(reason.contains(what), "{reason}");
        }
        other => panic!("expected corruption at {position} ({what}), got {other:?}"),
    }
}

#[test]
fn a_flipped_bit_in_a_compressed_body_fails_the_crc() {
    for codec in CODECS {
        let dir = tempfile::tempdir().unwrap();
        let (path, batches) = three_batches(dir.path(), codec);
        let (pos, _, len) = batches[1];
        let good = std::fs::read(&path).unwrap();
        // Every bit of the length field and of the compressed body.
        for at in (pos + BATCH_HEADER_LEN..pos + len).step_by(3) {
            let mut bad = good.clone();
            bad[at] ^= 1 << (at % 8);
            assert_eq!(BatchView::parse(&bad[pos..], true).err(), Some("CRC32C mismatch"), "flip at {at}");
        }
        let mut bad = good.clone();
        bad[pos + len - 2] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let report = inspect::inspect_segment(&path).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].reason.contains("CRC"));
        // Damage followed by valid batches: opening refuses, naming the damaged batch.
        expect_corrupt(try_open(dir.path(), codec).map(|_| ()), &path, pos, "followed by valid batches");
    }
}

/// Replaces the compressed body of the batch at `pos` with `body` (its stated length
/// kept) and makes the CRC match, as a buggy writer would have.
fn recrc(bytes: &mut [u8], pos: usize, len: usize, body: &dyn Fn(&mut [u8])) {
    body(&mut bytes[pos + BATCH_HEADER_LEN + 4..pos + len]);
    let crc = crc32c::crc32c(&bytes[pos + 16..pos + len]);
    bytes[pos + 12..pos + 16].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_crc_valid_batch_whose_body_does_not_decompress_is_corrupt_not_a_panic() {
    type Damage = (&'static str, fn(&mut [u8], usize, usize));
    let damages: [Damage; 5] = [
        ("garbage body", |b, pos, len| {
            recrc(b, pos, len, &|body| {
                body.iter_mut().enumerate().for_each(|(i, x)| *x = (i * 131 + 7) as u8)
            })
        }),
        ("zeroed body", |b, pos, len| recrc(b, pos, len, &|body| body.fill(0))),
        ("body cut short", |b, pos, len| {
            recrc(b, pos, len, &|body| {
                let n = body.len();
                body[n / 2..].fill(0xff)
            })
        }),
        ("stated length too long", |b, pos, len| {
            let stated = u32::from_le_bytes(b[pos + 64..pos + 68].try_into().unwrap());
            b[pos + 64..pos + 68].copy_from_slice(&(stated + 1).to_le_bytes());
            recrc(b, pos, len, &|_| {});
        }),
        ("both codec bits", |b, pos, len| {
            b[pos + 17] |= ATTR_CODEC_MASK;
            recrc(b, pos, len, &|_| {});
        }),
    ];
    for codec in CODECS {
        for (what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let (path, batches) = three_batches(dir.path(), codec);
            let (pos, _, len) = batches[1];
            let mut bytes = std::fs::read(&path).unwrap();
            damage(&mut bytes, pos, len);
            assert!(
                BatchView::parse(&bytes[pos..], true).is_err()
                    || BatchView::parse(&bytes[pos..], true).unwrap().decompress().is_err(),
                "{codec:?} {what}: the body must not decompress"
            );
            std::fs::write(&path, &bytes).unwrap();
            if what == "both codec bits" {
                // No codec is no batch: damage with a valid batch after it, which opening
                // refuses to cut.
                let opened = try_open(dir.path(), codec).map(|_| ());
                expect_corrupt(opened, &path, pos, "followed by valid batches");
                continue;
            }
            // The CRC matches: recovery keeps the batch (it is not torn) ...
            let log = open(dir.path(), codec);
            assert_eq!(log.end_offset().unwrap(), 60, "{codec:?} {what}");
            // ... and reads, time lookups and verify name it.
            assert_eq!(log.read(0, 1000, usize::MAX).unwrap().count, 20);
            let reason = "";
            expect_corrupt(log.read(20, 1000, usize::MAX), &path, pos, reason);
            expect_corrupt(log.read(25, 1, usize::MAX), &path, pos, reason);
            assert_eq!(
                log.read(40, 1000, usize::MAX).unwrap().count,
                20,
                "the batches after it stay readable"
            );
            expect_corrupt(log.offset_for_timestamp(78), &path, pos, reason);
            drop(log);
            let report = inspect::inspect_segment(&path).unwrap();
            assert_eq!(report.problems.len(), 1, "{codec:?} {what}: {:?}", report.problems);
            assert_eq!(report.problems[0].position as usize, pos);
            assert!(!report.torn_tail, "a CRC-valid batch is whole: recovery keeps it");
        }
    }
}

#[test]
fn recovery_cuts_a_torn_compressed_tail() {
    for codec in CODECS {
        for cut in [1, 5, 40] {
            let dir = tempfile::tempdir().unwrap();
            let (path, batches) = three_batches(dir.path(), codec);
            let (pos, _, len) = batches[2];
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), pos + len, "closing trimmed the segment to its batches");
            let cut = cut.min(len - 1);
            std::fs::write(&path, &bytes[..pos + len - cut]).unwrap();
            let log = open(dir.path(), codec);
            assert_eq!(log.end_offset().unwrap(), 40, "{codec:?}, {cut} bytes short: the torn batch is cut");
            assert_eq!(
                read_all(&log, 1000).iter().map(|r| r.3.clone()).collect::<Vec<_>>(),
                (0..40).map(json).collect::<Vec<_>>()
            );
            // Appends continue where the valid data ends, compressed as before.
            let more = [Record { timestamp: 1, key: None, value: b"after", headers: &[], tombstone: false }];
            assert_eq!(log.append(&more, BatchMeta::plain(0)).unwrap().base_offset, 40);
            drop(log);
            let log = open(dir.path(), codec);
            assert_eq!(read_all(&log, 1000).last().unwrap().3, b"after");
        }
    }
}
