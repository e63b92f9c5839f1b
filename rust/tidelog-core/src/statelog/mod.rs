//! A state log: the durable state of something several processes change together (a work
//! queue's progress), kept as a snapshot plus a journal of the changes made after it.
//!
//! The core owns the bytes, the checks and the durability; what a snapshot body or a record
//! payload means is the owner's business (for work queues, `tidelog.queue_state`). Files, in
//! the log's directory, named after the log (see [`format`] for their bytes):
//!
//! - `<name>.lock`: empty; an exclusive `flock` of it (plus a mutex within the process)
//!   serialises the members' changes, see [`StateLog::lock`];
//! - `<name>.snapshot`: the whole state as of generation `G`, replaced atomically;
//! - `<name>.journal`: records appended after the snapshot of its generation.
//!
//! Invariants:
//!
//! 1. Records are appended only by a handle holding the lock, right after the last whole
//!    record (it read every record before: [`StateLog::lock`] catches up first).
//! 2. The state is the snapshot of generation `G` (or nothing, for `G` = 0) with the records
//!    of the journal of generation `G` applied in order. [`StateLog::replace`] writes the
//!    snapshot of `G + 1`, then an empty journal of `G + 1`, each atomically (temp file,
//!    fsync, rename, directory fsync): a journal of `G - 1` beside a snapshot of `G` was left
//!    by a crash between the two and holds nothing the snapshot lacks.
//! 3. Damage is never skipped. An incomplete or damaged last record with nothing valid after
//!    it is a torn tail (a write cut short by a crash): the lock holder truncates it and
//!    counts it. Damage followed by a valid record, a damaged header or snapshot, or a
//!    generation that does not fit is [`Error::CorruptState`], naming the file and position,
//!    and the files are left as they are.
//!
//! Durability of appended records follows the owner's [`FsyncPolicy`]: `Always` syncs before
//! [`StateLog::append`] returns; `Interval` leaves it to the store's background syncer (logs
//! opened with [`crate::Store::state_log`] are registered with it) and to
//! [`StateLog::sync`] / [`StateLog::close`]; `Never` leaves records in the page cache. A
//! failed fdatasync is never retried into a success: the handle refuses further use, and the
//! next handle reads what the disk holds.
//!
//! The first format of work-queue files (before this module) is converted on first use:
//! the journal is rewritten in this format (same generation, same records), then the
//! snapshot; a crash between the two leaves a first-format snapshot, which is still read.

pub mod format;

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rustix::fs::{flock, FlockOperation};

use self::format::{JournalHeader, Scan, Snapshot, Stop, JOURNAL_HEADER_LEN, MAX_PAYLOAD};
use crate::log::FsyncPolicy;
use crate::segment::write_atomically;
use crate::{Error, Result};

/// The paths of one state log's files.
#[derive(Clone, Debug)]
pub struct StatePaths {
    /// `<name>.lock`.
    pub lock: PathBuf,
    /// `<name>.snapshot`.
    pub snapshot: PathBuf,
    /// `<name>.journal`.
    pub journal: PathBuf,
}

impl StatePaths {
    /// The files of the log `name` in `dir`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a name that is not a plain file name.
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && !name.bytes().any(|b| b == b'/' || b == 0);
        if !ok {
            return Err(Error::InvalidConfig(format!(
                "invalid state log name {name:?}: use 1-200 bytes, no '/', not starting with '.'"
            )));
        }
        Ok(StatePaths {
            lock: dir.join(format!("{name}.lock")),
            snapshot: dir.join(format!("{name}.snapshot")),
            journal: dir.join(format!("{name}.journal")),
        })
    }
}

/// Where a caller's copy of the state starts from, as [`StateLog::lock`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// From the copy it has: apply the new records to it.
    Unchanged,
    /// From nothing (no snapshot yet), then the records.
    Empty,
    /// From this snapshot body, then the records.
    Snapshot(Vec<u8>),
}

/// What changed since the handle last read the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// Where to start.
    pub base: Base,
    /// Record payloads to apply, in order.
    pub records: Vec<Vec<u8>>,
}

/// A log's contents, read without changing anything (see [`read_contents`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contents {
    /// The generation of the snapshot (0 without one).
    pub generation: u64,
    /// The snapshot's body, if there is a snapshot.
    pub snapshot: Option<Vec<u8>>,
    /// The journal's record payloads, in order.
    pub records: Vec<Vec<u8>>,
    /// Bytes of a torn tail the next lock holder will truncate (0: none).
    pub torn_bytes: u64,
}

type FileId = Option<(u64, u64)>;

struct Inner {
    /// The journal of `generation`, once read (`None`: read everything again).
    journal: Option<Arc<File>>,
    /// Device and inode of the journal and the snapshot this handle read: another member's
    /// `replace` changes them.
    identity: (FileId, FileId),
    generation: u64,
    /// End of the last whole record.
    position: u64,
    /// Number of the next record.
    next_number: u64,
    /// A failed fdatasync: (errno, message). The handle refuses further use.
    failed: Option<(Option<i32>, String)>,
    closed: bool,
}

/// An open state log. Shareable between threads; see the module documentation.
pub struct StateLog {
    paths: StatePaths,
    policy: FsyncPolicy,
    lock_file: File,
    held: Mutex<bool>,
    released: Condvar,
    inner: Mutex<Inner>,
    /// Records appended since the last sync (policy `Interval`).
    dirty: AtomicBool,
    torn_tails: AtomicU64,
    bytes_truncated: AtomicU64,
    syncs: AtomicU64,
    bytes_appended: AtomicU64,
}

/// Holds a [`StateLog`]'s lock; dropping it unlocks.
pub struct StateLock<'a> {
    log: &'a StateLog,
}

impl Drop for StateLock<'_> {
    fn drop(&mut self) {
        let _ = self.log.release();
    }
}

fn identity(path: &Path) -> Result<FileId> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn read_file(file: &File, from: u64, path: &Path) -> Result<Vec<u8>> {
    let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let mut buf = vec![0; len.saturating_sub(from) as usize];
    file.read_exact_at(&mut buf, from).map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Error {
    Error::CorruptState { path: path.to_owned(), position, reason: reason.into() }
}

/// What the files hold, decoded and checked (nothing changed yet).
struct View<'a> {
    snapshot: Option<Snapshot<'a>>,
    journal: JournalView<'a>,
}

enum JournalView<'a> {
    /// No journal file.
    Missing,
    /// A journal of the generation before the snapshot's (left by a crash in `replace`).
    Stale,
    /// The journal of the snapshot's generation.
    Records {
        header: JournalHeader,
        payloads: Vec<&'a [u8]>,
        /// End of the last whole record, in the file.
        end: u64,
        /// Bytes after `end` (a torn tail).
        torn: u64,
    },
}

/// Turns a scan that stopped at damage into the error, and a torn tail into its length.
fn settle(scan: &Scan, bytes_len: usize, start: u64, path: &Path) -> Result<u64> {
    match &scan.stop {
        None => Ok(0),
        Some(Stop::Torn { .. }) => Ok((bytes_len - scan.end) as u64),
        Some(Stop::Damaged { reason, next_valid }) => Err(corrupt(
            path,
            start + scan.end as u64,
            format!(
                "damaged record ({reason}) followed by a valid record at byte position {}: \
                 not a torn tail, so nothing was discarded",
                start + *next_valid as u64
            ),
        )),
    }
}

fn examine<'a>(
    paths: &StatePaths,
    snapshot: Option<&'a [u8]>,
    journal: Option<&'a [u8]>,
) -> Result<View<'a>> {
    let snapshot = snapshot
        .map(|b| {
            format::decode_snapshot(b).map_err(|r| corrupt(&paths.snapshot, 0, format!("snapshot: {r}")))
        })
        .transpose()?;
    let generation = snapshot.as_ref().map_or(0, |s| s.generation);
    let Some(bytes) = journal else {
        return Ok(View { snapshot, journal: JournalView::Missing });
    };
    let path = &paths.journal;
    let header = format::decode_journal_header(bytes).map_err(|r| corrupt(path, 0, r))?;
    let jgen = header.generation();
    if jgen != generation {
        if jgen.checked_add(1) == Some(generation) {
            return Ok(View { snapshot, journal: JournalView::Stale });
        }
        let relation = if jgen > generation { "newer" } else { "older" };
        return Err(corrupt(
            path,
            8,
            format!("journal generation {jgen} is {relation} than its snapshot's ({generation})"),
        ));
    }
    let start = header.records_start();
    let body = &bytes[start..];
    let scan = match header {
        JournalHeader::Current(_) => format::scan(body, 0),
        JournalHeader::Legacy(_) => format::scan_legacy(body),
    };
    let torn = settle(&scan, body.len(), start as u64, path)?;
    let payloads = scan.records.iter().map(|r| &body[r.clone()]).collect();
    let end = (start + scan.end) as u64;
    Ok(View { snapshot, journal: JournalView::Records { header, payloads, end, torn } })
}

/// Reads a log's contents without changing its files (its lock is taken shared meanwhile,
/// if the lock file exists). A torn tail is left alone and reported in
/// [`Contents::torn_bytes`]. `None` if the log has neither snapshot nor journal.
///
/// # Errors
/// [`Error::CorruptState`] for damage (see the module's invariant 3); I/O errors.
pub fn read_contents(dir: &Path, name: &str) -> Result<Option<Contents>> {
    let paths = StatePaths::new(dir, name)?;
    let lock = match File::open(&paths.lock) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("open", &paths.lock, e)),
    };
    if let Some(f) = &lock {
        flock(f, FlockOperation::LockShared).map_err(|e| Error::io("flock", &paths.lock, e.into()))?;
    }
    let snapshot = read_optional(&paths.snapshot)?;
    let journal = read_optional(&paths.journal)?;
    if snapshot.is_none() && journal.is_none() {
        return Ok(None);
    }
    let view = examine(&paths, snapshot.as_deref(), journal.as_deref())?;
    let (records, torn_bytes) = match view.journal {
        JournalView::Records { payloads, torn, .. } => (payloads.iter().map(|p| p.to_vec()).collect(), torn),
        JournalView::Missing | JournalView::Stale => (Vec::new(), 0),
    };
    Ok(Some(Contents {
        generation: view.snapshot.as_ref().map_or(0, |s| s.generation),
        snapshot: view.snapshot.map(|s| s.body.to_vec()),
        records,
        torn_bytes,
    }))
}

impl StateLog {
    /// Opens (creating the directory and the lock file if needed) the log `name` in `dir`.
    /// Nothing is read until [`Self::lock`].
    ///
    /// For `FsyncPolicy::Interval` nothing here syncs in the background: open the log with
    /// [`crate::Store::state_log`] for that.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad name; I/O errors.
    pub fn open(dir: &Path, name: &str, policy: FsyncPolicy) -> Result<Self> {
        let paths = StatePaths::new(dir, name)?;
        // Durably: the journal's own directory sync does not cover the names above it
        // (`groups/<topic>/` in a store that had no groups yet).
        crate::fs::create_dir_all_durably(dir)?;
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&paths.lock)
            .map_err(|e| Error::io("open", &paths.lock, e))?;
        Ok(StateLog {
            paths,
            policy,
            lock_file,
            held: Mutex::new(false),
            released: Condvar::new(),
            inner: Mutex::new(Inner {
                journal: None,
                identity: (None, None),
                generation: 0,
                position: 0,
                next_number: 0,
                failed: None,
                closed: false,
            }),
            dirty: AtomicBool::new(false),
            torn_tails: AtomicU64::new(0),
            bytes_truncated: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            bytes_appended: AtomicU64::new(0),
        })
    }

    /// The log's files.
    pub fn paths(&self) -> &StatePaths {
        &self.paths
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the log's lock (waiting for other threads of this process and for other
    /// processes) and reads what changed since this handle last read it. Every change made
    /// while holding the lock starts from this, so the members' copies of the state agree.
    ///
    /// # Errors
    /// [`Error::CorruptState`] (damage: the files are left as they are), [`Error::Closed`],
    /// an earlier failed sync, I/O errors. The lock is not held after an error.
    pub fn lock(&self) -> Result<Changes> {
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            while *held {
                held = self.released.wait(held).unwrap_or_else(PoisonError::into_inner);
            }
            *held = true;
        }
        let result = flock(&self.lock_file, FlockOperation::LockExclusive)
            .map_err(|e| Error::io("flock", &self.paths.lock, e.into()))
            .and_then(|()| self.catch_up(&mut self.inner()));
        if result.is_err() {
            let _ = self.release();
        }
        result
    }

    /// [`Self::lock`], returning a guard that unlocks when dropped.
    ///
    /// # Errors
    /// As [`Self::lock`].
    pub fn locked(&self) -> Result<(StateLock<'_>, Changes)> {
        let changes = self.lock()?;
        Ok((StateLock { log: self }, changes))
    }

    /// Gives the lock back.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if it is not held; I/O errors.
    pub fn unlock(&self) -> Result<()> {
        if !*self.held.lock().unwrap_or_else(PoisonError::into_inner) {
            return Err(self.not_locked());
        }
        self.release()
    }

    fn release(&self) -> Result<()> {
        let result = flock(&self.lock_file, FlockOperation::Unlock)
            .map_err(|e| Error::io("flock", &self.paths.lock, e.into()));
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.released.notify_one();
        result
    }

    fn not_locked(&self) -> Error {
        Error::InvalidConfig(format!("state log {} is not locked", self.paths.journal.display()))
    }

    fn check_usable(&self, inner: &Inner) -> Result<()> {
        if inner.closed {
            return Err(Error::Closed);
        }
        match &inner.failed {
            None => Ok(()),
            Some((errno, message)) => {
                let source = match errno {
                    Some(code) => std::io::Error::from_raw_os_error(*code),
                    None => std::io::Error::other(message.clone()),
                };
                Err(Error::io("an earlier fdatasync failed; reopen to continue", &self.paths.journal, source))
            }
        }
    }

    fn catch_up(&self, inner: &mut Inner) -> Result<Changes> {
        self.check_usable(inner)?;
        if let Some(file) = inner.journal.clone() {
            let now = (identity(&self.paths.journal)?, identity(&self.paths.snapshot)?);
            if now == inner.identity {
                let records = self.read_new(inner, &file)?;
                return Ok(Changes { base: Base::Unchanged, records });
            }
        }
        self.reload(inner)
    }

    /// The records appended (by other members) since this handle's position.
    fn read_new(&self, inner: &mut Inner, file: &File) -> Result<Vec<Vec<u8>>> {
        let path = &self.paths.journal;
        let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
        if len == inner.position {
            return Ok(Vec::new());
        }
        if len < inner.position {
            return Err(corrupt(
                path,
                len,
                format!("the journal shrank below records already read (to {len} from {})", inner.position),
            ));
        }
        let bytes = read_file(file, inner.position, path)?;
        let scan = format::scan(&bytes, inner.next_number);
        let torn = settle(&scan, bytes.len(), inner.position, path)?;
        let records: Vec<Vec<u8>> = scan.records.iter().map(|r| bytes[r.clone()].to_vec()).collect();
        inner.position += scan.end as u64;
        inner.next_number += records.len() as u64;
        if torn > 0 {
            self.truncate_torn(file, inner.position, torn)?;
        }
        Ok(records)
    }

    /// Cuts off a torn tail (the lock is held: nobody is writing, so a crash left it).
    fn truncate_torn(&self, file: &File, at: u64, bytes: u64) -> Result<()> {
        let path = &self.paths.journal;
        file.set_len(at).map_err(|e| Error::io("truncate", path, e))?;
        if self.policy != FsyncPolicy::Never {
            file.sync_data().map_err(|e| Error::io("fdatasync", path, e))?;
        }
        self.torn_tails.fetch_add(1, Ordering::Relaxed);
        self.bytes_truncated.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn open_journal(&self) -> Result<File> {
        File::options()
            .read(true)
            .write(true)
            .open(&self.paths.journal)
            .map_err(|e| Error::io("open", &self.paths.journal, e))
    }

    fn write_empty_journal(&self, generation: u64) -> Result<()> {
        write_atomically(&self.paths.journal, &format::encode_journal_header(generation), true)
    }

    /// Reads everything again: the snapshot and the journal of its generation, converting
    /// the first format and replacing a stale or missing journal.
    fn reload(&self, inner: &mut Inner) -> Result<Changes> {
        inner.journal = None;
        let snapshot_bytes = read_optional(&self.paths.snapshot)?;
        let (file, bytes) = match self.open_journal() {
            Ok(file) => {
                let bytes = read_file(&file, 0, &self.paths.journal)?;
                (Some(file), Some(bytes))
            }
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => (None, None),
            Err(e) => return Err(e),
        };
        let view = examine(&self.paths, snapshot_bytes.as_deref(), bytes.as_deref())?;
        let generation = view.snapshot.as_ref().map_or(0, |s| s.generation);
        let mut records: Vec<Vec<u8>> = Vec::new();
        let (file, position) = match (view.journal, file) {
            (JournalView::Records { header: JournalHeader::Current(_), payloads, end, torn }, Some(file)) => {
                records = payloads.iter().map(|p| p.to_vec()).collect();
                if torn > 0 {
                    self.truncate_torn(&file, end, torn)?;
                }
                (file, end)
            }
            (JournalView::Records { header: JournalHeader::Legacy(_), payloads, torn, .. }, _) => {
                // Converted once: the same records in this format, replacing the file.
                let mut out = format::encode_journal_header(generation).to_vec();
                for (number, payload) in payloads.iter().enumerate() {
                    out.extend(format::encode_frame(number as u64, payload));
                }
                write_atomically(&self.paths.journal, &out, true)?;
                if torn > 0 {
                    self.torn_tails.fetch_add(1, Ordering::Relaxed);
                    self.bytes_truncated.fetch_add(torn, Ordering::Relaxed);
                }
                records = payloads.iter().map(|p| p.to_vec()).collect();
                (self.open_journal()?, out.len() as u64)
            }
            (JournalView::Missing | JournalView::Stale, _) | (JournalView::Records { .. }, None) => {
                self.write_empty_journal(generation)?;
                (self.open_journal()?, JOURNAL_HEADER_LEN as u64)
            }
        };
        let base = match &view.snapshot {
            None => Base::Empty,
            Some(s) => {
                if s.legacy {
                    // After the journal: a crash between the two leaves a readable state.
                    write_atomically(
                        &self.paths.snapshot,
                        &format::encode_snapshot(generation, s.body),
                        true,
                    )?;
                }
                Base::Snapshot(s.body.to_vec())
            }
        };
        let meta = file.metadata().map_err(|e| Error::io("stat", &self.paths.journal, e))?;
        inner.identity = (Some((meta.dev(), meta.ino())), identity(&self.paths.snapshot)?);
        inner.generation = generation;
        inner.position = position;
        inner.next_number = records.len() as u64;
        inner.journal = Some(Arc::new(file));
        Ok(Changes { base, records })
    }

    pub(crate) fn check_held(&self) -> Result<()> {
        if *self.held.lock().unwrap_or_else(PoisonError::into_inner) {
            Ok(())
        } else {
            Err(self.not_locked())
        }
    }

    /// Appends one record (call with the lock held). Returns the journal's length after
    /// it, once the record is as durable as the policy says.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] for a payload of 4 GiB or more; [`Error::InvalidConfig`]
    /// without the lock; I/O errors (a failed fdatasync also makes the handle refuse further
    /// use).
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::MessageTooLarge {
                size: payload.len() as u64,
                limit: MAX_PAYLOAD as u64,
                what: "state log record",
            });
        }
        self.check_held()?;
        let mut inner = self.inner();
        self.check_usable(&inner)?;
        let Some(file) = inner.journal.clone() else {
            return Err(self.not_locked());
        };
        let path = &self.paths.journal;
        let frame = format::encode_frame(inner.next_number, payload);
        if let Err(e) = file.write_all_at(&frame, inner.position) {
            // A partial record must not stay where the next record would follow it.
            let _ = file.set_len(inner.position);
            return Err(Error::io("write", path, e));
        }
        inner.position += frame.len() as u64;
        inner.next_number += 1;
        self.bytes_appended.fetch_add(frame.len() as u64, Ordering::Relaxed);
        match self.policy {
            FsyncPolicy::Always => self.sync_file(&mut inner, &file)?,
            FsyncPolicy::Interval(_) => self.dirty.store(true, Ordering::Release),
            FsyncPolicy::Never => {}
        }
        Ok(inner.position)
    }

    fn sync_file(&self, inner: &mut Inner, file: &File) -> Result<()> {
        match file.sync_data() {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                inner.failed = Some((e.raw_os_error(), e.to_string()));
                Err(Error::io("fdatasync", &self.paths.journal, e))
            }
        }
    }

    /// Compaction (call with the lock held): writes `snapshot` as the whole state, of the
    /// next generation, then starts an empty journal of that generation.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without the lock; I/O errors (the next [`Self::lock`] then
    /// reads the files as they are).
    pub fn replace(&self, snapshot: &[u8]) -> Result<()> {
        self.check_held()?;
        let mut inner = self.inner();
        self.check_usable(&inner)?;
        if inner.journal.is_none() {
            return Err(self.not_locked());
        }
        let generation = inner
            .generation
            .checked_add(1)
            .ok_or_else(|| corrupt(&self.paths.snapshot, 8, "the generation cannot grow any more"))?;
        // Until the new journal is in place this handle must read the files again.
        inner.journal = None;
        write_atomically(&self.paths.snapshot, &format::encode_snapshot(generation, snapshot), true)?;
        self.write_empty_journal(generation)?;
        let file = self.open_journal()?;
        let meta = file.metadata().map_err(|e| Error::io("stat", &self.paths.journal, e))?;
        inner.identity = (Some((meta.dev(), meta.ino())), identity(&self.paths.snapshot)?);
        inner.generation = generation;
        inner.position = JOURNAL_HEADER_LEN as u64;
        inner.next_number = 0;
        inner.journal = Some(Arc::new(file));
        // Everything appended before is in the (synced) snapshot.
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }

    /// Gives a log that holds nothing yet (no snapshot, no record) its first `records`, all
    /// at once: the journal holding them replaces the empty one atomically and durably
    /// (whatever the policy), so a crash leaves the log empty or holding all of them. Takes
    /// the lock meanwhile. Returns `false`, writing nothing, if the log holds anything.
    ///
    /// For one-time conversions of state kept elsewhere: `false` means it was done before.
    ///
    /// # Errors
    /// As [`Self::lock`]; [`Error::MessageTooLarge`] for a record of 4 GiB or more; I/O
    /// errors (the log is then left empty).
    pub fn seed(&self, records: &[Vec<u8>]) -> Result<bool> {
        if let Some(r) = records.iter().find(|r| r.len() > MAX_PAYLOAD) {
            return Err(Error::MessageTooLarge {
                size: r.len() as u64,
                limit: MAX_PAYLOAD as u64,
                what: "state log record",
            });
        }
        let (_lock, changes) = self.locked()?;
        if changes.base != Base::Empty || !changes.records.is_empty() {
            return Ok(false);
        }
        let mut inner = self.inner();
        let mut out = format::encode_journal_header(inner.generation).to_vec();
        for (number, payload) in records.iter().enumerate() {
            out.extend(format::encode_frame(number as u64, payload));
        }
        // Whatever happens next, this handle reads the files again.
        inner.journal = None;
        write_atomically(&self.paths.journal, &out, true)?;
        Ok(true)
    }

    /// Makes every appended record durable now, if the policy left any in the page cache
    /// (`Interval`); the store's background syncer calls this.
    ///
    /// # Errors
    /// The fdatasync's failure (the handle then refuses further use), or an earlier one.
    pub fn sync(&self) -> Result<()> {
        let mut inner = self.inner();
        self.check_usable(&inner).or_else(|e| if inner.closed { Ok(()) } else { Err(e) })?;
        let Some(file) = inner.journal.clone() else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.sync_file(&mut inner, &file)
    }

    /// Syncs what the policy deferred and closes the journal; later calls raise
    /// [`Error::Closed`]. Closing twice is harmless.
    ///
    /// # Errors
    /// A failed final sync.
    pub fn close(&self) -> Result<()> {
        let result = if self.inner().closed { Ok(()) } else { self.sync() };
        let mut inner = self.inner();
        inner.closed = true;
        inner.journal = None;
        result
    }

    /// Forgets what this handle read: the next [`Self::lock`] returns the whole state again
    /// (for an owner that could not apply what it was given).
    pub fn invalidate(&self) {
        self.inner().journal = None;
    }

    /// The generation of the snapshot the journal follows.
    pub fn generation(&self) -> u64 {
        self.inner().generation
    }

    /// Bytes in the journal (header and records) as of this handle's last read or append.
    pub fn journal_bytes(&self) -> u64 {
        self.inner().position
    }

    /// Bytes of records this handle appended.
    pub fn bytes_appended(&self) -> u64 {
        self.bytes_appended.load(Ordering::Relaxed)
    }

    /// Torn tails this handle truncated (or dropped while converting the first format).
    pub fn torn_tails(&self) -> u64 {
        self.torn_tails.load(Ordering::Relaxed)
    }

    /// Bytes those torn tails held.
    pub fn bytes_truncated(&self) -> u64 {
        self.bytes_truncated.load(Ordering::Relaxed)
    }

    /// Successful fdatasyncs of the journal by this handle.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.inner().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> StateLog {
        StateLog::open(dir, "q", FsyncPolicy::Never).unwrap()
    }

    fn append_all(log: &StateLog, records: &[&[u8]]) {
        let (_guard, _) = log.locked().unwrap();
        for r in records {
            log.append(r).unwrap();
        }
    }

    fn everything(log: &StateLog) -> (Base, Vec<Vec<u8>>) {
        log.invalidate();
        let (_guard, changes) = log.locked().unwrap();
        (changes.base, changes.records)
    }

    #[test]
    fn members_see_each_others_records_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path()), open(dir.path()));
        assert_eq!(a.lock().unwrap(), Changes { base: Base::Empty, records: vec![] });
        a.append(b"one").unwrap();
        a.unlock().unwrap();
        assert_eq!(b.lock().unwrap().records, vec![b"one".to_vec()]);
        b.append(b"two").unwrap();
        b.replace(b"state").unwrap();
        b.append(b"three").unwrap();
        b.unlock().unwrap();
        let changes = a.lock().unwrap();
        assert_eq!(changes.base, Base::Snapshot(b"state".to_vec()));
        assert_eq!(changes.records, vec![b"three".to_vec()]);
        assert_eq!(a.generation(), 1);
        a.unlock().unwrap();
        assert!(a.unlock().is_err(), "not locked");
        assert!(a.append(b"x").is_err(), "appending needs the lock");
    }

    #[test]
    fn a_torn_tail_is_truncated_and_counted_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        append_all(&log, &[b"a", b"b", b"c"]);
        let path = log.paths().journal.clone();
        let good = std::fs::read(&path).unwrap();
        let mut torn = good.clone();
        torn.extend([0; 7]);
        std::fs::write(&path, &torn).unwrap();
        let log = open(dir.path());
        assert_eq!(everything(&log).1.len(), 3);
        assert_eq!((log.torn_tails(), log.bytes_truncated()), (1, 7));
        assert_eq!(std::fs::read(&path).unwrap(), good);

        let mut damaged = good.clone();
        damaged[JOURNAL_HEADER_LEN + 3] ^= 0x10; // the first record's magic
        std::fs::write(&path, &damaged).unwrap();
        let log = open(dir.path());
        let err = log.lock().unwrap_err();
        assert!(matches!(&err, Error::CorruptState { position: 24, .. }), "{err}");
        assert!(err.to_string().contains("q.journal"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "left as it was");
        // The lock was given back: another handle is not blocked.
        assert!(open(dir.path()).lock().is_err());
    }

    #[test]
    fn a_stale_journal_beside_a_newer_snapshot_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        append_all(&log, &[b"a"]);
        let old = std::fs::read(&log.paths().journal).unwrap();
        {
            let (_g, _) = log.locked().unwrap();
            log.replace(b"S").unwrap();
        }
        std::fs::write(&log.paths().journal, &old).unwrap();
        let again = open(dir.path());
        assert_eq!(everything(&again), (Base::Snapshot(b"S".to_vec()), vec![]));
        // Two generations apart is not a crash artefact.
        let mut header = format::encode_journal_header(5).to_vec();
        header.extend(format::encode_frame(0, b"x"));
        std::fs::write(&log.paths().journal, &header).unwrap();
        assert!(matches!(open(dir.path()).lock(), Err(Error::CorruptState { .. })));
    }

    #[test]
    fn the_first_format_is_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        let paths = StatePaths::new(dir.path(), "q").unwrap();
        let ieee = |b: &[u8]| {
            // zlib's CRC-32, as the first format used it (bit by bit: a test needs no table).
            let mut c = !0u32;
            for &byte in b {
                c ^= u32::from(byte);
                for _ in 0..8 {
                    c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                }
            }
            !c
        };
        let body = b"{\"snap\":1}";
        let mut snap = b"TLWQSNAP".to_vec();
        snap.extend(2u64.to_le_bytes());
        snap.extend(ieee(body).to_le_bytes());
        snap.extend(body);
        std::fs::write(&paths.snapshot, &snap).unwrap();
        let mut journal = b"TLWQJRNL".to_vec();
        journal.extend(2u64.to_le_bytes());
        for r in [&b"r1"[..], b"r2"] {
            journal.extend((r.len() as u32).to_le_bytes());
            journal.extend(ieee(r).to_le_bytes());
            journal.extend(r);
        }
        journal.extend([0; 5]);
        std::fs::write(&paths.journal, &journal).unwrap();
        let read = read_contents(dir.path(), "q").unwrap().unwrap();
        assert_eq!((read.generation, read.records.len(), read.torn_bytes), (2, 2, 5));
        let log = open(dir.path());
        let (base, records) = everything(&log);
        assert_eq!(base, Base::Snapshot(body.to_vec()));
        assert_eq!(records, vec![b"r1".to_vec(), b"r2".to_vec()]);
        assert_eq!(&std::fs::read(&paths.journal).unwrap()[..8], b"TLSJRNL2");
        assert_eq!(&std::fs::read(&paths.snapshot).unwrap()[..8], b"TLSSNAP2");
        append_all(&log, &[b"r3"]);
        assert_eq!(open(dir.path()).lock().unwrap().records.len(), 3);
    }

    #[test]
    fn fsync_always_syncs_each_record_and_interval_waits_for_sync() {
        let dir = tempfile::tempdir().unwrap();
        let always = StateLog::open(dir.path(), "a", FsyncPolicy::Always).unwrap();
        append_all(&always, &[b"1", b"2"]);
        assert_eq!(always.syncs(), 2);
        let every = std::time::Duration::from_secs(3600);
        let interval = StateLog::open(dir.path(), "i", FsyncPolicy::Interval(every)).unwrap();
        append_all(&interval, &[b"1", b"2"]);
        assert_eq!(interval.syncs(), 0);
        interval.sync().unwrap();
        interval.sync().unwrap(); // nothing new
        assert_eq!(interval.syncs(), 1);
        append_all(&interval, &[b"3"]);
        interval.close().unwrap();
        assert_eq!(interval.syncs(), 2);
        assert!(matches!(interval.lock(), Err(Error::Closed)));
    }

    #[test]
    fn the_lock_excludes_other_threads() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open(dir.path()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50u32 {
                        let (_g, _) = log.locked().unwrap();
                        // Two records per turn: another thread's never falls between them.
                        log.append(&[t, 0, i as u8]).unwrap();
                        log.append(&[t, 1, i as u8]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (_, records) = everything(&open(dir.path()));
        assert_eq!(records.len(), 400);
        for pair in records.chunks(2) {
            assert_eq!((pair[0][0], pair[0][1], pair[1][1]), (pair[1][0], 0, 1));
        }
    }
}
