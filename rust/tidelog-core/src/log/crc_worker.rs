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
//! A [`Job`]'s state word moves `IDLE -> POSTED` (caller), `POSTED -> RUNNING -> DONE`
//! (helper) and `DONE -> IDLE` or `POSTED -> IDLE` (caller, taking the result or the job
//! back). The helper reads the caller's bytes only between `RUNNING` and `DONE`, and the
//! caller does not return before it has seen `DONE` or taken the job back from `POSTED`;
//! the loom model at the end of this file checks exactly that.

#![allow(unsafe_code)]
// Under loom there is no helper thread: only the model (a test) drives a `Job`.
#![cfg_attr(all(loom, not(test)), allow(dead_code))]

use crate::ring::sync::{spin_loop, yield_now, AtomicU32, AtomicUsize, Ordering};

const IDLE: u32 = 0;
const POSTED: u32 = 1;
const RUNNING: u32 = 2;
const DONE: u32 = 3;

/// One CRC job handed from a caller to the helper.
struct Job {
    state: AtomicU32,
    ptr: AtomicUsize,
    len: AtomicUsize,
    /// The CRC the job extends (its input), then the job's result.
    crc: AtomicU32,
}

impl Job {
    fn new() -> Self {
        Job {
            state: AtomicU32::new(IDLE),
            ptr: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            crc: AtomicU32::new(0),
        }
    }

    /// Caller: posts "extend `seed` over `bytes`". The caller owns the job (one at a time).
    fn post(&self, seed: u32, bytes: &[u8]) {
        self.ptr.store(bytes.as_ptr() as usize, Ordering::Relaxed);
        self.len.store(bytes.len(), Ordering::Relaxed);
        self.crc.store(seed, Ordering::Relaxed);
        // SeqCst: also ordered against the helper's "sleeping" flag (see `start`).
        self.state.store(POSTED, Ordering::SeqCst);
    }

    /// Helper: runs the posted job with `run(seed, ptr, len)`; false if nothing was posted
    /// or its caller took it back first.
    fn run_posted(&self, run: impl FnOnce(u32, usize, usize) -> u32) -> bool {
        // Acquire pairs with the caller's store of POSTED: ptr, len and seed are visible.
        if self.state.compare_exchange(POSTED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        let crc = run(
            self.crc.load(Ordering::Relaxed),
            self.ptr.load(Ordering::Relaxed),
            self.len.load(Ordering::Relaxed),
        );
        self.crc.store(crc, Ordering::Relaxed);
        // Release: the reads of the caller's bytes and the result happen before DONE is seen.
        self.state.store(DONE, Ordering::Release);
        true
    }

    /// Caller: the helper's result, or `None` if the job was taken back before the helper
    /// started it (the caller computes it). Either way the helper no longer touches the bytes.
    fn finish(&self) -> Option<u32> {
        if self.state.compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return None;
        }
        self.wait_done();
        let crc = self.crc.load(Ordering::Relaxed);
        self.state.store(IDLE, Ordering::Release);
        Some(crc)
    }

    /// Caller: waits out a running job (a few microseconds for 100 KB); Acquire pairs with
    /// the helper's store of DONE.
    fn wait_done(&self) {
        let mut spins = 0u32;
        while self.state.load(Ordering::Acquire) == RUNNING {
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 {
                yield_now();
            } else {
                spin_loop();
            }
        }
    }
}

/// A CRC being computed elsewhere; [`Self::finish`] returns it. It borrows the bytes, so
/// they outlive the job.
pub(crate) struct PendingCrc<'a> {
    seed: u32,
    bytes: &'a [u8],
    job: Option<helper::Claim>,
}

/// Starts extending the CRC32C `seed` over `bytes` (`crc32c_append`) on the helper thread,
/// or leaves it for [`PendingCrc::finish`] to compute if the helper is busy or missing.
pub(crate) fn start(seed: u32, bytes: &[u8]) -> PendingCrc<'_> {
    PendingCrc { seed, bytes, job: helper::post(seed, bytes) }
}

impl PendingCrc<'_> {
    /// The CRC: the helper's, or computed here if it had not started.
    pub(crate) fn finish(mut self) -> u32 {
        match self.job.take().and_then(|claim| claim.job().finish()) {
            Some(crc) => crc,
            None => crc32c::crc32c_append(self.seed, self.bytes),
        }
    }
}

impl Drop for PendingCrc<'_> {
    fn drop(&mut self) {
        // A job dropped without `finish` (an error between start and finish) must still not
        // leave the helper reading bytes that are about to go away.
        if let Some(claim) = self.job.take() {
            let _ = claim.job().finish();
        }
    }
}

#[cfg(not(loom))]
mod helper {
    //! The helper thread and the one job slot it serves.

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, MutexGuard, OnceLock};
    use std::time::{Duration, Instant};

    use rustix::thread::futex;

    use super::{Job, POSTED};

    /// How long the helper keeps looking for the next job before it sleeps. Bulk appends
    /// come back to back a few tens of microseconds apart; a helper that slept between them
    /// would mostly be woken too late to help.
    const LINGER: Duration = Duration::from_micros(50);

    struct Slot {
        /// Held by the caller whose job this is; another caller computes its CRC itself.
        owner: Mutex<()>,
        job: Job,
        /// Set by the helper before it sleeps on the job's state, so callers wake it only then.
        sleeping: AtomicBool,
    }

    /// A caller's hold on the slot, with its job posted.
    pub(super) struct Claim {
        slot: &'static Slot,
        _owner: MutexGuard<'static, ()>,
    }

    impl Claim {
        pub(super) fn job(&self) -> &Job {
            &self.slot.job
        }
    }

    static SLOT: OnceLock<Option<&'static Slot>> = OnceLock::new();

    fn slot() -> Option<&'static Slot> {
        *SLOT.get_or_init(|| {
            let slot: &'static Slot = Box::leak(Box::new(Slot {
                owner: Mutex::new(()),
                job: Job::new(),
                sleeping: AtomicBool::new(false),
            }));
            std::thread::Builder::new()
                .name("tidelog-crc".into())
                .spawn(move || serve(slot))
                .ok()
                .map(|_| slot)
        })
    }

    /// Posts the job if the helper exists and is free.
    pub(super) fn post(seed: u32, bytes: &[u8]) -> Option<Claim> {
        let slot = slot()?;
        let owner = slot.owner.try_lock().ok()?;
        slot.job.post(seed, bytes);
        // SeqCst with the helper's flag: either it sees POSTED before sleeping, or we see it
        // asleep and wake it.
        if slot.sleeping.load(Ordering::SeqCst) {
            let _ = futex::wake(&slot.job.state, futex::Flags::PRIVATE, 1);
        }
        Some(Claim { slot, _owner: owner })
    }

    fn serve(slot: &'static Slot) {
        loop {
            let lingering = Instant::now();
            let mut spins = 0u32;
            while slot.job.state.load(Ordering::Acquire) != POSTED
                && (spins % 64 != 0 || lingering.elapsed() < LINGER)
            {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
            }
            let ran = slot.job.run_posted(|seed, ptr, len| {
                // SAFETY: the caller posted a pointer and length of a live byte slice and
                // keeps it alive and unmodified until it has seen DONE: having won the
                // POSTED -> RUNNING exchange, the job can no longer be taken back (module
                // notes; checked by the loom model).
                let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
                crc32c::crc32c_append(seed, bytes)
            });
            if !ran && slot.job.state.load(Ordering::Acquire) != POSTED {
                slot.sleeping.store(true, Ordering::SeqCst);
                // Re-check after announcing sleep: a caller that posted before it saw the
                // flag did not wake us.
                let now = slot.job.state.load(Ordering::SeqCst);
                if now != POSTED {
                    let _ = futex::wait(&slot.job.state, futex::Flags::PRIVATE, now, None);
                }
                slot.sleeping.store(false, Ordering::SeqCst);
            }
        }
    }
}

#[cfg(loom)]
mod helper {
    //! Under loom there is no helper thread (its futex sleep is not modelled): every CRC is
    //! computed by its caller, and the model below drives a [`Job`] directly.

    pub(super) struct Claim;

    impl Claim {
        pub(super) fn job(&self) -> &super::Job {
            unreachable!("no claims under loom")
        }
    }

    pub(super) fn post(_seed: u32, _bytes: &[u8]) -> Option<Claim> {
        None
    }
}

#[cfg(all(test, not(loom)))]
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

/// loom model of the job handoff: whatever the interleaving, the caller gets the right CRC,
/// and the helper's read of the caller's bytes happens before the caller reuses them (loom
/// reports a data race on the cell otherwise). Run:
/// `RUSTFLAGS="--cfg loom" cargo test -p tidelog-core --lib --release crc_worker`.
#[cfg(all(test, loom))]
mod loom_model {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    use super::Job;

    fn handoff(helper_tries: usize) {
        loom::model(move || {
            let job = Arc::new(Job::new());
            // Stands for the caller's bytes: the helper reads it, the caller then reuses it.
            let bytes = Arc::new(UnsafeCell::new(5u8));
            let helper = {
                let (job, bytes) = (job.clone(), bytes.clone());
                loom::thread::spawn(move || {
                    for _ in 0..helper_tries {
                        // SAFETY (test): a read through loom's cell, which loom checks.
                        job.run_posted(|seed, _, _| seed ^ u32::from(bytes.with(|b| unsafe { *b })));
                    }
                })
            };
            job.post(1, &[]);
            let crc = job.finish().unwrap_or(1 ^ 5);
            assert_eq!(crc, 1 ^ 5);
            // SAFETY (test): the write loom checks against the helper's read.
            bytes.with_mut(|b| unsafe { *b = 0 });
            // The slot is free again: a second job works the same way.
            job.post(2, &[]);
            assert_eq!(job.finish().unwrap_or(2), 2, "2 ^ the reused bytes (0)");
            helper.join().unwrap();
        });
    }

    #[test]
    fn crc_worker_handoff_with_one_helper_attempt() {
        handoff(1);
    }

    #[test]
    fn crc_worker_handoff_with_two_helper_attempts() {
        handoff(2);
    }
}
