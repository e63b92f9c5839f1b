//! A bounded, lock-free, multi-producer multi-consumer ring buffer: the producer's send buffer,
//! drained by the background writer, with blocking and watermark waits for backpressure.
//!
//! [`RingBuffer`] is safe code over two parts:
//! - `slot.rs` (the only `unsafe` here): Vyukov's sequence-numbered slots, single and batch
//!   claims, and the checks that make parking race-free;
//! - the blocking layer below: waits spin briefly, then park on a `Mutex` + `Condvar` pair
//!   (`Waiters`) and are woken by the opposite operation. When nobody waits, pushes and pops
//!   take no lock and no fence: a push reads one waiter count, a pop two, and they move on.
//!
//! Trade-off: a waiter parks only when nothing is claimed on the other side. While a push (or
//! pop) is between its claim and its publish — a few instructions, unless that thread is
//! preempted there — a waiter yields and retries instead (as `crossbeam-channel` does). Parking
//! through that window too would need a `SeqCst` fence in every push and pop, which cost
//! 40–55% of the throughput in `benches/rust/ring.rs`.
//!
//! All synchronization primitives come from `sync.rs`, so `RUSTFLAGS="--cfg loom"` model-checks
//! this very code (`tests/loom_ring.rs`).
//!
//! For bindings: every method takes `&self` and `RingBuffer<T>` is `Send + Sync` for `T: Send`,
//! so it can live in an `Arc` or a frozen `#[pyclass]` holding `Py<PyAny>` items. The blocking
//! methods never call back into the caller, so they can run with the GIL released; failed
//! pushes hand the item back (`Err(item)`) instead of dropping it.

mod slot;
pub(crate) mod sync;

use std::time::{Duration, Instant};

use self::slot::RawRing;
use self::sync::{lock, spin_loop, yield_now, AtomicBool, AtomicUsize, Condvar, Mutex, Ordering};
use crate::{Error, Result};

/// Smallest capacity: a sequence-numbered ring needs two slots to tell "full" from "empty".
pub const MIN_CAPACITY: usize = 2;

/// Largest capacity [`RingBuffer::try_new`] accepts (2^30 slots). Far beyond any sensible
/// buffer, and it keeps position arithmetic exact on 32-bit targets too.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Spin rounds (each twice as long as the last) before a blocked call starts yielding.
const SPIN_ROUNDS: u32 = 6;
/// Spin rounds plus `yield_now` rounds before a blocked call parks.
const BACKOFF_ROUNDS: u32 = 10;

/// A bounded lock-free MPMC FIFO queue of `T`.
///
/// Items leave in the order their pushes claimed a position: per producer thread, FIFO; each
/// consumer thread sees every producer's items in that producer's order.
///
/// The capacity is rounded up to a power of two (at least [`MIN_CAPACITY`]). Items still in
/// the buffer when it is dropped are dropped with it.
///
/// ```
/// use tidelog_core::ring::RingBuffer;
/// use std::time::Duration;
///
/// let ring = RingBuffer::new(3);
/// assert_eq!(ring.capacity(), 4);
/// ring.try_push(1).unwrap();
/// let mut batch = vec![2, 3, 4, 5];
/// assert_eq!(ring.try_push_many(&mut batch), 3); // one item did not fit
/// assert_eq!(batch, [5]);
/// assert_eq!(ring.try_pop(), Some(1));
/// let mut out = Vec::new();
/// assert_eq!(ring.pop_many(&mut out, 10), 3);
/// assert_eq!(out, [2, 3, 4]);
/// assert_eq!(ring.pop_timeout(Some(Duration::from_millis(1))), None);
/// ```
pub struct RingBuffer<T> {
    raw: RawRing<T>,
    /// Consumers waiting for an item.
    not_empty: Waiters,
    /// Producers waiting for a free slot.
    not_full: Waiters,
    /// Callers of [`RingBuffer::wait_until_len_at_most`].
    low_water: Waiters,
    closed: AtomicBool,
}

impl<T> RingBuffer<T> {
    /// Makes an empty buffer of at least `capacity` slots: rounded up to a power of two, and
    /// to [`MIN_CAPACITY`] (so `0` and `1` give 2).
    ///
    /// # Panics
    /// If `capacity > MAX_CAPACITY`. Use [`RingBuffer::try_new`] for sizes from users.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity <= MAX_CAPACITY, "ring capacity {capacity} exceeds {MAX_CAPACITY}");
        let capacity = capacity.max(MIN_CAPACITY).next_power_of_two();
        RingBuffer {
            raw: RawRing::new(capacity),
            not_empty: Waiters::new(),
            not_full: Waiters::new(),
            low_water: Waiters::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Like [`RingBuffer::new`], for a user-supplied size.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `capacity` is 0 or above [`MAX_CAPACITY`].
    pub fn try_new(capacity: usize) -> Result<Self> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(Error::InvalidConfig(format!(
                "ring buffer capacity must be between 1 and {MAX_CAPACITY}, got {capacity}"
            )));
        }
        Ok(Self::new(capacity))
    }

    /// Number of slots (a power of two).
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// Number of items in the buffer: approximate under concurrency. It is `tail - head` from
    /// one consistent snapshot, so it counts pushes still being written and excludes pops
    /// still being read out, and it may be stale by the time it returns. Always
    /// `<= capacity()`. Good for watermarks and stats, not for deciding a `try_pop` succeeds.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// True when no item is in the buffer or being pushed into it (as approximate as
    /// [`RingBuffer::len`]).
    pub fn is_empty(&self) -> bool {
        self.raw.is_drained()
    }

    /// True when `len() == capacity()` (approximate, like [`RingBuffer::len`]).
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Closes the buffer: every push from now on fails (handing its item back), and every
    /// blocked caller wakes up. Pops keep returning the items left, then blocking pops return
    /// at once instead of waiting. A push racing with `close` may still succeed; its item
    /// stays poppable. Closing twice is harmless.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for waiters in [&self.not_empty, &self.not_full, &self.low_water] {
            // Taking the lock orders this wake-up after any waiter's check of `closed`.
            let _guard = lock(&waiters.lock);
            waiters.cond.notify_all();
        }
    }

    /// True once [`RingBuffer::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Pushes `item` without blocking.
    ///
    /// # Errors
    /// Hands `item` back if the buffer is full (or the slot at the tail is still being read
    /// out by a consumer) or closed.
    #[inline]
    pub fn try_push(&self, item: T) -> std::result::Result<(), T> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(item);
        }
        self.raw.try_push(item)?;
        self.not_empty.notify(1);
        Ok(())
    }

    /// Pops the oldest item without blocking; `None` if there is none (or it is still being
    /// written by its producer).
    #[inline]
    pub fn try_pop(&self) -> Option<T> {
        let item = self.raw.try_pop()?;
        self.after_pop(1);
        Some(item)
    }

    /// Pushes as many items from the front of `items` as fit, in order, without blocking;
    /// removes them from `items` and returns how many. Claims runs of free slots with one CAS
    /// each. Pushes nothing once the buffer is closed.
    pub fn try_push_many(&self, items: &mut Vec<T>) -> usize {
        let mut pushed = 0;
        while !items.is_empty() && !self.closed.load(Ordering::Relaxed) {
            let n = self.raw.push_from(items);
            if n == 0 {
                break;
            }
            pushed += n;
        }
        self.not_empty.notify(pushed);
        pushed
    }

    /// Pops up to `max` items, oldest first, without blocking; appends them to `out` and
    /// returns how many. Claims runs of ready items with one CAS each.
    pub fn pop_many(&self, out: &mut Vec<T>, max: usize) -> usize {
        let mut popped = 0;
        while popped < max {
            let n = self.raw.pop_into(out, max - popped);
            if n == 0 {
                break;
            }
            popped += n;
        }
        if popped > 0 {
            self.after_pop(popped);
        }
        popped
    }

    /// Pushes `item`, waiting while the buffer is full: spins briefly, then parks until a pop
    /// frees a slot. `timeout: None` waits forever.
    ///
    /// # Errors
    /// Hands `item` back if the timeout passed or the buffer is (or gets) closed.
    pub fn push_timeout(&self, item: T, timeout: Option<Duration>) -> std::result::Result<(), T> {
        let mut item = match self.try_push(item) {
            Ok(()) => return Ok(()),
            Err(item) => item,
        };
        let deadline = deadline_after(timeout);
        let mut backoff = Backoff::new();
        loop {
            if self.is_closed() {
                return Err(item);
            }
            if !backoff.snooze() {
                let full = self.capacity() - 1;
                let waited = self
                    .not_full
                    .park(deadline, full, || !self.is_closed() && self.raw.producer_may_park(full));
                if !waited {
                    return self.try_push(item);
                }
            }
            item = match self.try_push(item) {
                Ok(()) => return Ok(()),
                Err(item) => item,
            };
        }
    }

    /// Pops the oldest item, waiting while the buffer is empty: spins briefly, then parks
    /// until a push. `timeout: None` waits forever. Returns `None` on timeout, or when the
    /// buffer is closed and drained.
    pub fn pop_timeout(&self, timeout: Option<Duration>) -> Option<T> {
        if let Some(item) = self.try_pop() {
            return Some(item);
        }
        let deadline = deadline_after(timeout);
        let mut backoff = Backoff::new();
        loop {
            if self.is_closed() && self.raw.is_drained() {
                return None;
            }
            if !backoff.snooze() {
                let waited =
                    self.not_empty.park(deadline, 0, || !self.is_closed() && self.raw.consumer_may_park());
                if !waited {
                    return self.try_pop();
                }
            }
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
        }
    }

    /// Pushes all of `items` in order, waiting for space as [`RingBuffer::push_timeout`] does
    /// (the timeout covers the whole batch). Removes what was pushed from `items` and returns
    /// how many; fewer than all means the timeout passed or the buffer was closed.
    pub fn push_many_timeout(&self, items: &mut Vec<T>, timeout: Option<Duration>) -> usize {
        let mut pushed = self.try_push_many(items);
        let deadline = deadline_after(timeout);
        let mut backoff = Backoff::new();
        while !items.is_empty() && !self.is_closed() {
            if !backoff.snooze() {
                let full = self.capacity() - 1;
                let waited = self
                    .not_full
                    .park(deadline, full, || !self.is_closed() && self.raw.producer_may_park(full));
                if !waited {
                    return pushed + self.try_push_many(items);
                }
            }
            let n = self.try_push_many(items);
            if n > 0 {
                backoff = Backoff::new();
            }
            pushed += n;
        }
        pushed
    }

    /// Waits until at least one item is ready (as [`RingBuffer::pop_timeout`] does), then pops
    /// up to `max` of them into `out`; returns how many (0 on timeout, when closed and
    /// drained, or when `max == 0`).
    pub fn pop_many_timeout(&self, out: &mut Vec<T>, max: usize, timeout: Option<Duration>) -> usize {
        if max == 0 {
            return 0;
        }
        let popped = self.pop_many(out, max);
        if popped > 0 {
            return popped;
        }
        match self.pop_timeout(timeout) {
            Some(first) => {
                out.push(first);
                1 + self.pop_many(out, max - 1)
            }
            None => 0,
        }
    }

    /// Waits until `len() <= level` (the low watermark of a blocked producer), spinning
    /// briefly, then parking until pops bring the occupancy down. Returns `true` once it is,
    /// `false` if the timeout passed or the buffer is (or gets) closed first.
    pub fn wait_until_len_at_most(&self, level: usize, timeout: Option<Duration>) -> bool {
        let deadline = deadline_after(timeout);
        let mut backoff = Backoff::new();
        loop {
            if self.len() <= level {
                return true;
            }
            if self.is_closed() {
                return false;
            }
            if !backoff.snooze() {
                let waited = self
                    .low_water
                    .park(deadline, level, || !self.is_closed() && self.raw.producer_may_park(level));
                if !waited {
                    return self.len() <= level;
                }
            }
        }
    }

    /// Wakes whoever waits for the space that `n` pops just made.
    #[inline]
    fn after_pop(&self, n: usize) {
        self.not_full.notify(n);
        if self.low_water.count.load(Ordering::Relaxed) != 0 {
            self.notify_low_water();
        }
    }

    #[cold]
    #[inline(never)]
    fn notify_low_water(&self) {
        if self.raw.len() <= self.low_water.level.load(Ordering::Relaxed) {
            self.low_water.wake(usize::MAX);
        }
    }
}

impl<T> std::fmt::Debug for RingBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuffer")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// `now + timeout`; `None` (wait forever) for no timeout or one too large to represent.
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|timeout| Instant::now().checked_add(timeout))
}

/// Threads parked until the opposite operation makes progress.
///
/// Protocol: a waiter takes `lock`, increments `count`, runs its "may I park?" check (which
/// does the RMW described in `slot.rs`), and waits on `cond` — releasing `lock` atomically — or
/// gives up; either way it decrements `count` before releasing `lock`. A notifier that sees
/// `count != 0` takes `lock` before notifying, so it cannot slip between a waiter's check and
/// its wait. A notifier that sees `count == 0` skips the lock: the RMW protocol guarantees the
/// waiter's check then saw the notifier's claim and did not park.
#[derive(Debug)]
struct Waiters {
    /// Registered waiters (read without the lock on every push or pop).
    count: AtomicUsize,
    /// Highest `level` of any registered watermark waiter; 0 when there are none.
    level: AtomicUsize,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Waiters {
    fn new() -> Self {
        Waiters {
            count: AtomicUsize::new(0),
            level: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    /// Registers, then parks until notified (or spuriously woken) or `deadline`, if `may_park`
    /// (run after registering, under the lock) allows it; otherwise yields. Returns `false`
    /// without waiting if the deadline has already passed.
    fn park(&self, deadline: Option<Instant>, level: usize, may_park: impl FnOnce() -> bool) -> bool {
        let remaining = match deadline {
            None => None,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(remaining) if !remaining.is_zero() => Some(remaining),
                _ => return false,
            },
        };
        let guard = lock(&self.lock);
        // Relaxed: the `Release` RMW inside `may_park` publishes this to the notifier.
        self.count.fetch_add(1, Ordering::Relaxed);
        self.level.fetch_max(level, Ordering::Relaxed);
        let parked = may_park();
        let guard = if !parked {
            guard
        } else if let Some(remaining) = remaining {
            self.cond
                .wait_timeout(guard, remaining)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0)
        } else {
            self.cond.wait(guard).unwrap_or_else(|e| e.into_inner())
        };
        if self.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.level.store(0, Ordering::Relaxed);
        }
        drop(guard);
        if !parked {
            // Something is in flight on the other side; let it finish.
            yield_now();
        }
        true
    }

    /// Wakes one waiter per unit of progress (`n` items), all of them if `n > 1`. Lock-free
    /// and cheap when nobody waits.
    #[inline]
    fn notify(&self, n: usize) {
        if n != 0 && self.count.load(Ordering::Relaxed) != 0 {
            self.wake(n);
        }
    }

    /// The locked part of [`Waiters::notify`], out of line to keep pushes and pops small.
    #[cold]
    #[inline(never)]
    fn wake(&self, n: usize) {
        let _guard = lock(&self.lock);
        if n == 1 {
            self.cond.notify_one();
        } else {
            self.cond.notify_all();
        }
    }
}

/// Bounded exponential spinning, then yielding, before a blocked call parks.
struct Backoff {
    round: u32,
}

impl Backoff {
    fn new() -> Self {
        Backoff { round: 0 }
    }

    /// Spins or yields once; `false` when the budget is spent and the caller should park.
    fn snooze(&mut self) -> bool {
        // Under loom, spinning only multiplies interleavings: park at once.
        if cfg!(loom) || self.round >= BACKOFF_ROUNDS {
            return false;
        }
        if self.round < SPIN_ROUNDS {
            for _ in 0..1u32 << self.round {
                spin_loop();
            }
        } else {
            yield_now();
        }
        self.round += 1;
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        assert_eq!(RingBuffer::<u8>::new(0).capacity(), 2);
        assert_eq!(RingBuffer::<u8>::new(1).capacity(), 2);
        assert_eq!(RingBuffer::<u8>::new(2).capacity(), 2);
        assert_eq!(RingBuffer::<u8>::new(3).capacity(), 4);
        assert_eq!(RingBuffer::<u8>::new(1000).capacity(), 1024);
        assert_eq!(RingBuffer::<u8>::new(1024).capacity(), 1024);
    }

    #[test]
    fn try_new_rejects_zero_and_huge() {
        assert!(matches!(RingBuffer::<u8>::try_new(0), Err(Error::InvalidConfig(_))));
        assert!(matches!(RingBuffer::<u8>::try_new(MAX_CAPACITY + 1), Err(Error::InvalidConfig(_))));
        assert_eq!(RingBuffer::<u8>::try_new(5).unwrap().capacity(), 8);
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn new_panics_above_max_capacity() {
        let _ = RingBuffer::<u8>::new(MAX_CAPACITY + 1);
    }

    #[test]
    fn fifo_full_and_empty() {
        let ring = RingBuffer::new(4);
        assert!(ring.is_empty());
        assert_eq!(ring.try_pop(), None);
        for i in 0..4 {
            ring.try_push(i).unwrap();
            assert_eq!(ring.len(), i + 1);
        }
        assert!(ring.is_full());
        assert_eq!(ring.try_push(99), Err(99));
        for i in 0..4 {
            assert_eq!(ring.try_pop(), Some(i));
        }
        assert_eq!(ring.try_pop(), None);
        assert!(ring.is_empty());
        assert_eq!(ring.len(), 0);
    }

    #[test]
    fn wraps_around_many_laps() {
        let ring = RingBuffer::new(4);
        let mut next_out = 0u64;
        for i in 0..10_000u64 {
            ring.try_push(i).unwrap();
            if i % 3 == 2 {
                // Keep two or three in flight so positions and slots drift apart.
                while ring.len() > 1 {
                    assert_eq!(ring.try_pop(), Some(next_out));
                    next_out += 1;
                }
            }
        }
        while let Some(v) = ring.try_pop() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 10_000);
    }

    #[test]
    fn batches_push_a_prefix_and_pop_in_order() {
        let ring = RingBuffer::new(8);
        let mut items: Vec<u32> = (0..5).collect();
        assert_eq!(ring.try_push_many(&mut items), 5);
        assert!(items.is_empty());
        let mut items: Vec<u32> = (5..12).collect();
        assert_eq!(ring.try_push_many(&mut items), 3);
        assert_eq!(items, [8, 9, 10, 11]);
        assert_eq!(ring.try_push_many(&mut items), 0);

        let mut out = Vec::new();
        assert_eq!(ring.pop_many(&mut out, 0), 0);
        assert_eq!(ring.pop_many(&mut out, 3), 3);
        assert_eq!(ring.pop_many(&mut out, 100), 5);
        assert_eq!(out, (0..8).collect::<Vec<_>>());
        assert_eq!(ring.pop_many(&mut out, 100), 0);

        // A batch that straddles the end of the slot array.
        assert_eq!(ring.try_push_many(&mut items), 4);
        assert_eq!(ring.pop_many(&mut out, 100), 4);
        assert_eq!(out, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn zero_sized_items() {
        let ring = RingBuffer::new(2);
        ring.try_push(()).unwrap();
        ring.try_push(()).unwrap();
        assert_eq!(ring.try_push(()), Err(()));
        assert_eq!(ring.try_pop(), Some(()));
        assert_eq!(ring.len(), 1);
    }

    /// Counts its drops.
    struct Tracked(Arc<StdAtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn drop_drops_items_left_in_the_buffer() {
        let drops = Arc::new(StdAtomicUsize::new(0));
        let ring = RingBuffer::new(4);
        // Advance the positions so the live items wrap around the slot array.
        for _ in 0..3 {
            ring.try_push(Tracked(drops.clone())).ok().unwrap();
            drop(ring.try_pop());
        }
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 3);
        for _ in 0..3 {
            ring.try_push(Tracked(drops.clone())).ok().unwrap();
        }
        drop(ring.try_pop());
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 4);
        drop(ring);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 6);
    }

    #[test]
    fn timeouts_expire() {
        let ring = RingBuffer::new(2);
        let started = Instant::now();
        assert_eq!(ring.pop_timeout(Some(Duration::from_millis(20))), None);
        assert!(started.elapsed() >= Duration::from_millis(20));
        ring.try_push(1).unwrap();
        ring.try_push(2).unwrap();
        let started = Instant::now();
        assert_eq!(ring.push_timeout(3, Some(Duration::from_millis(20))), Err(3));
        assert!(started.elapsed() >= Duration::from_millis(20));
        assert_eq!(ring.push_timeout(3, Some(Duration::ZERO)), Err(3));
        let mut items = vec![3, 4];
        assert_eq!(ring.push_many_timeout(&mut items, Some(Duration::from_millis(5))), 0);
        assert!(!ring.wait_until_len_at_most(1, Some(Duration::from_millis(5))));
        assert!(ring.wait_until_len_at_most(2, Some(Duration::ZERO)));
        // Durations too large for an `Instant` mean "forever", not a panic.
        assert_eq!(ring.pop_timeout(Some(Duration::MAX)), Some(1));
    }

    #[test]
    fn blocked_pop_is_woken_by_a_push() {
        let ring = Arc::new(RingBuffer::new(2));
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || ring.pop_timeout(None))
        };
        thread::sleep(Duration::from_millis(30));
        ring.try_push(7u32).unwrap();
        assert_eq!(consumer.join().unwrap(), Some(7));
    }

    #[test]
    fn blocked_push_is_woken_by_a_pop() {
        let ring = Arc::new(RingBuffer::new(2));
        ring.try_push(1u32).unwrap();
        ring.try_push(2).unwrap();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || ring.push_timeout(3, None))
        };
        thread::sleep(Duration::from_millis(30));
        assert_eq!(ring.try_pop(), Some(1));
        producer.join().unwrap().unwrap();
        let mut out = Vec::new();
        assert_eq!(ring.pop_many_timeout(&mut out, 10, None), 2);
        assert_eq!(out, [2, 3]);
    }

    #[test]
    fn watermark_wait_is_woken_when_pops_reach_the_level() {
        let ring = Arc::new(RingBuffer::new(8));
        let mut items: Vec<u32> = (0..8).collect();
        ring.try_push_many(&mut items);
        let waiter = {
            let ring = ring.clone();
            thread::spawn(move || ring.wait_until_len_at_most(4, None))
        };
        thread::sleep(Duration::from_millis(20));
        for _ in 0..3 {
            ring.try_pop().unwrap();
        }
        thread::sleep(Duration::from_millis(10));
        assert!(!waiter.is_finished());
        ring.try_pop().unwrap();
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn close_wakes_everyone_and_keeps_items_poppable() {
        let ring = Arc::new(RingBuffer::<u32>::new(2));
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || ring.pop_timeout(None))
        };
        thread::sleep(Duration::from_millis(20));
        ring.close();
        assert_eq!(consumer.join().unwrap(), None);

        let ring = Arc::new(RingBuffer::<u32>::new(2));
        ring.try_push(1).unwrap();
        ring.try_push(2).unwrap();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || ring.push_timeout(3, None))
        };
        let watcher = {
            let ring = ring.clone();
            thread::spawn(move || ring.wait_until_len_at_most(0, None))
        };
        thread::sleep(Duration::from_millis(20));
        ring.close();
        ring.close();
        assert_eq!(producer.join().unwrap(), Err(3));
        assert!(!watcher.join().unwrap());
        assert!(ring.is_closed());
        assert_eq!(ring.try_push(4), Err(4));
        assert_eq!(ring.try_push_many(&mut vec![4]), 0);
        assert_eq!(ring.pop_timeout(None), Some(1));
        assert_eq!(ring.try_pop(), Some(2));
        assert_eq!(ring.pop_timeout(None), None);
    }

    #[test]
    fn is_send_and_sync_for_send_items() {
        fn assert_send_sync<S: Send + Sync>() {}
        assert_send_sync::<RingBuffer<Box<u8>>>();
        assert_send_sync::<RingBuffer<std::sync::mpsc::Sender<u8>>>();
    }
}
