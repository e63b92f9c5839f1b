//! The core's file I/O that can fail after data was accepted: writing, syncing, allocating
//! and truncating segment files, and the atomic replacement of small state files. Every such
//! call goes through this module so tests can make it fail the way a real disk does
//! (`ENOSPC`, `EIO`, a short write, a failed `fdatasync`) and check that nothing acknowledged
//! is lost and that the store works again once the fault is gone.
//!
//! Faults are injected process-wide with [`inject`] and removed with [`clear`]. When none is
//! armed, the only cost is one relaxed atomic load per call, next to a system call.
//!
//! What a failed sync means: after `fdatasync` or `msync` fails, the kernel may have dropped
//! the dirty pages it could not write and a later sync can report success without them
//! (PostgreSQL's "fsyncgate"). So a sync failure is never retried into a success here: the
//! caller marks what it was syncing as failed (see `PartitionLog`), and only a reopen,
//! whose recovery checks the data itself, makes it writable again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustix::fs::{fallocate, FallocateFlags};

use crate::{Error, Result};

/// The kinds of operation a fault can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Writing bytes to a file (`pwrite`, or a whole small file).
    Write,
    /// `fdatasync`, `fsync` or `msync` of a file or directory.
    Sync,
    /// Reserving blocks (`fallocate`) or growing a file.
    Allocate,
    /// Shrinking a file (`ftruncate`).
    Truncate,
    /// Renaming a file into place.
    Rename,
    /// Reading a whole small file (snapshots, state); segment data is read through maps,
    /// where an I/O error is a SIGBUS that no interface can turn into an error.
    Read,
}

impl Op {
    /// Parses the name used by the Python test hook.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown name.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "write" => Op::Write,
            "sync" => Op::Sync,
            "allocate" => Op::Allocate,
            "truncate" => Op::Truncate,
            "rename" => Op::Rename,
            "read" => Op::Read,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown fault operation {other:?}: use write, sync, allocate, truncate, rename or read"
                )))
            }
        })
    }
}

/// One injected fault: the matching calls fail with `errno`.
#[derive(Clone, Debug)]
pub struct Fault {
    /// The operation that fails.
    pub op: Op,
    /// Only calls on paths containing this text fail ("" matches every path).
    pub path_contains: String,
    /// The error number the call fails with (`libc::ENOSPC`, `libc::EIO`, ...).
    pub errno: i32,
    /// Matching calls to let through before failing.
    pub skip: u32,
    /// How many matching calls fail after that (`None`: every one until [`clear`]).
    pub times: Option<u32>,
    /// For [`Op::Write`]: write the first half of the bytes before failing (a short write).
    pub short: bool,
    /// The matching call panics instead of failing: a stand-in for a bug, so tests can
    /// check that a thread that dies is reported to its callers, never waited on forever.
    pub panic: bool,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static FAULTS: Mutex<Vec<Fault>> = Mutex::new(Vec::new());

/// Arms `fault` for this process (in addition to any already armed).
pub fn inject(fault: Fault) {
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    faults.push(fault);
    ARMED.store(true, Ordering::SeqCst);
}

/// Removes every injected fault.
pub fn clear() {
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    faults.clear();
    ARMED.store(false, Ordering::SeqCst);
}

/// The fault that hits this call, if any (consuming one of its `skip` or `times`).
fn hit(op: Op, path: &Path) -> Option<(i32, bool)> {
    if !ARMED.load(Ordering::Relaxed) {
        return None;
    }
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    let path = path.to_string_lossy();
    let fault = faults.iter_mut().find(|f| f.op == op && path.contains(f.path_contains.as_str()))?;
    if fault.skip > 0 {
        fault.skip -= 1;
        return None;
    }
    match &mut fault.times {
        Some(0) => return None,
        Some(n) => *n -= 1,
        None => {}
    }
    if fault.panic {
        let what = format!("injected panic in {op:?} of {path}");
        drop(faults);
        panic!("{what}");
    }
    Some((fault.errno, fault.short))
}

fn check(op: Op, path: &Path, what: &'static str) -> Result<()> {
    match hit(op, path) {
        Some((errno, _)) => Err(Error::io(what, path, std::io::Error::from_raw_os_error(errno))),
        None => Ok(()),
    }
}

/// Opens `path` for reading and writing, creating it (empty) if `create` and it is missing;
/// never truncates.
///
/// # Errors
/// The open failure.
pub fn open_rw(path: &Path, create: bool) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Writes all of `bytes` at `pos` of `file` (`pwrite`, retried on short writes).
///
/// # Errors
/// The write failure (`op` names it).
pub fn write_all_at(file: &File, path: &Path, bytes: &[u8], pos: u64) -> Result<()> {
    if let Some((errno, short)) = hit(Op::Write, path) {
        if short {
            let _ = file.write_all_at(&bytes[..bytes.len() / 2], pos);
        }
        return Err(Error::io("write", path, std::io::Error::from_raw_os_error(errno)));
    }
    file.write_all_at(bytes, pos).map_err(|e| Error::io("write", path, e))
}

/// `fdatasync`: the file's data (and the metadata needed to read it) is on disk.
///
/// # Errors
/// The sync failure. Never retry it into a success (module docs).
pub fn sync_data(file: &File, path: &Path) -> Result<()> {
    check(Op::Sync, path, "fdatasync")?;
    file.sync_data().map_err(|e| Error::io("fdatasync", path, e))
}

/// `fsync`: the file's data and metadata are on disk.
///
/// # Errors
/// The sync failure.
pub fn sync_all(file: &File, path: &Path) -> Result<()> {
    check(Op::Sync, path, "fsync")?;
    file.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// Runs `msync` (passed in as `sync`, which the mapping owner performs) unless a fault hits.
///
/// # Errors
/// The sync failure.
pub fn sync_mapping(path: &Path, sync: impl FnOnce() -> std::io::Result<()>) -> Result<()> {
    check(Op::Sync, path, "msync")?;
    sync().map_err(|e| Error::io("msync", path, e))
}

/// Fsyncs a directory so a created, renamed or deleted file name is durable.
///
/// # Errors
/// I/O errors.
pub fn sync_dir(dir: &Path) -> Result<()> {
    check(Op::Sync, dir, "fsync")?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync", dir, e))
}

/// Creates `dir` and its missing parents, syncing the parent of each directory it creates,
/// so a power loss cannot take the new names (and with them whatever acknowledged state is
/// later written and synced inside). Costs one `stat` when `dir` exists.
///
/// # Errors
/// I/O errors.
pub fn create_dir_all_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Made by a concurrent opener, which may not have synced it yet: syncing the parent
        // again costs only in this race.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(Error::io("create directory", dir, e)),
    }
    sync_dir(dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// Grows `file` to at least `len` bytes, allocating blocks so that writes through a map
/// cannot hit ENOSPC as a SIGBUS later (falls back to a sparse extension where the file
/// system cannot allocate).
///
/// # Errors
/// `ENOSPC` and other I/O errors.
pub fn preallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    let current = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    if current >= len {
        return Ok(());
    }
    check(Op::Allocate, path, "fallocate")?;
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOSPC) => {
            Err(Error::io("fallocate", path, std::io::Error::from_raw_os_error(libc::ENOSPC)))
        }
        Err(_) => file.set_len(len).map_err(|e| Error::io("resize", path, e)),
    }
}

/// Sets the file's length to `len` (shrinking it).
///
/// # Errors
/// I/O errors.
pub fn set_len(file: &File, path: &Path, len: u64) -> Result<()> {
    check(Op::Truncate, path, "truncate")?;
    file.set_len(len).map_err(|e| Error::io("truncate", path, e))
}

/// Reads the whole file at `path`.
///
/// # Errors
/// I/O errors.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    check(Op::Read, path, "read")?;
    std::fs::read(path).map_err(|e| Error::io("read", path, e))
}

/// Creates or replaces the file at `path` with `bytes`.
///
/// # Errors
/// I/O errors.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    check(Op::Write, path, "write")?;
    std::fs::write(path, bytes).map_err(|e| Error::io("write", path, e))
}

/// Renames `from` to `to`, replacing `to`.
///
/// # Errors
/// I/O errors.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    check(Op::Rename, to, "rename")?;
    std::fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
}

/// Replaces `path` with `bytes` atomically (a `.tmp` file renamed over it); with `durable`
/// the file and its directory are synced, so the new contents survive a power loss. On
/// failure the temp file is removed and `path` is unchanged.
///
/// # Errors
/// I/O errors.
pub fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(crate::paths::TMP_SUFFIX);
    let tmp = std::path::PathBuf::from(tmp);
    let written = (|| {
        write_file(&tmp, bytes)?;
        if durable {
            let f = File::open(&tmp).map_err(|e| Error::io("open", &tmp, e))?;
            sync_all(&f, &tmp)?;
        }
        rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if durable {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Serialises tests (in this crate and in the Python suite's process) that arm faults, which
/// are process-wide.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(op: Op, path: &str, skip: u32, times: Option<u32>) -> Fault {
        Fault { op, path_contains: path.into(), errno: libc::EIO, skip, times, short: false, panic: false }
    }

    #[test]
    fn faults_hit_matching_calls_after_skip_for_times() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let file = File::create(&path).unwrap();
        inject(fault(Op::Sync, "a.log", 1, Some(2)));
        assert!(sync_data(&file, &path).is_ok(), "skipped");
        for _ in 0..2 {
            let err = sync_data(&file, &path).unwrap_err();
            assert!(matches!(err, Error::Io { ref source, .. } if source.raw_os_error() == Some(libc::EIO)));
        }
        assert!(sync_data(&file, &path).is_ok(), "used up");
        assert!(sync_data(&file, &dir.path().join("other")).is_ok());
        clear();
    }

    #[test]
    fn a_short_write_writes_half_then_fails() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        inject(Fault { short: true, errno: libc::ENOSPC, ..fault(Op::Write, "b.log", 0, Some(1)) });
        assert!(write_all_at(&file, &path, b"abcdef", 0).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        clear();
    }

    #[test]
    fn creating_directories_durably_syncs_each_new_parent_and_nothing_when_present() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        let here = dir.path().to_str().unwrap();
        // Every sync here fails: creating three levels must try one (the first parent's).
        inject(fault(Op::Sync, here, 0, None));
        assert!(create_dir_all_durably(&deep).is_err());
        clear();
        create_dir_all_durably(&deep).unwrap();
        assert!(deep.is_dir());
        inject(fault(Op::Sync, here, 0, None));
        let existing = create_dir_all_durably(&deep);
        clear();
        existing.unwrap();
    }

    #[test]
    fn a_failed_atomic_write_leaves_the_old_file_and_no_temp() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        write_atomically(&path, b"old", true).unwrap();
        inject(fault(Op::Rename, "state", 0, Some(1)));
        assert!(write_atomically(&path, b"new", true).is_err());
        clear();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
