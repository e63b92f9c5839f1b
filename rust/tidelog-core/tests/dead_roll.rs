//! A roll trims the active segment's files before it creates the next segment. When the
//! roller dies in between, another process that has the partition open (and maps the
//! segment at its full, pre-allocated size) repairs the head. Its later appends must not
//! go through that mapping past the end of the now shorter file: bytes written there live
//! only in the page cache (they are never part of the file, the kernel may zero them, and
//! past the last page they raise SIGBUS). Lost this way, a transaction's commit marker left
//! its outputs invisible while the commit of its inputs' offsets stayed visible.

use std::path::{Path, PathBuf};

use tidelog_core::format::{BatchMeta, Record};
use tidelog_core::index::{INDEX_ENTRY_BYTES, TIME_INDEX_ENTRY_BYTES};
use tidelog_core::log::CONTROL_FILE;
use tidelog_core::segment::{file_name, FileKind};
use tidelog_core::shm::{ControlBlock, Opened};
use tidelog_core::{LogConfig, PartitionLog};

const PAGE: usize = 4096;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 16,
        segment_ms: None,
        max_message_bytes: 1024,
        // One index entry (the first batch): the trimmed index keeps exactly it.
        index_interval_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

/// (position, base offset, end position) of every batch in a data file, read with read(2)
/// rather than a mapping: what the file holds, not what some page cache shows.
fn batches(path: &Path) -> Vec<(usize, u64, usize)> {
    let bytes = std::fs::read(path).expect("read");
    let (mut pos, mut out) = (0usize, Vec::new());
    while pos + 64 <= bytes.len() {
        let offset = u64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8"));
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().expect("4")) as usize + 12;
        if len < 64 || pos + len > bytes.len() {
            break;
        }
        out.push((pos, offset, pos + len));
        pos += len;
    }
    out
}

/// Every batch of every segment file in `dir`, by base offset.
fn stored_offsets(dir: &Path) -> Vec<u64> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| batches(f)).map(|(_, offset, _)| offset).collect()
}

fn append(log: &PartitionLog, value: &[u8]) -> u64 {
    let r = Record { timestamp: 1_000, key: None, value, headers: &[], tombstone: false };
    log.append(&[r], BatchMeta::plain(0)).expect("append").base_offset
}

/// Takes the append lock from a thread that then exits holding it (a dead roller).
fn die_holding_the_lock(dir: &Path) {
    let path = dir.join(CONTROL_FILE);
    std::thread::spawn(move || {
        let block = match ControlBlock::open(&path).expect("open control") {
            Opened::Alone(b, _) | Opened::Shared(b) => b,
        };
        block.end_open();
        std::mem::forget(block.lock().expect("lock"));
        // Its file locks go as a dead process's would; the mutex stays owned by the thread.
        block.release();
        std::mem::forget(block);
    })
    .join()
    .expect("thread");
}

#[test]
fn appends_after_a_roll_that_died_after_trimming_land_in_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), "t", 0, config()).expect("open");
    let data = dir.path().join(file_name(0, FileKind::Data));
    // Leave room in the last page after the data: a write past the end of the file there
    // does not fault, it silently goes nowhere.
    let mut n = 0u64;
    let end = loop {
        append(&log, format!("message {n:05}").as_bytes());
        n += 1;
        let end = batches(&data).last().expect("batches").2;
        if end % PAGE != 0 && end % PAGE < PAGE - 512 {
            break end;
        }
    };
    // A roller (another handle) took the lock, trimmed the active segment's files to their
    // contents as a roll does first, and died before creating the next segment.
    die_holding_the_lock(dir.path());
    let trim = |kind: FileKind, len: usize| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(file_name(0, kind)))
            .expect("segment file");
        f.set_len(len as u64).expect("trim");
    };
    trim(FileKind::Data, end);
    trim(FileKind::Index, INDEX_ENTRY_BYTES);
    trim(FileKind::TimeIndex, TIME_INDEX_ENTRY_BYTES);

    // This handle, alive all along, repairs the head and appends on.
    let at = append(&log, b"after the dead roll");
    assert_eq!(at, n, "the next offset");
    let more = append(&log, b"and one more");
    assert_eq!(more, n + 1);
    let stored = stored_offsets(dir.path());
    assert!(
        stored.contains(&at) && stored.contains(&more),
        "offsets {at} and {more} were acknowledged but are in no segment file \
         (written past the end of the trimmed segment?): files hold {stored:?}"
    );

    // And a crash now (nothing trims or syncs) loses nothing acknowledged.
    std::mem::forget(log);
    let log = PartitionLog::open(dir.path(), "t", 0, config()).expect("reopen");
    assert_eq!(log.end_offset().expect("end"), n + 2);
    let read = log.read(at, 10, 1 << 20).expect("read");
    let values: Vec<Vec<u8>> =
        read.chunks.iter().flat_map(|c| c.records().map(|r| r.value.to_vec())).collect();
    assert_eq!(values, vec![b"after the dead roll".to_vec(), b"and one more".to_vec()]);
}
