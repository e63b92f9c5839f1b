//! The producer's background writer: drains the buffer in batches (dropping what shedding
//! dropped), groups by partition, appends each group as one batch, holds back what
//! `max_lag` does not allow yet, and accounts for every message.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lag::LagBound;
use super::receipt::Settled;
use super::{Fatal, Pending, Shared};
use crate::format::{BatchMeta, Record, ATTR_TRANSACTIONAL};
use crate::log::producers::sequence_add;
use crate::log::{Bounded, PartitionLog};
use crate::{Error, Result};

/// Attempts at a batch whose write failed with an I/O error. Retries carry the same
/// sequence numbers, so one that had in fact been written is recognised as a duplicate.
const WRITE_ATTEMPTS: u32 = 4;

/// Next sequence number per (topic, partition), for an idempotent producer.
pub(super) type Sequences = HashMap<(String, u32), i32>;

/// Longest part of a group-commit gather spent spinning rather than sleeping (see
/// [`gather`]): a few wake-ups' worth, so a slow disk's long syncs do not turn into long spins.
const GATHER_SPIN: Duration = Duration::from_micros(200);

/// Longest idle sleep when every send wakes the writer (a safety net for lost wake-ups).
const MAX_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Longest sleep on the offsets topic's doorbell while `max_lag` holds messages back or
/// keeps pressure on: a commit in any process wakes the writer at once; this is how soon
/// it notices a flush, a close or new messages meanwhile.
const LAG_WAIT: Duration = Duration::from_millis(10);

pub(super) fn run(shared: &Shared) {
    let mut batch: Vec<Pending> = Vec::with_capacity(shared.config.max_batch_messages);
    // Messages `max_lag` does not let through yet, in send order; still counted buffered.
    let mut held: Vec<Pending> = Vec::new();
    let mut lag = shared.config.max_lag.map(|max_lag| {
        let resume_at = (max_lag as f64 * shared.config.low_watermark).floor() as u64;
        LagBound::new(shared.store.clone(), max_lag, resume_at, shared.config.buffer_messages as u64)
    });
    let durable = shared.store.config().fsync == crate::log::FsyncPolicy::Always;
    crate::segment::populate_inline_on_this_thread();
    // Group commit: how many flushers the last sync served, and how long it took.
    let (mut last_flushers, mut last_sync) = (0usize, Duration::ZERO);
    // True right after an idle wait: what is buffered then is written, however little.
    let mut lingered = false;
    loop {
        // Taken before looking at the commits: a commit after the look rings it.
        let ticket = lag.as_mut().and_then(|l| l.offsets_topic().map(|t| t.ticket()));
        if let Some(lag) = lag.as_mut() {
            update_lag_pressure(shared, lag);
        }
        if durable && last_flushers > 1 {
            gather(shared, last_flushers, last_sync);
        }
        // Linger (Kafka's `linger.ms`): with less than half a batch buffered, nobody in
        // `flush` and no pressure on the senders, wait for more rather than write a small
        // batch. Without this a writer as fast as its senders wrote batches of two or three
        // messages, at ~1 µs of bookkeeping each.
        let few = !lingered
            && held.is_empty()
            && !shared.config.linger.is_zero()
            && shared.pressure.buffered() < shared.wake_at()
            && shared.flushers.load(Ordering::SeqCst) == 0
            && !shared.pressure.is_on();
        batch.clear();
        // Held messages are older than anything in the ring: they go first.
        let held_before = held.len();
        batch.append(&mut held);
        let mut sequences = shared.drain.lock().unwrap_or_else(|e| e.into_inner());
        if !few {
            let popped = shared.ring.pop_many(&mut batch, shared.config.max_batch_messages);
            if shared.shedding && popped > 0 {
                settle_shed(shared, &mut batch, held_before);
            }
        }
        if batch.is_empty() {
            drop(sequences);
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
                !shared.ring.is_empty()
            };
            if let (Some(ticket), true) = (ticket, lag.as_ref().is_some_and(|l| l.on)) {
                // Pressure from a lagging group ends with a commit, in any process.
                drop(signal);
                shared.writer_idle.store(false, Ordering::Release);
                if !ready && !shared.closing.load(Ordering::Acquire) {
                    wait_for_commit(&mut lag, Some(ticket));
                }
                continue;
            }
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
        if lag.is_none() {
            // Counted out before the write, so senders refill the buffer meanwhile.
            shared.pressure.remove(batch.len() - held_before);
        }
        let started = Instant::now();
        write_groups(shared, &mut batch, &mut sequences, lag.as_mut(), &mut held);
        let taken = batch.len();
        if lag.is_some() {
            // With `max_lag`, held messages still count as buffered, so a held-back writer
            // fills the buffer and the senders feel the pressure as their policy says.
            shared.pressure.remove(taken);
        }
        last_sync = started.elapsed();
        // Everyone who sent and flushed while we synced is waiting now: that is how many
        // the next sync can serve together.
        last_flushers = shared.flushers.load(Ordering::SeqCst);
        shared.accounted.fetch_add(taken as u64, Ordering::SeqCst);
        drop(sequences);
        if shared.flushers.load(Ordering::SeqCst) > 0 {
            shared.progress.bump();
        }
        if taken == 0 && lag.is_some() {
            // Everything is held back: nothing moves until a group commits.
            wait_for_commit(&mut lag, ticket);
            continue;
        }
        // Python threads handed the GIL (or just woken from `flush`) may be queued behind
        // us on a small machine (with 2 cores and 4 sending threads the handoffs stalled
        // ~8% of the time): let them in.
        std::thread::yield_now();
    }
}

/// From a thread in `flush`: pops and writes one batch of what is buffered, unless the
/// writer is busy (it then writes it sooner than a wake-up would) or the producer is one
/// the writer alone can serve. Returns whether it wrote anything.
///
/// A flush that finds the writer asleep would otherwise wake it, sleep, and be woken when
/// it is done: two thread wake-ups per flush, the larger part of a small transaction's
/// cost on a busy machine (a transaction flushes once). Not with `max_lag` (the writer
/// alone holds the lag bound and the messages it holds back) nor with `fsync="always"`
/// (the writer gathers concurrent flushers into one sync, see [`gather`]).
pub(super) fn write_here(shared: &Shared, batch: &mut Vec<Pending>) -> bool {
    if shared.config.max_lag.is_some() || shared.store.config().fsync == crate::log::FsyncPolicy::Always {
        return false;
    }
    let Ok(mut sequences) = shared.drain.try_lock() else {
        return false;
    };
    batch.clear();
    if shared.ring.pop_many(batch, shared.config.max_batch_messages) == 0 {
        return false;
    }
    if shared.shedding {
        settle_shed(shared, batch, 0);
    }
    shared.pressure.remove(batch.len());
    write_groups(shared, batch, &mut sequences, None, &mut Vec::new());
    shared.accounted.fetch_add(batch.len() as u64, Ordering::SeqCst);
    drop(sequences);
    if shared.flushers.load(Ordering::SeqCst) > 1 {
        // Other flushers wait for the writer's rounds; this was one.
        shared.progress.bump();
    }
    batch.clear();
    true
}

/// Drops the messages popped into `batch[from..]` that shedding turned into debts (see the
/// module docs of `producer`), keeping the others in order.
fn settle_shed(shared: &Shared, batch: &mut Vec<Pending>, from: usize) {
    let levels = shared.levels.read().map(|l| l.clone()).unwrap_or_default();
    let ledger = shared.ledger.get().map(|l| &**l);
    let mut shed = Vec::new();
    let mut i = 0;
    batch.retain(|p| {
        i += 1;
        let dropped = i > from
            && levels.iter().find(|l| l.priority == p.priority).is_some_and(|l| l.counts.pop_is_debt());
        if dropped {
            p.settle(ledger, Settled::DROPPED);
            shed.push(p.seq());
        }
        !dropped
    });
    if let Some(ledger) = ledger {
        ledger.publish(shed.into_iter().flatten());
    }
}

/// Turns the producer's pressure on or off as the slowest group's lag says. A failure to
/// read the commits leaves it as it is (the hard bound in [`write_groups`] still holds).
fn update_lag_pressure(shared: &Shared, lag: &mut LagBound) {
    let topics: Vec<_> = shared.topics.read().map(|t| t.values().cloned().collect()).unwrap_or_default();
    if let Ok(true) = lag.update(&topics) {
        shared.pressure.set_external(lag.on);
    }
}

/// Sleeps until a commit is appended in any process (or [`LAG_WAIT`] passes).
fn wait_for_commit(lag: &mut Option<LagBound>, ticket: Option<u32>) {
    match (ticket, lag.as_mut().and_then(|l| l.offsets_topic())) {
        (Some(ticket), Some(topic)) => {
            topic.wait(ticket, Some(LAG_WAIT));
        }
        // No commit yet anywhere (a group with members only): look again soon.
        _ => std::thread::sleep(LAG_WAIT),
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

/// Appends `batch` grouped by (topic, partition), keeping each group's order. With a `lag`
/// bound, what a partition may not take yet moves to `held` (in order) and out of `batch`.
///
/// The bound is checked twice: [`hold_back`] estimates each partition's room from the
/// commits, and each append is made with the partition's limit checked under its append
/// lock ([`PartitionLog::append_within`]), so producers in any process never pass it
/// together.
fn write_groups(
    shared: &Shared,
    batch: &mut Vec<Pending>,
    sequences: &mut Sequences,
    mut lag: Option<&mut LagBound>,
    held: &mut Vec<Pending>,
) {
    let ledger = shared.ledger.get().map(|l| &**l);
    // Stable sort keeps per-partition order, which is send order.
    batch.sort_by_key(|p| (Arc::as_ptr(&p.topic) as usize, p.partition));
    if let Some(lag) = lag.as_deref_mut() {
        hold_back(lag, batch, held);
    }
    // Runs of `batch` that met the bound under the lock: they wait, with the rest of their
    // partition, before what `hold_back` held.
    let mut waiting: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let first = &batch[start];
        let key = (Arc::as_ptr(&first.topic) as usize, first.partition);
        if waiting.last().is_some_and(|r| {
            r.end == start && (Arc::as_ptr(&batch[r.start].topic) as usize, batch[r.start].partition) == key
        }) {
            // The partition met its bound earlier in this batch: the rest of it waits too.
            let end = start
                + batch[start..]
                    .iter()
                    .take_while(|p| Arc::as_ptr(&p.topic) as usize == key.0 && p.partition == key.1)
                    .count();
            waiting.last_mut().expect("checked").end = end;
            start = end;
            continue;
        }
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
                    bytes += p.bytes.len() + 64;
                    bytes <= budget
                })
                .count()
                .max(1);
        let group = &batch[start..end];
        let records: Vec<Record<'_>> = group
            .iter()
            .map(|p| Record {
                timestamp: p.timestamp,
                key: p.key(),
                value: p.value(),
                headers: p.headers(),
                tombstone: p.is_tombstone(),
            })
            .collect();
        let fatal = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let max_end = match lag.as_deref_mut() {
            // A partition that is gone makes its own error when written.
            Some(lag) => lag.limit(&first.topic, first.partition).ok().flatten().unwrap_or(u64::MAX),
            None => u64::MAX,
        };
        let result = match fatal {
            Some(f) => Err(f.error()),
            None => first.topic.partition(first.partition).and_then(|log| {
                match append(shared, log, &records, first.txn, sequences, max_end)? {
                    // Another writer took part of the room since `hold_back` looked: what
                    // still fits goes now.
                    Bounded::NoRoom(room) if room > 0 && (room as usize) < records.len() => {
                        let fits = &records[..room as usize];
                        append(shared, log, fits, first.txn, sequences, max_end)
                    }
                    bounded => Ok(bounded),
                }
            }),
        };
        let result = result.map(|bounded| match bounded {
            Bounded::Written(appended) => {
                // Offsets in send order from the batch's base (a duplicate's are the original's).
                let written = group.iter().take(appended.count as usize);
                for (p, offset) in written.clone().zip(appended.base_offset..) {
                    p.settle(ledger, Settled::written(offset));
                }
                if let Some(ledger) = ledger {
                    ledger.publish(written.filter_map(Pending::seq));
                }
                appended.count as usize
            }
            Bounded::NoRoom(_) => 0,
        });
        if let Ok(written) = result {
            if written < group.len() {
                waiting.push(start + written..end);
            }
        }
        match result {
            Ok(written) => {
                shared.written.fetch_add(written as u64, Ordering::Relaxed);
            }
            Err(e) => {
                shared.failed.fetch_add(group.len() as u64, Ordering::Relaxed);
                group.iter().for_each(|p| p.settle(ledger, Settled::FAILED));
                if let Some(ledger) = ledger {
                    ledger.publish(group.iter().filter_map(Pending::seq));
                }
                let fatal = match &e {
                    _ if shared.identity.is_none() => None,
                    Error::ProducerFenced(m) => Some(Fatal::Fenced(m.clone())),
                    Error::OutOfOrderSequence(m) => Some(Fatal::OutOfOrder(m.clone())),
                    Error::Io { .. } => Some(Fatal::Failed(format!(
                        "a write kept failing ({e}); its outcome is unknown, so this idempotent \
                         producer stops: open a new one"
                    ))),
                    _ => None,
                };
                shared.fail(Some(e), fatal);
            }
        }
        start = end;
    }
    if !waiting.is_empty() {
        let mut ranges = waiting.iter().peekable();
        let (mut early, mut kept) = (Vec::new(), Vec::with_capacity(batch.len()));
        for (i, p) in batch.drain(..).enumerate() {
            while ranges.peek().is_some_and(|r| r.end <= i) {
                ranges.next();
            }
            if ranges.peek().is_some_and(|r| r.contains(&i)) {
                early.push(p);
            } else {
                kept.push(p);
            }
        }
        *batch = kept;
        // They were sent before what `hold_back` held of their partitions: the stable sort
        // keeps them first.
        early.append(held);
        early.sort_by_key(|p| (Arc::as_ptr(&p.topic) as usize, p.partition));
        *held = early;
    }
}

/// Moves to `held` what would take a partition more than `max_lag + buffer_messages` past
/// its slowest group's committed offset. `batch` is sorted by partition, so each
/// partition's messages are one run and the first ones are written.
fn hold_back(lag: &mut LagBound, batch: &mut Vec<Pending>, held: &mut Vec<Pending>) {
    if lag.catch_up().is_err() {
        if !lag.store_closed() {
            // Commits unreadable (damage): write nothing past a bound we cannot check;
            // the next round looks again.
            held.append(batch);
        }
        // A closed store fails every write with its own error.
        return;
    }
    let mut run: Option<(usize, u32, u64)> = None;
    let mut kept = Vec::with_capacity(batch.len());
    for p in batch.drain(..) {
        let key = (Arc::as_ptr(&p.topic) as usize, p.partition);
        let room = match run {
            Some((t, q, room)) if (t, q) == key => room,
            // A partition that is gone makes its own error when written: not held.
            _ => lag.room(&p.topic, p.partition).ok().flatten().unwrap_or(u64::MAX),
        };
        if room > 0 {
            kept.push(p);
        } else {
            held.push(p);
        }
        run = Some((key.0, key.1, room.saturating_sub(1)));
    }
    *batch = kept;
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
    max_end: u64,
) -> Result<Bounded> {
    let compression = shared.config.compression;
    let Some(identity) = &shared.identity else {
        return log.append_within_as(records, BatchMeta::plain(0), max_end, compression);
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
        match log.append_within_as(records, meta, max_end, compression) {
            Ok(Bounded::Written(appended)) => {
                sequences.insert(key, sequence_add(base_sequence, records.len() as u32));
                return Ok(Bounded::Written(appended));
            }
            Ok(no_room) => return Ok(no_room),
            Err(Error::Io { .. }) if attempt < WRITE_ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(10 << attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
