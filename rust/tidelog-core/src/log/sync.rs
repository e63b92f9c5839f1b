//! Syncing appended data to disk, and the failed state a sync failure leaves.

use std::sync::atomic::Ordering;

use super::PartitionLog;
use crate::{Error, Result};

impl PartitionLog {
    /// The error every append and sync gets once [`Self::failed`] is set.
    pub(super) fn check_not_failed(&self) -> Result<()> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::io(
                "refuse to write after an earlier write or sync failed (reopen the store to recover)",
                &self.dir,
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        Ok(())
    }

    /// Marks the partition failed when `result` is a sync failure (see [`Self::failed`]).
    pub(super) fn fail_on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        result
    }

    /// Flushes everything appended so far to disk.
    ///
    /// # Errors
    /// The sync failure.
    pub fn sync(&self) -> Result<()> {
        self.check_not_failed()?;
        if !self.dirty.swap(false, Ordering::Relaxed) || self.is_deleted() {
            return Ok(());
        }
        let head = self.head()?;
        let view = self.current_view(head)?;
        let active = view.active();
        if active.base == head.active_base {
            self.fail_on_error(self.sync_sealed_since_last_sync(&view.segments, head.active_base))?;
            self.fail_on_error(active.sync_data(0, head.committed_pos as usize))?;
            self.control.note_synced(head.next_offset);
        }
        Ok(())
    }

    /// Syncs what the segments before `active_base` may hold unsynced, unless the control
    /// block says it is on disk already: a roll syncs the sealed segment and the directory
    /// only under a durable policy of the process that rolled (policies are per process),
    /// and recovery after a restart trusts every byte below the synced offset. Called before
    /// [`crate::shm::ControlBlock::note_synced`] with an offset in the active segment;
    /// nothing to do (one load) unless a segment was sealed since the last sync.
    pub(super) fn sync_sealed_since_last_sync(
        &self,
        segments: &[std::sync::Arc<crate::segment::Segment>],
        active_base: u64,
    ) -> Result<()> {
        let synced = self.control.synced_offset();
        if synced >= active_base {
            return Ok(());
        }
        for pair in segments.windows(2) {
            let (sealed, next) = (&pair[0], &pair[1]);
            if next.base > synced && next.base <= active_base {
                let path = &sealed.paths.data;
                match std::fs::File::open(path) {
                    Ok(file) => crate::fs::sync_data(&file, path)?,
                    // Retention or a compaction's swap removed it meanwhile (under the
                    // append lock, which this does not take): gone, it needs no sync.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("open", path, e)),
                }
            }
        }
        crate::segment::sync_dir(&self.dir)?;
        self.control.note_synced(active_base);
        Ok(())
    }
}
