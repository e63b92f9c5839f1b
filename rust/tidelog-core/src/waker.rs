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
//! Spinning: a watch may ask the thread to spin up to `spin` on the watched words before it
//! sleeps (an async consumer's `spin_us`, as a synchronous consumer spins on the doorbell in
//! its own thread): from the watch, and again after each wake-up the thread delivers for it,
//! so a consumer fed faster than its `spin` keeps the thread spinning and every message is
//! seen within a cache-line transfer instead of after a futex wake-up of this thread (the
//! first of the two hops to the loop; the eventfd to the loop is the second). The event
//! loop's thread never spins. While spinning the thread arms nothing, so appends pay no
//! `FUTEX_WAKE` for it; when the spin runs out it arms every word and checks them all
//! before sleeping (invariant 2). A claim of a lingering word extends the spin without an
//! interrupt: a thread already asleep stays asleep (waking it to spin would cost the very
//! wake-up the spin saves). An idle waiter spins once per watch, then sleeps.
//!
//! Invariants:
//! 1. Every `arm` of a word has one `disarm`: a word is armed only while it is in the
//!    thread's sleep set, and the thread disarms it before it leaves the set (or when it
//!    starts to spin).
//! 2. Before sleeping, the thread arms every word and then checks each against its expected
//!    value, and the kernel checks again atomically, so a move between a task's check and
//!    the sleep is never missed (the futex protocol). While spinning, it loads every word
//!    itself between two looks at the clock.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{eventfd, EventfdFlags};
use rustix::thread::futex;

use crate::{Error, Result};

/// Most words one waker sleeps on at once (`futex_waitv` takes 128; one is the control word).
pub const MAX_WATCHED: usize = 127;
/// Loads of every watched word between two looks at the clock while spinning (as
/// `Doorbell::spin`: a clock read costs about as much as a few dozen loads).
const SPINS_PER_CLOCK_READ: u32 = 32;

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
    /// How long the thread spins for this watch, from the watch and from each wake-up it
    /// delivers for it.
    spin: Duration,
}

struct Shared {
    /// Watched words by address, with the value last seen by a task.
    watches: Mutex<HashMap<usize, Watched>>,
    /// Bumped (and woken) to make the thread re-read `watches` or stop.
    control: AtomicU32,
    stop: AtomicBool,
    eventfd: OwnedFd,
    /// The thread spins (rather than sleeps) until then: nanoseconds since `started`.
    spin_until: AtomicU64,
    started: Instant,
}

impl Shared {
    /// Makes the thread spin until at least `spin` from now (a thread asleep stays asleep).
    fn spin_for(&self, spin: Duration) {
        if !spin.is_zero() {
            let until = (self.started.elapsed() + spin).as_nanos();
            self.spin_until.fetch_max(u64::try_from(until).unwrap_or(u64::MAX), Ordering::AcqRel);
        }
    }

    /// True while the thread should spin.
    fn spinning(&self) -> bool {
        let until = self.spin_until.load(Ordering::Acquire);
        until != 0 && u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX) < until
    }

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
            spin_until: AtomicU64::new(0),
            started: Instant::now(),
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
    /// already does). Watching a word already watched replaces the expected value. The
    /// thread spins on the words for up to `spin` before it sleeps, now and after each
    /// wake-up it delivers for this watch (see the module docs); `Duration::ZERO` sleeps at
    /// once.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when [`MAX_WATCHED`] other words are watched already;
    /// [`Error::Closed`] after [`Self::close`].
    pub fn watch(&self, bell: Arc<dyn Bell>, expected: u32, spin: Duration) -> Result<()> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let key = std::ptr::from_ref(bell.word()) as usize;
        {
            let mut watches = self.shared.watches.lock().map_err(|_| Error::Closed)?;
            if let Some(w) = watches.get_mut(&key) {
                if w.expected == expected {
                    // The thread sleeps (or spins) on this value already (a live watch, or a
                    // fired one lingering): claim it, no interrupt.
                    w.fired = false;
                    w.spin = spin;
                    self.shared.spin_for(spin);
                    return Ok(());
                }
                if !w.fired && w.expected != w.bell.word().load(Ordering::SeqCst) {
                    // Another task of the loop waits for an older value the word has moved
                    // past: the thread fires for it, and the loop then re-checks every task,
                    // this one included. Replacing the value would strand that task.
                    w.spin = w.spin.max(spin);
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
            watches.insert(key, Watched { bell, expected, fired: false, spin });
        }
        self.shared.spin_for(spin);
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

/// A word in the thread's sleep set: its bell, the value expected, and whether the thread
/// armed it (invariant 1).
struct Slot {
    key: usize,
    bell: Arc<dyn Bell>,
    expected: u32,
    armed: bool,
}

/// The waker thread: spin on or sleep on every watched word and the control word; report
/// moves.
fn run(shared: &Shared) {
    let mut slots: Vec<Slot> = Vec::new();
    loop {
        let control = shared.control.load(Ordering::SeqCst);
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        // The sleep set: what is watched now. Words no longer watched are disarmed (if
        // armed); words still watched keep their arming (invariant 1).
        let watched: Vec<(usize, Arc<dyn Bell>, u32)> = {
            let watches = shared.watches.lock().unwrap_or_else(|e| e.into_inner());
            watches.iter().map(|(k, w)| (*k, w.bell.clone(), w.expected)).collect()
        };
        let mut next = Vec::with_capacity(watched.len());
        for (key, bell, expected) in watched {
            let armed = match slots.iter().position(|s| s.key == key) {
                Some(i) => slots.swap_remove(i).armed,
                None => false,
            };
            next.push(Slot { key, bell, expected, armed });
        }
        for gone in slots.drain(..).filter(|s| s.armed) {
            gone.bell.disarm();
        }
        slots = next;
        // Spinning: nothing armed, so appends skip the `FUTEX_WAKE`. About to sleep: all
        // armed before the check below (invariant 2).
        let spinning = !slots.is_empty() && shared.spinning();
        for slot in &mut slots {
            if slot.armed == spinning {
                if spinning {
                    slot.bell.disarm();
                } else {
                    slot.bell.arm();
                }
                slot.armed = !spinning;
            }
        }
        let moved: Vec<usize> = slots
            .iter()
            .filter(|s| s.bell.word().load(Ordering::SeqCst) != s.expected)
            .map(|s| s.key)
            .collect();
        if !moved.is_empty() {
            fire(shared, &moved);
            continue;
        }
        if spinning {
            spin(shared, &slots, control);
            continue;
        }
        let mut waits = Vec::with_capacity(slots.len() + 1);
        let mut control_wait = futex::Wait::new();
        control_wait.val = u64::from(control);
        control_wait.uaddr = futex::WaitPtr::new(shared.control.as_ptr().cast());
        control_wait.flags = futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE;
        waits.push(control_wait);
        for slot in &slots {
            let mut w = futex::Wait::new();
            w.val = u64::from(slot.expected);
            w.uaddr = futex::WaitPtr::new(slot.bell.word().as_ptr().cast());
            w.flags = futex::WaitFlags::SIZE_U32;
            if slot.bell.private() {
                w.flags |= futex::WaitFlags::PRIVATE;
            }
            waits.push(w);
        }
        // No timeout: every wake-up is a moved word or an interrupt. EAGAIN (a word moved
        // before the kernel looked) and EINTR loop back to the checks above.
        let _ = futex::waitv(&waits, futex::WaitvFlags::empty(), None, rustix::time::ClockId::Monotonic);
    }
    for slot in slots.iter().filter(|s| s.armed) {
        slot.bell.disarm();
    }
}

/// Reports the words in `moved` (keys): a watched one lingers on its new value and makes the
/// eventfd readable (and the thread spin for its watch again); one that fired before and
/// was not watched since leaves the set silently.
fn fire(shared: &Shared, moved: &[usize]) {
    let mut notify = false;
    {
        let mut watches = shared.watches.lock().unwrap_or_else(|e| e.into_inner());
        for key in moved {
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
                // The task it wakes is likely to wait again within its spin.
                shared.spin_for(w.spin);
            }
        }
    }
    if notify {
        shared.notify();
    }
}

/// Spins until a word of `slots` moves, the control word leaves `control` (a new watch, a
/// stop) or the spin deadline passes (claims may push it further meanwhile).
fn spin(shared: &Shared, slots: &[Slot], control: u32) {
    loop {
        for _ in 0..SPINS_PER_CLOCK_READ {
            if shared.control.load(Ordering::SeqCst) != control
                || slots.iter().any(|s| s.bell.word().load(Ordering::SeqCst) != s.expected)
            {
                return;
            }
            std::hint::spin_loop();
        }
        if !shared.spinning() {
            return;
        }
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
        waker.watch(a.clone(), 0, Duration::ZERO).unwrap();
        waker.watch(b.clone(), 5, Duration::ZERO).unwrap();
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
        waker.watch(b.clone(), 6, Duration::ZERO).unwrap();
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
        waker.watch(b.clone(), 5, Duration::ZERO).unwrap();
        assert!(readable(&waker, Duration::from_secs(5)));
        waker.close();
        assert_eq!(a.armed.load(Ordering::SeqCst), 0, "close disarms");
        assert!(waker.watch(a, 0, Duration::ZERO).is_err());
    }

    #[test]
    fn a_newer_ticket_does_not_strand_a_waiter_of_an_older_one() {
        let waker = Waker::new().unwrap();
        let w = Arc::new(Word { word: AtomicU32::new(0), armed: AtomicU32::new(0) });
        for _ in 0..200 {
            // Task A waits for a move past v; the word moves and task B, which took its
            // ticket after the move, watches the new value before the thread looked.
            let v = w.word.load(Ordering::SeqCst);
            waker.watch(w.clone(), v, Duration::ZERO).unwrap();
            w.ring();
            waker.watch(w.clone(), v + 1, Duration::ZERO).unwrap();
            assert!(readable(&waker, Duration::from_secs(5)), "task A was never woken");
            // The loop re-checks: A is done; B watches again (claims the lingering value).
            waker.watch(w.clone(), v + 1, Duration::ZERO).unwrap();
            w.ring();
            assert!(readable(&waker, Duration::from_secs(5)), "task B was never woken");
        }
        waker.close();
    }

    #[test]
    fn a_spinning_waker_sees_moves_unarmed_then_arms_and_sleeps() {
        let waker = Waker::new().unwrap();
        let w = Arc::new(Word { word: AtomicU32::new(0), armed: AtomicU32::new(0) });
        // Long enough that the thread is still spinning when the word moves.
        waker.watch(w.clone(), 0, Duration::from_millis(200)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(w.armed.load(Ordering::SeqCst), 0, "a spinning thread arms nothing");
        assert!(!readable(&waker, Duration::from_millis(20)), "nothing moved yet");
        w.ring();
        assert!(readable(&waker, Duration::from_secs(5)), "the spinner saw the move");
        // Claimed again with a short spin: once the spin runs out the thread arms the word
        // and sleeps, and a move still wakes it.
        waker.watch(w.clone(), 1, Duration::from_micros(50)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.armed.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the thread never stopped spinning");
            std::thread::sleep(Duration::from_millis(1));
        }
        w.ring();
        assert!(readable(&waker, Duration::from_secs(5)), "the sleeper was woken");
        waker.close();
        assert_eq!(w.armed.load(Ordering::SeqCst), 0, "close disarms");
    }

    /// A move at any point of a spinning wait (while spinning, as the spin runs out, between
    /// arming and sleeping, or during the sleep) is delivered: rounds whose spin and move
    /// delay are drawn so they cross at every point.
    #[test]
    fn a_move_during_the_hand_over_from_spinning_to_sleeping_is_never_missed() {
        let waker = Waker::new().unwrap();
        let w = Arc::new(Word { word: AtomicU32::new(0), armed: AtomicU32::new(0) });
        for round in 0..1000u32 {
            let v = w.word.load(Ordering::SeqCst);
            // 0-15 µs of spin; the move comes 0-20 µs after the watch.
            let spin = Duration::from_micros(u64::from(round.wrapping_mul(7) % 16));
            let delay = Duration::from_nanos(u64::from(round.wrapping_mul(2_654_435_761) % 20_000));
            waker.watch(w.clone(), v, spin).unwrap();
            let started = Instant::now();
            while started.elapsed() < delay {
                std::hint::spin_loop();
            }
            w.ring();
            assert!(readable(&waker, Duration::from_secs(10)), "round {round}: a move was missed");
        }
        waker.close();
        assert_eq!(w.armed.load(Ordering::SeqCst), 0, "every arm was undone");
    }
}
