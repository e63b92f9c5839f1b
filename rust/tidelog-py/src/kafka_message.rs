//! `KafkaMessage`: a message consumed from Apache Kafka (`tidelog.kafka`), with the read-only
//! attributes of `tidelog.Message`, read when asked from the message object confluent-kafka
//! handed out (a consumer hands out many messages whose headers, say, nobody reads).
//!
//! Design note (a module with `unsafe`, see STYLE.md): the type is built from a
//! `PyType_Spec` without `Py_TPFLAGS_HAVE_GC`, which `#[pyclass]` types always have. CPython
//! starts a collection of its youngest generation once the GC-type objects allocated and not
//! freed since the last one pass 700. A `consume(500)` allocates 500 (confluent-kafka's
//! messages are GC types): the plain loop frees them when it takes the next batch, stays
//! under 700 and never collects. Any GC-type wrapper adds 500 per poll: measured on the dev
//! VM (100,000 messages, polls of 500), the Python wrapper this replaces made 181 young, 17
//! middle and 1-2 full collections per 100,000 messages, 14-48 ms of a ~230 ms round; the
//! plain loop made one (0.1 ms). Rejected: a `#[pyclass]` wrapper (a GC type: the same
//! collections); copying the fields into a `#[pyclass]` and freeing confluent-kafka's
//! message at once (no collections, but 8 method calls through the limited API cost 630
//! ns a message against 250 ns for the plain loop's whole body); untracking `#[pyclass]`
//! objects (their allocation still counts towards a collection).
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. Every object of the type is made by [`wrap`] (the type cannot be instantiated from
//!    Python: `Py_TPFLAGS_DISALLOW_INSTANTIATION`): its `raw` is a strong reference (never
//!    null) stored before the object is handed out and released exactly once by [`dealloc`].
//! 2. The type object is made once and held forever by [`TYPE`] (a strong reference), so its
//!    slots and its getter and method tables (`'static` data) outlive every object.
//! 3. CPython calls every slot, getter and method with the GIL held and `slf` an object of
//!    this type (the type is not subclassable, so only its own objects have its slots).
//! 4. Not being a GC type is sound only without reference cycles through an object: its
//!    one reference, `raw`, is never handed to Python code (there is no accessor), so
//!    nothing can store the wrapper where `raw` would reach it.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

/// An object of the type: the object header, then librdkafka's message.
#[repr(C)]
struct Wrapper {
    ob_base: ffi::PyObject,
    raw: *mut ffi::PyObject,
}

/// The type object (invariant 2).
static TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The attributes, in the order of `fields()`.
const TOPIC: u8 = 0;
const PARTITION: u8 = 1;
const OFFSET: u8 = 2;
const TIMESTAMP_MS: u8 = 3;
const KEY: u8 = 4;
const VALUE: u8 = 5;
const HEADERS: u8 = 6;
const FIELDS: [u8; 7] = [TOPIC, PARTITION, OFFSET, TIMESTAMP_MS, KEY, VALUE, HEADERS];

/// `raw.method()`, which must be bytes or None; anything else is a `TypeError` naming it.
fn bytes_or_none<'py>(raw: &Bound<'py, PyAny>, method: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let got = raw.call_method0(method)?;
    if got.is_none() || got.is_instance_of::<PyBytes>() {
        return Ok(got);
    }
    Err(PyTypeError::new_err(format!(
        "the Kafka message's {method} must be bytes or None, got {}",
        got.get_type().name()?
    )))
}

/// The offset or partition number `raw.method()` gives (-1 when it has none).
fn number<'py>(raw: &Bound<'py, PyAny>, method: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    let got = raw.call_method0(method)?;
    if got.is_none() {
        return Ok((-1i64).into_pyobject(raw.py())?.into_any());
    }
    Ok(got)
}

/// Attribute `field` of the message confluent-kafka message `raw` is.
fn attribute<'py>(raw: &Bound<'py, PyAny>, field: u8) -> PyResult<Bound<'py, PyAny>> {
    let py = raw.py();
    match field {
        TOPIC => {
            let topic = raw.call_method0(intern!(py, "topic"))?;
            Ok(if topic.is_none() { PyString::new(py, "").into_any() } else { topic })
        }
        PARTITION => number(raw, intern!(py, "partition")),
        OFFSET => number(raw, intern!(py, "offset")),
        // confluent-kafka gives (timestamp type, timestamp).
        TIMESTAMP_MS => raw.call_method0(intern!(py, "timestamp"))?.cast_into::<PyTuple>()?.get_item(1),
        KEY => bytes_or_none(raw, intern!(py, "key")),
        VALUE => bytes_or_none(raw, intern!(py, "value")),
        HEADERS => {
            // A new dict each time: messages are read-only. A header without a value is
            // b""; of repeated names, the last one's value counts (dict semantics).
            let dict = PyDict::new(py);
            let pairs = raw.call_method0(intern!(py, "headers"))?;
            if !pairs.is_none() {
                for pair in pairs.try_iter()? {
                    let (name, value): (Bound<'py, PyString>, Bound<'py, PyAny>) = pair?.extract()?;
                    let value = if value.is_none() {
                        PyBytes::new(py, b"").into_any()
                    } else if value.is_instance_of::<PyBytes>() {
                        value
                    } else {
                        PyBytes::new(py, &value.extract::<Vec<u8>>()?).into_any()
                    };
                    dict.set_item(name, value)?;
                }
            }
            Ok(dict.into_any())
        }
        _ => Err(PyValueError::new_err(format!("no KafkaMessage field {field}"))),
    }
}

/// `(topic, partition, offset, timestamp_ms, key, value, headers)` of `raw`.
fn fields<'py>(raw: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let mut items = Vec::with_capacity(FIELDS.len());
    for field in FIELDS {
        items.push(attribute(raw, field)?);
    }
    PyTuple::new(raw.py(), items)
}

/// Runs `f` on the message `slf` wraps and hands its result (or its error) to CPython.
///
/// # Safety
/// `slf` is an object of this type and the GIL is held (invariant 3).
unsafe fn with_raw(
    slf: *mut ffi::PyObject,
    f: impl for<'py> FnOnce(&Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>>,
) -> *mut ffi::PyObject {
    // SAFETY: the GIL is held (invariant 3).
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `slf` is a `Wrapper` whose `raw` is a live strong reference (invariants 1, 3),
    // so a borrowed reference to it is valid while `slf` is, which outlives this call.
    let raw = unsafe { Bound::from_borrowed_ptr(py, (*slf.cast::<Wrapper>()).raw) };
    // A panic must not unwind into CPython: it becomes a PanicException, as in #[pyclass].
    match catch_unwind(AssertUnwindSafe(|| f(&raw))) {
        Ok(Ok(value)) => value.into_ptr(),
        Ok(Err(e)) => {
            e.restore(py);
            ptr::null_mut()
        }
        Err(_) => {
            PanicException::new_err("KafkaMessage panicked").restore(py);
            ptr::null_mut()
        }
    }
}

/// The getter of attribute `F`.
unsafe extern "C" fn get<const F: u8>(slf: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    // SAFETY: invariant 3.
    unsafe { with_raw(slf, |raw| attribute(raw, F)) }
}

/// `fields()`.
unsafe extern "C" fn fields_method(slf: *mut ffi::PyObject, _arg: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: invariant 3.
    unsafe { with_raw(slf, |raw| fields(raw).map(Bound::into_any)) }
}

/// `__repr__`.
unsafe extern "C" fn repr(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: invariant 3.
    unsafe {
        with_raw(slf, |raw| {
            let text = format!(
                "KafkaMessage(topic={}, partition={}, offset={}, key={}, value={})",
                attribute(raw, TOPIC)?.repr()?,
                attribute(raw, PARTITION)?,
                attribute(raw, OFFSET)?,
                attribute(raw, KEY)?.repr()?,
                attribute(raw, VALUE)?.repr()?,
            );
            Ok(PyString::new(raw.py(), &text).into_any())
        })
    }
}

/// `__hash__`: of `(topic, partition, offset)`.
unsafe extern "C" fn hash(slf: *mut ffi::PyObject) -> ffi::Py_hash_t {
    // SAFETY: invariant 3.
    let key = unsafe {
        with_raw(slf, |raw| {
            Ok(PyTuple::new(
                raw.py(),
                [attribute(raw, TOPIC)?, attribute(raw, PARTITION)?, attribute(raw, OFFSET)?],
            )?
            .into_any())
        })
    };
    if key.is_null() {
        return -1;
    }
    // SAFETY: `key` is a new reference to a tuple, released here; the GIL is held.
    unsafe {
        let h = ffi::PyObject_Hash(key);
        ffi::Py_DECREF(key);
        h
    }
}

/// `==` and `!=` compare every field; other comparisons and other types are not implemented.
unsafe extern "C" fn richcompare(
    slf: *mut ffi::PyObject,
    other: *mut ffi::PyObject,
    op: c_int,
) -> *mut ffi::PyObject {
    // SAFETY: the GIL is held and `slf` is of this type (invariant 3); `other` is a live
    // object CPython passes; its type is checked before it is read as a `Wrapper`.
    unsafe {
        if (op != ffi::Py_EQ && op != ffi::Py_NE) || ffi::Py_TYPE(other) != ffi::Py_TYPE(slf) {
            let not_implemented = ffi::Py_NotImplemented();
            ffi::Py_INCREF(not_implemented);
            return not_implemented;
        }
        let theirs = (*other.cast::<Wrapper>()).raw;
        with_raw(slf, |raw| {
            let theirs = Bound::from_borrowed_ptr(raw.py(), theirs);
            let same = fields(raw)?.eq(fields(&theirs)?)?;
            Ok(pyo3::types::PyBool::new(raw.py(), same == (op == ffi::Py_EQ)).to_owned().into_any())
        })
    }
}

/// `tp_dealloc`: releases `raw` (invariant 1), the memory and the type reference every
/// object of a heap type holds.
unsafe extern "C" fn dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: invariants 1 and 3: `slf` is a `Wrapper` being destroyed, its `raw` is
    // released here only; `tp_free` is the allocator `PyType_GenericAlloc` used.
    unsafe {
        let tp = ffi::Py_TYPE(slf);
        ffi::Py_XDECREF((*slf.cast::<Wrapper>()).raw);
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        if free.is_null() {
            ffi::PyObject_Free(slf.cast());
        } else {
            let free: unsafe extern "C" fn(*mut c_void) = std::mem::transmute(free);
            free(slf.cast());
        }
        ffi::Py_DECREF(tp.cast());
    }
}

/// The getter table (`'static`, invariant 2).
struct Getters([ffi::PyGetSetDef; 8]);

// SAFETY: the table is never written after it is built (only CPython reads it).
unsafe impl Sync for Getters {}

const fn getter(
    name: &'static std::ffi::CStr,
    get: ffi::getter,
    doc: &'static std::ffi::CStr,
) -> ffi::PyGetSetDef {
    ffi::PyGetSetDef {
        name: name.as_ptr(),
        get: Some(get),
        set: None,
        doc: doc.as_ptr(),
        closure: ptr::null_mut(),
    }
}

static GETTERS: Getters = Getters([
    getter(c"topic", get::<TOPIC>, c"The topic's name."),
    getter(c"partition", get::<PARTITION>, c"The partition."),
    getter(c"offset", get::<OFFSET>, c"The message's offset in its partition."),
    getter(
        c"timestamp_ms",
        get::<TIMESTAMP_MS>,
        c"Create time (or log-append time, as the topic says), ms since the epoch.",
    ),
    getter(c"key", get::<KEY>, c"The key, or None."),
    getter(c"value", get::<VALUE>, c"The value (None for a tombstone)."),
    getter(c"headers", get::<HEADERS>, c"The headers (a new dict each time: messages are read-only)."),
    ffi::PyGetSetDef { name: ptr::null(), get: None, set: None, doc: ptr::null(), closure: ptr::null_mut() },
]);

/// The method table (`'static`, invariant 2).
struct Methods([ffi::PyMethodDef; 2]);

// SAFETY: the table is never written after it is built (only CPython reads it).
unsafe impl Sync for Methods {}

static METHODS: Methods = Methods([
    ffi::PyMethodDef {
        ml_name: c"fields".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: fields_method },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"``(topic, partition, offset, timestamp_ms, key, value, headers)``.".as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
]);

/// The type object, made at the first call.
fn kafka_message_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    TYPE.get_or_try_init(py, || {
        let slot = |slot: c_int, pfunc: *mut c_void| ffi::PyType_Slot { slot, pfunc };
        let mut slots = [
            slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
            slot(ffi::Py_tp_getset, GETTERS.0.as_ptr().cast_mut().cast()),
            slot(ffi::Py_tp_methods, METHODS.0.as_ptr().cast_mut().cast()),
            slot(ffi::Py_tp_repr, repr as *mut c_void),
            slot(ffi::Py_tp_hash, hash as *mut c_void),
            slot(ffi::Py_tp_richcompare, richcompare as *mut c_void),
            slot(
                ffi::Py_tp_doc,
                c"One message of a Kafka topic, with the read-only attributes of tidelog.Message: \
                  topic, partition, offset, timestamp_ms, key, value, headers."
                    .as_ptr()
                    .cast_mut()
                    .cast(),
            ),
            ffi::PyType_Slot::default(),
        ];
        let mut spec = ffi::PyType_Spec {
            name: c"tidelog._core.KafkaMessage".as_ptr(),
            basicsize: std::mem::size_of::<Wrapper>() as c_int,
            itemsize: 0,
            // No Py_TPFLAGS_HAVE_GC (the point of this module, invariant 4), no BASETYPE
            // (invariant 3).
            flags: (ffi::Py_TPFLAGS_DEFAULT
                | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION
                | ffi::Py_TPFLAGS_IMMUTABLETYPE) as std::ffi::c_uint,
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: the spec and slots are valid for the call (CPython copies what it keeps);
        // the getter and method tables and the doc are `'static` (invariant 2); the GIL is
        // held.
        let tp = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
        Ok(tp.unbind())
    })
    .map(|tp| tp.bind(py))
}

/// A `KafkaMessage` reading from confluent-kafka message `raw`.
fn wrap<'py>(py: Python<'py>, raw: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let tp = kafka_message_type(py)?;
    // SAFETY: `tp` is this module's type object, alive (invariant 2); `PyType_GenericAlloc`
    // returns a zeroed object (or null with an exception set) holding a reference to its
    // type; `raw` is stored before the object is handed out (invariant 1).
    unsafe {
        let obj = ffi::PyType_GenericAlloc(tp.as_ptr().cast(), 0);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        (*obj.cast::<Wrapper>()).raw = raw.into_ptr();
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

/// The messages of a confluent-kafka `consume()` result that carry no error, in order, as
/// `KafkaMessage`s. The caller checks `len(result) != len(raw)` for errors.
#[pyfunction]
pub(crate) fn kafka_messages<'py>(py: Python<'py>, raw: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let error = intern!(py, "error");
    let mut out = Vec::with_capacity(raw.len());
    for m in raw.iter() {
        if m.call_method0(error)?.is_none() {
            out.push(wrap(py, m)?);
        }
    }
    PyList::new(py, out)
}

/// A confluent-kafka message (without error) as a `KafkaMessage`.
#[pyfunction]
pub(crate) fn kafka_message<'py>(py: Python<'py>, raw: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    wrap(py, raw)
}

/// Adds the type to the module as `KafkaMessage`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("KafkaMessage", kafka_message_type(m.py())?)
}
