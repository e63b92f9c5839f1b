//! A helper thread that computes the CRC32C of a large batch's values on another core while
//! the appending thread copies the same values into the page cache (see
//! `PartitionLog::append_values`). The two steps each read the whole batch; done one after
//! the other, the CRC was a sixth of a 100 KB append on the dev VM.
//!
//! One job runs at a time. Everything is best effort: a caller that finds the helper busy,
//! or whose job has not been started by the time its own copy is done (the thread is
//! asleep, was never started, or did not survive a `fork`), takes the job back and computes
//! the CRC itself, so an append never waits for the helper to be scheduled.
//!
//! The job's state word moves `IDLE -> POSTED` (caller), `POSTED -> RUNNING -> DONE`
//! (helper) and `DONE -> IDLE` or `POSTED -> IDLE` (caller, taking the result or the job
//! back). The helper reads the caller's bytes only between `RUNNING` and `DONE`, and the
//! caller does not return before it has seen `DONE` or taken the job back from `POSTED`.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rustix::thread::futex;

const IDLE: u32 = 0;
const POSTED: u32 = 1;
const RUNNING: u32 = 2;
const DONE: u32 = 3;

/// How long the helper keeps looking for the next job before it sleeps. Bulk appends come
/// back-to-back a few tens of microseconds apart; a helper that slept between them would
/// mostly be woken too late to help.
const LINGER: Duration = Duration::from_micros(50);

struct Slot {
    /// Held by the caller whose job this is; another caller computes its CRC itself.
    owner: Mutex<()>,
    state: AtomicU32,
    ptr: AtomicUsize,
    len: AtomicUsize,
    /// The CRC the job extends (its input), then the job's result.
    crc: AtomicU32,
    /// Set by the helper before it sleeps on `state`, so callers wake it only then.
    sleeping: AtomicBool,
}

static SLOT: OnceLock<Option<&'static Slot>> = OnceLock::new();

fn slot() -> Option<&'static Slot> {
    *SLOT.get_or_init(|| {
        let slot: &'static Slot = Box::leak(Box::new(Slot {
            owner: Mutex::new(()),
            state: AtomicU32::new(IDLE),
            ptr: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            crc: AtomicU32::new(0),
            sleeping: AtomicBool::new(false),
        }));
        std::thread::Builder::new().name("tidelog-crc".into()).spawn(move || serve(slot)).ok().map(|_| slot)
    })
}

fn serve(slot: &'static Slot) {
    loop {
        let lingering = Instant::now();
        let mut seen = slot.state.load(Ordering::Acquire);
        let mut spins = 0u32;
        while seen != POSTED && (spins % 64 != 0 || lingering.elapsed() < LINGER) {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            seen = slot.state.load(Ordering::Acquire);
        }
        if seen != POSTED {
            slot.sleeping.store(true, Ordering::SeqCst);
            // Re-check after announcing sleep: a caller that posted before it saw the flag
            // did not wake us (SeqCst orders the flag and the state word on both sides).
            let now = slot.state.load(Ordering::SeqCst);
            if now != POSTED {
                let _ = futex::wait(&slot.state, futex::Flags::PRIVATE, now, None);
            }
            slot.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        if slot.state.compare_exchange(POSTED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            continue; // taken back by its caller
        }
        let (ptr, len) = (slot.ptr.load(Ordering::Acquire), slot.len.load(Ordering::Acquire));
        // SAFETY: the caller stored a pointer and length of a live byte slice before posting,
        // and keeps that slice alive and unmodified until it sees DONE: having won the
        // POSTED -> RUNNING exchange, the job can no longer be taken back (module notes).
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        let crc = crc32c::crc32c_append(slot.crc.load(Ordering::Relaxed), bytes);
        slot.crc.store(crc, Ordering::Relaxed);
        slot.state.store(DONE, Ordering::Release);
    }
}

/// A CRC being computed elsewhere; [`Self::finish`] returns it. It borrows the bytes, so
/// they outlive the job.
pub(crate) struct PendingCrc<'a> {
    seed: u32,
    bytes: &'a [u8],
    job: Option<(&'static Slot, MutexGuard<'static, ()>)>,
}

/// Starts extending the CRC32C `seed` over `bytes` (`crc32c_append`) on the helper thread,
/// or leaves it for [`PendingCrc::finish`] to compute if the helper is busy or missing.
pub(crate) fn start(seed: u32, bytes: &[u8]) -> PendingCrc<'_> {
    let job = slot().and_then(|slot| slot.owner.try_lock().ok().map(|guard| (slot, guard)));
    if let Some((slot, _)) = &job {
        slot.ptr.store(bytes.as_ptr() as usize, Ordering::Relaxed);
        slot.len.store(bytes.len(), Ordering::Relaxed);
        slot.crc.store(seed, Ordering::Relaxed);
        slot.state.store(POSTED, Ordering::SeqCst);
        if slot.sleeping.load(Ordering::SeqCst) {
            let _ = futex::wake(&slot.state, futex::Flags::PRIVATE, 1);
        }
    }
    PendingCrc { seed, bytes, job }
}

impl PendingCrc<'_> {
    /// The CRC32C of the bytes: the helper's, or computed here if it had not started.
    pub(crate) fn finish(mut self) -> u32 {
        let here = |p: &Self| crc32c::crc32c_append(p.seed, p.bytes);
        let Some((slot, _guard)) = self.job.take() else {
            return here(&self);
        };
        if slot.state.compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return here(&self);
        }
        wait_done(slot);
        let crc = slot.crc.load(Ordering::Relaxed);
        slot.state.store(IDLE, Ordering::Release);
        crc
    }
}

/// Waits for the helper to finish the running job (a few microseconds for 100 KB).
fn wait_done(slot: &Slot) {
    let mut spins = 0u32;
    while slot.state.load(Ordering::Acquire) == RUNNING {
        spins += 1;
        if spins % 1024 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

impl Drop for PendingCrc<'_> {
    fn drop(&mut self) {
        // A job dropped without `finish` (an error between start and finish) must still not
        // leave the helper reading bytes that are about to go away.
        if let Some((slot, _guard)) = self.job.take() {
            if slot.state.compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire).is_err() {
                wait_done(slot);
                slot.state.store(IDLE, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_gets_the_right_crc_whoever_computes_it() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in [0, 1, 4096, 100_000, 300_000] {
            let bytes = &data[..len];
            assert_eq!(start(0, bytes).finish(), crc32c::crc32c(bytes), "len {len}");
            let seed = crc32c::crc32c(b"head");
            assert_eq!(start(seed, bytes).finish(), crc32c::crc32c_append(seed, bytes), "len {len}");
        }
    }

    #[test]
    fn concurrent_callers_each_get_their_own_crc() {
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..500usize {
                        let bytes = vec![t.wrapping_add(i as u8); 1000 + i * 37];
                        assert_eq!(start(i as u32, &bytes).finish(), crc32c::crc32c_append(i as u32, &bytes));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn a_dropped_job_leaves_the_helper_usable() {
        for _ in 0..100 {
            let bytes = vec![7u8; 50_000];
            drop(start(0, &bytes));
        }
        let bytes = vec![9u8; 70_000];
        assert_eq!(start(0, &bytes).finish(), crc32c::crc32c(&bytes));
    }
}
