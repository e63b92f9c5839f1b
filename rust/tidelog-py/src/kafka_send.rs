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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

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

    /// Queues a message; returns False if `on_full="shed"` dropped it.
    ///
    /// `on_delivery(error, message)`, if given, is called once Kafka acknowledged (error
    /// None) or refused the message, on the thread that serves the reports: a sending
    /// thread inside `send` (every few thousand sends) or a blocked `send` or `flush`, or,
    /// while nothing is sent, the producer's background thread; as confluent-kafka calls it
    /// inside `poll` and `flush`. It needs a producer made with `delivery.report.only.error`
    /// off (the async producer's) to hear of successes. A refusal is also this producer's
    /// next error, as without it; so is an exception the callback raises (raised once by
    /// the next `send` or `flush` outside a callback). Inside the callback, `send` only
    /// queues: a send that would wait for room, `flush` and `close` raise.
    ///
    /// Raises `BackpressureError` under pressure with `on_full="raise"` (or when a blocked
    /// send timed out), `StoreClosedError` once the producer is closed, and the failure of
    /// an earlier delivery, once.
    #[pyo3(signature = (topic, value, *, key=None, headers=None, partition=None, priority=None, on_delivery=None))]
    #[allow(clippy::too_many_arguments)]
    fn send<'py>(
        slf: &Bound<'py, Self>,
        topic: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        key: Option<&Bound<'py, PyAny>>,
        headers: Option<&Bound<'py, PyAny>>,
        partition: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        on_delivery: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let ticket = this.tickets.fetch_add(1, Ordering::SeqCst);
        let sent =
            Self::send_ticket(slf, ticket, topic, value, key, headers, partition, priority, on_delivery)?;
        // A send that raised serves nothing: the next due one will, or the wait under pressure.
        let mask = this.serve_mask.load(Ordering::Relaxed);
        if ticket & mask == mask {
            slf.call_method0(intern!(py, "_serve_sending"))?;
        }
        Ok(sent)
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

impl KafkaSender {
    /// One send with its ticket: the common path, or the subclass's full one.
    #[allow(clippy::too_many_arguments)]
    fn send_ticket<'py>(
        slf: &Bound<'py, Self>,
        ticket: u64,
        topic: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        key: Option<&Bound<'py, PyAny>>,
        headers: Option<&Bound<'py, PyAny>>,
        partition: Option<&Bound<'py, PyAny>>,
        priority: Option<&Bound<'py, PyAny>>,
        on_delivery: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if ticket < this.check_at.load(Ordering::SeqCst) && headers.is_none() && on_delivery.is_none() {
            if let Some(produce) = this.produce.get() {
                let produce = produce.bind(py);
                // Only the arguments given: each one more costs `produce()` its parsing.
                let done = match (key, partition) {
                    (None, None) => produce.call1((topic, value)),
                    (key, None) => produce.call1((topic, value, key)),
                    (key, Some(p)) => produce.call1((topic, value, key, p)),
                };
                return match done {
                    Ok(_) => Ok(PyBool::new(py, true).to_owned().into_any()),
                    // The subclass counts the send as not sent and says what to raise.
                    Err(e) => Err(PyErr::from_value(
                        slf.call_method1(intern!(py, "_refused"), (e.into_value(py), topic))?,
                    )),
                };
            }
        }
        slf.call_method1(
            intern!(py, "_send_full"),
            (topic, value, key, headers, partition, priority, on_delivery, ticket),
        )
    }
}
