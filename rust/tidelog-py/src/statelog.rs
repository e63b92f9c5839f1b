//! `StateLog` and `read_state_log`: the core's snapshot-plus-journal state files (see
//! `tidelog_core::statelog`), for work queues. Python decides what records mean; the core
//! frames, checks, locks and syncs them.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tidelog_core::statelog::{self, Base, Changes, StateLog};
use tidelog_core::FsyncPolicy;

use crate::errors::InvalidConfigError;
use crate::gil::run_detached;

/// A state log: a snapshot plus a CRC-checked journal of the changes after it, shared by
/// the processes that change it together.
///
/// `StateLog(directory, name, fsync="never"|"always")` opens one on its own;
/// `Store.state_log(directory, name)` opens one with the store's fsync policy (and, for
/// `"interval"`, its background syncer). Every change goes `lock()` (which returns what
/// changed since this handle last read), then `append()` / `replace()`, then `unlock()`.
#[pyclass(name = "StateLog", module = "tidelog._core", frozen)]
pub struct PyStateLog {
    inner: Arc<StateLog>,
}

impl PyStateLog {
    pub(crate) fn new(inner: Arc<StateLog>) -> Self {
        PyStateLog { inner }
    }
}

type PyChanges<'py> = (bool, Option<Bound<'py, PyBytes>>, Bound<'py, PyList>);
/// `(generation, snapshot, records, torn_bytes)`, see `read_state_log`.
type PyContents<'py> = (u64, Option<Bound<'py, PyBytes>>, Bound<'py, PyList>, u64);

fn changes_to_py(py: Python<'_>, changes: Changes) -> PyResult<PyChanges<'_>> {
    let (reset, snapshot) = match changes.base {
        Base::Unchanged => (false, None),
        Base::Empty => (true, None),
        Base::Snapshot(body) => (true, Some(PyBytes::new(py, &body))),
    };
    let records = PyList::new(py, changes.records.iter().map(|r| PyBytes::new(py, r)))?;
    Ok((reset, snapshot, records))
}

#[pymethods]
impl PyStateLog {
    /// Opens (creating the directory and lock file if needed) the log `name` in `directory`.
    #[new]
    #[pyo3(signature = (directory, name, *, fsync=tidelog_core::defaults::FSYNC))]
    fn py_new(py: Python<'_>, directory: PathBuf, name: String, fsync: &str) -> PyResult<Self> {
        let policy =
            match fsync {
                "never" => FsyncPolicy::Never,
                "always" => FsyncPolicy::Always,
                "interval" => return Err(InvalidConfigError::new_err(
                    "fsync=\"interval\" needs a store's background syncer: open the log with Store.state_log",
                )),
                other => {
                    return Err(InvalidConfigError::new_err(format!(
                        "fsync must be \"never\" or \"always\", got {other:?}"
                    )))
                }
            };
        let log = run_detached(py, move || StateLog::open(&directory, &name, policy))?;
        Ok(PyStateLog::new(Arc::new(log)))
    }

    /// Takes the lock (waiting, without the GIL, for other threads and processes) and reads
    /// what changed since this handle last read.
    ///
    /// Returns `(reset, snapshot, records)`: with `reset` the caller's copy of the state
    /// starts again from `snapshot` (a body given to `replace`, or None: from nothing);
    /// then it applies `records` (payloads given to `append`) in order.
    ///
    /// Raises `CorruptRecordError` naming the file and byte position for damage (a torn
    /// tail, an incomplete last record with nothing valid after it, is truncated instead and
    /// counted in `torn_tails`). The lock is not held after an error.
    fn lock<'py>(&self, py: Python<'py>) -> PyResult<PyChanges<'py>> {
        let log = self.inner.clone();
        let changes = run_detached(py, move || log.lock())?;
        changes_to_py(py, changes)
    }

    /// Gives the lock back.
    fn unlock(&self, py: Python<'_>) -> PyResult<()> {
        let log = self.inner.clone();
        run_detached(py, move || log.unlock())
    }

    /// Appends one record (lock held); returns the journal's length in bytes after it, once
    /// the record is as durable as the fsync policy says.
    fn append(&self, py: Python<'_>, payload: Vec<u8>) -> PyResult<u64> {
        let log = self.inner.clone();
        run_detached(py, move || log.append(&payload))
    }

    /// Compaction (lock held): `snapshot` becomes the whole state, of the next generation,
    /// and the journal starts empty (each written atomically and synced).
    fn replace(&self, py: Python<'_>, snapshot: Vec<u8>) -> PyResult<()> {
        let log = self.inner.clone();
        run_detached(py, move || log.replace(&snapshot))
    }

    /// Makes durable the records the fsync policy left in the page cache (`"interval"`).
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let log = self.inner.clone();
        run_detached(py, move || log.sync())
    }

    /// Syncs what the policy deferred and closes the journal; closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let log = self.inner.clone();
        run_detached(py, move || log.close())
    }

    /// Makes the next `lock()` return the whole state again (`reset` True).
    fn invalidate(&self) {
        self.inner.invalidate();
    }

    /// The generation of the snapshot the journal follows (0 before the first `replace`).
    #[getter]
    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// Bytes in the journal as of this handle's last read or append.
    #[getter]
    fn journal_bytes(&self) -> u64 {
        self.inner.journal_bytes()
    }

    /// Bytes of records (frames included) this handle appended.
    #[getter]
    fn bytes_appended(&self) -> u64 {
        self.inner.bytes_appended()
    }

    /// Torn tails this handle truncated.
    #[getter]
    fn torn_tails(&self) -> u64 {
        self.inner.torn_tails()
    }

    /// Bytes those torn tails held.
    #[getter]
    fn bytes_truncated(&self) -> u64 {
        self.inner.bytes_truncated()
    }

    /// Successful fdatasyncs of the journal by this handle.
    #[getter]
    fn syncs(&self) -> u64 {
        self.inner.syncs()
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }
}

/// Reads the state log `name` in `directory` without changing it (its lock taken shared
/// meanwhile).
///
/// Returns None if it has neither snapshot nor journal, else `(generation, snapshot,
/// records, torn_bytes)`: `snapshot` is the body (None without one), `records` the
/// journal's payloads, `torn_bytes` the length of a torn tail the next member will truncate.
/// Raises `CorruptRecordError` naming the file and position for damage.
#[pyfunction]
pub fn read_state_log<'py>(
    py: Python<'py>,
    directory: PathBuf,
    name: String,
) -> PyResult<Option<PyContents<'py>>> {
    let Some(contents) = run_detached(py, move || statelog::read_contents(&directory, &name))? else {
        return Ok(None);
    };
    let snapshot = contents.snapshot.map(|b| PyBytes::new(py, &b));
    let records = PyList::new(py, contents.records.iter().map(|r| PyBytes::new(py, r)))?;
    Ok(Some((contents.generation, snapshot, records, contents.torn_bytes)))
}
