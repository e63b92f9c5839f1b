//! `Doorbell`: a handle on a topic's doorbell (the futex every append rings), so that work
//! queues can ring it too when they make work available again (a release, a member leaving)
//! and members waiting for work in any process wake at once instead of polling.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use tidelog_core::shm::doorbell::Doorbell;

use crate::gil::run_detached;

/// A topic's doorbell, opened by path (`<store>/topics/<topic>/doorbell`).
///
/// `ring()` wakes everyone sleeping in `Topic.wait` (or `Doorbell.wait`) on that topic, in
/// any process. Sleepers re-check what they wait for, so an extra ring costs a wakeup only.
#[pyclass(name = "Doorbell", module = "tidelog._core", frozen)]
pub struct PyDoorbell {
    inner: Arc<Doorbell>,
}

impl PyDoorbell {
    /// The doorbell, for the waker (`Bell.doorbell`).
    pub(crate) fn shared(&self) -> Arc<Doorbell> {
        self.inner.clone()
    }
}

#[pymethods]
impl PyDoorbell {
    /// Opens (creating if needed) the doorbell file at `path`.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = Arc::new(run_detached(py, move || Doorbell::open(&path))?);
        Ok(PyDoorbell { inner })
    }

    /// The current ticket: take it before checking, then `wait()` on it.
    fn ticket(&self) -> u32 {
        self.inner.ticket()
    }

    /// Wakes every sleeper, in any process.
    fn ring(&self) {
        self.inner.ring();
    }

    /// Sleeps (without the GIL) until the doorbell rings after `ticket` was taken, or
    /// `timeout` seconds pass, first spinning for at most `spin_us` microseconds (0: sleep at
    /// once). Returns whether it rang; may return early, so re-check.
    #[pyo3(signature = (ticket, timeout=None, spin_us=None))]
    fn wait(
        &self,
        py: Python<'_>,
        ticket: &Bound<'_, PyAny>,
        timeout: Option<&Bound<'_, PyAny>>,
        spin_us: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let ticket = crate::args::int_in(ticket, "ticket", 0, u32::MAX)?;
        let timeout = crate::args::seconds(timeout, "timeout")?;
        let spin = crate::args::spin(spin_us)?;
        let bell = &self.inner;
        Ok(py.detach(|| bell.wait_spin(ticket, timeout, spin)))
    }
}
