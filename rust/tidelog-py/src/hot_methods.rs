//! The hot calls made by hand (methods of [`crate::unguarded`], arguments sorted by
//! [`crate::fastcall`]): `Topic.append`, `Producer.send` and `AsyncProducer.send` /
//! `send_nowait`, around the plain methods that do their work.
//!
//! Design note (a module with `unsafe`, see STYLE.md): PyO3's keyword handling took ~250
//! of the ~2,960 instructions of `append(value, partition=1)` and ~230 of ~3,010 with
//! `key=` (callgrind, 20,000 calls); `append(value)` gains ~45. The alternatives, fewer
//! parameters or a Python wrapper, change the signature or add a frame. The `SAFETY`
//! comments cite the invariants of `unguarded` and `fastcall`.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::ptr;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::Borrowed;

use crate::aio_send::{try_send, PyAsyncProducer};
use crate::errors::BackpressureError;
use crate::fastcall::{given, required, Signature};
use crate::producer::PyProducer;
use crate::topic::PyTopic;
use crate::unguarded::{self, Method};

/// The C arguments of a `METH_FASTCALL | METH_KEYWORDS` method.
type Call = (*mut ffi::PyObject, *const *mut ffi::PyObject, ffi::Py_ssize_t, *mut ffi::PyObject);

/// Runs `body` (the method `what`) with the call's `self` as a `T` and its arguments sorted
/// by `signature`; its error or panic becomes the raised exception and a null return.
///
/// # Safety
/// Invariant 1 of `unguarded`: `call` is what CPython passed such a method.
unsafe fn method<T: pyo3::PyClass, const N: usize>(
    what: &str,
    signature: &'static Signature<N>,
    (slf, args, nargsf, kwnames): Call,
    body: impl for<'py> FnOnce(
        Python<'py>,
        &Bound<'py, T>,
        [*mut ffi::PyObject; N],
    ) -> PyResult<Bound<'py, PyAny>>,
) -> *mut ffi::PyObject {
    let rust = |py: Python<'_>| {
        // SAFETY: unguarded's invariant 1: `slf` is borrowed for the call.
        let slf = unsafe { Borrowed::from_ptr(py, slf) };
        let slf = slf.cast::<T>()?;
        // SAFETY: unguarded's invariant 1 is fastcall's.
        let a = unsafe { signature.sort(py, args, nargsf, kwnames)? };
        body(py, &slf, a).map(Bound::into_ptr)
    };
    // SAFETY: unguarded's invariant 1 holds for this call.
    unsafe { unguarded::rust_part(what, rust) }.unwrap_or(ptr::null_mut())
}

/// `append`'s parameters.
static APPEND: Signature<5> =
    Signature::new("append", ["value", "key", "headers", "partition", "timestamp_ms"], 1, 1);

/// `Topic.append`.
///
/// # Safety
/// Invariant 1 of `unguarded` (CPython calls it so).
unsafe extern "C-unwind" fn append(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as documented.
    unsafe {
        method::<PyTopic, 5>("Topic.append", &APPEND, (slf, args, nargsf, kwnames), |py, slf, a| {
            let [key, headers, partition, timestamp_ms] = [1, 2, 3, 4].map(|i| given(py, &a[i]));
            let done = slf.get().append_one(
                py,
                &required(py, &a[0]),
                key.as_deref(),
                headers.as_deref(),
                partition.as_deref(),
                timestamp_ms.as_deref(),
            )?;
            done.into_pyobject(py).map(Bound::into_any)
        })
    }
}

/// The parameters of the producers' `send` and `send_nowait`.
static SEND: Signature<6> =
    Signature::new("send", ["topic", "value", "key", "headers", "partition", "priority"], 2, 2);

/// `Producer.send`.
///
/// # Safety
/// Invariant 1 of `unguarded` (CPython calls it so).
unsafe extern "C-unwind" fn send(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as documented.
    unsafe {
        method::<PyProducer, 6>("Producer.send", &SEND, (slf, args, nargsf, kwnames), |py, slf, a| {
            let [key, headers, partition, priority] = [2, 3, 4, 5].map(|i| given(py, &a[i]));
            let sent = slf.get().send_one(
                py,
                &required(py, &a[0]),
                &required(py, &a[1]),
                key.as_deref(),
                headers.as_deref(),
                partition.as_deref(),
                priority.as_deref(),
            )?;
            Ok(pyo3::types::PyBool::new(py, sent).to_owned().into_any())
        })
    }
}

/// `AsyncProducer.send` (`nowait`: `send_nowait`).
///
/// # Safety
/// Invariant 1 of `unguarded`: `call` is what CPython passed such a method.
unsafe fn async_send(what: &str, call: Call, nowait: bool) -> *mut ffi::PyObject {
    // SAFETY: as documented.
    unsafe {
        method::<PyAsyncProducer, 6>(what, &SEND, call, |py, slf, a| {
            let (topic, value) = (required(py, &a[0]), required(py, &a[1]));
            let [key, headers, partition, priority] = [2, 3, 4, 5].map(|i| given(py, &a[i]));
            let (key, headers, partition, priority) =
                (key.as_deref(), headers.as_deref(), partition.as_deref(), priority.as_deref());
            match try_send(slf, &topic, &value, key, headers, partition, priority)? {
                Some(result) if nowait => Ok(result),
                Some(result) => crate::done::new(py, result),
                None if nowait => Err(BackpressureError::new_err(
                    "producer buffer above its high watermark: await send() to wait for room",
                )),
                None => slf.call_method1(
                    intern!(py, "_send_blocked"),
                    (&*topic, &*value, key, headers, partition, priority),
                ),
            }
        })
    }
}

/// `AsyncProducer.send`.
///
/// # Safety
/// Invariant 1 of `unguarded` (CPython calls it so).
unsafe extern "C-unwind" fn aio_send(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as documented.
    unsafe { async_send("AsyncProducer.send", (slf, args, nargsf, kwnames), false) }
}

/// `AsyncProducer.send_nowait`.
///
/// # Safety
/// Invariant 1 of `unguarded` (CPython calls it so).
unsafe extern "C-unwind" fn aio_send_nowait(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: as documented.
    unsafe { async_send("AsyncProducer.send_nowait", (slf, args, nargsf, kwnames), true) }
}

/// The table entries (unguarded's invariant 2).
static APPEND_METHOD: Method = Method::fast_with_keywords(c"append", append, APPEND_DOC);
static SEND_METHOD: Method = Method::fast_with_keywords(c"send", send, SEND_DOC);
static AIO_SEND_METHOD: Method = Method::fast_with_keywords(c"send", aio_send, AIO_SEND_DOC);
static AIO_SEND_NOWAIT_METHOD: Method =
    Method::fast_with_keywords(c"send_nowait", aio_send_nowait, AIO_SEND_NOWAIT_DOC);

/// Makes the methods of this module methods of their classes.
pub(crate) fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    unguarded::install(&py.get_type::<PyTopic>(), &APPEND_METHOD)?;
    unguarded::install(&py.get_type::<PyProducer>(), &SEND_METHOD)?;
    unguarded::install(&py.get_type::<PyAsyncProducer>(), &AIO_SEND_METHOD)?;
    unguarded::install(&py.get_type::<PyAsyncProducer>(), &AIO_SEND_NOWAIT_METHOD)
}

// The docstrings, each with its signature for `inspect` (and stubtest).

const APPEND_DOC: &CStr =
    c"append($self, value, *, key=None, headers=None, partition=None, timestamp_ms=None)
--

Appends one message and returns `(partition, offset)`.

With `partition=None` the partition is chosen by the hash of `key` (Kafka's
partitioner, stable across runs), else round-robin. Returns once the message is in
the page cache; with `fsync=\"always\"` once it is on disk.";

const SEND_DOC: &CStr = c"send($self, topic, value, *, key=None, headers=None, partition=None, priority=None)
--

Enqueues a message for `topic`; returns True, or False when `on_full=\"shed\"` dropped
this very message. The message is written by a background thread: call `flush()` to
wait for it. A `value` of None sends a tombstone (compaction deletes the key).";

const AIO_SEND_DOC: &CStr =
    c"send($self, topic, value, *, key=None, headers=None, partition=None, priority=None)
--

Puts a message into the buffer, waiting (without blocking the loop) for room. A
`value` of None sends a tombstone (compaction deletes the key).

Returns an awaitable giving a `SendResult` (await that for the message's
`(partition, offset)` once written). It is a coroutine only when it has to wait;
otherwise a `SendDone`, which `tidelog.aio` registers as a coroutine type, so
`asyncio.create_task` and `gather` take either.

Raises `BackpressureError` under pressure with `on_full=\"raise\"` (or after
`block_timeout` seconds of waiting with `on_full=\"block\"`), `StoreClosedError` once
the producer or the store is closed.";

const AIO_SEND_NOWAIT_DOC: &CStr =
    c"send_nowait($self, topic, value, *, key=None, headers=None, partition=None, priority=None)
--

`send` for hot loops: never waits, so it needs no `await`; returns the `SendResult`.

Raises `BackpressureError` when the buffer is under pressure (whatever `on_full`
says; nothing was enqueued unless `on_full=\"shed\"` made room): `await send()` waits
for room instead.";
