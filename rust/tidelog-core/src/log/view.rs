//! This process's view of the segment files, re-listed when the head's generation says
//! another process changed them.

use std::sync::{Arc, RwLockReadGuard};

use super::{compaction, recovery, PartitionLog};
use crate::index::{INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::segment::Segment;
use crate::shm::{Head, WriteGuard};
use crate::{Error, Result};

/// This process's picture of the segments.
pub(super) struct View {
    pub(super) generation: u64,
    /// The head's compaction count when listed: a different count means sealed segments
    /// were replaced by files of the same names, so no map of them may be reused.
    pub(super) compactions: u64,
    /// Sealed segments in offset order, then the active one last.
    pub(super) segments: Vec<Arc<Segment>>,
}

impl View {
    pub(super) fn active(&self) -> &Arc<Segment> {
        self.segments.last().expect("a log always has an active segment")
    }
}

impl PartitionLog {
    pub(super) fn read_view(&self) -> Result<RwLockReadGuard<'_, View>> {
        self.view.read().map_err(|_| Error::Closed)
    }

    /// This process's view, re-listed first if another process changed the segments.
    pub(super) fn current_view(&self, head: Head) -> Result<RwLockReadGuard<'_, View>> {
        Ok(self.current_view_and_head(head)?.1)
    }

    /// [`Self::current_view`] with the head it matches: `head`, or, when the view had to be
    /// re-listed, the newer head it was listed at (other processes may have appended and
    /// rolled since `head` was read). What is derived from the batches (the producer table)
    /// must go by the head of the view it walks: an older head ends the walk in a segment
    /// the view has since sealed and continued.
    pub(super) fn current_view_and_head(&self, head: Head) -> Result<(Head, RwLockReadGuard<'_, View>)> {
        {
            let view = self.read_view()?;
            if view.generation == head.generation {
                view.active().data.observe_published(head.committed_pos as usize);
                view.active().index.observe_published(head.index_entries as usize * INDEX_ENTRY_BYTES);
                view.active()
                    .time_index
                    .observe_published(head.index_entries as usize * TIME_INDEX_ENTRY_BYTES);
                return Ok((head, view));
            }
        }
        let guard = self.lock()?;
        self.refresh_if_stale(&guard)?;
        drop(guard);
        self.current_view_and_head(self.head()?)
    }

    pub(super) fn refresh_if_stale(&self, guard: &WriteGuard<'_>) -> Result<()> {
        if self.read_view()?.generation != guard.head().generation {
            self.refresh(guard)?;
        }
        Ok(())
    }

    /// Re-lists the segment files to match the published head. Called with the append
    /// lock held, so the files cannot change meanwhile.
    pub(super) fn refresh(&self, guard: &WriteGuard<'_>) -> Result<()> {
        self.refresh_reusing(guard, None)
    }

    /// [`Self::refresh`], reusing `fresh` (a segment this process just created and mapped:
    /// a roll's new active segment) if the listing finds it current.
    pub(super) fn refresh_reusing(&self, guard: &WriteGuard<'_>, fresh: Option<Arc<Segment>>) -> Result<()> {
        // A compaction swap that was decided but not carried out (its cleaner failed or
        // died) is finished first, so no listing sees half of it: one failed `open` per
        // re-listing, which only rolls, retention and compactions cause.
        compaction::finish_swap(&self.dir)?;
        self.refresh_listed_reusing(guard, &recovery::list_segments(&self.dir, false)?, fresh)
    }

    /// [`Self::refresh`] with the segment bases just listed (by recovery, under the same
    /// lock).
    pub(super) fn refresh_listed(&self, guard: &WriteGuard<'_>, bases: &[u64]) -> Result<()> {
        self.refresh_listed_reusing(guard, bases, None)
    }

    fn refresh_listed_reusing(
        &self,
        guard: &WriteGuard<'_>,
        bases: &[u64],
        fresh: Option<Arc<Segment>>,
    ) -> Result<()> {
        let head = guard.head();
        let mut old = {
            let view = self.read_view()?;
            if view.compactions == head.compactions {
                view.segments.clone()
            } else {
                // A compaction swapped segments: a map of the same name is of the old file.
                Vec::new()
            }
        };
        // Checked below as every mapping this process had is.
        old.extend(fresh);
        let mut segments = Vec::with_capacity(bases.len());
        for &base in bases.iter().filter(|&&b| b >= head.log_start) {
            // An active segment mapped as readable past the head is not reused: recovery cut
            // published data (damage found while others had it open), and appends and reads
            // must not go by the old end. Nor one mapped past the end of its files: a roll
            // that died after trimming them left it active (repaired by another handle), and
            // appends through the old mapping would land past the end of the file, in the
            // page cache only, and be lost.
            let mut reuse = None;
            for s in &old {
                if s.base == base
                    && (s.is_active() == (base == head.active_base))
                    && !(s.is_active() && s.data.readable() > head.committed_pos as usize)
                    && !s.mapped_past_its_files()?
                {
                    reuse = Some(s);
                    break;
                }
            }
            let seg = match reuse {
                Some(s) => s.clone(),
                None if base == head.active_base => Arc::new(Segment::open_active_as_created(
                    &self.dir,
                    base,
                    head.committed_pos as usize,
                    head.index_entries as usize,
                )?),
                None => Arc::new(Segment::open_sealed(&self.dir, base)?),
            };
            segments.push(seg);
        }
        if segments.last().is_none_or(|s| s.base != head.active_base) {
            return Err(Error::Corrupt {
                path: self.dir.clone(),
                position: 0,
                offset: head.active_base,
                reason: "the active segment's files are missing".into(),
            });
        }
        let active = segments.last().expect("checked");
        active.data.observe_published(head.committed_pos as usize);
        active.index.observe_published(head.index_entries as usize * INDEX_ENTRY_BYTES);
        active.time_index.observe_published(head.index_entries as usize * TIME_INDEX_ENTRY_BYTES);
        *self.view.write().map_err(|_| Error::Closed)? =
            View { generation: head.generation, compactions: head.compactions, segments };
        Ok(())
    }
}
