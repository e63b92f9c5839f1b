//! The one-time conversion of work-queue state kept by the first version of work queues.
//!
//! That version kept one record per change in the internal topic [`LEGACY_TOPIC`] (8
//! partitions, a queue's records in the partition its group name hashes to): key
//! `group NUL topic`; value u8 kind, u32 partition, i64 offset, i64 lock expiry (ms), u32
//! delivery count (little-endian), then, for an acquisition, the member's id. The kinds were
//! 1 acquire, 2 ack, 3 release, 4 dead-letter, 5 extend; a change to a finished message was
//! ignored, and an extension kept the holder.
//!
//! [`crate::Store::open`] converts a store that still has the topic, once, under the store's
//! topics lock: every queue whose state log ([`crate::statelog`], in
//! `<store>/work_queues/<topic>/`) holds nothing yet is given its whole state as the log's
//! first records, written atomically ([`crate::statelog::StateLog::seed`]); then the topic
//! is deleted, so nothing reads it again. A crash before the deletion leaves some queues
//! converted and the topic in place: the next open converts the others (a queue with a
//! state log is never converted again, since its log may already hold later changes).
//! Either way every queue's state is the old one or the converted one, never a part.
//!
//! Queues of topics that no longer exist are not converted (a topic created again under the
//! name starts empty), nor are those the first version's `delete_topic` marked with
//! [`NO_LEGACY`] in their directory.
//!
//! The converted records are in the work-queue record format of `tidelog.queue_state`
//! (`encode_record`): u16 member length, the member, then 33-byte changes (u8 kind, u32
//! partition, i64 start, i64 end, i64 expiry, u32 count), applied in order to an empty state.

use std::collections::BTreeMap;

use crate::format::record::RecordView;
use crate::partitioner::partition_for_key;
use crate::store::Topic;
use crate::Result;

pub use crate::paths::{LEGACY_WORK_QUEUES_TOPIC as LEGACY_TOPIC, NO_LEGACY, WORK_QUEUES_DIR};
/// Partitions the first version routed queues over (whatever the topic's own count).
const ROUTED_PARTITIONS: u32 = 8;
/// Bytes of a first-version value before the member's id.
const VALUE_LEN: usize = 1 + 4 + 8 + 8 + 4;
/// Most records read from the topic at a time.
const READ_MAX: usize = 10_000;

// Change kinds, in both versions.
const ACQUIRE: u8 = 1;
const ACK: u8 = 2;
const RELEASE: u8 = 3;
const DEAD: u8 = 4;
const EXTEND: u8 = 5;

/// An unfinished message's state as the first version kept it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// Handed out to `member` until `expires` (ms since the epoch), `count` times so far.
    Held { member: String, expires: i64, count: u32 },
    /// Given back: available, handed out `count` times so far.
    Released { count: u32 },
}

/// How a message was finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finished {
    Acked,
    Dead,
}

/// One partition's messages as the first version kept them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Partition {
    /// Unfinished messages handed out at least once, by offset.
    open: BTreeMap<i64, Entry>,
    /// Finished messages as runs, `start -> (end, how)`, neighbouring runs of one kind
    /// merged: a long history takes a few runs, not an entry per message.
    finished: BTreeMap<i64, (i64, Finished)>,
}

impl Partition {
    fn is_finished(&self, offset: i64) -> bool {
        self.finished.range(..=offset).next_back().is_some_and(|(_, &(end, _))| end > offset)
    }

    fn finish(&mut self, offset: i64, how: Finished) {
        self.open.remove(&offset);
        let (mut start, mut end) = (offset, offset + 1);
        if let Some((&s, &(e, h))) = self.finished.range(..offset).next_back() {
            if e == offset && h == how {
                start = s;
            }
        }
        if let Some(&(e, h)) = self.finished.get(&end) {
            if h == how {
                self.finished.remove(&end);
                end = e;
            }
        }
        self.finished.insert(start, (end, how));
    }
}

/// The state the first version recorded for one queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegacyQueue {
    /// By partition of the topic.
    partitions: BTreeMap<u32, Partition>,
}

impl LegacyQueue {
    /// Applies one first-version value, as the first version did.
    ///
    /// # Errors
    /// Why the value cannot be decoded.
    pub fn apply(&mut self, value: &[u8]) -> std::result::Result<(), String> {
        if value.len() < VALUE_LEN {
            return Err(format!("work-queue record of {} bytes (at least {VALUE_LEN})", value.len()));
        }
        let kind = value[0];
        let le8 = |at: usize| i64::from_le_bytes(value[at..at + 8].try_into().expect("8 bytes"));
        let partition = u32::from_le_bytes(value[1..5].try_into().expect("4 bytes"));
        let offset = le8(5);
        let expires = le8(13);
        let count = u32::from_le_bytes(value[21..25].try_into().expect("4 bytes"));
        if !(ACQUIRE..=EXTEND).contains(&kind) {
            return Err(format!("work-queue record of unknown kind {kind}"));
        }
        if !(0..i64::MAX).contains(&offset) {
            return Err(format!("work-queue record for offset {offset}, out of range"));
        }
        let member = if kind == ACQUIRE {
            let member = std::str::from_utf8(&value[VALUE_LEN..])
                .map_err(|_| "work-queue record names a member that is not UTF-8".to_owned())?;
            if member.len() > usize::from(u16::MAX) {
                return Err(format!("work-queue record names a member of {} bytes", member.len()));
            }
            member
        } else {
            ""
        };
        let part = self.partitions.entry(partition).or_default();
        if part.is_finished(offset) {
            return Ok(()); // changes to finished messages were ignored
        }
        match kind {
            ACQUIRE => {
                part.open.insert(offset, Entry::Held { member: member.to_owned(), expires, count });
            }
            RELEASE => {
                part.open.insert(offset, Entry::Released { count });
            }
            ACK => part.finish(offset, Finished::Acked),
            DEAD => part.finish(offset, Finished::Dead),
            _ => {
                // An extension renews a held message's lock, for its holder.
                if let Some(Entry::Held { expires: held_until, .. }) = part.open.get_mut(&offset) {
                    *held_until = expires;
                }
            }
        }
        Ok(())
    }

    /// The state as records of the current format (see the module documentation), for a
    /// topic of `partitions` partitions (changes to others were ignored): one record of
    /// acquisitions per member, then one of releases, then one of acknowledgements and
    /// dead letters. Applied in order to an empty state they give the same messages held
    /// (by the same member, until the same time), available, acknowledged and
    /// dead-lettered, with the same delivery counts and counters.
    pub fn records(&self, partitions: u32) -> Vec<Vec<u8>> {
        let mut held: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut released = Vec::new();
        let mut finished = Vec::new();
        for (&p, part) in self.partitions.range(..partitions) {
            // Runs of consecutive offsets in the same state become one change.
            let mut run: Option<(i64, i64, &Entry)> = None;
            let mut flush = |(start, end, entry): (i64, i64, &Entry)| match entry {
                Entry::Held { member, expires, count } => {
                    let ops = held.entry(member.clone()).or_default();
                    push_op(ops, ACQUIRE, p, start, end, *expires, *count);
                }
                Entry::Released { count } => push_op(&mut released, RELEASE, p, start, end, 0, *count),
            };
            for (&offset, entry) in &part.open {
                run = match run {
                    Some((start, end, e)) if end == offset && e == entry => Some((start, offset + 1, e)),
                    Some(done) => {
                        flush(done);
                        Some((offset, offset + 1, entry))
                    }
                    None => Some((offset, offset + 1, entry)),
                };
            }
            if let Some(done) = run {
                flush(done);
            }
            for (&start, &(end, how)) in &part.finished {
                let kind = if how == Finished::Acked { ACK } else { DEAD };
                push_op(&mut finished, kind, p, start, end, 0, 0);
            }
        }
        let mut out: Vec<Vec<u8>> = held.into_iter().map(|(member, ops)| record(&member, &ops)).collect();
        for ops in [released, finished] {
            if !ops.is_empty() {
                out.push(record("", &ops));
            }
        }
        out
    }
}

fn push_op(out: &mut Vec<u8>, kind: u8, partition: u32, start: i64, end: i64, expires: i64, count: u32) {
    out.push(kind);
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&end.to_le_bytes());
    out.extend_from_slice(&expires.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

fn record(member: &str, ops: &[u8]) -> Vec<u8> {
    let len = u16::try_from(member.len()).expect("member length checked when read");
    let mut out = Vec::with_capacity(2 + member.len() + ops.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(ops);
    out
}

/// The queue a first-version key names: `(group, topic)`. `None` for a key no queue wrote
/// (a topic name never holds NUL, so the topic is what follows the last one).
fn queue_of(key: &[u8]) -> Option<(String, String)> {
    let at = key.iter().rposition(|&b| b == 0)?;
    let group = std::str::from_utf8(&key[..at]).ok()?;
    let topic = std::str::from_utf8(&key[at + 1..]).ok()?;
    (!group.is_empty() && !topic.is_empty()).then(|| (group.to_owned(), topic.to_owned()))
}

/// Every queue's state in `topic` ([`LEGACY_TOPIC`]), by `(group, topic)`: the committed
/// records of each queue in the partition the first version routed it to (it read no
/// other), applied in order.
///
/// # Errors
/// A damaged batch; [`crate::Error::Corrupt`] naming the segment and offset of a queue's record
/// that cannot be decoded (nothing is converted then).
pub fn read(topic: &Topic) -> Result<BTreeMap<(String, String), LegacyQueue>> {
    let mut queues: BTreeMap<(String, String), LegacyQueue> = BTreeMap::new();
    for log in topic.partitions()? {
        let end = log.end_offset()?;
        let mut at = log.start_offset()?;
        while at < end {
            let read = log.read(at, READ_MAX, usize::MAX)?;
            for chunk in &read.chunks {
                for r in chunk.records() {
                    let RecordView { key: Some(key), tombstone: false, value, offset, .. } = r else {
                        continue;
                    };
                    let Some(queue) = queue_of(key) else { continue };
                    if partition_for_key(queue.0.as_bytes(), ROUTED_PARTITIONS) != log.partition() {
                        continue;
                    }
                    if let Err(reason) = queues.entry(queue).or_default().apply(value) {
                        return Err(crate::offsets::table::undecodable(log, chunk, offset, reason));
                    }
                }
            }
            if read.next_offset <= at {
                break;
            }
            at = read.next_offset;
        }
    }
    Ok(queues)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn value(
        kind: u8,
        partition: u32,
        offset: i64,
        expires: i64,
        count: u32,
        member: &str,
    ) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&partition.to_le_bytes());
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&expires.to_le_bytes());
        v.extend_from_slice(&count.to_le_bytes());
        v.extend_from_slice(member.as_bytes());
        v
    }

    /// (kind, partition, start, end, expires, count).
    type Op = (u8, u32, i64, i64, i64, u32);

    fn ops(record: &[u8]) -> (String, Vec<Op>) {
        let n = usize::from(u16::from_le_bytes([record[0], record[1]]));
        let member = String::from_utf8(record[2..2 + n].to_vec()).unwrap();
        let body = &record[2 + n..];
        assert_eq!(body.len() % 33, 0);
        let ops = body
            .chunks(33)
            .map(|c| {
                let i = |at: usize| i64::from_le_bytes(c[at..at + 8].try_into().unwrap());
                let u = |at: usize| u32::from_le_bytes(c[at..at + 4].try_into().unwrap());
                (c[0], u(1), i(5), i(13), i(21), u(29))
            })
            .collect();
        (member, ops)
    }

    #[test]
    fn runs_become_one_change_per_state_and_changes_to_finished_messages_are_ignored() {
        let mut q = LegacyQueue::default();
        for o in 0..6 {
            q.apply(&value(ACQUIRE, 0, o, 99, 1, "m1")).unwrap();
        }
        for o in [0, 1, 2] {
            q.apply(&value(ACK, 0, o, 0, 0, "")).unwrap();
        }
        q.apply(&value(ACQUIRE, 0, 1, 99, 2, "m2")).unwrap(); // finished: ignored
        q.apply(&value(RELEASE, 0, 3, 0, 1, "")).unwrap();
        q.apply(&value(EXTEND, 0, 3, 500, 0, "")).unwrap(); // released: nothing to extend
        q.apply(&value(EXTEND, 0, 4, 500, 0, "")).unwrap(); // keeps its holder
        q.apply(&value(DEAD, 0, 5, 0, 1, "")).unwrap();
        q.apply(&value(ACQUIRE, 1, 7, 42, 3, "m2")).unwrap();
        q.apply(&value(ACQUIRE, 9, 0, 42, 3, "m2")).unwrap(); // past the topic's partitions
        let records: Vec<_> = q.records(2).iter().map(|r| ops(r)).collect();
        assert_eq!(
            records,
            vec![
                ("m1".into(), vec![(ACQUIRE, 0, 4, 5, 500, 1)]),
                ("m2".into(), vec![(ACQUIRE, 1, 7, 8, 42, 3)]),
                (String::new(), vec![(RELEASE, 0, 3, 4, 0, 1)]),
                (String::new(), vec![(ACK, 0, 0, 3, 0, 0), (DEAD, 0, 5, 6, 0, 0)]),
            ]
        );
    }

    #[test]
    fn finished_messages_take_a_run_per_stretch_of_one_kind() {
        let mut q = LegacyQueue::default();
        for o in (0..1000).rev().chain(1000..2000) {
            q.apply(&value(ACK, 0, o, 0, 0, "")).unwrap();
        }
        q.apply(&value(DEAD, 0, 2000, 0, 1, "")).unwrap();
        q.apply(&value(ACK, 0, 2002, 0, 0, "")).unwrap();
        q.apply(&value(ACK, 0, 2001, 0, 0, "")).unwrap(); // joins the run after it
        let runs: Vec<_> = q.partitions[&0].finished.iter().map(|(&s, &(e, h))| (s, e, h)).collect();
        assert_eq!(
            runs,
            vec![(0, 2000, Finished::Acked), (2000, 2001, Finished::Dead), (2001, 2003, Finished::Acked)]
        );
        let records: Vec<_> = q.records(1).iter().map(|r| ops(r)).collect();
        assert_eq!(
            records,
            vec![(
                String::new(),
                vec![(ACK, 0, 0, 2000, 0, 0), (DEAD, 0, 2000, 2001, 0, 0), (ACK, 0, 2001, 2003, 0, 0)]
            )]
        );
    }

    #[test]
    fn undecodable_values_are_refused() {
        let mut q = LegacyQueue::default();
        assert!(q.apply(&value(ACK, 0, 1, 0, 0, "")[..20]).unwrap_err().contains("20 bytes"));
        assert!(q.apply(&value(6, 0, 1, 0, 0, "")).unwrap_err().contains("unknown kind 6"));
        assert!(q.apply(&value(ACK, 0, -1, 0, 0, "")).unwrap_err().contains("out of range"));
        assert!(q.apply(&value(ACK, 0, i64::MAX, 0, 0, "")).unwrap_err().contains("out of range"));
        let mut bad = value(ACQUIRE, 0, 1, 0, 0, "");
        bad.push(0xff);
        assert!(q.apply(&bad).unwrap_err().contains("UTF-8"));
        assert_eq!(q, LegacyQueue::default());
    }

    #[test]
    fn keys_name_a_group_and_a_topic() {
        assert_eq!(queue_of(b"g\0t"), Some(("g".into(), "t".into())));
        assert_eq!(queue_of(b"a\0b\0t"), Some(("a\0b".into(), "t".into())));
        assert_eq!(queue_of(b"gt"), None);
        assert_eq!(queue_of(b"\0t"), None);
        assert_eq!(queue_of(b"g\0"), None);
    }
}
