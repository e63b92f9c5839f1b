//! Methods whose calls back into Python run outside PyO3's panic guard.
//!
//! A daemon thread that takes the GIL back while the interpreter finalizes (CPython 3.11 to
//! 3.13) is ended by `pthread_exit`, a forced unwind. A forced unwind that meets a panic
//! guard (`catch_unwind`, which PyO3 puts around every method and slot) aborts the process:
//! "FATAL: exception not rethrown", exit status 134. Python code called from a native
//! method may let go of the GIL (any bytecode when another thread asks for it, a contended
//! lock, librdkafka's poll), so a process that ended while a daemon thread was inside such
//! a call aborted. Measured on the dev VM: 17 of 20 processes that ended while a daemon
//! thread sent through a `kafka://` producer, 4 of 12 that ended while three daemon threads
//! worked one work-queue member.
//!
//! A method made here runs its Rust part under a guard of its own ([`rust_part`]) and
//! makes its calls back into Python after it, in a frame that has no guard and owns nothing
//! to drop (raw pointers, released by hand), through which a forced unwind passes. PyO3's
//! own waits are not a concern: a thread re-attaching during finalization hangs there.
//!
//! A method made here also skips PyO3's argument handling, ~8% of the instructions of a hot
//! call with keywords: `Topic.append` and the producers' sends are made here for that (see
//! `hot_methods`), their arguments sorted by [`crate::fastcall`] as `KafkaSender.send`'s are.
//!
//! Design note (a module with `unsafe`, see STYLE.md): PyO3 cannot leave the guard out;
//! the alternative, Python methods over native fast paths, cost the common call the time
//! the native paths were made to save.
//!
//! Invariants (cited by the `SAFETY` comments here and in the modules using it):
//! 1. CPython calls a method made here with the GIL held and `slf` an object of the type it
//!    was installed on or a subclass (a method descriptor checks its `self`); its arguments
//!    are borrowed for the call.
//! 2. A [`Method`]'s entry, and the names it calls back (interned by PyO3 for the process's
//!    life), are `'static`, so the descriptor made from it outlives every call.
//! 3. From the end of [`rust_part`] to its return, a method's frame holds only raw pointers:
//!    each owned reference is released by hand once the call it feeds returned, so a forced
//!    unwind through the frame runs no destructor (none may run without the GIL).

#![allow(unsafe_code)]

use std::ffi::{c_int, CStr};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::errors::TidelogError;

/// A method's table entry (invariant 2).
pub(crate) struct Method(pub(crate) ffi::PyMethodDef);

// SAFETY: the entry is never written after it is built (only CPython reads it).
unsafe impl Sync for Method {}

/// The C type of a `METH_NOARGS` or `METH_O` method, unwinding.
pub(crate) type NoArgsFn =
    unsafe extern "C-unwind" fn(*mut ffi::PyObject, *mut ffi::PyObject) -> *mut ffi::PyObject;

/// The C type of a `METH_FASTCALL | METH_KEYWORDS` method, unwinding.
pub(crate) type FastKeywordsFn = unsafe extern "C-unwind" fn(
    *mut ffi::PyObject,
    *const *mut ffi::PyObject,
    ffi::Py_ssize_t,
    *mut ffi::PyObject,
) -> *mut ffi::PyObject;

// The entries below hand CPython a "C-unwind" function as the "C" type it calls: the same
// function type but for the ABI's unwinding, which lets a forced unwind pass through it
// (invariant 3).
impl Method {
    /// A `METH_NOARGS` or `METH_O` (`flags`) entry for `f`; `doc` starts with its signature.
    pub(crate) const fn no_args_or_one(
        name: &'static CStr,
        f: NoArgsFn,
        flags: c_int,
        doc: &'static CStr,
    ) -> Self {
        let meth = ffi::PyMethodDefPointer {
            // SAFETY: see above.
            PyCFunction: unsafe { std::mem::transmute::<NoArgsFn, ffi::PyCFunction>(f) },
        };
        Method(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: meth,
            ml_flags: flags,
            ml_doc: doc.as_ptr(),
        })
    }

    /// A `METH_FASTCALL | METH_KEYWORDS` entry for `f`; `doc` starts with its signature.
    pub(crate) const fn fast_with_keywords(
        name: &'static CStr,
        f: FastKeywordsFn,
        doc: &'static CStr,
    ) -> Self {
        let meth = ffi::PyMethodDefPointer {
            // SAFETY: see above.
            PyCFunctionFastWithKeywords: unsafe {
                std::mem::transmute::<FastKeywordsFn, ffi::PyCFunctionFastWithKeywords>(f)
            },
        };
        let flags = ffi::METH_FASTCALL | ffi::METH_KEYWORDS;
        Method(ffi::PyMethodDef {
            ml_name: name.as_ptr(),
            ml_meth: meth,
            ml_flags: flags,
            ml_doc: doc.as_ptr(),
        })
    }
}

/// Runs `f`, the Rust part of method `what`, under a panic guard: `None` once its error (or
/// a panic, as `TidelogError`) is the raised exception.
///
/// # Safety
/// Invariant 1: called by such a method, with the GIL held.
pub(crate) unsafe fn rust_part<T>(what: &str, f: impl FnOnce(Python<'_>) -> PyResult<T>) -> Option<T> {
    // SAFETY: invariant 1: the GIL is held.
    let py = unsafe { Python::assume_attached() };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(py))) {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            e.restore(py);
            None
        }
        Err(_) => {
            TidelogError::new_err(format!("internal error in {what} (a bug)")).restore(py);
            None
        }
    }
}

/// Makes `method` the method of `tp` under its name (a special method such as `__next__`
/// also sets the slot, which then calls it).
pub(crate) fn install(tp: &Bound<'_, PyType>, method: &'static Method) -> PyResult<()> {
    // SAFETY: `tp` is a live type; the entry is `'static` (invariant 2) and
    // `PyDescr_NewMethod` only reads it; it returns a new reference (or null with an
    // exception set), which `from_owned_ptr_or_err` takes; `ml_name` is a C string.
    let (descr, name) = unsafe {
        let entry = std::ptr::addr_of!(method.0).cast_mut();
        let descr = Bound::from_owned_ptr_or_err(tp.py(), ffi::PyDescr_NewMethod(tp.as_ptr().cast(), entry))?;
        (descr, std::ffi::CStr::from_ptr(method.0.ml_name))
    };
    tp.setattr(name.to_string_lossy().as_ref(), descr)
}

/// Calls `slf.name(*args)` (borrowed arguments), returning the result or null with the
/// exception set.
///
/// # Safety
/// The GIL is held, `name` is a str and every argument a live object. It may let go of
/// the GIL: the caller's frame keeps invariant 3.
pub(crate) unsafe fn call_method(
    slf: *mut ffi::PyObject,
    name: *mut ffi::PyObject,
    args: &[*mut ffi::PyObject],
) -> *mut ffi::PyObject {
    // SAFETY: as documented. The tuple takes a reference of its own to each argument
    // (`PyTuple_SetItem` steals the one made for it) and is released, with the bound
    // method, once the call returned; a failed `PyTuple_New` or attribute lookup returns
    // null with the exception set.
    unsafe {
        let method = ffi::PyObject_GetAttr(slf, name);
        if method.is_null() {
            return std::ptr::null_mut();
        }
        let tuple = ffi::PyTuple_New(args.len() as ffi::Py_ssize_t);
        if tuple.is_null() {
            ffi::Py_DECREF(method);
            return std::ptr::null_mut();
        }
        for (i, &arg) in args.iter().enumerate() {
            ffi::Py_INCREF(arg);
            ffi::PyTuple_SetItem(tuple, i as ffi::Py_ssize_t, arg);
        }
        let result = ffi::PyObject_Call(method, tuple, std::ptr::null_mut());
        ffi::Py_DECREF(tuple);
        ffi::Py_DECREF(method);
        result
    }
}
