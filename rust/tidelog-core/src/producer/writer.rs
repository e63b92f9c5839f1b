//! The producer's background writer: drains the priority buffers in batches, groups by
//! partition, appends each group as one batch, and accounts for every message.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Fatal, Pending, Shared};
use crate::format::{BatchMeta, Record, ATTR_TRANSACTIONAL};
use crate::log::producers::sequence_add;
use crate::log::PartitionLog;
use crate::{Error, Result};

/// Attempts at a batch whose write failed with an I/O error. Retries carry the same
/// sequence numbers, so one that had in fact been written is recognised as a duplicate.
const WRITE_ATTEMPTS: u32 = 4;

/// Next sequence number per (topic, partition), for an idempotent producer.
type Sequences = HashMap<(String, u32), i32>;

/// Longest part of a group-commit gather spent spinning rather than sleeping (see
/// [`gather`]): a few wake-ups' worth, so a slow disk's long syncs do not turn into long spins.
const GATHER_SPIN: Duration = Duration::from_micros(200);

/// Longest idle sleep when every send wakes the writer (a safety net for lost wake-ups).
const MAX_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) fn run(shared: &Shared) {
    let mut batch: Vec<Pending> = Vec::with_capacity(shared.config.max_batch_messages);
    let mut sequences = Sequences::new();
    let durable = shared.store.config().fsync == crate::log::FsyncPolicy::Always;
    crate::segment::populate_inline_on_this_thread();
    // Group commit: how many flushers the last sync served, and how long it took.
    let (mut last_flushers, mut last_sync) = (0usize, Duration::ZERO);
    // True right after an idle wait: what is buffered then is written, however little.
    let mut lingered = false;
    loop {
        if durable && last_flushers > 1 {
            gather(shared, last_flushers, last_sync);
        }
        // Linger (Kafka's `linger.ms`): with less than half a batch buffered, nobody in
        // `flush` and no pressure on the senders, wait for more rather than write a small
        // batch. Without this a writer as fast as its senders wrote batches of two or three
        // messages, at ~1 µs of bookkeeping each.
        let few = !lingered
            && !shared.config.linger.is_zero()
            && shared.pressure.buffered() < shared.wake_at()
            && shared.flushers.load(Ordering::SeqCst) == 0
            && !shared.pressure.is_on();
        batch.clear();
        let levels = shared.levels.read().map(|l| l.clone()).unwrap_or_default();
        if !few {
            for level in &levels {
                let room = shared.config.max_batch_messages - batch.len();
                if room == 0 {
                    break;
                }
                level.ring.pop_many(&mut batch, room);
            }
        }
        if batch.is_empty() {
            if shared.closing.load(Ordering::Acquire) && shared.pressure.buffered() == 0 {
                return;
            }
            let signal = shared.signal.lock().unwrap_or_else(|e| e.into_inner());
            shared.writer_idle.store(true, Ordering::Release);
            // Re-check after announcing idleness: a send that saw us busy did not notify.
            let ready = if few {
                shared.pressure.buffered() >= shared.wake_at()
                    || shared.flushers.load(Ordering::SeqCst) > 0
                    || shared.pressure.is_on()
            } else {
                levels.iter().any(|l| !l.ring.is_empty())
            };
            if !ready && !shared.closing.load(Ordering::Acquire) {
                // More messages make a bigger batch; half a batch, a flush or close wakes us
                // sooner. With linger 0, every send wakes us.
                let wait = if shared.config.linger.is_zero() { MAX_IDLE } else { shared.config.linger };
                let _ = shared.work.wait_timeout(signal, wait);
            }
            shared.writer_idle.store(false, Ordering::Release);
            lingered = true;
            continue;
        }
        lingered = false;
        let taken = batch.len();
        shared.pressure.remove(taken);
        let started = Instant::now();
        write_groups(shared, &mut batch, &mut sequences);
        last_sync = started.elapsed();
        // Everyone who sent and flushed while we synced is waiting now: that is how many
        // the next sync can serve together.
        last_flushers = shared.flushers.load(Ordering::SeqCst);
        shared.accounted.fetch_add(taken as u64, Ordering::SeqCst);
        if shared.flushers.load(Ordering::SeqCst) > 0 {
            shared.progress.bump();
        }
        // Python threads handed the GIL (or just woken from `flush`) may be queued behind
        // us on a small machine (with 2 cores and 4 sending threads the handoffs stalled
        // ~8% of the time): let them in.
        std::thread::yield_now();
    }
}

/// With `fsync="always"`, waits (at most `budget`) until as many messages are buffered as
/// flushers were served by the last sync. Closed-loop callers (send, flush, repeat) come back
/// one by one, each needing the GIL; without this pause the first to return would get a sync
/// of its own and the others the next one, halving how many commits share an fdatasync.
///
/// The first [`GATHER_SPIN`] of the wait spins, yielding the core at every turn: the callers
/// need it to run, and a writer that slept here would leave its core idle, which on the dev
/// VM made the wake-ups around the next sync slower (about 5% of the time per commit).
fn gather(shared: &Shared, wanted: usize, budget: Duration) {
    let started = Instant::now();
    let deadline = started + budget;
    let spin_until = started + budget.min(GATHER_SPIN);
    let gathered = || shared.pressure.buffered() >= wanted || shared.closing.load(Ordering::Acquire);
    while !gathered() && Instant::now() < spin_until {
        std::thread::yield_now();
    }
    let mut signal = shared.signal.lock().unwrap_or_else(|e| e.into_inner());
    while !gathered() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // A flush notifies `work`; so does a send while we are marked idle.
        signal = shared.work.wait_timeout(signal, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Appends `batch` grouped by (topic, partition), keeping each group's order.
fn write_groups(shared: &Shared, batch: &mut [Pending], sequences: &mut Sequences) {
    // Stable sort keeps per-partition order; priorities were drained highest first.
    batch.sort_by_key(|p| (Arc::as_ptr(&p.topic) as usize, p.partition));
    let mut start = 0;
    while start < batch.len() {
        let first = &batch[start];
        let end = start
            + batch[start..]
                .iter()
                .take_while(|p| {
                    Arc::ptr_eq(&p.topic, &first.topic)
                        && p.partition == first.partition
                        && p.txn == first.txn
                })
                .count();
        // Keep a batch well inside a segment (each message is at most half of one).
        let budget = first.topic.settings().segment_bytes() / 2;
        let mut bytes = 0;
        let end = start
            + batch[start..end]
                .iter()
                .take_while(|p| {
                    bytes += p.value.len() + p.key.as_ref().map_or(0, |k| k.len()) + p.headers.len() + 64;
                    bytes <= budget
                })
                .count()
                .max(1);
        let group = &batch[start..end];
        let records: Vec<Record<'_>> = group
            .iter()
            .map(|p| Record {
                timestamp: p.timestamp,
                key: p.key.as_deref(),
                value: &p.value,
                headers: &p.headers,
            })
            .collect();
        let fatal = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let result = match fatal {
            Some(f) => Err(f.error()),
            None => first
                .topic
                .partition(first.partition)
                .and_then(|log| append(shared, log, &records, first.txn, sequences)),
        };
        match result {
            Ok(()) => {
                shared.written.fetch_add(group.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                shared.failed.fetch_add(group.len() as u64, Ordering::Relaxed);
                if shared.identity.is_some() {
                    let fatal = match &e {
                        Error::ProducerFenced(m) => Some(Fatal::Fenced(m.clone())),
                        Error::OutOfOrderSequence(m) => Some(Fatal::OutOfOrder(m.clone())),
                        Error::Io { .. } => Some(Fatal::Failed(format!(
                            "a write kept failing ({e}); its outcome is unknown, so this idempotent \
                             producer stops: open a new one"
                        ))),
                        _ => None,
                    };
                    if let Some(f) = fatal {
                        shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(f);
                    }
                }
                let mut slot = shared.error.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(e);
            }
        }
        start = end;
    }
}

/// Appends one group as a batch: plain, or with the producer's identity and the
/// partition's next sequence number (recording the partition in the open transaction
/// first).
fn append(
    shared: &Shared,
    log: &PartitionLog,
    records: &[Record<'_>],
    txn: u64,
    sequences: &mut Sequences,
) -> Result<()> {
    let Some(identity) = &shared.identity else {
        return log.append(records, BatchMeta::plain(0), true).map(|_| ());
    };
    identity.check_current()?;
    let key = (log.topic().to_owned(), log.partition());
    let mut attributes = 0;
    if txn != 0 {
        let mut open = shared.txn.lock().map_err(|_| Error::Closed)?;
        let Some((_, parts)) = open.as_mut().filter(|(id, _)| *id == txn) else {
            return Err(Error::InvalidConfig("message sent in a transaction that had already ended".into()));
        };
        if !parts.contains(&key) {
            identity.add_to_transaction(&[key.clone()].into())?;
            parts.insert(key.clone());
        }
        attributes = ATTR_TRANSACTIONAL;
    }
    let base_sequence = sequences.get(&key).copied().unwrap_or(0);
    let meta = BatchMeta {
        base_offset: 0,
        attributes,
        producer_id: identity.producer_id,
        producer_epoch: identity.epoch,
        base_sequence,
    };
    let mut attempt = 1;
    loop {
        match log.append(records, meta, true) {
            Ok(_) => {
                sequences.insert(key, sequence_add(base_sequence, records.len() as u32));
                return Ok(());
            }
            Err(Error::Io { .. }) if attempt < WRITE_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(10 << attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
