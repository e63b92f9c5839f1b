//! Sealing the active segment on request, for a topic whose `segment_bytes` changed: the
//! active segment keeps the geometry it was made with, so without a roll it would hold new
//! records at the old size until it filled up (the offsets topic, when it is made compacted,
//! needs its history sealed for the cleaner to reach it).

use super::PartitionLog;
use crate::Result;

impl PartitionLog {
    /// Seals the active segment if it holds anything; the next append starts a segment of
    /// the topic's current settings. Returns whether it rolled.
    ///
    /// # Errors
    /// [`crate::Error::Closed`], I/O errors creating the new segment (the old one stays
    /// active).
    pub fn seal_active(&self) -> Result<bool> {
        let mut guard = self.lock(true)?.expect("a blocking lock");
        self.refresh_if_stale(&guard)?;
        if guard.head().committed_pos == 0 {
            return Ok(false);
        }
        self.roll(&mut guard)?;
        Ok(true)
    }
}
