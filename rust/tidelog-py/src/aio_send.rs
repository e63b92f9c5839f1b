//! The async producer's sends. `AsyncProducer` is the base class of `tidelog.aio.Producer`:
//! its `send` puts the message into the native buffer without waiting and, when that
//! worked (the common case), returns `SendDone`, an awaitable that is already complete, so
//! `await producer.send(...)` costs no coroutine frame; only under pressure with
//! `on_full="block"` does it return the Python coroutine that waits for room
//! (`Producer._send_blocked`). `SendDone` lives in `done.rs`. `SendResult` is what the await gives: the message's
//! partition and its receipt, which the writer settles with the offset;
//! `await result` waits for that (`Producer._written`).

use std::sync::Arc;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use tidelog_core::producer::receipt::{Outcome, Receipt};
use tidelog_core::producer::SendError;

use crate::args;
use crate::errors::{BackpressureError, TidelogError};
use crate::producer::PyProducer;
use crate::topic::{encode_headers, expect_bytes};

/// The native half of `tidelog.aio.Producer` (which subclasses it).
#[pyclass(name = "AsyncProducer", module = "tidelog._core", subclass, frozen)]
pub struct PyAsyncProducer {
    native: Py<PyProducer>,
}

/// What an async `send` returns: the message is in the buffer. `await` it for the
/// `(partition, offset)` it was written at.
// No `freelist`: PyO3's takes a mutex on every allocation and every release, which cost more
// than the allocator it saves (see `benches/results/aio-issue15.md`).
#[pyclass(name = "SendResult", module = "tidelog._core", frozen)]
pub struct SendResult {
    /// The `tidelog.aio.Producer` that sent it (its `_written` does the waiting).
    owner: Py<PyAny>,
    target: u64,
    accepted: bool,
    partition: u32,
    receipt: Option<Arc<Receipt>>,
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

    /// Puts a message into the buffer, waiting (without blocking the loop) for room.
    ///
    /// Returns an awaitable giving a `SendResult` (await that for the message's
    /// `(partition, offset)` once written). It is a coroutine only when it has to wait;
    /// otherwise a `SendDone`, which `tidelog.aio` registers as a coroutine type, so
    /// `asyncio.create_task` and `gather` take either.
    ///
    /// Raises `BackpressureError` under pressure with `on_full="raise"` (or after
    /// `block_timeout` seconds of waiting with `on_full="block"`), `StoreClosedError` once
    /// the producer or the store is closed.
    #[pyo3(signature = (topic, value, *, key=None, headers=None, partition=None, priority=None))]
    #[allow(clippy::too_many_arguments)]
    fn send<'py>(
        slf: &Bound<'py, Self>,
        topic: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        key: Option<&Bound<'py, PyAny>>,
        headers: Option<&Bound<'py, PyAny>>,
        partition: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        match try_send(slf, topic, value, key, headers, partition, priority)? {
            Some(result) => crate::done::new(py, Bound::new(py, result)?.into_any()),
            None => slf.call_method1(
                intern!(py, "_send_blocked"),
                (topic, value, key, headers, partition, priority),
            ),
        }
    }

    /// `send` for hot loops: never waits, so it needs no `await`; returns the `SendResult`.
    ///
    /// Raises `BackpressureError` when the buffer is under pressure (whatever `on_full`
    /// says; nothing was enqueued unless `on_full="shed"` made room): `await send()` waits
    /// for room instead.
    #[pyo3(signature = (topic, value, *, key=None, headers=None, partition=None, priority=None))]
    #[allow(clippy::too_many_arguments)]
    fn send_nowait(
        slf: &Bound<'_, Self>,
        topic: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<SendResult> {
        try_send(slf, topic, value, key, headers, partition, priority)?.ok_or_else(|| {
            BackpressureError::new_err(
                "producer buffer above its high watermark: await send() to wait for room",
            )
        })
    }

    /// One attempt of a blocked `send`: the `SendResult`, or None when `on_full="block"`
    /// would wait for room (nothing was enqueued; wait on `Bell.pressure(native)`).
    #[pyo3(signature = (topic, value, *, key=None, headers=None, partition=None, priority=None))]
    #[allow(clippy::too_many_arguments)]
    fn _try_send(
        slf: &Bound<'_, Self>,
        topic: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        partition: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<SendResult>> {
        try_send(slf, topic, value, key, headers, partition, priority)
    }
}

/// Enqueues without waiting; None when `on_full="block"` would wait.
fn try_send(
    slf: &Bound<'_, PyAsyncProducer>,
    topic: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    key: Option<&Bound<'_, PyAny>>,
    headers: Option<&Bound<'_, PyAny>>,
    partition: Option<&Bound<'_, PyAny>>,
    priority: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<SendResult>> {
    let engine = slf.get().native.get().inner();
    let topic = args::text(topic, "topic")?;
    let value = expect_bytes(value, "value")?.as_bytes();
    let key = key.filter(|k| !k.is_none()).map(|k| expect_bytes(k, "key")).transpose()?.map(|k| k.as_bytes());
    let headers = encode_headers(headers)?;
    let partition = args::partition(partition)?;
    let priority = args::opt_int_in(priority, "priority", i32::MIN, i32::MAX)?.unwrap_or(0);
    match engine.send_tracked(topic.as_ref(), value, key, &headers, partition, priority) {
        Ok(tracked) => Ok(Some(SendResult {
            owner: slf.clone().into_any().unbind(),
            // Counts this message (and maybe a later one of another thread): written
            // once the writer has accounted for that many.
            target: if tracked.accepted { engine.sent_count() } else { 0 },
            accepted: tracked.accepted,
            partition: tracked.partition,
            receipt: tracked.receipt,
        })),
        Err(SendError::Backpressure(reason)) if reason == "would block" => Ok(None),
        Err(e) => Err(crate::producer::send_error(e)),
    }
}

#[pymethods]
impl SendResult {
    /// False when `on_full="shed"` dropped this very message at the send (it is never written).
    #[getter]
    fn accepted(&self) -> bool {
        self.accepted
    }

    /// The producer's `sent_count()` once this message was in: the target of `flushed()`.
    #[getter]
    fn target(&self) -> u64 {
        self.target
    }

    /// The partition the message was sent to.
    #[getter]
    fn partition(&self) -> u32 {
        self.partition
    }

    /// The message's offset once written, else None.
    #[getter]
    fn offset(&self) -> Option<u64> {
        match self.receipt.as_ref().map(|r| r.outcome()) {
            Some(Outcome::Written(offset)) => Some(offset),
            _ => None,
        }
    }

    /// The `tidelog.aio.Producer` that sent it.
    #[getter]
    fn producer(&self, py: Python<'_>) -> Py<PyAny> {
        self.owner.clone_ref(py)
    }

    /// `(partition, offset)` once the message is written; None while it is not yet (or
    /// when it was shed after it was buffered: the producer flushed it, then this is None).
    ///
    /// Raises `BackpressureError` if `on_full="shed"` dropped it, `TidelogError` if its
    /// write failed (the failure itself went to the producer's next call).
    fn written_at(&self) -> PyResult<Option<(u32, u64)>> {
        match self.receipt.as_ref().map(|r| r.outcome()) {
            None | Some(Outcome::Dropped) => Err(BackpressureError::new_err(
                "the message was dropped by on_full=\"shed\": it is not written",
            )),
            Some(Outcome::Failed) => Err(TidelogError::new_err(
                "the message was not written: its write failed (the failure was raised by the \
                 producer's send, flush or close)",
            )),
            Some(Outcome::Pending) => Ok(None),
            Some(Outcome::Written(offset)) => Ok(Some((self.partition, offset))),
        }
    }

    /// Waits (in the running event loop) until the message is written; gives
    /// `(partition, offset)`.
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        slf.get()
            .owner
            .bind(py)
            .call_method1(intern!(py, "_written"), (slf,))?
            .call_method0(intern!(py, "__await__"))
    }

    fn __repr__(&self) -> String {
        match (self.accepted, self.offset()) {
            (false, _) => format!("SendResult(partition={}, accepted=False)", self.partition),
            (true, Some(offset)) => format!("SendResult(partition={}, offset={offset})", self.partition),
            (true, None) => format!("SendResult(partition={}, offset=None)", self.partition),
        }
    }
}
