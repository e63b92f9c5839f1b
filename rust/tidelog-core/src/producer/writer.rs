//! The producer's background writer: drains the priority buffers in batches, groups by
//! partition, appends each group as one batch, and accounts for every message.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Pending, Shared};
use crate::format::{BatchMeta, Record};

/// Longest idle sleep when every send wakes the writer (a safety net for lost wake-ups).
const MAX_IDLE: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) fn run(shared: &Shared) {
    let mut batch: Vec<Pending> = Vec::with_capacity(shared.config.max_batch_messages);
    let durable = shared.store.config().fsync == crate::log::FsyncPolicy::Always;
    // Group commit: how many flushers the last sync served, and how long it took.
    let (mut last_flushers, mut last_sync) = (0usize, Duration::ZERO);
    loop {
        if durable && last_flushers > 1 {
            gather(shared, last_flushers, last_sync);
        }
        batch.clear();
        let levels = shared.levels.read().map(|l| l.clone()).unwrap_or_default();
        for level in &levels {
            let room = shared.config.max_batch_messages - batch.len();
            if room == 0 {
                break;
            }
            level.ring.pop_many(&mut batch, room);
        }
        if batch.is_empty() {
            if shared.closing.load(Ordering::Acquire) && shared.pressure.buffered() == 0 {
                return;
            }
            let signal = shared.signal.lock().unwrap_or_else(|e| e.into_inner());
            shared.writer_idle.store(true, Ordering::Release);
            // Re-check after announcing idleness: a send that saw us busy did not notify.
            let any = levels.iter().any(|l| !l.ring.is_empty());
            if !any && !shared.closing.load(Ordering::Acquire) {
                // Linger: more messages make a bigger batch; a full half batch, a flush or
                // close wakes us sooner. With linger 0, every send wakes us.
                let wait = if shared.config.linger.is_zero() { MAX_IDLE } else { shared.config.linger };
                let _ = shared.work.wait_timeout(signal, wait);
            }
            shared.writer_idle.store(false, Ordering::Release);
            continue;
        }
        let taken = batch.len();
        shared.pressure.remove(taken);
        let started = Instant::now();
        write_groups(shared, &mut batch);
        last_sync = started.elapsed();
        // Everyone who sent and flushed while we synced is waiting now: that is how many
        // the next sync can serve together.
        last_flushers = shared.flushers.load(Ordering::SeqCst);
        shared.accounted.fetch_add(taken as u64, Ordering::SeqCst);
        if shared.flushers.load(Ordering::SeqCst) > 0 {
            let _signal = shared.signal.lock().unwrap_or_else(|e| e.into_inner());
            shared.progress.notify_all();
        }
    }
}

/// With `fsync="always"`, waits (at most `budget`) until as many messages are buffered as
/// flushers were served by the last sync. Closed-loop callers (send, flush, repeat) come back
/// one by one, each needing the GIL; without this pause the first to return would get a sync
/// of its own and the others the next one, halving how many commits share an fdatasync.
fn gather(shared: &Shared, wanted: usize, budget: Duration) {
    let deadline = Instant::now() + budget;
    let mut signal = shared.signal.lock().unwrap_or_else(|e| e.into_inner());
    while shared.pressure.buffered() < wanted && !shared.closing.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // A flush notifies `work`; so does a send while we are marked idle.
        signal = shared.work.wait_timeout(signal, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Appends `batch` grouped by (topic, partition), keeping each group's order.
fn write_groups(shared: &Shared, batch: &mut [Pending]) {
    // Stable sort keeps per-partition order; priorities were drained highest first.
    batch.sort_by_key(|p| (Arc::as_ptr(&p.topic) as usize, p.partition));
    let mut start = 0;
    while start < batch.len() {
        let first = &batch[start];
        let end = start
            + batch[start..]
                .iter()
                .take_while(|p| Arc::ptr_eq(&p.topic, &first.topic) && p.partition == first.partition)
                .count();
        // Keep a batch well inside a segment (each message is at most half of one).
        let budget = shared.store.config().segment_bytes / 2;
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
        let result = first
            .topic
            .partition(first.partition)
            .and_then(|log| log.append(&records, BatchMeta::plain(0), true).map(|_| ()));
        match result {
            Ok(()) => {
                shared.written.fetch_add(group.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                shared.failed.fetch_add(group.len() as u64, Ordering::Relaxed);
                let mut slot = shared.error.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(e);
            }
        }
        start = end;
    }
}
