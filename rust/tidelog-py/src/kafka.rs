//! The Kafka protocol server's byte work (`tidelog.kafka_server`): Kafka record batches
//! into and out of a topic's partitions, and producer ids for `InitProducerId`. The
//! conversions and their checks are the core's (`tidelog_core::kafka_records`); the server
//! in Python keeps the protocol's policy.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use tidelog_core::kafka_records::{append_kafka_batch, read_kafka_batches};
use tidelog_core::producer::identity::Identity;

use crate::args;
use crate::errors::{to_py, InvalidConfigError};
use crate::gil::run_detached;
use crate::store::PyStore;
use crate::topic::PyTopic;

/// Appends the one Kafka record batch (magic 2) `records` holds to `partition` of `topic`.
///
/// Returns `(error_code, base_offset, duplicate, reason)`: error code 0 when appended (or
/// recognised as an idempotent retry, `duplicate`, at its original `base_offset`), else the
/// Kafka error code for bytes that are not an acceptable batch (nothing appended) and what
/// was wrong. What the store refuses (a sequence gap, an older epoch, a record too large,
/// I/O) raises, as `Topic.append` does.
#[pyfunction]
pub(crate) fn kafka_append(
    py: Python<'_>,
    topic: &PyTopic,
    partition: &Bound<'_, PyAny>,
    records: PyBackedBytes,
) -> PyResult<(i16, u64, bool, Option<String>)> {
    let log = to_py(topic.engine().partition(args::partition(Some(partition))?.unwrap_or(0)))?;
    let done = run_detached(py, || append_kafka_batch(log, &records))?;
    Ok(match done {
        Ok(p) => (0, p.base_offset, p.duplicate, None),
        Err(refusal) => (refusal.code, 0, false, Some(refusal.reason)),
    })
}

/// Reads about `max_bytes` of `partition` of `topic` from `offset` as Kafka record batches.
///
/// Returns `(batches, next_offset)`. With `committed` (`read_committed`) reading stops at
/// the first transaction still open; aborted transactions and markers are passed over.
#[pyfunction]
pub(crate) fn kafka_read<'py>(
    py: Python<'py>,
    topic: &PyTopic,
    partition: &Bound<'_, PyAny>,
    offset: u64,
    max_bytes: usize,
    committed: bool,
) -> PyResult<(Bound<'py, PyBytes>, u64)> {
    let log = to_py(topic.engine().partition(args::partition(Some(partition))?.unwrap_or(0)))?;
    if max_bytes == 0 {
        return Err(InvalidConfigError::new_err("max_bytes must be positive"));
    }
    let fetched = run_detached(py, || read_kafka_batches(log, offset, max_bytes, committed))?;
    Ok((PyBytes::new(py, &fetched.bytes), fetched.next_offset))
}

/// A new producer id from the store-wide counter (`InitProducerId` without a
/// transactional id), unique among every producer of the store, epoch 0.
#[pyfunction]
pub(crate) fn kafka_producer_id(py: Python<'_>, store: &PyStore) -> PyResult<i64> {
    let inner = store.inner().clone();
    run_detached(py, move || Identity::claim(&inner, None).map(|identity| identity.producer_id))
}
