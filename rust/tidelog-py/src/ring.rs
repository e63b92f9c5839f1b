//! `RingBuffer`: the engine's lock-free bounded MPMC queue, holding Python objects.

use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use tidelog_core::ring::RingBuffer;

use crate::errors::{to_py, InvalidConfigError};

/// A bounded, lock-free, multi-producer multi-consumer FIFO queue of Python objects.
///
/// Non-blocking calls (`try_push`, `try_pop`, `push_many`, `pop_many`) never wait. Blocking
/// calls (`push`, `pop`) wait up to `timeout` seconds (None: forever) without holding the
/// GIL and without spinning a core, then raise `TimeoutError`.
#[pyclass(frozen, module = "tidelog._core", name = "RingBuffer")]
pub struct PyRing {
    ring: RingBuffer<Py<PyAny>>,
}

/// Longest single wait without the GIL before checking for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

fn slice_until(deadline: Option<Instant>) -> Duration {
    deadline.map_or(SIGNAL_CHECK, |d| d.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK))
}

fn timeout(value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| PyValueError::new_err(format!("timeout must be a non-negative number, got {s}")))
        })
        .transpose()
}

#[pymethods]
impl PyRing {
    #[new]
    fn new(capacity: &Bound<'_, PyAny>) -> PyResult<Self> {
        let capacity = crate::args::int(capacity, "capacity")?;
        let capacity = usize::try_from(capacity)
            .map_err(|_| InvalidConfigError::new_err(format!("capacity must be positive, got {capacity}")))?;
        Ok(PyRing { ring: to_py(RingBuffer::try_new(capacity))? })
    }

    /// Number of slots (the requested capacity rounded up to a power of two).
    #[getter]
    fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    fn __len__(&self) -> usize {
        self.ring.len()
    }

    /// Adds `item` if there is room; returns whether it did.
    fn try_push(&self, item: Py<PyAny>) -> bool {
        self.ring.try_push(item).is_ok()
    }

    /// Removes and returns the oldest item, or None if the buffer is empty.
    fn try_pop(&self) -> Option<Py<PyAny>> {
        self.ring.try_pop()
    }

    /// Adds `item`, waiting up to `timeout` seconds for room.
    #[pyo3(signature = (item, timeout=None))]
    fn push(&self, py: Python<'_>, item: Py<PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let wait = self::timeout(timeout)?;
        let mut item = match self.ring.try_push(item) {
            Ok(()) => return Ok(()),
            Err(item) => item,
        };
        let deadline = wait.map(|w| Instant::now() + w);
        // Wait in slices, checking for signals in between, so Ctrl-C interrupts a long wait.
        loop {
            let slice = slice_until(deadline);
            item = match py.detach(|| self.ring.push_timeout(item, Some(slice))) {
                Ok(()) => return Ok(()),
                Err(item) => item,
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(PyTimeoutError::new_err("ring buffer stayed full"));
            }
            py.check_signals()?;
        }
    }

    /// Removes and returns the oldest item, waiting up to `timeout` seconds for one.
    #[pyo3(signature = (timeout=None))]
    fn pop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let wait = self::timeout(timeout)?;
        if let Some(item) = self.ring.try_pop() {
            return Ok(item);
        }
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let slice = slice_until(deadline);
            if let Some(item) = py.detach(|| self.ring.pop_timeout(Some(slice))) {
                return Ok(item);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(PyTimeoutError::new_err("ring buffer stayed empty"));
            }
            py.check_signals()?;
        }
    }

    /// Adds items from the list in order while there is room; returns how many it added.
    fn push_many(&self, items: &Bound<'_, PyList>) -> usize {
        let mut pending: Vec<Py<PyAny>> = items.iter().map(Bound::unbind).collect();
        self.ring.try_push_many(&mut pending)
    }

    /// Removes up to `max` items (oldest first) and returns them as a list.
    fn pop_many<'py>(&self, py: Python<'py>, max: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let max = crate::args::limit(max, "max")?;
        let mut out = Vec::with_capacity(max.min(self.ring.capacity()));
        self.ring.pop_many(&mut out, max);
        PyList::new(py, out)
    }

    fn __repr__(&self) -> String {
        format!("RingBuffer(capacity={}, len={})", self.ring.capacity(), self.ring.len())
    }
}
