//! A partition's producer state: for each idempotent producer, its epoch and the sequence
//! ranges of its last few batches (so a retry is recognised and answered with the original
//! offsets), and for transactions, which are still open and which were aborted.
//!
//! The table is derived from batch headers alone, in offset order: any process can build it
//! from the log (starting from a snapshot), and the writer of an idempotent batch catches up
//! on other processes' batches under the append lock before checking its own. Snapshots
//! (`<offset>.snapshot`, the state after every batch below `offset`) are written when a
//! segment rolls, so rebuilding reads at most about one segment of headers.
//!
//! Sequence rules (Kafka's): a producer's batches in a partition carry consecutive sequence
//! numbers starting at 0 for each epoch. The same range as one of the last
//! [`SEQUENCE_WINDOW`] batches is a duplicate; anything else that does not continue the
//! sequence is out of order; an epoch below the newest one seen is fenced.

use std::collections::{HashMap, VecDeque};

use crate::format::{BatchHeader, Marker, ATTR_COMPACTED, ATTR_CONTROL, ATTR_TRANSACTIONAL, NO_PRODUCER};
use crate::{Error, Result};

/// Batches remembered per producer and partition for duplicate detection (as Kafka).
pub const SEQUENCE_WINDOW: usize = 5;

/// One remembered batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceRange {
    /// Sequence of its first record.
    pub first: i32,
    /// Sequence of its last record.
    pub last: i32,
    /// Offset of its first record.
    pub base_offset: u64,
    /// Records in it.
    pub count: u32,
}

/// What the table knows of one producer in this partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Newest epoch seen.
    pub epoch: i16,
    /// The newest batches of that epoch, oldest first.
    pub batches: VecDeque<SequenceRange>,
    /// Largest timestamp of its last batch (for expiry).
    pub last_timestamp: i64,
    /// First offset of its open transaction in this partition.
    pub open_txn: Option<u64>,
    /// Its newest batch was rewritten by compaction (its sequences are unknown): the next
    /// batch may start at any sequence. Not kept in snapshots, which are written from
    /// tables that never applied a rewritten batch.
    pub sequence_unknown: bool,
}

/// The offsets of one aborted transaction in this partition: its data batches lie in
/// `first..last`, its abort marker at `last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer that wrote it.
    pub producer_id: i64,
    /// Its first offset.
    pub first: u64,
    /// Offset of its abort marker.
    pub last: u64,
}

/// The verdict on an idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New: write it.
    Append,
    /// Already written at these offsets: do not write it again.
    Duplicate {
        /// Offset of its first record.
        base_offset: u64,
        /// Records in it.
        count: u32,
    },
}

/// The producer state of one partition as of offset [`ProducerTable::applied`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerTable {
    entries: HashMap<i64, ProducerEntry>,
    /// Sorted by `last`.
    aborted: Vec<AbortedTxn>,
    /// Every batch below this offset has been applied.
    pub applied: u64,
    /// The partition's compaction count when the table was loaded (not stored in
    /// snapshots): see `PartitionLog::catch_up`.
    pub compactions: u64,
}

/// `seq + n` in the sequence space `0..=i32::MAX`, which wraps like Kafka's.
pub fn sequence_add(seq: i32, n: u32) -> i32 {
    ((i64::from(seq) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

impl ProducerTable {
    /// An empty table whose first batch is at `start`.
    pub fn new(start: u64) -> Self {
        ProducerTable { applied: start, ..Default::default() }
    }

    /// The producer's entry, if any.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    /// Producers known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no producer is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a batch of `count` records from `producer_id` at `epoch` starting at
    /// sequence `base_sequence` (or, with `base_sequence < 0`, a control batch).
    ///
    /// A producer the table does not know (new, or expired) may start at any sequence.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`] for an epoch older than the newest seen;
    /// [`Error::OutOfOrderSequence`] for a batch that neither continues the sequence nor
    /// repeats one of the remembered batches.
    pub fn check(&self, producer_id: i64, epoch: i16, base_sequence: i32, count: u32) -> Result<Verdict> {
        let Some(entry) = self.entries.get(&producer_id) else {
            return Ok(Verdict::Append);
        };
        if epoch < entry.epoch {
            return Err(Error::ProducerFenced(format!(
                "producer {producer_id} epoch {epoch} is older than epoch {} already written",
                entry.epoch
            )));
        }
        if base_sequence < 0 {
            return Ok(Verdict::Append);
        }
        if epoch > entry.epoch {
            return match base_sequence {
                0 => Ok(Verdict::Append),
                s => Err(Error::OutOfOrderSequence(format!(
                    "producer {producer_id} epoch {epoch} must start at sequence 0, got {s}"
                ))),
            };
        }
        if entry.sequence_unknown {
            return Ok(Verdict::Append);
        }
        let last = sequence_add(base_sequence, count - 1);
        if let Some(b) = entry.batches.iter().find(|b| b.first == base_sequence && b.last == last) {
            return Ok(Verdict::Duplicate { base_offset: b.base_offset, count: b.count });
        }
        let expected = entry.batches.back().map_or(0, |b| sequence_add(b.last, 1));
        if base_sequence != expected {
            return Err(Error::OutOfOrderSequence(format!(
                "producer {producer_id} epoch {epoch}: expected sequence {expected}, got {base_sequence}..={last}"
            )));
        }
        Ok(Verdict::Append)
    }

    /// Applies one batch (in offset order). `marker` is the marker a control batch holds.
    pub fn apply(&mut self, header: &BatchHeader, marker: Option<Marker>) {
        self.applied = self.applied.max(header.next_offset());
        if header.producer_id == NO_PRODUCER {
            return;
        }
        let entry = self.entries.entry(header.producer_id).or_insert_with(|| ProducerEntry {
            epoch: header.producer_epoch,
            batches: VecDeque::new(),
            last_timestamp: header.max_timestamp,
            open_txn: None,
            sequence_unknown: false,
        });
        if header.producer_epoch > entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
            entry.sequence_unknown = false;
        }
        entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
        if header.attributes & ATTR_CONTROL != 0 {
            if let Some(first) = entry.open_txn.take() {
                if marker != Some(Marker::Commit) {
                    let last = header.base_offset;
                    self.aborted.push(AbortedTxn { producer_id: header.producer_id, first, last });
                }
            }
            return;
        }
        if header.attributes & ATTR_TRANSACTIONAL != 0 && entry.open_txn.is_none() {
            entry.open_txn = Some(header.base_offset);
        }
        if header.attributes & ATTR_COMPACTED != 0 {
            // Compaction removed records of this batch or moved its base offset: its
            // sequence range is unknown, so the producer's next batch is taken at any
            // sequence (as one the table does not know). Tables normally start from the
            // snapshot written with the compaction and never apply such batches.
            entry.batches.clear();
            entry.sequence_unknown = true;
            return;
        }
        if header.base_sequence >= 0 {
            entry.sequence_unknown = false;
            entry.batches.push_back(SequenceRange {
                first: header.base_sequence,
                last: sequence_add(header.base_sequence, header.record_count.max(1) - 1),
                base_offset: header.base_offset,
                count: header.record_count,
            });
            if entry.batches.len() > SEQUENCE_WINDOW {
                entry.batches.pop_front();
            }
        }
    }

    /// The first offset a `read_committed` reader may not pass: the start of the oldest
    /// open transaction, else `end`.
    pub fn last_stable_offset(&self, end: u64) -> u64 {
        self.entries.values().filter_map(|e| e.open_txn).min().unwrap_or(end).min(end)
    }

    /// True if the transactional batch of `producer_id` at `offset` was aborted.
    pub fn is_aborted(&self, producer_id: i64, offset: u64) -> bool {
        let from = self.aborted.partition_point(|a| a.last < offset);
        self.aborted[from..].iter().any(|a| a.producer_id == producer_id && a.first <= offset)
    }

    /// The aborted transactions with batches in `from..to` (their first offset below `to`,
    /// their marker at or past `from`), oldest marker first.
    pub fn aborted_in(&self, from: u64, to: u64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last < from);
        self.aborted[start..].iter().filter(|a| a.first < to).copied().collect()
    }

    /// Forgets producers idle since before `cutoff_ms` (with nothing open) and aborted
    /// transactions wholly below `log_start`.
    pub fn expire(&mut self, cutoff_ms: i64, log_start: u64) {
        self.entries.retain(|_, e| e.open_txn.is_some() || e.last_timestamp >= cutoff_ms);
        self.aborted.retain(|a| a.last >= log_start);
    }

    /// Serialises the table (see `docs/FORMAT.md`, "Producer snapshots").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.entries.len() * 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&self.applied.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        let mut ids: Vec<_> = self.entries.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.entries[&id];
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&e.epoch.to_le_bytes());
            out.extend_from_slice(&e.last_timestamp.to_le_bytes());
            out.extend_from_slice(&e.open_txn.unwrap_or(u64::MAX).to_le_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first.to_le_bytes());
                out.extend_from_slice(&b.last.to_le_bytes());
                out.extend_from_slice(&b.base_offset.to_le_bytes());
                out.extend_from_slice(&b.count.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_le_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_le_bytes());
            out.extend_from_slice(&a.first.to_le_bytes());
            out.extend_from_slice(&a.last.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses what [`Self::encode`] wrote; `None` if the bytes are damaged or foreign.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_le_bytes() != crc || !body.starts_with(SNAPSHOT_MAGIC) {
            return None;
        }
        let mut r = Reader(&body[SNAPSHOT_MAGIC.len()..]);
        let mut table = ProducerTable::new(r.u64()?);
        for _ in 0..r.u32()? {
            let id = r.u64()? as i64;
            let epoch = i16::from_le_bytes(r.take::<2>()?);
            let last_timestamp = r.u64()? as i64;
            let open_txn = Some(r.u64()?).filter(|&o| o != u64::MAX);
            let mut batches = VecDeque::new();
            for _ in 0..r.take::<1>()?[0] {
                let first = r.u32()? as i32;
                let last = r.u32()? as i32;
                batches.push_back(SequenceRange { first, last, base_offset: r.u64()?, count: r.u32()? });
            }
            table.entries.insert(
                id,
                ProducerEntry { epoch, batches, last_timestamp, open_txn, sequence_unknown: false },
            );
        }
        for _ in 0..r.u32()? {
            let producer_id = r.u64()? as i64;
            table.aborted.push(AbortedTxn { producer_id, first: r.u64()?, last: r.u64()? });
        }
        r.0.is_empty().then_some(table)
    }
}

const SNAPSHOT_MAGIC: &[u8; 8] = b"TLPSNAP1";

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, base: u64, count: u32, attributes: u8) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            total_len: 64,
            crc: 0,
            version: 1,
            attributes,
            last_offset_delta: count - 1,
            record_count: count,
            first_timestamp: 1,
            max_timestamp: 1,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            values_len: 0,
        }
    }

    #[test]
    fn a_batch_rewritten_by_compaction_leaves_the_sequence_unknown_until_the_next_batch() {
        let mut t = ProducerTable::new(0);
        t.apply(&header(7, 0, 0, 0, 3, 0), None);
        // Its range no longer says what the producer wrote: any sequence continues it.
        t.apply(&header(7, 0, 3, 3, 1, ATTR_COMPACTED), None);
        assert_eq!(t.check(7, 0, 40, 1).unwrap(), Verdict::Append);
        assert!(matches!(t.check(7, -1, 40, 1), Err(Error::ProducerFenced(_))), "the epoch is kept");
        t.apply(&header(7, 0, 40, 4, 1, 0), None);
        assert!(matches!(t.check(7, 0, 50, 1), Err(Error::OutOfOrderSequence(_))), "known again");
        t.apply(&header(7, 0, 41, 5, 1, ATTR_COMPACTED), None);
        t.apply(&header(7, 1, 0, 6, 1, 0), None);
        assert!(matches!(t.check(7, 1, 5, 1), Err(Error::OutOfOrderSequence(_))), "a new epoch resets");
    }

    #[test]
    fn continues_detects_duplicates_gaps_and_fencing() {
        let mut t = ProducerTable::new(0);
        assert_eq!(t.check(7, 0, 5, 3).unwrap(), Verdict::Append, "unknown producers start anywhere");
        t.apply(&header(7, 0, 0, 0, 3, 0), None);
        assert_eq!(t.check(7, 0, 3, 2).unwrap(), Verdict::Append);
        assert_eq!(t.check(7, 0, 0, 3).unwrap(), Verdict::Duplicate { base_offset: 0, count: 3 });
        assert!(matches!(t.check(7, 0, 4, 1), Err(Error::OutOfOrderSequence(_))));
        assert!(matches!(t.check(7, 0, 1, 2), Err(Error::OutOfOrderSequence(_))), "partial overlap");
        assert!(matches!(t.check(7, 1, 3, 1), Err(Error::OutOfOrderSequence(_))), "new epoch at 0");
        t.apply(&header(7, 1, 0, 3, 1, 0), None);
        assert!(matches!(t.check(7, 0, 3, 1), Err(Error::ProducerFenced(_))));
        assert_eq!(t.check(7, 1, 1, 1).unwrap(), Verdict::Append);
    }

    #[test]
    fn window_keeps_the_last_five_batches() {
        let mut t = ProducerTable::new(0);
        for i in 0..8u32 {
            t.apply(&header(1, 0, i as i32, u64::from(i), 1, 0), None);
        }
        assert_eq!(t.check(1, 0, 3, 1).unwrap(), Verdict::Duplicate { base_offset: 3, count: 1 });
        assert!(matches!(t.check(1, 0, 2, 1), Err(Error::OutOfOrderSequence(_))));
    }

    #[test]
    fn sequences_wrap() {
        let mut t = ProducerTable::new(0);
        t.apply(&header(1, 0, i32::MAX - 1, 0, 2, 0), None);
        assert_eq!(t.check(1, 0, 0, 1).unwrap(), Verdict::Append);
    }

    #[test]
    fn transactions_set_the_stable_offset_and_aborted_ranges() {
        let mut t = ProducerTable::new(0);
        t.apply(&header(1, 0, 0, 0, 2, ATTR_TRANSACTIONAL), None);
        t.apply(&header(2, 0, 0, 2, 2, ATTR_TRANSACTIONAL), None);
        assert_eq!(t.last_stable_offset(10), 0);
        t.apply(&header(1, 0, -1, 4, 1, ATTR_TRANSACTIONAL | ATTR_CONTROL), Some(Marker::Abort));
        assert_eq!(t.last_stable_offset(10), 2);
        t.apply(&header(2, 0, -1, 5, 1, ATTR_TRANSACTIONAL | ATTR_CONTROL), Some(Marker::Commit));
        assert_eq!(t.last_stable_offset(10), 10);
        assert!(t.is_aborted(1, 1) && !t.is_aborted(2, 3) && !t.is_aborted(1, 5));
        let round = ProducerTable::decode(&t.encode()).unwrap();
        assert_eq!(round, t);
        let mut damaged = t.encode();
        damaged[12] ^= 1;
        assert!(ProducerTable::decode(&damaged).is_none());
    }

    #[test]
    fn expiry_keeps_open_transactions() {
        let mut t = ProducerTable::new(0);
        t.apply(&header(1, 0, 0, 0, 1, 0), None);
        t.apply(&header(2, 0, 0, 1, 1, ATTR_TRANSACTIONAL), None);
        t.expire(100, 0);
        assert!(t.get(1).is_none() && t.get(2).is_some());
    }
}
