//! 64-bit words shared by every process that maps the same file: how a named producer
//! learns, with one atomic load per batch, that a newer instance has taken over, and how a
//! consumer group's members see its generation and each other's leases (`group`).
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. The mapping is exactly as long as the handle was opened with ([`WORD_FILE_BYTES`]
//!    for [`SharedWord::open`]), a multiple of 8, page-aligned, and the file is created (or
//!    resized, before mapping) at that size and never truncated while mapped.
//! 2. Every word of the mapping is only ever accessed atomically, by every process.

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
    /// Words in the mapping.
    words: usize,
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
        Self::open_words(path, WORD_FILE_BYTES / 8)
    }

    /// Opens (creating as zeros, or resizing, if needed) the file at `path` as `words`
    /// shared words. Every process must open a given file with the same count.
    ///
    /// # Errors
    /// I/O errors.
    ///
    /// # Panics
    /// If `words` is 0.
    pub fn open_words(path: &Path, words: usize) -> Result<Self> {
        assert!(words > 0, "a shared-word file holds at least one word");
        let (file, map) = super::map_shared_file(path, words * 8)?;
        Ok(SharedWord { map, file, words })
    }

    fn word(&self) -> &AtomicU64 {
        self.word_at(0)
    }

    fn word_at(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.words, "shared word {index} of {}", self.words);
        // SAFETY: the mapping is live, page-aligned and `words * 8` bytes long (invariant
        // 1), so word `index < words` is 8-aligned and in bounds; it is only accessed
        // atomically (invariant 2).
        unsafe { &*self.map.as_ptr().cast::<AtomicU64>().add(index) }
    }

    /// Words in the file.
    pub fn len(&self) -> usize {
        self.words
    }

    /// Always false (a file holds at least one word).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The current value of word `index`.
    ///
    /// # Panics
    /// If `index` is not below [`Self::len`].
    pub fn load_at(&self, index: usize) -> u64 {
        self.word_at(index).load(Ordering::SeqCst)
    }

    /// Replaces word `index`.
    ///
    /// # Panics
    /// If `index` is not below [`Self::len`].
    pub fn store_at(&self, index: usize, value: u64) {
        self.word_at(index).store(value, Ordering::SeqCst);
    }

    /// Replaces word `index` with `new` if it holds `current`; returns what it held.
    ///
    /// # Panics
    /// If `index` is not below [`Self::len`].
    pub fn compare_exchange_at(&self, index: usize, current: u64, new: u64) -> std::result::Result<u64, u64> {
        self.word_at(index).compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
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
