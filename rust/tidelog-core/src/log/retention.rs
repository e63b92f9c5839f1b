//! Retention: deleting whole sealed segments past the size or age limits.

use super::{now_ms, PartitionLog};
use crate::shm::WriteGuard;
use crate::{Error, Result};

impl PartitionLog {
    /// Deletes whole sealed segments beyond the retention limits and advances the start
    /// offset.
    ///
    /// # Errors
    /// I/O errors deleting files.
    pub fn enforce_retention(&self) -> Result<()> {
        self.settings.refresh()?;
        if self.settings.retention_bytes().is_none() && self.settings.retention_ms().is_none() {
            return Ok(());
        }
        let mut guard = self.lock()?;
        self.refresh_if_stale(&guard)?;
        self.apply_retention(&mut guard)
    }

    pub(super) fn apply_retention(&self, guard: &mut WriteGuard<'_>) -> Result<()> {
        if !self.settings.deletes() {
            // cleanup_policy="compact": compaction alone removes records.
            return Ok(());
        }
        let segments = self.read_view()?.segments.clone();
        let mut head = guard.head();
        let mut total: u64 =
            segments[..segments.len() - 1].iter().map(|s| s.data.readable() as u64).sum::<u64>()
                + head.committed_pos;
        let cutoff = self.settings.retention_ms().map(|ms| now_ms() - ms);
        let mut removed = 0;
        for seg in &segments[..segments.len() - 1] {
            let over_size = self.settings.retention_bytes().is_some_and(|limit| total > limit);
            let too_old = cutoff.is_some_and(|c| seg.max_timestamp() < c);
            if !(over_size || too_old) {
                break;
            }
            // Data file first: index files without data are ignored and cleaned by recovery.
            for path in [&seg.paths.data, &seg.paths.index, &seg.paths.time_index] {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("delete", path, e)),
                }
            }
            total -= seg.data.readable() as u64;
            removed += 1;
        }
        if removed > 0 {
            head.generation += 1;
            head.log_start = segments[removed].base;
            guard.publish(head);
            self.refresh(guard)?;
        }
        Ok(())
    }
}
