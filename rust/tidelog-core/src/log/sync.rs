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
            self.fail_on_error(active.sync_data(0, head.committed_pos as usize))?;
        }
        Ok(())
    }
}
