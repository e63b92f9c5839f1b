//! The Kafka protocol server's byte work (`tidelog.kafka_server`): Kafka record batches
//! into and out of a topic's partitions, and producer ids for `InitProducerId`. The
//! conversions and their checks are the core's (`tidelog_core::kafka_records`); the server
//! in Python keeps the protocol's policy.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use std::sync::Arc;

use tidelog_core::kafka_records::{append_kafka_batch, read_kafka_batches};
use tidelog_core::log::ChunkBytes;
use tidelog_core::producer::identity::Identity;

use crate::args;
use crate::errors::{to_py, InvalidConfigError};
use crate::gil::run_detached;
use crate::store::PyStore;
use crate::topic::PyTopic;
use crate::view::ValueBuffer;

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

/// Aborted transactions read, as (producer id, first offset) pairs.
type AbortedList = Vec<(i64, u64)>;

/// Reads about `max_bytes` of `partition` of `topic` from `offset` as Kafka record batches.
///
/// Returns `(batches, next_offset, aborted)`: the batches as a buffer that shares the
/// encoded bytes (a Fetch answer writes them to the socket without copying them again),
/// transaction markers included as control batches. With `committed` (`read_committed`)
/// reading stops at the first transaction still open and `aborted` lists the aborted
/// transactions read, as (producer id, first offset) pairs, for the client to drop.
#[pyfunction]
pub(crate) fn kafka_read(
    py: Python<'_>,
    topic: &PyTopic,
    partition: &Bound<'_, PyAny>,
    offset: u64,
    max_bytes: usize,
    committed: bool,
) -> PyResult<(ValueBuffer, u64, AbortedList)> {
    let log = to_py(topic.engine().partition(args::partition(Some(partition))?.unwrap_or(0)))?;
    if max_bytes == 0 {
        return Err(InvalidConfigError::new_err("max_bytes must be positive"));
    }
    let fetched = run_detached(py, || read_kafka_batches(log, offset, max_bytes, committed))?;
    let len = fetched.bytes.len();
    let buffer = ValueBuffer::new(ChunkBytes::Image(Arc::new(fetched.bytes)), 0, len)
        .expect("the whole image is in range");
    Ok((buffer, fetched.next_offset, fetched.aborted))
}

/// A new producer id from the store-wide counter (`InitProducerId` without a
/// transactional id), unique among every producer of the store, epoch 0.
#[pyfunction]
pub(crate) fn kafka_producer_id(py: Python<'_>, store: &PyStore) -> PyResult<i64> {
    let inner = store.inner().clone();
    run_detached(py, move || Identity::claim(&inner, None).map(|identity| identity.producer_id))
}

/// An open transaction: committing, partitions, started_ms, timeout_ms.
type OpenTxn = (bool, Vec<(String, u32)>, Option<u64>, Option<u64>);

/// A Kafka `transactional.id` served by the Kafka protocol server: a named producer of the
/// store (the name is the transactional id), so its transactions are the store's own. Each
/// `InitProducerId` claims the name again: the epoch goes up, an older instance is fenced,
/// and a transaction it left open is finished (committed if its commit was decided, else
/// aborted) before the new one starts.
#[pyclass(frozen, module = "tidelog._core", name = "KafkaTransactionalId")]
pub struct PyKafkaTransactionalId {
    store: std::sync::Arc<tidelog_core::Store>,
    identity: Identity,
}

#[pymethods]
impl PyKafkaTransactionalId {
    /// Claims the named producer `name` of `store` (fencing older instances), kept with
    /// its `transaction.timeout.ms` `timeout_ms` (see `timeout_ms`).
    #[new]
    #[pyo3(signature = (store, name, timeout_ms=None))]
    fn new(py: Python<'_>, store: &PyStore, name: String, timeout_ms: Option<u64>) -> PyResult<Self> {
        let store = store.inner().clone();
        let identity = run_detached(py, || match timeout_ms {
            Some(ms) => Identity::claim_with_timeout(&store, &name, ms),
            None => Identity::claim(&store, Some(&name)),
        })?;
        Ok(PyKafkaTransactionalId { store, identity })
    }

    /// The `transaction.timeout.ms` this instance was claimed with (kept with its epoch,
    /// so also known when a server's next run took it up), or None.
    #[getter]
    fn timeout_ms(&self) -> Option<u64> {
        self.identity.timeout_ms()
    }

    /// Takes up `name` again at `producer_id` and `epoch`, with its open transaction, if
    /// that is still its current instance and no process holds it (a server's next run
    /// serving a client of the run before); else None. Fences and finishes nothing.
    #[staticmethod]
    fn resume(
        py: Python<'_>,
        store: &PyStore,
        name: String,
        producer_id: i64,
        epoch: i16,
    ) -> PyResult<Option<Self>> {
        let store = store.inner().clone();
        let identity = run_detached(py, || Identity::resume(&store, &name, producer_id, epoch))?;
        Ok(identity.map(|identity| PyKafkaTransactionalId { store, identity }))
    }

    /// The open transaction as `(committing, partitions, started_ms, timeout_ms)`:
    /// whether its commit was decided, its `(topic, partition)` pairs, and its time limit as
    /// recorded when it began (wall clock; None for a transaction without one); None when
    /// none is open.
    fn transaction(&self, py: Python<'_>) -> PyResult<Option<OpenTxn>> {
        let open = run_detached(py, || self.identity.open_transaction())?;
        Ok(open.map(|(commit, partitions, timeout)| {
            (
                commit,
                partitions.into_iter().collect(),
                timeout.map(|t| t.started_ms),
                timeout.map(|t| t.timeout_ms),
            )
        }))
    }

    /// The sequence this producer's next batch at its epoch takes in `partition` of
    /// `topic`: 0 unless the partition holds batches of this epoch (this instance took
    /// the id up again after a restart, with a transaction that wrote there).
    fn next_sequence(&self, py: Python<'_>, topic: &PyTopic, partition: u32) -> PyResult<i32> {
        let log = to_py(topic.engine().partition(partition))?;
        let (id, epoch) = (self.identity.producer_id, self.identity.epoch);
        run_detached(py, || log.next_sequence(id, epoch))
    }

    /// The producer id.
    #[getter]
    fn producer_id(&self) -> i64 {
        self.identity.producer_id
    }

    /// The epoch of this instance.
    #[getter]
    fn producer_epoch(&self) -> i16 {
        self.identity.epoch
    }

    /// Records that the open transaction writes to `partitions` ((topic, partition) pairs),
    /// durably, before it does (Kafka's AddPartitionsToTxn). A transaction this begins
    /// records `timeout_ms` and the time now with it, so the time limit outlives the server.
    #[pyo3(signature = (partitions, timeout_ms=None))]
    fn add_partitions(
        &self,
        py: Python<'_>,
        partitions: Vec<(String, u32)>,
        timeout_ms: Option<u64>,
    ) -> PyResult<()> {
        let set: std::collections::BTreeSet<(String, u32)> = partitions.into_iter().collect();
        run_detached(py, || self.identity.add_to_transaction_within(&set, timeout_ms))
    }

    /// Appends `records` ((key, value) pairs) to `partition` of `topic` as one batch of the
    /// open transaction, at sequence `base_sequence` of this producer on that partition.
    /// Returns the offset of the first record.
    fn append(
        &self,
        py: Python<'_>,
        topic: &PyTopic,
        partition: u32,
        records: Vec<(PyBackedBytes, PyBackedBytes)>,
        base_sequence: i32,
    ) -> PyResult<u64> {
        if records.is_empty() {
            return Err(InvalidConfigError::new_err("records must not be empty"));
        }
        let log = to_py(topic.engine().partition(partition))?;
        let meta = tidelog_core::format::BatchMeta {
            base_offset: 0,
            attributes: tidelog_core::format::ATTR_TRANSACTIONAL,
            producer_id: self.identity.producer_id,
            producer_epoch: self.identity.epoch,
            base_sequence,
        };
        let timestamp = tidelog_core::log::now_ms();
        run_detached(py, || {
            self.identity.check_current()?;
            let records: Vec<tidelog_core::format::Record<'_>> = records
                .iter()
                .map(|(k, v)| tidelog_core::format::Record {
                    timestamp,
                    key: Some(k),
                    value: v,
                    headers: &[],
                    tombstone: false,
                })
                .collect();
            log.append(&records, meta).map(|done| done.base_offset)
        })
    }

    /// Ends the open transaction (Kafka's EndTxn): decides it, writes a marker to every
    /// partition it touched and forgets it. Nothing open: nothing to do.
    fn end(&self, py: Python<'_>, commit: bool) -> PyResult<()> {
        run_detached(py, || self.identity.end_transaction(&self.store, commit))
    }
}
