//! The topic doorbell: a shared counter that every append to any partition of a topic
//! bumps, and that consumers in any process sleep on (a futex on a shared file mapping)
//! instead of polling. A consumer takes a ticket (the counter), checks its partitions, and
//! if there was nothing new sleeps until the counter moves past the ticket.
//!
//! Appends pay one atomic add, plus a `FUTEX_WAKE` system call only while someone sleeps.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. The mapping is exactly [`DOORBELL_BYTES`] long, page-aligned, and the file is created
//!    at that size and never truncated.
//! 2. The two words are only ever accessed atomically, by every process.

#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use memmap2::MmapRaw;
use rustix::thread::futex;

use crate::Result;

/// Size of the doorbell file.
pub const DOORBELL_BYTES: usize = 4096;
/// The waiter count lives on its own cache line, away from the hot counter.
const WAITERS_AT: usize = 64;

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
    /// Returns whether it rang. Spurious early returns are possible; callers re-check.
    pub fn wait(&self, ticket: u32, timeout: Option<Duration>) -> bool {
        let waiters = self.word(WAITERS_AT);
        waiters.fetch_add(1, Ordering::SeqCst);
        let mut rang = self.word(0).load(Ordering::SeqCst) != ticket;
        if !rang {
            let ts = timeout.map(|t| futex::Timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(t.subsec_nanos()),
            });
            // Not FUTEX_PRIVATE: the word is shared with other processes.
            let _ = futex::wait(self.word(0), futex::Flags::empty(), ticket, ts.as_ref());
            rang = self.word(0).load(Ordering::SeqCst) != ticket;
        }
        waiters.fetch_sub(1, Ordering::SeqCst);
        rang
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

    #[test]
    fn a_ring_wakes_a_sleeper_in_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doorbell");
        let a = std::sync::Arc::new(Doorbell::open(&path).unwrap());
        let b = Doorbell::open(&path).unwrap();
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
}
