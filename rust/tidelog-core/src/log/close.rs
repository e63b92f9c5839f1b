//! Closing a handle: refusing later appends, and trimming the active segment's
//! pre-allocated files when this is the last handle on the partition.

use std::sync::atomic::Ordering;

use super::PartitionLog;
use crate::Result;

impl PartitionLog {
    /// Closes this handle: waits for appends in progress in this process, refuses any
    /// later one ([`Error::Closed`](crate::Error::Closed)), trims the active segment's pre-allocated files to
    /// their contents if no other handle (in any process) has the partition open, so a
    /// closed store takes only the space it uses and the next open finds any damage at the
    /// very end, and gives up the handle's locks. Works while other references to the log
    /// are alive (they get [`Error::Closed`](crate::Error::Closed)); closing twice is harmless.
    ///
    /// In a process forked after the log was opened it only marks the handle closed: the
    /// files, the locks and the mutex are the parent's.
    ///
    /// # Errors
    /// Failures taking the append lock or trimming; the locks are given up all the same.
    pub fn close(&self) -> Result<()> {
        if self.control.is_inherited() {
            self.closed.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if self.closed.swap(true, Ordering::AcqRel) || !self.opened.load(Ordering::Acquire) {
            // A failed open drops its control block, which gives up the locks.
            return Ok(());
        }
        let result = self.trim_if_last();
        self.control.release();
        result
    }

    /// Trims the active segment to its contents if this is the last handle on the
    /// partition. Called by `close`, with `closed` already set.
    fn trim_if_last(&self) -> Result<()> {
        // A deleted partition's path may name a new topic's partition by now.
        if self.is_deleted() {
            return Ok(());
        }
        // The open lock keeps openers out while we check and trim. Waiting for it cannot
        // deadlock: we hold nothing yet, and its holders (an opener, or another handle
        // closing) need at most the append lock. Two handles closing at once thus check one
        // after the other, and the second finds itself alone.
        let alone = self.control.lock_open();
        // Always taken: an append of this process still in progress finishes before the
        // locks are given up (a later opener, alone, re-initialises the mutex), and none
        // starts after (`lock` checks `closed` under the lock).
        let guard = self.lock_open_or_closed()?;
        if !alone? || !self.control.try_exclusive()? {
            return Ok(());
        }
        self.refresh_if_stale(&guard)?;
        let head = guard.head();
        let view = self.read_view()?;
        let Some(active) = view.segments.last() else { return Ok(()) };
        if active.base == head.active_base {
            active.trim(head.committed_pos as usize, head.index_entries as usize, false)?;
        }
        Ok(())
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // Best effort: a failure leaves pre-allocated zeros, which recovery handles.
        let _ = self.close();
    }
}
