//! Offline inspection of segment files, for `tidelog dump` and `tidelog verify`: walks
//! every batch of a segment checking its CRC, structure and offset continuity, and checks
//! the segment's indexes against the batches. Unlike the log's read path it never stops at
//! the first problem unless it cannot tell where the next batch starts.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::format::{BatchHeader, BatchView, Compression, BATCH_HEADER_LEN};
use crate::index::{OffsetIndex, TimeIndex};
use crate::segment::{parse_file_name, BatchCursor, Check, FileKind, FileMap, OnDamage, SegmentPaths};
use crate::{Error, Result};

/// One batch as found in a segment file.
#[derive(Clone, Debug)]
pub struct BatchInfo {
    /// Byte position in the data file.
    pub position: u64,
    /// The decoded header.
    pub header: BatchHeader,
    /// Whether the stored CRC matches the bytes.
    pub crc_ok: bool,
}

/// Something wrong in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned.
    pub path: PathBuf,
    /// Byte position in it.
    pub position: u64,
    /// The offset involved (the batch's expected or stored base offset).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// The result of [`inspect_segment`].
#[derive(Clone, Debug)]
pub struct SegmentReport {
    /// The data file.
    pub path: PathBuf,
    /// Base offset from the file name.
    pub base_offset: u64,
    /// Batches in order, including damaged ones whose extent was readable.
    pub batches: Vec<BatchInfo>,
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// End of the last readable batch.
    pub valid_end: u64,
    /// Size of the data file.
    pub file_len: u64,
    /// Entries in the offset index file (0 if it is missing).
    pub index_entries: u64,
    /// The data problems all lie after the last intact batch and no CRC-valid batch that
    /// could continue the log follows them: in a partition's newest segment, the torn tail
    /// a crash in the middle of an append leaves (opening truncates it). False when there is
    /// no problem or intact data follows the damage.
    pub torn_tail: bool,
}

/// Inspects the segment whose data file is `data_path`.
///
/// # Errors
/// I/O errors opening or mapping the file, or a name that is not a segment data file.
pub fn inspect_segment(data_path: &Path) -> Result<SegmentReport> {
    let mut report = walk_segment(data_path)?;
    if let Some((first_bad, expected)) = first_damage(&report) {
        // A batch whose CRC matches is whole as written (a compressed one whose body does
        // not decompress): recovery keeps it, so it is no torn tail whatever follows.
        let whole = report.batches.iter().any(|b| b.position == first_bad as u64 && b.crc_ok);
        let map = map_file(data_path)?;
        report.torn_tail = !whole && !valid_batch_after(map.published(), first_bad + 1, expected);
    }
    Ok(report)
}

/// Position and expected offset of the first problem in the data file, if any.
fn first_damage(report: &SegmentReport) -> Option<(usize, u64)> {
    let position = report.problems.iter().filter(|p| p.path == report.path).map(|p| p.position).min()?;
    let expected = report
        .batches
        .iter()
        .take_while(|b| b.position < position)
        .last()
        .map_or(report.base_offset, |b| b.header.next_offset());
    Some((position as usize, expected))
}

/// Whether a CRC-valid batch that could continue a log expecting offset `expected` starts
/// anywhere at or after `from` (recovery's test for damage followed by valid batches).
fn valid_batch_after(bytes: &[u8], from: usize, expected: u64) -> bool {
    let mut at = from;
    while at + BATCH_HEADER_LEN <= bytes.len() {
        let Some(nonzero) = bytes[at..].iter().position(|&b| b != 0).map(|i| at + i) else {
            return false;
        };
        // A batch may start up to 11 bytes before its first non-zero byte (its length).
        for p in at.max(nonzero.saturating_sub(11))..=nonzero.min(bytes.len() - BATCH_HEADER_LEN) {
            let h = BatchHeader::read(&bytes[p..]).expect("length checked");
            let plausible = h.version == crate::format::FORMAT_VERSION
                && h.base_offset > expected
                && h.base_offset - expected < 1 << 32
                && h.total_len >= BATCH_HEADER_LEN
                && p + h.total_len <= bytes.len();
            if plausible && BatchView::parse(&bytes[p..p + h.total_len], true).is_ok() {
                return true;
            }
        }
        at = nonzero + 1;
    }
    false
}

fn walk_segment(data_path: &Path) -> Result<SegmentReport> {
    let name = data_path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some((base, FileKind::Data)) = parse_file_name(name) else {
        return Err(Error::InvalidConfig(format!(
            "{} is not a segment data file (NNN.log)",
            data_path.display()
        )));
    };
    let map = map_file(data_path)?;
    let bytes = map.published();
    let mut report = SegmentReport {
        path: data_path.to_owned(),
        base_offset: base,
        batches: Vec::new(),
        problems: Vec::new(),
        valid_end: 0,
        file_len: bytes.len() as u64,
        index_entries: 0,
        torn_tail: false,
    };
    let problem = |report: &mut SegmentReport, position: usize, offset: u64, reason: String| {
        report.problems.push(Problem {
            path: data_path.to_owned(),
            position: position as u64,
            offset,
            reason,
        });
    };
    // The zeroed, pre-allocated tail of an active segment is fine if it stays zero.
    let cursor = BatchCursor::new(bytes, data_path, 0, base, Check::Crc, OnDamage::Report).zero_tail(true);
    for found in cursor {
        let batch = match found {
            Ok(batch) => batch,
            Err(Error::Corrupt { position, offset, reason, .. }) => {
                problem(&mut report, position as usize, offset, reason);
                continue;
            }
            Err(other) => return Err(other),
        };
        let (pos, header) = (batch.position, batch.header);
        if !batch.crc_ok {
            problem(&mut report, pos, header.base_offset, "CRC32C mismatch".into());
        } else if let Err(reason) = check_body(&batch.view().expect("checked by the cursor")) {
            // The stored bytes are as written, but what they hold is unreadable: readers
            // report this batch as corrupt.
            problem(&mut report, pos, header.base_offset, format!("unreadable compressed batch: {reason}"));
        }
        if header.base_offset != batch.expected {
            problem(
                &mut report,
                pos,
                header.base_offset,
                format!("batch starts at offset {} but {} was expected", header.base_offset, batch.expected),
            );
        }
        report.batches.push(BatchInfo { position: pos as u64, header, crc_ok: batch.crc_ok });
        report.valid_end = (pos + header.total_len) as u64;
    }
    finish(report, data_path)
}

/// Checks what a compressed batch's body holds, as a reader would: it decompresses to its
/// stated length and the result is a sound batch of the header's records.
fn check_body(view: &BatchView<'_>) -> std::result::Result<(), &'static str> {
    if view.codec() == Compression::None {
        return Ok(());
    }
    let image = view.decompress()?;
    let plain = BatchView::parse(&image, false)?;
    if plain.header.record_count != view.header.record_count {
        return Err("decompressed batch does not match its header");
    }
    Ok(())
}

fn map_file(path: &Path) -> Result<FileMap> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len() as usize;
    FileMap::map_readonly(&file, len).map_err(|e| Error::io("mmap", path, e))
}

/// Checks the indexes against the batches found.
fn finish(mut report: SegmentReport, data_path: &Path) -> Result<SegmentReport> {
    let dir = data_path.parent().unwrap_or(Path::new("."));
    let paths = SegmentPaths::new(dir, report.base_offset);
    let (Ok(index_map), Ok(time_map)) = (map_file(&paths.index), map_file(&paths.time_index)) else {
        report.problems.push(Problem {
            path: paths.index.clone(),
            position: 0,
            offset: report.base_offset,
            reason: "index files missing (they are rebuilt on open)".into(),
        });
        return Ok(report);
    };
    let index = OffsetIndex::new(index_map.published());
    let time = TimeIndex::new(time_map.published());
    let mut running_max = i64::MIN;
    let mut b = 0;
    for i in 0..index.len() {
        let (rel, pos) = index.get(i);
        let zero_time = i < time.len() && {
            let t = time.get(i);
            (t.relative_offset, t.position, t.max_timestamp_before) == (0, 0, 0)
        };
        // Pre-allocated zero entries of an active segment; a real first entry has a
        // batch at position 0 and a time entry of i64::MIN.
        if (rel, pos) == (0, 0) && (i > 0 || (report.batches.is_empty() && zero_time)) {
            break;
        }
        report.index_entries += 1;
        while b < report.batches.len() && report.batches[b].position < u64::from(pos) {
            running_max = running_max.max(report.batches[b].header.max_timestamp);
            b += 1;
        }
        let batch = report.batches.get(b).filter(|x| x.position == u64::from(pos));
        let claimed = report.base_offset + u64::from(rel);
        if batch.is_none_or(|x| x.header.base_offset != claimed) {
            report.problems.push(Problem {
                path: paths.index.clone(),
                position: (i * crate::index::INDEX_ENTRY_BYTES) as u64,
                offset: claimed,
                reason: format!(
                    "index entry {i} points at position {pos}, where no batch with offset {claimed} starts"
                ),
            });
            continue;
        }
        let t = (i < time.len()).then(|| time.get(i));
        if t.is_none_or(|t| t.position != pos || t.max_timestamp_before != running_max) {
            report.problems.push(Problem {
                path: paths.time_index.clone(),
                position: (i * crate::index::TIME_INDEX_ENTRY_BYTES) as u64,
                offset: claimed,
                reason: format!("time index entry {i} disagrees with the batches"),
            });
        }
    }
    Ok(report)
}

/// The data files of a partition directory, in offset order.
///
/// # Errors
/// I/O errors listing the directory.
pub fn segment_files(partition_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(partition_dir)
        .map_err(|e| Error::io("list", partition_dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| match parse_file_name(&e.file_name().to_string_lossy()) {
            Some((base, FileKind::Data)) => Some((base, e.path())),
            _ => None,
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{BatchMeta, Record};
    use crate::{LogConfig, PartitionLog};

    #[test]
    fn clean_segment_has_no_problems_and_a_flip_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 1 << 16, max_message_bytes: 1024, ..LogConfig::default() };
        {
            let log = PartitionLog::open(dir.path(), "t", 0, config).unwrap();
            for i in 0..50u64 {
                let value = i.to_le_bytes().repeat(20);
                let r = Record {
                    timestamp: 1000 + i as i64,
                    key: None,
                    value: &value,
                    headers: &[],
                    tombstone: false,
                };
                log.append(&[r], BatchMeta::plain(0)).unwrap();
            }
        }
        let files = segment_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        let report = inspect_segment(&files[0]).unwrap();
        assert_eq!(report.batches.len(), 50);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert!(report.index_entries >= 1);
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let at = report.batches[10].position as usize + 100;
        bytes[at] ^= 0x40;
        std::fs::write(&files[0], &bytes).unwrap();
        let report = inspect_segment(&files[0]).unwrap();
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].offset, 10);
        assert!(report.problems[0].reason.contains("CRC"));
    }
}
