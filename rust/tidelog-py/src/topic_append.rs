//! `Topic.append`, made by hand (a method of [`crate::unguarded`], arguments sorted by
//! [`crate::fastcall`]) around [`PyTopic::append_one`], which does the work.
//!
//! Design note (a module with `unsafe`, see STYLE.md): PyO3's keyword handling took ~250
//! of the ~2,960 instructions of `append(value, partition=1)` and ~230 of ~3,010 with
//! `key=` (callgrind, 20,000 calls); `append(value)` gains ~45. The alternatives, fewer
//! parameters or a Python wrapper, change the signature or add a frame. The `SAFETY`
//! comments cite the invariants of `unguarded` and `fastcall`.

#![allow(unsafe_code)]

use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::Borrowed;

use crate::fastcall::{given, Signature};
use crate::topic::PyTopic;
use crate::unguarded::{self, Method};

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
    let rust = |py: Python<'_>| {
        // SAFETY: unguarded's invariant 1: `slf` is borrowed for the call.
        let slf = unsafe { Borrowed::from_ptr(py, slf) };
        let topic = slf.cast::<PyTopic>()?.get();
        // SAFETY: unguarded's invariant 1 is fastcall's.
        let a = unsafe { APPEND.sort(py, args, nargsf, kwnames)? };
        // SAFETY: `value` was given (required): an argument borrowed for the call.
        let value = unsafe { Borrowed::from_ptr(py, a[0]) };
        let [key, headers, partition, timestamp_ms] = [1, 2, 3, 4].map(|i| given(py, &a[i]));
        let done = topic.append_one(
            py,
            &value,
            key.as_deref(),
            headers.as_deref(),
            partition.as_deref(),
            timestamp_ms.as_deref(),
        )?;
        Ok(done.into_pyobject(py)?.into_ptr())
    };
    // SAFETY: unguarded's invariant 1 holds for this call.
    unsafe { unguarded::rust_part("Topic.append", rust) }.unwrap_or(ptr::null_mut())
}

/// `append`'s table entry (unguarded's invariant 2).
static APPEND_METHOD: Method = Method::fast_with_keywords(c"append", append, APPEND_DOC);

/// Makes `append` a method of `Topic`.
pub(crate) fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    unguarded::install(&m.py().get_type::<PyTopic>(), &APPEND_METHOD)
}

/// `append`'s docstring, with its signature for `inspect` (and stubtest).
const APPEND_DOC: &std::ffi::CStr =
    c"append($self, value, *, key=None, headers=None, partition=None, timestamp_ms=None)
--

Appends one message and returns `(partition, offset)`.

With `partition=None` the partition is chosen by the hash of `key` (Kafka's
partitioner, stable across runs), else round-robin. Returns once the message is in
the page cache; with `fsync=\"always\"` once it is on disk.";
