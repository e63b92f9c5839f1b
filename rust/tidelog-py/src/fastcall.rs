//! The arguments of a method made by [`crate::unguarded`] (`METH_FASTCALL | METH_KEYWORDS`),
//! sorted into one slot per parameter, with the errors CPython gives a wrong call.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. [`Signature::sort`] is called by such a method with what CPython passed it: `args`
//!    holds the positional arguments (as many as `nargsf` says, less its top bit), then one
//!    per name of `kwnames` (a tuple of str, or null); all borrowed for the call, and the
//!    GIL held.

#![allow(unsafe_code)]

use std::ptr;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyString;
use pyo3::Borrowed;

/// A method's parameters: `N` names in the order of its signature, the first `positional`
/// of which may be passed by position and the first `required` of which must be given.
pub(crate) struct Signature<const N: usize> {
    method: &'static str,
    names: [&'static str; N],
    positional: usize,
    required: usize,
    interned: PyOnceLock<[Py<PyString>; N]>,
}

impl<const N: usize> Signature<N> {
    /// `method` names the method in errors (as `method()`).
    pub(crate) const fn new(
        method: &'static str,
        names: [&'static str; N],
        positional: usize,
        required: usize,
    ) -> Self {
        Signature { method, names, positional, required, interned: PyOnceLock::new() }
    }

    /// The call's arguments by parameter (null: not given).
    ///
    /// # Errors
    /// `TypeError` for too many positional arguments, an unknown keyword, a parameter given
    /// twice or a required one missing.
    ///
    /// # Safety
    /// Invariant 1.
    pub(crate) unsafe fn sort(
        &self,
        py: Python<'_>,
        args: *const *mut ffi::PyObject,
        nargsf: ffi::Py_ssize_t,
        kwnames: *mut ffi::PyObject,
    ) -> PyResult<[*mut ffi::PyObject; N]> {
        let mut out = [ptr::null_mut(); N];
        // The top bit is PY_VECTORCALL_ARGUMENTS_OFFSET.
        let nargs = nargsf as usize & (usize::MAX >> 1);
        if nargs > self.positional {
            let s = if self.positional == 1 { "" } else { "s" };
            return Err(PyTypeError::new_err(format!(
                "{}() takes {} positional argument{s} but {nargs} were given",
                self.method, self.positional
            )));
        }
        // SAFETY: invariant 1: `args` holds `nargs` positional arguments, then one per name
        // of `kwnames`.
        unsafe {
            for (i, slot) in out.iter_mut().enumerate().take(nargs) {
                *slot = *args.add(i);
            }
            if !kwnames.is_null() {
                let names =
                    self.interned.get_or_init(py, || self.names.map(|n| PyString::intern(py, n).unbind()));
                for k in 0..ffi::PyTuple_Size(kwnames) {
                    let name = ffi::PyTuple_GetItem(kwnames, k);
                    // Keywords written in the caller's code are interned, as these are: one
                    // pointer comparison each; others compare as strings.
                    let at = names
                        .iter()
                        .position(|n| n.as_ptr() == name)
                        .or_else(|| names.iter().position(|n| ffi::PyUnicode_Compare(name, n.as_ptr()) == 0));
                    let Some(at) = at else {
                        let name = Borrowed::from_ptr(py, name).to_owned();
                        return Err(PyTypeError::new_err(format!(
                            "{}() got an unexpected keyword argument '{name}'",
                            self.method
                        )));
                    };
                    if !out[at].is_null() {
                        return Err(PyTypeError::new_err(format!(
                            "{}() got multiple values for argument '{}'",
                            self.method, self.names[at]
                        )));
                    }
                    out[at] = *args.add(nargs + k as usize);
                }
            }
        }
        if let Some(missing) = (0..self.required).find(|&i| out[i].is_null()) {
            return Err(PyTypeError::new_err(format!(
                "{}() missing required argument '{}'",
                self.method, self.names[missing]
            )));
        }
        Ok(out)
    }
}

/// An argument from [`Signature::sort`] as PyO3 would pass an optional one: `None` when not
/// given or None.
pub(crate) fn given<'a, 'py>(
    py: Python<'py>,
    obj: &'a *mut ffi::PyObject,
) -> Option<Borrowed<'a, 'py, PyAny>> {
    // SAFETY: a non-null pointer here is an argument of the call, borrowed for its length
    // (invariant 1), which the array it is read from does not outlive.
    unsafe { Borrowed::from_ptr_or_opt(py, *obj) }.filter(|o| !o.is_none())
}

/// A required argument from [`Signature::sort`] (one of its first `required`, which `sort`
/// checked were given).
pub(crate) fn required<'a, 'py>(py: Python<'py>, obj: &'a *mut ffi::PyObject) -> Borrowed<'a, 'py, PyAny> {
    // SAFETY: an argument of the call, borrowed for its length (invariant 1), which the
    // array it is read from does not outlive; a null (a parameter `sort` did not require)
    // panics in `from_ptr` rather than being read.
    unsafe { Borrowed::from_ptr(py, *obj) }
}
