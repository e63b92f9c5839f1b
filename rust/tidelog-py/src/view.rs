//! Zero-copy export of mapped segment bytes to Python, and borrowing bytes from Python
//! buffers.
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. A [`ValueBuffer`] holds an `Arc` of the segment mapping, and its range was checked to
//!    lie in the mapping's published bytes, which are never written again while mapped
//!    (`tidelog_core::segment::mmap`, invariant 1); or an `Arc` of a compressed batch's
//!    decompressed image, a heap buffer nothing writes to once made (it is only ever
//!    shared immutably). The exported pointer therefore stays
//!    valid and unchanging for as long as the exporting object lives, and CPython keeps the
//!    exporter alive (via `view->obj`) for as long as any memoryview of it exists.
//! 2. A `PyBuffer` keeps its exporter's memory alive and fixed in place until released.

#![allow(unsafe_code)]

use std::ffi::c_int;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::{ffi, PyTypeInfo};
use tidelog_core::log::ChunkBytes;

/// A read-only view of stored bytes that never copies: `memoryview(buf)` points straight
/// into the memory-mapped segment (or a compressed batch's decompressed image).
#[pyclass(frozen, module = "tidelog._core", name = "ValueBuffer")]
pub struct ValueBuffer {
    map: ChunkBytes,
    start: usize,
    end: usize,
}

impl ValueBuffer {
    /// A buffer over `start..end` of `map`, or `None` if that range is not published.
    pub fn new(map: ChunkBytes, start: usize, end: usize) -> Option<Self> {
        map.read(start, end)?;
        Some(ValueBuffer { map, start, end })
    }

    fn bytes(&self) -> &[u8] {
        self.map.read(self.start, self.end).expect("range checked in new()")
    }
}

#[pymethods]
impl ValueBuffer {
    fn __len__(&self) -> usize {
        self.end - self.start
    }

    /// # Safety
    /// Called by CPython with a valid `view` to fill.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("tidelog buffers are read-only"));
        }
        let this = slf.get();
        let bytes = this.bytes();
        // SAFETY: `view` is valid per CPython's contract; the pointer and length describe
        // bytes that stay valid and unchanged while `slf` lives (invariant 1), and
        // PyBuffer_FillInfo stores a new reference to `slf` in `view->obj`. We pass
        // readonly = 1, so CPython never writes through the cast-away const.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                bytes.as_ptr() as *mut std::ffi::c_void,
                bytes.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if rc == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// # Safety
    /// Called by CPython; nothing to free.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

/// Bytes borrowed from any C-contiguous Python buffer of bytes (bytes, bytearray,
/// memoryview, numpy uint8 arrays, mmap, ...).
pub struct BorrowedBuffer {
    buffer: PyBuffer<u8>,
    /// True when the exporter promises the bytes cannot change (bytes, read-only views):
    /// only then may they be read without the GIL.
    pub immutable: bool,
}

impl BorrowedBuffer {
    /// Borrows `obj`'s buffer.
    ///
    /// # Errors
    /// `TypeError` naming `arg` when `obj` has no C-contiguous byte buffer.
    pub fn get(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<Self> {
        let buffer = PyBuffer::<u8>::get(obj).map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "{arg} must be a bytes-like object, got {}",
                obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
            ))
        })?;
        if !buffer.is_c_contiguous() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "{arg} must be a C-contiguous buffer"
            )));
        }
        let immutable = buffer.readonly() && pyo3::types::PyBytes::is_type_of(obj);
        Ok(BorrowedBuffer { buffer, immutable })
    }

    /// The bytes. Callers without the GIL may only use this when `immutable`.
    pub fn as_slice(&self) -> &[u8] {
        let len = self.buffer.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: the PyBuffer keeps the exporter's memory alive and in place (invariant
        // 2); it is C-contiguous bytes of `len_bytes` length (checked in `get`). Content
        // can only change if Python code mutates a mutable exporter, which needs the GIL:
        // callers read without the GIL only for immutable exporters.
        unsafe { std::slice::from_raw_parts(self.buffer.buf_ptr() as *const u8, len) }
    }
}
