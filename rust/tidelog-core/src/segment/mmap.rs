//! Memory maps of segment data and index files.
//!
//! A [`FileMap`] maps a whole file `MAP_SHARED`. Reads and writes go through raw pointers
//! into the mapping, never through a `&mut` of the whole map, so a writer filling bytes past
//! the published end never aliases a reader's slice of bytes before it.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. Bytes below `readable` are complete, published data and are never written again by
//!    tidelog while mapped: writers only write at or past the published end, under the
//!    partition's append lock, and recovery only truncates past the last valid batch.
//! 2. The file is at least `len` bytes long for as long as the map lives, except that a
//!    sealed segment may be trimmed to its published end, which is `>= readable`.
//! 3. Only the holder of the partition's append lock calls [`FileMap::write_region`], and
//!    only at or past `readable`.

#![allow(unsafe_code)]

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use crate::shm::WriteGuard;

/// A shared mapping of one file.
pub struct FileMap {
    raw: Option<MmapRaw>,
    len: usize,
    /// How many leading bytes may be read (invariant 1).
    readable: AtomicUsize,
    /// How far this process has pre-faulted the mapping for writing.
    populated: AtomicUsize,
    /// Where this process's first write to the mapping went (`usize::MAX` before it): the
    /// pre-fault window grows with what was written since (see [`FileMap::prepare_write`]).
    first_write: AtomicUsize,
    /// Below this position the pages were released by [`FileMap::release_behind`].
    released_below: AtomicUsize,
}

/// Granularity of [`FileMap::release_behind`]: pages further than this behind a reader or
/// writer are unmapped from the process (they stay in the page cache).
const RELEASE_WINDOW: usize = 4 << 20;

/// Bytes pre-faulted at a time ahead of the writer. The first write to each page of a shared
/// file mapping traps into the kernel, which allocates and zeroes a page-cache page (about
/// 9 µs per page on the dev VM, ~200 ns per 100-byte message). `MADV_POPULATE_WRITE` does
/// the same work for a whole window in one call, and `prefault` runs it on a background
/// thread, so the appending thread finds its pages ready.
const POPULATE_WINDOW: usize = 4 << 20;

/// The first window of a mapping: a process that opens a store, appends a few messages
/// and closes would otherwise pay for faulting a whole window in, and closing would then
/// trim those pages off again (together ~2 ms on the dev VM, for one 100-byte append).
const FIRST_POPULATE_WINDOW: usize = 64 << 10;

/// In a segment that already held data when this process first wrote to it (a reopened
/// store's active segment), pre-faulting starts only once the process wrote this much. The
/// pages past the end of a reopened segment are unwritten extents again (closing trimmed
/// them): each first write to one takes a journal handle, which waits for a journal commit
/// in progress, so populating a window for a single append took 0.2 ms on an idle machine
/// and 9-18 ms under another process's fsyncs, and closing waited for it (the trim needs
/// the pages' locks). The few pages a short-lived writer fills fault in one at a time.
const REOPENED_PREFAULT_AFTER: usize = 64 << 10;

impl std::fmt::Debug for FileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMap").field("len", &self.len).field("readable", &self.readable()).finish()
    }
}

impl FileMap {
    /// Maps the first `len` bytes of `file` read-write and shared, with `readable` bytes
    /// already published. A zero `len` makes an empty map (mmap refuses empty mappings).
    ///
    /// # Errors
    /// The `mmap` failure.
    pub fn map_writable(file: &File, len: usize, readable: usize) -> std::io::Result<Self> {
        let raw = (len > 0).then(|| MmapOptions::new().len(len).map_raw(file)).transpose()?;
        Ok(FileMap {
            raw,
            len,
            readable: AtomicUsize::new(readable.min(len)),
            populated: AtomicUsize::new(0),
            first_write: AtomicUsize::new(usize::MAX),
            released_below: AtomicUsize::new(0),
        })
    }

    /// Maps the first `len` bytes of `file` read-only; all of them are readable.
    ///
    /// # Errors
    /// The `mmap` failure.
    pub fn map_readonly(file: &File, len: usize) -> std::io::Result<Self> {
        let raw = (len > 0).then(|| MmapOptions::new().len(len).map_raw_read_only(file)).transpose()?;
        Ok(FileMap {
            raw,
            len,
            readable: AtomicUsize::new(len),
            populated: AtomicUsize::new(len),
            first_write: AtomicUsize::new(usize::MAX),
            released_below: AtomicUsize::new(0),
        })
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that may be read.
    pub fn readable(&self) -> usize {
        self.readable.load(Ordering::Acquire)
    }

    /// Records that another process (or an earlier guard) published data up to `end`.
    /// `end` must come from the partition's published head (`shm::Head`), which writers
    /// update only after the bytes are in place.
    pub fn observe_published(&self, end: usize) {
        self.readable.fetch_max(end.min(self.len), Ordering::AcqRel);
    }

    /// The published bytes `start..end`, or `None` if any of them is not published yet.
    #[inline]
    pub fn read(&self, start: usize, end: usize) -> Option<&[u8]> {
        if start > end || end > self.readable() {
            return None;
        }
        let raw = self.raw.as_ref()?;
        // SAFETY: `start..end` lies within the published prefix, which lies within the
        // mapping and the file (invariants 1, 2) and is never written while mapped, so a
        // shared slice of it cannot observe a write. The slice borrows `self`, which keeps
        // the mapping alive.
        Some(unsafe { std::slice::from_raw_parts(raw.as_ptr().add(start), end - start) })
    }

    /// All published bytes.
    pub fn published(&self) -> &[u8] {
        self.read(0, self.readable()).unwrap_or(&[])
    }

    /// The unpublished bytes `start..start + len` for the append-lock holder to fill, or
    /// `None` if they do not fit in the mapping or overlap published data.
    ///
    /// The guard is the proof that the caller holds the append lock (invariant 3).
    #[allow(clippy::mut_from_ref)] // disjoint from every shared slice: see the SAFETY note
    pub fn write_region(&self, _guard: &WriteGuard<'_>, start: usize, len: usize) -> Option<&mut [u8]> {
        let end = start.checked_add(len)?;
        if start < self.readable() || end > self.len {
            return None;
        }
        let raw = self.raw.as_ref()?;
        // SAFETY: the region lies inside the mapping and at or past the published end, so
        // no shared slice handed out by `read` overlaps it (invariant 1); the caller holds
        // the append lock, so no other thread or process writes it concurrently
        // (invariant 3). The exclusive borrow ends before the caller publishes.
        Some(unsafe { std::slice::from_raw_parts_mut(raw.as_mut_ptr().add(start), len) })
    }

    /// Pre-faults the pages the append-lock holder is about to fill up to `end`, a window
    /// at a time, so appends do not each pay a page fault. Best effort: on kernels without
    /// `MADV_POPULATE_WRITE` the writes simply fault as usual.
    ///
    /// The window starts small and grows with what this process wrote to the mapping, up
    /// to [`POPULATE_WINDOW`]: a short-lived writer pre-faults little (in a reopened
    /// segment nothing, see [`REOPENED_PREFAULT_AFTER`]), a streaming one a window ahead.
    pub fn prepare_write(self: &Arc<Self>, _guard: &WriteGuard<'_>, end: usize) {
        let populated = self.populated.load(Ordering::Relaxed);
        let mut first = self.first_write.load(Ordering::Relaxed);
        if first == usize::MAX {
            first = self.readable();
            self.first_write.store(first, Ordering::Relaxed);
        }
        let written = end.saturating_sub(first);
        if first > 0 && written < REOPENED_PREFAULT_AFTER {
            return;
        }
        let window = written.clamp(FIRST_POPULATE_WINDOW, POPULATE_WINDOW);
        if end + window / 2 <= populated || self.raw.is_none() {
            return;
        }
        let from = populated.max(self.readable() / 4096 * 4096);
        let to = (from.max(end) + window).min(self.len);
        self.populated.store(to, Ordering::Relaxed);
        if from < to {
            super::prefault::request(self.clone(), from, to);
        }
    }

    /// Faults in `from..to` for writing (see [`Self::prepare_write`]). It never changes the
    /// bytes, so it may run while the writer fills the same pages.
    pub(crate) fn populate_for_write(&self, from: usize, to: usize) {
        if let Some(raw) = &self.raw {
            if from < to && to <= self.len {
                let _ = raw.advise_range(memmap2::Advice::PopulateWrite, from, to - from);
            }
        }
    }

    /// Turns read-ahead off (`random`) or back on for faults in `from..to`. A fault on a page
    /// that is not in the page cache otherwise reads (or, in a pre-allocated segment,
    /// allocates and zeroes) the whole read-ahead window after it.
    pub(crate) fn advise_random(&self, from: usize, to: usize, random: bool) {
        if let Some(raw) = &self.raw {
            let to = to.min(self.len);
            if from < to {
                let advice = if random { memmap2::Advice::Random } else { memmap2::Advice::Normal };
                let _ = raw.advise_range(advice, from, to - from);
            }
        }
    }

    /// Marks bytes up to `end` as published in this process; the caller publishes the same
    /// end in the control block.
    pub fn publish(&self, _guard: &WriteGuard<'_>, end: usize) {
        // A store, not a `fetch_max` (a locked read-modify-write on every append): only the
        // append-lock holder moves the end past the last published head, and readers raise
        // it only to ends from published heads (`observe_published`), all at or below `end`.
        // So whichever of a racing raise and this store lands last, the result is `end`.
        debug_assert!(end.min(self.len) >= self.readable());
        self.readable.store(end.min(self.len), Ordering::Release);
    }

    /// Forgets published bytes past `end`: used only by recovery, under the append lock,
    /// after it found the batches there damaged.
    pub fn unpublish_after(&self, _guard: &WriteGuard<'_>, end: usize) {
        self.readable.fetch_min(end, Ordering::AcqRel);
    }

    /// Writes dirty pages in `start..end` to disk and waits (`msync(MS_SYNC)`).
    ///
    /// # Errors
    /// The `msync` failure.
    pub fn sync_range(&self, start: usize, end: usize) -> std::io::Result<()> {
        match &self.raw {
            Some(raw) if start < end && end <= self.len => raw.flush_range(start, end - start),
            _ => Ok(()),
        }
    }

    /// Called with the position a reader starts at or a writer reached: unmaps (from this
    /// process only) the pages more than a window behind it, so scanning or writing a log
    /// far larger than memory keeps the process's RSS flat. A read behind the released
    /// mark (a re-read) lowers the mark so the re-read is released as it advances. The
    /// unmapping itself is left to the prefault thread (see `prefault`).
    pub fn release_behind(self: &Arc<Self>, pos: usize) {
        let target = (pos / RELEASE_WINDOW).saturating_sub(1) * RELEASE_WINDOW;
        let below = self.released_below.load(Ordering::Relaxed);
        if pos < below {
            self.released_below.fetch_min(target, Ordering::Relaxed);
        } else if target >= below + RELEASE_WINDOW
            && self
                .released_below
                .compare_exchange(below, target, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            super::prefault::release_pages(self.clone(), below, target);
        }
    }

    /// Unmaps every page of this mapping from the process (see [`Self::release_behind`]).
    pub fn release_all(&self) {
        let below = self.released_below.swap(self.len, Ordering::Relaxed);
        if below < self.len {
            self.release_pages(below, self.len);
        }
    }

    /// Tells the kernel this process no longer needs the pages of `start..end` mapped, so
    /// a long scan or a long-lived writer does not keep the whole file resident in its RSS.
    /// The page cache keeps the data; nothing is lost for shared file mappings.
    pub fn release_pages(&self, start: usize, end: usize) {
        let page = 4096;
        let (start, end) = (start.next_multiple_of(page), end.min(self.len) / page * page);
        if let Some(raw) = &self.raw {
            if start < end && end <= self.len {
                // SAFETY: MADV_DONTNEED on a shared file mapping only drops this process's
                // page-table entries for the range; later accesses fault the pages back in
                // from the page cache with the same contents, so no reference into the range
                // observes a change.
                let _ = unsafe {
                    raw.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
                };
            }
        }
    }
}
