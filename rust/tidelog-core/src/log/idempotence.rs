//! How a partition log keeps its [`ProducerTable`]: loaded lazily (newest usable snapshot,
//! then batch headers from there), caught up on batches other processes wrote before every
//! check, and snapshotted when a segment rolls.
//!
//! Each process keeps its own table; they agree because each is a function of the log's
//! batches in offset order. Only processes that write idempotent batches, read transactional
//! ones, or roll a segment with a loaded table ever build one.

use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use super::{now_ms, PartitionLog, View};
use crate::format::Marker;
use crate::index::{OffsetIndex, INDEX_ENTRY_BYTES};
use crate::log::producers::ProducerTable;
use crate::segment::{self, Check, OnDamage};
use crate::shm::Head;
use crate::{Error, Result};

/// Snapshots kept per partition: the newest, and one to fall back to if it is damaged.
const SNAPSHOTS_KEPT: usize = 2;

/// File name suffix of producer-state snapshots.
pub(super) use crate::paths::PRODUCER_SNAPSHOT_SUFFIX as SNAPSHOT_SUFFIX;

fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// Offsets of the snapshots in `dir`, oldest first.
fn list_snapshots(dir: &Path) -> Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        if let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX)) {
            if let Ok(offset) = stem.parse::<u64>() {
                found.push(offset);
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

pub(super) type TableGuard<'a> = MutexGuard<'a, Option<ProducerTable>>;

impl PartitionLog {
    pub(super) fn producer_table(&self) -> Result<TableGuard<'_>> {
        self.producers.lock().map_err(|_| Error::Closed)
    }

    /// Brings `table` (loading it first if needed) up to `head`, reading the batches of
    /// `view` it has not applied yet. Published batches never change, so the append lock is
    /// not needed; writers hold it anyway so nothing lands between catching up and checking.
    pub(super) fn catch_up<'t>(
        &self,
        table: &'t mut Option<ProducerTable>,
        view: &View,
        head: &Head,
    ) -> Result<&'t mut ProducerTable> {
        // After a compaction the batches below its snapshot no longer say what their
        // producers wrote: a table that has not applied them all is rebuilt from the
        // snapshot the cleaner wrote (at or past everything it rewrote).
        let loading = table.as_ref().is_none_or(|t| t.compactions != head.compactions);
        if loading {
            *table = Some(self.load_snapshot(head)?);
        }
        let table = table.as_mut().expect("just loaded");
        if table.applied < head.log_start {
            // Retention deleted batches this table never saw; their producers keep what the
            // table knew of them (a snapshot taken at roll saw every batch before it).
            table.applied = head.log_start;
        }
        if table.applied >= head.next_offset {
            return Ok(table);
        }
        let first = view.segments.partition_point(|s| s.base <= table.applied).saturating_sub(1);
        for seg in &view.segments[first..] {
            if seg.base > head.active_base {
                // A view listed at a newer head than `head` goes on past it; walking on there
                // would leave out the batches between `head`'s end and that segment for good.
                break;
            }
            let end = if seg.base == head.active_base {
                // Other processes' appends: this handle's map learns of them from the head.
                seg.data.observe_published(head.committed_pos as usize);
                seg.index.observe_published(head.index_entries as usize * INDEX_ENTRY_BYTES);
                head.committed_pos as usize
            } else {
                seg.data.readable()
            };
            let (index, _) = seg.lookup_indexes();
            let (rel, pos) = match table.applied.checked_sub(seg.base) {
                Some(r) if r > 0 => {
                    let (rel, pos) =
                        OffsetIndex::new(index.published()).lookup_entry(r.min(u64::from(u32::MAX)) as u32);
                    (rel, pos as usize)
                }
                _ => (0, 0),
            };
            // Damage is an error, for readers and writers alike: the table keeps what it
            // could apply, and nothing past the damage may be decided without it. Going on
            // past it would leave a transaction whose marker is in the damage open, to be
            // closed by its producer's next marker with that marker's outcome (aborted
            // messages served as committed, or committed ones hidden), and a writer would
            // check sequences against batches it never saw.
            let cursor = seg.cursor(pos, end, seg.base + u64::from(rel), Check::Header, OnDamage::Error);
            for batch in cursor {
                let batch = batch?;
                let h = batch.header;
                if h.next_offset() > table.applied {
                    let marker = if h.attributes & crate::format::ATTR_CONTROL != 0 {
                        batch.view().and_then(|b| Marker::of(&b))
                    } else {
                        None
                    };
                    table.apply(&h, marker);
                }
            }
        }
        if loading {
            // Batches read past the snapshot may be as idle as those it dropped.
            table.expire(now_ms() - self.config.producer_expiry_ms, head.log_start);
        }
        Ok(table)
    }

    /// Deletes the snapshots of producer state past `end` (recovery cut the log below
    /// them): they describe batches the log no longer holds, and once appends reach their
    /// offsets again they would pass for the state of the new batches. Also, kept among the
    /// newest, they would make each later roll delete its own snapshot. The directory is
    /// synced when one went.
    ///
    /// # Errors
    /// Listing, removing or syncing failed.
    pub(super) fn drop_snapshots_after(&self, end: u64) -> Result<()> {
        let mut dropped = false;
        for offset in list_snapshots(&self.dir)?.into_iter().filter(|&o| o > end) {
            let path = snapshot_path(&self.dir, offset);
            std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            dropped = true;
        }
        if dropped {
            segment::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The newest intact snapshot at or below the head, or an empty table at the log start.
    fn load_snapshot(&self, head: &Head) -> Result<ProducerTable> {
        let cutoff = now_ms() - self.config.producer_expiry_ms;
        for offset in list_snapshots(&self.dir)?.into_iter().rev() {
            if offset > head.next_offset {
                // Written before a crash that lost the data after it.
                continue;
            }
            let path = snapshot_path(&self.dir, offset);
            let Ok(bytes) = crate::fs::read_file(&path) else { continue };
            if let Some(mut table) = ProducerTable::decode(&bytes).filter(|t| t.applied == offset) {
                table.expire(cutoff, head.log_start);
                table.compactions = head.compactions;
                return Ok(table);
            }
        }
        let mut table = ProducerTable::new(head.log_start);
        table.compactions = head.compactions;
        Ok(table)
    }

    /// At a roll (append lock held, `head` the sealed segment's last head): if this process
    /// keeps a table, writes it as the new segment's snapshot and drops older snapshots.
    pub(super) fn snapshot_at_roll(&self, view: &View, head: &Head, durable: bool) -> Result<()> {
        let guard = self.producer_table()?;
        if guard.is_none() {
            return Ok(());
        }
        match self.write_snapshot(guard, view, head, durable) {
            // Damage the table cannot be brought past: no snapshot, rather than one with a
            // hole that later readers would trust. Whoever needs the state walks from an
            // older snapshot and reports the damage; the roll (and the append that asked
            // for it, which needs no producer state) goes on.
            Err(Error::Corrupt { .. }) => Ok(()),
            other => other,
        }
    }

    /// Writes the producer state as of `head` as a snapshot (loading the table first if this
    /// process has none), and drops older snapshots. Append lock held.
    pub(super) fn snapshot_now(&self, view: &View, head: &Head, durable: bool) -> Result<()> {
        self.write_snapshot(self.producer_table()?, view, head, durable)
    }

    fn write_snapshot(
        &self,
        mut guard: TableGuard<'_>,
        view: &View,
        head: &Head,
        durable: bool,
    ) -> Result<()> {
        let table = self.catch_up(&mut guard, view, head)?;
        table.expire(now_ms() - self.config.producer_expiry_ms, head.log_start);
        let path = snapshot_path(&self.dir, table.applied);
        let bytes = table.encode();
        drop(guard);
        segment::write_atomically(&path, &bytes, durable)?;
        let all = list_snapshots(&self.dir)?;
        for &old in &all[..all.len().saturating_sub(SNAPSHOTS_KEPT)] {
            let _ = std::fs::remove_file(snapshot_path(&self.dir, old));
        }
        Ok(())
    }
}
