//! Backpressure state: buffer occupancy with high/low watermarks and hysteresis.
//!
//! Pressure starts when occupancy reaches the high watermark and ends only when it has
//! fallen to the low watermark, so a producer hovering around one threshold does not flap
//! between accepting and refusing. Every start of a pressure episode is counted.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Occupancy tracking and the waiting room for blocked senders.
#[derive(Debug)]
pub struct Pressure {
    /// Messages accepted and not yet taken by the writer (or evicted).
    buffered: AtomicUsize,
    high: usize,
    low: usize,
    on: AtomicBool,
    /// Pressure imposed from outside the buffer (a consumer group lagging too far behind),
    /// with its own hysteresis decided by whoever sets it.
    external: AtomicBool,
    /// Pressure episodes started.
    pub high_watermark_hits: AtomicU64,
    /// Nanoseconds senders spent blocked.
    pub blocked_nanos: AtomicU64,
    room: Mutex<()>,
    relieved: Condvar,
    waiting: AtomicUsize,
    /// Bumped whenever pressure ends (or waiters are told to give up): async senders sleep
    /// on it through the waker instead of on `relieved`.
    bell: AtomicU32,
    /// Wakers sleeping on `bell`: only then does ringing it cost a system call.
    bell_armed: AtomicU32,
}

impl Pressure {
    /// Pressure between `low` and `high` buffered messages.
    pub fn new(high: usize, low: usize) -> Self {
        Pressure {
            buffered: AtomicUsize::new(0),
            high: high.max(1),
            low: low.min(high.max(1) - 1),
            on: AtomicBool::new(false),
            external: AtomicBool::new(false),
            high_watermark_hits: AtomicU64::new(0),
            blocked_nanos: AtomicU64::new(0),
            room: Mutex::new(()),
            relieved: Condvar::new(),
            waiting: AtomicUsize::new(0),
            bell: AtomicU32::new(0),
            bell_armed: AtomicU32::new(0),
        }
    }

    /// Messages buffered now.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// Whether pressure is on, updating the hysteresis state from the occupancy.
    pub fn is_on(&self) -> bool {
        self.update(|| self.relieve())
    }

    /// [`Self::is_on`] for a waiter, which holds `room`: ending the pressure wakes the other
    /// waiters without taking `room` again (a second lock by the same thread never returns).
    fn is_on_holding_room(&self) -> bool {
        self.update(|| {
            if self.on.swap(false, Ordering::AcqRel) {
                self.relieved.notify_all();
                self.ring_bell();
            }
        })
    }

    /// The hysteresis: `end` runs when the occupancy says pressure is over.
    fn update(&self, end: impl FnOnce()) -> bool {
        if self.external.load(Ordering::Acquire) {
            return true;
        }
        let buffered = self.buffered();
        if self.on.load(Ordering::Acquire) {
            if buffered <= self.low {
                end();
                return false;
            }
            true
        } else if buffered >= self.high {
            if !self.on.swap(true, Ordering::AcqRel) {
                self.high_watermark_hits.fetch_add(1, Ordering::Relaxed);
            }
            true
        } else {
            false
        }
    }

    fn relieve(&self) {
        if self.on.swap(false, Ordering::AcqRel) {
            if self.waiting.load(Ordering::Acquire) > 0 {
                let _room = self.room.lock().unwrap_or_else(|e| e.into_inner());
                self.relieved.notify_all();
            }
            self.ring_bell();
        }
    }

    /// Wakes async senders (through their waker): once per pressure episode, never per send.
    fn ring_bell(&self) {
        self.bell.fetch_add(1, Ordering::SeqCst);
        if self.bell_armed.load(Ordering::SeqCst) > 0 {
            let _ = rustix::thread::futex::wake(
                &self.bell,
                rustix::thread::futex::Flags::PRIVATE,
                i32::MAX as u32,
            );
        }
    }

    /// Starts or ends external pressure (see `max_lag`). Starting counts as a high
    /// watermark hit; ending wakes blocked senders.
    pub fn set_external(&self, on: bool) {
        let was = self.external.swap(on, Ordering::AcqRel);
        if on && !was {
            self.high_watermark_hits.fetch_add(1, Ordering::Relaxed);
        }
        if !on && was {
            self.wake_all();
        }
    }

    /// Whether external pressure is on.
    pub fn external(&self) -> bool {
        self.external.load(Ordering::Acquire)
    }

    /// Counts `n` messages into the buffer.
    pub fn add(&self, n: usize) {
        self.buffered.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` messages out of the buffer, ending pressure at the low watermark.
    pub fn remove(&self, n: usize) {
        let now = self.buffered.fetch_sub(n, Ordering::AcqRel) - n;
        if now <= self.low && self.on.load(Ordering::Acquire) {
            self.relieve();
        }
    }

    /// Wakes every blocked sender (used when the producer closes or fails).
    pub fn wake_all(&self) {
        {
            let _room = self.room.lock().unwrap_or_else(|e| e.into_inner());
            self.relieved.notify_all();
        }
        self.ring_bell();
    }

    /// Waits until pressure is off (or `stop()` says to give up, or `deadline` passes).
    /// Returns whether pressure ended.
    pub fn wait(&self, deadline: Option<Instant>, stop: impl Fn() -> bool) -> bool {
        let started = Instant::now();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let mut room = self.room.lock().unwrap_or_else(|e| e.into_inner());
        let relieved = loop {
            if !self.is_on_holding_room() {
                break true;
            }
            if stop() {
                break false;
            }
            // Bounded waits: a missed wake-up costs at most this long.
            let mut slice = Duration::from_millis(50);
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    break false;
                }
                slice = slice.min(d - now);
            }
            room = self.relieved.wait_timeout(room, slice).unwrap_or_else(|e| e.into_inner()).0;
        };
        drop(room);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.blocked_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        relieved
    }
}

/// Async senders wait for the end of pressure through the waker, on `bell`.
impl crate::waker::Bell for Pressure {
    fn word(&self) -> &AtomicU32 {
        &self.bell
    }

    fn private(&self) -> bool {
        true
    }

    fn arm(&self) {
        self.bell_armed.fetch_add(1, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.bell_armed.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_does_not_flap() {
        let p = Pressure::new(8, 4);
        p.add(7);
        assert!(!p.is_on());
        p.add(1);
        assert!(p.is_on());
        p.remove(2); // 6: between the watermarks, still on
        assert!(p.is_on());
        p.add(2);
        p.remove(3); // 5
        assert!(p.is_on());
        p.remove(1); // 4: low watermark reached
        assert!(!p.is_on());
        p.add(3); // 7: below high, stays off
        assert!(!p.is_on());
        assert_eq!(p.high_watermark_hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn waiters_are_released_at_the_low_watermark() {
        let p = std::sync::Arc::new(Pressure::new(4, 1));
        p.add(4);
        assert!(p.is_on());
        let q = p.clone();
        let t = std::thread::spawn(move || q.wait(None, || false));
        std::thread::sleep(Duration::from_millis(20));
        p.remove(3);
        assert!(t.join().unwrap());
        let deadline = Some(Instant::now() + Duration::from_millis(10));
        p.add(3);
        assert!(p.is_on());
        assert!(!p.wait(deadline, || false));
    }

    #[test]
    fn a_waiter_that_finds_the_pressure_over_ends_it_without_deadlocking() {
        // The state a sender leaves when it read a full buffer, was preempted while the
        // writer drained it (and, seeing pressure off, did not relieve), then turned
        // pressure on: on, with nothing buffered. The waiter itself must end it; it used to
        // take the waiting-room lock it already held, and hung forever.
        let p = std::sync::Arc::new(Pressure::new(4, 1));
        p.on.store(true, Ordering::SeqCst);
        let q = p.clone();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(q.wait(None, || false)));
        let relieved = finished.recv_timeout(Duration::from_secs(10)).expect("the waiter deadlocked");
        assert!(relieved && !p.is_on());
    }
}
