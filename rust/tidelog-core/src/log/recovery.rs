//! Recovery: what the first process to open a partition does before anyone reads it.
//!
//! Within one boot only the active segment can hold a torn tail (sealed segments were
//! trimmed before the next segment was created; after a restart of the machine, those
//! sealed since the last sync are checked first), so recovery reads just its tail: it
//! starts at the last index entry that still points at a valid batch (below the synced
//! offset, after a restart: see [`PartitionLog::recover`]) and walks forward, checking
//! CRCs and offset continuity, to the first bad batch. If nothing valid follows (a torn
//! tail), everything from there on is zeroed, so the bytes of a torn batch can never be
//! mistaken for data later. If a valid batch that could continue the log follows the
//! damage, it is not a torn tail: opening refuses, or with
//! [`OnCorruption::Quarantine`] the damaged part and everything after it are copied into
//! `quarantine/` (synced) before the cut. Either removal is recorded ([`super::lost`]).
//! The index entries after the starting point are rewritten from the walk, so a missing or
//! damaged index of the active segment is rebuilt as a side effect.

use std::path::Path;

use super::compaction;
use super::lost::{self, LossEvent, LossKind, EVENTS_FILE, QUARANTINE_DIR};
use super::{now_ms, write_index_entry, OnCorruption, PartitionLog, CONTROL_FILE};
use crate::index::{OffsetIndex, TimeIndex, INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::segment::{parse_file_name, Check, CursorEnd, FileKind, OnDamage, Segment, SegmentPaths};
use crate::shm::{Head, Since, WriteGuard};
use crate::{Error, Result};

/// Base offsets of the data files in `dir`, sorted. With `clean`, leftovers of interrupted
/// operations (temp files, index files whose data file is gone) are deleted; any other
/// file is foreign and refused, so a wrong directory is never "recovered" into garbage.
pub(super) fn list_segments(dir: &Path, clean: bool) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match parse_file_name(&name) {
            Some((base, FileKind::Data)) => bases.push(base),
            Some((base, _)) => indexes.push((base, entry.path())),
            None if name == CONTROL_FILE
                || name == EVENTS_FILE
                || name == QUARANTINE_DIR
                || name == compaction::SWAP_FILE
                || name == compaction::CHECKPOINT_FILE
                || name.ends_with(super::idempotence::SNAPSHOT_SUFFIX) => {}
            // A rewritten segment that was never swapped in: nobody else can be writing it
            // when we are alone with the partition (see `compaction`).
            None if name.ends_with(crate::paths::TMP_SUFFIX)
                || name.ends_with(compaction::CLEANED_SUFFIX) =>
            {
                if clean {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            None => {
                return Err(Error::InvalidConfig(format!(
                    "{} is not a tidelog partition directory: unexpected file {name:?}",
                    dir.display()
                )))
            }
        }
    }
    bases.sort_unstable();
    if clean {
        for (base, path) in indexes {
            if bases.binary_search(&base).is_err() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(bases)
}

/// Zero bytes in a row after which recovery takes the written part of a segment to have
/// ended (see [`Segment::written_end`]). Only a batch holding a longer run of zeros (values
/// of 256 KiB or more of zeros) whose header is also damaged could make valid batches after
/// it look like a torn tail, and even then the cut is recorded, never silent.
const WRITTEN_GAP_BYTES: usize = 256 << 10;

/// The offset after the batch at `pos` as its header claims, if the header is plausible
/// for a batch starting at `first` (else `first`: the removed bytes tell nothing).
fn claimed_end(active: &Segment, pos: usize, end: usize, first: u64) -> u64 {
    crate::format::BatchHeader::read(active.data.read(pos, end).unwrap_or_default())
        .filter(|h| h.base_offset == first && h.version == crate::format::FORMAT_VERSION)
        .map_or(first, |h| h.next_offset())
}

impl PartitionLog {
    /// After a restart of the machine: finds the first batch a power loss took from a
    /// sealed segment. A roll under `fsync="never"` syncs nothing, so segments sealed since
    /// the last sync may have lost pages just as the active one may. Each sealed segment
    /// holding offsets at or past `synced` is walked (CRCs, continuity); at the first damage
    /// at or past `synced`, the segments after it are moved whole into the quarantine
    /// directory (recorded), which makes the damaged one the active segment: the walk of
    /// [`Self::recover`] then cuts it as it cuts any active segment. Damage below `synced`
    /// is not what a power loss leaves: it stays, for readers to report, as in any sealed
    /// segment. Returns the base of the first segment moved, if any.
    fn cut_at_lost_sealed_pages(
        &self,
        bases: &mut Vec<u64>,
        synced: u64,
        hint: Option<Head>,
    ) -> Result<Option<u64>> {
        for i in 0..bases.len().saturating_sub(1) {
            let next_base = bases[i + 1];
            if next_base <= synced {
                continue;
            }
            let segment = Segment::open_sealed(&self.dir, bases[i])?;
            let mut cursor = segment
                .cursor(0, segment.data.readable(), bases[i], Check::Crc, OnDamage::Stop)
                .zero_tail(true);
            cursor.by_ref().for_each(drop);
            let lost = match cursor.end() {
                Some(CursorEnd::Damaged { .. }) => true,
                // Zeros where a batch should be: lost pages, unless the batches reached the
                // next segment (a trim the power loss did not keep leaves zeros after them).
                Some(CursorEnd::ZeroTail) => cursor.expected() < next_base,
                // A clean end short of the next segment is a gap compaction left.
                _ => false,
            };
            if lost && cursor.expected() >= synced {
                drop(segment);
                self.quarantine_segments(&bases[i + 1..], hint)?;
                bases.truncate(i + 1);
                return Ok(Some(next_base));
            }
        }
        Ok(None)
    }

    /// Moves the data files of the segments with `bases` whole into the quarantine
    /// directory, the last first, so that whatever step a crash stops at leaves the log
    /// contiguous (a prefix of the segments); their indexes, rebuilt from the data whenever
    /// needed, are deleted. Each move is recorded (synced) before it is made, as every cut
    /// is: a crash between the two leaves a record whose file is still the segment, and the
    /// next open, finding the same damage, moves it under that record's name.
    fn quarantine_segments(&self, bases: &[u64], hint: Option<Head>) -> Result<()> {
        let dir = self.dir.join(QUARANTINE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let recorded = lost::read_events(&self.dir)?;
        let time_ms = now_ms();
        for (j, &base) in bases.iter().enumerate().rev() {
            let paths = SegmentPaths::new(&self.dir, base);
            let pending = recorded.iter().rev().find(|e| {
                // Builds before the "unsynced" kind recorded these moves as quarantines.
                matches!(e.kind, LossKind::Unsynced | LossKind::Quarantined)
                    && e.segment_base == base
                    && e.position == 0
                    && !dir.join(&e.file).exists()
            });
            let file = match pending {
                Some(event) => event.file.clone(),
                None => {
                    let event = LossEvent {
                        kind: LossKind::Unsynced,
                        time_ms,
                        segment_base: base,
                        position: 0,
                        bytes: std::fs::metadata(&paths.data)
                            .map_err(|e| Error::io("stat", &paths.data, e))?
                            .len(),
                        first_offset: base,
                        end_offset: self.moved_end(bases.get(j + 1).copied(), base, hint)?,
                        file: format!(
                            "{base:020}-{:010}-{time_ms}.{}",
                            0,
                            crate::paths::SEGMENT_DATA_EXTENSION
                        ),
                    };
                    lost::record(&self.dir, &event, true)?;
                    event.file
                }
            };
            crate::fs::rename(&paths.data, &dir.join(file))?;
            for index in [&paths.index, &paths.time_index] {
                let _ = std::fs::remove_file(index);
            }
            crate::segment::sync_dir(&dir)?;
            crate::segment::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Where the offsets of a segment moved whole end: the next segment's base, or, for the
    /// last segment, the further of what its batches claim and what the head claimed.
    fn moved_end(&self, next_base: Option<u64>, base: u64, hint: Option<Head>) -> Result<u64> {
        if let Some(next) = next_base {
            return Ok(next);
        }
        let segment = Segment::open_sealed(&self.dir, base)?;
        let mut cursor =
            segment.cursor(0, segment.data.readable(), base, Check::Header, OnDamage::Stop).zero_tail(true);
        cursor.by_ref().for_each(drop);
        let claimed = hint.filter(|h| h.active_base == base).map_or(base, |h| h.next_offset);
        Ok(cursor.expected().max(claimed))
    }

    /// Copies `from..to` of the active segment (damage, then the valid batches from
    /// `found` on) into the quarantine directory, synced, and returns the event to record.
    /// The caller truncates only after this returns.
    fn quarantine(
        &self,
        active: &Segment,
        from: usize,
        to: usize,
        first: u64,
        found: usize,
        data_len: usize,
    ) -> Result<LossEvent> {
        // The highest offset the moved bytes hold: walk each valid run after the damage.
        let mut lost_end = claimed_end(active, from, data_len, first);
        let mut to = to;
        let mut at = Some(found);
        while let Some(pos) = at {
            let h = active.header_at(pos, data_len).expect("a valid batch");
            let run = active.scan(pos, data_len, usize::MAX, i64::MIN, h.base_offset);
            lost_end = lost_end.max(run.next_offset);
            to = to.max(run.end);
            at = active.valid_batch_after(run.end, data_len, run.next_offset);
        }
        let dir = self.dir.join(QUARANTINE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let time_ms = now_ms();
        let file =
            format!("{:020}-{from:010}-{time_ms}.{}", active.base, crate::paths::SEGMENT_DATA_EXTENSION);
        let bytes = active.data.read(from, to).ok_or_else(|| active.corrupt(from, first, "unreadable"))?;
        crate::segment::write_atomically(&dir.join(&file), bytes, true)?;
        crate::segment::sync_dir(&self.dir)?;
        Ok(LossEvent {
            kind: LossKind::Quarantined,
            time_ms,
            segment_base: active.base,
            position: from as u64,
            bytes: (to - from) as u64,
            first_offset: first,
            end_offset: lost_end,
            file,
        })
    }

    /// Rebuilds the head from the files. `hint` is what the control block held (valid after
    /// a process crash, possibly stale after a power loss); nothing in it is trusted
    /// without checking it against the data.
    ///
    /// Also run, with `alone == false`, by whoever takes the append lock after a writer
    /// died holding it: the head may then be torn (the writer died mid-publish) and the
    /// bytes past it may hold a partial batch.
    ///
    /// `since` tells what the machine went through since the partition was last recovered
    /// ([`Since`]). After a restart a power loss may have kept some unsynced pages and lost
    /// others, in any order, so an index entry or a valid batch past the synced offset
    /// proves nothing about the bytes before it: the walk starts below the synced offset,
    /// and damage at or past it followed by valid batches is what such a loss leaves, not
    /// corruption: it is cut (the rest quarantined, so nothing goes without a copy)
    /// whatever [`OnCorruption`] says. When nothing is known the walk covers the whole
    /// active segment, and damage is judged by [`OnCorruption`].
    ///
    /// Returns the offset the recovered log ends at.
    pub(super) fn recover(
        &self,
        guard: &mut WriteGuard<'_>,
        hint: Option<Head>,
        alone: bool,
        since: Since,
    ) -> Result<u64> {
        // A compaction that died after deciding its swap (holding the lock we now have) is
        // finished before anything lists the segments.
        compaction::finish_swap(&self.dir)?;
        let mut bases = list_segments(&self.dir, alone)?;
        // After a cut of a sealed segment, the offsets its batches reached (the base of the
        // first segment moved away): what the head would have claimed had it been active.
        let cut_sealed_end = match since {
            Since::Restart { synced } => self.cut_at_lost_sealed_pages(&mut bases, synced, hint)?,
            _ => None,
        };
        let first = bases.is_empty();
        if first {
            bases.push(hint.map_or(0, |h| h.next_offset.max(h.log_start)));
        }
        let base = *bases.last().expect("non-empty");
        let hint = hint.filter(|h| h.active_base == base);
        self.settings.refresh()?;
        // Map everything as readable for the walk; unpublished again below.
        let active = if alone || hint.is_none() {
            // Nobody else maps this segment (no other process has the partition open, or the
            // segment is a roll that died before publishing it): it may be sized now, to the
            // topic's current settings or its files' size, whichever is larger.
            Segment::open_active(
                &self.dir,
                base,
                self.settings.segment_bytes(),
                self.settings.index_capacity(),
                usize::MAX,
                0,
            )?
        } else {
            // Other processes map it: keep the geometry it was created with.
            let segment = Segment::open_active_as_created(&self.dir, base, 0, 0)?;
            segment.data.observe_published(segment.data.len());
            segment
        };
        if first && self.config.fsync != super::FsyncPolicy::Never {
            // The partition's first segment files (and its control file) are new names in
            // its directory: without this sync a power loss could take the file, and with it
            // every append acknowledged into it (a roll syncs the directory the same way).
            crate::segment::sync_dir(&self.dir)?;
        }
        let data_len = active.data.len();
        let hinted_entries =
            hint.map_or(0, |h| h.index_entries as usize).min(active.index.len() / INDEX_ENTRY_BYTES);
        active.index.observe_published(hinted_entries * INDEX_ENTRY_BYTES);
        active.time_index.observe_published(hinted_entries * TIME_INDEX_ENTRY_BYTES);
        // Entries are trusted only as a valid chain from the first (each pointing at a batch
        // header with the offset it claims); the chain's last entry whose whole batch is
        // intact (and, after a restart, was synced) is where the walk starts.
        let chain = active.valid_index_prefix(&active.index, &active.time_index, hinted_entries, data_len);
        let index = OffsetIndex::new(active.index.published());
        let time = TimeIndex::new(active.time_index.published());
        let start = (0..chain).rev().find(|&i| {
            let (rel, pos) = index.get(i);
            let trusted = match since {
                Since::SameBoot => true,
                Since::Restart { synced } => base + u64::from(rel) < synced,
                Since::Unknown => false,
            };
            trusted
                && time.get(i).position == pos
                && active
                    .batch_at(pos as usize, data_len, true)
                    .is_ok_and(|b| b.header.base_offset == base + u64::from(rel))
        });
        let (kept, pos, max_before, first) = match start {
            Some(i) => {
                let e = time.get(i);
                (i, e.position as usize, e.max_timestamp_before, base + u64::from(e.relative_offset))
            }
            None => (0, 0, i64::MIN, base),
        };
        let mut scan = active.scan(pos, data_len, active.index_interval(), max_before, first);
        // Entries kept from before may have been written at another cadence (the segment
        // was resized above): the rest is left unindexed rather than overflowing the index.
        scan.entries.truncate(active.index_slots().saturating_sub(kept));
        // Whatever is not zero after the valid data is either a torn tail (nothing valid
        // after it: truncated) or damage followed by valid batches (never cut silently).
        let hinted_pos = hint.map_or(0, |h| h.committed_pos as usize);
        let damage_end = active.written_end(scan.end, hinted_pos, data_len, WRITTEN_GAP_BYTES);
        // Valid batches may end in zeros: they are looked for a little past the last
        // non-zero byte.
        let search_end = data_len.min(damage_end + WRITTEN_GAP_BYTES);
        let torn = damage_end > scan.end;
        // The head said there was more (a power loss took pages that had been published, or
        // the bytes since read as zeros): recorded too, even with nothing left to move.
        let hinted_end = hint.map_or(0, |h| h.next_offset).max(cut_sealed_end.unwrap_or(0));
        if torn || hinted_end > scan.next_offset {
            // The batch at `scan.end` itself is the damaged one (a valid CRC with a wrong offset
            // is damage to its header), so the search for valid data starts after it.
            let found = if torn {
                active.valid_batch_after(scan.end + 1, search_end, scan.next_offset)
            } else {
                None
            };
            let mut event = match found {
                None => LossEvent {
                    kind: LossKind::TornTail,
                    time_ms: now_ms(),
                    segment_base: base,
                    position: scan.end as u64,
                    bytes: (damage_end - scan.end) as u64,
                    first_offset: scan.next_offset,
                    end_offset: claimed_end(&active, scan.end, data_len, scan.next_offset),
                    file: String::new(),
                },
                Some(found) => {
                    let lost_in_restart =
                        matches!(since, Since::Restart { synced } if scan.next_offset >= synced);
                    if self.config.on_corruption == OnCorruption::Raise && !lost_in_restart {
                        let h = active.header_at(found, search_end).expect("a valid batch");
                        return Err(active.corrupt(
                            scan.end,
                            scan.next_offset,
                            &format!(
                                "damaged data followed by valid batches (offset {} at byte position \
                                 {found}): not truncated; open with on_corruption=\"quarantine\" or \
                                 run `tidelog repair` to move the damaged part and everything after \
                                 it into {QUARANTINE_DIR}/",
                                h.base_offset
                            ),
                        ));
                    }
                    let mut event =
                        self.quarantine(&active, scan.end, damage_end, scan.next_offset, found, search_end)?;
                    if lost_in_restart {
                        event.kind = LossKind::Unsynced;
                    }
                    event
                }
            };
            event.end_offset = event.end_offset.max(hinted_end);
            let durable =
                event.kind != LossKind::TornTail || self.config.fsync == crate::log::FsyncPolicy::Always;
            lost::record(&self.dir, &event, durable)?;
        }
        active.data.unpublish_after(guard, scan.end);
        active.index.unpublish_after(guard, kept * INDEX_ENTRY_BYTES);
        active.time_index.unpublish_after(guard, kept * TIME_INDEX_ENTRY_BYTES);
        for (i, entry) in scan.entries.iter().enumerate() {
            write_index_entry(guard, &active, kept + i, entry)?;
        }
        if torn {
            active.zero_range(scan.end, search_end)?;
        }
        self.drop_snapshots_after(scan.next_offset)?;
        let entries = kept + scan.entries.len();
        let last_index_pos = match entries {
            0 => 0,
            n => OffsetIndex::new(active.index.published()).get(n - 1).1 as u64,
        };
        let previous = guard.head();
        guard.publish(Head {
            generation: previous.generation.wrapping_add(1),
            active_base: base,
            committed_pos: scan.end as u64,
            next_offset: scan.next_offset,
            log_start: bases[0],
            index_entries: entries as u64,
            max_timestamp: scan.max_timestamp,
            segment_created_ms: hint.map_or_else(now_ms, |h| h.segment_created_ms),
            last_index_pos,
            // Whatever recovery found (a finished swap among it), no process reuses maps of
            // sealed segments listed before.
            compactions: previous.compactions.wrapping_add(1),
            // Without a trustworthy hint (power loss, a lost control file), assume a
            // non-empty log may hold transactions: only slower reads, never wrong ones. The
            // same when recovery keeps batches the hint never published: a writer killed
            // after writing a partition's first transactional batch but before publishing
            // left the flag unset, and readers would take that open transaction as
            // committed.
            transactional: hint.map_or(u64::from(scan.next_offset > bases[0]), |h| {
                h.transactional | u64::from(scan.next_offset > h.next_offset)
            }),
        });
        drop(active);
        self.refresh_listed(guard, &bases)?;
        Ok(scan.next_offset)
    }
}
