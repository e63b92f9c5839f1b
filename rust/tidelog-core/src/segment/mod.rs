//! A segment: one data file of record batches plus its offset and time indexes, all named
//! by the segment's base offset (`{base:020}.log`, `.index`, `.timeindex`).
//!
//! The active segment's files are pre-allocated to their full capacity and mapped
//! read-write; a sealed segment's files are trimmed to their contents and mapped read-only.
//! A segment owns no notion of "committed": the log passes the published head in.

pub mod cursor;
pub mod mmap;
mod prefault;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{fallocate, FallocateFlags};

use crate::fs::preallocate;

use crate::format::{BatchView, BATCH_HEADER_LEN};
use crate::index::{IndexEntry, INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use crate::{Error, Result};
pub use cursor::{BatchCursor, Check, CursorBatch, CursorEnd, OnDamage, Pass};
#[cfg(test)]
pub(crate) use cursor::{CRC_CHECKS, HEADERS_PASSED};
pub use mmap::FileMap;
pub use prefault::populate_inline_on_this_thread;
pub(crate) use prefault::release as release_in_background;

/// The kinds of file a segment has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Record batches.
    Data,
    /// Sparse offset index.
    Index,
    /// Sparse time index.
    TimeIndex,
}

impl FileKind {
    fn extension(self) -> &'static str {
        match self {
            FileKind::Data => crate::paths::SEGMENT_DATA_EXTENSION,
            FileKind::Index => crate::paths::SEGMENT_INDEX_EXTENSION,
            FileKind::TimeIndex => crate::paths::SEGMENT_TIME_INDEX_EXTENSION,
        }
    }
}

/// Builds the name of a segment file: the one place names are made.
pub fn file_name(base: u64, kind: FileKind) -> String {
    format!("{base:020}.{}", kind.extension())
}

/// Parses a segment file name made by [`file_name`]; `None` for anything else.
pub fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (stem, ext) = name.split_once('.')?;
    let kind =
        [FileKind::Data, FileKind::Index, FileKind::TimeIndex].into_iter().find(|k| k.extension() == ext)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

/// Where a segment's files live.
#[derive(Clone, Debug)]
pub struct SegmentPaths {
    /// Data file.
    pub data: PathBuf,
    /// Offset index.
    pub index: PathBuf,
    /// Time index.
    pub time_index: PathBuf,
}

impl SegmentPaths {
    /// The paths of the segment with `base` in `dir`.
    pub fn new(dir: &Path, base: u64) -> Self {
        SegmentPaths {
            data: dir.join(file_name(base, FileKind::Data)),
            index: dir.join(file_name(base, FileKind::Index)),
            time_index: dir.join(file_name(base, FileKind::TimeIndex)),
        }
    }
}

/// One segment, mapped.
pub struct Segment {
    /// Offset of the first batch.
    pub base: u64,
    /// Size of the data file when it was opened, before an active segment's files were
    /// grown to capacity.
    pub initial_len: usize,
    /// Its files.
    pub paths: SegmentPaths,
    /// The batches. Shared so zero-copy reads can outlive the segment's place in the log.
    pub data: Arc<FileMap>,
    /// Offset index entries.
    pub index: FileMap,
    /// Time index entries.
    pub time_index: FileMap,
    /// Open files of the active segment, for syncing and trimming; `None` once sealed.
    files: Option<ActiveFiles>,
    /// Bytes of batches between two index entries of this (active) segment: fixed by the
    /// sizes its files were created with, so every process indexes it alike.
    index_interval: usize,
    max_timestamp: OnceLock<i64>,
    /// A sealed segment's indexes are checked entry by entry on first use; when they are
    /// damaged, rebuilt replacements live here.
    checked_indexes: OnceLock<Option<(FileMap, FileMap)>>,
}

/// The outcome of [`Segment::scan`].
#[derive(Debug)]
pub struct Scan {
    /// Index entries for the batches walked.
    pub entries: Vec<IndexEntry>,
    /// Position after the last valid batch.
    pub end: usize,
    /// Largest timestamp seen (or the `max_before` passed in).
    pub max_timestamp: i64,
    /// Offset after the last valid batch.
    pub next_offset: u64,
}

/// Bytes read at a time when looking for data past the valid batches.
const STREAM_CHUNK: usize = 64 << 10;

/// Index of the first non-zero byte. Whole zero blocks are skipped with an OR-fold, which
/// the compiler vectorises.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    let mut base = 0;
    for block in bytes.chunks(256) {
        if block.iter().fold(0u8, |a, &b| a | b) != 0 {
            return block.iter().position(|&b| b != 0).map(|i| base + i);
        }
        base += block.len();
    }
    None
}

/// Index of the last non-zero byte.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    let blocks = bytes.len().div_ceil(256);
    (0..blocks).rev().find_map(|k| {
        let block = &bytes[k * 256..((k + 1) * 256).min(bytes.len())];
        if block.iter().fold(0u8, |a, &b| a | b) == 0 {
            return None;
        }
        block.iter().rposition(|&b| b != 0).map(|i| k * 256 + i)
    })
}

/// Index cadence used when rebuilding a sealed segment's index (the writer's cadence is a
/// store setting; any cadence gives correct lookups).
const REBUILT_INDEX_INTERVAL: usize = 4096;

/// Index entries a segment of `capacity` bytes indexed every `interval` bytes is created
/// with: one at the start, at most one per interval, and one spare. The one formula every
/// creator of a segment uses; [`interval_for`] is its inverse.
pub fn index_slots_for(capacity: usize, interval: usize) -> usize {
    capacity / interval.max(1) + 2
}

/// The index interval of an active segment of `capacity` bytes with `slots` index entries:
/// the segment was created with [`index_slots_for`]`(capacity, interval)`, and indexing every
/// `ceil(capacity / (slots - 2))` bytes (at least the interval it was created with) never
/// needs more than `slots` entries. Derived from file sizes alone, so every process that
/// maps the segment agrees, whatever its own settings say.
pub fn interval_for(capacity: usize, slots: usize) -> usize {
    capacity.div_ceil(slots.saturating_sub(2).max(1)).max(1)
}

struct ActiveFiles {
    data: File,
    index: File,
    time_index: File,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("base", &self.base).field("active", &self.files.is_some()).finish()
    }
}

/// Zero bytes in a row that end a run of data in [`Segment::valid_batch_after`]: more than
/// the 11 a batch can start before its (never zero) length field.
const ZERO_STRETCH: usize = 16;

/// Most bytes [`Segment::valid_batch_after`] takes as one run.
const RUN_BYTES: usize = 1 << 20;

fn file_len(file: &File, path: &Path) -> Result<usize> {
    Ok(file.metadata().map_err(|e| Error::io("stat", path, e))?.len() as usize)
}

impl Segment {
    /// Opens (creating if needed) the active segment `base` in `dir`, with files grown to
    /// the given capacities and `published` bytes of data and `index_entries` entries
    /// already valid.
    ///
    /// # Errors
    /// I/O errors.
    pub fn open_active(
        dir: &Path,
        base: u64,
        capacity: usize,
        index_capacity: usize,
        published: usize,
        index_entries: usize,
    ) -> Result<Self> {
        let paths = SegmentPaths::new(dir, base);
        let data = crate::fs::open_rw(&paths.data, true)?;
        let index = crate::fs::open_rw(&paths.index, true)?;
        let time_index = crate::fs::open_rw(&paths.time_index, true)?;
        let initial_len = file_len(&data, &paths.data)?;
        // A segment that was sealed and then became active again (recovery after a crash
        // mid-roll) may be larger than the configured capacity: map all of it.
        let capacity = capacity.max(initial_len);
        preallocate(&data, &paths.data, capacity as u64)?;
        preallocate(&index, &paths.index, (index_capacity * INDEX_ENTRY_BYTES) as u64)?;
        preallocate(&time_index, &paths.time_index, (index_capacity * TIME_INDEX_ENTRY_BYTES) as u64)?;
        Self::map_active(
            paths,
            base,
            ActiveFiles { data, index, time_index },
            capacity,
            initial_len,
            published,
            index_entries,
        )
    }

    /// Opens the active segment `base` in `dir` with the geometry it was created with: its
    /// files' sizes, never a setting of this process (whoever created or recovered the
    /// segment sized its files before publishing it, and they never change while it is
    /// active), so every process maps and indexes it the same way.
    ///
    /// # Errors
    /// I/O errors; [`Error::Corrupt`] if the files are shorter than what is published.
    pub fn open_active_as_created(
        dir: &Path,
        base: u64,
        published: usize,
        index_entries: usize,
    ) -> Result<Self> {
        let paths = SegmentPaths::new(dir, base);
        let data = crate::fs::open_rw(&paths.data, false)?;
        let index = crate::fs::open_rw(&paths.index, false)?;
        let time_index = crate::fs::open_rw(&paths.time_index, false)?;
        let capacity = file_len(&data, &paths.data)?;
        let short = capacity < published
            || file_len(&index, &paths.index)? < index_entries * INDEX_ENTRY_BYTES
            || file_len(&time_index, &paths.time_index)? < index_entries * TIME_INDEX_ENTRY_BYTES;
        if short {
            return Err(Error::Corrupt {
                path: paths.data.clone(),
                position: capacity as u64,
                offset: base,
                reason: format!(
                    "the active segment's files are shorter than its published {published} bytes and \
                     {index_entries} index entries"
                ),
            });
        }
        Self::map_active(
            paths,
            base,
            ActiveFiles { data, index, time_index },
            capacity,
            capacity,
            published,
            index_entries,
        )
    }

    fn map_active(
        paths: SegmentPaths,
        base: u64,
        files: ActiveFiles,
        capacity: usize,
        initial_len: usize,
        published: usize,
        index_entries: usize,
    ) -> Result<Self> {
        let map = |f: &File, p: &Path, len: usize, readable: usize| {
            FileMap::map_writable(f, len, readable).map_err(|e| Error::io("mmap", p, e))
        };
        let index_len = file_len(&files.index, &paths.index)?;
        let time_len = file_len(&files.time_index, &paths.time_index)?;
        let slots = (index_len / INDEX_ENTRY_BYTES).min(time_len / TIME_INDEX_ENTRY_BYTES);
        let data = map(&files.data, &paths.data, capacity, published)?;
        let index = map(&files.index, &paths.index, index_len, index_entries * INDEX_ENTRY_BYTES)?;
        let time_index =
            map(&files.time_index, &paths.time_index, time_len, index_entries * TIME_INDEX_ENTRY_BYTES)?;
        // No read-ahead past what is published: the first fault on a page not in the page
        // cache otherwise reads around it (the device's `read_ahead_kb`, 8 MiB on the dev VM),
        // and in a pre-allocated file that means allocating and zeroing up to the whole
        // segment on the faulting thread: 1.3-2 ms of the first append (or commit) after
        // every roll, on top of the roll's own 0.6 ms (issue 19). The prefault thread
        // populates the pages ahead of the writer instead; what is published keeps the
        // default, for reading it back from disk.
        data.advise_random(published, capacity, true);
        index.advise_random(index_entries * INDEX_ENTRY_BYTES, index_len, true);
        time_index.advise_random(index_entries * TIME_INDEX_ENTRY_BYTES, time_len, true);
        Ok(Segment {
            base,
            initial_len,
            data: Arc::new(data),
            index,
            time_index,
            paths,
            files: Some(files),
            index_interval: interval_for(capacity, slots),
            max_timestamp: OnceLock::new(),
            checked_indexes: OnceLock::new(),
        })
    }

    /// Bytes of batches between two index entries of this segment (see [`interval_for`]).
    pub fn index_interval(&self) -> usize {
        self.index_interval
    }

    /// Index entries this active segment has room for.
    pub fn index_slots(&self) -> usize {
        (self.index.len() / INDEX_ENTRY_BYTES).min(self.time_index.len() / TIME_INDEX_ENTRY_BYTES)
    }

    /// Opens a sealed segment read-only. Its indexes are checked cheaply (size, last
    /// entry) and rebuilt from the data when missing or damaged.
    ///
    /// # Errors
    /// I/O errors; corruption found while rebuilding an index.
    pub fn open_sealed(dir: &Path, base: u64) -> Result<Self> {
        let paths = SegmentPaths::new(dir, base);
        let data_file = File::open(&paths.data).map_err(|e| Error::io("open", &paths.data, e))?;
        let data_len = file_len(&data_file, &paths.data)?;
        let data = Arc::new(
            FileMap::map_readonly(&data_file, data_len).map_err(|e| Error::io("mmap", &paths.data, e))?,
        );
        let mut segment = Segment {
            base,
            initial_len: data_len,
            index: FileMap::map_readonly(&data_file, 0).map_err(|e| Error::io("mmap", &paths.data, e))?,
            time_index: FileMap::map_readonly(&data_file, 0)
                .map_err(|e| Error::io("mmap", &paths.data, e))?,
            data,
            paths,
            files: None,
            index_interval: REBUILT_INDEX_INTERVAL,
            max_timestamp: OnceLock::new(),
            checked_indexes: OnceLock::new(),
        };
        if !segment.load_sealed_indexes()? {
            segment.rebuild_sealed_indexes()?;
        }
        Ok(segment)
    }

    /// Maps the sealed index files; false when they are missing or fail the cheap checks.
    fn load_sealed_indexes(&mut self) -> Result<bool> {
        let (Ok(index), Ok(time)) = (File::open(&self.paths.index), File::open(&self.paths.time_index))
        else {
            return Ok(false);
        };
        let (ilen, tlen) = (file_len(&index, &self.paths.index)?, file_len(&time, &self.paths.time_index)?);
        if ilen % INDEX_ENTRY_BYTES != 0
            || tlen % TIME_INDEX_ENTRY_BYTES != 0
            || ilen / INDEX_ENTRY_BYTES != tlen / TIME_INDEX_ENTRY_BYTES
        {
            return Ok(false);
        }
        self.index =
            FileMap::map_readonly(&index, ilen).map_err(|e| Error::io("mmap", &self.paths.index, e))?;
        self.time_index =
            FileMap::map_readonly(&time, tlen).map_err(|e| Error::io("mmap", &self.paths.time_index, e))?;
        // Entry-by-entry checks happen on first use (`lookup_indexes`).
        Ok(true)
    }

    fn rebuild_sealed_indexes(&mut self) -> Result<()> {
        let (index, time_index) = self.rebuilt_index_maps()?;
        self.index = index;
        self.time_index = time_index;
        Ok(())
    }

    /// Scans the data and writes fresh index files (atomically replacing the old ones).
    fn rebuilt_index_maps(&self) -> Result<(FileMap, FileMap)> {
        let entries = self.scan(0, self.data.readable(), REBUILT_INDEX_INTERVAL, i64::MIN, self.base).entries;
        let (mut o, mut t) = (Vec::new(), Vec::new());
        for e in &entries {
            o.extend_from_slice(&e.offset_bytes());
            t.extend_from_slice(&e.time_bytes());
        }
        let write = |path: &Path, bytes: &[u8]| -> Result<File> {
            let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
            crate::fs::write_file(&tmp, bytes)?;
            crate::fs::rename(&tmp, path)?;
            File::open(path).map_err(|e| Error::io("open", path, e))
        };
        let (fi, ft) = (write(&self.paths.index, &o)?, write(&self.paths.time_index, &t)?);
        Ok((
            FileMap::map_readonly(&fi, o.len()).map_err(|e| Error::io("mmap", &self.paths.index, e))?,
            FileMap::map_readonly(&ft, t.len()).map_err(|e| Error::io("mmap", &self.paths.time_index, e))?,
        ))
    }

    /// How many leading index entries form a valid chain: strictly increasing offsets and
    /// positions, time entries at the same positions with non-decreasing maxima, and each
    /// position holding a batch header (length plausible) with the offset the entry claims.
    /// Only headers are read, not whole batches.
    pub fn valid_index_prefix(
        &self,
        index: &FileMap,
        time_index: &FileMap,
        entries: usize,
        data_end: usize,
    ) -> usize {
        let offsets = crate::index::OffsetIndex::new(index.published());
        let times = crate::index::TimeIndex::new(time_index.published());
        let entries = entries.min(offsets.len()).min(times.len());
        let mut previous: Option<(u32, u32, i64)> = None;
        for i in 0..entries {
            let (rel, pos) = offsets.get(i);
            let t = times.get(i);
            let ordered = match previous {
                None => (rel, pos) == (0, 0),
                Some((r, p, m)) => rel > r && pos > p && t.max_timestamp_before >= m,
            };
            let header = self.header_at(pos as usize, data_end);
            if !ordered
                || t.position != pos
                || t.relative_offset != rel
                || header.is_none_or(|h| h.base_offset != self.base + u64::from(rel))
            {
                return i;
            }
            previous = Some((rel, pos, t.max_timestamp_before));
        }
        entries
    }

    /// The offset and time indexes to look things up in. A sealed segment's are checked
    /// entry by entry on first use and rebuilt from the data if damaged.
    pub fn lookup_indexes(&self) -> (&FileMap, &FileMap) {
        if self.is_active() {
            return (&self.index, &self.time_index);
        }
        let replaced = self.checked_indexes.get_or_init(|| {
            let entries = self.index.readable() / crate::index::INDEX_ENTRY_BYTES;
            let end = self.data.readable();
            if self.valid_index_prefix(&self.index, &self.time_index, entries, end) == entries {
                None
            } else {
                // Damaged: rebuild (a failure leaves the old maps, and reads fall back to scans).
                self.rebuilt_index_maps().ok()
            }
        });
        match replaced {
            Some((index, time_index)) => (index, time_index),
            None => (&self.index, &self.time_index),
        }
    }

    /// Walks the valid batches in `start..end` (where `start` is 0 or an index entry's
    /// position and the first batch must have base offset `first_offset`), producing the
    /// index entries the writer's cadence would have made. Stops at the first batch that is
    /// damaged or breaks offset continuity: that is where a torn tail begins.
    pub fn scan(
        &self,
        start: usize,
        end: usize,
        interval: usize,
        max_before: i64,
        first_offset: u64,
    ) -> Scan {
        let mut scan =
            Scan { entries: Vec::new(), end: start, max_timestamp: max_before, next_offset: first_offset };
        let mut last_entry: Option<usize> = None;
        let mut cursor = self.cursor(start, end, first_offset, Check::Crc, OnDamage::Stop);
        while let Some(Ok(batch)) = cursor.next() {
            let (h, position) = (batch.header, batch.position);
            if last_entry.is_none_or(|l| position - l >= interval) {
                scan.entries.push(IndexEntry {
                    relative_offset: (h.base_offset - self.base) as u32,
                    position: position as u32,
                    max_timestamp_before: scan.max_timestamp,
                });
                last_entry = Some(position);
            }
            scan.max_timestamp = scan.max_timestamp.max(h.max_timestamp);
        }
        scan.end = cursor.position();
        scan.next_offset = cursor.expected();
        scan
    }

    /// A walk of this segment's batches in `position..end` (see [`BatchCursor`]), starting
    /// with the batch of base offset `expected`. `end` past the published data walks nothing.
    #[inline]
    pub fn cursor(
        &self,
        position: usize,
        end: usize,
        expected: u64,
        check: Check,
        on_damage: OnDamage,
    ) -> BatchCursor<'_> {
        let bytes = self.data.read(0, end).unwrap_or_default();
        BatchCursor::new(bytes, &self.paths.data, position, expected, check, on_damage)
    }

    /// Streams the bytes of `from..end` to `f` in chunks (position, bytes) until it returns
    /// false. Runs of the active data file that hold no data (holes, unwritten
    /// pre-allocated blocks) are skipped with `SEEK_DATA`/`SEEK_HOLE`, and the rest is read
    /// with `pread` rather than through the map: pre-allocated zeros that a writer's
    /// prefault left in the page cache then cost a copy, not a page fault each.
    fn stream(&self, from: usize, end: usize, mut f: impl FnMut(usize, &[u8]) -> bool) {
        use rustix::fs::{seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let Some(files) = &self.files else {
            if let Some(bytes) = self.data.read(from.min(end), end) {
                for (i, chunk) in bytes.chunks(STREAM_CHUNK).enumerate() {
                    if !f(from + i * STREAM_CHUNK, chunk) {
                        return;
                    }
                }
            }
            return;
        };
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut at = from;
        while at < end {
            let mut stop = end;
            match seek(&files.data, SeekFrom::Data(at as u64)) {
                Ok(data) => {
                    at = at.max(data as usize);
                    if let Ok(hole) = seek(&files.data, SeekFrom::Hole(at as u64)) {
                        stop = stop.min((hole as usize).max(at + 1));
                    }
                }
                Err(rustix::io::Errno::NXIO) => return,
                Err(_) => {}
            }
            while at < stop {
                let n = (stop - at).min(buf.len());
                match files.data.read_at(&mut buf[..n], at as u64) {
                    Ok(0) | Err(_) => return,
                    Ok(read) => {
                        if !f(at, &buf[..read]) {
                            return;
                        }
                        at += read;
                    }
                }
            }
        }
    }

    /// The first position in `from..end` whose byte is not zero.
    pub fn next_nonzero(&self, from: usize, end: usize) -> Option<usize> {
        let mut found = None;
        self.stream(from, end, |at, chunk| {
            found = first_nonzero(chunk).map(|i| at + i);
            found.is_none()
        });
        found
    }

    /// Where the bytes written past `from` end: the end of the last non-zero byte, looking
    /// at least up to `at_least` and then until `gap` zero bytes in a row (or the end of
    /// what the file held when it was opened: a trimmed segment's pre-allocated growth was
    /// never written). Bounded so that opening does not read a whole pre-allocated segment
    /// of zeros; a batch holding more than `gap` zero bytes in a row whose header is
    /// damaged is the one case this can take for the end of the data.
    pub fn written_end(&self, from: usize, at_least: usize, end: usize, gap: usize) -> usize {
        let mut last = from;
        self.stream(from, end.min(self.initial_len), |at, chunk| {
            if let Some(i) = last_nonzero(chunk) {
                last = at + i + 1;
            }
            at + chunk.len() < at_least.max(last) + gap
        });
        last
    }

    /// The first CRC-valid batch that starts in `from..end` at or after `from` and could
    /// continue a log whose next offset is `next_offset` (its base offset is above it, by
    /// less than 2^32): what tells damage followed by valid data from a torn tail. Cheap
    /// checks (length, version, offset range) run before any CRC, and zero runs are
    /// skipped, so scanning a pre-allocated tail or random junk stays fast.
    pub fn valid_batch_after(&self, from: usize, end: usize, next_offset: u64) -> Option<usize> {
        let plausible = |pos: usize| {
            self.header_at(pos, end).is_some_and(|h| {
                h.version == crate::format::FORMAT_VERSION
                    && h.base_offset > next_offset
                    && h.base_offset - next_offset < 1 << 32
                    && h.next_offset() > h.base_offset
            }) && self.batch_at(pos, end, true).is_ok()
        };
        // The scan reads a few bytes past each run of data, into pages that were often never
        // written: without read-ahead a fault there costs one zeroed page, not a window of
        // them (1 ms of a 2 ms reopen after a kill).
        struct ReadAhead<'a>(&'a mmap::FileMap, usize, usize);
        impl Drop for ReadAhead<'_> {
            fn drop(&mut self) {
                // Back to the mapping's own advice: read-ahead only in what is published
                // (`map_active`; a sealed mapping is published whole).
                self.0.advise_random(self.1, self.2.min(self.0.readable()), false);
            }
        }
        self.data.advise_random(from, end, true);
        let _restore = ReadAhead(&self.data, from, end);
        let mut at = from;
        while at + BATCH_HEADER_LEN <= end {
            // A batch's length field (bytes 8..12) is never zero, so a batch can start at
            // most 11 bytes before the first non-zero byte.
            let nonzero = self.next_nonzero(at, end)?;
            let first = at.max(nonzero.saturating_sub(11));
            // The data from there runs to the next stretch of zeros long enough to hold no
            // length field (a batch cannot start inside it): a single zero byte, as every
            // 256th byte of random values is, does not end it. Each run is read once, from the
            // map; only the zeros between runs are skipped with `next_nonzero`.
            let run_end = {
                let bytes = self.data.read(nonzero, end.min(nonzero + RUN_BYTES)).unwrap_or_default();
                nonzero
                    + bytes
                        .windows(ZERO_STRETCH)
                        .position(|w| w.iter().all(|&b| b == 0))
                        .unwrap_or(bytes.len())
            };
            // The version byte first: it turns away all but one position in 256 of a torn
            // batch's bytes before a header is decoded (recovery after a kill scans them all).
            let window = self.data.read(first, end).unwrap_or_default();
            let version_at = |p: usize| window.get(p - first + 16) == Some(&crate::format::FORMAT_VERSION);
            if let Some(pos) = (first..=run_end.min(end.saturating_sub(BATCH_HEADER_LEN)))
                .find(|&p| version_at(p) && plausible(p))
            {
                return Some(pos);
            }
            at = run_end.max(at + 1);
        }
        None
    }

    /// Largest timestamp in a sealed segment, computed on first use from the last time
    /// index entry and the batch headers after it. If the headers cannot be walked to the
    /// end (damage, or a base offset that does not continue the previous batch), the answer
    /// is `i64::MAX`: "unknown", so time lookups still search the
    /// segment and time-based retention never deletes it early.
    pub fn max_timestamp(&self) -> i64 {
        *self.max_timestamp.get_or_init(|| {
            let (_, time_index) = self.lookup_indexes();
            let time = crate::index::TimeIndex::new(time_index.published());
            let (pos, expected, max) = match time.len() {
                0 => (0, self.base, i64::MIN),
                n => {
                    let e = time.get(n - 1);
                    (e.position as usize, self.base + u64::from(e.relative_offset), e.max_timestamp_before)
                }
            };
            let mut cursor = self
                .cursor(pos, self.data.readable(), expected, Check::Header, OnDamage::Stop)
                .zero_tail(true);
            let max = cursor.by_ref().map_while(Result::ok).fold(max, |m, b| m.max(b.header.max_timestamp));
            match cursor.end() {
                Some(CursorEnd::Damaged { .. }) => i64::MAX,
                _ => max,
            }
        })
    }

    /// The header of the batch at `pos` if its length is plausible (the CRC is not checked).
    pub fn header_at(&self, pos: usize, end: usize) -> Option<crate::format::BatchHeader> {
        self.data
            .read(pos, end)
            .and_then(crate::format::BatchHeader::read)
            .filter(|h| h.total_len >= BATCH_HEADER_LEN && pos + h.total_len <= end)
    }

    /// Parses the batch starting at `pos`, not reading past `end`.
    ///
    /// # Errors
    /// What is wrong with the bytes there.
    pub fn batch_at(
        &self,
        pos: usize,
        end: usize,
        verify_crc: bool,
    ) -> std::result::Result<BatchView<'_>, &'static str> {
        if pos + BATCH_HEADER_LEN > end {
            return Err("no complete batch header before the end of the data");
        }
        let bytes = self.data.read(pos, end).ok_or("position past the published data")?;
        BatchView::parse(bytes, verify_crc)
    }

    /// The corruption error for the batch at `pos`.
    pub fn corrupt(&self, pos: usize, offset: u64, reason: &str) -> Error {
        Error::Corrupt {
            path: self.paths.data.clone(),
            position: pos as u64,
            offset,
            reason: reason.to_owned(),
        }
    }

    /// True while this is the active segment of this process's view.
    pub fn is_active(&self) -> bool {
        self.files.is_some()
    }

    /// True if an active segment's files are now shorter than this handle maps them: a
    /// roll trimmed them and its roller died before creating the next segment. Writing
    /// through such a mapping past the end of a file reaches only the page cache (never the
    /// file; the kernel may zero it, and past the last page it faults), so the segment must
    /// be mapped again at its files' sizes. One `fstat` per file: only for a re-listing.
    ///
    /// # Errors
    /// I/O errors.
    pub fn mapped_past_its_files(&self) -> Result<bool> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        Ok(file_len(&files.data, &self.paths.data)? < self.data.len()
            || file_len(&files.index, &self.paths.index)? < self.index.len()
            || file_len(&files.time_index, &self.paths.time_index)? < self.time_index.len())
    }

    /// Flushes the data bytes `start..end` to disk (`msync(MS_SYNC)`).
    ///
    /// # Errors
    /// The sync failure.
    pub fn sync_data(&self, start: usize, end: usize) -> Result<()> {
        crate::fs::sync_mapping(&self.paths.data, || self.data.sync_range(start, end))
    }

    /// Flushes the active data file's written data to disk (`fdatasync`): for appends made
    /// with [`Self::write_at`]; a sealed segment was synced when it was trimmed.
    ///
    /// # Errors
    /// The sync failure.
    pub fn sync_written(&self) -> Result<()> {
        match &self.files {
            Some(files) => crate::fs::sync_data(&files.data, &self.paths.data),
            None => Ok(()),
        }
    }

    /// Writes `bytes` at `pos` of the active data file with `pwrite`. Like
    /// [`FileMap::write_region`], only for the append-lock holder and only past the
    /// published end (the guard is the proof); the bytes reach every mapping of the file
    /// through the shared page cache.
    ///
    /// # Errors
    /// I/O errors, or a write outside the unpublished part of the segment.
    pub fn write_at(&self, _guard: &crate::shm::WriteGuard<'_>, pos: usize, bytes: &[u8]) -> Result<()> {
        let Some(files) = &self.files else {
            return Err(Error::InvalidConfig(format!("segment {} is sealed", self.base)));
        };
        if pos < self.data.readable() || pos + bytes.len() > self.data.len() {
            return Err(Error::InvalidConfig(format!(
                "write of {} bytes at {pos} outside the free part of segment {}",
                bytes.len(),
                self.base
            )));
        }
        crate::fs::write_all_at(&files.data, &self.paths.data, bytes, pos as u64)
    }

    /// Trims the files to their contents so the segment can be reopened as sealed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn trim(&self, data_end: usize, index_entries: usize, sync: bool) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let steps: [(&File, &Path, usize); 3] = [
            (&files.data, &self.paths.data, data_end),
            (&files.index, &self.paths.index, index_entries * INDEX_ENTRY_BYTES),
            (&files.time_index, &self.paths.time_index, index_entries * TIME_INDEX_ENTRY_BYTES),
        ];
        for (file, path, len) in steps {
            crate::fs::set_len(file, path, len as u64)?;
            if sync {
                crate::fs::sync_all(file, path)?;
            }
        }
        Ok(())
    }

    /// Grows the active segment's files back to the lengths they are mapped at, after a
    /// [`Self::trim`] whose roll could not be completed.
    ///
    /// # Errors
    /// I/O errors (`ENOSPC`).
    pub fn restore_capacity(&self) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        preallocate(&files.data, &self.paths.data, self.data.len() as u64)?;
        preallocate(&files.index, &self.paths.index, self.index.len() as u64)?;
        preallocate(&files.time_index, &self.paths.time_index, self.time_index.len() as u64)
    }

    /// Zeroes `from..to` of the data file (clamped to its length), so bytes of a torn batch
    /// can never be mistaken for data later. Recovery passes the end of what was written
    /// (see [`Self::written_end`]), not the end of the pre-allocated file: zeroing megabytes
    /// of never-written space cost milliseconds per open after a kill.
    ///
    /// # Errors
    /// I/O errors.
    pub fn zero_range(&self, from: usize, to: usize) -> Result<()> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let to = to.min(file_len(&files.data, &self.paths.data)?);
        if from >= to {
            return Ok(());
        }
        // Zeroed as unwritten extents, still allocated: a later write through the map cannot
        // run out of space there (a punched hole could, as a SIGBUS).
        let zero = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
        if fallocate(&files.data, zero, from as u64, (to - from) as u64).is_ok() {
            return Ok(());
        }
        // A file system without it: write the zeros.
        let zeros = vec![0u8; (to - from).min(1 << 20)];
        let mut at = from;
        while at < to {
            let n = (to - at).min(zeros.len());
            crate::fs::write_all_at(&files.data, &self.paths.data, &zeros[..n], at as u64)?;
            at += n;
        }
        Ok(())
    }
}

pub use crate::fs::{sync_dir, write_atomically};

#[cfg(test)]
mod tests {
    use super::*;

    /// One of this process's mappings of a file, as `/proc/self/smaps` describes it.
    #[cfg(target_os = "linux")]
    #[derive(Debug)]
    struct Mapping {
        /// Offset in the file of the mapping's first byte.
        offset: u64,
        /// Resident kilobytes.
        rss_kb: u64,
        /// `VmFlags` (`rr`: random access, no read-ahead).
        flags: Vec<String>,
    }

    /// This process's mappings of `path`, in address order.
    #[cfg(target_os = "linux")]
    fn mappings_of(path: &Path) -> Vec<Mapping> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let wanted = path.to_str().unwrap();
        let (mut out, mut inside) = (Vec::new(), false);
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // A mapping's first line: its range, then no colon (an anonymous one has no path).
            if fields.len() >= 5 && !fields[0].ends_with(':') {
                inside = fields.get(5) == Some(&wanted);
                if inside {
                    let offset = u64::from_str_radix(fields[2], 16).unwrap();
                    out.push(Mapping { offset, rss_kb: 0, flags: Vec::new() });
                }
            } else if let Some(mapping) = out.last_mut().filter(|_| inside) {
                match fields.first().copied() {
                    Some("Rss:") => mapping.rss_kb = fields[1].parse().unwrap(),
                    Some("VmFlags:") => mapping.flags = fields[1..].iter().map(|f| f.to_string()).collect(),
                    _ => {}
                }
            }
        }
        out
    }

    /// The resident kilobytes of this process's mappings of `path`.
    #[cfg(target_os = "linux")]
    fn resident_kb(path: &Path) -> u64 {
        mappings_of(path).iter().map(|m| m.rss_kb).sum()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_active_segment_reads_ahead_only_in_what_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let random = |m: &Mapping| m.flags.iter().any(|f| f == "rr");
        let fresh = Segment::open_active(dir.path(), 0, 1 << 20, 64, 0, 0).unwrap();
        for path in [&fresh.paths.data, &fresh.paths.index, &fresh.paths.time_index] {
            let maps = mappings_of(path);
            assert!(!maps.is_empty() && maps.iter().all(random), "{path:?}: {maps:?}");
        }
        // A recovery scan of the tail leaves it as it found it.
        assert_eq!(fresh.valid_batch_after(0, fresh.data.len(), 0), None);
        let maps = mappings_of(&fresh.paths.data);
        assert!(maps.iter().all(random), "after a scan: {maps:?}");
        drop(fresh);
        // Reopened with 3 pages published: those keep the default read-ahead.
        let reopened = Segment::open_active(dir.path(), 0, 1 << 20, 64, 3 * 4096, 0).unwrap();
        let maps = mappings_of(&reopened.paths.data);
        assert_eq!(maps.len(), 2, "{maps:?}");
        assert_eq!((maps[0].offset, random(&maps[0])), (0, false));
        assert_eq!((maps[1].offset, random(&maps[1])), (3 * 4096, true));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pages_a_window_behind_a_reader_leave_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let len = 16 << 20;
        std::fs::write(&path, vec![1u8; len]).unwrap();
        let map = Arc::new(FileMap::map_readonly(&File::open(&path).unwrap(), len).unwrap());
        let bytes = map.read(0, len).unwrap();
        assert_eq!(bytes.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>(), len as u64 / 4096);
        assert!(resident_kb(&path) >= 16 << 10, "{} kB", resident_kb(&path));
        // At the end: all but the last window go (on the prefault thread, so a while later).
        map.release_behind(len);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while resident_kb(&path) > 4 << 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(resident_kb(&path), 4 << 10);
        // The data stays in the page cache: a read faults the same bytes back in.
        assert!(map.read(0, 4096).unwrap().iter().all(|&b| b == 1));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42, FileKind::Data), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.timeindex"), Some((42, FileKind::TimeIndex)));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.log.tmp"), None);
        assert_eq!(parse_file_name("control"), None);
    }
}
