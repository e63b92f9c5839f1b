//! Rolling: sealing the active segment and starting the next (when it fills, or on request
//! after the topic's `segment_bytes` changed), or undoing a roll that failed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{now_ms, FsyncPolicy, PartitionLog};
use crate::segment::{self, Segment};
use crate::shm::WriteGuard;
use crate::Result;

impl PartitionLog {
    /// Seals the active segment if it holds anything; the next append starts a segment of
    /// the topic's current settings (the active segment keeps the geometry it was made with,
    /// so without this it would hold new records at the old size until it filled: the
    /// offsets topic, when it is made compacted, needs its history sealed for the cleaner
    /// to reach it). Returns whether it rolled.
    ///
    /// # Errors
    /// [`crate::Error::Closed`], I/O errors creating the new segment (the old one stays
    /// active).
    pub fn seal_active(&self) -> Result<bool> {
        let mut guard = self.lock()?;
        self.refresh_if_stale(&guard)?;
        if guard.head().committed_pos == 0 {
            return Ok(false);
        }
        self.roll(&mut guard)?;
        Ok(true)
    }

    /// Seals the active segment and starts a new one at the next offset, then applies
    /// retention. Called with the append lock held.
    pub(super) fn roll(&self, guard: &mut WriteGuard<'_>) -> Result<()> {
        let mut head = guard.head();
        let durable = self.config.fsync != FsyncPolicy::Never;
        self.snapshot_at_roll(&*self.read_view()?, &head, durable)?;
        let active = self.read_view()?.active().clone();
        // Trim first: a crash after this leaves a valid sealed-looking segment that
        // recovery simply treats as active again.
        // New segments take the topic's current settings, whichever process rolls.
        self.settings.refresh()?;
        let rolled = (|| {
            active.trim(head.committed_pos as usize, head.index_entries as usize, durable)?;
            let next = Segment::open_active(
                &self.dir,
                head.next_offset,
                self.settings.segment_bytes(),
                self.settings.index_capacity(),
                0,
                0,
            )?;
            if durable {
                segment::sync_dir(&self.dir)?;
            }
            Ok(next)
        })();
        let next = match rolled {
            Ok(next) => Arc::new(next),
            Err(e) => {
                self.undo_roll(&active, head.next_offset);
                return Err(e);
            }
        };
        // The sealed segment and the directory are on disk now; so is everything before
        // them if the segments sealed before were synced (another process's policy may not
        // have synced its rolls). Recovery after a restart then need not walk them.
        if durable && self.control.synced_offset() >= active.base {
            self.control.note_synced(head.next_offset);
        }
        head.generation += 1;
        head.active_base = head.next_offset;
        head.committed_pos = 0;
        head.index_entries = 0;
        head.last_index_pos = 0;
        head.max_timestamp = i64::MIN;
        head.segment_created_ms = now_ms();
        guard.publish(head);
        // The view takes the new segment as just made and mapped (not opened a second time).
        self.refresh_reusing(guard, Some(next))?;
        // The refreshed view holds the sealed segment mapped anew; unmapping the active
        // mappings (when ours is the last reference) is left to a background thread, not
        // done under the append lock.
        segment::release_in_background(active);
        self.apply_retention(guard)
    }

    /// Puts the files back as they were before a roll that failed (a full disk): the new
    /// segment's files go, and the active segment's trimmed files grow back to the size
    /// every process has mapped, since a write through a mapping past the end of its file
    /// is a SIGBUS. If that fails too, the partition is marked failed, so nothing is
    /// written through the mapping until a reopen.
    fn undo_roll(&self, active: &Segment, next_base: u64) {
        let new = segment::SegmentPaths::new(&self.dir, next_base);
        for path in [&new.data, &new.index, &new.time_index] {
            let _ = std::fs::remove_file(path);
        }
        if active.restore_capacity().is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
    }
}
