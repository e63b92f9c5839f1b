//! The append lock, and the deleted mark it guards: every change to a partition's files
//! takes the lock, and the lock refuses a deleted or closed partition.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::{PartitionLog, CONTROL_FILE};
use crate::shm::{ControlBlock, Opened, WriteGuard};
use crate::{Error, Result};

impl PartitionLog {
    /// Marks the partition in `dir` deleted for every process without opening its log (no
    /// recovery, so a damaged partition can be deleted too): takes the open lock, maps the
    /// control block and sets the mark under the append lock. Once this returns no append
    /// in any process is in progress there, and none will write again. A missing
    /// directory has nothing to mark.
    ///
    /// # Errors
    /// I/O errors, [`Error::Locked`] if the append lock is unusable.
    pub fn mark_deleted_at(dir: &Path) -> Result<()> {
        // `open` takes the control block's open lock (released by `end_open`, or by the
        // drop on an error): no opener's recovery interleaves with the marking.
        let control = match ControlBlock::open(&dir.join(CONTROL_FILE)) {
            Ok(Opened::Alone(c, _) | Opened::Shared(c)) => c,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let marked = control.lock().map(|mut guard| guard.mark_deleted());
        control.end_open();
        marked
    }

    /// True if the partition in `dir` carries the deleted mark; read from the file, without
    /// mapping or locking it.
    ///
    /// # Errors
    /// I/O errors other than a missing control file.
    pub fn is_deleted_at(dir: &Path) -> Result<bool> {
        crate::shm::read_deleted_mark(&dir.join(CONTROL_FILE))
    }

    fn deleted(&self) -> Error {
        Error::TopicNotFound(self.topic.clone())
    }

    /// Takes the append lock, waiting for it.
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed) once [`Self::close`] ran (checked under the lock, so no append
    /// can write into files that closing trimmed), [`Error::Forked`] in a forked child,
    /// [`Error::TopicNotFound`] once the topic was deleted.
    ///
    /// Every change to the partition's files goes through here, so checking the deleted
    /// mark here (after the lock, which `delete_topic` takes to set it) is what keeps a
    /// deleted topic's files and a new topic under the same name untouched.
    pub(super) fn lock(&self) -> Result<WriteGuard<'_>> {
        let guard = self.lock_open_or_closed()?;
        self.check_not_closed()?;
        Ok(guard)
    }

    /// As [`Self::lock`], without waiting: `None` if another thread or process holds it.
    ///
    /// # Errors
    /// As [`Self::lock`].
    pub(super) fn try_lock(&self) -> Result<Option<WriteGuard<'_>>> {
        let Some(guard) = self.control.try_lock()? else { return Ok(None) };
        let guard = self.checked(guard)?;
        self.check_not_closed()?;
        Ok(Some(guard))
    }

    /// As [`Self::lock`], also after closing (for closing itself).
    pub(super) fn lock_open_or_closed(&self) -> Result<WriteGuard<'_>> {
        let guard = self.control.lock()?;
        self.checked(guard)
    }

    fn check_not_closed(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// A guard just taken, refused if the topic was deleted, and with the head repaired if
    /// the lock's last owner died mid-append.
    fn checked<'a>(&self, mut guard: WriteGuard<'a>) -> Result<WriteGuard<'a>> {
        if self.control.is_deleted() {
            return Err(self.deleted());
        }
        if guard.owner_died() {
            let torn = guard.head();
            self.recover(&mut guard, Some(torn), false, crate::shm::Since::SameBoot)?;
        }
        Ok(guard)
    }
}
