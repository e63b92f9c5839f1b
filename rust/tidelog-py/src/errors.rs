//! The exception tree and the one place engine errors become Python exceptions.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use tidelog_core::Error;

create_exception!(_core, TidelogError, PyException, "Base class of every error tidelog raises.");
create_exception!(_core, TopicNotFoundError, TidelogError, "The topic does not exist.");
create_exception!(_core, TopicExistsError, TidelogError, "A topic with this name already exists.");
create_exception!(
    _core,
    PartitionNotFoundError,
    TidelogError,
    "The partition number is outside the topic's partitions."
);
create_exception!(
    _core,
    OffsetOutOfRangeError,
    TidelogError,
    "The offset is below the partition's start offset or above its end offset."
);
create_exception!(
    _core,
    CorruptRecordError,
    TidelogError,
    "Stored bytes failed a check (CRC, length, version); the message names the file and offset."
);
create_exception!(
    _core,
    MessageTooLargeError,
    TidelogError,
    "A message exceeds max_message_bytes, or a batch does not fit in a segment."
);
create_exception!(
    _core,
    BackpressureError,
    TidelogError,
    "The producer is under pressure and on_full=\"raise\"."
);
create_exception!(
    _core,
    OutOfOrderSequenceError,
    TidelogError,
    "An idempotent producer's batch skipped a sequence number."
);
create_exception!(
    _core,
    ProducerFencedError,
    TidelogError,
    "A newer instance of this producer name has opened."
);
create_exception!(
    _core,
    RebalanceError,
    TidelogError,
    "The consumer no longer owns the partition, or its group generation is stale."
);
create_exception!(_core, StoreLockedError, TidelogError, "A lock the operation needs cannot be taken.");
create_exception!(_core, StoreClosedError, TidelogError, "The store (or the object made from it) is closed.");
create_exception!(
    _core,
    InvalidConfigError,
    TidelogError,
    "A setting or argument value is not acceptable; the message names it."
);

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
            Error::Io { source, .. } => std::io::Error::new(source.kind(), msg).into(),
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
