//! The per-job hot path of a work-queue member: its jobs, and the buffers that hand out
//! prefetched jobs and collect acknowledgements without a Python frame per job.
//!
//! What the queue's state means, when it is written and what waits are policy, kept in
//! `tidelog.workqueue`, whose `WorkQueue` subclasses [`JobBuffer`]: the fast cases are
//! answered here, every other case calls back into the subclass (`_next_slow`,
//! `_ack_slow`), which holds the member's mutex for multi-step changes. Every method here
//! runs to completion holding the GIL and never calls Python in the middle of a change,
//! so each is atomic with respect to the subclass's steps.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::CStr;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use tidelog_core::log::now_seconds_ahead;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use tidelog_core::shm::fork::Born;

use crate::message::{Message, RecordBatch};
use crate::unguarded::{self, Method};

/// Jobs acquired together: their lock expiry, and how many are not settled yet.
#[pyclass(frozen, module = "tidelog._core", name = "JobBatch")]
pub struct JobBatch {
    /// Lock expiry, ms since the Unix epoch.
    #[pyo3(get)]
    expires: i64,
    /// The moment (`time.time()` seconds) after which less than half the lock timeout is
    /// left: buffered acks must be written and prefetched jobs given back.
    #[pyo3(get)]
    half: f64,
    outstanding: AtomicI64,
}

#[pymethods]
impl JobBatch {
    #[new]
    fn new(expires: i64, timeout_ms: i64) -> Self {
        JobBatch {
            expires,
            half: (expires as f64 - timeout_ms as f64 / 2.0) / 1000.0,
            outstanding: AtomicI64::new(0),
        }
    }

    /// Jobs of the batch not settled yet.
    #[getter]
    fn outstanding(&self) -> i64 {
        self.outstanding.load(Ordering::Relaxed)
    }
}

/// A message acquired from a work queue: the `tidelog.Message` plus its delivery count.
///
/// It reads like the message: `job.value`, `job.key`, `job.headers`, `job.offset`,
/// `job.partition`, `job.topic` and `job.timestamp_ms` are the message's, and `job.message`
/// is the message itself. `job.delivery_count` is how many times the message was handed
/// out, this time included (1 the first time).
// On a free list, as `Message` (see there): a job holds its message and its batch, which
// hold no Python container, so it is never in a cycle either.
#[pyclass(frozen, freelist = 2048, module = "tidelog._core", name = "Job")]
pub struct Job {
    /// The message.
    #[pyo3(get)]
    message: Py<Message>,
    /// Deliveries of the message, this one included.
    #[pyo3(get)]
    delivery_count: u32,
    /// The [`JobBuffer::token`] of the member that acquired it.
    owner: u64,
    /// Its batch while the member holds it unsettled; `None` once acked, released, rejected
    /// or given back.
    batch: Mutex<Option<Py<JobBatch>>>,
}

impl Job {
    fn batch(&self) -> MutexGuard<'_, Option<Py<JobBatch>>> {
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl Job {
    /// The message's value.
    #[getter]
    fn value(&self, py: Python<'_>) -> Py<PyAny> {
        self.message.get().value_object(py)
    }

    /// The message's key.
    #[getter]
    fn key(&self, py: Python<'_>) -> Py<PyAny> {
        self.message.get().key_object(py)
    }

    /// The message's headers.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.message.get().headers_dict(py)
    }

    /// The message's offset in its partition.
    #[getter]
    fn offset(&self) -> u64 {
        self.message.get().offset()
    }

    /// The message's partition.
    #[getter]
    fn partition(&self) -> u32 {
        self.message.get().partition()
    }

    /// The message's topic.
    #[getter]
    fn topic(&self, py: Python<'_>) -> Py<PyString> {
        self.message.get().topic_object(py)
    }

    /// The message's timestamp (ms since the epoch).
    #[getter]
    fn timestamp_ms(&self) -> i64 {
        self.message.get().timestamp()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let m = self.message.get();
        format!(
            "<tidelog.Job {}/{}@{} delivery_count={}>",
            m.topic_object(py).bind(py),
            m.partition(),
            m.offset(),
            self.delivery_count
        )
    }
}

/// Tokens telling the members of this process apart (a job knows which one acquired it).
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct Buffers {
    /// Prefetched jobs not handed out yet, in order.
    ready: VecDeque<Py<Job>>,
    /// Acknowledged jobs whose acknowledgement is not written yet.
    pending: Vec<Py<Job>>,
}

/// The native base of `tidelog.WorkQueue`: a member's prefetched jobs and buffered
/// acknowledgements, and the fast paths of `__next__` and `ack`.
#[pyclass(frozen, subclass, module = "tidelog._core", name = "JobBuffer")]
pub struct JobBuffer {
    token: u64,
    buffers: Mutex<Buffers>,
    closed: AtomicBool,
    born: Born,
}

impl JobBuffer {
    fn buffers(&self) -> MutexGuard<'_, Buffers> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The front prefetched job if its lock has time enough left.
    fn pop_fresh(&self, now: f64) -> Option<Py<Job>> {
        let mut buffers = self.buffers();
        let fresh = buffers
            .ready
            .front()
            .is_some_and(|job| job.get().batch().as_ref().is_some_and(|batch| now < batch.get().half));
        if fresh {
            buffers.ready.pop_front()
        } else {
            None
        }
    }

    /// The batch of `job` if this member holds it unsettled.
    fn held_batch(&self, py: Python<'_>, job: &Job) -> Option<Py<JobBatch>> {
        if job.owner != self.token {
            return None;
        }
        job.batch().as_ref().map(|b| b.clone_ref(py))
    }
}

#[pymethods]
impl JobBuffer {
    /// Accepts (and ignores) the subclass's constructor arguments.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        JobBuffer {
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            buffers: Mutex::new(Buffers::default()),
            closed: AtomicBool::new(false),
            born: Born::now(),
        }
    }

    /// Makes jobs of `messages` (a `RecordBatch` or a list of `Message`), delivered for
    /// the `delivery_count`-th time, held by this member in `batch` (whose outstanding count
    /// grows by their number).
    fn _make_jobs<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyAny>,
        delivery_count: u32,
        batch: &Bound<'py, JobBatch>,
    ) -> PyResult<Vec<Py<Job>>> {
        let make = |message: Py<Message>| {
            Py::new(
                py,
                Job {
                    message,
                    delivery_count,
                    owner: self.token,
                    batch: Mutex::new(Some(batch.clone().unbind())),
                },
            )
        };
        let jobs = if let Ok(read) = messages.cast::<RecordBatch>() {
            read.get().messages(py)?.into_iter().map(make).collect::<PyResult<Vec<_>>>()?
        } else if let Ok(list) = messages.cast::<PyList>() {
            list.iter().map(|m| make(m.cast_into::<Message>()?.unbind())).collect::<PyResult<Vec<_>>>()?
        } else {
            return Err(PyTypeError::new_err("messages must be a RecordBatch or a list of Message"));
        };
        batch.get().outstanding.fetch_add(jobs.len() as i64, Ordering::Relaxed);
        Ok(jobs)
    }

    /// The batch of `job` if this member holds it unsettled, else None.
    fn _held_batch(&self, py: Python<'_>, job: &Bound<'_, Job>) -> Option<Py<JobBatch>> {
        self.held_batch(py, job.get())
    }

    /// Ends this member's hold on `job` (it leaves its batch); with `batch`, the job is
    /// held again alone in that batch (a renewed lock). Returns whether it was held.
    #[pyo3(signature = (job, batch=None))]
    fn _settle(&self, job: &Bound<'_, Job>, batch: Option<&Bound<'_, JobBatch>>) -> bool {
        let j = job.get();
        if j.owner != self.token {
            return false;
        }
        let mut held = j.batch();
        let Some(old) = held.take() else { return false };
        old.get().outstanding.fetch_sub(1, Ordering::Relaxed);
        if let Some(batch) = batch {
            batch.get().outstanding.fetch_add(1, Ordering::Relaxed);
            *held = Some(batch.clone().unbind());
        }
        true
    }

    /// Adds a settled job's acknowledgement to the buffer.
    fn _buffer_ack(&self, job: &Bound<'_, Job>) {
        self.buffers().pending.push(job.clone().unbind());
    }

    /// Takes the buffered acks: the jobs, and their offsets as sorted runs `(start, end)`
    /// per partition.
    #[allow(clippy::type_complexity)]
    fn _take_pending(&self) -> (Vec<Py<Job>>, BTreeMap<u32, Vec<(u64, u64)>>) {
        let jobs = std::mem::take(&mut self.buffers().pending);
        let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for job in &jobs {
            let m = job.get().message.get();
            by_partition.entry(m.partition()).or_default().push(m.offset());
        }
        let grouped = by_partition
            .into_iter()
            .map(|(p, mut offsets)| {
                offsets.sort_unstable();
                let mut runs: Vec<(u64, u64)> = Vec::new();
                for o in offsets {
                    match runs.last_mut() {
                        Some((_, end)) if *end == o => *end = o + 1,
                        Some((_, end)) if *end > o => {} // the same offset twice
                        _ => runs.push((o, o + 1)),
                    }
                }
                (p, runs)
            })
            .collect();
        (jobs, grouped)
    }

    /// Appends prefetched jobs to hand out.
    fn _extend_ready(&self, jobs: Vec<Py<Job>>) {
        self.buffers().ready.extend(jobs);
    }

    /// The front prefetched job if its lock has time enough left, else None.
    fn _pop_ready(&self) -> Option<Py<Job>> {
        self.pop_fresh(now_seconds_ahead())
    }

    /// Takes every prefetched job not handed out yet, each leaving its batch.
    fn _drain_ready(&self) -> Vec<Py<Job>> {
        let ready: Vec<Py<Job>> = self.buffers().ready.drain(..).collect();
        for job in &ready {
            if let Some(batch) = job.get().batch().take() {
                batch.get().outstanding.fetch_sub(1, Ordering::Relaxed);
            }
        }
        ready
    }

    /// Prefetched jobs not handed out yet.
    #[getter]
    fn _ready_count(&self) -> usize {
        self.buffers().ready.len()
    }

    /// Acknowledgements buffered, not written yet.
    #[getter]
    fn _pending_count(&self) -> usize {
        self.buffers().pending.len()
    }

    /// From now on every fast path defers to the subclass (which raises: closed).
    fn _close_buffers(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// `JobBuffer.__next__` and `ack`: methods made by [`crate::unguarded`], because their slow
/// paths call the subclass, whose waits and locks may let go of the GIL (4 of 12 processes
/// aborted that ended while three daemon threads worked one member). The `SAFETY` comments
/// cite that module's invariants.
impl JobBuffer {
    /// The fast case of `__next__`: a prefetched job with time enough left.
    fn next_ready(&self) -> Option<Py<Job>> {
        if self.born.is_inherited_fast() {
            return None;
        }
        self.pop_fresh(now_seconds_ahead())
    }

    /// The fast case of `ack`: a job of a batch with other jobs outstanding and time enough
    /// left is acknowledged in the buffer (false: the subclass's `_ack_slow` writes it).
    fn ack_buffered(&self, job: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(j) = job.cast::<Job>() else { return Ok(false) };
        let j = j.get();
        if j.owner != self.token || self.closed.load(Ordering::Relaxed) || self.born.is_inherited_fast() {
            return Ok(false);
        }
        let mut held = j.batch();
        let Some(batch) = held.as_ref() else { return Ok(false) };
        let b = batch.get();
        // The last job of its batch, or a lock half gone: written before returning, by the
        // subclass.
        if b.outstanding.load(Ordering::Relaxed) <= 1 || now_seconds_ahead() >= b.half {
            return Ok(false);
        }
        b.outstanding.fetch_sub(1, Ordering::Relaxed);
        *held = None;
        drop(held);
        self.buffers().pending.push(job.cast::<Job>()?.clone().unbind());
        Ok(true)
    }
}

/// `JobBuffer.__next__`.
///
/// # Safety
/// Invariant 1 of `unguarded` (CPython calls it so).
unsafe extern "C-unwind" fn next(slf: *mut ffi::PyObject, _none: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let rust = |py: Python<'_>| {
        // SAFETY: invariant 1: `slf` is borrowed for the call.
        let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
        let job = slf.cast::<JobBuffer>()?.get().next_ready();
        Ok((job.map(Py::into_ptr), intern!(py, "_next_slow").as_ptr()))
    };
    // SAFETY: unguarded's invariant 1 holds for this call.
    let fast = unsafe { unguarded::rust_part("JobBuffer.__next__", rust) };
    match fast {
        None => ptr::null_mut(),
        Some((Some(job), _)) => job,
        // SAFETY: invariant 3: the frame holds raw pointers only; the name is interned for
        // the process's life (invariant 2).
        Some((None, slow)) => unsafe { unguarded::call_method(slf, slow, &[]) },
    }
}

/// `JobBuffer.ack`.
///
/// # Safety
/// Invariant 1 of `unguarded` (CPython calls it so).
unsafe extern "C-unwind" fn ack(slf: *mut ffi::PyObject, job: *mut ffi::PyObject) -> *mut ffi::PyObject {
    let rust = |py: Python<'_>| {
        // SAFETY: invariant 1: `slf` and `job` are borrowed for the call.
        let (slf, job) = unsafe { (Bound::from_borrowed_ptr(py, slf), Bound::from_borrowed_ptr(py, job)) };
        Ok((slf.cast::<JobBuffer>()?.get().ack_buffered(&job)?, intern!(py, "_ack_slow").as_ptr()))
    };
    // SAFETY: unguarded's invariant 1 holds for this call.
    let fast = unsafe { unguarded::rust_part("JobBuffer.ack", rust) };
    // SAFETY: invariant 3: the frame holds raw pointers only, the result is released once
    // the call returned; the name is interned for the process's life (invariant 2); None is
    // returned as a new reference.
    unsafe {
        match fast {
            None => return ptr::null_mut(),
            Some((false, slow)) => {
                let done = unguarded::call_method(slf, slow, &[job]);
                if done.is_null() {
                    return ptr::null_mut();
                }
                ffi::Py_DECREF(done);
            }
            Some((true, _)) => {}
        }
        let none = ffi::Py_None();
        ffi::Py_INCREF(none);
        none
    }
}

static NEXT: Method = Method::no_args_or_one(
    c"__next__",
    next,
    ffi::METH_NOARGS,
    c"__next__($self, /)
--

The next job, blocking until one is available.

Jobs come from a prefetched batch acquired with one record; the batch size adapts
(doubling or halving) so a batch is about 50 ms of the application's work, at most
`prefetch` jobs.",
);

/// `ack`'s docstring, with its signature.
const ACK_DOC: &CStr = c"ack($self, job, /)
--

Marks `job` done: it is never delivered again.

When the acknowledgement is durable (written to the queue's journal, fsynced as the
store's `fsync` policy says):

- at once, before `ack` returns, when it settles the last unsettled job of the batch
  the job came from (a job from `acquire` is a batch of one), or when less than half
  the lock timeout is left on the job;
- otherwise it is buffered in this member and written, together with the other
  buffered ones, by this member's next change of the queue's state: acquiring the
  next batch (iterating: when the prefetched jobs run out), `flush`, `ack_many`,
  `release`, `reject`, `extend` or `close`.

A member killed before then loses its buffered acks: those jobs are delivered again
after their lock timeout (at-least-once), as unsent acknowledgements of a Kafka share
consumer are.

Raises `TypeError` if `job` is not a `Job`, and `LockLostError` if this member no
longer holds the job (its lock expired and another member took it, or it was already
settled).";

static ACK: Method = Method::no_args_or_one(c"ack", ack, ffi::METH_O, ACK_DOC);

/// Makes `__next__` and `ack` methods of `JobBuffer` (see above).
pub(crate) fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let tp = m.py().get_type::<JobBuffer>();
    unguarded::install(&tp, &NEXT)?;
    unguarded::install(&tp, &ACK)
}
