//! The two objects of an async send, as types built from a `PyType_Spec`: `SendDone`, an
//! awaitable that is already over, for `await producer.send(...)` when the message went
//! into the buffer at once, and `SendResult`, what that await gives (the message's
//! partition and receipt; `await` it for `(partition, offset)`). Awaiting a `SendDone`
//! costs no coroutine frame and, on CPython 3.11, no exception either: awaits and asyncio
//! tasks drive it through the `am_send` slot (`PyIter_Send`), which hands the result back
//! directly. PyO3 classes cannot fill that slot, hence this small type built from a
//! `PyType_Spec`. (CPython 3.12 and later drive awaits through `tp_iternext`, which raises
//! `StopIteration(result)`.)
//!
//! Design note (a fourth module with `unsafe`, see STYLE.md): measured on the dev VM, an
//! `await` of a PyO3 awaitable whose `__next__` raises `StopIteration` cost ~120 ns, more
//! than an empty coroutine (~75 ns), against ~250 ns for the whole send; through `am_send`
//! the await costs a few ns. The alternative, a coroutine around the send, keeps its frame.
//!
//! A `SendDone` is awaited once, as a coroutine is: the await takes its result (a second
//! await raises `RuntimeError`), so an awaited one holds nothing. The last one made is kept
//! as the spare and reused by the next send once nothing else holds it (the common `await
//! producer.send(...)` drops it as soon as the await is over): a send then costs no
//! allocation and no deallocation of the awaitable (measured with the spare: see
//! `benches/results/aio-issue15.md`).
//!
//! `SendResult` is made here too, for the same reasons: every PyO3 class is GC-tracked (a
//! link and unlink per object, and a young-generation collection every 700 of them) and
//! PyO3's freelist takes a mutex per allocation and release; the PyO3 class cost ~38 ns of
//! the sending thread per send (measured: the same send without it). This one is not
//! GC-tracked (it refers only to its producer, which never refers back to it natively) and
//! is reused as `SendDone` is: the last one made is the spare, rewritten by the next send
//! once nothing else holds it.
//!
//! A `SendResult` reads its message's outcome from the producer's ledger (see
//! `tidelog_core::producer::receipt`), whose slot is reused some tracked messages later. The
//! next tracked send (of any producer: [`keep_spare`], before it buffers its message) asks
//! the ledger for a receipt of its own for the spare if anything else still holds it; a
//! result nothing held then was rewritten or freed, so no result ever reads a reused slot.
//! Before this, every message had its own receipt (an allocation the writer freed, and a
//! cache line both threads wrote): ~0.1 of the `await send` / `send` throughput ratio
//! (benches/results/aio-issue15.md).
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. Every object of the type is made by [`new`] (the type cannot be instantiated from
//!    Python: `Py_TPFLAGS_DISALLOW_INSTANTIATION`): a `Done` whose `result` is a strong
//!    reference stored before the object is handed out, or null once an await took it (the
//!    taker owns that reference); `dealloc` and a reuse release what is left. The type is
//!    not subclassable, immutable and not GC-tracked: `result` (a `SendResult`) never refers
//!    back to it.
//! 2. The type object is made once and held forever by [`TYPE`] (a strong reference), so
//!    its slots and method table (`'static` data) outlive every object.
//! 3. CPython calls every slot and method with the GIL held and `slf` an object of this
//!    type (methods of a non-subclassable type are only found on its own objects).
//! 4. [`SPARE`] is null or one strong reference to an object of this type, read and written
//!    only with the GIL held (the module is built for the GIL-holding ABI, abi3), so its
//!    loads and stores need no ordering. An object is reused only while that reference is
//!    its only one (`Py_REFCNT == 1`): nothing else can see its `result` change.
//! 5. Every `SendResult` is made by [`new_result`] (`Py_TPFLAGS_DISALLOW_INSTANTIATION`): a
//!    [`Meta`] whose `owner` is a strong reference (never null) and whose other fields are
//!    initialised before the object is handed out; `result_dealloc` releases `owner` and
//!    drops `ledger` and `receipt` exactly once, a reuse replaces them (releasing the old
//!    ones). The type is not subclassable, immutable and not GC-tracked, and supports no
//!    weak references. [`RESULT_TYPE`] and [`RESULT_SPARE`] keep invariants 2 to 4 for it
//!    (its methods and getters are only found on its own objects).
//! 6. The one write to a `SendResult` that others may hold: [`keep_spare`] sets the spare's
//!    `receipt` (from None) to a receipt of the same message, which gives the same outcome
//!    from then on; it runs no Python code, and no reference to a `Meta` outlives a slot
//!    call (invariant 3, [`meta`]), so none is alive meanwhile.

#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use std::sync::Arc;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use tidelog_core::producer::receipt::{Ledger, Outcome, Receipt};

use crate::errors::{BackpressureError, TidelogError};

/// An object of the type: the object header, then the result.
#[repr(C)]
struct Done {
    ob_base: ffi::PyObject,
    result: *mut ffi::PyObject,
}

/// The type object (invariant 2).
static TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The object the next [`new`] reuses if nothing else holds it (invariant 4).
static SPARE: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());

type SendFunc = unsafe extern "C" fn(
    *mut ffi::PyObject,
    *mut ffi::PyObject,
    *mut *mut ffi::PyObject,
) -> ffi::PySendResult;

/// Takes the result (the caller owns the reference), or raises `RuntimeError` and returns
/// null when an earlier await took it.
///
/// # Safety
/// `slf` is an object of this type (invariant 3) and the GIL is held.
unsafe fn take(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `slf` is a `Done` (invariant 3) whose `result` is a strong reference or null
    // (invariant 1); moving it out leaves null, so it is released once, by the taker.
    unsafe {
        let done = slf.cast::<Done>();
        let result = (*done).result;
        (*done).result = ptr::null_mut();
        if result.is_null() {
            ffi::PyErr_SetString(
                ffi::PyExc_RuntimeError,
                c"cannot reuse an already awaited send (a SendDone is awaited once)".as_ptr(),
            );
        }
        result
    }
}

/// `am_await` and `tp_iter`: the object is its own iterator.
unsafe extern "C" fn itself(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `slf` is a live object (invariant 3); the GIL is held.
    unsafe { ffi::Py_INCREF(slf) };
    slf
}

/// `am_send`: over at once, returning the result (no exception is made).
unsafe extern "C" fn am_send(
    slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    out: *mut *mut ffi::PyObject,
) -> ffi::PySendResult {
    // SAFETY: invariant 3; `out` is CPython's result pointer, written once here (null with
    // the exception set, as `PYGEN_ERROR` requires).
    unsafe {
        let result = take(slf);
        *out = result;
        if result.is_null() {
            ffi::PySendResult::PYGEN_ERROR
        } else {
            ffi::PySendResult::PYGEN_RETURN
        }
    }
}

/// Raises `StopIteration(result)`, as a finished coroutine's `send` does.
///
/// # Safety
/// As [`result`].
unsafe fn stop(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: invariant 3. The result is a `SendResult`, never a tuple or an exception,
    // so `PyErr_SetObject` makes it the `StopIteration`'s value; null already raised.
    unsafe {
        let value = take(slf);
        if !value.is_null() {
            ffi::PyErr_SetObject(ffi::PyExc_StopIteration, value);
            ffi::Py_DECREF(value);
        }
    }
    ptr::null_mut()
}

/// `tp_iternext` (the await of CPython 3.12 and later).
unsafe extern "C" fn iternext(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: invariant 3.
    unsafe { stop(slf) }
}

/// `send(value)`, as a coroutine's.
unsafe extern "C" fn send(slf: *mut ffi::PyObject, _arg: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: invariant 3.
    unsafe { stop(slf) }
}

/// `throw(type[, value[, traceback]])`, as a coroutine's: nothing is left to clean up, so
/// it raises what it is given.
unsafe extern "C" fn throw(_slf: *mut ffi::PyObject, args: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: CPython passes the positional arguments as a tuple (METH_VARARGS) with the
    // GIL held; `PyTuple_GetItem` returns borrowed references valid while `args` is.
    unsafe {
        let n = ffi::PyTuple_Size(args);
        if !(1..=3).contains(&n) {
            ffi::PyErr_SetString(ffi::PyExc_TypeError, c"throw expected 1 to 3 arguments".as_ptr());
            return ptr::null_mut();
        }
        let typ = ffi::PyTuple_GetItem(args, 0);
        let val = if n > 1 { ffi::PyTuple_GetItem(args, 1) } else { ptr::null_mut() };
        if !val.is_null() && ffi::Py_IsNone(val) == 0 {
            if ffi::PyExceptionInstance_Check(val) != 0 {
                ffi::PyErr_SetObject(ffi::Py_TYPE(val).cast(), val);
            } else {
                ffi::PyErr_SetObject(typ, val);
            }
        } else if ffi::PyExceptionInstance_Check(typ) != 0 {
            ffi::PyErr_SetObject(ffi::Py_TYPE(typ).cast(), typ);
        } else if ffi::PyExceptionClass_Check(typ) != 0 {
            ffi::PyErr_SetNone(typ);
        } else {
            ffi::PyErr_SetString(ffi::PyExc_TypeError, c"exceptions must derive from BaseException".as_ptr());
        }
    }
    ptr::null_mut()
}

/// `close()`, as a coroutine's: nothing to do.
unsafe extern "C" fn close(_slf: *mut ffi::PyObject, _arg: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: the GIL is held (invariant 3); `Py_None` is immortal enough to hand out a
    // new reference to.
    unsafe {
        let none = ffi::Py_None();
        ffi::Py_INCREF(none);
        none
    }
}

/// `tp_dealloc`: releases the result (invariant 1), the memory and the type reference every
/// object of a heap type holds.
unsafe extern "C" fn dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: invariants 1 and 3: `slf` is a `Done` being destroyed, its `result` is
    // released here only; `tp_free` is the allocator `PyType_GenericAlloc` used.
    unsafe {
        let tp = ffi::Py_TYPE(slf);
        // Null once awaited (invariant 1).
        ffi::Py_XDECREF((*slf.cast::<Done>()).result);
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

/// The method table (`'static`, invariant 2).
struct Methods([ffi::PyMethodDef; 4]);

// SAFETY: the table is never written after it is built (only CPython reads it).
unsafe impl Sync for Methods {}

static METHODS: Methods = Methods([
    ffi::PyMethodDef {
        ml_name: c"send".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: send },
        ml_flags: ffi::METH_O,
        ml_doc: c"Over at once: raises StopIteration with the SendResult (once).".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"throw".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: throw },
        ml_flags: ffi::METH_VARARGS,
        ml_doc: c"Raises the exception given.".as_ptr(),
    },
    ffi::PyMethodDef {
        ml_name: c"close".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: close },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"Nothing to close.".as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
]);

/// The type object, made at the first call.
fn send_done_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    TYPE.get_or_try_init(py, || {
        let slot = |slot: c_int, pfunc: *mut c_void| ffi::PyType_Slot { slot, pfunc };
        let mut slots = [
            slot(ffi::Py_am_await, itself as *mut c_void),
            slot(ffi::Py_am_send, am_send as SendFunc as *mut c_void),
            slot(ffi::Py_tp_iter, itself as *mut c_void),
            slot(ffi::Py_tp_iternext, iternext as *mut c_void),
            slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
            slot(ffi::Py_tp_methods, METHODS.0.as_ptr().cast_mut().cast()),
            slot(
                ffi::Py_tp_doc,
                c"An awaitable already over: `await` gives its SendResult at once (awaited once, as a coroutine)."
                    .as_ptr()
                    .cast_mut()
                    .cast(),
            ),
            ffi::PyType_Slot::default(),
        ];
        let mut spec = ffi::PyType_Spec {
            name: c"tidelog._core.SendDone".as_ptr(),
            basicsize: std::mem::size_of::<Done>() as c_int,
            itemsize: 0,
            flags: (ffi::Py_TPFLAGS_DEFAULT
                | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION
                | ffi::Py_TPFLAGS_IMMUTABLETYPE) as std::ffi::c_uint,
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: the spec and slots are valid for the call (CPython copies what it keeps);
        // the method table and doc are `'static` (invariant 2); the GIL is held.
        let tp = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
        Ok(tp.unbind())
    })
    .map(|tp| tp.bind(py))
}

/// A `SendDone` whose await gives `result`: the spare when nothing else holds it, else a new
/// one (which becomes the spare).
pub(crate) fn new<'py>(py: Python<'py>, result: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let spare = SPARE.load(Ordering::Relaxed);
    // SAFETY: the GIL is held (`py`); `spare` is null or a live object of this type that
    // `SPARE` holds a reference to (invariant 4). With a reference count of 1 nothing else
    // holds it, so its `result` (null once awaited, or a reference it owns: invariant 1) is
    // replaced unseen. The old result is released last: that may run any code (a
    // `SendResult` releases its producer), even a send, which then finds everything
    // consistent (it sees two references and makes a new spare).
    unsafe {
        if !spare.is_null() && ffi::Py_REFCNT(spare) == 1 {
            let done = spare.cast::<Done>();
            let old = (*done).result;
            (*done).result = result.into_ptr();
            ffi::Py_INCREF(spare);
            ffi::Py_XDECREF(old);
            return Ok(Bound::from_owned_ptr(py, spare));
        }
    }
    let tp = send_done_type(py)?;
    // SAFETY: `tp` is this module's type object, alive (invariant 2); `PyType_GenericAlloc`
    // returns a zeroed object (or null with an exception set) holding a reference to its
    // type; the result is stored before the object is handed out (invariant 1). `SPARE`
    // takes a reference of its own, and drops the one it held last (invariant 4).
    unsafe {
        let obj = ffi::PyType_GenericAlloc(tp.as_ptr().cast(), 0);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        (*obj.cast::<Done>()).result = result.into_ptr();
        ffi::Py_INCREF(obj);
        let old = SPARE.swap(obj, Ordering::Relaxed);
        ffi::Py_XDECREF(old);
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

/// Adds the types to the module as `SendDone` and `SendResult`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SendDone", send_done_type(m.py())?)?;
    m.add("SendResult", result_type(m.py())?)
}

// --------------------------------------------------------------------------- SendResult

/// A `SendResult`: the object header, then what the send knew (invariant 5).
#[repr(C)]
struct Meta {
    ob_base: ffi::PyObject,
    /// The `tidelog.aio.Producer` that sent it (its `_written` does the waiting).
    owner: *mut ffi::PyObject,
    /// Where the writer reports the message's outcome, at `seq`; `None` when shed at the
    /// send.
    ledger: Option<Arc<Ledger>>,
    /// The message's own receipt, once something held this result at a later send
    /// (invariant 6); it then gives the outcome.
    receipt: Option<Arc<Receipt>>,
    seq: u64,
    target: u64,
    partition: u32,
    accepted: bool,
}

/// The `SendResult` type object (invariants 2 and 5).
static RESULT_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The `SendResult` the next [`new_result`] reuses if nothing else holds it (invariant 4).
static RESULT_SPARE: AtomicPtr<ffi::PyObject> = AtomicPtr::new(ptr::null_mut());

/// Before a tracked send buffers its message: gives the spare `SendResult` a receipt of its
/// own if anything but `RESULT_SPARE` holds it (see the module docs), so that it never reads
/// a ledger slot reused by the sends after it.
pub(crate) fn keep_spare(_py: Python<'_>) {
    let spare = RESULT_SPARE.load(Ordering::Relaxed);
    // SAFETY: the GIL is held (`_py`); `spare` is null or a live `SendResult` (invariants 4
    // and 5); writing its `receipt` while others hold it is invariant 6.
    unsafe {
        if !spare.is_null() && ffi::Py_REFCNT(spare) > 1 {
            let meta = spare.cast::<Meta>();
            if (*meta).receipt.is_none() {
                if let Some(ledger) = &(*meta).ledger {
                    let kept = ledger.keep((*meta).seq);
                    (*meta).receipt = Some(kept);
                }
            }
        }
    }
}

/// A `SendResult` for a message sent by `owner`, whose outcome goes to `ledger` at `seq`
/// (`None`: shed at the send): the spare when nothing else holds it, else a new one (which
/// becomes the spare).
pub(crate) fn new_result<'py>(
    owner: &Bound<'py, PyAny>,
    target: u64,
    accepted: bool,
    partition: u32,
    ledger: Option<(&Arc<Ledger>, u64)>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = owner.py();
    let (ledger, seq) = match ledger {
        Some((ledger, seq)) => (Some(ledger), seq),
        None => (None, 0),
    };
    let spare = RESULT_SPARE.load(Ordering::Relaxed);
    // SAFETY: the GIL is held (`py`); `spare` is null or a live `SendResult` that
    // `RESULT_SPARE` holds a reference to (invariants 4 and 5). With a reference count of 1
    // nothing else holds it, so its fields are rewritten unseen; the old owner is released
    // last, after every field is consistent (its release may run any code, even a send).
    unsafe {
        if !spare.is_null() && ffi::Py_REFCNT(spare) == 1 {
            let meta = spare.cast::<Meta>();
            let old_receipt = (*meta).receipt.take();
            // The same ledger as the last send's (the common case): no reference counting.
            let old_ledger = match (&(*meta).ledger, ledger) {
                (Some(old), Some(new)) if Arc::ptr_eq(old, new) => None,
                _ => std::mem::replace(&mut (*meta).ledger, ledger.cloned()),
            };
            (*meta).seq = seq;
            (*meta).target = target;
            (*meta).partition = partition;
            (*meta).accepted = accepted;
            let old_owner = (*meta).owner;
            let same = old_owner == owner.as_ptr();
            if !same {
                (*meta).owner = owner.clone().into_ptr();
            }
            ffi::Py_INCREF(spare);
            drop(old_receipt);
            drop(old_ledger);
            if !same {
                ffi::Py_DECREF(old_owner);
            }
            return Ok(Bound::from_owned_ptr(py, spare));
        }
    }
    let tp = result_type(py)?;
    // SAFETY: `tp` is the `SendResult` type, alive (invariants 2 and 5);
    // `PyType_GenericAlloc` returns a zeroed object (or null with an exception set) holding
    // a reference to its type. Every field is written (`ptr::write`: the zeroed memory holds
    // nothing to drop) before the object is handed out; `RESULT_SPARE` takes a reference of
    // its own and releases the one it held last (invariant 4).
    unsafe {
        let obj = ffi::PyType_GenericAlloc(tp.as_ptr().cast(), 0);
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let meta = obj.cast::<Meta>();
        ptr::write(&raw mut (*meta).owner, owner.clone().into_ptr());
        ptr::write(&raw mut (*meta).ledger, ledger.cloned());
        ptr::write(&raw mut (*meta).receipt, None);
        ptr::write(&raw mut (*meta).seq, seq);
        ptr::write(&raw mut (*meta).target, target);
        ptr::write(&raw mut (*meta).partition, partition);
        ptr::write(&raw mut (*meta).accepted, accepted);
        ffi::Py_INCREF(obj);
        let old = RESULT_SPARE.swap(obj, Ordering::Relaxed);
        ffi::Py_XDECREF(old);
        Ok(Bound::from_owned_ptr(py, obj))
    }
}

/// The fields of a `SendResult`.
///
/// # Safety
/// `slf` is a `SendResult` (invariant 5) and the GIL is held; the reference does not outlive
/// the slot call that borrows it (no reuse can happen meanwhile: the caller holds `slf`).
unsafe fn meta<'a>(slf: *mut ffi::PyObject) -> &'a Meta {
    // SAFETY: as documented; every field was initialised (invariant 5).
    unsafe { &*slf.cast::<Meta>() }
}

/// Runs a slot's body with the GIL token, turning an error or a panic into a raised
/// exception and a null return (a panic must not unwind into CPython).
fn guarded(body: impl FnOnce(Python<'_>) -> PyResult<*mut ffi::PyObject>) -> *mut ffi::PyObject {
    // SAFETY: CPython calls slots with the GIL held (invariant 3).
    let py = unsafe { Python::assume_attached() };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(py)));
    match outcome {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => {
            e.restore(py);
            ptr::null_mut()
        }
        Err(_) => {
            TidelogError::new_err("internal error in SendResult (a bug)").restore(py);
            ptr::null_mut()
        }
    }
}

/// What became of the message; `None` when shed at the send.
fn outcome(m: &Meta) -> Option<Outcome> {
    match (&m.receipt, &m.ledger) {
        (Some(receipt), _) => Some(receipt.outcome()),
        (None, Some(ledger)) => Some(ledger.outcome(m.seq)),
        (None, None) => None,
    }
}

/// The getters' shared shape: `slf`'s fields to a Python object.
fn get(
    slf: *mut ffi::PyObject,
    field: impl FnOnce(Python<'_>, &Meta) -> PyResult<Py<PyAny>>,
) -> *mut ffi::PyObject {
    guarded(|py| {
        // SAFETY: getters of this type are called on its objects with the GIL held
        // (invariants 3 and 5).
        let m = unsafe { meta(slf) };
        Ok(field(py, m)?.into_ptr())
    })
}

unsafe extern "C" fn get_accepted(slf: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    get(slf, |py, m| Ok(m.accepted.into_pyobject(py)?.to_owned().into_any().unbind()))
}

unsafe extern "C" fn get_target(slf: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    get(slf, |py, m| Ok(m.target.into_pyobject(py)?.into_any().unbind()))
}

unsafe extern "C" fn get_partition(slf: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    get(slf, |py, m| Ok(m.partition.into_pyobject(py)?.into_any().unbind()))
}

unsafe extern "C" fn get_offset(slf: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    get(slf, |py, m| match outcome(m) {
        Some(Outcome::Written(offset)) => Ok(offset.into_pyobject(py)?.into_any().unbind()),
        _ => Ok(py.None()),
    })
}

unsafe extern "C" fn get_producer(slf: *mut ffi::PyObject, _closure: *mut c_void) -> *mut ffi::PyObject {
    // SAFETY: `owner` is a strong reference, never null (invariant 5).
    get(slf, |py, m| Ok(unsafe { Bound::from_borrowed_ptr(py, m.owner) }.unbind()))
}

/// `written_at()`: `(partition, offset)` once written, else None; raises for a message that
/// will never be written.
unsafe extern "C" fn written_at(slf: *mut ffi::PyObject, _arg: *mut ffi::PyObject) -> *mut ffi::PyObject {
    get(slf, |py, m| match outcome(m) {
        None | Some(Outcome::Dropped) => {
            Err(BackpressureError::new_err("the message was dropped by on_full=\"shed\": it is not written"))
        }
        Some(Outcome::Failed) => Err(TidelogError::new_err(
            "the message was not written: its write failed (the failure was raised by the \
             producer's send, flush or close)",
        )),
        Some(Outcome::Pending) => Ok(py.None()),
        Some(Outcome::Written(offset)) => Ok((m.partition, offset).into_pyobject(py)?.into_any().unbind()),
    })
}

/// `am_await`: `producer._written(self).__await__()`.
unsafe extern "C" fn result_await(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    guarded(|py| {
        // SAFETY: invariants 3 and 5; `slf` and `owner` are live references for this call.
        let (this, owner) =
            unsafe { (Bound::from_borrowed_ptr(py, slf), Bound::from_borrowed_ptr(py, meta(slf).owner)) };
        Ok(owner
            .call_method1(intern!(py, "_written"), (this,))?
            .call_method0(intern!(py, "__await__"))?
            .into_ptr())
    })
}

unsafe extern "C" fn result_repr(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    get(slf, |py, m| {
        let text = match (m.accepted, outcome(m)) {
            (false, _) => format!("SendResult(partition={}, accepted=False)", m.partition),
            (true, Some(Outcome::Written(offset))) => {
                format!("SendResult(partition={}, offset={offset})", m.partition)
            }
            (true, _) => format!("SendResult(partition={}, offset=None)", m.partition),
        };
        Ok(text.into_pyobject(py)?.into_any().unbind())
    })
}

/// `tp_dealloc`: releases the owner and the receipt (invariant 5), the memory and the type
/// reference.
unsafe extern "C" fn result_dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: invariants 3 and 5: `slf` is a `Meta` being destroyed; its fields are released
    // here only; `tp_free` is the allocator `PyType_GenericAlloc` used.
    unsafe {
        let tp = ffi::Py_TYPE(slf);
        let meta = slf.cast::<Meta>();
        ptr::drop_in_place(&raw mut (*meta).ledger);
        ptr::drop_in_place(&raw mut (*meta).receipt);
        ffi::Py_XDECREF((*meta).owner);
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

/// The `SendResult` method table (`'static`, invariant 2).
struct ResultMethods([ffi::PyMethodDef; 2]);

// SAFETY: the table is never written after it is built (only CPython reads it).
unsafe impl Sync for ResultMethods {}

static RESULT_METHODS: ResultMethods = ResultMethods([
    ffi::PyMethodDef {
        ml_name: c"written_at".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunction: written_at },
        ml_flags: ffi::METH_NOARGS,
        ml_doc: c"(partition, offset) once the message is written; None while it is not yet.\n\nRaises BackpressureError if on_full=\"shed\" dropped it, TidelogError if its write failed."
            .as_ptr(),
    },
    ffi::PyMethodDef::zeroed(),
]);

type Getter = unsafe extern "C" fn(*mut ffi::PyObject, *mut c_void) -> *mut ffi::PyObject;

/// The `SendResult` getters (`'static`, invariant 2).
struct ResultGetters([ffi::PyGetSetDef; 6]);

// SAFETY: as `ResultMethods`.
unsafe impl Sync for ResultGetters {}

const fn getter(
    name: &'static std::ffi::CStr,
    get: Getter,
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

static RESULT_GETTERS: ResultGetters = ResultGetters([
    getter(c"accepted", get_accepted, c"False when on_full=\"shed\" dropped this very message at the send."),
    getter(
        c"target",
        get_target,
        c"The producer's sent_count() once this message was in: the target of flushed().",
    ),
    getter(c"partition", get_partition, c"The partition the message was sent to."),
    getter(c"offset", get_offset, c"The message's offset once written, else None."),
    getter(c"producer", get_producer, c"The tidelog.aio.Producer that sent it."),
    ffi::PyGetSetDef { name: ptr::null(), get: None, set: None, doc: ptr::null(), closure: ptr::null_mut() },
]);

/// The `SendResult` type object, made at the first call.
fn result_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    RESULT_TYPE
        .get_or_try_init(py, || {
            let slot = |slot: c_int, pfunc: *mut c_void| ffi::PyType_Slot { slot, pfunc };
            type Unary = unsafe extern "C" fn(*mut ffi::PyObject) -> *mut ffi::PyObject;
            let mut slots = [
                slot(ffi::Py_am_await, result_await as Unary as *mut c_void),
                slot(ffi::Py_tp_repr, result_repr as Unary as *mut c_void),
                slot(ffi::Py_tp_dealloc, result_dealloc as *mut c_void),
                slot(ffi::Py_tp_methods, RESULT_METHODS.0.as_ptr().cast_mut().cast()),
                slot(ffi::Py_tp_getset, RESULT_GETTERS.0.as_ptr().cast_mut().cast()),
                slot(
                    ffi::Py_tp_doc,
                    c"What an async send gives: the message is in the buffer. `await` it for the (partition, offset) it was written at."
                        .as_ptr()
                        .cast_mut()
                        .cast(),
                ),
                ffi::PyType_Slot::default(),
            ];
            let mut spec = ffi::PyType_Spec {
                name: c"tidelog._core.SendResult".as_ptr(),
                basicsize: std::mem::size_of::<Meta>() as c_int,
                itemsize: 0,
                flags: (ffi::Py_TPFLAGS_DEFAULT
                    | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION
                    | ffi::Py_TPFLAGS_IMMUTABLETYPE) as std::ffi::c_uint,
                slots: slots.as_mut_ptr(),
            };
            // SAFETY: as for `SendDone`'s spec (invariant 2): CPython copies what it keeps of
            // the spec and slots; the tables and docs are `'static`; the GIL is held.
            let tp = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
            Ok(tp.unbind())
        })
        .map(|tp| tp.bind(py))
}
