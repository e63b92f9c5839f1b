//! `KafkaSender`: the native base of `tidelog.kafka.producer.KafkaProducer`, with the common
//! path of its `send`: one ticket, one comparison, confluent-kafka's `produce`. Everything
//! else (the checks, backpressure, `max_lag`, headers, delivery callbacks, the errors) is the
//! subclass's `_send_full`, called with the ticket taken here.
//!
//! Why native: the same path in Python cost 314 ns of the main thread per send over a bare
//! `produce()` (50,000 sends, median of 9), 90 of them for the keyword-only defaults alone
//! (CPython looks each missing one up in `__kwdefaults__`); the tidelog layer was then 14% of
//! the `kafka://` producer's msgs/s next to plain confluent-kafka.
//!
//! The subclass keeps the policy: it lets sends before ticket `_check_at` take this path
//! once it has checked that they may (below the high watermark, no pending error, open,
//! ...), and sets `_check_at` to 0 whenever that stops holding. Tickets and `_check_at` are
//! atomics, read and written with the GIL held, so threads never share a ticket.
//!
//! Every `serve_every`-th ticket, a send that succeeded also calls the subclass's
//! `_serve_sending`, which serves the delivery reports on the sending thread (see there).
//!
//! `send` is not a `#[pymethods]` method but one made by [`crate::unguarded`]: the Python
//! it calls (`_serve_sending` in librdkafka's poll, `_send_full` while it waits for room)
//! lets go of the GIL, and a daemon thread ended there while the interpreter finalized
//! aborted the process when a PyO3 panic guard was on its stack (17 of 20 processes that
//! ended while a thread sent). The `SAFETY` comments cite that module's invariants.

#![allow(unsafe_code)]

use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::fastcall::{given, required, Signature};
use crate::unguarded::{self, Method};

/// The native half of `tidelog.kafka.producer.KafkaProducer` (which subclasses it).
#[pyclass(frozen, subclass, module = "tidelog._core", name = "KafkaSender")]
pub struct KafkaSender {
    /// confluent-kafka's `Producer.produce`, bound: set once by the subclass.
    produce: OnceLock<Py<PyAny>>,
    tickets: AtomicU64,
    check_at: AtomicU64,
    /// `serve_every - 1` (a power of two less one); `u64::MAX`: never.
    serve_mask: AtomicU64,
}

#[pymethods]
impl KafkaSender {
    /// Accepts (and ignores) the subclass's constructor arguments.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        KafkaSender {
            produce: OnceLock::new(),
            tickets: AtomicU64::new(0),
            check_at: AtomicU64::new(0),
            serve_mask: AtomicU64::new(u64::MAX),
        }
    }

    /// Takes a ticket that sends nothing (the subclass counts sends as tickets taken).
    fn _take_ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst)
    }

    /// The ticket from which `send` takes the subclass's full path.
    #[getter(_check_at)]
    fn check_at(&self) -> u64 {
        self.check_at.load(Ordering::SeqCst)
    }

    #[setter(_check_at)]
    fn set_check_at(&self, ticket: u64) {
        self.check_at.store(ticket, Ordering::SeqCst);
    }

    /// Sets the `produce` of the common path (once), and how often (in tickets; a power of
    /// two, or 0 for never) a send calls `_serve_sending`.
    #[pyo3(signature = (produce, serve_every = 0))]
    fn _use_produce(&self, produce: Py<PyAny>, serve_every: u64) -> PyResult<bool> {
        if serve_every != 0 && !serve_every.is_power_of_two() {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "serve_every must be a power of two or 0, got {serve_every}"
            )));
        }
        self.serve_mask.store(if serve_every == 0 { u64::MAX } else { serve_every - 1 }, Ordering::Relaxed);
        Ok(self.produce.set(produce).is_ok())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(produce) = self.produce.get() {
            visit.call(produce)?;
        }
        Ok(())
    }
}

/// The arguments of a send, borrowed from the call (null: not given).
struct Args {
    topic: *mut ffi::PyObject,
    value: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    headers: *mut ffi::PyObject,
    partition: *mut ffi::PyObject,
    priority: *mut ffi::PyObject,
    on_delivery: *mut ffi::PyObject,
}

/// `send`'s parameters.
static SIGNATURE: Signature<7> = Signature::new(
    "send",
    ["topic", "value", "key", "headers", "partition", "priority", "on_delivery"],
    2,
    2,
);

/// Sorts the call's arguments into [`Args`], with CPython's errors for a wrong call.
///
/// # Safety
/// Invariant 1.
unsafe fn parse(
    py: Python<'_>,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<Args> {
    // SAFETY: invariant 1 (the parser's invariant 1).
    let [topic, value, key, headers, partition, priority, on_delivery] =
        unsafe { SIGNATURE.sort(py, args, nargsf, kwnames)? };
    Ok(Args { topic, value, key, headers, partition, priority, on_delivery })
}

/// What a send does after its Rust part: every pointer is an owned reference.
enum Plan {
    /// Sent (True) or shed (False): the send's result.
    Done(*mut ffi::PyObject),
    /// `produce` refused the message with this exception: the subclass's `_refused` says
    /// what to raise.
    Refused(*mut ffi::PyObject),
    /// The subclass's full path, `_send_full`, with this ticket (a Python int).
    Full(*mut ffi::PyObject),
}

/// The Rust part of a send: the ticket and the common path (see the module docs).
fn plan(py: Python<'_>, slf: &Bound<'_, KafkaSender>, a: &Args) -> PyResult<(Plan, u64)> {
    let this = slf.get();
    let ticket = this.tickets.fetch_add(1, Ordering::SeqCst);
    let (key, partition) = (given(py, &a.key), given(py, &a.partition));
    let common = ticket < this.check_at.load(Ordering::SeqCst)
        && given(py, &a.headers).is_none()
        && given(py, &a.on_delivery).is_none();
    if let Some(produce) = this.produce.get().filter(|_| common) {
        let (topic, value) = (required(py, &a.topic), required(py, &a.value));
        let produce = produce.bind(py);
        // Only the arguments given: each one more costs `produce()` its parsing.
        let done = match (key, partition) {
            (None, None) => produce.call1((topic, value)),
            (key, None) => produce.call1((topic, value, key)),
            (key, Some(p)) => produce.call1((topic, value, key, p)),
        };
        let plan = match done {
            Ok(_) => Plan::Done(PyBool::new(py, true).to_owned().into_any().into_ptr()),
            Err(e) => Plan::Refused(e.into_value(py).into_ptr()),
        };
        return Ok((plan, ticket));
    }
    Ok((Plan::Full(ticket.into_pyobject(py)?.into_ptr()), ticket))
}

/// A borrowed argument for `PyObject_CallMethodObjArgs`: None where not given.
fn or_none(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    if obj.is_null() {
        // SAFETY: `Py_None` returns the None singleton, borrowed; the GIL is held
        // (invariant 1).
        unsafe { ffi::Py_None() }
    } else {
        obj
    }
}

/// `KafkaSender.send` (see the module docs and the method's doc below).
///
/// # Safety
/// Invariant 1 of `unguarded` (CPython calls it so).
unsafe extern "C-unwind" fn send(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let rust = |py: Python<'_>| {
        // SAFETY: invariant 1: `slf` is borrowed for the call.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        let slf = slf.cast::<KafkaSender>()?;
        // SAFETY: invariant 1.
        let a = unsafe { parse(py, args, nargsf, kwnames)? };
        let (plan, ticket) = plan(py, slf, &a)?;
        let mask = slf.get().serve_mask.load(Ordering::Relaxed);
        let names = (intern!(py, "_refused").as_ptr(), intern!(py, "_send_full").as_ptr());
        let serve = (ticket & mask == mask).then(|| intern!(py, "_serve_sending").as_ptr());
        Ok((plan, a, names, serve))
    };
    // SAFETY: unguarded's invariant 1 holds for this call.
    let planned = unsafe { unguarded::rust_part("KafkaSender.send", rust) };
    let Some((plan, a, (refused, full), serve)) = planned else { return ptr::null_mut() };
    // From here on, invariant 3: raw pointers only, and Python calls that may end the thread.
    // SAFETY: the GIL is held (invariant 1); the names are interned strings held by PyO3
    // for the process's life (invariant 2); every argument is borrowed for the call
    // (invariant 1) or an owned reference made by `plan`, released here once its call
    // returned.
    unsafe {
        let sent = match plan {
            Plan::Done(result) => result,
            Plan::Refused(exc) => {
                let raised = unguarded::call_method(slf, refused, &[exc, a.topic]);
                ffi::Py_DECREF(exc);
                if !raised.is_null() {
                    ffi::PyErr_SetObject(ffi::Py_TYPE(raised).cast(), raised);
                    ffi::Py_DECREF(raised);
                }
                return ptr::null_mut();
            }
            Plan::Full(ticket) => {
                let args =
                    [a.topic, a.value, a.key, a.headers, a.partition, a.priority, a.on_delivery, ticket];
                let sent = unguarded::call_method(slf, full, &args.map(or_none));
                ffi::Py_DECREF(ticket);
                sent
            }
        };
        // A send that raised serves nothing: the next due one will, or the wait under pressure.
        if let (false, Some(serve)) = (sent.is_null(), serve) {
            let served = unguarded::call_method(slf, serve, &[]);
            if served.is_null() {
                ffi::Py_DECREF(sent);
                return ptr::null_mut();
            }
            ffi::Py_DECREF(served);
        }
        sent
    }
}

/// `send`'s table entry (invariant 2).
static SEND: Method = Method::fast_with_keywords(c"send", send, SEND_DOC);

/// Makes `send` a method of `KafkaSender` (see the module docs).
pub(crate) fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    unguarded::install(&m.py().get_type::<KafkaSender>(), &SEND)
}

/// `send`'s docstring, with its signature for `inspect` (and stubtest).
const SEND_DOC: &std::ffi::CStr = c"send($self, /, topic, value, *, key=None, headers=None, partition=None, priority=None, on_delivery=None)
--

Queues a message; returns False if `on_full=\"shed\"` dropped it.

`on_delivery(error, message)`, if given, is called once Kafka acknowledged (error
None) or refused the message, on the thread that serves the reports: a sending
thread inside `send` (every few thousand sends) or a blocked `send` or `flush`, or,
while nothing is sent, the producer's background thread; as confluent-kafka calls it
inside `poll` and `flush`. It needs a producer made with `delivery.report.only.error`
off (the async producer's) to hear of successes. A refusal is also this producer's
next error, as without it; so is an exception the callback raises (raised once by
the next `send` or `flush` outside a callback). Inside the callback, `send` only
queues: a send that would wait for room, `flush` and `close` raise.

Raises `BackpressureError` under pressure with `on_full=\"raise\"` (or when a blocked
send timed out), `StoreClosedError` once the producer is closed, and the failure of
an earlier delivery, once.";
