//! Fork detection: how a handle opened before `fork()` knows, in the child, that it was
//! inherited and must do nothing at all.
//!
//! A forked child shares every open file description with its parent, so the locks that
//! tell processes apart (`flock`, OFD locks) cannot: the child's "am I the only user?" is
//! answered by the parent's own lock. Worse, the child may hold a copy of a mutex or lock
//! that a parent thread held at the moment of the fork, and its mappings alias the
//! parent's files. So an inherited handle refuses every call with [`Error::Forked`] and its
//! close and drop touch no file, lock or mutex: the child must open the store again.
//!
//! The check must be cheap enough for every append (a few ns): `getpid()` is a system call
//! since glibc stopped caching it, so instead a `pthread_atfork` child handler bumps a
//! process-wide generation, and each handle compares the generation it was born in with
//! the current one (one relaxed load). The handler is registered before the first handle
//! exists, so no fork can slip between a handle's birth and the registration. Paths that
//! are rare (close, drop) also compare the process id, which catches a child made by a raw
//! `clone`/`fork` system call that skipped the handlers.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. [`after_fork_in_child`] only performs an atomic add: it is async-signal-safe, as a
//!    handler running in the child of a multi-threaded process must be.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use crate::{Error, Result};

/// Bumped in every child right after `fork()`.
static GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER: Once = Once::new();

extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn register() {
    REGISTER.call_once(|| {
        // SAFETY: the handler is a plain `extern "C" fn` with no captured state that lives
        // for the whole program, and it only does an atomic add (invariant 1).
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        // ENOMEM is the only documented failure: then `Born::is_inherited` still catches
        // the child by its process id on close and drop, the paths that damage the parent.
        debug_assert_eq!(rc, 0, "pthread_atfork failed");
    });
}

/// The fork generation of the current process (0 in a process that never forked from one
/// with tidelog handles).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// Where and when a handle was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Born {
    generation: u64,
    pid: u32,
}

impl Born {
    /// Records the current process as the owner of a new handle.
    pub fn now() -> Self {
        register();
        Born { generation: generation(), pid: std::process::id() }
    }

    /// True in a child forked after the handle was opened. One relaxed load: for hot paths.
    #[inline]
    pub fn is_inherited_fast(&self) -> bool {
        GENERATION.load(Ordering::Relaxed) != self.generation
    }

    /// As [`Self::is_inherited_fast`], and also true in a child made without running the
    /// fork handlers (costs a `getpid` system call: for close and drop).
    pub fn is_inherited(&self) -> bool {
        self.is_inherited_fast() || std::process::id() != self.pid
    }

    /// Fails with [`Error::Forked`] in a child process.
    ///
    /// # Errors
    /// [`Error::Forked`].
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.is_inherited_fast() {
            Err(Error::Forked)
        } else {
            Ok(())
        }
    }
}

/// Runs `child` in a forked child of the test process and returns its wait status (0 when
/// `child` returned true). For tests of fork handling elsewhere in the crate.
#[cfg(test)]
pub(crate) fn in_child(child: impl FnOnce() -> bool) -> i32 {
    // SAFETY: the child only runs `child` (which allocates at most, and glibc's malloc
    // is fork-safe) and leaves with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false);
        // SAFETY: `_exit` ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(i32::from(!ok)) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child, with a valid pointer to `status`.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_born_before_fork_is_inherited_in_the_child_only() {
        let born = Born::now();
        assert!(!born.is_inherited());
        assert!(born.check().is_ok());
        let status = in_child(|| {
            let fresh = Born::now();
            born.is_inherited_fast()
                && born.is_inherited()
                && matches!(born.check(), Err(Error::Forked))
                && !fresh.is_inherited()
        });
        assert_eq!(status, 0);
        assert!(!born.is_inherited(), "the parent is unaffected");
    }
}
