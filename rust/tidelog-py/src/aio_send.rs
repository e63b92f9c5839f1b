//! The async producer's sends. `AsyncProducer` is the base class of `tidelog.aio.Producer`:
//! its `send` puts the message into the native buffer without waiting and, when that
//! worked (the common case), returns `SendDone`, an awaitable that is already complete, so
//! `await producer.send(...)` costs no coroutine frame; only under pressure with
//! `on_full="block"` does it return the Python coroutine that waits for room
//! (`Producer._send_blocked`). `SendResult` is what the await gives: the message's
//! partition and where the writer reports its offset (the producer's ledger); `await result`
//! waits for that (`Producer._written`). Both types live in `done.rs`.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tidelog_core::producer::SendError;

use crate::producer::{PyProducer, SendArgs};

/// The native half of `tidelog.aio.Producer` (which subclasses it).
#[pyclass(name = "AsyncProducer", module = "tidelog._core", subclass, frozen)]
pub struct PyAsyncProducer {
    native: Py<PyProducer>,
}

#[pymethods]
impl PyAsyncProducer {
    #[new]
    #[pyo3(signature = (native, *_args, **_kwargs))]
    fn new(native: Py<PyProducer>, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        PyAsyncProducer { native }
    }

    /// The synchronous producer this one drives (its `stats()`, name, identity).
    #[getter]
    fn native(&self, py: Python<'_>) -> Py<PyProducer> {
        self.native.clone_ref(py)
    }

    /// One attempt of a blocked `send`: the `SendResult`, or None when `on_full="block"`
    /// would wait for room (nothing was enqueued; wait on `Bell.pressure(native)`).
    #[pyo3(signature = (topic, value, *, key=None, headers=None, partition=None, priority=None))]
    #[allow(clippy::too_many_arguments)]
    fn _try_send<'py>(
        slf: &Bound<'py, Self>,
        topic: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        key: Option<&Bound<'py, PyAny>>,
        headers: Option<&Bound<'py, PyAny>>,
        partition: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        try_send(slf, topic, value, key, headers, partition, priority)
    }
}

/// Enqueues without waiting; None when `on_full="block"` would wait.
pub(crate) fn try_send<'py>(
    slf: &Bound<'py, PyAsyncProducer>,
    topic: &Bound<'py, PyAny>,
    value: &Bound<'py, PyAny>,
    key: Option<&Bound<'py, PyAny>>,
    headers: Option<&Bound<'py, PyAny>>,
    partition: Option<&Bound<'py, PyAny>>,
    priority: Option<&Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let engine = slf.get().native.get().inner();
    let SendArgs { topic, value, key, headers, partition, priority } =
        SendArgs::convert(topic, value, key, headers, partition, priority)?;
    // Last, after anything that may run Python code: from here to the new result nothing
    // can take a reference to the spare.
    crate::done::keep_spare(slf.py());
    match engine.send_tracked(topic.as_ref(), value, key, &headers, partition, priority, false) {
        Ok(tracked) => crate::done::new_result(
            slf.as_any(),
            // Counts this message (and maybe a later one of another thread): written
            // once the writer has accounted for that many.
            if tracked.accepted { engine.sent_count() } else { 0 },
            tracked.accepted,
            tracked.partition,
            tracked.seq.map(|seq| (engine.ledger(), seq)),
        )
        .map(Some),
        Err(SendError::Backpressure(reason)) if reason == "would block" => Ok(None),
        Err(e) => Err(crate::producer::send_error(e)),
    }
}
