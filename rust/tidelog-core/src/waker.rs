//! The waker: one thread per event loop that sleeps on every futex word an async task waits
//! for (topic doorbells, a producer's pressure and flush rounds) at once, with
//! `futex_waitv`, and turns a move of any of them into a readable eventfd that the event
//! loop watches. So an asyncio task waits for the store's own signal, not a timer, and an
//! idle waiter costs nothing: the thread sleeps in the kernel until a watched word moves.
//!
//! Watches are one-shot: [`Waker::watch`] arms a word with the value the caller last saw;
//! when the word differs, the thread makes the eventfd readable. The caller (the loop)
//! re-checks what it waits for and watches again what is still pending. A fired word
//! lingers in the sleep set, expecting the value that fired it: a task that waits again
//! right away (a consumer polling in a loop) takes its ticket after that move and watches
//! the same value, which then costs no interrupt of the thread (measured: the re-arm
//! interrupt was a third thread wake-up per message in the cross-process latency run). A
//! lingering word nobody watched again is dropped (and disarmed) at its next move, without
//! a notification: a word stays armed at most one move longer than a task waits on it,
//! because an armed doorbell makes every append in every process pay a `FUTEX_WAKE` (the
//! doorbell's waiter count is what saves it).
//!
//! Invariants:
//! 1. A word is armed (its [`Bell::arm`] called) exactly while it is in the thread's sleep
//!    set, and disarmed before it leaves it: every `arm` has one `disarm`.
//! 2. The thread checks every word against its expected value after arming it and before
//!    sleeping, and the kernel checks again atomically, so a move between a task's check and
//!    the sleep is never missed (the futex protocol).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustix::event::{eventfd, EventfdFlags};
use rustix::thread::futex;

use crate::{Error, Result};

/// Most words one waker sleeps on at once (`futex_waitv` takes 128; one is the control word).
pub const MAX_WATCHED: usize = 127;

/// A futex word that moves when something a task may wait for happens.
pub trait Bell: Send + Sync {
    /// The word.
    fn word(&self) -> &AtomicU32;
    /// True if only this process moves the word (a `FUTEX_PRIVATE` wake); false for words in
    /// shared files that other processes move.
    fn private(&self) -> bool;
    /// The waker is about to sleep on the word: from now on, whoever moves it must wake
    /// sleepers.
    fn arm(&self);
    /// Undoes one [`Self::arm`].
    fn disarm(&self);
}

struct Watched {
    bell: Arc<dyn Bell>,
    expected: u32,
    /// Fired and not watched again since: lingering (see the module docs).
    fired: bool,
}

struct Shared {
    /// Watched words by address, with the value last seen by a task.
    watches: Mutex<HashMap<usize, Watched>>,
    /// Bumped (and woken) to make the thread re-read `watches` or stop.
    control: AtomicU32,
    stop: AtomicBool,
    eventfd: OwnedFd,
}

impl Shared {
    fn interrupt(&self) {
        self.control.fetch_add(1, Ordering::SeqCst);
        let _ = futex::wake(&self.control, futex::Flags::PRIVATE, 1);
    }

    fn notify(&self) {
        // A full counter (EAGAIN) is still readable: nothing is lost.
        let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
    }
}

/// One event loop's waker: its thread and its eventfd.
pub struct Waker {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Waker {
    /// Starts the waker thread.
    ///
    /// # Errors
    /// The eventfd or the thread could not be created.
    pub fn new() -> Result<Self> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| Error::io("eventfd", std::path::Path::new("eventfd"), e.into()))?;
        let shared = Arc::new(Shared {
            watches: Mutex::new(HashMap::new()),
            control: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            eventfd: fd,
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tidelog-waker".into())
            .spawn(move || run(&for_thread))
            .map_err(|e| Error::io("spawn waker", std::path::Path::new("waker"), e))?;
        Ok(Waker { shared, thread: Mutex::new(Some(thread)) })
    }

    /// The eventfd the loop watches: readable after a watched word moved.
    pub fn fd(&self) -> RawFd {
        self.shared.eventfd.as_fd().as_raw_fd()
    }

    /// Empties the eventfd (the loop calls it when the fd is readable).
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.shared.eventfd, &mut buf);
    }

    /// Makes the eventfd readable once `bell`'s word differs from `expected` (at once if it
    /// already does). Watching a word already watched replaces the expected value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when [`MAX_WATCHED`] other words are watched already;
    /// [`Error::Closed`] after [`Self::close`].
    pub fn watch(&self, bell: Arc<dyn Bell>, expected: u32) -> Result<()> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let key = std::ptr::from_ref(bell.word()) as usize;
        {
            let mut watches = self.shared.watches.lock().map_err(|_| Error::Closed)?;
            if let Some(w) = watches.get_mut(&key) {
                if w.expected == expected {
                    // The thread sleeps on this value already (a live watch, or a fired one
                    // lingering): claim it, no interrupt.
                    w.fired = false;
                    return Ok(());
                }
                if !w.fired && w.expected != w.bell.word().load(Ordering::SeqCst) {
                    // Another task of the loop waits for an older value the word has moved
                    // past: the thread fires for it, and the loop then re-checks every task,
                    // this one included. Replacing the value would strand that task.
                    return Ok(());
                }
            }
            if !watches.contains_key(&key) && watches.len() >= MAX_WATCHED {
                // Lingering words make room first.
                watches.retain(|_, w| !w.fired);
                if watches.len() >= MAX_WATCHED {
                    return Err(Error::InvalidConfig(format!(
                        "an event loop can wait on at most {MAX_WATCHED} topics and producers at once"
                    )));
                }
            }
            watches.insert(key, Watched { bell, expected, fired: false });
        }
        self.shared.interrupt();
        Ok(())
    }

    /// Stops the thread (it disarms every word first). Closing twice is harmless.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.interrupt();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        self.shared.watches.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.close();
    }
}

/// The waker thread: sleep on every watched word and the control word; report moves.
fn run(shared: &Shared) {
    let mut armed: Vec<(usize, Arc<dyn Bell>, u32)> = Vec::new();
    loop {
        let control = shared.control.load(Ordering::SeqCst);
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        // The sleep set: what is watched now. Words no longer watched are disarmed, new ones
        // armed (invariant 1).
        let watched: Vec<(usize, Arc<dyn Bell>, u32)> = {
            let watches = shared.watches.lock().unwrap_or_else(|e| e.into_inner());
            watches.iter().map(|(k, w)| (*k, w.bell.clone(), w.expected)).collect()
        };
        for (key, bell, _) in &armed {
            if !watched.iter().any(|(k, _, _)| k == key) {
                bell.disarm();
            }
        }
        for (key, bell, _) in &watched {
            if !armed.iter().any(|(k, _, _)| k == key) {
                bell.arm();
            }
        }
        armed = watched;
        // After arming, a move is either seen here or wakes the sleep (invariant 2).
        let moved: Vec<usize> = armed
            .iter()
            .filter(|(_, bell, expected)| bell.word().load(Ordering::SeqCst) != *expected)
            .map(|(k, _, _)| *k)
            .collect();
        if !moved.is_empty() {
            let mut notify = false;
            {
                let mut watches = shared.watches.lock().unwrap_or_else(|e| e.into_inner());
                for key in &moved {
                    let Some(w) = watches.get_mut(key) else { continue };
                    let now = w.bell.word().load(Ordering::SeqCst);
                    if w.expected == now {
                        continue; // watched again meanwhile with the value that is current now
                    }
                    if w.fired {
                        // Nobody waited on it since it last fired: stop sleeping on it.
                        watches.remove(key);
                    } else {
                        // Linger on the value now (see the module docs).
                        w.expected = now;
                        w.fired = true;
                        notify = true;
                    }
                }
            }
            if notify {
                shared.notify();
            }
            continue;
        }
        let mut waits = Vec::with_capacity(armed.len() + 1);
        let mut control_wait = futex::Wait::new();
        control_wait.val = u64::from(control);
        control_wait.uaddr = futex::WaitPtr::new(shared.control.as_ptr().cast());
        control_wait.flags = futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE;
        waits.push(control_wait);
        for (_, bell, expected) in &armed {
            let mut w = futex::Wait::new();
            w.val = u64::from(*expected);
            w.uaddr = futex::WaitPtr::new(bell.word().as_ptr().cast());
            w.flags = futex::WaitFlags::SIZE_U32;
            if bell.private() {
                w.flags |= futex::WaitFlags::PRIVATE;
            }
            waits.push(w);
        }
        // No timeout: every wake-up is a moved word or an interrupt. EAGAIN (a word moved
        // before the kernel looked) and EINTR loop back to the checks above.
        let _ = futex::waitv(&waits, futex::WaitvFlags::empty(), None, rustix::time::ClockId::Monotonic);
    }
    for (_, bell, _) in &armed {
        bell.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    struct Word {
        word: AtomicU32,
        armed: AtomicU32,
    }

    impl Bell for Word {
        fn word(&self) -> &AtomicU32 {
            &self.word
        }
        fn private(&self) -> bool {
            true
        }
        fn arm(&self) {
            self.armed.fetch_add(1, Ordering::SeqCst);
        }
        fn disarm(&self) {
            self.armed.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Word {
        fn ring(&self) {
            self.word.fetch_add(1, Ordering::SeqCst);
            if self.armed.load(Ordering::SeqCst) > 0 {
                let _ = futex::wake(&self.word, futex::Flags::PRIVATE, i32::MAX as u32);
            }
        }
    }

    fn readable(waker: &Waker, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8];
        while Instant::now() < deadline {
            if rustix::io::read(&waker.shared.eventfd, &mut buf).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn a_move_of_any_watched_word_makes_the_fd_readable_and_disarms_it() {
        let waker = Waker::new().unwrap();
        let a = Arc::new(Word { word: AtomicU32::new(0), armed: AtomicU32::new(0) });
        let b = Arc::new(Word { word: AtomicU32::new(5), armed: AtomicU32::new(0) });
        waker.watch(a.clone(), 0).unwrap();
        waker.watch(b.clone(), 5).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.armed.load(Ordering::SeqCst) == 0 || b.armed.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the thread never armed the words");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!readable(&waker, Duration::from_millis(20)), "nothing moved yet");
        b.ring();
        assert!(readable(&waker, Duration::from_secs(5)));
        // It lingers on its new value: watching that again needs no interrupt.
        let control = waker.shared.control.load(Ordering::SeqCst);
        waker.watch(b.clone(), 6).unwrap();
        assert_eq!(waker.shared.control.load(Ordering::SeqCst), control, "no interrupt");
        b.ring();
        assert!(readable(&waker, Duration::from_secs(5)), "the claimed watch fires");
        // Not watched again: its next move drops it silently (and disarms it).
        b.ring();
        while b.armed.load(Ordering::SeqCst) != 0 {
            assert!(Instant::now() < deadline, "an unclaimed fired word stays armed");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!readable(&waker, Duration::from_millis(20)), "nobody waited for that move");
        assert_eq!(a.armed.load(Ordering::SeqCst), 1, "the other word stays armed");
        // A stale expected value fires at once.
        waker.watch(b.clone(), 5).unwrap();
        assert!(readable(&waker, Duration::from_secs(5)));
        waker.close();
        assert_eq!(a.armed.load(Ordering::SeqCst), 0, "close disarms");
        assert!(waker.watch(a, 0).is_err());
    }

    #[test]
    fn a_newer_ticket_does_not_strand_a_waiter_of_an_older_one() {
        let waker = Waker::new().unwrap();
        let w = Arc::new(Word { word: AtomicU32::new(0), armed: AtomicU32::new(0) });
        for _ in 0..200 {
            // Task A waits for a move past v; the word moves and task B, which took its
            // ticket after the move, watches the new value before the thread looked.
            let v = w.word.load(Ordering::SeqCst);
            waker.watch(w.clone(), v).unwrap();
            w.ring();
            waker.watch(w.clone(), v + 1).unwrap();
            assert!(readable(&waker, Duration::from_secs(5)), "task A was never woken");
            // The loop re-checks: A is done; B watches again (claims the lingering value).
            waker.watch(w.clone(), v + 1).unwrap();
            w.ring();
            assert!(readable(&waker, Duration::from_secs(5)), "task B was never woken");
        }
        waker.close();
    }
}
