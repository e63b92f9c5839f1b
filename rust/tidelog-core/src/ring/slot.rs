//! The lock-free core of the ring buffer: sequence-numbered slots (Dmitry Vyukov's bounded
//! MPMC queue), with single and batch claims, and the two checks that let the blocking layer
//! in `mod.rs` park without losing a wake-up.
//!
//! Every item ever pushed gets a *position*: `tail` is the next position to push, `head` the
//! next position to pop. Both only grow (wrapping at `usize::MAX`, which wrapping arithmetic
//! and a power-of-two capacity make harmless). Position `p` lives in slot `p & mask`, and the
//! slot's `seq` says which stage of which lap it is in:
//!
//! | `seq`         | meaning                                                             |
//! |---------------|---------------------------------------------------------------------|
//! | `p`           | empty, waiting for the producer of position `p`                     |
//! | `p + 1`       | holds the item of position `p`, waiting for its consumer            |
//! | `p + cap`     | consumed: empty, waiting for the producer of position `p + cap`     |
//!
//! A producer claims position `p` by seeing `seq == p` and then moving `tail` from `p` to
//! `p + 1` with a CAS; a consumer claims it by seeing `seq == p + 1` and moving `head`. A batch
//! claim checks `n` consecutive slots first and moves the counter by `n` with one CAS: no other
//! thread can claim or change those slots without moving the same counter past `p` first, so
//! the check still holds when the CAS succeeds.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. **Exclusive access.** The value cell of a slot is touched only (a) by the producer that
//!    claimed position `p`, between its claim and its `seq = p + 1` store, and (b) by the
//!    consumer that claimed `p`, between its claim and its `seq = p + cap` store. Each position
//!    is claimed by exactly one producer and one consumer (the CAS on `tail`/`head`), and the
//!    two windows of a slot never overlap: a consumer claims `p` only after seeing `seq == p + 1`,
//!    a producer claims `p + cap` only after seeing `seq == p + cap`.
//! 2. **Initialization.** The cell holds an initialized `T` exactly while `seq == p + 1` for the
//!    position `p` it was written for (from the producer's publish to the consumer's read).
//!    With `&mut self` (no operation in flight) these are exactly the positions `head..tail`.
//! 3. **No unwinding inside a window.** Between a claim and its `seq` store the code only moves
//!    values (`ptr::write`, `ptr::read`, `Vec::push` into reserved capacity, `vec::Drain`
//!    iteration): nothing can panic, so no slot is left claimed forever with a half-done state.
//! 4. **Ordering.** `seq` stores are `Release` and the `seq` loads that precede a claim are
//!    `Acquire`, so a consumer's read of a cell happens after the producer's write of it, and a
//!    producer's overwrite happens after the previous lap's consumer read it out.
//!
//! Parking protocol (why the claim CASes are `Acquire` and the park checks are RMWs): a waiter
//! first registers (increments a waiter count), then performs a `Release` read-modify-write
//! (`fetch_add(0)`) on the counter the other side claims with, and parks only if that read shows
//! nothing it could still take. Every claim CAS is an `Acquire` RMW on the same counter, so it
//! is ordered after the waiter's RMW in the counter's modification order — and then it
//! synchronizes with it (release sequence) and its thread sees the registration and notifies
//! after publishing — or before it, and then the waiter's RMW sees the claim and does not park.
//! This uses only RMW coherence and release/acquire, which loom models exactly (it treats
//! `SeqCst` as `AcqRel`, so a `SeqCst`-fence Dekker argument could not be checked).

#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::ptr;

use super::sync::{spin_loop, AtomicUsize, Ordering, UnsafeCell};

/// Pads and aligns a value to 128 bytes (two cache lines: x86 prefetches lines in pairs), so
/// the producers' counter and the consumers' counter do not bounce the same line.
#[derive(Debug)]
#[repr(align(128))]
struct CachePadded<T>(T);

/// One element of the buffer.
struct Slot<T> {
    /// Stage and lap of this slot; see the table in the module docs.
    seq: AtomicUsize,
    /// The item, initialized exactly while `seq == p + 1` (invariant 2).
    value: UnsafeCell<MaybeUninit<T>>,
}

/// Bounded lock-free MPMC queue of `T`, without any blocking.
pub(crate) struct RawRing<T> {
    /// Next position to pop.
    head: CachePadded<AtomicUsize>,
    /// Next position to push.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    /// `capacity - 1`; the capacity is a power of two, at least 2.
    mask: usize,
}

// SAFETY: values of `T` are moved in by one thread and out by another, so `T: Send` is needed
// and enough; the cells are never shared as `&T` (invariant 1 gives each access exclusively to
// one thread), so `T: Sync` is not needed.
unsafe impl<T: Send> Send for RawRing<T> {}
// SAFETY: as for `Send`: all shared access to the cells goes through the claim protocol
// (invariant 1), and `&RawRing` never hands out a `&T`.
unsafe impl<T: Send> Sync for RawRing<T> {}

impl<T> RawRing<T> {
    /// Allocates `capacity` empty slots.
    ///
    /// # Panics
    /// If `capacity` is not a power of two of at least 2 (the caller, `RingBuffer`, rounds).
    pub(crate) fn new(capacity: usize) -> Self {
        // Capacity 1 would make "empty for position p + 1" (`seq == p + 1`) and "full with
        // position p" the same state.
        assert!(
            capacity >= 2 && capacity.is_power_of_two(),
            "ring capacity {capacity} is not a power of two >= 2"
        );
        let slots = (0..capacity)
            .map(|i| Slot { seq: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
            .collect();
        RawRing {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            slots,
            mask: capacity - 1,
        }
    }

    /// Number of slots.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    #[inline]
    fn slot(&self, position: usize) -> &Slot<T> {
        &self.slots[position & self.mask]
    }

    /// `seq - expected` as a signed lap-relative distance (wrapping-safe since the capacity is
    /// far below `isize::MAX`).
    #[inline]
    fn distance(seq: usize, expected: usize) -> isize {
        seq.wrapping_sub(expected) as isize
    }

    /// Re-reads `counter` after finding that other threads moved it past our position. The
    /// spin hint is a pause on hardware; under loom it is a yield, without which loom could
    /// serve the same stale value forever.
    #[inline]
    fn reload(&self, counter: &CachePadded<AtomicUsize>) -> usize {
        spin_loop();
        counter.0.load(Ordering::Relaxed)
    }

    /// Pushes `item`, or hands it back if the slot at `tail` is not free (the buffer is full,
    /// or the consumer of that slot's previous lap is still reading it out).
    #[inline]
    pub(crate) fn try_push(&self, item: T) -> Result<(), T> {
        let mut position = self.tail.0.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(position);
            let seq = slot.seq.load(Ordering::Acquire);
            match Self::distance(seq, position) {
                0 => {
                    // Acquire on success: see the module docs' parking protocol.
                    match self.tail.0.compare_exchange_weak(
                        position,
                        position.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            slot.value.with_mut(|cell| {
                                // SAFETY: we won the claim of `position` (invariant 1), so no
                                // other thread touches this cell until our `seq` store below; the
                                // previous lap's consumer finished reading before storing the
                                // `seq == position` we observed with Acquire (invariant 4).
                                unsafe { ptr::write(cell, MaybeUninit::new(item)) }
                            });
                            // Release: publishes the write to the consumer (invariant 4).
                            slot.seq.store(position.wrapping_add(1), Ordering::Release);
                            return Ok(());
                        }
                        Err(current) => position = current,
                    }
                }
                // Still holds (or is yielding) the item of position - capacity.
                d if d < 0 => return Err(item),
                // Another producer claimed `position` already: catch up.
                _ => position = self.reload(&self.tail),
            }
        }
    }

    /// Pops the item at `head`, or `None` if it is not published yet (the buffer is empty, or
    /// its producer is still writing it).
    #[inline]
    pub(crate) fn try_pop(&self) -> Option<T> {
        let mut position = self.head.0.load(Ordering::Relaxed);
        loop {
            let slot = self.slot(position);
            let seq = slot.seq.load(Ordering::Acquire);
            match Self::distance(seq, position.wrapping_add(1)) {
                0 => {
                    match self.head.0.compare_exchange_weak(
                        position,
                        position.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            let item = slot.value.with(|cell| {
                                // SAFETY: we won the claim of `position` (invariant 1); the
                                // producer initialized the cell before its Release store of the
                                // `seq == position + 1` we observed with Acquire (invariants 2, 4),
                                // and nobody reads it again: the `seq` store below moves the slot
                                // to the next lap's producer.
                                unsafe { ptr::read(cell).assume_init() }
                            });
                            slot.seq.store(position.wrapping_add(self.capacity()), Ordering::Release);
                            return Some(item);
                        }
                        Err(current) => position = current,
                    }
                }
                d if d < 0 => return None,
                _ => position = self.reload(&self.head),
            }
        }
    }

    /// Pushes a prefix of `items` (in order) with a single claim, removes it from `items` and
    /// returns its length: as many as there are consecutive free slots at `tail`.
    pub(crate) fn push_from(&self, items: &mut Vec<T>) -> usize {
        let wanted = items.len().min(self.capacity());
        if wanted == 0 {
            return 0;
        }
        let mut position = self.tail.0.load(Ordering::Relaxed);
        loop {
            // Count the free slots from `position`; Acquire on each `seq` for invariant 4.
            let mut free = 0;
            let mut first_distance = 0;
            while free < wanted {
                let p = position.wrapping_add(free);
                let d = Self::distance(self.slot(p).seq.load(Ordering::Acquire), p);
                if free == 0 {
                    first_distance = d;
                }
                if d != 0 {
                    break;
                }
                free += 1;
            }
            if free == 0 {
                if first_distance < 0 {
                    return 0;
                }
                position = self.reload(&self.tail);
                continue;
            }
            match self.tail.0.compare_exchange_weak(
                position,
                position.wrapping_add(free),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // `Drain` of `..free <= len` yields exactly `free` items and cannot panic
                    // (invariant 3). Were it to yield fewer, the unwritten slots would stay
                    // unpublished: a hang, never a read of uninitialized memory.
                    for (i, item) in items.drain(..free).enumerate() {
                        let p = position.wrapping_add(i);
                        let slot = self.slot(p);
                        slot.value.with_mut(|cell| {
                            // SAFETY: the CAS claimed positions `position..position + free`,
                            // each seen free (`seq == p`, Acquire) before it (invariants 1, 4).
                            unsafe { ptr::write(cell, MaybeUninit::new(item)) }
                        });
                        slot.seq.store(p.wrapping_add(1), Ordering::Release);
                    }
                    return free;
                }
                Err(current) => position = current,
            }
        }
    }

    /// Pops up to `max` items (in order) with a single claim and appends them to `out`; returns
    /// how many: as many as there are consecutive published items at `head`.
    pub(crate) fn pop_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        let wanted = max.min(self.capacity());
        if wanted == 0 {
            return 0;
        }
        // Reserve before claiming: an allocation failure must not unwind inside a window
        // (invariant 3).
        out.reserve(wanted);
        let mut position = self.head.0.load(Ordering::Relaxed);
        loop {
            let mut ready = 0;
            let mut first_distance = 0;
            while ready < wanted {
                let p = position.wrapping_add(ready);
                let d = Self::distance(self.slot(p).seq.load(Ordering::Acquire), p.wrapping_add(1));
                if ready == 0 {
                    first_distance = d;
                }
                if d != 0 {
                    break;
                }
                ready += 1;
            }
            if ready == 0 {
                if first_distance < 0 {
                    return 0;
                }
                position = self.reload(&self.head);
                continue;
            }
            match self.head.0.compare_exchange_weak(
                position,
                position.wrapping_add(ready),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    for i in 0..ready {
                        let p = position.wrapping_add(i);
                        let slot = self.slot(p);
                        let item = slot.value.with(|cell| {
                            // SAFETY: the CAS claimed positions `position..position + ready`,
                            // each seen published (`seq == p + 1`, Acquire) before it
                            // (invariants 1, 2, 4).
                            unsafe { ptr::read(cell).assume_init() }
                        });
                        // Cannot reallocate: `wanted >= ready` slots were reserved (invariant 3).
                        out.push(item);
                        slot.seq.store(p.wrapping_add(self.capacity()), Ordering::Release);
                    }
                    return ready;
                }
                Err(current) => position = current,
            }
        }
    }

    /// Items pushed and not yet popped, counting claims in flight: `tail - head` from a
    /// snapshot in which `tail` did not move.
    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.0.load(Ordering::Acquire);
            let head = self.head.0.load(Ordering::Acquire);
            // `head` was read while `tail` stayed put, so `head <= tail <= head + capacity`.
            if self.tail.0.load(Ordering::Acquire) == tail {
                return tail.wrapping_sub(head).min(self.capacity());
            }
        }
    }

    /// True when every pushed position has been claimed by a consumer (nothing is in the
    /// buffer, nor being written into it).
    pub(crate) fn is_drained(&self) -> bool {
        let tail = self.tail.0.load(Ordering::Acquire);
        Self::distance(self.head.0.load(Ordering::Acquire), tail) >= 0
    }

    /// For a consumer that registered as a waiter: true if it may park, i.e. every position
    /// pushed so far has been claimed by some consumer. Positions pushed later are claimed by a
    /// CAS ordered after this RMW, whose producer will see the registration (module docs).
    pub(crate) fn consumer_may_park(&self) -> bool {
        let tail = self.tail.0.fetch_add(0, Ordering::AcqRel);
        // `head` is read after `tail`: if it has caught up with that `tail`, positions below it
        // are all taken, whatever happened since.
        Self::distance(self.head.0.load(Ordering::Acquire), tail) >= 0
    }

    /// For a producer (or a watermark waiter) that registered as a waiter: true if it may
    /// park, i.e. more than `level` positions are claimed by producers and not yet by
    /// consumers. A consumer claim after this RMW will see the registration (module docs);
    /// slots released by consumers that claimed earlier were, by that count, already reused.
    pub(crate) fn producer_may_park(&self, level: usize) -> bool {
        let head = self.head.0.fetch_add(0, Ordering::AcqRel);
        let tail = self.tail.0.load(Ordering::Acquire);
        Self::distance(tail, head) > level as isize
    }
}

impl<T> Drop for RawRing<T> {
    fn drop(&mut self) {
        // `&mut self`: no operation is in flight, so positions `head..tail` are exactly the
        // initialized cells (invariant 2).
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        let mut position = head;
        while position != tail {
            self.slot(position).value.with_mut(|cell| {
                // SAFETY: `position` is in `head..tail`, so its cell is initialized and owned by
                // the buffer (invariant 2); it is dropped once, as `position` only moves forward.
                unsafe { (*cell).assume_init_drop() }
            });
            position = position.wrapping_add(1);
        }
    }
}

impl<T> std::fmt::Debug for RawRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRing").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}
