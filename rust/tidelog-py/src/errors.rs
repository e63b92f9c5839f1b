//! The exception tree and the one place engine errors become Python exceptions.
//!
//! The classes are registered under their public module path, `tidelog.errors` (which
//! re-exports them), so pickle finds them: an error raised in a worker process is raised
//! again in the parent as the same class with the same message.

use std::path::Path;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use tidelog_core::Error;

create_exception!(tidelog.errors, TidelogError, PyException, "Base class of every error tidelog raises.");
create_exception!(tidelog.errors, TopicNotFoundError, TidelogError, "The topic does not exist.");
create_exception!(tidelog.errors, TopicExistsError, TidelogError, "A topic with this name already exists.");
create_exception!(
    tidelog.errors,
    PartitionNotFoundError,
    TidelogError,
    "The partition number is outside the topic's partitions."
);
create_exception!(
    tidelog.errors,
    OffsetOutOfRangeError,
    TidelogError,
    "The offset is below the partition's start offset or above its end offset."
);
create_exception!(
    tidelog.errors,
    CorruptRecordError,
    TidelogError,
    "Stored bytes failed a check (CRC, length, version); the message names the file and offset."
);
create_exception!(
    tidelog.errors,
    MessageTooLargeError,
    TidelogError,
    "A message exceeds max_message_bytes, or a batch does not fit in a segment."
);
create_exception!(
    tidelog.errors,
    BackpressureError,
    TidelogError,
    "The producer is under pressure and on_full=\"raise\"."
);
create_exception!(
    tidelog.errors,
    OutOfOrderSequenceError,
    TidelogError,
    "An idempotent producer's batch skipped a sequence number."
);
create_exception!(
    tidelog.errors,
    ProducerFencedError,
    TidelogError,
    "A newer instance of this producer name has opened."
);
create_exception!(
    tidelog.errors,
    RebalanceError,
    TidelogError,
    "The consumer no longer owns the partition, or its group generation is stale."
);
create_exception!(
    tidelog.errors,
    StoreLockedError,
    TidelogError,
    "A lock the operation needs cannot be taken."
);
create_exception!(
    tidelog.errors,
    StoreClosedError,
    TidelogError,
    "The store (or the object made from it) is closed."
);
create_exception!(
    tidelog.errors,
    InvalidConfigError,
    TidelogError,
    "A setting or argument value is not acceptable; the message names it."
);

static STORAGE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `tidelog.StorageError(TidelogError, OSError)`: an operating-system failure (a full disk, a
/// read-only directory, a store path that is a file). `except OSError` and
/// `except tidelog.TidelogError` both catch it; `errno`, `strerror` and `filename` are set.
///
/// Made by calling `type()`, because `create_exception!` takes a single base class.
pub fn storage_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    let ty = STORAGE_ERROR.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let bases = PyTuple::new(py, [py.get_type::<TidelogError>(), py.get_type::<PyOSError>()])?;
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "tidelog.errors")?;
        namespace.set_item(
            "__doc__",
            "An operating-system failure (a full disk, a read-only or missing directory, a store \
             path that is a file): both a TidelogError and an OSError, with errno, strerror \
             (what was being done, and the system's message) and filename set.",
        )?;
        let made = py.get_type::<PyType>().call1(("StorageError", bases, namespace))?;
        Ok(made.cast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py))
}

/// The errno of an I/O error; errors made without one get the closest code (EIO if none).
fn errno_of(source: &std::io::Error) -> i32 {
    use std::io::ErrorKind as K;
    source.raw_os_error().unwrap_or(match source.kind() {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::AlreadyExists => libc::EEXIST,
        K::StorageFull => libc::ENOSPC,
        K::ReadOnlyFilesystem => libc::EROFS,
        K::FileTooLarge => libc::EFBIG,
        K::InvalidInput => libc::EINVAL,
        K::Interrupted => libc::EINTR,
        K::WouldBlock => libc::EAGAIN,
        K::NotADirectory => libc::ENOTDIR,
        K::IsADirectory => libc::EISDIR,
        K::DirectoryNotEmpty => libc::ENOTEMPTY,
        // io::ErrorKind is non-exhaustive; everything else is a failed read or write.
        _ => libc::EIO,
    })
}

/// `StorageError(errno, "<op>: <system message>", path)`.
fn storage_err(op: &str, path: &Path, source: &std::io::Error) -> PyErr {
    let code = errno_of(source);
    let system = match source.raw_os_error() {
        // Without Rust's " (os error N)" suffix: OSError shows the errno itself.
        Some(_) => std::io::Error::from_raw_os_error(code)
            .to_string()
            .trim_end_matches(&format!(" (os error {code})"))
            .to_owned(),
        None => source.to_string(),
    };
    let strerror = format!("{op}: {system}");
    Python::attach(|py| match storage_error(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), (code, strerror, path.as_os_str().to_os_string())),
        Err(e) => e,
    })
}

/// Newtype so we can implement `From` for a foreign error into a foreign type.
pub struct CoreError(pub Error);

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        let msg = e.to_string();
        // Exhaustive on purpose: a new engine error must be mapped before this compiles.
        match e {
            Error::Io { op, path, source } => storage_err(op, &path, &source),
            Error::Corrupt { .. } | Error::CorruptState { .. } => CorruptRecordError::new_err(msg),
            Error::TopicNotFound(_) => TopicNotFoundError::new_err(msg),
            Error::TopicExists(_) => TopicExistsError::new_err(msg),
            Error::PartitionNotFound { .. } => PartitionNotFoundError::new_err(msg),
            Error::OffsetOutOfRange { .. } => OffsetOutOfRangeError::new_err(msg),
            Error::MessageTooLarge { .. } => MessageTooLargeError::new_err(msg),
            Error::InvalidConfig(_) => InvalidConfigError::new_err(msg),
            Error::Closed | Error::Forked => StoreClosedError::new_err(msg),
            Error::Locked(_) => StoreLockedError::new_err(msg),
            Error::OutOfOrderSequence(_) => OutOfOrderSequenceError::new_err(msg),
            Error::ProducerFenced(_) => ProducerFencedError::new_err(msg),
            Error::Internal(_) => TidelogError::new_err(msg),
        }
    }
}

/// Converts an engine result for returning to Python.
pub fn to_py<T>(r: tidelog_core::Result<T>) -> PyResult<T> {
    r.map_err(|e| CoreError(e).into())
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TidelogError", py.get_type::<TidelogError>())?;
    m.add("StorageError", storage_error(py)?)?;
    m.add("TopicNotFoundError", py.get_type::<TopicNotFoundError>())?;
    m.add("TopicExistsError", py.get_type::<TopicExistsError>())?;
    m.add("PartitionNotFoundError", py.get_type::<PartitionNotFoundError>())?;
    m.add("OffsetOutOfRangeError", py.get_type::<OffsetOutOfRangeError>())?;
    m.add("CorruptRecordError", py.get_type::<CorruptRecordError>())?;
    m.add("MessageTooLargeError", py.get_type::<MessageTooLargeError>())?;
    m.add("BackpressureError", py.get_type::<BackpressureError>())?;
    m.add("OutOfOrderSequenceError", py.get_type::<OutOfOrderSequenceError>())?;
    m.add("ProducerFencedError", py.get_type::<ProducerFencedError>())?;
    m.add("RebalanceError", py.get_type::<RebalanceError>())?;
    m.add("StoreLockedError", py.get_type::<StoreLockedError>())?;
    m.add("StoreClosedError", py.get_type::<StoreClosedError>())?;
    m.add("InvalidConfigError", py.get_type::<InvalidConfigError>())?;
    Ok(())
}
