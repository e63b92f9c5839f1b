//! The loom switch: every synchronization primitive the ring buffer (and the CRC helper's
//! job handoff, `log::crc_worker`, and the producer's shedding counts, `producer::shed`)
//! uses comes from here.
//!
//! Built with `RUSTFLAGS="--cfg loom"`, these are loom's mock types, so the model tests in
//! `tests/loom_ring.rs` explore every interleaving (and every weak-memory outcome loom
//! models) of the real ring code. Otherwise they are the `std` types, at no cost.
//!
//! `loom::cell::UnsafeCell` has no `get()`: access goes through closures so loom can track
//! each read and write. [`UnsafeCell`] gives the `std` build the same closure API, so
//! `slot.rs` compiles unchanged in both builds.

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

/// `std::cell::UnsafeCell` with loom's closure-based API (`with` / `with_mut`).
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `value`.
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a mutable raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks `mutex`, ignoring poisoning: the ring's mutexes guard `()`, so a panic while one was
/// held cannot have left data half-updated.
pub(crate) fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
