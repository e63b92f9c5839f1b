//! `Group`, `read_group` and `list_groups`: a consumer group's membership state kept by the
//! core (`tidelog_core::group`). Python decides who is a member and who owns what; the core
//! stores it (CRC-checked, locked, synced as the store's fsync policy says), publishes the
//! generation in a shared word and keeps the members' lease slots.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tidelog_core::group::{self, Group, Lease, LEASE_SLOTS, MAX_EXPIRY_MS};
use tidelog_core::FsyncPolicy;

use crate::args;
use crate::errors::InvalidConfigError;
use crate::gil::run_detached;

/// One consumer group's membership state, shared by its members in every process.
///
/// `Group(store_dir, topic, group, fsync="never"|"always")` opens one on its own;
/// `Store.group(topic, group)` opens one with the store's fsync policy (and, for
/// `"interval"`, its background syncer). A change goes `lock()` (the state, caught up),
/// then `claim_lease()` / `release_lease()` / `write()`, then `unlock()`.
#[pyclass(name = "Group", module = "tidelog._core", frozen)]
pub struct PyGroup {
    inner: Arc<Group>,
}

impl PyGroup {
    pub(crate) fn new(inner: Group) -> Self {
        PyGroup { inner: Arc::new(inner) }
    }

    /// The core's group state (a committer checks its generation).
    pub(crate) fn inner(&self) -> &Arc<Group> {
        &self.inner
    }
}

type PyState<'py> = (u64, Option<Bound<'py, PyBytes>>);
type PyLease = (u32, u32, u64);
/// `(generation, body, leases)`, see `read_group`.
type PyView<'py> = (u64, Option<Bound<'py, PyBytes>>, Vec<PyLease>);

fn lease_tuple(l: Lease) -> PyLease {
    (l.slot, l.incarnation, l.expires_ms)
}

fn slot(obj: &Bound<'_, PyAny>) -> PyResult<u32> {
    args::int_in(obj, "slot", 0, LEASE_SLOTS - 1)
}

fn incarnation(obj: &Bound<'_, PyAny>) -> PyResult<u32> {
    args::int_in(obj, "incarnation", 0, u32::MAX)
}

fn expiry(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    args::int_in(obj, "expires_ms", 1, MAX_EXPIRY_MS)
}

#[pymethods]
impl PyGroup {
    /// Opens (creating its files if needed) the state of `group` on `topic` in the store
    /// directory `store_dir`.
    #[new]
    #[pyo3(signature = (store_dir, topic, group, *, fsync=tidelog_core::defaults::FSYNC))]
    fn py_new(
        py: Python<'_>,
        store_dir: PathBuf,
        topic: String,
        group: String,
        fsync: &str,
    ) -> PyResult<Self> {
        let policy =
            match fsync {
                "never" => FsyncPolicy::Never,
                "always" => FsyncPolicy::Always,
                "interval" => return Err(InvalidConfigError::new_err(
                    "fsync=\"interval\" needs a store's background syncer: open the group with Store.group",
                )),
                other => {
                    return Err(InvalidConfigError::new_err(format!(
                        "fsync must be \"never\" or \"always\", got {other:?}"
                    )))
                }
            };
        let group = run_detached(py, move || Group::open(&store_dir, &topic, &group, policy))?;
        Ok(PyGroup::new(group))
    }

    /// Takes the group's lock (waiting, without the GIL, for other threads and processes)
    /// and returns `(generation, body)`: the state caught up with every member's change
    /// (`body` None before the first write) and the generation the next `write` follows.
    ///
    /// Raises `CorruptRecordError` naming the damaged file (nothing is changed),
    /// `TopicNotFoundError` once the topic was deleted. The lock is not held after an error.
    fn lock<'py>(&self, py: Python<'py>) -> PyResult<PyState<'py>> {
        let g = self.inner.clone();
        let state = run_detached(py, move || g.lock())?;
        Ok((state.generation, state.body.map(|b| PyBytes::new(py, &b))))
    }

    /// Writes `body` as the state of the next generation (lock held) and returns that
    /// generation once the change is as durable as the fsync policy says; then every member
    /// sees it in `current_generation()`. The generation is also above `above` (the highest
    /// the group's commits carry: see `tidelog_core::group::Group::write_above`).
    #[pyo3(signature = (body, above = 0))]
    fn write(&self, py: Python<'_>, body: Vec<u8>, above: u64) -> PyResult<u64> {
        let g = self.inner.clone();
        run_detached(py, move || g.write_above(&body, above))
    }

    /// Gives the lock back.
    fn unlock(&self, py: Python<'_>) -> PyResult<()> {
        let g = self.inner.clone();
        run_detached(py, move || g.unlock())
    }

    /// The group's generation right now: one load of a shared word, no system call.
    fn current_generation(&self) -> u64 {
        self.inner.current_generation()
    }

    /// Claims a free lease slot (lock held) running until `expires_ms` (ms since the
    /// epoch); returns `(slot, incarnation)`.
    fn claim_lease(&self, expires_ms: &Bound<'_, PyAny>) -> PyResult<(u32, u32)> {
        let lease = self.inner.claim_lease(expiry(expires_ms)?).map_err(crate::errors::CoreError)?;
        Ok((lease.slot, lease.incarnation))
    }

    /// Extends lease `slot`/`incarnation` to `expires_ms`: one atomic compare-and-swap, no
    /// lock, no system call. False if the lease is no longer this one (its member was
    /// removed and must join again).
    fn renew_lease(
        &self,
        slot: &Bound<'_, PyAny>,
        incarnation: &Bound<'_, PyAny>,
        expires_ms: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let (s, i, e) = (self::slot(slot)?, self::incarnation(incarnation)?, expiry(expires_ms)?);
        self.inner.renew_lease(s, i, e).map_err(|e| crate::errors::CoreError(e).into())
    }

    /// Frees lease `slot`/`incarnation`; False if the slot no longer holds it.
    fn release_lease(&self, slot: &Bound<'_, PyAny>, incarnation: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (s, i) = (self::slot(slot)?, self::incarnation(incarnation)?);
        self.inner.release_lease(s, i).map_err(|e| crate::errors::CoreError(e).into())
    }

    /// When lease `slot`/`incarnation` runs out (ms since the epoch), 0 if the slot no
    /// longer holds it.
    fn lease_expiry(&self, slot: &Bound<'_, PyAny>, incarnation: &Bound<'_, PyAny>) -> PyResult<u64> {
        let (s, i) = (self::slot(slot)?, self::incarnation(incarnation)?);
        self.inner.lease_expiry(s, i).map_err(|e| crate::errors::CoreError(e).into())
    }

    /// Every held lease, as `(slot, incarnation, expires_ms)`.
    fn leases(&self) -> Vec<PyLease> {
        self.inner.leases().into_iter().map(lease_tuple).collect()
    }

    /// Syncs what the fsync policy deferred and closes the state files; closing twice is
    /// harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let g = self.inner.clone();
        run_detached(py, move || g.close())
    }

    /// Successful fdatasyncs of the group's journal by this handle.
    #[getter]
    fn syncs(&self) -> u64 {
        self.inner.syncs()
    }

    /// The group's files: `lock`, `snapshot`, `journal`, `live` -> path.
    #[getter]
    fn files(&self) -> Vec<(&'static str, PathBuf)> {
        let p = self.inner.paths();
        vec![
            ("lock", p.state.lock.clone()),
            ("snapshot", p.state.snapshot.clone()),
            ("journal", p.state.journal.clone()),
            ("live", p.live.clone()),
        ]
    }
}

/// Reads the state of `group` on `topic` without joining it or changing a file.
///
/// Returns None if the group has no state, else `(generation, body, leases)`: `body` as
/// written (None before the first write), `leases` every held `(slot, incarnation,
/// expires_ms)`. Raises `CorruptRecordError` naming the damaged file.
#[pyfunction]
pub fn read_group<'py>(
    py: Python<'py>,
    store_dir: PathBuf,
    topic: String,
    group: String,
) -> PyResult<Option<PyView<'py>>> {
    let Some(view) = run_detached(py, move || group::read(&store_dir, &topic, &group))? else {
        return Ok(None);
    };
    let body = view.state.body.map(|b| PyBytes::new(py, &b));
    Ok(Some((view.state.generation, body, view.leases.into_iter().map(lease_tuple).collect())))
}

/// Every `(topic, group)` with membership state in the store directory, sorted.
#[pyfunction]
pub fn list_groups(py: Python<'_>, store_dir: PathBuf) -> PyResult<Vec<(String, String)>> {
    run_detached(py, move || group::list(&store_dir))
}
