//! The topic doorbell: a shared counter that every append to any partition of a topic
//! bumps, and that consumers in any process sleep on (a futex on a shared file mapping)
//! instead of polling. A consumer takes a ticket (the counter), checks its partitions, and
//! if there was nothing new sleeps until the counter moves past the ticket.
//!
//! Appends pay one atomic add, plus a `FUTEX_WAKE` system call only while someone sleeps.
//!
//! A waiter may first spin on the counter for a few microseconds ([`Doorbell::wait_spin`]):
//! a futex sleep and wake-up cost the waiter about 10 µs before it runs again, while a
//! spinning waiter in another process sees the counter move within a cache-line transfer.
//! Spinners are not counted as waiters, so appends do not pay a wake for them; a spinner
//! that gives up then becomes an ordinary sleeper, through the same count-then-check
//! protocol as [`Doorbell::wait`], so a ring between the two is never missed.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. The mapping is exactly [`DOORBELL_BYTES`] long, page-aligned, and the file is created
//!    at that size and never truncated.
//! 2. The two words are only ever accessed atomically, by every process.

#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapRaw;
use rustix::thread::futex;

use crate::Result;

/// Size of the doorbell file.
pub const DOORBELL_BYTES: usize = 4096;
/// The waiter count lives on its own cache line, away from the hot counter.
const WAITERS_AT: usize = 64;
/// Loads of the counter between two looks at the clock while spinning: a clock read costs
/// about as much as a few dozen loads, and 32 `spin_loop` rounds take under 2 µs even where
/// one `pause` takes ~140 cycles, so the spin overruns its limit by no more than that.
const SPINS_PER_CLOCK_READ: u32 = 32;

/// A process's handle on a topic's doorbell.
pub struct Doorbell {
    map: MmapRaw,
    _file: File,
}

// SAFETY: the shared state is two atomics (invariant 2); the mapping is not tied to a thread.
unsafe impl Send for Doorbell {}
// SAFETY: as above.
unsafe impl Sync for Doorbell {}

impl Doorbell {
    /// Opens (creating if needed) the doorbell file at `path`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, map) = super::map_shared_file(path, DOORBELL_BYTES)?;
        Ok(Doorbell { map, _file: file })
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        // SAFETY: `at` is 0 or WAITERS_AT, both 4-aligned and inside the live mapping
        // (invariant 1), and the word is only accessed atomically (invariant 2).
        unsafe { &*self.map.as_ptr().add(at).cast::<AtomicU32>() }
    }

    /// The current ticket: take it before checking for data, then [`Self::wait`] on it.
    pub fn ticket(&self) -> u32 {
        self.word(0).load(Ordering::SeqCst)
    }

    /// Announces new data, waking every sleeper.
    pub fn ring(&self) {
        // SeqCst pairs with `wait`: either we see its waiter count, or it sees our bump.
        self.word(0).fetch_add(1, Ordering::SeqCst);
        if self.word(WAITERS_AT).load(Ordering::SeqCst) > 0 {
            let _ = futex::wake(self.word(0), futex::Flags::empty(), i32::MAX as u32);
        }
    }

    /// Sleeps until the doorbell rings after `ticket` was taken, or `timeout` passes.
    /// Returns whether it rang. A signal to the thread ends the wait early (false unless it
    /// rang), so a caller in Python gets to its signal handlers (Ctrl-C); callers re-check.
    pub fn wait(&self, ticket: u32, timeout: Option<Duration>) -> bool {
        let waiters = self.word(WAITERS_AT);
        waiters.fetch_add(1, Ordering::SeqCst);
        // A timeout too long for the clock is no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let rang = loop {
            if self.word(0).load(Ordering::SeqCst) != ticket {
                break true;
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break false,
                },
                None => None,
            };
            let ts = left.map(|t| futex::Timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(t.subsec_nanos()),
            });
            // Not FUTEX_PRIVATE: the word is shared with other processes.
            match futex::wait(self.word(0), futex::Flags::empty(), ticket, ts.as_ref()) {
                // Woken, or the word moved before we slept: look again. A wake can come
                // from a ring of an earlier ticket whose ringer saw this waiter registered
                // (it counts waiters after its bump), with the word still at our ticket.
                Ok(()) | Err(rustix::io::Errno::AGAIN) => continue,
                // A signal, or the timeout.
                Err(_) => break self.word(0).load(Ordering::SeqCst) != ticket,
            }
        };
        waiters.fetch_sub(1, Ordering::SeqCst);
        rang
    }

    /// Spins for at most `limit` until the doorbell rings after `ticket` was taken; returns
    /// whether it rang. Costs CPU for the whole spin and makes no system call.
    pub fn spin(&self, ticket: u32, limit: Duration) -> bool {
        let counter = self.word(0);
        if limit.is_zero() {
            return counter.load(Ordering::SeqCst) != ticket;
        }
        let started = Instant::now();
        loop {
            for _ in 0..SPINS_PER_CLOCK_READ {
                // SeqCst as in `ticket`: what the ring published before its bump is visible
                // once the bump is.
                if counter.load(Ordering::SeqCst) != ticket {
                    return true;
                }
                std::hint::spin_loop();
            }
            if started.elapsed() >= limit {
                return counter.load(Ordering::SeqCst) != ticket;
            }
        }
    }

    /// As [`Self::wait`], spinning for at most `spin` first (never longer than `timeout`),
    /// then sleeping for what is left of `timeout`. A waiter that gives up spinning
    /// registers as a sleeper and re-checks the counter before the kernel puts it to sleep
    /// (and the kernel checks again), so a ring at any point of the hand-over wakes it.
    pub fn wait_spin(&self, ticket: u32, timeout: Option<Duration>, spin: Duration) -> bool {
        if spin.is_zero() {
            return self.wait(ticket, timeout);
        }
        let started = Instant::now();
        if self.spin(ticket, timeout.map_or(spin, |t| t.min(spin))) {
            return true;
        }
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        if left.is_some_and(|t| t.is_zero()) {
            return false;
        }
        self.wait(ticket, left)
    }
}

/// The waker (asyncio) sleeps on the counter like [`Doorbell::wait`] does, counted in the
/// same waiter count, so appends wake it and pay nothing while nobody waits.
impl crate::waker::Bell for Doorbell {
    fn word(&self) -> &AtomicU32 {
        Doorbell::word(self, 0)
    }

    fn private(&self) -> bool {
        false // other processes ring it
    }

    fn arm(&self) {
        Doorbell::word(self, WAITERS_AT).fetch_add(1, Ordering::SeqCst);
    }

    fn disarm(&self) {
        Doorbell::word(self, WAITERS_AT).fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// One doorbell file and two handles on it: two mappings, as two processes have.
    fn two_handles() -> (tempfile::TempDir, std::sync::Arc<Doorbell>, Doorbell) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doorbell");
        let a = std::sync::Arc::new(Doorbell::open(&path).unwrap());
        let b = Doorbell::open(&path).unwrap();
        (dir, a, b)
    }

    #[test]
    fn a_ring_wakes_a_sleeper_in_another_handle() {
        let (_dir, a, b) = two_handles();
        let ticket = a.ticket();
        let sleeper = {
            let a = a.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                (a.wait(ticket, Some(Duration::from_secs(10))), started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        b.ring();
        let (rang, waited) = sleeper.join().unwrap();
        assert!(rang);
        assert!(waited < Duration::from_secs(5));
        assert!(!a.wait(a.ticket(), Some(Duration::from_millis(5))));
        assert!(a.wait(ticket, Some(Duration::from_millis(5))), "an old ticket returns at once");
    }

    /// A ring at any point of a spinning wait (while spinning, as the spin gives up, between
    /// registering as a sleeper and the futex sleep, or during it) ends the wait: thousands
    /// of waits whose spin limit and ring delay are drawn so they cross at every point.
    #[test]
    fn a_ring_during_the_hand_over_from_spinning_to_sleeping_is_never_missed() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let (_dir, waiter, ringer) = two_handles();
        let (ready, stop) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicBool::new(false)));
        let rounds = 3000u32;
        let thread = {
            let (waiter, ready, stop) = (waiter.clone(), ready.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut missed = 0;
                for round in 1..=rounds {
                    let ticket = waiter.ticket();
                    ready.store(round, Ordering::SeqCst);
                    // 0-15 µs: sometimes zero (sleep at once), mostly crossing the ring delay.
                    let spin = Duration::from_micros(u64::from(round.wrapping_mul(7) % 16));
                    // A missed ring shows as a wait that lasts until its timeout (a ring
                    // arrives within microseconds, or milliseconds on a loaded machine).
                    let timeout = Duration::from_secs(5);
                    let started = Instant::now();
                    let rang = waiter.wait_spin(ticket, Some(timeout), spin);
                    if !rang || started.elapsed() >= timeout {
                        missed += 1;
                        stop.store(true, Ordering::SeqCst);
                        break;
                    }
                }
                missed
            })
        };
        for round in 1..=rounds {
            while ready.load(Ordering::SeqCst) != round {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                std::hint::spin_loop();
            }
            // 0-20 µs after the waiter took its ticket.
            let delay = Duration::from_nanos(u64::from(round.wrapping_mul(2_654_435_761) % 20_000));
            let started = Instant::now();
            while started.elapsed() < delay {
                std::hint::spin_loop();
            }
            ringer.ring();
        }
        assert_eq!(thread.join().unwrap(), 0, "a ring was missed: the wait lasted until its timeout");
        assert_eq!(waiter.word(WAITERS_AT).load(Ordering::SeqCst), 0, "every sleeper unregistered");
    }

    #[test]
    fn a_late_wake_from_an_earlier_ring_does_not_end_a_wait() {
        // A ringer bumps the word, then wakes sleepers if it counts any: a sleeper that took
        // its ticket after the bump but registered before the count is woken with the word at
        // its ticket. That wait must go on (CI once saw one return "not rang" at once).
        let (_dir, a, b) = two_handles();
        let ticket = a.ticket();
        let sleeper = {
            let a = a.clone();
            std::thread::spawn(move || (a.wait(ticket, Some(Duration::from_secs(10))), a.ticket()))
        };
        while b.word(WAITERS_AT).load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        // The earlier ring's late wake: no bump.
        let _ = futex::wake(b.word(0), futex::Flags::empty(), i32::MAX as u32);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!sleeper.is_finished(), "the late wake ended the wait");
        b.ring();
        let (rang, now) = sleeper.join().unwrap();
        assert!(rang);
        assert_eq!(now, ticket.wrapping_add(1));
    }

    #[test]
    fn a_spin_sees_a_ring_without_registering_and_gives_up_after_its_limit() {
        let (_dir, a, b) = two_handles();
        let ticket = a.ticket();
        assert!(!a.spin(ticket, Duration::ZERO));
        assert!(!a.spin(ticket, Duration::from_micros(50)), "nothing rang: the spin gives up");
        assert!(!a.wait_spin(ticket, Some(Duration::ZERO), Duration::from_micros(50)));
        assert!(!a.wait_spin(ticket, Some(Duration::from_millis(2)), Duration::from_micros(50)));
        let spinner = {
            let a = a.clone();
            std::thread::spawn(move || a.spin(ticket, Duration::from_secs(30)))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(a.word(WAITERS_AT).load(Ordering::SeqCst), 0, "a spinner is not a sleeper");
        b.ring();
        assert!(spinner.join().unwrap());
        assert!(a.wait_spin(ticket, Some(Duration::ZERO), Duration::from_micros(50)), "it rang");
    }
}
