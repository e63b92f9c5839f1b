//! A single 64-bit word shared by every process that maps the same file: how a named
//! producer learns, with one atomic load per batch, that a newer instance has taken over.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. The mapping is exactly [`WORD_FILE_BYTES`] long, page-aligned, and the file is
//!    created at that size and never truncated.
//! 2. The word at offset 0 is only ever accessed atomically, by every process.

#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;

use crate::Result;

/// Size of a shared-word file.
pub const WORD_FILE_BYTES: usize = 4096;

/// A process's handle on a shared word.
pub struct SharedWord {
    map: MmapRaw,
    file: File,
}

// SAFETY: the shared state is one atomic (invariant 2); the mapping is not tied to a thread.
unsafe impl Send for SharedWord {}
// SAFETY: as above.
unsafe impl Sync for SharedWord {}

impl SharedWord {
    /// Opens (creating, as zero, if needed) the word file at `path`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, map) = super::map_shared_file(path, WORD_FILE_BYTES)?;
        Ok(SharedWord { map, file })
    }

    fn word(&self) -> &AtomicU64 {
        // SAFETY: offset 0 of a live, page-aligned mapping of WORD_FILE_BYTES (invariant 1)
        // is 8-aligned and in bounds, and it is only accessed atomically (invariant 2).
        unsafe { &*self.map.as_ptr().cast::<AtomicU64>() }
    }

    /// The current value.
    pub fn load(&self) -> u64 {
        self.word().load(Ordering::SeqCst)
    }

    /// Replaces the value.
    pub fn store(&self, value: u64) {
        self.word().store(value, Ordering::SeqCst);
    }

    /// Adds `n` to the value, returning the previous one.
    pub fn fetch_add(&self, n: u64) -> u64 {
        self.word().fetch_add(n, Ordering::SeqCst)
    }

    /// Forces the value to disk (`fsync` of the file writes back the shared page).
    ///
    /// # Errors
    /// The sync failure.
    pub fn sync(&self, path: &Path) -> Result<()> {
        self.file.sync_all().map_err(|e| crate::Error::io("fsync", path, e))
    }

    /// Takes a `flock` on the file through this handle: shared (waiting for it), or
    /// exclusive without waiting (false if another handle holds any lock on it). Released
    /// by [`Self::unlock`], or when the last descriptor of the handle's open file
    /// description is closed.
    ///
    /// # Errors
    /// I/O errors other than the lock being busy.
    pub fn lock(&self, path: &Path, exclusive: bool) -> Result<bool> {
        use rustix::fs::{flock, FlockOperation};
        let op =
            if exclusive { FlockOperation::NonBlockingLockExclusive } else { FlockOperation::LockShared };
        match flock(&self.file, op) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) if exclusive => Ok(false),
            Err(e) => Err(crate::Error::io("flock", path, e.into())),
        }
    }

    /// Gives up this handle's `flock`, explicitly: closing the file would leave it held by
    /// a copy of the open file description that a forked child may still have.
    pub fn unlock(&self) {
        let _ = rustix::fs::flock(&self.file, rustix::fs::FlockOperation::Unlock);
    }
}
