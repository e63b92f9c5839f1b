//! How flushers wait for the writer: a futex on a counter the writer bumps after every
//! round, waking every waiter at once.
//!
//! A condition variable would make the woken flushers re-take its mutex one after another,
//! each waiting for the previous one to be scheduled; with `fsync="always"` and several
//! threads committing, that chain of wake-ups (on top of the GIL they must re-take) was most
//! of the time between two group commits. The futex lets them all run straight away.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::thread::futex;

/// A round counter the writer bumps and flushers sleep on.
#[derive(Default)]
pub(crate) struct Progress {
    round: AtomicU32,
}

impl Progress {
    /// The current round: take it before checking whether the wait is over.
    pub fn round(&self) -> u32 {
        self.round.load(Ordering::SeqCst)
    }

    /// The counter itself (the waker sleeps on it for async flushers).
    pub fn word(&self) -> &AtomicU32 {
        &self.round
    }

    /// Ends a round and wakes every waiter.
    pub fn bump(&self) {
        self.round.fetch_add(1, Ordering::SeqCst);
        let _ = futex::wake(&self.round, futex::Flags::PRIVATE, i32::MAX as u32);
    }

    /// Sleeps until a round ends after `round` was taken, or `timeout` passes (spurious
    /// early returns are possible: callers re-check their condition).
    pub fn wait(&self, round: u32, timeout: Duration) {
        let ts = futex::Timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let _ = futex::wait(&self.round, futex::Flags::PRIVATE, round, Some(&ts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_bump_wakes_every_waiter_and_an_old_round_returns_at_once() {
        let progress = Arc::new(Progress::default());
        let round = progress.round();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let p = progress.clone();
                std::thread::spawn(move || {
                    while p.round() == round {
                        p.wait(round, Duration::from_secs(10));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        progress.bump();
        for w in waiters {
            w.join().unwrap();
        }
        let started = std::time::Instant::now();
        progress.wait(round, Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5), "a stale round does not sleep");
    }
}
