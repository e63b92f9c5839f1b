//! `Waker` and `Bell`: how an asyncio event loop waits for the store. A `Bell` is a futex
//! word that moves when something a task waits for happens (a topic's doorbell, the end of a
//! producer's pressure, a producer's writer round); a `Waker` is one native thread per
//! event loop sleeping on every watched bell at once and an eventfd the loop watches (see
//! `tidelog_core::waker`). Nothing here blocks: `watch` arms and returns.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::prelude::*;
use tidelog_core::waker::{Bell, Waker};

use crate::doorbell::PyDoorbell;
use crate::errors::to_py;
use crate::producer::PyProducer;
use crate::topic::PyTopic;

/// A word to wait on: take `ticket()` before checking, then `Waker.watch(bell, ticket)`.
#[pyclass(name = "Bell", module = "tidelog._core", frozen)]
pub struct PyBell {
    inner: Arc<dyn Bell>,
}

#[pymethods]
impl PyBell {
    /// The bell of a topic's doorbell: moves after every append to the topic, in any process.
    #[staticmethod]
    fn topic(topic: &PyTopic) -> PyResult<Self> {
        to_py(topic.engine().check_not_inherited())?;
        Ok(PyBell { inner: topic.engine().doorbell() })
    }

    /// The bell of a doorbell opened by path (work queues ring theirs on releases).
    #[staticmethod]
    fn doorbell(doorbell: Bound<'_, PyDoorbell>) -> Self {
        PyBell { inner: doorbell.get().shared() }
    }

    /// Moves when `producer`'s pressure ends, or when it closes.
    #[staticmethod]
    fn pressure(producer: &PyProducer) -> PyResult<Self> {
        Ok(PyBell { inner: producer.engine()?.pressure_bell() })
    }

    /// Moves after every round of `producer`'s writer while watched.
    #[staticmethod]
    fn flush(producer: &PyProducer) -> PyResult<Self> {
        Ok(PyBell { inner: producer.engine()?.flush_bell() })
    }

    /// The word's value now: take it before checking what you wait for.
    fn ticket(&self) -> u32 {
        self.inner.word().load(Ordering::SeqCst)
    }
}

/// One event loop's waker: `fileno()` becomes readable after a watched bell moved.
#[pyclass(name = "Waker", module = "tidelog._core", frozen)]
pub struct PyWaker {
    inner: Waker,
}

#[pymethods]
impl PyWaker {
    /// Starts the waker thread and its eventfd.
    #[new]
    fn new() -> PyResult<Self> {
        Ok(PyWaker { inner: to_py(Waker::new())? })
    }

    /// The eventfd to watch (`loop.add_reader`).
    fn fileno(&self) -> i32 {
        self.inner.fd()
    }

    /// Empties the eventfd; call it when the fd is readable, before re-checking.
    fn drain(&self) {
        self.inner.drain();
    }

    /// Makes `fileno()` readable once `bell` moved past `ticket` (at once if it has). One-shot:
    /// watch again to keep waiting. The waker's thread (never the caller's) spins on the
    /// bell for up to `spin_us` microseconds (0 to `MAX_SPIN_US`) before it sleeps, now and
    /// after each wake-up it delivers for this watch.
    #[pyo3(signature = (bell, ticket, spin_us=None))]
    fn watch(
        &self,
        bell: &PyBell,
        ticket: &Bound<'_, PyAny>,
        spin_us: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let ticket = crate::args::int_in(ticket, "ticket", 0, u32::MAX)?;
        let spin = crate::args::spin(spin_us)?;
        to_py(self.inner.watch(bell.inner.clone(), ticket, spin))
    }

    /// Stops the thread and closes nothing else; closing twice is harmless.
    fn close(&self, py: Python<'_>) {
        let inner = &self.inner;
        py.detach(|| inner.close());
    }

    fn __repr__(&self) -> String {
        format!("Waker(fd={})", self.inner.fd())
    }
}
